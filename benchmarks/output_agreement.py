"""Do two outputs of the same job hold the same rows? Run in a child process
(it imports TensorFlow; the benchmark drivers must not).

Engines that give a session another number of threads (a worker process per
core gets one thread, the in-process run all of them) may sum a matmul in
another order: float outputs then differ in their last bits, so floats are
compared with a tolerance (float32 rounding) and everything else exactly,
row by row, matched on `id`.

    python -m benchmarks.output_agreement OUT REFERENCE   -> prints `AGREEMENT {json}`
"""

from __future__ import annotations

import glob
import json
import os
import sys

import numpy as np
import tensorflow as tf

RTOL, ATOL = 1e-5, 1e-7  # float32 summation order, nothing more


def _spec(first: bytes) -> dict:
  example = tf.train.Example.FromString(first)
  spec = {}
  for key, feature in example.features.feature.items():
    kind = feature.WhichOneof("kind")
    values = getattr(feature, kind).value
    dtype = {"bytes_list": tf.string, "float_list": tf.float32, "int64_list": tf.int64}[kind]
    spec[key] = tf.io.FixedLenFeature([len(values)], dtype)
  return spec


def load(out_dir: str) -> dict:
  """column -> array, rows sorted by id."""
  files = sorted(glob.glob(os.path.join(out_dir, "predictions-*")))
  compression = "GZIP" if files and files[0].endswith(".gz") else ""
  data = tf.data.TFRecordDataset(files, compression_type=compression)
  spec = _spec(next(iter(data.take(1))).numpy())
  columns = {key: [] for key in spec}
  for batch in data.batch(65536).map(lambda b: tf.io.parse_example(b, spec)):
    for key, value in batch.items():
      columns[key].append(value.numpy())
  columns = {key: np.concatenate(parts) for key, parts in columns.items()}
  order = np.argsort(columns["id"][:, 0], kind="stable")
  return {key: value[order] for key, value in columns.items()}


def agreement(out_dir: str, reference_dir: str) -> dict:
  mine, ref = load(out_dir), load(reference_dir)
  result = {"rows": int(len(mine["id"])), "reference_rows": int(len(ref["id"])),
            "columns_differ": sorted(set(mine) ^ set(ref)), "exact_mismatches": {},
            "float_max_abs_diff": 0.0, "float_outside_tolerance": 0}
  if result["rows"] != result["reference_rows"] or result["columns_differ"]:
    result["agree"] = False
    return result
  for key, value in mine.items():
    if value.dtype.kind == "f":
      result["float_max_abs_diff"] = max(result["float_max_abs_diff"],
                                         float(np.max(np.abs(value - ref[key]), initial=0.0)))
      result["float_outside_tolerance"] += int(np.sum(~np.isclose(value, ref[key], RTOL, ATOL)))
    else:
      bad = int(np.sum(np.any(value != ref[key], axis=1)))
      if bad:
        result["exact_mismatches"][key] = bad
  result["agree"] = not result["exact_mismatches"] and not result["float_outside_tolerance"]
  return result


if __name__ == "__main__":
  print("AGREEMENT", json.dumps(agreement(sys.argv[1], sys.argv[2])))
