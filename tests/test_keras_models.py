"""Keras 3 / TF2 exports end to end (issue 14): the recipe in docs/engine.md.

Two Keras 3 models exported with `model.export()`, both with a layer named
`dense`, chained A -> B through `saved_model:` stages (and gated with
`run_if`, on A's max output or on `max(a.probs)` of its softmax), run through the real CLI job on the DirectRunner and checked
against `model.predict` run alone. The plan must say how their variables
were restored, and warn only about variables the outputs really do not read.
"""

import json
import os
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tfcascade.pipeline.cli import main
from tfcascade.pipeline.run_plan import unused_warning
from tests import tiny_models as tm
from tests.jobs import read_predictions_independently
from tfcascade.transforms.engine import (CascadeSpec, FeatureSpec, ModelSource, StageSpec,
                               build_cascade_graph)

N_RECORDS = 240
KERAS_RESTORE = ("8 variables restored by the SavedModel's own saver; the outputs "
                 "read 4; the other 4 are byte-identical copies of those (same "
                 "shape, dtype and CRC32C)")


def write_keras_config(path, a_dir, b_dir, data_pattern, run_if=None):
  gate = f'    run_if: "{run_if}"\n' if run_if else ""
  body = textwrap.dedent(f"""\
      input:
        pattern: {data_pattern}
        features:
          id: {{dtype: string}}
          pixels: {{dtype: float32, shape: [64]}}
      stages:
        - name: a
          saved_model: {a_dir}
          inputs: {{pixels: features.pixels}}
          outputs: {{probs: output_0, confidence: output_1}}
        - name: b
          saved_model: {b_dir}
          inputs: {{a_probs: a.probs, pixels: features.pixels}}
          outputs: {{scores: output_0}}
      """) + gate + textwrap.dedent("""\
      output:
        path: out
        passthrough: [id]
      batch_size: 64
      """)
  with open(path, "w") as f:
    f.write(body)
  return str(path)


