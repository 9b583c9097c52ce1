"""Tiny real models for engine tests: random weights, real checkpoints.

Each saver writes a model from its own graph, the way separately trained models
arrive; variable names deliberately clash across models (`dense/kernel`).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

tf1 = tf.compat.v1


def _dense(x, units, name, seed, use_resource=True):
  rng = np.random.default_rng(seed)
  with tf1.variable_scope(name):
    kernel = tf1.get_variable(
        "kernel", initializer=rng.normal(size=(x.shape[1], units)).astype("float32"),
        use_resource=use_resource)
    bias = tf1.get_variable(
        "bias", initializer=rng.normal(size=(units,)).astype("float32"),
        use_resource=use_resource)
  return tf.matmul(x, kernel) + bias


def linear_builder(inputs):
  """Builder-source model: logits/confidence from `pixels` [N, 64]."""
  logits = _dense(inputs["pixels"], 10, "dense", seed=0)
  return {"logits": logits,
          "confidence": tf.reduce_max(tf.nn.softmax(logits), axis=1)}


def broken_builder(inputs):
  """linear_builder, then a CheckNumerics that fails on EVERY row (the log of
  a negative number): a broken model, whatever the data."""
  out = linear_builder(inputs)
  checked = tf.debugging.check_numerics(tf.math.log(out["confidence"] - 2.0),
                                        "broken model")
  return {"logits": out["logits"], "checked": checked}


def fragile_builder(inputs):
  """linear_builder, then a CheckNumerics that fails only on rows whose first
  pixel is below -100: one bad row makes the model fail."""
  out = linear_builder(inputs)
  checked = tf.debugging.check_numerics(
      tf.math.log(inputs["pixels"][:, 0] + 100.0), "fragile model")
  return {"logits": out["logits"], "checked": checked}


def _linear_graph(seed, in_dim, use_resource):
  x = tf1.placeholder(tf.float32, [None, in_dim], name="input")
  logits = tf.identity(_dense(x, 10, "dense", seed, use_resource), name="logits")
  tf.identity(tf.reduce_max(tf.nn.softmax(logits), axis=1), name="confidence")
  return x


def save_linear(model_dir, seed, in_dim=64, use_resource=True, scope=None,
                global_step=7):
  """A: `input:0` [N, in_dim] -> `logits:0` [N, 10], `confidence:0` [N]."""
  os.makedirs(model_dir, exist_ok=True)
  graph = tf.Graph()
  with graph.as_default():
    if scope:
      with tf1.variable_scope(scope):
        _linear_graph(seed, in_dim, use_resource)
    else:
      _linear_graph(seed, in_dim, use_resource)
    step = tf1.train.get_or_create_global_step()
    saver = tf1.train.Saver()
    with tf1.Session() as sess:
      sess.run(tf1.global_variables_initializer())
      sess.run(step.assign(global_step))
      saver.save(sess, os.path.join(model_dir, "model.ckpt"), global_step=step,
                 write_meta_graph=False)
      saver.export_meta_graph(os.path.join(model_dir, "model.meta"))
  return model_dir


def save_two_input(model_dir, seed, hidden=16):
  """B: `input:0` [N, 10] and `pixels:0` [N, 64] -> `probs:0` [N, 10]."""
  os.makedirs(model_dir, exist_ok=True)
  graph = tf.Graph()
  with graph.as_default():
    a = tf1.placeholder(tf.float32, [None, 10], name="input")
    pixels = tf1.placeholder(tf.float32, [None, 64], name="pixels")
    h = tf.nn.relu(_dense(tf.concat([a, pixels], axis=1), hidden, "dense", seed))
    logits = _dense(h, 10, "dense_1", seed + 1)
    tf.nn.softmax(logits, name="probs")
    tf.identity(tf.reduce_max(tf.nn.softmax(logits), axis=1), name="confidence")
    saver = tf1.train.Saver()
    with tf1.Session() as sess:
      sess.run(tf1.global_variables_initializer())
      saver.save(sess, os.path.join(model_dir, "model.ckpt"), write_meta_graph=False)
      saver.export_meta_graph(os.path.join(model_dir, "model.meta"))
  return model_dir


def save_builder_checkpoint(model_dir, scope_prefix=None):
  """A checkpoint for `linear_builder`, names bare or under `scope_prefix`."""
  os.makedirs(model_dir, exist_ok=True)
  graph = tf.Graph()
  with graph.as_default():
    pixels = tf1.placeholder(tf.float32, [None, 64])
    if scope_prefix:
      with tf1.variable_scope(scope_prefix):
        linear_builder({"pixels": pixels})
    else:
      linear_builder({"pixels": pixels})
    saver = tf1.train.Saver()
    with tf1.Session() as sess:
      sess.run(tf1.global_variables_initializer())
      saver.save(sess, os.path.join(model_dir, "model.ckpt"))
  return model_dir


def save_tf1_saved_model(export_dir, seed):
  """A TF1 SavedModel of the linear model, signature keys `pixels`/`logits`."""
  graph = tf.Graph()
  with graph.as_default():
    x = _linear_graph(seed, 64, use_resource=True)
    with tf1.Session() as sess:
      sess.run(tf1.global_variables_initializer())
      builder = tf1.saved_model.Builder(export_dir)
      sig = tf1.saved_model.predict_signature_def(
          inputs={"pixels": x},
          outputs={"logits": graph.get_tensor_by_name("logits:0"),
                   "confidence": graph.get_tensor_by_name("confidence:0")})
      builder.add_meta_graph_and_variables(
          sess, ["serve"], signature_def_map={"serving_default": sig})
      builder.save()
  return export_dir


class _Tf2Linear(tf.Module):

  def __init__(self, seed):
    super().__init__()
    rng = np.random.default_rng(seed)
    self.kernel = tf.Variable(rng.normal(size=(64, 10)).astype("float32"))
    self.bias = tf.Variable(rng.normal(size=(10,)).astype("float32"))

  @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32)])
  def __call__(self, pixels):
    logits = tf.matmul(pixels, self.kernel) + self.bias
    return {"logits": logits,
            "confidence": tf.reduce_max(tf.nn.softmax(logits), axis=1)}


def save_tf2_saved_model(export_dir, seed):
  """A SavedModel exported by TF2 (`tf.saved_model.save`, object checkpoint)."""
  module = _Tf2Linear(seed)
  tf.saved_model.save(module, export_dir,
                      signatures={"serving_default": module.__call__})
  return export_dir


def oracle_meta_graph(model_dir, feeds, fetches):
  """Runs one model alone, in its own fresh graph and session."""
  graph = tf.Graph()
  with graph.as_default(), tf1.Session(graph=graph) as sess:
    saver = tf1.train.import_meta_graph(os.path.join(model_dir, "model.meta"))
    saver.restore(sess, tf.train.latest_checkpoint(model_dir))
    return sess.run(fetches, feed_dict=feeds)


def oracle_saved_model(export_dir, feeds, fetches):
  """Runs a SavedModel alone with TensorFlow's own TF1 loader."""
  graph = tf.Graph()
  with graph.as_default(), tf1.Session(graph=graph) as sess:
    meta = tf1.saved_model.loader.load(sess, ["serve"], export_dir)
    sig = meta.signature_def["serving_default"]
    feed = {sig.inputs[k].name: v for k, v in feeds.items()}
    return sess.run({k: sig.outputs[k].name for k in fetches}, feed_dict=feed)


