"""Ensembles (issue 24): combine stages and the final answer, against an
oracle: each model restored alone in its own session (tiny_models), the
combining done here in NumPy, written apart from the engine's.

The models are tiny_models' linear classifiers: separately saved, every one's
variables named `dense/kernel`, `dense/bias` (clashing). The job test runs a
3-stage gated cascade with a gate-aware mean on the DirectRunner (JSONL);
tests/spark/test_ensemble_spark.py runs the same job on Spark (TFRecord).
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests import tiny_models as tm
from tfcascade.pipeline.cli import main
from tfcascade.pipeline.config import ConfigError, load_config
from tfcascade.pipeline.tune import tune
from tfcascade.transforms.beam.cascade_handler import CascadeModelHandler
from tfcascade.transforms.engine import (CascadeError, CascadeSession, CascadeSpec,
                                         FeatureSpec, ModelSource, StageSpec,
                                         build_cascade_graph)
from tfcascade.transforms.engine.combine import combine_numpy
from tfcascade.transforms.engine.spec import CombineSpec, combine_stage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEATURES = (FeatureSpec("id", "string"), FeatureSpec("pixels", "float32", (64,)))
N = 400
TOL = {"rtol": 1e-4, "atol": 1e-5}  # float32 sums in another order


def save_models(root):
  """Three clashing linear classifiers on the pixels, and a head on [N, 10]."""
  made = {f"m{i}": tm.save_linear(str(root / f"m{i}"), seed=i) for i in (1, 2, 3)}
  made["head"] = tm.save_linear(str(root / "head"), seed=7, in_dim=10)
  return made


def make_pixels():
  return np.random.default_rng(11).normal(size=(N, 64)).astype("float32")


def oracle_outputs(models, pixels):
  """Each model alone, in its own graph and session, on every row."""
  return {name: tm.oracle_meta_graph(models[name], {"input:0": pixels},
                                     {"logits": "logits:0", "confidence": "confidence:0"})
          for name in ("m1", "m2", "m3")}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  return save_models(tmp_path_factory.mktemp("ensemble_models"))


@pytest.fixture(scope="module")
def pixels():
  return make_pixels()


@pytest.fixture(scope="module")
def oracle(models, pixels):
  return oracle_outputs(models, pixels)


def linear(name, model_dir, source="features.pixels", **kw):
  return StageSpec(name=name, source=ModelSource("meta_graph",
                                                 os.path.join(model_dir, "model.meta")),
                   checkpoint=model_dir, scope=name, inputs={"input:0": source},
                   outputs={"logits": "logits:0", "confidence": "confidence:0"}, **kw)


def run(stages, pixels, final=None):
  with CascadeSession(CascadeSpec(FEATURES, tuple(stages), final=final)) as session:
    return session.run(tm.make_examples(pixels)).outputs


def three(models):
  return [linear("a", models["m1"]), linear("b", models["m2"]), linear("c", models["m3"])]


def combined(op, inputs, **kw):
  return combine_stage("ens", CombineSpec(op, tuple(inputs), tuple(kw.pop("weights", ()))),
                       **kw)


def decided(rows):
  """Rows whose top two values differ: where an argmax is well defined."""
  top = np.sort(rows, axis=1)
  return top[:, -1] - top[:, -2] > 1e-4


# --- combine ops -----------------------------------------------------------------


def test_three_clashing_checkpoints_averaged(models, pixels, oracle):
  out = run(three(models) + [combined("mean", ["a.logits", "b.logits", "c.logits"])], pixels)
  want = np.mean([oracle[m]["logits"] for m in ("m1", "m2", "m3")], axis=0)
  np.testing.assert_allclose(out["ens/probs"], want, **TOL)
  ok = decided(want)
  np.testing.assert_array_equal(out["ens/prediction"][ok], want.argmax(axis=1)[ok])
  assert "ens/ran" not in out  # every input on every row: it always runs
  # Each model its own: the three differ (no variable shared between them).
  assert not np.allclose(out["a/logits"], out["b/logits"])
  np.testing.assert_allclose(out["b/logits"], oracle["m2"]["logits"], **TOL)
  # The final answer by default: the only stage with a prediction.
  assert out["final/stage"].tolist() == [3] * N  # stages a, b, c, ens
  np.testing.assert_array_equal(out["final/prediction"], out["ens/prediction"])
  np.testing.assert_array_equal(out["final/probs"], out["ens/probs"])


def test_weighted_mean_and_max(models, pixels, oracle):
  logits = [oracle[m]["logits"] for m in ("m1", "m2", "m3")]
  weights = (3.0, 1.0, 0.5)
  out = run(three(models) + [combined("weighted_mean", ["a.logits", "b.logits", "c.logits"],
                                      weights=weights)], pixels)
  want = sum(w * v for w, v in zip(weights, logits)) / sum(weights)
  np.testing.assert_allclose(out["ens/probs"], want, **TOL)
  out = run(three(models) + [combined("max", ["a.logits", "b.logits", "c.logits"])], pixels)
  np.testing.assert_allclose(out["ens/probs"], np.maximum.reduce(logits), **TOL)


def _oracle_vote(logits, present):
  """Votes counted one row at a time; a tie goes to the tied class with the
  highest summed value, then to the lowest class index."""
  classes = logits[0].shape[1]
  shares, predictions, ties = [], [], 0
  for row in range(len(logits[0])):
    voters = [v[row] for v, p in zip(logits, present) if p[row]]
    counts = np.zeros(classes)
    for v in voters:
      counts[int(np.argmax(v))] += 1
    tied = [k for k in range(classes) if counts[k] == counts.max()]
    ties += len(tied) > 1
    summed = np.sum(voters, axis=0)
    predictions.append(max(tied, key=lambda k: (summed[k], -k)))
    shares.append(counts / len(voters))
  return np.array(shares), np.array(predictions), ties


def test_vote_with_ties(models, pixels, oracle):
  # Two voters: every disagreement is a tie; three: a three-way split is.
  for names in (("a", "b"), ("a", "b", "c")):
    stages = three(models) + [combined("vote", [f"{n}.logits" for n in names])]
    out = run(stages, pixels)
    logits = [oracle[{"a": "m1", "b": "m2", "c": "m3"}[n]]["logits"] for n in names]
    shares, predictions, ties = _oracle_vote(logits, [np.ones(N, bool)] * len(names))
    assert ties > 10  # the tie rule is exercised
    np.testing.assert_allclose(out["ens/probs"], shares, **TOL)
    np.testing.assert_array_equal(out["ens/prediction"], predictions)


# --- gates -------------------------------------------------------------------------


def test_a_gated_stage_inside_a_mean_and_a_gated_combine_feeding_a_stage(models, pixels,
                                                                         oracle):
  stages = [
      linear("a", models["m1"]),
      linear("b", models["m2"], run_if="a.confidence < 0.9"),
      linear("c", models["m3"]),
      linear("d", models["m3"], run_if="a.confidence < 0.9"),
      combined("mean", ["a.logits", "b.logits", "c.logits"]),
      # Nothing but gated inputs: rows where neither ran get the fill_value.
      combine_stage("bd", CombineSpec("mean", ("b.logits", "d.logits")), fill_value=-1),
      # A gated combine, read by a model and by a later gate.
      combine_stage("gated", CombineSpec("vote", ("a.logits", "b.logits", "c.logits")),
                    run_if="max(ens.probs) < 12", fill_value=0),
      linear("head", models["head"], source="gated.probs", run_if="gated.prediction >= 0"),
  ]
  out = run(stages, pixels)
  a, b, c = (oracle[m] for m in ("m1", "m2", "m3"))
  b_ran = a["confidence"] < 0.9
  assert 0 < b_ran.sum() < N
  np.testing.assert_array_equal(out["b/ran"], b_ran)
  # Rows b skipped: the mean of a and c (b's fill_value 0 is not averaged in).
  want = np.where(b_ran[:, None], (a["logits"] + b["logits"] + c["logits"]) / 3,
                  (a["logits"] + c["logits"]) / 2)
  np.testing.assert_allclose(out["ens/probs"], want, **TOL)
  assert "ens/ran" not in out  # a and c run on every row
  np.testing.assert_array_equal(out["bd/ran"], b_ran)
  np.testing.assert_allclose(out["bd/probs"][b_ran], (b["logits"] + c["logits"])[b_ran] / 2,
                             **TOL)
  assert (out["bd/probs"][~b_ran] == -1).all() and (out["bd/prediction"][~b_ran] == -1).all()
  # The gated combine: its own gate on the mean's confidence.
  gate = want.max(axis=1) < 12
  assert 0 < gate.sum() < N
  np.testing.assert_array_equal(out["gated/ran"], gate)
  shares, predictions, _ = _oracle_vote([a["logits"], b["logits"], c["logits"]],
                                        [np.ones(N, bool), b_ran, np.ones(N, bool)])
  np.testing.assert_allclose(out["gated/probs"][gate], shares[gate], **TOL)
  np.testing.assert_array_equal(out["gated/prediction"][gate], predictions[gate])
  assert (out["gated/probs"][~gate] == 0).all()
  # The head model reads the combine's outputs, fill values included.
  fed = np.where(gate[:, None], shares, 0).astype("float32")
  head = tm.oracle_meta_graph(models["head"], {"input:0": fed}, "logits:0")
  np.testing.assert_array_equal(out["head/ran"], np.ones(N))  # prediction 0 >= 0
  np.testing.assert_allclose(out["head/logits"], head, **TOL)


def test_gated_inputs_in_a_weighted_mean_a_max_and_tunes_numpy_twin(models, pixels, oracle):
  """Every op over a gated input, against the oracle where written out here,
  and tune's NumPy twin (engine.combine.combine_numpy) against the graph."""
  inputs = ("a.logits", "b.logits", "c.logits")
  ops = {"mean": (), "weighted_mean": (3.0, 1.0, 0.5), "max": (), "vote": ()}
  stages = [linear("a", models["m1"]), linear("b", models["m2"], run_if="a.confidence < 0.9"),
            linear("c", models["m3"])]
  stages += [combine_stage(op, CombineSpec(op, inputs, weights)) for op, weights in ops.items()]
  out = run(stages, pixels)
  a, b, c = (oracle[m]["logits"] for m in ("m1", "m2", "m3"))
  ran = out["b/ran"] == 1
  weighted = np.where(ran[:, None], (3 * a + b + 0.5 * c) / 4.5, (3 * a + 0.5 * c) / 3.5)
  np.testing.assert_allclose(out["weighted_mean/probs"], weighted, **TOL)
  np.testing.assert_allclose(out["max/probs"], np.where(ran[:, None], np.maximum.reduce(
      [a, b, c]), np.maximum(a, c)), **TOL)
  for stage in stages[3:]:
    twin, twin_ran = combine_numpy(stage, [out[f"{r[0]}/logits"] for r in inputs],
                                   [None, ran, None], None)
    assert twin_ran is None
    np.testing.assert_allclose(twin["probs"], out[f"{stage.name}/probs"], **TOL)
    ok = decided(twin["probs"]) if stage.name != "vote" else np.ones(N, bool)
    np.testing.assert_array_equal(twin["prediction"][ok], out[f"{stage.name}/prediction"][ok])


