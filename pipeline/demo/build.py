"""Builds the whole demo: trained models, scoring data, and expected scores.

`demo.json` records the accuracies the cascade should reproduce. They are
computed here with plain numpy from the saved weights, independently of the
engine, so a run of the real pipeline on the demo data can be checked against
them.
"""

from __future__ import annotations

import json
import os
import time
from typing import Dict, Optional

import numpy as np
import tensorflow as tf

from tfcascade.pipeline.demo import dataset
from tfcascade.pipeline.demo import models


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
               seed: int = 0, steps: Optional[int] = None) -> dict:
  """Trains the demo models, writes the demo data set and `demo.json`.

  Args:
    out_dir: writes `models/a`, `models/b`, `data/part-*.tfrecord.gz` and
      `demo.json` under it.
    records: number of scoring records.
    shards: number of data files.
    seed: seeds training and data; same arguments, same files.
    steps: optimizer steps per model; None keeps the trainer's default.

  Returns:
    The contents written to `demo.json`.
  """
  t0 = time.perf_counter()
  train_kwargs = {} if steps is None else {"steps": steps}
  trained = models.train_demo_models(os.path.join(out_dir, "models"),
                                     seed=seed, **train_kwargs)
  t1 = time.perf_counter()
  data = dataset.write_demo_dataset(os.path.join(out_dir, "data"),
                                    records=records, shards=shards, seed=seed)
  t2 = time.perf_counter()
  # Regenerated rather than read back: same seed, same arrays (the tests
  # check the files against these numbers through TF).
  _, pixels, labels = dataset.demo_records(records, seed)
  scores = numpy_scores(trained["a"]["checkpoint"], trained["b"]["checkpoint"],
                        pixels)
  t3 = time.perf_counter()

  def accuracy(pred: np.ndarray) -> float:
    return float(np.mean(pred == labels)) if records else 0.0

  summary = {
      "records": records,
      "seed": seed,
      "confidence_threshold": models.CONFIDENCE_THRESHOLD,
      "a_accuracy": accuracy(scores["a_prediction"]),
      "b_accuracy": accuracy(scores["b_prediction"]),
      "cascade_accuracy": accuracy(scores["cascade_prediction"]),
      "b_share": float(np.mean(scores["b_ran"])) if records else 0.0,
      "b_rows": int(np.sum(scores["b_ran"])),
      "models": {"a": trained["a"], "b": trained["b"]},
      "data": {"pattern": os.path.join(out_dir, "data",
                                       "part-*.tfrecord.gz"),
               "files": data["files"],
               "records_per_file": data["records_per_file"],
               "bytes": data["bytes"]},
      "training_held_out": trained["held_out"],
      "seconds": {"train": round(t1 - t0, 3), "data": round(t2 - t1, 3),
                  "check": round(t3 - t2, 3)},
  }
  with open(os.path.join(out_dir, "demo.json"), "w") as f:
    json.dump(summary, f, indent=2)
    f.write("\n")
  return summary
