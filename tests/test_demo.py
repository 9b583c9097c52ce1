"""Tests for the demo models, data set and their numpy reference scores.

Every model is restored alone, in a fresh graph, the way a TF1 user would:
import_meta_graph + Saver.restore. Its outputs on the written TFRecords must
reproduce the numpy numbers in demo.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import yaml

from tfcascade.pipeline.config import load_config
from tfcascade.pipeline.demo import build
from tfcascade.pipeline.demo import dataset
from tfcascade.pipeline.demo import digits
from tfcascade.pipeline.demo import job_config
from tfcascade.pipeline.demo import models
from tfcascade.pipeline.demo.demo_dir import DemoError
from tfcascade.pipeline.demo.report import demo_lines

v1 = tf.compat.v1
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORDS = 3000
SHARDS = 3
QUICK_STEPS = 50  # models good enough to rebuild a demo around


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
      10 * RECORDS).map(lambda s: tf.io.parse_example(s, spec))
  batch = next(iter(ds))
  return (batch["id"].numpy().tolist(), batch["pixels"].numpy(),
          batch["label"].numpy())


def test_files_exist(demo):
  out, summary = demo
  for name in ("a", "b", "c"):
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


# --- rebuilding over a demo --------------------------------------------------

@pytest.fixture
def quick_demo(tmp_path):
  """A demo of 600 records in 3 files, with quickly trained models."""
  out = str(tmp_path / "demo")
  return out, build.build_demo(out, records=600, shards=3, seed=0, steps=QUICK_STEPS)


def _ids_a_job_reads(out: str):
  """The ids of every record the demo's own config reads, as a job would."""
  config = load_config(os.path.join(out, job_config.CONFIG))
  files = sorted(f for pattern in config.input_patterns for f in tf.io.gfile.glob(pattern))
  ds = tf.data.TFRecordDataset(files, compression_type="GZIP")
  return [tf.train.Example.FromString(r).features.feature["id"].bytes_list.value[0]
          for r in ds.as_numpy_iterator()]


def _snapshot(out: str):
  """Every file under out with its bytes."""
  found = {}
  for folder, _, names in os.walk(out):
    for name in names:
      with open(os.path.join(folder, name), "rb") as f:
        found[os.path.relpath(os.path.join(folder, name), out)] = f.read()
  return found


def test_a_rebuild_with_fewer_records_and_files_reads_exactly_the_new_ones(quick_demo):
  out, first = quick_demo
  assert first["rebuilt"] == "models and data"
  weights = open(first["models"]["a"]["checkpoint"] + ".index", "rb").read()
  second = build.build_demo(out, records=200, shards=2, seed=0, steps=QUICK_STEPS)
  # Same seed and steps: the models are kept, the data replaced whole.
  assert second["rebuilt"] == "data"
  assert open(second["models"]["a"]["checkpoint"] + ".index", "rb").read() == weights
  assert sorted(os.listdir(os.path.join(out, "data"))) == [
      "part-00000-of-00002.tfrecord.gz", "part-00001-of-00002.tfrecord.gz"]
  assert _ids_a_job_reads(out) == dataset.demo_records(200, 0)[0]
  with open(os.path.join(out, "demo.json")) as f:
    assert json.load(f)["records"] == 200
  assert not [n for n in os.listdir(os.path.dirname(out)) if n != "demo"]  # no staging left
  # The same arguments again: nothing to do.
  assert build.build_demo(out, records=200, shards=2, seed=0,
                          steps=QUICK_STEPS)["rebuilt"] == "nothing"
  # Another seed: other models, so both are rebuilt.
  third = build.build_demo(out, records=200, shards=2, seed=1, steps=QUICK_STEPS)
  assert third["rebuilt"] == "models and data"
  assert _ids_a_job_reads(out) == dataset.demo_records(200, 1)[0]


def test_a_demo_of_another_version_or_with_files_missing_is_rebuilt(quick_demo):
  out, _ = quick_demo
  os.remove(os.path.join(out, "data", "part-00001-of-00003.tfrecord.gz"))
  assert build.build_demo(out, records=600, shards=3, seed=0,
                          steps=QUICK_STEPS)["rebuilt"] == "data"
  assert len(_ids_a_job_reads(out)) == 600
  with open(os.path.join(out, "demo.json")) as f:
    old = {k: v for k, v in json.load(f).items() if k != "version"}  # as before versions
  with open(os.path.join(out, "demo.json"), "w") as f:
    json.dump(old, f)
  open(os.path.join(out, ".records"), "w").write("600\n")  # run_local.sh's old marker
  assert build.build_demo(out, records=600, shards=3, seed=0,
                          steps=QUICK_STEPS)["rebuilt"] == "models and data"
  assert ".records" not in os.listdir(out)


_KILLED_WHILE_BUILDING = textwrap.dedent("""\
    import os, sys
    from tfcascade.pipeline.demo import build, dataset
    write = dataset.write_demo_dataset

    def killed_after_writing(out_dir, **kwargs):
      write(out_dir, **kwargs)  # the new data set, complete, not yet in place
      os.kill(os.getpid(), 9)

    dataset.write_demo_dataset = killed_after_writing
    build.build_demo(sys.argv[1], records=100, shards=1, seed=0, steps=int(sys.argv[2]))
    """)


