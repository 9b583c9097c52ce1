"""The shipped demo configs (configs/local.yaml, configs/ensemble.yaml) end to
end on a small demo, checked per record against an independent numpy
implementation of the models."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tfcascade.pipeline.cli import main
from tests.jobs import summary_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
  # scikit-learn (the demo's data set) is in the `test` extra: never skipped.
  from tfcascade.pipeline.demo.build import build_demo  # pylint: disable=g-import-not-at-top
  out = tmp_path_factory.mktemp("demo")
  build_demo(str(out), records=3000, shards=2, seed=0)
  return out


def _output_rows(out, ids):
  """(position of the record in `ids`, its output features), for every
  record of the TFRecord output in `out`."""
  position = {rid: i for i, rid in enumerate(ids)}
  for name in sorted(os.listdir(out)):
    if not name.startswith("predictions-"):
      continue
    for record in tf.data.TFRecordDataset(str(out / name)).as_numpy_iterator():
      f = tf.train.Example.FromString(record).features.feature
      yield position[f["id"].bytes_list.value[0]], f


def test_local_config_on_demo_matches_numpy_oracle(demo, tmp_path, capsys):
  from tfcascade.pipeline.demo.build import numpy_scores  # pylint: disable=g-import-not-at-top
  from tfcascade.pipeline.demo.dataset import demo_records  # pylint: disable=g-import-not-at-top
  out = tmp_path / "out"
  args = ["run", "--config", os.path.join(ROOT, "configs/local.yaml"),
          "--set", f"input.pattern={demo}/data/part-*.tfrecord.gz",
          "--set", f"output.path={out}", "--runner=DirectRunner"]
  for stage in ("a", "b"):
    args += ["--set", f"stages.{stage}.checkpoint={demo}/models/{stage}",
             "--set", f"stages.{stage}.meta_graph={demo}/models/{stage}/model.meta"]
  assert main(args) == 0
  ids, pixels, labels = demo_records(3000, seed=0)
  oracle = numpy_scores(tf.train.latest_checkpoint(f"{demo}/models/a"),
                        tf.train.latest_checkpoint(f"{demo}/models/b"), pixels)
  seen = 0
  for i, f in _output_rows(out, ids):
    seen += 1
    assert f["label"].int64_list.value[0] == labels[i]
    np.testing.assert_allclose(f["a/logits"].float_list.value, oracle["a_logits"][i],
                               atol=1e-4)
    assert f["a/prediction"].int64_list.value[0] == oracle["a_prediction"][i]
    if abs(oracle["a_confidence"][i] - 0.9) > 1e-5:  # not on the threshold
      assert f["b/ran"].int64_list.value[0] == int(oracle["b_ran"][i])
    if f["b/ran"].int64_list.value[0]:
      assert f["b/prediction"].int64_list.value[0] == oracle["b_prediction"][i]
    else:
      assert f["b/prediction"].int64_list.value[0] == 0  # the fill value
    # The final answer: b's (stage 1) prediction where b ran, else a's (0).
    answered = f["b/ran"].int64_list.value[0]
    assert f["final/stage"].int64_list.value == [answered]
    assert f["final/prediction"].int64_list.value[0] == \
        f[f"{'ab'[answered]}/prediction"].int64_list.value[0]
  assert seen == 3000
  summary = summary_of(out)
  assert summary["stages"]["b"]["rows_run"] == int(oracle["b_ran"].sum())
  capsys.readouterr()
  assert main(["inspect", str(out)]) == 0
  report = capsys.readouterr().out
  cascade = float(np.mean(oracle["cascade_prediction"] == labels))
  assert f"cascade: {cascade:.4f}" in report
  assert cascade > float(np.mean(oracle["a_prediction"] == labels))


def test_the_config_the_demo_writes_validates_from_anywhere(demo, tmp_path, monkeypatch, capsys):
  """`<demo>/config.yaml`, which `tfcascade demo` names as the next step for
  a demo outside a checkout, validates with no --set, from another directory."""
  monkeypatch.chdir(tmp_path)
  assert main(["validate", "--config", str(demo / "config.yaml")]) == 0
  assert "config OK" in capsys.readouterr().out


def _numpy_mlp(prefix, pixels):
  """Model C (or any dense -> relu -> dense_1 MLP) in numpy, from its checkpoint."""
  reader = tf.train.load_checkpoint(prefix)
  w = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}
  hidden = np.maximum(pixels @ w["dense/kernel"] + w["dense/bias"], 0)
  return hidden @ w["dense_1/kernel"] + w["dense_1/bias"]


def _softmax(logits):
  shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
  return shifted / shifted.sum(axis=1, keepdims=True)


def test_ensemble_config_on_demo_matches_numpy_oracle(demo, tmp_path):
  """configs/ensemble.yaml: A and C averaged in-graph, B where the average is
  unsure; the final answer B's where it ran, else the average's."""
  from tfcascade.pipeline.demo.build import numpy_scores  # pylint: disable=g-import-not-at-top
  from tfcascade.pipeline.demo.dataset import demo_records  # pylint: disable=g-import-not-at-top
  out = tmp_path / "out"
  args = ["--config", os.path.join(ROOT, "configs/ensemble.yaml"),
          "--set", f"input.pattern={demo}/data/part-*.tfrecord.gz",
          "--set", f"output.path={out}"]
  for stage in ("a", "b", "c"):
    args += ["--set", f"stages.{stage}.checkpoint={demo}/models/{stage}",
             "--set", f"stages.{stage}.meta_graph={demo}/models/{stage}/model.meta"]
  assert main(["validate", *args]) == 0
  assert main(["run", *args, "--runner=DirectRunner"]) == 0
  ids, pixels, labels = demo_records(3000, seed=0)
  scores = numpy_scores(tf.train.latest_checkpoint(f"{demo}/models/a"),
                        tf.train.latest_checkpoint(f"{demo}/models/b"), pixels)
  average = (_softmax(scores["a_logits"]) + _softmax(
      _numpy_mlp(tf.train.latest_checkpoint(f"{demo}/models/c"), pixels))) / 2
  b_ran = average.max(axis=1) < 0.9
  answer = np.where(b_ran, scores["b_prediction"], average.argmax(axis=1))
  got = np.full(len(ids), -1)
  stage = np.full(len(ids), -2)
  for i, f in _output_rows(out, ids):
    np.testing.assert_allclose(f["ac/probs"].float_list.value, average[i], atol=1e-5)
    got[i] = f["final/prediction"].int64_list.value[0]
    stage[i] = f["final/stage"].int64_list.value[0]
  near = np.abs(average.max(axis=1) - 0.9) < 1e-5  # on the threshold: float32 decides
  assert (stage[~near] == np.where(b_ran, 3, 2)[~near]).all()  # stages a, c, ac, b
  assert (got[~near] == answer[~near]).all()
  assert 0 < b_ran.mean() < 0.5
  # The ensemble beats A alone; B on the unsure rows adds to the average.
  accuracy = float(np.mean(got == labels))
  assert accuracy > float(np.mean(average.argmax(axis=1) == labels)) > \
      float(np.mean(scores["a_prediction"] == labels))
