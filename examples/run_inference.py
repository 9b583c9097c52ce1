"""The cascade inside YOUR Beam pipeline: RunInference + CascadeModelHandler.

Scores the demo with Beam's own TFRecord reader and RunInference, writes one
JSON line per record and the batches that failed, and prints the cascade's
accuracy. Runs on the DirectRunner (any other runner: pass its flags).

  tfcascade demo --out demo --records 20000 --shards 2
  python examples/run_inference.py --config configs/local.yaml --out /tmp/ri

What the CLI job does and this pipeline does not (it is yours): isolating bad
records one by one, dead-letter files, record accounting, `_SUCCESS`. Here a
batch holding a record that does not parse fails as a whole and lands in
`failed-*.txt` through RunInference's `with_exception_handling()`.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import List, Optional

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions

import tfcascade


def to_row(result) -> dict:
  """A PredictionResult of the demo cascade -> one small JSON-able dict."""
  out = result.inference
  ran = int(out["b/ran"])
  answer = int(out["b/prediction"] if ran else out["a/prediction"])
  return {"id": out["passthrough/id"].decode(), "label": int(out["passthrough/label"]),
          "a": int(out["a/prediction"]), "b_ran": ran, "answer": answer}


def run(argv: Optional[List[str]] = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True, help="a tfcascade job config (the demo's)")
  parser.add_argument("--set", dest="overrides", action="append", default=[],
                      metavar="KEY=VALUE", help="config override (repeatable)")
  parser.add_argument("--out", required=True, help="output directory")
  args, beam_args = parser.parse_known_args(argv)
  if not any(a.startswith("--runner") for a in beam_args):
    beam_args.append("--runner=DirectRunner")  # Beam's default would fetch Prism

  config = tfcascade.load_config(args.config, args.overrides)
  handler = tfcascade.handler_from_config(args.config, args.overrides)  # checks every checkpoint now
  os.makedirs(args.out, exist_ok=True)
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
    _ = (failed.failed_inferences
         | "DescribeFailure" >> beam.MapTuple(
             lambda batch, error: f"{len(batch)} records: {error[1]}")
         | "WriteFailed" >> beam.io.WriteToText(os.path.join(args.out, "failed"),
                                                file_name_suffix=".txt"))
    _ = (rows
         | "Tally" >> beam.Map(lambda r: {"rows": 1, "correct": int(r["answer"] == r["label"]),
                                          "a_correct": int(r["a"] == r["label"]),
                                          "b_ran": r["b_ran"]})
         | "Sum" >> beam.CombineGlobally(
             lambda dicts: {k: sum(d[k] for d in dicts)
                            for k in ("rows", "correct", "a_correct", "b_ran")})
         | "WriteSummary" >> beam.Map(_write_summary, args.out))
  with open(os.path.join(args.out, "summary.json")) as f:
    summary = json.load(f)
  print(f"{summary['rows']:,} records: a alone {summary['a_accuracy']:.2%}, cascade "
        f"{summary['cascade_accuracy']:.2%}, b ran on {summary['b_share']:.1%}; "
        f"rows in {args.out}/predictions-*.jsonl")
  return summary


def _write_summary(total: dict, out_dir: str) -> None:
  rows = max(total.get("rows", 0), 1)
  summary = {"rows": total.get("rows", 0), "a_accuracy": total.get("a_correct", 0) / rows,
             "cascade_accuracy": total.get("correct", 0) / rows,
             "b_share": total.get("b_ran", 0) / rows}
  with open(os.path.join(out_dir, "summary.json"), "w") as f:
    json.dump(summary, f)


if __name__ == "__main__":
  run()