def test_a_build_killed_midway_leaves_the_old_demo_and_the_next_one_cleans_up(quick_demo):
  out, _ = quick_demo
  before = _snapshot(out)
  killed = subprocess.run([sys.executable, "-c", _KILLED_WHILE_BUILDING, out,
                           str(QUICK_STEPS)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert killed.returncode == -9, killed.stderr
  assert _snapshot(out) == before  # the old demo, byte for byte
  assert _ids_a_job_reads(out) == dataset.demo_records(600, 0)[0]
  parent = os.path.dirname(out)
  assert sorted(os.listdir(parent)) == [".demo.demo-partial", "demo"]
  build.build_demo(out, records=100, shards=1, seed=0, steps=QUICK_STEPS)
  assert os.listdir(parent) == ["demo"]
  assert _ids_a_job_reads(out) == dataset.demo_records(100, 0)[0]


def test_an_interrupted_build_removes_its_partial_copy(quick_demo, monkeypatch):
  out, _ = quick_demo
  before = _snapshot(out)

  def interrupted(out_dir, **kwargs):
    raise KeyboardInterrupt
  monkeypatch.setattr(dataset, "write_demo_dataset", interrupted)
  with pytest.raises(KeyboardInterrupt):
    build.build_demo(out, records=100, shards=1, seed=0, steps=QUICK_STEPS)
  assert _snapshot(out) == before
  assert os.listdir(os.path.dirname(out)) == ["demo"]


@pytest.mark.parametrize("records, shards, seed, flag", [
    (0, 1, 0, "--records"), (-5, 1, 0, "--records"), (10, 0, 0, "--shards"),
    (3, 4, 0, "--shards"), (10, 2, -1, "--seed")])
def test_numbers_that_make_no_demo_are_refused(tmp_path, records, shards, seed, flag):
  with pytest.raises(DemoError, match=f"^{flag} must be"):
    build.build_demo(str(tmp_path / "d"), records=records, shards=shards, seed=seed)
  assert not os.path.exists(tmp_path / "d")


def test_user_files_are_never_replaced(quick_demo, tmp_path, monkeypatch):
  mine = tmp_path / "mine"
  mine.mkdir()
  (mine / "notes.txt").write_text("keep me")
  with pytest.raises(DemoError, match=r"--out .*mine .*notes\.txt.* no demo\.json"):
    build.build_demo(str(mine), records=10, shards=1)
  assert os.listdir(mine) == ["notes.txt"]
  out, _ = quick_demo
  with open(os.path.join(out, "results.csv"), "w") as f:
    f.write("mine")
  before = _snapshot(out)
  with pytest.raises(DemoError, match=r"holds a demo and also results\.csv"):
    build.build_demo(out, records=10, shards=1, steps=QUICK_STEPS)
  assert _snapshot(out) == before
  os.remove(os.path.join(out, "results.csv"))
  monkeypatch.chdir(os.path.join(out, "data"))
  with pytest.raises(DemoError, match="current directory"):
    build.build_demo(out, records=10, shards=1, steps=QUICK_STEPS)


def test_the_demo_config_is_configs_local_yaml_but_for_its_paths(quick_demo):
  out, _ = quick_demo
  path_keys = ("pattern", "checkpoint", "meta_graph", "path")

  def without_paths(node):
    if isinstance(node, dict):
      return {k: without_paths(v) for k, v in node.items() if k not in path_keys}
    return [without_paths(v) for v in node] if isinstance(node, list) else node

  with open(os.path.join(out, job_config.CONFIG)) as f:
    ours = yaml.safe_load(f)
  with open(os.path.join(ROOT, "configs", "local.yaml")) as f:
    shipped = yaml.safe_load(f)
  assert without_paths(ours) == without_paths(shipped)
  config = load_config(os.path.join(out, job_config.CONFIG))
  spec = config.cascade_spec()
  assert [s.checkpoint for s in spec.stages] == [
      os.path.join(out, "models", "a"), os.path.join(out, "models", "b")]
  assert config.output_path == os.path.join(os.path.dirname(out), "demo-predictions")


def test_the_printed_lines_say_what_was_rebuilt_and_a_true_next_step(
    quick_demo, tmp_path, monkeypatch):
  out, first = quick_demo
  lines = demo_lines(first, out).splitlines()
  assert "models a, b and c trained (seed 0); 600 records in 3 file(s)" in lines[0]
  assert "washed out" not in lines[0]
  assert f"cascade {first['cascade_accuracy']:.2%}" in lines[1]
  config = os.path.join(out, "config.yaml")
  assert lines[-1] == (f"  next: tfcascade validate --config {config}, then tfcascade run "
                       f"--config {config} (it writes "
                       f"{os.path.join(os.path.dirname(out), 'demo-predictions')})")
  kept = build.build_demo(out, records=60, shards=1, steps=QUICK_STEPS)
  assert "models a, b and c kept" in demo_lines(kept, out)
  assert kept["models"]["c"] == first["models"]["c"]  # a kept demo still records c
  assert demo_lines({**kept, "shift": 0.3}, out).splitlines()[0].endswith(
      "; data washed out by --shift 0.3")
  same = build.build_demo(out, records=60, shards=1, steps=QUICK_STEPS)
  assert "up to date" in demo_lines(same, out).splitlines()[0]
  # From a checkout's root, ./demo is what configs/local.yaml reads.
  monkeypatch.chdir(os.path.dirname(out))
  os.makedirs("configs")
  shutil.copy(os.path.join(ROOT, "configs", "local.yaml"), "configs")
  assert demo_lines(same, "demo").splitlines()[-1].startswith(
      "  next: tfcascade validate --config configs/local.yaml")
