"""Benchmark workloads: deterministic TFRecords and three model pairs.

Models are saved the way separately trained models arrive: each from its own
graph by its own Saver, as a checkpoint plus a `.meta` file, with clashing
variable names (`dense/kernel` in both A and B). The same builder functions
rebuild them under a scope for the hand-written baselines (B0, tf.data), which
restore with `Saver(var_list={checkpoint name: variable})` (docs/design.md, fact 2).

Everything is deterministic (fixed seeds), so every run of every system sees
the same bytes and the same weights.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Tuple

import numpy as np
import tensorflow as tf

tf1 = tf.compat.v1

FEATURE_DIM = 64
BATCH = 1024  # rows per session call, for every system
SHARDS = 4
DATA_SEED = 20261125
DATA_VERSION = 2  # bump when the data layout changes, to rebuild caches

# Layer widths (input width first); B's input is A's output. heavy and light
# are the pairs issue 12 measures by; ultralight (a matmul of a few kFLOP per
# row) shows the job's own cost with almost no model around it.
ARCHS = {
    "heavy": {"a": [FEATURE_DIM, 512, 64], "b": [64, 2048, 2048, 16]},
    "light": {"a": [FEATURE_DIM, 512, 64], "b": [64, 512, 16]},
    "ultralight": {"a": [FEATURE_DIM, 10], "b": [10, 10]},
}
MODEL_SEEDS = {"a": 11, "b": 22}


def flops_per_row(widths: List[int]) -> int:
  """Multiply-adds x 2 of the dense layers (bias, relu, softmax ignored)."""
  return sum(2 * i * o for i, o in zip(widths[:-1], widths[1:]))


def _weights(widths, seed) -> List[Tuple[np.ndarray, np.ndarray]]:
  """He-scaled random layers; the last layer is scaled down so logits are
  O(1) and A's confidence spreads over (0.1, 1) (gate thresholds need that)."""
  rng = np.random.default_rng(seed)
  layers = []
  for k, (i, o) in enumerate(zip(widths[:-1], widths[1:])):
    last = k == len(widths) - 2
    scale = (0.6 if last else np.sqrt(2.0)) / np.sqrt(i)
    layers.append((rng.normal(0, scale, (i, o)).astype(np.float32),
                   rng.normal(0, 0.05, (o,)).astype(np.float32)))
  return layers


def _mlp(x, widths):
  """Dense layers named dense, dense_1, ... (the Keras/tf.layers naming);
  returns the pre-softmax output and the variables."""
  variables = []
  for k, (i, o) in enumerate(zip(widths[:-1], widths[1:])):
    with tf1.variable_scope("dense" if k == 0 else f"dense_{k}"):
      kernel = tf1.get_variable("kernel", [i, o], tf.float32,
                                tf1.zeros_initializer(), use_resource=True)
      bias = tf1.get_variable("bias", [o], tf.float32,
                              tf1.zeros_initializer(), use_resource=True)
    variables += [kernel, bias]
    x = tf.matmul(x, kernel) + bias
    if k < len(widths) - 2:
      x = tf.nn.relu(x)
  return x, variables


def out_width(kind: str, role: str) -> int:
  return ARCHS[kind][role][-1]


def build_a(x, kind):
  """A: features [N, 64] -> (logits [N, out], confidence [N])."""
  logits, variables = _mlp(x, ARCHS[kind]["a"])
  confidence = tf.reduce_max(tf.nn.softmax(logits), axis=1)
  return logits, confidence, variables


def build_b(logits, kind):
  """B: A's logits [N, A's out] -> probs [N, B's out]."""
  out, variables = _mlp(logits, ARCHS[kind]["b"])
  return tf.nn.softmax(out), variables


