"""Benchmark: batch Example encoding (tfcascade's example_codec) vs protobuf.

The workload is the cascade's output row (docs/design.md, fact 11): an id (bytes),
64 + 16 float32 stage outputs and a gate flag (int64), 1024 rows per batch.
Runs are interleaved and the median CPU time (process_time; every path is
single-threaded) is reported, because shared machines are noisy.
Usage: .venv/bin/python -m benchmarks.bench_example_codec [--rows N]
"""

import argparse
import os
import statistics
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402  (after the log-level setting)

from tfcascade.transforms.formats import example_codec  # noqa: E402


def make_batch(rows, seed=0):
  rng = np.random.default_rng(seed)
  return {
      "id": [f"record-{i:09d}".encode() for i in range(rows)],
      "a/logits": rng.standard_normal((rows, 64), dtype=np.float32),
      "b/probs": rng.random((rows, 16), dtype=np.float32),
      "b/ran": rng.integers(0, 2, rows, dtype=np.int64),
  }


def encode_with_protos(cols, rows):
  """The usual path: one tf.train.Example per row, serialized."""
  logits, probs = cols["a/logits"].tolist(), cols["b/probs"].tolist()
  ran = cols["b/ran"].tolist()
  out = []
  for i in range(rows):
    out.append(tf.train.Example(features=tf.train.Features(feature={
        "id": tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[cols["id"][i]])),
        "a/logits": tf.train.Feature(float_list=tf.train.FloatList(
            value=logits[i])),
        "b/probs": tf.train.Feature(float_list=tf.train.FloatList(
            value=probs[i])),
        "b/ran": tf.train.Feature(int64_list=tf.train.Int64List(
            value=[ran[i]])),
    })).SerializeToString())
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", type=int, default=1024)
  parser.add_argument("--repeats", type=int, default=15)
  args = parser.parse_args()
  rows = args.rows
  cols = make_batch(rows)

  # Same messages both ways (compared parsed: map order is not part of it).
  ours, theirs = example_codec.encode_examples(cols, rows), encode_with_protos(cols, rows)
  assert all(tf.train.Example.FromString(a) == tf.train.Example.FromString(b)
             for a, b in zip(ours, theirs))

  # Passthrough of the id as raw Feature bytes, extraction included.
  sources = example_codec.encode_examples({"id": cols["id"]}, rows)
  numeric = {k: v for k, v in cols.items() if k != "id"}

  def encode_with_raw_passthrough(_, n):
    raw = [example_codec.raw_feature_bytes(s, ["id"])["id"] for s in sources]
    return example_codec.encode_examples(numeric, n, raw_features={"id": raw})

  paths = [("tf.train.Example protos", encode_with_protos),
           ("example_codec", example_codec.encode_examples),
           ("example_codec + raw id passthrough", encode_with_raw_passthrough)]
  times = {name: [] for name, _ in paths}
  for _ in range(args.repeats):
    for name, fn in paths:  # interleaved, so load spikes hit all paths
      start = time.process_time()
      fn(cols, rows)
      times[name].append(time.process_time() - start)

  base = statistics.median(times[paths[0][0]])
  print(f"{rows} rows/batch (id + 64 + 16 float32 + int64), "
        f"median CPU time of {args.repeats}, {len(ours[0])} bytes/Example")
  print(f"{'path':38s} {'ms/batch':>9s} {'us/row':>8s} {'rows/s':>10s} "
        f"{'speedup':>8s}")
  for name, _ in paths:
    t = statistics.median(times[name])
    print(f"{name:38s} {t * 1e3:9.2f} {t / rows * 1e6:8.2f} "
          f"{rows / t:10,.0f} {base / t:7.1f}x")


if __name__ == "__main__":
  main()
