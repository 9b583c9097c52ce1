"""Benchmark: what writing the output costs per row, TFRecord vs Parquet, side
by side.

`.venv/bin/python -m benchmarks.writers [--rows 102400] [--rounds 7] [--save]`

The workload is the benchmark job's output row (benchmarks.workloads: `id`
bytes, `a/logits` 64 float32, `a/confidence`, `b/probs` 16 float32, and
`b/ran` of a gate passing half the rows), in batches of 1024 rows as the
scorer hands them over. Each variant does what a unit of work does with
them: the format's encoder (transforms/writing/encoders.py) and its staged
file writer (ShardWriter, ParquetShardWriter) up to the closed file on
local disk. Rounds are interleaved (every variant once per round, in a
shuffled order) and the medians of the rounds are reported, process CPU
(the column others' load disturbs least) and wall. `--save` stores the
result in results.json under "writers" and rebuilds RESULTS.md from it;
`benchmarks.run` measures it too.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import tempfile
import time

import numpy as np

from benchmarks import common, report, run
from tfcascade.transforms.writing.encoders import ENCODERS
from tfcascade.transforms.writing.parquet_writer import ParquetShardWriter
from tfcascade.transforms.writing.shard_writer import ShardWriter

BATCH_ROWS = 1024
# (format, output.compression); report.WRITERS_BASELINE is what the others
# are compared with.
VARIANTS = (("tfrecord", "none"), ("tfrecord", "gzip"), ("parquet", "snappy"),
            ("parquet", "none"), ("parquet", "zstd"), ("parquet", "gzip"))


def make_batches(rows: int, seed: int = 0):
  """The output columns of `rows` rows, in scorer-sized batches."""
  rng = np.random.default_rng(seed)
  batches = []
  for start in range(0, rows, BATCH_ROWS):
    n = min(BATCH_ROWS, rows - start)
    logits = rng.standard_normal((n, 64), dtype=np.float32)
    b_logits = rng.standard_normal((n, 16), dtype=np.float32) * 3
    probs = np.exp(b_logits) / np.exp(b_logits).sum(axis=1, keepdims=True)
    batches.append({
        "id": np.array([f"record-{i:09d}".encode() for i in range(start, start + n)],
                       dtype=object),
        "a/logits": logits,
        "a/confidence": rng.random(n, dtype=np.float32),
        "b/probs": probs.astype(np.float32),
        "b/ran": rng.integers(0, 2, n, dtype=np.int64),
    })
  return batches


def _writer(fmt: str, compression: str, directory: str):
  if fmt == "parquet":
    return ParquetShardWriter(directory, "predictions", compression)
  suffix = ".tfrecord" + (".gz" if compression == "gzip" else "")
  return ShardWriter(directory, "predictions", suffix, compression)


def write_once(fmt: str, compression: str, batches, directory: str) -> dict:
  """Encodes and writes every batch into one file: CPU and wall us per row,
  and the file's bytes per row."""
  encode = ENCODERS[fmt]
  cpu, wall = time.process_time(), time.perf_counter()
  writer = _writer(fmt, compression, directory)
  for columns in batches:
    records, blob = encode(columns, len(columns["id"]), None)
    writer.write(blob, records)
  written = writer.close()
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  size = os.path.getsize(written.path)
  os.remove(written.path)
  return {"cpu_us": cpu / written.records * 1e6, "wall_us": wall / written.records * 1e6,
          "bytes_per_row": size / written.records}


def measure(rows: int = 100 * BATCH_ROWS, rounds: int = 7) -> dict:
  """Every variant once per round, in a shuffled order; results.json's
  "writers" entry."""
  batches = make_batches(rows)
  runs = {f"{fmt}/{compression}": [] for fmt, compression in VARIANTS}
  loads = []
  with tempfile.TemporaryDirectory(prefix="tfcascade-writers-") as tmp:
    write_once(*VARIANTS[0], batches[:4], tmp)  # imports and first-call costs
    for round_ in range(rounds):
      loads.append(os.getloadavg()[0])
      order = list(VARIANTS)
      random.Random(round_).shuffle(order)
      for fmt, compression in order:
        runs[f"{fmt}/{compression}"].append(write_once(fmt, compression, batches, tmp))
  return {"date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
              timespec="seconds"),
          "machine": common.machine_info(("pyarrow",)), "rows": rows,
          "batch_rows": BATCH_ROWS, "rounds": rounds, "loadavg_1m": loads, "runs": runs}


def save(result: dict) -> None:
  """results.json's "writers" entry replaced by `result`; RESULTS.md rebuilt."""
  with open(run.RESULTS_JSON) as f:
    data = json.load(f)
  data["writers"] = result
  with open(run.RESULTS_JSON, "w") as f:
    json.dump(data, f, indent=1)
  report.write(data, run.RESULTS_MD)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", type=int, default=100 * BATCH_ROWS)
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--save", action="store_true",
                      help="store in results.json and rebuild RESULTS.md")
  args = parser.parse_args()
  result = measure(args.rows, args.rounds)
  print("\n".join(report.writers_section(result)))
  if args.save:
    save(result)
    print("saved in benchmarks/results.json; RESULTS.md rebuilt")


if __name__ == "__main__":
  main()