def _oracle_final(a, b, c, thresholds):
  """The 3-stage gated cascade's answer: c where it ran, else b, else a."""
  b_ran = a["confidence"] < thresholds[0]
  c_ran = a["confidence"] < thresholds[1]
  logits = np.where(c_ran[:, None], c["logits"],
                    np.where(b_ran[:, None], b["logits"], a["logits"]))
  stage = np.where(c_ran, 2, np.where(b_ran, 1, 0))  # stages a, b, c
  return logits, stage, b_ran, c_ran


def test_final_answer_of_a_three_stage_gated_cascade(models, pixels, oracle):
  stages = [linear("a", models["m1"]),
            linear("b", models["m2"], run_if="a.confidence < 0.9"),
            linear("c", models["m3"], run_if="a.confidence < 0.6")]
  out = run(stages, pixels, final=("logits", "confidence"))
  logits, stage, _, c_ran = _oracle_final(*(oracle[m] for m in ("m1", "m2", "m3")), (0.9, 0.6))
  assert set(stage) == {0, 1, 2}
  assert out["final/stage"].tolist() == stage.tolist()
  np.testing.assert_allclose(out["final/logits"], logits, **TOL)
  np.testing.assert_allclose(out["final/confidence"][c_ran],
                             oracle["m3"]["confidence"][c_ran], **TOL)
  # No stage with a `prediction`: no final answer by default, none when off.
  assert not [k for k in run(stages, pixels) if k.startswith("final/")]
  assert not [k for k in run(stages, pixels, final=()) if k.startswith("final/")]


