"""Trains and saves the demo models as TF1-style checkpoints.

Model A is a cheap linear softmax classifier on the 64 pixels. Model B is a
stronger MLP that reads A's logits plus the pixels, and the cascade runs it only
where A is unsure. Model C, a small MLP on the pixels trained apart, is the
third member of the ensemble of configs/ensemble.yaml. The models
deliberately name their first layer `dense/kernel` / `dense/bias`, like
separately trained real models would, so restoring them into one session
exercises variable-collision isolation.

Each model directory holds, as a TF1 job would leave it:
  model.ckpt-<step>.index / .data-*  weights + global_step, no optimizer slots
  checkpoint                         state file, relative paths
  model.meta                         inference-only MetaGraphDef + SaverDef
"""

from __future__ import annotations

import os
import time
from typing import Callable, Dict, Tuple

import numpy as np
import tensorflow as tf

from tfcascade.pipeline.demo import digits

v1 = tf.compat.v1

CONFIDENCE_THRESHOLD = 0.9
HIDDEN_UNITS = 128
C_HIDDEN_UNITS = 32  # model C: small, so that it disagrees with A and B
TRAIN_EXAMPLES = 40_000
EVAL_EXAMPLES = 20_000
BATCH_SIZE = 256
TRAIN_STEPS = 3000  # optimizer steps per model
META_GRAPH = "model.meta"
CKPT_BASENAME = "model.ckpt"

# Seed offsets keep the training, B-training and evaluation draws disjoint
# streams for any caller seed; model C trains on its own draw and seed.
_TRAIN_DRAW = 1_000
_EVAL_DRAW = 2_000
_C_DRAW = 3_000


def _dense(x: tf.Tensor, units: int, scope: str, seed: int) -> tf.Tensor:
  """A dense layer with TF1 names `<scope>/kernel` and `<scope>/bias`."""
  with v1.variable_scope(scope):
    kernel = v1.get_variable(
        "kernel", [int(x.shape[-1]), units], tf.float32,
        initializer=v1.glorot_uniform_initializer(seed=seed),
        use_resource=True)
    bias = v1.get_variable(
        "bias", [units], tf.float32, initializer=v1.zeros_initializer(),
        use_resource=True)
  return tf.matmul(x, kernel) + bias


def build_model_a(seed: int = 0) -> Dict[str, tf.Tensor]:
  """Builds model A's inference graph into the current default graph.

  Returns:
    Tensors by role: input, logits, confidence, prediction.
  """
  pixels = v1.placeholder(tf.float32, [None, digits.NUM_PIXELS], name="input")
  logits = tf.identity(_dense(pixels, digits.NUM_CLASSES, "dense", seed),
                       name="logits")
  # Class probabilities, for an ensemble to average with the other models'.
  probs = tf.nn.softmax(logits, name="probs")
  confidence = tf.reduce_max(probs, axis=1, name="confidence")
  prediction = tf.argmax(logits, axis=1, output_type=tf.int64,
                         name="prediction")
  return {"input": pixels, "logits": logits, "probs": probs,
          "confidence": confidence, "prediction": prediction}


def build_model_c(seed: int = 0,
                  hidden_units: int = C_HIDDEN_UNITS) -> Dict[str, tf.Tensor]:
  """Builds model C's inference graph: a small MLP on the pixels alone,
  trained apart from A and B (configs/ensemble.yaml averages it with A).

  Returns:
    Tensors by role: input, logits, probs, prediction.
  """
  pixels = v1.placeholder(tf.float32, [None, digits.NUM_PIXELS], name="input")
  hidden = tf.nn.relu(_dense(pixels, hidden_units, "dense", seed))
  logits = tf.identity(
      _dense(hidden, digits.NUM_CLASSES, "dense_1", seed + 1), name="logits")
  probs = tf.nn.softmax(logits, name="probs")
  prediction = tf.argmax(logits, axis=1, output_type=tf.int64,
                         name="prediction")
  return {"input": pixels, "logits": logits, "probs": probs,
          "prediction": prediction}


def build_model_b(seed: int = 0,
                  hidden_units: int = HIDDEN_UNITS) -> Dict[str, tf.Tensor]:
  """Builds model B's inference graph into the current default graph.

  Returns:
    Tensors by role: input (A's logits), pixels, logits, probs, prediction.
  """
  a_logits = v1.placeholder(tf.float32, [None, digits.NUM_CLASSES],
                            name="input")
  pixels = v1.placeholder(tf.float32, [None, digits.NUM_PIXELS],
                          name="pixels")
  joined = tf.concat([a_logits, pixels], axis=1)
  hidden = tf.nn.relu(_dense(joined, hidden_units, "dense", seed))
  logits = tf.identity(
      _dense(hidden, digits.NUM_CLASSES, "dense_1", seed + 1), name="logits")
  probs = tf.nn.softmax(logits, name="probs")
  prediction = tf.argmax(logits, axis=1, output_type=tf.int64,
                         name="prediction")
  return {"input": a_logits, "pixels": pixels, "logits": logits,
          "probs": probs, "prediction": prediction}