def _save(model_dir, role, kind):
  """Saves one model from its own graph: checkpoint + model.meta."""
  os.makedirs(model_dir, exist_ok=True)
  graph = tf.Graph()
  with graph.as_default():
    if role == "a":
      x = tf1.placeholder(tf.float32, [None, FEATURE_DIM], name="input")
      logits, confidence, variables = build_a(x, kind)
      tf.identity(logits, name="logits")
      tf.identity(confidence, name="confidence")
    else:
      a = tf1.placeholder(tf.float32, [None, out_width(kind, "a")], name="input")
      probs, variables = build_b(a, kind)
      tf.identity(probs, name="probs")
    saver = tf1.train.Saver(variables)
    with tf1.Session(graph=graph) as sess:
      sess.run(tf1.global_variables_initializer())
      # Weights are loaded after init rather than baked in as initializer
      # constants, which would put megabytes of constants into the .meta.
      values = [w for pair in _weights(ARCHS[kind][role], MODEL_SEEDS[role])
                for w in pair]
      for var, value in zip(variables, values):
        var.load(value, sess)
      saver.save(sess, os.path.join(model_dir, "model.ckpt"),
                 write_meta_graph=False)
      saver.export_meta_graph(os.path.join(model_dir, "model.meta"))


def model_dir(workdir, kind, role):
  return os.path.join(workdir, "models", kind, role)


def restore_pair(sess, kind, workdir, scoped_vars):
  """Restores scope-built A and B from their own checkpoints (docs/design.md, fact 2).

  Args:
    scoped_vars: role -> (scope, variables built under it).
  """
  for role, (scope, variables) in scoped_vars.items():
    names = {v.op.name[len(scope) + 1:]: v for v in variables}
    saver = tf1.train.Saver(var_list=names)
    saver.restore(sess, tf.train.latest_checkpoint(model_dir(workdir, kind, role)))


def features(n: int) -> np.ndarray:
  """The deterministic feature matrix; rows are i.i.d., so a prefix of the
  big dataset is a fair smaller dataset."""
  rng = np.random.default_rng(DATA_SEED)
  return rng.standard_normal((n, FEATURE_DIM), dtype=np.float32)


def record_id(i: int) -> bytes:
  return b"r%09d" % i


def _serialize(x: np.ndarray, start: int) -> List[bytes]:
  out = []
  for k, row in enumerate(x):
    out.append(tf.train.Example(features=tf.train.Features(feature={
        "id": tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[record_id(start + k)])),
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=row)),
    })).SerializeToString())
  return out


def _write(path, records, compression=None):
  with tf.io.TFRecordWriter(path, compression) as w:
    for r in records:
      w.write(r)


def data_paths(workdir, n) -> Dict[str, str]:
  base = os.path.join(workdir, "data", str(n))
  return {"sharded": os.path.join(base, "part-*.tfrecord"),
          "single": os.path.join(base, "single", "all.tfrecord"),
          "gzip": os.path.join(base, "gzip", "part-*.tfrecord.gz"),
          "npy": os.path.join(base, "x.npy"),
          "dir": base}


def job_config(spec) -> dict:
  """tfcascade's job config for a run spec (workdir, kind, n, out, and
  optionally layout, output_compression (default: the input's), gate +
  threshold, split_bytes, read_in_graph); n = 0: the one-batch file."""
  workdir, kind, n = spec["workdir"], spec["kind"], spec["n"]
  compression = "gzip" if spec.get("layout") == "gzip" else "none"
  pattern = (data_paths(workdir, n)[spec.get("layout", "sharded")]
             if n else os.path.join(data_paths(workdir, 1024)["dir"], "*.tfrecord"))

  def stage(role, inputs, outputs):
    return {"name": role, "checkpoint": model_dir(workdir, kind, role),
            "meta_graph": os.path.join(model_dir(workdir, kind, role), "model.meta"),
            "inputs": inputs, "outputs": outputs}

  stage_b = stage("b", {"input:0": "a.logits"}, {"probs": "probs:0"})
  if spec.get("gate"):
    stage_b["run_if"] = f"a.confidence < {spec['threshold']!r}"
  config = {
      "input": {"pattern": pattern, "compression": compression,
                "features": {"id": {"dtype": "string"},
                             "x": {"dtype": "float32", "shape": [FEATURE_DIM]}}},
      "stages": [stage("a", {"input:0": "features.x"},
                       {"logits": "logits:0", "confidence": "confidence:0"}), stage_b],
      "output": {"path": os.path.join(spec["out"], "predictions"), "format": "tfrecord",
                 "passthrough": ["id"],
                 "compression": spec.get("output_compression", compression)},
      "batch_size": BATCH,
  }
  if spec.get("split_bytes"):
    config["input"]["split_bytes"] = spec["split_bytes"]
  if "read_in_graph" in spec:
    config["input"]["read_in_graph"] = spec["read_in_graph"]
  return config