def test_final_answer_when_no_answering_stage_ran(models, pixels):
  stages = [linear("a", models["m1"]),
            linear("b", models["m2"], run_if="a.confidence < 0.9", fill_value=-3),
            combine_stage("ens", CombineSpec("mean", ("b.logits", "b.logits")), fill_value=-2)]
  out = run(stages, pixels)  # the combine alone answers, where b ran
  ran = out["b/ran"] == 1
  assert out["final/stage"][ran].tolist() == [2] * ran.sum()
  assert out["final/stage"][~ran].tolist() == [-1] * (~ran).sum()
  assert (out["final/prediction"][~ran] == -2).all()


def test_the_handlers_prediction_results_hold_the_final_answer(models, pixels, oracle):
  stages = [linear("a", models["m1"]), linear("b", models["m2"], run_if="a.confidence < 0.9"),
            linear("c", models["m3"], run_if="a.confidence < 0.6")]
  handler = CascadeModelHandler(CascadeSpec(FEATURES, tuple(stages), final=("logits",)))
  session = handler.load_model()
  try:
    results = handler.run_inference(tm.make_examples(pixels[:50]), session)
  finally:
    session.close()
  logits, stage, _, _ = _oracle_final(
      *({k: v[:50] for k, v in oracle[m].items()} for m in ("m1", "m2", "m3")), (0.9, 0.6))
  assert [int(r.inference["final/stage"]) for r in results] == stage.tolist()
  np.testing.assert_allclose([r.inference["final/logits"] for r in results], logits, **TOL)