def _session_config() -> v1.ConfigProto:
  # One thread: float reductions then sum in a fixed order, so a seed gives
  # the same weights on any machine. The models are tiny; it costs nothing.
  # CPU only, for the same reason; it also keeps a GPU build of TensorFlow on
  # a machine without one from probing CUDA ("failed call to cuInit").
  return v1.ConfigProto(intra_op_parallelism_threads=1,
                        inter_op_parallelism_threads=1,
                        device_count={"GPU": 0})


def _train_and_save(build: Callable[[], Dict[str, tf.Tensor]],
                    feeds: Dict[str, np.ndarray],
                    labels: np.ndarray,
                    out_dir: str,
                    seed: int,
                    steps: int,
                    learning_rate: float
                   ) -> Tuple[v1.Session, Dict[str, tf.Tensor], str]:
  """Builds, exports the inference meta graph, trains, checkpoints.

  Args:
    build: builds the inference graph; returns tensors by role.
    feeds: training inputs by role (role names of build's placeholders).
    labels: int64 training labels aligned with feeds.
    out_dir: the model directory to write.
    seed: graph seed and minibatch seed.
    steps: optimizer steps.
    learning_rate: Adam's learning rate.

  Returns:
    (open session holding the trained model, tensors by role, ckpt prefix).
    The caller closes the session.
  """
  os.makedirs(out_dir, exist_ok=True)
  graph = tf.Graph()
  with graph.as_default():
    v1.set_random_seed(seed)
    tensors = build()
    model_vars = list(v1.global_variables())
    # Export now, before global_step and the optimizer exist: the meta graph
    # is then inference-only by construction (no slots, no training ops), and
    # its SaverDef restores exactly the model variables.
    inference_saver = v1.train.Saver(var_list=model_vars)
    v1.train.export_meta_graph(
        filename=os.path.join(out_dir, META_GRAPH),
        graph=graph, saver_def=inference_saver.as_saver_def(),
        clear_devices=True)

    y = v1.placeholder(tf.int64, [None], name="labels")
    loss = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=y, logits=tensors["logits"]))
    global_step = v1.train.get_or_create_global_step()
    train_op = v1.train.AdamOptimizer(learning_rate).minimize(
        loss, global_step=global_step, var_list=model_vars)
    # Relative paths in the `checkpoint` file, so the directory can be moved
    # or copied to a bucket and still resolve.
    saver = v1.train.Saver(var_list=model_vars + [global_step],
                           save_relative_paths=True)
    init = v1.global_variables_initializer()

  sess = v1.Session(graph=graph, config=_session_config())
  sess.run(init)
  rng = np.random.default_rng(seed)
  n = len(labels)
  placeholders = [tensors[role] for role in feeds]
  arrays = list(feeds.values())
  for _ in range(steps):
    idx = rng.integers(0, n, size=BATCH_SIZE)
    feed = {p: a[idx] for p, a in zip(placeholders, arrays)}
    feed[y] = labels[idx]
    sess.run(train_op, feed)
  # Saver.save would read a global_step *variable* eagerly (TF2 default
  # mode, outside this graph's context) and fail; hand it the number.
  step = int(sess.run(global_step))
  with graph.as_default():
    prefix = saver.save(sess, os.path.join(out_dir, CKPT_BASENAME),
                        global_step=step, write_meta_graph=False)
  graph.finalize()
  return sess, tensors, prefix


def _model_a_inputs(seed: int) -> Tuple[np.ndarray, np.ndarray]:
  split = digits.load_split()
  return digits.augment(split.train_pixels, split.train_labels,
                        TRAIN_EXAMPLES, seed + _TRAIN_DRAW)


def _accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
  return float(np.mean(pred == labels))


