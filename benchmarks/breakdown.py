"""Per-row cost of each piece of tfcascade's hot path, without Beam.

Usage: .venv/bin/python -m benchmarks.breakdown [--kind light] [--n 50000]
  [--workdir /tmp/tfcascade-bench/50000_200000]

Runs what one `_CascadeDoFn` does per chunk, piece by piece, on the
benchmark's data (run `python -m benchmarks.run` first): read TFRecord chunks
(transforms.tfrecord_framing), score (CascadeSession.run: in-graph parse + A
+ B), the non-finite check, encode (transforms.encode.encode_tfrecord:
passthrough extraction + Example encoding + framing) and the read-back count
that `CountWrittenRecords` does on the written files. Median of 3 passes,
CPU time of this thread (process_time for the TF call, which uses a pool).
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from benchmarks import systems  # noqa: E402  (imports TF)
from transforms import tfrecord_framing as framing  # noqa: E402
from transforms import example_codec  # noqa: E402
from transforms.encode import encode_tfrecord  # noqa: E402
from transforms.engine import CascadeSession  # noqa: E402


def _spec(workdir, kind, n):
  from pipeline.config import JobConfig  # pylint: disable=g-import-not-at-top
  cfg = systems.tfcascade_config({"workdir": workdir, "kind": kind, "n": n,
                                  "out": "/tmp/tfcascade-breakdown"})
  return JobConfig.model_validate(cfg)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--kind", default="light")
  parser.add_argument("--n", type=int, default=50000)
  parser.add_argument("--workdir", default="/tmp/tfcascade-bench/50000_200000")
  args = parser.parse_args()
  config = _spec(args.workdir, args.kind, args.n)
  session = CascadeSession(config.cascade_spec())
  files = sorted(glob.glob(config.input_patterns[0]))
  passes = {k: [] for k in ("read", "score", "finite", "encode", "count")}
  for _ in range(3):
    t = time.perf_counter()
    chunks = [c for f in files for c in framing.read_record_chunks(
        f, compression="none", chunk_size=1024)]
    passes["read"].append(time.perf_counter() - t)
    records = [[r for _, r in c] for c in chunks]
    t = time.perf_counter()
    outs = [session.run(r) for r in records]
    passes["score"].append(time.perf_counter() - t)
    t = time.perf_counter()
    for o in outs:
      for k, v in o.items():
        if v.dtype.kind == "f" and v.ndim:
          np.isfinite(v.reshape(len(v), -1)).all(axis=1)
    passes["finite"].append(time.perf_counter() - t)
    t = time.perf_counter()
    # `id` copied raw from each record (the path for undeclared passthrough).
    blobs = [encode_tfrecord(
        {k: v for k, v in o.items() if not k.endswith("/rows_run")}, len(r),
        {"id": [example_codec.raw_feature_bytes(x, ["id"]).get("id") for x in r]})
             for o, r in zip(outs, records)]
    passes["encode"].append(time.perf_counter() - t)
    path = "/tmp/tfcascade-breakdown.tfrecord"
    with open(path, "wb") as f:
      for b in blobs:
        f.write(b)
    t = time.perf_counter()
    sum(len(c) for c in framing.read_record_chunks(path, compression="none"))
    passes["count"].append(time.perf_counter() - t)
  n = sum(len(r) for r in records)
  total = 0.0
  print(f"{args.kind}, {n:,} rows, us/row (median of 3 passes):")
  for k, v in passes.items():
    us = statistics.median(v) / n * 1e6
    total += us
    print(f"  {k:8s} {us:7.2f}")
  print(f"  {'total':8s} {total:7.2f}  -> {1e6 / total:,.0f} rows/s on one thread")
  session.close()


if __name__ == "__main__":
  main()
