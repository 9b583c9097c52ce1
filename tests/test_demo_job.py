"""The shipped demo config (configs/local.yaml) end to end on a small demo,
checked per record against an independent numpy implementation of both models."""

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
  position = {rid: i for i, rid in enumerate(ids)}
  seen = 0
  for name in sorted(os.listdir(out)):
    if not name.startswith("predictions-"):
      continue
    for record in tf.data.TFRecordDataset(str(out / name)).as_numpy_iterator():
      f = tf.train.Example.FromString(record).features.feature
      i = position[f["id"].bytes_list.value[0]]
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