# --- mistakes ------------------------------------------------------------------------


def test_combine_shapes_and_final_outputs_are_checked_when_built(models):
  def build(stages, final=None):
    with pytest.raises(CascadeError) as e:
      build_cascade_graph(CascadeSpec(FEATURES, tuple(stages), final=final))
    return str(e.value)
  message = build(three(models) + [combined("mean", ["a.logits", "b.confidence"])])
  assert message == ("stage 'ens': combine inputs must each be [N, C] class values with "
                     "one known C >= 2: a.logits [N, 10] float32, b.confidence [N] float32")
  assert "which does not run before 'ens'" in build(
      [linear("a", models["m1"]), combined("mean", ["a.logits", "b.logits"]),
       linear("b", models["m2"])])
  assert build(three(models), final=("probs",)).startswith(
      "output.final ['probs']: no stage has all of these outputs (outputs: a: logits, ")
  def with_probs(name, model, tensor):
    stage = linear(name, models[model])
    return StageSpec(**{**stage.__dict__, "outputs": {"probs": tensor}})
  assert build([with_probs("x", "m1", "confidence:0"), with_probs("y", "m2", "logits:0")],
               final=("probs",)) == (
                   "output.final 'probs': the stages answering differ in shape or dtype: "
                   "x.probs [N] float32, y.probs [N, 10] float32")
  assert "stage 'final'" in build(
      [linear("a", models["m1"]), linear("final", models["m2"])], final=("logits",))


