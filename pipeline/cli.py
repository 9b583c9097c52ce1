"""The `tfcascade` command line: run, validate, inspect, demo.

Exit codes (pipeline/exit_codes.py): 0 success; 1 the run failed or records
did not add up; 2 the config, inputs, checkpoints or output directory were
refused before any data was read.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

_EPILOG = """\
examples:
  tfcascade demo --out demo --records 200000
  tfcascade validate --config configs/local.yaml
  tfcascade run --config configs/local.yaml --set batch_size=512 --overwrite
  tfcascade run --config configs/flink.yaml --runner=FlinkRunner --flink_master=host:8081
  tfcascade inspect demo/models/a        (a checkpoint)
  tfcascade inspect 'demo/data/*.tfrecord.gz'
  tfcascade inspect out/predictions      (an output directory)
"""


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="tfcascade", epilog=_EPILOG,
      formatter_class=argparse.RawDescriptionHelpFormatter,
      description="Score TFRecord datasets with a cascade of TensorFlow "
                  "checkpoints restored into one session, on Apache Beam.")
  commands = parser.add_subparsers(dest="command", required=True)

  def config_args(p):
    p.add_argument("--config", required=True, help="YAML job config")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE",
                   help="override a config key, e.g. stages.b.run_if='a.confidence < 0.8'"
                        " or run_date=2026-11-25 (repeatable)")

  run = commands.add_parser(
      "run", help="run the job (unknown flags go to Beam)",
      description="Run the job. Flags not listed here are Beam pipeline "
                  "options (--runner, --direct_num_workers, --flink_master, ...). "
                  "The runner defaults to DirectRunner.")
  config_args(run)
  run.add_argument("--overwrite", action="store_true",
                   help="replace a complete output already at output.path")

  validate = commands.add_parser(
      "validate", help="check config, checkpoints, wiring and inputs; print the plan")
  config_args(validate)
  validate.add_argument("--sample", type=int, default=8,
                        help="records of the first input file to score as a check")

  inspect = commands.add_parser(
      "inspect", help="describe a checkpoint, TFRecord file(s) or an output directory")
  inspect.add_argument("path", help="checkpoint prefix/dir, file glob, or output dir")
  inspect.add_argument("--label", default="label",
                       help="passthrough feature holding the true class (output dirs)")

  demo = commands.add_parser("demo", help="train the demo models and write the demo data")
  demo.add_argument("--out", required=True, help="directory to create")
  demo.add_argument("--records", type=int, default=200_000)
  demo.add_argument("--shards", type=int, default=8)
  demo.add_argument("--seed", type=int, default=0)
  return parser


def main(argv: Optional[List[str]] = None) -> int:
  """Entry point of the `tfcascade` console script."""
  argv = list(sys.argv[1:] if argv is None else argv)
  args, extra = _parser().parse_known_args(argv)
  if extra and args.command != "run":
    _parser().error(f"unrecognized arguments: {' '.join(extra)}")
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  for noisy in ("apache_beam", "tensorflow", "absl"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  from pipeline import commands  # pylint: disable=g-import-not-at-top; keeps --help fast
  handler = {"run": commands.run, "validate": commands.validate,
             "inspect": commands.inspect, "demo": commands.demo}[args.command]
  return handler(args, extra)


if __name__ == "__main__":
  sys.exit(main())