def make_examples(pixels, ids=None):
  """Serialized tf.train.Examples with `id` and `pixels` features."""
  out = []
  for i, row in enumerate(pixels):
    feature = {"pixels": tf.train.Feature(float_list=tf.train.FloatList(value=row))}
    rid = ids[i] if ids is not None else f"r{i}".encode()
    feature["id"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[rid]))
    out.append(tf.train.Example(
        features=tf.train.Features(feature=feature)).SerializeToString())
  return out


# --- Keras 3 and TF2 exports (issue 14) ---------------------------------------

def save_keras_models(root, seed=0):
  """Two Keras 3 models exported with `model.export()`, the way users bring
  them; both name a layer `dense` (so their variable names clash).

  A: `pixels` [N, 64] -> `output_0` probs [N, 10], `output_1` confidence [N].
  B: `a_probs` [N, 10] and `pixels` [N, 64] -> `output_0` scores [N, 3].

  Returns:
    {"a": export dir, "b": export dir, "models": {"a": model, "b": model}};
    the in-memory models are the oracle (`model.predict`).
  """
  import keras  # pylint: disable=g-import-not-at-top; Keras 3 comes with TF
  keras.utils.set_random_seed(seed)
  pixels = keras.Input((64,), name="pixels")
  hidden = keras.layers.Dense(16, activation="relu", name="dense")(pixels)
  probs = keras.layers.Dense(10, activation="softmax", name="probs")(hidden)
  confidence = keras.ops.max(probs, axis=-1)
  model_a = keras.Model(pixels, [probs, confidence], name="a")
  a_probs = keras.Input((10,), name="a_probs")
  pixels_b = keras.Input((64,), name="pixels")
  joined = keras.layers.Concatenate()([a_probs, pixels_b])
  hidden_b = keras.layers.Dense(8, activation="relu", name="dense")(joined)
  scores = keras.layers.Dense(3, name="dense_1")(hidden_b)
  model_b = keras.Model([a_probs, pixels_b], scores, name="b")
  dirs = {"a": os.path.join(root, "keras_a"), "b": os.path.join(root, "keras_b")}
  model_a.export(dirs["a"], verbose=False)
  model_b.export(dirs["b"], verbose=False)
  return {**dirs, "models": {"a": model_a, "b": model_b}}


