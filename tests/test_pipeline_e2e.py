"""End to end: the CLI on real TFRecords and checkpoints, checked per record
against an oracle (each model alone, in its own session), read back with an
independent TFRecord reader (the `tfrecord` package, in a TF-free process)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from pipeline.cli import main
from tests import tiny_models as tm

N_RECORDS = 1500
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


@pytest.fixture(scope="module")
def job(tmp_path_factory):
  root = tmp_path_factory.mktemp("job")
  tm.save_linear(str(root / "models/a"), seed=1)
  tm.save_two_input(str(root / "models/b"), seed=2)
  pixels = np.random.default_rng(0).normal(size=(N_RECORDS, 64)).astype("float32")
  ids = [f"rec-{i:05d}".encode() for i in range(N_RECORDS)]
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
            for i in range(N_RECORDS)}
  return {"root": root, "config": write_config(root / "job.yaml"), "oracle": oracle}


def read_predictions_independently(out_dir):
  """Reads our output with the `tfrecord` package in a TF-free process."""
  code = textwrap.dedent("""
      import glob, json, sys
      from tfrecord.reader import tfrecord_loader
      rows = []
      for path in sorted(glob.glob(sys.argv[1] + "/predictions-*.tfrecord")):
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
    np.testing.assert_allclose(row["a/logits"], want["a/logits"], atol=1e-5)
    np.testing.assert_allclose(row["a/confidence"], want["a/confidence"], atol=1e-5)
    assert row["b/ran"] == [want["b/ran"]]
    if want["b/ran"]:
      np.testing.assert_allclose(row["b/probs"], want["b/probs"], atol=1e-5)
    else:
      assert row["b/probs"] == [0.0] * 10
  return rows


def summary_of(out_dir):
  with open(os.path.join(out_dir, "run_summary.json")) as f:
    return json.load(f)


def test_cli_run_matches_oracle_per_record(job):
  out = job["root"] / "out"
  assert main(["run", "--config", job["config"], "--runner=DirectRunner"]) == 0
  check_against_oracle(out, job["oracle"])
  summary = summary_of(out)
  assert summary["records_read"] == N_RECORDS == summary["records_written"]
  assert summary["records_dead_lettered"] == 0 and summary["accounted"]
  ran = sum(v["b/ran"] for v in job["oracle"].values())
  assert summary["stages"]["b"] == {**summary["stages"]["b"], "rows_in": N_RECORDS,
                                     "rows_run": ran}
  assert summary["stages"]["a"]["fingerprint"].startswith("sha256:")
  assert summary["metrics"]["sessions_opened"] == 1
  assert os.path.exists(out / "_SUCCESS")
  # A complete output is refused without --overwrite.
  assert main(["run", "--config", job["config"], "--runner=DirectRunner"]) == 2


@pytest.mark.parametrize("mode,workers,sessions", [
    ("multi_processing", 2, 2), ("multi_threading", 4, 1)])
def test_direct_running_modes(job, mode, workers, sessions):
  out = job["root"] / f"out_{mode}"
  code = main(["run", "--config", job["config"], "--set", f"output.path={out}",
               "--runner=DirectRunner", f"--direct_running_mode={mode}",
               f"--direct_num_workers={workers}"])
  assert code == 0
  check_against_oracle(out, job["oracle"])
  assert summary_of(out)["metrics"]["sessions_opened"] == sessions


def test_jsonl_output(job):
  out = job["root"] / "out_jsonl"
  assert main(["run", "--config", job["config"], "--set", f"output.path={out}",
               "--set", "output.format=jsonl", "--runner=DirectRunner"]) == 0
  rows = []
  for name in sorted(os.listdir(out)):
    if name.startswith("predictions-"):
      with open(out / name) as f:
        rows += [json.loads(line) for line in f]
  assert len(rows) == N_RECORDS
  for row in rows:
    want = job["oracle"][row["id"][0].encode()]
    np.testing.assert_allclose(row["a/logits"], want["a/logits"], atol=1e-5)
    assert row["b/ran"] == [want["b/ran"]]
