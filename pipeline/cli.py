"""The `tfcascade` command line: run, validate, inspect, tune, report, demo.

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
  tfcascade run --config configs/local.yaml --engine spark --master spark://host:7077
  tfcascade inspect demo/models/a --relative-to configs/   (a checkpoint; entry for a config in configs/)
  tfcascade inspect models/keras_a       (a SavedModel, e.g. a Keras model.export())
  tfcascade inspect 'demo/data/*.tfrecord.gz'
  tfcascade inspect out/predictions      (an output directory)
  tfcascade tune --config configs/local.yaml --label label --sample 20000 --out tune
  tfcascade report out/predictions --compare out/yesterday --fail-on-drift
"""


class _OneLineParser(argparse.ArgumentParser):
  """argparse, with a usage mistake said in one line (exit 2, REFUSED)."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
  parser = _OneLineParser(
      prog="tfcascade", epilog=_EPILOG,
      formatter_class=argparse.RawDescriptionHelpFormatter,
      description="Score TFRecord datasets with a cascade of TensorFlow "
                  "checkpoints restored into one session, on Apache Beam.")
  parser.add_argument("--verbose", action="store_true",
                      help="show TensorFlow's C++ start-up lines, and on an "
                           "unexpected error the traceback too (any position)")
  commands = parser.add_subparsers(dest="command", required=True)

  def config_args(p):
    p.add_argument("--config", required=True, help="YAML job config")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE",
                   help="override a config key, e.g. stages.b.run_if='a.confidence < 0.8'"
                        " or run_date=2026-11-25 (repeatable)")

  run = commands.add_parser(
      "run", help="run the job (unknown flags go to Beam)",
      description="Run the job. With the Beam engine (default), flags not "
                  "listed here are Beam pipeline options (--runner, "
                  "--direct_num_workers, --flink_master, ...); the runner "
                  "defaults to DirectRunner. --engine spark runs the same job on "
                  "Apache Spark (pip install '.[spark]').")
  config_args(run)
  run.add_argument("--overwrite", action="store_true",
                   help="replace a complete output already at output.path")
  run.add_argument("--no-resume", dest="resume", action="store_false",
                   help="do not reuse the units a dead run of the same job "
                        "committed; score every record again")
  run.add_argument("--engine", choices=("beam", "spark"), default="beam",
                   help="beam (default) or spark")
  run.add_argument("--master", default=None,
                   help="Spark master: local[*] (default), spark://host:7077, yarn, "
                        "k8s://... (with --engine spark)")
  run.add_argument("--spark-conf", dest="spark_conf", action="append", default=[],
                   metavar="KEY=VALUE", help="a Spark setting (repeatable; --engine spark)")

  validate = commands.add_parser(
      "validate", help="check config, checkpoints, wiring and inputs; print the plan")
  config_args(validate)
  validate.add_argument("--overwrite", action="store_true",
                        help="check as `run --overwrite` would: a complete output "
                             "is not refused")
  validate.add_argument("--sample", type=int, default=8,
                        help="records of the first input file to score as a check")

  inspect = commands.add_parser(
      "inspect", help="describe a SavedModel, .meta file, checkpoint, TFRecord "
                      "file(s) or an output directory")
  inspect.add_argument("path", help="SavedModel dir, .meta file, checkpoint prefix/dir, "
                                    "TFRecord file or glob, or output dir")
  inspect.add_argument("--label", default="label",
                       help="passthrough feature holding the true class (output dirs)")
  inspect.add_argument("--relative-to", dest="relative_to", default=None, metavar="DIR",
                       help="print the stages: entry's paths relative to DIR, the folder "
                            "of the config it goes into (config paths start there)")

  tune = commands.add_parser(
      "tune", help="choose each gate's run_if threshold from a labelled sample",
      description="Run every stage on every row of a labelled sample (one session), "
                  "sweep each gate's threshold and show, per threshold, the share of "
                  "rows the gated stage runs on, the cascade's accuracy and the "
                  "rows/s; recommend the cheapest threshold within --target-accuracy. "
                  "Writes DIR/tune.json and DIR/tune.png (needs the 'plot' extra).")
  config_args(tune)
  tune.add_argument("--label", required=True, metavar="FEATURE",
                    help="int64 feature holding the true class")
  tune.add_argument("--sample", type=int, default=10_000, metavar="N",
                    help="records to read, spread over the input files (default 10000)")
  tune.add_argument("--out", default="tune", metavar="DIR",
                    help="where tune.json and tune.png go (default ./tune)")
  tune.add_argument("--target-accuracy", dest="target_accuracy", type=float, default=None,
                    metavar="X", help="accuracy (0..1) the recommendation must reach "
                                      "(default: the ungated cascade's minus 0.005)")
  tune.add_argument("--input", default=None, metavar="PATTERN",
                    help="read the sample from these files instead of input.pattern")
  tune.add_argument("--prediction", action="append", default=[],
                    metavar="STAGE.OUTPUT",
                    help="the output holding a stage's class (repeatable; default: "
                         "its output 'prediction', else argmax of 'probs', else of "
                         "'logits')")

  report = commands.add_parser(
      "report", help="an HTML report of a complete run, compared with a previous one",
      description="Write one self-contained HTML page about a complete output: counts, "
                  "stages and gate pass shares, histograms of the scored outputs (recorded "
                  "by the job), dead letters, throughput, model fingerprints. --compare "
                  "adds a drift table against a previous output (docs/report.md).")
  report.add_argument("output", metavar="OUTPUT", help="a complete output directory")
  report.add_argument("--compare", default=None, metavar="PREVIOUS_OUTPUT",
                      help="a previous complete output to compare with (drift table)")
  report.add_argument("--out", default=None, metavar="FILE",
                      help="where the HTML goes (default: OUTPUT.report.html, beside "
                           "the output folder)")
  report.add_argument("--fail-on-drift", dest="fail_on_drift", action="store_true",
                      help="exit 1 when a drift row is flagged (needs --compare)")

  demo = commands.add_parser("demo", help="train the demo models and write the demo data")
  demo.add_argument("--out", required=True, help="directory to create")
  demo.add_argument("--records", type=int, default=200_000)
  demo.add_argument("--shards", type=int, default=8)
  demo.add_argument("--seed", type=int, default=0)
  demo.add_argument("--shift", type=float, default=0.0, metavar="S",
                    help="0..1: wash the scoring data out (lower contrast, add noise) "
                         "as an upstream change would; the models stay the same. For "
                         "trying `tfcascade report --compare` (docs/report.md)")
  return parser


def main(argv: Optional[List[str]] = None) -> int:
  """Entry point of the `tfcascade` console script."""
  argv = list(sys.argv[1:] if argv is None else argv)
  # --verbose is global and may come anywhere (after `run` it is not Beam's).
  verbose = "--verbose" in argv
  argv = [a for a in argv if a != "--verbose"]
  parser = _parser()
  args, extra = parser.parse_known_args(argv)
  if extra and args.command != "run":
    parser.error(f"unrecognized arguments: {' '.join(extra)}")
  args.own_flags = _flags_of(parser, args.command)  # to suggest the closest
  # TensorFlow's C++ start-up lines only with --verbose (or the user's own
  # TF_CPP_MIN_LOG_LEVEL): before anything imports TensorFlow.
  from tfcascade.pipeline.quiet import quiet_tensorflow  # pylint: disable=g-import-not-at-top
  if args.command == "run" and args.engine == "beam":
    # The default run's worker processes, started before TensorFlow loads
    # here, load it meanwhile (none for a small input or a chosen runner).
    from tfcascade.pipeline import local_workers  # pylint: disable=g-import-not-at-top
    local_workers.prestart(args.config, args.overrides, extra, verbose)
  if args.command != "report":  # the report reads JSON: no TensorFlow (6 s) needed
    quiet_tensorflow(verbose)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  for noisy in ("apache_beam", "tensorflow", "absl", "matplotlib", "py4j"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  if verbose:
    logging.getLogger("tfcascade").setLevel(logging.DEBUG)
  else:  # a failed bundle's traceback, logged by Beam: our error line says it
    for log_handler in logging.getLogger().handlers:
      if getattr(log_handler, "stream", None) in (sys.stderr, sys.__stderr__):
        log_handler.addFilter(_without_traceback)
  try:
    if args.command == "report":  # reads JSON, draws: without TensorFlow (6 s)
      from tfcascade.pipeline.runreport.report_command import command  # pylint: disable=g-import-not-at-top
      code = command(args)
    else:
      from tfcascade.pipeline import commands  # pylint: disable=g-import-not-at-top; keeps --help fast
      handler = {"run": commands.run, "validate": commands.validate,
                 "inspect": commands.inspect, "demo": commands.demo,
                 "tune": commands.tune}[args.command]
      code = handler(args, extra)
    sys.stdout.flush()  # here, where a closed pipe can still be caught
    return code
  except KeyboardInterrupt:
    print("tfcascade: interrupted", file=sys.stderr)
    return 130
  except BrokenPipeError:  # `tfcascade inspect X | head -1`: the reader left
    return _stdout_closed()
  except Exception as e:  # pylint: disable=broad-except; a bug of ours: say it in one line
    return _internal_error(e, verbose)


def _flags_of(parser: argparse.ArgumentParser, command: str) -> List[str]:
  """The long flags `tfcascade <command>` knows."""
  sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # pylint: disable=protected-access
  return [s for a in sub.choices[command]._actions for s in a.option_strings  # pylint: disable=protected-access
          if s.startswith("--")] + ["--verbose"]


def _stdout_closed() -> int:
  """Ends quietly, like a Unix tool killed by SIGPIPE (128 + 13)."""
  import os  # pylint: disable=g-import-not-at-top
  # Python flushes stdout once more at exit: into /dev/null, not the closed pipe.
  os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
  return 141


def _without_traceback(record: logging.LogRecord) -> bool:
  """Logs a record without its traceback (shown with --verbose only)."""
  record.exc_info, record.exc_text, record.stack_info = None, None, None
  if isinstance(record.msg, str) and "Traceback (most recent call last)" in record.msg:
    record.msg = record.msg.split("Traceback (most recent call last)")[0].rstrip()
  return True


def _internal_error(error: Exception, verbose: bool) -> int:
  """An error no command expected: one line, the traceback only with --verbose."""
  text = str(error).strip()
  print(f"tfcascade: internal error: {type(error).__name__}: "
        f"{text.splitlines()[0] if text else repr(error)}"
        + ("" if verbose else " (rerun with --verbose for the traceback)"),
        file=sys.stderr)
  if verbose:
    import traceback  # pylint: disable=g-import-not-at-top
    traceback.print_exc()
  return 1  # exit_codes.FAILED, without importing the commands


if __name__ == "__main__":
  sys.exit(main())
