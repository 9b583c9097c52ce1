"""`tfcascade tune` on the real demo models, checked against each model run
alone in its own session (the oracle), and its threshold arithmetic."""

from __future__ import annotations

import json
import os
import shlex

import matplotlib.image
import numpy as np
import pytest

from tfcascade.pipeline import tune
from tfcascade.pipeline.cli import main
from tfcascade.pipeline.config import load_config
from tfcascade.transforms.reading.record_ranges import InputFile
from tfcascade.pipeline.demo import build, dataset
from tests import tiny_models as tm
from tfcascade.transforms.engine import CascadeSession
from tfcascade.transforms.engine.gate import Gate
from tfcascade.transforms.engine.spec import ModelSource, StageSpec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL = os.path.join(ROOT, "configs", "local.yaml")
RECORDS = 1200
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
  out = tmp_path_factory.mktemp("tunedemo")
  build.build_demo(str(out), records=RECORDS, shards=2, seed=0, steps=600)
  return out


def _overrides(out):
  """configs/local.yaml pointed at a demo built elsewhere (the README's way)."""
  sets = [f"input.pattern={out}/data/part-*.tfrecord.gz"]
  for stage in ("a", "b"):
    sets += [f"stages.{stage}.checkpoint={out}/models/{stage}",
             f"stages.{stage}.meta_graph={out}/models/{stage}/model.meta"]
  return sets


@pytest.fixture(scope="module")
def oracle(demo):
  """Each model alone, in its own graph and session, on every record."""
  _, pixels, labels = dataset.demo_records(RECORDS, 0)
  a = tm.oracle_meta_graph(str(demo / "models/a"), {"input:0": pixels},
                           {"logits": "logits:0", "confidence": "confidence:0",
                            "prediction": "prediction:0"})
  b = tm.oracle_meta_graph(str(demo / "models/b"),
                           {"input:0": a["logits"], "pixels:0": pixels}, "prediction:0")
  return {"a": a["prediction"], "b": b, "confidence": a["confidence"], "labels": labels}


@pytest.fixture(scope="module")
def result(demo):
  config = load_config(LOCAL, _overrides(demo))
  return tune.tune(config, "label", sample=RECORDS)


def _acc(pred, labels):
  return pytest.approx(float(np.mean(pred == labels)), abs=0.5 / len(labels))


def test_curve_ends_are_a_alone_and_the_ungated_cascade(result, oracle):
  labels = oracle["labels"]
  assert result["rows"] == RECORDS
  (gate,) = result["gates"]
  rows = gate["rows"]
  nothing, everything = rows[0], rows[-1]
  assert nothing["share"] == 0.0 and everything["share"] == 1.0
  # Nothing passes: model A alone, run in its own session.
  assert nothing["accuracy"] == _acc(oracle["a"], labels)
  # Everything passes: the ungated cascade, i.e. B on every row.
  assert everything["accuracy"] == _acc(oracle["b"], labels)
  assert result["ungated_accuracy"] == _acc(oracle["b"], labels)
  assert result["accuracy_alone"] == {"a": _acc(oracle["a"], labels),
                                      "b": _acc(oracle["b"], labels)}
  # The configured gate's row is the real cascade at a.confidence < 0.9.
  ran = oracle["confidence"] < 0.9
  current = gate["current"]
  assert current["run_if"] == "a.confidence < 0.9"
  assert current["share"] == pytest.approx(float(ran.mean()), abs=0.5 / RECORDS)
  assert current["accuracy"] == _acc(np.where(ran, oracle["b"], oracle["a"]), labels)


def test_rows_are_ordered_by_cost_with_rates(result):
  rows = result["gates"][0]["rows"]
  shares = [r["share"] for r in rows]
  assert shares == sorted(shares) and len(rows) > 50
  rates = [r["rows_per_s"] for r in rows]
  assert all(r > 0 for r in rates)
  assert rates == sorted(rates, reverse=True)  # more rows through B: slower
  assert set(result["costs"]["stage_seconds"]) == {"b"}
  assert result["costs"]["base_seconds"] > 0