@pytest.fixture(scope="module")
def keras_job(tmp_path_factory):
  root = tmp_path_factory.mktemp("keras")
  exported = tm.save_keras_models(str(root / "models"))
  pixels = np.random.default_rng(7).normal(size=(N_RECORDS, 64)).astype("float32")
  ids = [f"k-{i:04d}".encode() for i in range(N_RECORDS)]
  os.makedirs(root / "data")
  examples = tm.make_examples(pixels, ids)
  for shard in range(2):
    with tf.io.TFRecordWriter(str(root / f"data/part-{shard}.tfrecord.gz"), "GZIP") as w:
      for e in examples[shard::2]:
        w.write(e)
  # The oracle: each model alone, with Keras' own predict.
  model_a, model_b = exported["models"]["a"], exported["models"]["b"]
  probs, confidence = model_a.predict(pixels, verbose=0)
  scores = model_b.predict([probs, pixels], verbose=0)
  oracle = {rid: {"probs": probs[i], "confidence": confidence[i], "scores": scores[i]}
            for i, rid in enumerate(ids)}
  # A threshold well between two rows' confidences: no row sits on it.
  ordered = np.sort(confidence)
  apart = [i for i in range(len(ordered) - 1) if ordered[i + 1] - ordered[i] > 1e-4]
  k = min(apart, key=lambda i: abs(i - len(ordered) // 2))
  threshold = float((ordered[k] + ordered[k + 1]) / 2)
  config = write_keras_config(root / "keras.yaml", exported["a"], exported["b"],
                              "data/part-*.tfrecord.gz")
  return {"root": root, "config": config, "oracle": oracle, "threshold": threshold,
          "exported": exported,
          "weights": {"a": len(model_a.weights), "b": len(model_b.weights)}}


def _check(rows, oracle, threshold=None):
  assert len(rows) == len(oracle)
  ran_count = 0
  for row in rows:
    want = oracle[row["id"].encode()]
    np.testing.assert_allclose(row["a/probs"], want["probs"], atol=1e-5)
    np.testing.assert_allclose(row["a/confidence"], [want["confidence"]], atol=1e-5)
    if threshold is None:
      assert "b/ran" not in row
      np.testing.assert_allclose(row["b/scores"], want["scores"], atol=1e-5)
      continue
    ran = bool(want["confidence"] < threshold)
    ran_count += ran
    assert row["b/ran"] == [int(ran)]
    if ran:
      np.testing.assert_allclose(row["b/scores"], want["scores"], atol=1e-5)
    else:
      assert row["b/scores"] == [0.0, 0.0, 0.0]
  return ran_count


@pytest.mark.slow
def test_two_keras_exports_chained_match_predict(keras_job, capsys):
  out = keras_job["root"] / "out-chained"
  assert main(["run", "--config", keras_job["config"], "--set", f"output.path={out}",
               "--runner=DirectRunner"]) == 0
  _check(read_predictions_independently(out), keras_job["oracle"])
  printed = capsys.readouterr().out
  assert printed.count(KERAS_RESTORE) == 2, printed
  assert "warning:" not in printed, printed
  with open(out / "run_summary.json") as f:
    stages = json.load(f)["stages"]
  for name in ("a", "b"):
    stage = stages[name]
    # Every weight of the model restored (Keras saves each twice), all read.
    assert stage["variables_restored"] == 2 * keras_job["weights"][name] == 8
    assert stage["variables_read"] == keras_job["weights"][name]
    assert stage["restored_by"] == "the SavedModel's own saver"
    assert stage["restore"] == KERAS_RESTORE


@pytest.mark.slow
def test_two_keras_exports_gated_match_predict(keras_job):
  out = keras_job["root"] / "out-gated"
  threshold = keras_job["threshold"]
  assert main(["run", "--config", keras_job["config"], "--set", f"output.path={out}",
               "--set", f"stages.b.run_if=a.confidence < {threshold!r}",
               "--runner=DirectRunner"]) == 0
  ran = _check(read_predictions_independently(out), keras_job["oracle"], threshold)
  assert 0 < ran < N_RECORDS
  with open(out / "run_summary.json") as f:
    assert json.load(f)["stages"]["b"]["rows_run"] == ran


@pytest.mark.slow
def test_keras_probs_gated_as_exported_match_predict(keras_job):
  """`max(a.probs) < t` reads the softmax output itself (issue 21, point
  18): the same rows run as with A's extra max output `a.confidence < t`."""
  out = keras_job["root"] / "out-gated-max"
  threshold = keras_job["threshold"]
  assert main(["run", "--config", keras_job["config"], "--set", f"output.path={out}",
               "--set", f"stages.b.run_if=max(a.probs) < {threshold!r}",
               "--runner=DirectRunner"]) == 0
  rows = read_predictions_independently(out)
  ran = _check(rows, keras_job["oracle"], threshold)
  assert 0 < ran < N_RECORDS
  for row in rows:  # the oracle's own max of A's probs, not A's max output
    want = keras_job["oracle"][row["id"].encode()]["probs"]
    assert row["b/ran"] == [int(want.max() < threshold)]


def test_validate_plan_is_honest_about_keras_weights(keras_job, capsys):
  assert main(["validate", "--config", keras_job["config"], "--sample", "4"]) == 0
  out = capsys.readouterr().out
  assert out.count(KERAS_RESTORE) == 2, out
  assert "0 variables restored" not in out and "warning:" not in out, out
  assert "b/scores[4, 3]" in out


# --- which variables are "unused": only those the outputs really do not read ----

FEATURES = (FeatureSpec("pixels", "float32", (64,)),)


def _saved_model_stage(name, export_dir, inputs, outputs, **kw):
  return StageSpec(name, ModelSource("saved_model", export_dir, **kw), "", name,
                   inputs, outputs)


def test_a_variable_only_another_signature_reads_is_warned(keras_job, tmp_path):
  heads = tm.save_tf2_two_heads(str(tmp_path / "heads"), seed=3)
  spec = CascadeSpec(FEATURES, (
      _saved_model_stage("a", heads, {"pixels": "features.pixels"}, {"logits": "logits"}),
      _saved_model_stage("b", keras_job["exported"]["b"],
                         {"a_probs": "a.logits", "pixels": "features.pixels"},
                         {"scores": "output_0"}),
  ))
  plan = build_cascade_graph(spec).plan
  a = plan[0]
  assert a.restore_text() == ("2 variables restored by the SavedModel's own saver; "
                              "the outputs read 1; 1 restored but not read by these "
                              "outputs")
  assert a.unused == ["kernel_b/.ATTRIBUTES/VARIABLE_VALUE"]
  assert a.read == ["kernel_a/.ATTRIBUTES/VARIABLE_VALUE"]
  warning = unused_warning(a)
  assert "1 variable that outputs ['logits'] do not read" in warning
  assert "restored by the SavedModel's own saver anyway" in warning
  assert "kernel_b" in warning
  # The Keras stage next to it: nothing unused.
  assert plan[1].unused == [] and len(plan[1].copies) == 4


@pytest.mark.parametrize("kind,expected", [
    ("tf1", "2 variables restored by name (one Saver mapping checkpoint names into "
            "the stage's scope), all read by the outputs"),
    ("tf2", "2 variables restored by the SavedModel's own saver, all read by the outputs"),
])
def test_plan_wording_for_tf1_and_tf2_saved_models(tmp_path, kind, expected):
  save = tm.save_tf1_saved_model if kind == "tf1" else tm.save_tf2_saved_model
  export = save(str(tmp_path / kind), seed=1)
  spec = CascadeSpec(FEATURES, (
      _saved_model_stage("a", export, {"pixels": "features.pixels"}, {"logits": "logits"}),
      _saved_model_stage("b", export, {"pixels": "features.pixels"},
                         {"confidence": "confidence"}),
  ))
  a, b = build_cascade_graph(spec).plan
  assert a.restore_text() == expected
  assert a.unused == [] and b.unused == []
