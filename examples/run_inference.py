"""The cascade inside YOUR Beam pipeline: RunInference + CascadeModelHandler.

Scores the demo with Beam's own TFRecord reader and RunInference, writes one
JSON line per record and the batches that failed, and prints the cascade's
accuracy. Runs on the DirectRunner (any other runner: pass its flags).

  tfcascade demo --out demo --records 20000 --shards 2
  python examples/run_inference.py --config configs/local.yaml --out /tmp/ri

What the CLI job does and this pipeline does not (it is yours): isolating bad
records one by one, dead-letter files, record accounting, `_SUCCESS`. Here a
batch holding a record that does not parse fails as a whole and lands in
`failed-*.txt` (with TF's reason) through RunInference's
`with_exception_handling()`. A config, model, input or --out that cannot work
is one line on stderr and exit status 2; TensorFlow's C++ log lines are
hidden as by the CLI (--verbose shows them).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import sys
from typing import List, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions

import tfcascade
from tfcascade.pipeline.quiet import quiet_tensorflow


class Refused(Exception):
  """A mistake in the arguments or the config: one line, exit status 2."""


def to_row(result) -> dict:
  """A PredictionResult of the demo cascade -> one small JSON-able dict.

  The answer is the engine's own `final/prediction` (B's where B ran, else
  A's: the last stage that ran on the row; `output.final` in docs/reference.md).
  """
  out = result.inference
  return {"id": out["passthrough/id"].decode(), "label": int(out["passthrough/label"]),
          "a": int(out["a/prediction"]), "b_ran": int(out["b/ran"]),
          "answer": int(out["final/prediction"])}


def run(argv: Optional[List[str]] = None) -> dict:
  """Runs the pipeline; returns summary.json's contents.

  Raises:
    Refused: a config that does not load, a cascade that does not build, an
      input pattern that matches nothing, an --out that cannot be created.
  """
  args, beam_args = _parser().parse_known_args(argv)
  if not any(a.startswith("--runner") for a in beam_args):
    beam_args.append("--runner=DirectRunner")  # Beam's default would fetch Prism
  config, handler = _checked(args)
  with beam.Pipeline(options=PipelineOptions(beam_args)) as p:
    records = (
        [p | f"Read{i}" >> beam.io.ReadFromTFRecord(pattern)
         for i, pattern in enumerate(config.input_patterns)]
        | beam.Flatten())
    scored, failed = records | RunInference(handler).with_exception_handling()
    rows = scored | "ToRow" >> beam.Map(to_row)
    _ = (rows | "ToJson" >> beam.Map(json.dumps)
         | "WriteRows" >> beam.io.WriteToText(os.path.join(args.out, "predictions"),
                                              file_name_suffix=".jsonl"))
    # error: (exception class, repr (the handler's reason in it), traceback lines).
    _ = (failed.failed_inferences
         | "DescribeFailure" >> beam.MapTuple(
             lambda batch, error: f"{len(batch)} record(s): {error[1]}")
         | "WriteFailed" >> beam.io.WriteToText(os.path.join(args.out, "failed"),
                                                file_name_suffix=".txt"))
    tallies = (
        rows | "Tally" >> beam.Map(lambda r: {"rows": 1, "correct": int(r["answer"] == r["label"]),
                                              "a_correct": int(r["a"] == r["label"]),
                                              "b_ran": r["b_ran"]}),
        failed.failed_inferences | "TallyFailed" >> beam.MapTuple(
            lambda batch, _: {"failed": len(batch)}))
    _ = (tallies | "Tallies" >> beam.Flatten()
         | "Sum" >> beam.CombineGlobally(_sum)
         | "WriteSummary" >> beam.Map(_write_summary, args.out))
  with open(os.path.join(args.out, "summary.json")) as f:
    summary = json.load(f)
  print(_report(summary, args.out))
  return summary


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True, help="a tfcascade job config (the demo's)")
  parser.add_argument("--set", dest="overrides", action="append", default=[],
                      metavar="KEY=VALUE", help="config override (repeatable)")
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--verbose", action="store_true",
                      help="TensorFlow's C++ log lines too (hidden by default)")
  return parser


def _checked(args):
  """(config, handler) once the config, every checkpoint, the inputs and --out
  are usable; Refused naming the one that is not."""
  try:
    config = tfcascade.load_config(args.config, args.overrides)
    handler = tfcascade.handler_from_config(args.config, args.overrides)
  except (tfcascade.ConfigError, tfcascade.CascadeError) as e:
    raise Refused(str(e).strip().splitlines()[0]) from e
  for pattern in config.input_patterns:
    if not FileSystems.match([pattern])[0].metadata_list:
      raise Refused(f"input.pattern {pattern} matches no files")
  try:
    os.makedirs(args.out, exist_ok=True)
  except OSError as e:
    raise Refused(f"cannot create --out {args.out}: {e.strerror or e}") from e
  return config, handler


def _sum(tallies) -> dict:
  total = collections.Counter()
  for tally in tallies:
    total.update(tally)
  return dict(total)


def _write_summary(total: dict, out_dir: str) -> None:
  rows = total.get("rows", 0)

  def share(key: str) -> Optional[float]:
    return total.get(key, 0) / rows if rows else None  # no rows: no accuracy

  summary = {"rows": rows, "failed": total.get("failed", 0),
             "a_accuracy": share("a_correct"), "cascade_accuracy": share("correct"),
             "b_share": share("b_ran")}
  with open(os.path.join(out_dir, "summary.json"), "w") as f:
    json.dump(summary, f)


def _report(summary: dict, out_dir: str) -> str:
  failed = (f"{summary['failed']:,} record(s) failed: {out_dir}/failed-*.txt"
            if summary["failed"] else "")
  if not summary["rows"]:
    return f"no record scored; {failed or 'no input record'}"
  return (f"{summary['rows']:,} records: a alone {summary['a_accuracy']:.2%}, cascade "
          f"{summary['cascade_accuracy']:.2%}, b ran on {summary['b_share']:.1%}; rows in "
          f"{out_dir}/predictions-*.jsonl" + (f"; {failed}" if failed else ""))


def main(argv: Optional[List[str]] = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  # TensorFlow's C++ lines (start-up, a failing op's node) as the CLI hides
  # them: before anything imports TensorFlow.
  verbose = "--verbose" in argv
  quiet_tensorflow(verbose)
  if not verbose:  # Beam's RunInference measures memory with torch only, and
    # without it says so, twice per model load.
    logging.getLogger().addFilter(
        lambda record: "memory usage cannot be fetched" not in record.getMessage())
  try:
    run(argv)
  except Refused as e:
    print(f"run_inference.py: error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
