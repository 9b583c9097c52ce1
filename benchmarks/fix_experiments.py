"""Measures proposed fixes to transforms/ by monkeypatching them in a child.

Usage: .venv/bin/python -m benchmarks.fix_experiments [--reps 3] [--kind light]
  [--n 200000] [--gate 10] [--variants base,passthrough,passthrough+count]

Nothing in transforms/ is edited; each variant runs the real job
(pipeline.job.run, DirectRunner in-process) in a fresh process with:

  base:         the code as it is.
  passthrough:  passthrough features taken from the in-graph parse (the
                parsed `id` tensor is fetched with the outputs and encoded as
                a bytes column) instead of `example_codec.raw_feature_bytes`
                walking every record's wire format in Python.
  count:        CountWrittenRecords counts records by walking the length
                fields (no CRC pass over every output byte).
  mt2:          `--direct_running_mode=multi_threading --direct_num_workers=2`
                so one thread's Python (read, encode, write) overlaps another
                thread's session.run (which releases the GIL).

Variants are interleaved; wall and CPU seconds (user+sys) of the job, with
every module already imported (so start-up imports are excluded for all
variants alike), are reported as medians. The data must exist: run `python -m benchmarks.run` first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _patch_passthrough():
  """Fetch the parsed passthrough feature instead of re-walking records."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from transforms import encode, example_codec  # pylint: disable=g-import-not-at-top
  from transforms.engine import cascade  # pylint: disable=g-import-not-at-top
  original = cascade.build_cascade_graph

  def build(spec):
    built = original(spec)
    parse = [op for op in built.graph.get_operations() if op.type == "ParseExampleV2"][0]
    # The benchmark's only string feature is `id`.
    built.fetches["id"] = [t for t in parse.outputs if t.dtype == tf.string][-1]
    return built

  cascade.build_cascade_graph = build

  def encode_tfrecord(outputs, records, passthrough):
    return encode.frame_records(example_codec.encode_examples(outputs, len(records)))

  encode.ENCODERS["tfrecord"] = encode_tfrecord


def _patch_count():
  from transforms import write  # pylint: disable=g-import-not-at-top

  def process(self, path):
    # Imports inside: Beam pickles this function by value.
    import struct  # pylint: disable=g-import-not-at-top,redefined-outer-name
    from apache_beam.io.filesystem import CompressionTypes  # pylint: disable=g-import-not-at-top
    from apache_beam.io.filesystems import FileSystems  # pylint: disable=g-import-not-at-top
    records = 0
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
      while True:
        header = f.read(12)
        if len(header) < 12:
          break
        f.seek(struct.unpack_from("<Q", header)[0] + 4, 1)
        records += 1
    self._counter.inc(records)  # pylint: disable=protected-access
    yield (self._count_key, records)  # pylint: disable=protected-access

  write._CountRecords.process = process  # pylint: disable=protected-access


def child(spec):
  """Runs one variant in this (fresh) process; prints one JSON line."""
  import time  # pylint: disable=g-import-not-at-top
  import resource  # pylint: disable=g-import-not-at-top
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import tensorflow  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  from benchmarks import systems  # pylint: disable=g-import-not-at-top
  # Every variant imports the same modules before the clock starts (patching
  # imports Beam; without this, patched variants would look ~2.3 s faster
  # because their Beam import fell outside the timed region).
  import pipeline.job  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import transforms.write  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import transforms.encode  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  variant = spec["variant"]
  if "passthrough" in variant:
    _patch_passthrough()
  if "count" in variant:
    _patch_count()
  args = ["--runner=DirectRunner"]
  if "mt2" in variant:
    args += ["--direct_running_mode=multi_threading", "--direct_num_workers=2"]
  ru0 = resource.getrusage(resource.RUSAGE_SELF)
  start = time.perf_counter()
  result = systems.run_tfcascade(dict(spec, beam_args=args, system="tfcascade"))
  ru1 = resource.getrusage(resource.RUSAGE_SELF)
  result["wall_s"] = time.perf_counter() - start
  result["cpu_s"] = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
  print("FIX_RESULT " + json.dumps(result), flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--reps", type=int, default=3)
  parser.add_argument("--kind", default="light")
  parser.add_argument("--n", type=int, default=200000)
  parser.add_argument("--variants", default="base,passthrough,passthrough+count")
  parser.add_argument("--workdir", default="/tmp/tfcascade-bench/50000_200000")
  parser.add_argument("--gate", default=None, help="100, 50 or 10: gate B at that pass rate")
  parser.add_argument("--child", default=None)
  args = parser.parse_args()
  if args.child:
    child(json.loads(args.child))
    return
  variants = args.variants.split(",")
  gate = {}
  if args.gate:
    with open(os.path.join(args.workdir, "manifest.json")) as f:
      threshold = json.load(f)["thresholds"][args.kind][args.gate]
    gate = {"gate": args.gate, "threshold": threshold}
  results = {v: [] for v in variants}
  for rep in range(args.reps):
    for variant in variants:
      spec = {"variant": variant, "kind": args.kind, "n": args.n, "layout": "sharded",
              "workdir": args.workdir,
              "out": os.path.join(args.workdir, "out", f"fix_{variant}"), **gate}
      out = subprocess.run(
          [sys.executable, "-m", "benchmarks.fix_experiments", "--child", json.dumps(spec)],
          cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3"),
          capture_output=True, text=True)
      line = next((l for l in out.stdout.splitlines() if l.startswith("FIX_RESULT ")), None)
      if line is None:
        print(f"{variant} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
        continue
      r = json.loads(line[len("FIX_RESULT "):])
      assert r["records_written"] == args.n, r
      results[variant].append(r)
      print(f"rep {rep} {variant:20s} wall {r['wall_s']:6.2f}s cpu {r['cpu_s']:6.2f}s", flush=True)
  base = results[variants[0]]
  b_wall = statistics.median(r["wall_s"] for r in base)
  b_cpu = statistics.median(r["cpu_s"] for r in base)
  print(f"\n{args.kind}{', gate ' + args.gate + '%' if args.gate else ''}, "
        f"{args.n:,} rows, medians of {args.reps}:")
  for variant, rs in results.items():
    if not rs:
      continue
    wall = statistics.median(r["wall_s"] for r in rs)
    cpu = statistics.median(r["cpu_s"] for r in rs)
    print(f"  {variant:20s} wall {wall:6.2f}s ({b_wall / wall:.2f}x)  "
          f"cpu {cpu:6.2f}s ({b_cpu / cpu:.2f}x)  {args.n / wall:,.0f} rows/s")


if __name__ == "__main__":
  main()