def train_demo_models(out_dir: str, seed: int = 0, steps: int = TRAIN_STEPS
                     ) -> dict:
  """Trains model A, then model B on A's frozen logits, then model C, and
  saves them.

  Args:
    out_dir: writes `out_dir/a/`, `out_dir/b/` and `out_dir/c/`.
    seed: makes training reproducible; different seeds give different weights.
    steps: optimizer steps for each model.

  Returns:
    {"a": {...}, "b": {...}, "c": {...}} with each model's dir, checkpoint prefix, meta
    graph path and tensor names; "held_out" with accuracies of A, B, C and the
    cascade (B where A's confidence < CONFIDENCE_THRESHOLD) and the share of
    rows B runs on, measured on augmented held-out digits; "train_seconds".
  """
  start = time.perf_counter()
  x, y = _model_a_inputs(seed)
  split = digits.load_split()
  eval_x, eval_y = digits.augment(split.held_out_pixels, split.held_out_labels,
                                  EVAL_EXAMPLES, seed + _EVAL_DRAW)

  a_dir = os.path.join(out_dir, "a")
  sess_a, ta, a_prefix = _train_and_save(
      lambda: build_model_a(seed), {"input": x}, y, a_dir, seed, steps, 0.01)
  with sess_a:
    # B learns from A as A will be at inference time: frozen, run forward.
    train_a_logits = sess_a.run(ta["logits"], {ta["input"]: x})
    eval_a_logits, eval_a_conf, eval_a_pred = sess_a.run(
        [ta["logits"], ta["confidence"], ta["prediction"]],
        {ta["input"]: eval_x})

  b_dir = os.path.join(out_dir, "b")
  sess_b, tb, b_prefix = _train_and_save(
      lambda: build_model_b(seed), {"input": train_a_logits, "pixels": x}, y,
      b_dir, seed, steps, 0.003)
  with sess_b:
    eval_b_pred = sess_b.run(
        tb["prediction"], {tb["input"]: eval_a_logits, tb["pixels"]: eval_x})

  c_seed = seed + _C_DRAW
  c_x, c_y = _model_a_inputs(c_seed)
  c_dir = os.path.join(out_dir, "c")
  sess_c, tc, c_prefix = _train_and_save(
      lambda: build_model_c(c_seed), {"input": c_x}, c_y, c_dir, c_seed, steps, 0.003)
  with sess_c:
    eval_c_pred = sess_c.run(tc["prediction"], {tc["input"]: eval_x})

  gate = eval_a_conf < CONFIDENCE_THRESHOLD
  cascade = np.where(gate, eval_b_pred, eval_a_pred)
  return {
      "a": {"dir": a_dir, "checkpoint": a_prefix,
            "meta_graph": os.path.join(a_dir, META_GRAPH),
            "inputs": {"input": "input:0"},
            "outputs": {"logits": "logits:0", "confidence": "confidence:0",
                        "prediction": "prediction:0"}},
      "b": {"dir": b_dir, "checkpoint": b_prefix,
            "meta_graph": os.path.join(b_dir, META_GRAPH),
            "inputs": {"input": "input:0", "pixels": "pixels:0"},
            "outputs": {"logits": "logits:0", "probs": "probs:0",
                        "prediction": "prediction:0"}},
      "c": {"dir": c_dir, "checkpoint": c_prefix,
            "meta_graph": os.path.join(c_dir, META_GRAPH),
            "inputs": {"input": "input:0"},
            "outputs": {"logits": "logits:0", "probs": "probs:0",
                        "prediction": "prediction:0"}},
      "held_out": {
          "records": EVAL_EXAMPLES,
          "confidence_threshold": CONFIDENCE_THRESHOLD,
          "a_accuracy": _accuracy(eval_a_pred, eval_y),
          "b_accuracy": _accuracy(eval_b_pred, eval_y),
          "c_accuracy": _accuracy(eval_c_pred, eval_y),
          "cascade_accuracy": _accuracy(cascade, eval_y),
          "b_share": float(np.mean(gate)),
      },
      "train_seconds": time.perf_counter() - start,
  }


def located(entry: dict, model_dir: str) -> dict:
  """A model's entry from train_demo_models, for its files now in `model_dir`
  (the demo is built elsewhere, then moved into place)."""
  return {**entry, "dir": model_dir,
          "checkpoint": os.path.join(model_dir, os.path.basename(entry["checkpoint"])),
          "meta_graph": os.path.join(model_dir, META_GRAPH)}


def train_same_architecture_pair(out_dir: str,
                                 seeds: Tuple[int, int] = (1, 2),
                                 steps: int = 300) -> Dict[str, str]:
  """Trains model A's architecture twice, with different seeds.

  The two checkpoints have identical variable names and shapes but different
  values: restoring both into one session must keep them apart.

  Args:
    out_dir: writes `out_dir/a1/` and `out_dir/a2/` (one dir per seed,
      numbered from 1).
    seeds: one seed per model.
    steps: optimizer steps for each model.

  Returns:
    {"a1": checkpoint prefix, "a2": checkpoint prefix, ...}.
  """
  prefixes: Dict[str, str] = {}
  for i, seed in enumerate(seeds, start=1):
    x, y = _model_a_inputs(seed)
    sess, _, prefix = _train_and_save(
        lambda s=seed: build_model_a(s), {"input": x}, y,
        os.path.join(out_dir, f"a{i}"), seed, steps, 0.01)
    sess.close()
    prefixes[f"a{i}"] = prefix
  return prefixes