def write_job_config(spec) -> str:
  """Writes job_config(spec) to <out>/job.yaml; returns its path."""
  import yaml  # pylint: disable=g-import-not-at-top
  os.makedirs(spec["out"], exist_ok=True)
  path = os.path.join(spec["out"], "job.yaml")
  with open(path, "w") as f:
    yaml.safe_dump(job_config(spec), f, sort_keys=False)
  return path


def prepare(workdir: str, sizes: List[int], log=print) -> dict:
  """Writes (or reuses) data and models; returns the manifest."""
  manifest_path = os.path.join(workdir, "manifest.json")
  wanted = {"version": DATA_VERSION, "sizes": sorted(sizes), "seed": DATA_SEED,
            "archs": ARCHS}
  if os.path.exists(manifest_path):
    with open(manifest_path) as f:
      found = json.load(f)
    if {k: found.get(k) for k in wanted} == json.loads(json.dumps(wanted)):
      log(f"reusing data and models in {workdir}")
      return found
  n_max = max(sizes)
  x = features(n_max)
  log(f"writing {n_max:,} records (+ prefixes {sorted(sizes)[:-1]}) to {workdir}")
  records = _serialize(x, 0)
  for n in sizes:
    paths = data_paths(workdir, n)
    os.makedirs(os.path.dirname(paths["single"]), exist_ok=True)
    os.makedirs(os.path.dirname(paths["gzip"]), exist_ok=True)
    np.save(paths["npy"], x[:n])
    bounds = np.linspace(0, n, SHARDS + 1).astype(int)
    for s in range(SHARDS):
      name = f"part-{s:05d}-of-{SHARDS:05d}.tfrecord"
      shard = records[bounds[s]:bounds[s + 1]]
      _write(os.path.join(paths["dir"], name), shard)
      _write(os.path.join(os.path.dirname(paths["gzip"]), name + ".gz"), shard, "GZIP")
    _write(paths["single"], records[:n])
  # A one-batch file for measuring the job's fixed cost directly.
  tiny = data_paths(workdir, 1024)
  os.makedirs(tiny["dir"], exist_ok=True)
  _write(os.path.join(tiny["dir"], "part-00000-of-00001.tfrecord"), records[:1024])
  log("saving models")
  for kind in ARCHS:
    for role in ("a", "b"):
      _save(model_dir(workdir, kind, role), role, kind)
  manifest = dict(wanted)
  manifest["bytes_per_record"] = sum(len(r) for r in records[:1000]) / 1000
  manifest["flops_per_row"] = {
      kind: {role: flops_per_row(w) for role, w in arch.items()}
      for kind, arch in ARCHS.items()}
  manifest["thresholds"] = gate_thresholds(workdir, x)
  with open(manifest_path, "w") as f:
    json.dump(manifest, f, indent=1)
  return manifest


def load_model(model_dir_: str, config=None):
  """A session holding one saved model, from its own .meta and checkpoint."""
  graph = tf.Graph()
  with graph.as_default():
    saver = tf1.train.import_meta_graph(os.path.join(model_dir_, "model.meta"))
    sess = tf1.Session(graph=graph, config=config)
    saver.restore(sess, tf.train.latest_checkpoint(model_dir_))
  return sess


def a_confidence(workdir, kind, x) -> np.ndarray:
  """A's confidence on x, from A's own checkpoint in its own graph."""
  with load_model(model_dir(workdir, kind, "a")) as sess:
    return np.concatenate([sess.run("confidence:0", {"input:0": x[i:i + 8192]})
                           for i in range(0, len(x), 8192)])


def gate_thresholds(workdir, x) -> dict:
  """`a.confidence < t` thresholds passing 100%, 50% and 10% of rows.

  Quantiles of A's own confidence on the data; 1.5 exceeds any softmax
  maximum, so it passes every row while still building the gated graph.
  """
  out = {}
  for kind in ARCHS:
    conf = a_confidence(workdir, kind, x)
    out[kind] = {"100": 1.5,
                 "50": float(np.quantile(conf, 0.5)),
                 "10": float(np.quantile(conf, 0.1))}
  return out