def test_recommendation_is_the_cheapest_within_half_a_point(result):
  gate = result["gates"][0]
  target = result["ungated_accuracy"] - 0.005
  assert result["target_accuracy"] == pytest.approx(target)
  best = gate["recommended"]
  assert gate["target_reached"] and best["accuracy"] >= target
  assert all(r["share"] >= best["share"] for r in gate["rows"] if r["accuracy"] >= target)
  assert sum(r["recommended"] for r in gate["rows"]) == 1


def test_the_printed_set_line_gives_the_recommended_share_and_accuracy(demo, result, oracle):
  """Applying the exact `--set` line tune prints, the real gated session runs
  B on the recommended share of rows with the recommended accuracy."""
  gate = result["gates"][0]
  flag, assignment = shlex.split(gate["set"])
  assert flag == "--set" and assignment.startswith("stages.b.run_if=a.confidence < ")
  config = load_config(LOCAL, _overrides(demo) + [assignment])
  records = tune.read_sample([InputFile(f, "gzip", 1) for f in
                              sorted(map(str, (demo / "data").glob("*.tfrecord.gz")))],
                             RECORDS, 1 << 20)
  with CascadeSession(config.cascade_spec()) as session:
    out = session.run(records).outputs
  answer = np.where(out["b/ran"] == 1, out["b/prediction"], out["a/prediction"])
  assert out["b/ran"].mean() == pytest.approx(gate["recommended"]["share"], abs=1e-12)
  assert np.mean(answer == oracle["labels"]) == pytest.approx(
      gate["recommended"]["accuracy"], abs=1e-12)


def test_cli_writes_json_png_and_prints_the_set_line(demo, tmp_path, capsys):
  out_dir = tmp_path / "tune"
  argv = ["tune", "--config", LOCAL, "--label", "label", "--sample", "500",
          "--out", str(out_dir)]
  for s in _overrides(demo):
    argv += ["--set", s]
  assert main(argv) == 0
  printed = capsys.readouterr().out
  assert "a alone" in printed and "<- current" in printed and "<- recommended" in printed
  assert "apply: --set 'stages.b.run_if=a.confidence < " in printed
  with open(out_dir / "tune.json") as f:
    saved = json.load(f)
  assert saved["rows"] == 500
  assert {"threshold", "run_if", "share", "accuracy", "rows_per_s"} <= set(
      saved["gates"][0]["rows"][0])
  png = out_dir / "tune.png"
  with open(png, "rb") as f:
    assert f.read(8) == PNG_MAGIC
  assert os.path.getsize(png) > 10_000
  image = matplotlib.image.imread(str(png))
  assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 500
  assert image.std() > 0.05  # not a blank canvas


def test_target_accuracy_and_input_flags(demo, tmp_path, capsys):
  argv = ["tune", "--config", LOCAL, "--label", "label", "--sample", "300",
          "--out", str(tmp_path), "--target-accuracy", "0.999",
          "--input", str(demo / "data/part-00001-*.tfrecord.gz")]
  for s in _overrides(demo):
    argv += ["--set", s]
  assert main(argv) == 0
  printed = capsys.readouterr().out
  assert "no threshold reaches 99.90%" in printed
  with open(tmp_path / "tune.json") as f:
    saved = json.load(f)
  assert saved["target_accuracy"] == 0.999 and not saved["gates"][0]["target_reached"]
  assert "input.pattern=" + str(demo / "data/part-00001-*.tfrecord.gz") in saved["overrides"]


@pytest.mark.parametrize("extra, message", [
    (["--label", "id"], "tune needs one int64 class id per record"),
    (["--label", "nope"], "do not parse"),
    (["--label", "label", "--set", "stages.b.run_if="], "no stage has a run_if gate"),
    (["--label", "label", "--prediction", "b.nope"], "stage 'b' has no output 'nope'"),
])
def test_refusals_exit_2_naming_the_problem(demo, tmp_path, capsys, extra, message):
  argv = ["tune", "--config", LOCAL, "--sample", "50", "--out", str(tmp_path)] + extra
  for s in _overrides(demo):
    argv += ["--set", s]
  assert main(argv) == 2
  assert message in capsys.readouterr().err


