"""Tests for the demo models, data set and their numpy reference scores.

Every model is restored alone, in a fresh graph, the way a TF1 user would:
import_meta_graph + Saver.restore. Its outputs on the written TFRecords must
reproduce the numpy numbers in demo.json.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tfcascade.pipeline.demo import build
from tfcascade.pipeline.demo import dataset
from tfcascade.pipeline.demo import digits
from tfcascade.pipeline.demo import models

v1 = tf.compat.v1
RECORDS = 3000
SHARDS = 3


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("demo"))
  summary = build.build_demo(out, records=RECORDS, shards=SHARDS, seed=0)
  return out, summary


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("pair"))
  return out, models.train_same_architecture_pair(out)


def _restore(model_dir: str):
  """Restores one model alone into a fresh graph; returns its session."""
  graph = tf.Graph()
  with graph.as_default():
    saver = v1.train.import_meta_graph(os.path.join(model_dir, "model.meta"))
    sess = v1.Session(graph=graph)
    # latest_checkpoint reads the `checkpoint` state file, so this also
    # checks that it resolves from wherever the directory now lives.
    saver.restore(sess, tf.train.latest_checkpoint(model_dir))
  return sess


def _read_data(out: str):
  """Reads the demo shards back through TF: (ids, pixels, labels)."""
  files = sorted(tf.io.gfile.glob(os.path.join(out, "data", "*.tfrecord.gz")))
  spec = {"id": tf.io.FixedLenFeature([], tf.string),
          "pixels": tf.io.FixedLenFeature([64], tf.float32),
          "label": tf.io.FixedLenFeature([], tf.int64)}
  ds = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(
      RECORDS + 1).map(lambda s: tf.io.parse_example(s, spec))
  batch = next(iter(ds))
  return (batch["id"].numpy().tolist(), batch["pixels"].numpy(),
          batch["label"].numpy())


def test_files_exist(demo):
  out, summary = demo
  for name in ("a", "b"):
    model_dir = os.path.join(out, "models", name)
    prefix = summary["models"][name]["checkpoint"]
    assert os.path.exists(os.path.join(model_dir, "model.meta"))
    assert os.path.exists(os.path.join(model_dir, "checkpoint"))
    assert os.path.exists(prefix + ".index")
    assert os.path.basename(prefix).startswith("model.ckpt-")
  for shard in range(SHARDS):
    assert os.path.exists(dataset.shard_path(os.path.join(out, "data"), shard,
                                             SHARDS))
  with open(os.path.join(out, "demo.json")) as f:
    assert json.load(f)["records"] == RECORDS


def test_checkpoint_variables(demo):
  _, summary = demo
  a = dict(tf.train.list_variables(summary["models"]["a"]["checkpoint"]))
  b = dict(tf.train.list_variables(summary["models"]["b"]["checkpoint"]))
  assert a == {"dense/kernel": [64, 10], "dense/bias": [10],
               "global_step": []}
  h = models.HIDDEN_UNITS
  assert b == {"dense/kernel": [74, h], "dense/bias": [h],
               "dense_1/kernel": [h, 10], "dense_1/bias": [10],
               "global_step": []}


def test_meta_graphs_are_inference_only(demo):
  out, _ = demo
  for name in ("a", "b"):
    meta = v1.MetaGraphDef()
    with open(os.path.join(out, "models", name, "model.meta"), "rb") as f:
      meta.ParseFromString(f.read())
    handles = {n.name for n in meta.graph_def.node if n.op == "VarHandleOp"}
    assert all(n.startswith("dense") for n in handles), handles
    assert "dense/kernel" in handles  # The same name in both: on purpose.
    assert not any("Adam" in n.name or "gradients" in n.name
                   for n in meta.graph_def.node)
    assert meta.saver_def.restore_op_name


def test_data_matches_in_memory_records(demo):
  out, _ = demo
  ids, pixels, labels = _read_data(out)
  want_ids, want_pixels, want_labels = dataset.demo_records(RECORDS, 0)
  assert ids == want_ids
  assert ids[123] == b"rec-000000123"
  np.testing.assert_array_equal(pixels, want_pixels)
  np.testing.assert_array_equal(labels, want_labels)
  assert pixels.min() >= 0.0 and pixels.max() <= 1.0


def test_restored_models_reproduce_demo_json(demo, tmp_path):
  out, summary = demo
  # Moved first: the checkpoint state files must hold relative paths.
  moved = str(tmp_path / "moved")
  shutil.copytree(os.path.join(out, "models"), moved)
  _, pixels, labels = _read_data(out)

  for name in ("a", "b"):
    # An absolute path would still resolve to the original copy; check.
    state = tf.train.get_checkpoint_state(os.path.join(out, "models", name))
    with open(os.path.join(moved, name, "checkpoint")) as f:
      assert os.path.basename(state.model_checkpoint_path) in f.read()
    assert tf.train.latest_checkpoint(
        os.path.join(moved, name)).startswith(moved)
    with open(os.path.join(moved, name, "checkpoint")) as f:
      assert os.path.abspath(out) not in f.read()

  sess = _restore(os.path.join(moved, "a"))
  with sess:
    a_logits, a_conf, a_pred = sess.run(
        ["logits:0", "confidence:0", "prediction:0"], {"input:0": pixels})
  assert a_pred.dtype == np.int64 and a_conf.shape == (RECORDS,)
  sess = _restore(os.path.join(moved, "b"))
  with sess:
    b_probs, b_pred = sess.run(["probs:0", "prediction:0"],
                               {"input:0": a_logits, "pixels:0": pixels})
  assert b_probs.shape == (RECORDS, 10) and b_pred.dtype == np.int64

  ref = build.numpy_scores(summary["models"]["a"]["checkpoint"],
                           summary["models"]["b"]["checkpoint"], pixels)
  np.testing.assert_allclose(a_logits, ref["a_logits"], atol=1e-4)
  ran = a_conf < models.CONFIDENCE_THRESHOLD
  cascade = np.where(ran, b_pred, a_pred)
  tol = 1e-5
  assert abs(np.mean(a_pred == labels) - summary["a_accuracy"]) < tol
  assert abs(np.mean(b_pred == labels) - summary["b_accuracy"]) < tol
  assert abs(np.mean(cascade == labels) - summary["cascade_accuracy"]) < tol
  assert abs(np.mean(ran) - summary["b_share"]) < tol


def test_cascade_beats_model_a(demo):
  _, summary = demo
  assert 0.80 < summary["a_accuracy"] < 0.95
  assert summary["cascade_accuracy"] > summary["a_accuracy"] + 0.04
  assert 0.1 < summary["b_share"] < 0.6


def test_same_architecture_pair_differs_only_in_values(pair):
  out, prefixes = pair
  for name in ("a1", "a2"):
    assert os.path.exists(os.path.join(out, name, "model.meta"))
    assert os.path.dirname(prefixes[name]) == os.path.join(out, name)
  r1 = tf.train.load_checkpoint(prefixes["a1"])
  r2 = tf.train.load_checkpoint(prefixes["a2"])
  shapes = r1.get_variable_to_shape_map()
  assert shapes == r2.get_variable_to_shape_map()
  assert "dense/kernel" in shapes
  for name in ("dense/kernel", "dense/bias"):
    assert not np.allclose(r1.get_tensor(name), r2.get_tensor(name))


def test_dataset_bytes_are_reproducible(tmp_path):
  first = dataset.write_demo_dataset(str(tmp_path / "x"), records=500,
                                     shards=2, seed=7)
  second = dataset.write_demo_dataset(str(tmp_path / "y"), records=500,
                                      shards=2, seed=7)
  assert first["records_per_file"] == [250, 250]
  for f1, f2 in zip(first["files"], second["files"]):
    with open(f1, "rb") as a, open(f2, "rb") as b:
      assert a.read() == b.read()


def test_split_and_augment():
  split = digits.load_split()
  assert len(split.train_labels) + len(split.held_out_labels) == 1797
  assert set(split.held_out_labels.tolist()) == set(range(10))
  x1, y1 = digits.augment(split.held_out_pixels, split.held_out_labels, 1000,
                          seed=3)
  x2, y2 = digits.augment(split.held_out_pixels, split.held_out_labels, 1000,
                          seed=3)
  assert x1.shape == (1000, 64) and x1.dtype == np.float32
  assert y1.dtype == np.int64
  np.testing.assert_array_equal(x1, x2)
  np.testing.assert_array_equal(y1, y2)
  # No noise, no jitter, always shifted: a shifted image keeps its pixel
  # values, just moved (the ones pushed off the 8x8 grid are lost).
  x, _ = digits.augment(split.held_out_pixels[:1], split.held_out_labels[:1],
                        50, seed=0, shift_prob=1.0, noise_std=0.0,
                        intensity_jitter=0.0)
  src = split.held_out_pixels[0].reshape(8, 8)
  for img in x.reshape(-1, 8, 8):
    assert any(np.array_equal(
        img, np.roll(np.roll(np.pad(src, 1), dy, 0), dx, 1)[1:9, 1:9])
               for dy in (-1, 0, 1) for dx in (-1, 0, 1))
