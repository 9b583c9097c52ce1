"""Shared test helpers: a small real job (tiny checkpoints, gzip TFRecords),
its oracle (each model alone, in its own session), and an independent reader
of our outputs (the `tfrecord` package, in a TF-free process)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import tensorflow as tf

from tests import tiny_models as tm

N_RECORDS = 1500
# `tfcascade run` flags for each local engine the tests run a job on.
ENGINES = {
    "direct": ["--runner=DirectRunner"],
    "multi_processing": ["--runner=DirectRunner", "--direct_running_mode=multi_processing",
                         "--direct_num_workers=2"],
    "spark": ["--engine", "spark", "--master", "local[2]",
              "--spark-conf", "spark.driver.host=127.0.0.1",
              "--spark-conf", "spark.driver.bindAddress=127.0.0.1",
              "--spark-conf", "spark.ui.enabled=false"],
}


def write_config(path, **extra):
  body = textwrap.dedent(f"""\
      input:
        pattern: data/part-*.tfrecord.gz
        features:
          id: {{dtype: string}}
          pixels: {{dtype: float32, shape: [64]}}
      stages:
        - name: a
          checkpoint: models/a
          meta_graph: models/a/model.meta
          inputs: {{"input:0": features.pixels}}
          outputs: {{logits: "logits:0", confidence: "confidence:0"}}
        - name: b
          checkpoint: models/b
          meta_graph: models/b/model.meta
          inputs: {{"input:0": a.logits, "pixels:0": features.pixels}}
          outputs: {{probs: "probs:0"}}
          run_if: "a.confidence < 0.99"
      output:
        path: out
        passthrough: [id]
      batch_size: 200
      """)
  for key, value in extra.items():
    body += f"{key}: {value}\n"
  with open(path, "w") as f:
    f.write(body)
  return str(path)


def make_job(root, n_records=None):
  """Models, 3 gzip shards of n_records Examples, config and oracle under root."""
  n_records = n_records or N_RECORDS
  tm.save_linear(str(root / "models/a"), seed=1)
  tm.save_two_input(str(root / "models/b"), seed=2)
  pixels = np.random.default_rng(0).normal(size=(n_records, 64)).astype("float32")
  ids = [f"rec-{i:05d}".encode() for i in range(n_records)]
  examples = tm.make_examples(pixels, ids)
  os.makedirs(root / "data")
  for shard in range(3):
    with tf.io.TFRecordWriter(str(root / f"data/part-{shard}.tfrecord.gz"), "GZIP") as w:
      for e in examples[shard::3]:
        w.write(e)
  a = tm.oracle_meta_graph(str(root / "models/a"), {"input:0": pixels},
                           {"logits": "logits:0", "confidence": "confidence:0"})
  b = tm.oracle_meta_graph(str(root / "models/b"),
                           {"input:0": a["logits"], "pixels:0": pixels}, "probs:0")
  oracle = {ids[i]: {"a/logits": a["logits"][i], "a/confidence": a["confidence"][i],
                     "b/probs": b[i], "b/ran": int(a["confidence"][i] < 0.99)}
            for i in range(n_records)}
  return {"root": root, "config": write_config(root / "job.yaml"), "oracle": oracle,
          "examples": examples, "ids": ids}


def read_predictions_independently(out_dir):
  """Reads our output with the `tfrecord` package in a TF-free process."""
  code = textwrap.dedent("""
      import glob, json, sys
      from tfrecord.reader import tfrecord_loader
      rows = []
      for path in sorted(glob.glob(glob.escape(sys.argv[1]) + "/predictions-*.tfrecord")):
        for ex in tfrecord_loader(path, None):
          rows.append({k: (bytes(v).decode() if isinstance(v, (bytes, memoryview))
                           else v.tolist()) for k, v in ex.items()})
      print(json.dumps(rows))
      """)
  result = subprocess.run([sys.executable, "-c", code, str(out_dir)],
                          capture_output=True, text=True, check=True)
  return json.loads(result.stdout)


def check_against_oracle(out_dir, oracle):
  rows = read_predictions_independently(out_dir)
  assert len(rows) == len(oracle)
  seen = set()
  for row in rows:
    rid = row["id"].encode()
    assert rid not in seen
    seen.add(rid)
    want = oracle[rid]
    # float32 through sessions with other thread counts than the oracle's:
    # sums in another order differ in the last bits (relative 1e-4 covers it).
    np.testing.assert_allclose(row["a/logits"], want["a/logits"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(row["a/confidence"], want["a/confidence"], rtol=1e-4, atol=1e-5)
    assert row["b/ran"] == [want["b/ran"]]
    if want["b/ran"]:
      np.testing.assert_allclose(row["b/probs"], want["b/probs"], rtol=1e-4, atol=1e-5)
    else:
      assert row["b/probs"] == [0.0] * 10
  return rows


def summary_of(out_dir):
  """run_summary.json, with the launcher's run_metrics.json under "metrics"."""
  with open(os.path.join(out_dir, "run_summary.json")) as f:
    summary = json.load(f)
  metrics = os.path.join(out_dir, "run_metrics.json")
  if os.path.exists(metrics):
    with open(metrics) as f:
      summary["metrics"] = json.load(f)
  return summary