ENSEMBLE_CONFIG = """\
input:
  pattern: data/part-*.tfrecord.gz
  features:
    id: {{dtype: string}}
    pixels: {{dtype: float32, shape: [64]}}
    label: {{dtype: int64}}
stages:
  - {{name: a, checkpoint: {m1}, meta_graph: {m1}/model.meta,
     inputs: {{"input:0": features.pixels}},
     outputs: {{logits: "logits:0", confidence: "confidence:0"}}}}
  - {{name: b, checkpoint: {m2}, meta_graph: {m2}/model.meta,
     inputs: {{"input:0": features.pixels}},
     outputs: {{logits: "logits:0", confidence: "confidence:0"}},
     run_if: "a.confidence < 0.9"}}
  - {{name: c, checkpoint: {m3}, meta_graph: {m3}/model.meta,
     inputs: {{"input:0": features.pixels}},
     outputs: {{logits: "logits:0", confidence: "confidence:0"}},
     run_if: "a.confidence < 0.6"}}
  - name: abc
    combine: {{op: mean, inputs: [a.logits, b.logits, c.logits]}}
output:
  path: out
  passthrough: [id]
  final: {final}
batch_size: 64
"""


def write_ensemble_job(root, pixels, models, final="[logits]", labels=None):
  """The 3-stage gated cascade + gate-aware mean as a job: 3 gzip shards
  (labels: `labels`, else i % 10) and the config on `models`. Returns the
  config path."""
  os.makedirs(root / "data", exist_ok=True)
  examples = tm.make_examples(pixels, [f"r{i:04d}".encode() for i in range(len(pixels))])
  labels = np.arange(len(pixels)) % 10 if labels is None else labels
  for shard in range(3):
    with tf.io.TFRecordWriter(str(root / f"data/part-{shard}.tfrecord.gz"), "GZIP") as w:
      for i in range(shard, len(examples), 3):
        example = tf.train.Example.FromString(examples[i])
        example.features.feature["label"].int64_list.value.append(int(labels[i]))
        w.write(example.SerializeToString())
  (root / "job.yaml").write_text(ENSEMBLE_CONFIG.format(final=final, **models))
  return str(root / "job.yaml")


def check_ensemble_rows(rows, oracle):
  """Output rows (column -> list of values, id as text) against the oracle."""
  a, b, c = (oracle[m] for m in ("m1", "m2", "m3"))
  logits, stage, b_ran, c_ran = _oracle_final(a, b, c, (0.9, 0.6))
  n_ran = 1 + b_ran + c_ran
  mean = (a["logits"] + np.where(b_ran[:, None], b["logits"], 0)
          + np.where(c_ran[:, None], c["logits"], 0)) / n_ran[:, None]
  assert sorted(int(r["id"][1:]) for r in rows) == list(range(len(a["logits"])))
  for row in rows:
    i = int(row["id"][1:])
    assert row["final/stage"] == [stage[i]]
    np.testing.assert_allclose(row["final/logits"], logits[i], **TOL)
    np.testing.assert_allclose(row["abc/probs"], mean[i], **TOL)
    assert row["b/ran"] == [int(b_ran[i])] and row["c/ran"] == [int(c_ran[i])]
  assert {r["final/stage"][0] for r in rows} == {0, 1, 2}


def test_ensemble_job_on_the_direct_runner_writes_the_final_answer(models, pixels, oracle,
                                                                   tmp_path):
  config = write_ensemble_job(tmp_path, pixels, models)
  assert main(["run", "--config", config, "--set=output.format=jsonl",
               "--runner=DirectRunner"]) == 0
  rows = []
  for name in sorted(os.listdir(tmp_path / "out")):
    if name.startswith("predictions-"):
      with open(tmp_path / "out" / name) as f:
        rows.extend(json.loads(line) for line in f)
  rows = [{k: (v[0] if k == "id" else v) for k, v in r.items()} for r in rows]
  check_ensemble_rows(rows, oracle)


