"""Builds the whole demo: trained models, scoring data, and expected scores.

`demo.json` records the accuracies the cascade should reproduce. They are
computed here with plain numpy from the saved weights, independently of the
engine, so a run of the real pipeline on the demo data can be checked against
them.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Dict, Optional

import numpy as np
import tensorflow as tf

from tfcascade.pipeline.demo import dataset
from tfcascade.pipeline.demo import demo_dir
from tfcascade.pipeline.demo import job_config
from tfcascade.pipeline.demo import models

# Bump when the models, the data or demo.json change: a demo of another
# version (or none: written before demo.json said) is rebuilt whole.
# 3: model C and A's probs:0, for configs/ensemble.yaml.
VERSION = 3


def _softmax(logits: np.ndarray) -> np.ndarray:
  shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
  return shifted / shifted.sum(axis=1, keepdims=True)


def _weights(prefix: str) -> Dict[str, np.ndarray]:
  reader = tf.train.load_checkpoint(prefix)
  return {name: reader.get_tensor(name)
          for name in reader.get_variable_to_shape_map()}


def numpy_scores(a_prefix: str, b_prefix: str, pixels: np.ndarray,
                 threshold: float = models.CONFIDENCE_THRESHOLD
                ) -> Dict[str, np.ndarray]:
  """Runs both demo models and the cascade in float32 numpy.

  Args:
    a_prefix: model A's checkpoint prefix.
    b_prefix: model B's checkpoint prefix.
    pixels: float32 [n, 64].
    threshold: B runs where A's confidence is below this.

  Returns:
    Arrays by name: a_logits, a_confidence, a_prediction, b_logits,
    b_prediction (B on every row), b_ran (bool), cascade_prediction.
  """
  wa, wb = _weights(a_prefix), _weights(b_prefix)
  x = np.asarray(pixels, np.float32)
  a_logits = x @ wa["dense/kernel"] + wa["dense/bias"]
  a_conf = _softmax(a_logits).max(axis=1)
  a_pred = a_logits.argmax(axis=1)
  hidden = np.maximum(
      np.concatenate([a_logits, x], axis=1) @ wb["dense/kernel"]
      + wb["dense/bias"], 0)
  b_logits = hidden @ wb["dense_1/kernel"] + wb["dense_1/bias"]
  b_pred = b_logits.argmax(axis=1)
  ran = a_conf < np.float32(threshold)
  return {"a_logits": a_logits, "a_confidence": a_conf,
          "a_prediction": a_pred, "b_logits": b_logits,
          "b_prediction": b_pred, "b_ran": ran,
          "cascade_prediction": np.where(ran, b_pred, a_pred)}


def build_demo(out_dir: str, records: int = 200_000, shards: int = 8,
               seed: int = 0, steps: Optional[int] = None, shift: float = 0.0) -> dict:
  """Trains the demo models, writes the demo data set, `config.yaml` and
  `demo.json`.

  Over an existing demo the new one replaces it whole, swapped in only once
  complete (demo_dir.replaced). Its models are kept when trained with the same
  seed and steps by this VERSION: training is seeded, so it would give them
  again, and it takes the longest. When the records and shards are the same
  too and the demo's files are intact, nothing is rebuilt.

  Args:
    out_dir: writes `models/a`, `models/b`, `models/c`, `data/part-*.tfrecord.gz`,
      `config.yaml` and `demo.json` under it: a new or empty directory, or a
      demo's (nothing else in it).
    records: number of scoring records, at least 1.
    shards: number of data files, 1..records.
    seed: seeds training and data; same arguments, same files.
    steps: optimizer steps per model; None keeps the trainer's default.
    shift: 0..1, washes the scoring data out (dataset.shifted) for a run
      that `tfcascade report --compare` flags; the models stay the same.

  Returns:
    The contents of `demo.json`, and "rebuilt": "models and data", "data" or
    "nothing".

  Raises:
    DemoError: a number out of range, or an --out the demo must not replace.
  """
  demo_dir.check_numbers(records, shards, seed)
  check_shift(shift)
  made_by = {"version": VERSION, "seed": seed,
             "steps": models.TRAIN_STEPS if steps is None else steps}
  previous = demo_dir.previous_demo(out_dir) or {}
  keep_models = (_made_by(previous) == made_by
                 and _models_intact(previous["models"], out_dir))
  if keep_models and _data_intact(previous, out_dir, records, shards, shift):
    return {**_located(previous, out_dir), "rebuilt": "nothing"}
  with demo_dir.replaced(out_dir) as staging:
    summary = _build(staging, out_dir, made_by, records, shards, shift,
                     previous if keep_models else None)
  return {**summary, "rebuilt": "data" if keep_models else "models and data"}


def check_shift(shift: float) -> None:
  """Raises DemoError unless 0 <= shift <= 1 (checked before any work)."""
  if not 0.0 <= shift <= 1.0:
    raise demo_dir.DemoError(f"--shift must be between 0 and 1 (got {shift:g})")


def _made_by(summary: dict) -> dict:
  return {key: summary.get(key) for key in ("version", "seed", "steps")}


def _models_intact(entries: dict, out_dir: str) -> bool:
  located = [models.located(entries[name], os.path.join(out_dir, "models", name))
             for name in ("a", "b", "c")]
  return all(os.path.exists(m["checkpoint"] + ".index") and os.path.exists(m["meta_graph"])
             for m in located)


def _data_intact(previous: dict, out_dir: str, records: int, shards: int,
                 shift: float) -> bool:
  """Whether the demo in out_dir holds exactly the data and config it lists."""
  if (previous["records"], previous["shards"], previous.get("shift", 0.0)) != \
      (records, shards, shift):
    return False
  data_dir = os.path.join(out_dir, "data")
  names = sorted(os.path.basename(f) for f in previous["data"]["files"])
  return (os.path.isfile(os.path.join(out_dir, job_config.CONFIG))
          and os.path.isdir(data_dir) and sorted(os.listdir(data_dir)) == names
          and sum(os.path.getsize(os.path.join(data_dir, n)) for n in names)
          == previous["data"]["bytes"])


def _located(summary: dict, out_dir: str) -> dict:
  """`summary` with every path under out_dir (where the demo is, or will be
  once swapped in)."""
  data_dir = os.path.join(out_dir, "data")
  return {
      **summary,
      "models": {name: models.located(entry, os.path.join(out_dir, "models", name))
                 for name, entry in summary["models"].items()},
      "data": {**summary["data"],
               "pattern": os.path.join(data_dir, "part-*.tfrecord.gz"),
               "files": [os.path.join(data_dir, os.path.basename(f))
                         for f in summary["data"]["files"]]},
      "config": os.path.join(out_dir, job_config.CONFIG)}


def _build(staging: str, out_dir: str, made_by: dict, records: int, shards: int,
           shift: float, kept: Optional[dict]) -> dict:
  """Builds the demo in `staging` (swapped in as out_dir afterwards), with
  the models of the `kept` demo.json, if any; returns demo.json's contents."""
  seed = made_by["seed"]
  t0 = time.perf_counter()
  models_dir = os.path.join(staging, "models")
  if kept:
    shutil.copytree(os.path.join(out_dir, "models"), models_dir)
    trained = {**kept["models"], "held_out": kept["training_held_out"]}
  else:
    trained = models.train_demo_models(models_dir, seed=seed, steps=made_by["steps"])
  t1 = time.perf_counter()
  data = dataset.write_demo_dataset(os.path.join(staging, "data"),
                                    records=records, shards=shards, seed=seed,
                                    shift=shift)
  t2 = time.perf_counter()
  # Regenerated rather than read back: same seed, same arrays (the tests
  # check the files against these numbers through TF).
  _, pixels, labels = dataset.demo_records(records, seed, shift)
  a, b = (models.located(trained[name], os.path.join(models_dir, name))
          for name in ("a", "b"))
  scores = numpy_scores(a["checkpoint"], b["checkpoint"], pixels)
  t3 = time.perf_counter()

  def accuracy(pred: np.ndarray) -> float:
    return float(np.mean(pred == labels))

  summary = _located({
      **made_by,
      "records": records,
      "shards": shards,
      "shift": shift,
      "confidence_threshold": models.CONFIDENCE_THRESHOLD,
      "a_accuracy": accuracy(scores["a_prediction"]),
      "b_accuracy": accuracy(scores["b_prediction"]),
      "cascade_accuracy": accuracy(scores["cascade_prediction"]),
      "b_share": float(np.mean(scores["b_ran"])),
      "b_rows": int(np.sum(scores["b_ran"])),
      "models": {"a": trained["a"], "b": trained["b"], "c": trained["c"]},
      "data": {"files": data["files"],
               "records_per_file": data["records_per_file"],
               "bytes": data["bytes"]},
      "training_held_out": trained["held_out"],
      "seconds": {"train": round(t1 - t0, 3), "data": round(t2 - t1, 3),
                  "check": round(t3 - t2, 3)},
  }, out_dir)
  job_config.write_job_config(staging, os.path.basename(os.path.realpath(out_dir)),
                              summary["models"])
  with open(os.path.join(staging, demo_dir.DEMO_JSON), "w") as f:
    json.dump(summary, f, indent=2)
    f.write("\n")
  return summary