def test_a_measure_of_logits_is_swept_and_entropy_left_out(demo):
  """The demo's A gives logits [N, 10]: max and margin of them sweep;
  entropy of a row with negative values is NaN, so it is not compared, and
  a gate on it has nothing to sweep."""
  config = load_config(LOCAL, _overrides(demo) + ["stages.b.run_if=max(a.logits) < 5"])
  result = tune.tune(config, "label", sample=400, measure=False, points=40)
  (gate,) = result["gates"]
  assert gate["reference"] == "max(a.logits)" and gate["current"]["run_if"] == (
      "max(a.logits) < 5")
  assert gate["set"].startswith("--set 'stages.b.run_if=max(a.logits) < ")
  by_name = {m["measure"]: m for m in gate["measures"]}
  assert by_name["margin"]["run_if"].startswith("margin(a.logits) < ")
  assert by_name["entropy"] == {
      "measure": "entropy", "configured": False,
      "skipped": "entropy(a.logits) is not finite on 400 of 400 sampled rows (entropy "
                 "expects probabilities: no negative value in a row)"}
  assert "entropy(): not compared, entropy(a.logits) is not finite" in tune.format_report(
      result)
  config = load_config(LOCAL, _overrides(demo) + ["stages.b.run_if=entropy(a.logits) > 1"])
  with pytest.raises(tune.TuneError, match=r"^stage 'b': entropy\(a.logits\) is not "
                     r"finite on 400 of 400 sampled rows .*: nothing to sweep$"):
    tune.tune(config, "label", sample=400, measure=False)


# --- the arithmetic, without models ------------------------------------------


def test_short_number_picks_the_fewest_decimals():
  assert tune.short_number(0.87321, False, 0.8733, True) == 0.8733
  assert tune.short_number(0.99997, False, None, False) == 1.0
  assert tune.short_number(1.0, False, None, False) == 2.0
  assert tune.short_number(None, False, 0.05, True) == 0.0
  assert tune.short_number(None, False, 0.0, False) == -1.0
  assert tune.short_number(0.5, True, 0.5000001, False) == 0.5


@pytest.mark.parametrize("op", ["<", "<=", ">", ">="])
def test_each_threshold_is_one_set_of_rows_from_none_to_all(op):
  rng = np.random.default_rng(0)
  values = np.round(rng.random(3000), 3).astype(np.float32).astype(np.float64)
  values[:50] = values[50]  # ties
  thresholds = tune.candidate_thresholds(values, op, points=40)
  compare = {"<": np.less, "<=": np.less_equal, ">": np.greater,
             ">=": np.greater_equal}[op]
  passing = [int(compare(values, t).sum()) for t in thresholds]
  assert passing[0] == 0 and passing[-1] == len(values)
  assert passing == sorted(passing) and len(set(passing)) == len(passing)
  assert 30 <= len(thresholds) <= 41
  # Short numbers: no float noise in the printed gate.
  assert all(len(tune.format_number(t)) <= 8 for t in thresholds)


def _stage(name, outputs, run_if=None, fill=0.0):
  return StageSpec(name, ModelSource("builder", "m:f"), "", name, {"x": "features.x"},
                   {o: o for o in outputs}, run_if, fill)


def test_prediction_rule():
  stages = (_stage("a", ["logits", "prediction"]), _stage("b", ["logits", "probs"]),
            _stage("c", ["logits"]), _stage("d", ["embedding"]))
  assert tune.prediction_outputs(stages) == {"a": "prediction", "b": "probs", "c": "logits"}
  assert tune.prediction_outputs(stages, ["a.logits"])["a"] == "logits"
  with pytest.raises(tune.TuneError, match="no output 'nope'"):
    tune.prediction_outputs(stages, ["a.nope"])
  np.testing.assert_array_equal(tune.class_ids(np.array([[0.1, 0.9], [0.8, 0.2]]), "x"),
                                [1, 0])
  np.testing.assert_array_equal(tune.class_ids(np.array([[3], [4]]), "x"), [3, 4])
  with pytest.raises(tune.TuneError, match="non-integer"):
    tune.class_ids(np.array([0.5, 1.0]), "x")