def test_validate_names_the_combines_inputs_and_shapes(models, pixels, tmp_path, capsys):
  config = write_ensemble_job(tmp_path, pixels[:30], models)
  assert main(["validate", "--config", config, "--set=stages.abc.combine.inputs="
               "[a.logits, b.confidence]"]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("tfcascade: ") and "\n" not in err
  assert err.endswith("stage 'abc': combine inputs must each be [N, C] class values with "
                      "one known C >= 2: a.logits [N, 10] float32, b.confidence [N] "
                      "float32")
  assert main(["validate", "--config", config,
               "--set=stages.abc.combine.op=weighted_mean"]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("tfcascade: ") and "one weight per input" in err and "\n" not in err
  assert main(["validate", "--config", config,
               "--set=output.final=[prediction, confidence]"]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("tfcascade: ")
  assert "output.final ['prediction', 'confidence']: no stage" in err


def test_tune_emulates_the_combine_under_its_gates(models, pixels, oracle, tmp_path):
  """tune's final answer with the configured gates (its NumPy combine on the
  ungated outputs) is the engine's final/prediction on the same records."""
  config = write_ensemble_job(tmp_path, pixels, models, final="true",
                              labels=oracle["m2"]["logits"].argmax(axis=1))
  records = []
  for shard in range(3):
    records += [r.numpy() for r in tf.data.TFRecordDataset(
        str(tmp_path / f"data/part-{shard}.tfrecord.gz"), "GZIP")]
  job = load_config(config)
  result = tune(job, "label", measure=False, records=records)
  spec = job.cascade_spec()
  with CascadeSession(spec) as session:
    out = session.run(records)
  labels = np.array([tf.train.Example.FromString(r).features.feature["label"]
                     .int64_list.value[0] for r in records])
  assert out.outputs["final/stage"].tolist() == [3] * len(records)  # a, b, c, abc
  want = float(np.mean(out.outputs["final/prediction"] == labels))
  assert result["final_accuracy"] == want
  assert result["final_accuracy"] != result["ungated_accuracy"]  # the gates matter


def test_combine_config_mistakes_name_the_key(tmp_path):
  body = ENSEMBLE_CONFIG.format(final="true", m1="m1", m2="m2", m3="m3")
  cases = {
      "    combine: {op: mean, inputs: [a.logits, b.logits, c.logits]}":
          ("stages.3: a combine stage has no model: drop checkpoint",
           "    combine: {op: mean, inputs: [a.logits, b.logits, c.logits]}\n"
           "    checkpoint: models/x"),
      "op: mean,": ("stages.3.combine: weights are for op weighted_mean, not mean",
                    "op: mean, weights: [1, 2, 3],"),
      "[a.logits, b.logits, c.logits]": ("stages.3.combine.inputs: List should have at least 2",
                                         "[a.logits]"),
  }
  for old, (message, new) in cases.items():
    path = tmp_path / "bad.yaml"
    path.write_text(body.replace(old, new))
    with pytest.raises(ConfigError) as e:
      load_config(str(path))
    assert message in str(e.value), str(e.value)


def test_the_shipped_ensemble_config_loads():
  config = load_config(os.path.join(REPO, "configs", "ensemble.yaml"))
  spec = config.cascade_spec()
  assert [s.name for s in spec.stages] == ["a", "c", "ac", "b"]
  assert spec.stages[2].combine == CombineSpec("mean", ("a.probs", "c.probs"))
  assert spec.stages[3].run_if == "max(ac.probs) < 0.9"
  assert spec.final is None  # the default final answer


def test_tune_warns_of_a_model_fed_by_a_combine_of_gated_stages(models):
  from tfcascade.pipeline.tune.tune_result import _warnings  # pylint: disable=g-import-not-at-top
  stages = three(models)[:2] + [combined("mean", ["a.logits", "b.logits"]),
                                linear("head", models["head"], source="ens.probs")]
  assert _warnings(stages, {}) == []
  gated = _warnings(stages, {"b": "a.confidence < 0.9"})
  assert gated == ["stage 'head' reads ens.probs of combine stage 'ens', which joins gated "
                   "stages: tune gives it ens with every input on every row; the real "
                   "cascade leaves out the inputs that did not run"]