class _Tf2TwoHeads(tf.Module):
  """Two signatures over different variables: `head_a` reads kernel_a only,
  `head_b` kernel_b only."""

  def __init__(self, seed):
    super().__init__()
    rng = np.random.default_rng(seed)
    self.kernel_a = tf.Variable(rng.normal(size=(64, 10)).astype("float32"))
    self.kernel_b = tf.Variable(rng.normal(size=(64, 3)).astype("float32"))

  @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="pixels")])
  def head_a(self, pixels):
    return {"logits": tf.matmul(pixels, self.kernel_a)}

  @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="pixels")])
  def head_b(self, pixels):
    return {"scores": tf.matmul(pixels, self.kernel_b)}


def save_tf2_two_heads(export_dir, seed):
  """A TF2 SavedModel whose `serving_default` reads only one of its two
  variables (`other` reads the second): fetching serving_default leaves
  kernel_b really unused."""
  module = _Tf2TwoHeads(seed)
  tf.saved_model.save(module, export_dir, signatures={
      "serving_default": module.head_a, "other": module.head_b})
  return export_dir


def linear_cascade_spec(root, run_if, passthrough=()):
  """The engine's spec of a 2-stage cascade on `pixels`: a linear model A
  (save_linear) feeding B (save_two_input) gated by `run_if`, saved under
  `root`."""
  from tfcascade.transforms.engine import (  # pylint: disable=g-import-not-at-top
      CascadeSpec, FeatureSpec, ModelSource, StageSpec)
  a = save_linear(str(root / "a"), seed=1)
  b = save_two_input(str(root / "b"), seed=2)
  return CascadeSpec(
      (FeatureSpec("id", "string"), FeatureSpec("pixels", "float32", (64,))),
      (StageSpec("a", ModelSource("meta_graph", f"{a}/model.meta"), a, "a",
                 {"input:0": "features.pixels"},
                 {"logits": "logits:0", "confidence": "confidence:0"}),
       StageSpec("b", ModelSource("meta_graph", f"{b}/model.meta"), b, "b",
                 {"input:0": "a.logits", "pixels:0": "features.pixels"},
                 {"probs": "probs:0"}, run_if=run_if)),
      passthrough=tuple(passthrough))