def test_a_gate_on_a_gated_stage_sees_its_fill_value():
  """c's gate reads b.conf, and b is gated: where b did not run, the real
  cascade's b.conf is b's fill_value (here 0, so c runs there)."""
  stages = (_stage("a", ["conf", "prediction"]),
            _stage("b", ["conf", "prediction"], "a.conf < 0.5"),
            _stage("c", ["prediction"], "b.conf < 0.5"))
  outputs = {"a/conf": np.array([0.9, 0.1, 0.1]), "b/conf": np.array([0.9, 0.9, 0.1])}
  predictions = {"a": np.array([1, 1, 1]), "b": np.array([2, 2, 2]),
                 "c": np.array([3, 3, 3])}
  cascade = tune.Cascade(stages, outputs, predictions, np.array([1, 2, 3]))
  gates = {"b": Gate("a", "conf", "<", 0.5), "c": Gate("b", "conf", "<", 0.5)}
  answer, ran = cascade.run(gates)
  np.testing.assert_array_equal(ran["b"], [False, True, True])
  np.testing.assert_array_equal(ran["c"], [True, False, True])
  np.testing.assert_array_equal(answer, [3, 2, 3])
  assert cascade.accuracy(answer) == pytest.approx(2 / 3)


def test_a_measure_gate_reads_the_fill_rows_of_a_gated_stage():
  """c's gate takes entropy(b.probs), and b is gated: where b did not run,
  the real cascade's b.probs row is all fill_value (0: entropy 0, c skips)."""
  stages = (_stage("a", ["probs"]),
            _stage("b", ["probs"], "max(a.probs) < 0.6"),
            _stage("c", ["prediction"], "entropy(b.probs) > 0.5"))
  a_probs = np.array([[0.9, 0.05, 0.05], [0.5, 0.3, 0.2], [0.4, 0.4, 0.2]], np.float32)
  b_probs = np.array([[1 / 3] * 3, [0.98, 0.01, 0.01], [0.5, 0.5, 0.0]], np.float32)
  predictions = {"a": a_probs.argmax(1), "b": b_probs.argmax(1), "c": np.array([2, 2, 2])}
  cascade = tune.Cascade(stages, {"a/probs": a_probs, "b/probs": b_probs}, predictions,
                         np.array([0, 0, 2]))
  gates = {"b": Gate("a", "probs", "<", 0.6, "max"),
           "c": Gate("b", "probs", ">", 0.5, "entropy")}
  np.testing.assert_allclose(cascade.gate_values(gates["c"], {}),
                             [np.log(3), 0.1119, np.log(2)], atol=1e-4)
  answer, ran = cascade.run(gates)
  np.testing.assert_array_equal(ran["b"], [False, True, True])
  # Row 0: b did not run, its probs are [0, 0, 0]: entropy 0, c skips it.
  np.testing.assert_array_equal(ran["c"], [False, False, True])
  np.testing.assert_array_equal(answer, [0, 0, 2])
  rows = tune.sweep_gate(cascade, stages[1], gates, None, points=10)
  assert all(r["run_if"].startswith("max(a.probs) < ") for r in rows)
  assert [r["current"] for r in rows].count(True) == 1
  swept = tune.sweep_gate(cascade, stages[1], gates, None, points=10,
                          swept=Gate("a", "probs", "<", 0.0, "margin"))
  assert all(r["run_if"].startswith("margin(a.probs) < ") for r in swept)
  assert not any(r["current"] for r in swept)
  assert swept[0]["share"] == 0 and swept[-1]["share"] == 1


def test_the_fill_value_is_read_as_the_graph_writes_it():
  """A float32 output's fill_value 0.1 is float32(0.1) in the graph, above
  0.1 in float64: `b.conf <= 0.1` fails on rows b did not run on."""
  stages = (_stage("a", ["conf", "prediction"]),
            _stage("b", ["conf", "prediction"], "a.conf < 0.5", fill=0.1),
            _stage("c", ["prediction"], "b.conf <= 0.1"))
  outputs = {"a/conf": np.array([0.9, 0.1], np.float32),
             "b/conf": np.array([0.05, 0.05], np.float32)}
  predictions = {n: np.array([0, 0]) for n in "abc"}
  cascade = tune.Cascade(stages, outputs, predictions, np.array([0, 0]))
  gates = {"b": Gate("a", "conf", "<", 0.5), "c": Gate("b", "conf", "<=", 0.1)}
  ran = cascade.run(gates)[1]
  assert cascade.gate_values(gates["c"], ran)[0] == np.float64(np.float32(0.1))
  np.testing.assert_array_equal(ran["c"], [False, True])
