"""Engine tests: every model source against an oracle (each model alone)."""

import concurrent.futures
import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests import tiny_models as tm
from tfcascade.transforms.engine import (CascadeError, CascadeSession, CascadeSpec,
                               FeatureSpec, ModelSource, StageSpec,
                               build_cascade_graph)
from tfcascade.transforms.engine.cascade import _gate_mask
from tfcascade.transforms.engine.gate import OPERATORS, parse_gate

FEATURES = (FeatureSpec("id", "string"), FeatureSpec("pixels", "float32", (64,)))


def _pixels(n=64, seed=3):
  return np.random.default_rng(seed).normal(size=(n, 64)).astype("float32")


def meta_stage(name, model_dir, inputs, outputs, **kw):
  return StageSpec(name=name,
                   source=ModelSource("meta_graph", os.path.join(model_dir, "model.meta")),
                   checkpoint=model_dir, scope=kw.pop("scope", name),
                   inputs=inputs, outputs=outputs, **kw)


A_OUT = {"logits": "logits:0", "confidence": "confidence:0"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  root = tmp_path_factory.mktemp("models")
  return {
      "a1": tm.save_linear(str(root / "a1"), seed=1),
      "a2": tm.save_linear(str(root / "a2"), seed=2),
      "a_ref": tm.save_linear(str(root / "a_ref"), seed=5, use_resource=False),
      "b": tm.save_two_input(str(root / "b"), seed=4),
      "c": tm.save_linear(str(root / "c"), seed=6, in_dim=10),
      "builder_bare": tm.save_builder_checkpoint(str(root / "builder_bare")),
      "builder_scoped": tm.save_builder_checkpoint(str(root / "builder_scoped"),
                                                   scope_prefix="a"),
      "sm1": tm.save_tf1_saved_model(str(root / "sm1"), seed=8),
      "sm2": tm.save_tf2_saved_model(str(root / "sm2"), seed=9),
  }


def _ab_spec(models, run_if=None, a="a1"):
  return CascadeSpec(FEATURES, (
      meta_stage("a", models[a], {"input:0": "features.pixels"}, A_OUT),
      meta_stage("b", models["b"], {"input:0": "a.logits", "pixels:0": "features.pixels"},
                 {"probs": "probs:0"}, run_if=run_if),
  ))


def _oracle_ab(models, pixels, a="a1"):
  a_out = tm.oracle_meta_graph(models[a], {"input:0": pixels},
                               {"logits": "logits:0", "confidence": "confidence:0"})
  b_out = tm.oracle_meta_graph(models["b"], {"input:0": a_out["logits"], "pixels:0": pixels},
                               {"probs": "probs:0"})
  return a_out, b_out


def test_meta_graph_cascade_matches_oracle(models):
  pixels = _pixels()
  with CascadeSession(_ab_spec(models)) as session:
    out = session.run(tm.make_examples(pixels))
  a_out, b_out = _oracle_ab(models, pixels)
  np.testing.assert_allclose(out.outputs["a/logits"], a_out["logits"], atol=1e-5)
  np.testing.assert_allclose(out.outputs["a/confidence"], a_out["confidence"], atol=1e-5)
  np.testing.assert_allclose(out.outputs["b/probs"], b_out["probs"], atol=1e-5)
  assert out.rows_run["b"] == len(pixels)


@pytest.mark.parametrize("second_model", ["a_ref", "a2"])
def test_same_names_different_weights_stay_isolated(models, second_model):
  """Two same-architecture checkpoints, same variable names (fact 1)."""
  pixels = _pixels()
  spec = CascadeSpec(FEATURES, (
      meta_stage("first", models["a1"], {"input:0": "features.pixels"}, A_OUT),
      meta_stage("second", models[second_model], {"input:0": "features.pixels"}, A_OUT),
  ))
  with CascadeSession(spec) as session:
    out = session.run(tm.make_examples(pixels))
  first = tm.oracle_meta_graph(models["a1"], {"input:0": pixels}, "logits:0")
  second = tm.oracle_meta_graph(models[second_model], {"input:0": pixels}, "logits:0")
  assert not np.allclose(first, second)
  np.testing.assert_allclose(out.outputs["first/logits"], first, atol=1e-5)
  np.testing.assert_allclose(out.outputs["second/logits"], second, atol=1e-5)


@pytest.mark.parametrize("ckpt", ["builder_bare", "builder_scoped"])
def test_builder_source_matches_oracle(models, ckpt):
  pixels = _pixels()
  spec = CascadeSpec(FEATURES, (
      StageSpec("a", ModelSource("builder", "tests.tiny_models:linear_builder"),
                models[ckpt], "a", {"pixels": "features.pixels"},
                {"logits": "logits", "confidence": "confidence"}),
      meta_stage("b", models["b"], {"input:0": "a.logits", "pixels:0": "features.pixels"},
                 {"probs": "probs:0"}),
  ))
  with CascadeSession(spec) as session:
    out = session.run(tm.make_examples(pixels))
  # Oracle: the same builder alone, restored by its checkpoint's own names.
  graph = tf.Graph()
  with graph.as_default(), tf.compat.v1.Session() as sess:
    x = tf.compat.v1.placeholder(tf.float32, [None, 64])
    scoped = ckpt == "builder_scoped"
    with tf.compat.v1.variable_scope("a") if scoped else contextlib.nullcontext():
      built = tm.linear_builder({"pixels": x})
    tf.compat.v1.train.Saver().restore(sess, tf.train.latest_checkpoint(models[ckpt]))
    expected = sess.run(built["logits"], {x: pixels})
  np.testing.assert_allclose(out.outputs["a/logits"], expected, atol=1e-5)


@pytest.mark.parametrize("sm", ["sm1", "sm2"])
def test_saved_model_source_matches_oracle(models, sm):
  pixels = _pixels()
  spec = CascadeSpec(FEATURES, (
      StageSpec("a", ModelSource("saved_model", models[sm]), "", "a",
                {"pixels": "features.pixels"},
                {"logits": "logits", "confidence": "confidence"}),
      # A second copy of the same SavedModel: same names, must not collide.
      StageSpec("a_again", ModelSource("saved_model", models[sm]), "", "a_again",
                {"pixels": "features.pixels"}, {"logits": "logits"}),
  ))
  with CascadeSession(spec) as session:
    out = session.run(tm.make_examples(pixels))
  expected = tm.oracle_saved_model(models[sm], {"pixels": pixels}, ["logits"])
  np.testing.assert_allclose(out.outputs["a/logits"], expected["logits"], atol=1e-5)
  np.testing.assert_allclose(out.outputs["a_again/logits"], expected["logits"], atol=1e-5)


@pytest.mark.parametrize("threshold", [-1.0, 0.9999, 2.0])
def test_gate_runs_only_passing_rows(models, threshold):
  pixels = _pixels(200)
  with CascadeSession(_ab_spec(models)) as session:
    ungated = session.run(tm.make_examples(pixels))
  spec = _ab_spec(models, run_if=f"a.confidence < {threshold}")
  with CascadeSession(spec) as session:
    gated = session.run(tm.make_examples(pixels))
  passing = ungated.outputs["a/confidence"] < threshold
  np.testing.assert_array_equal(gated.outputs["b/ran"], passing.astype(np.int64))
  assert gated.rows_run["b"] == passing.sum()
  np.testing.assert_allclose(gated.outputs["b/probs"][passing], ungated.outputs["b/probs"][passing],
                             atol=1e-5)
  np.testing.assert_array_equal(gated.outputs["b/probs"][~passing], 0.0)


def test_gate_fill_value(models):
  pixels = _pixels(50)
  spec = _ab_spec(models, run_if="a.confidence > 2")  # no row passes
  spec = CascadeSpec(spec.features, (spec.stages[0], StageSpec(
      **{**spec.stages[1].__dict__, "fill_value": -1.0})))
  with CascadeSession(spec) as session:
    out = session.run(tm.make_examples(pixels))
  assert out.rows_run["b"] == 0
  np.testing.assert_array_equal(out.outputs["b/probs"], -1.0)


def test_three_stage_cascade(models):
  pixels = _pixels()
  spec = CascadeSpec(FEATURES, _ab_spec(models).stages + (
      meta_stage("c", models["c"], {"input:0": "b.probs"}, {"logits": "logits:0"}),))
  with CascadeSession(spec) as session:
    out = session.run(tm.make_examples(pixels))
  _, b_out = _oracle_ab(models, pixels)
  c_out = tm.oracle_meta_graph(models["c"], {"input:0": b_out["probs"]}, "logits:0")
  np.testing.assert_allclose(out.outputs["c/logits"], c_out, atol=1e-5)


def test_concurrent_calls_match_single_thread(models):
  pixels = _pixels(512)
  examples = tm.make_examples(pixels)
  batches = [examples[i:i + 64] for i in range(0, 512, 64)]
  with CascadeSession(_ab_spec(models, run_if="a.confidence < 0.99")) as session:
    serial = [session.run(b) for b in batches]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
      for _ in range(3):
        parallel = list(pool.map(session.run, batches))
        for s, p in zip(serial, parallel):
          assert s.rows_run == p.rows_run
          for key in s.outputs:
            np.testing.assert_array_equal(s.outputs[key], p.outputs[key])


def test_plan_has_fingerprints_and_unused(models):
  graph = build_cascade_graph(_ab_spec(models))
  a_plan = graph.plan[0]
  assert a_plan.fingerprint.startswith("sha256:") and a_plan.global_step == 7
  assert a_plan.restored == {"dense/kernel": "a/dense/kernel", "dense/bias": "a/dense/bias"}
  assert a_plan.unused == []
  assert a_plan.read == ["dense/bias", "dense/kernel"] and a_plan.copies == {}
  assert a_plan.restore_text().startswith("2 variables restored by name")
  other = build_cascade_graph(_ab_spec(models, a="a2")).plan[0]
  assert other.fingerprint != a_plan.fingerprint


def test_index_checksums_cover_every_variable(models):
  """The .index parser (transforms/engine/checkpoints.py) reads the same
  variable table as TF's reader, each with its byte size and CRC32C."""
  from tfcascade.transforms.engine.checkpoints import read_checkpoint  # pylint: disable=g-import-not-at-top
  info = read_checkpoint(models["a1"], "a")
  assert set(info.checksums) == set(info.variables)
  assert info.checksums["dense/kernel"][0] == 64 * 10 * 4
  other = read_checkpoint(models["a2"], "a")
  assert other.checksums["dense/kernel"] != info.checksums["dense/kernel"]


# --- validation errors, each naming the culprit -----------------------------

def _error(spec):
  with pytest.raises(CascadeError) as info:
    build_cascade_graph(spec)
  return str(info.value)


def test_wrong_checkpoint_is_named(models, tmp_path):
  spec = _ab_spec(models)
  bad = StageSpec(**{**spec.stages[0].__dict__, "checkpoint": str(tmp_path / "nope")})
  msg = _error(CascadeSpec(FEATURES, (bad, spec.stages[1])))
  assert "stage 'a'" in msg and "nope" in msg


def test_shape_mismatch_names_both_variables_and_shapes(models):
  spec = _ab_spec(models)
  # B's graph restored from C's checkpoint: same names, other shapes.
  bad = StageSpec(**{**spec.stages[1].__dict__, "checkpoint": models["a1"]})
  msg = _error(CascadeSpec(FEATURES, (spec.stages[0], bad)))
  assert "'b/dense/kernel' is [74, 16] float32" in msg
  assert "'dense/kernel' as [64, 10] float32" in msg


def test_missing_variable_is_named(models):
  spec = _ab_spec(models)
  bad = StageSpec(**{**spec.stages[1].__dict__, "checkpoint": models["c"]})
  msg = _error(CascadeSpec(FEATURES, (spec.stages[0], bad)))
  assert "'b/dense_1/kernel'" in msg and "missing from checkpoint" in msg


def test_unknown_tensor_names(models):
  spec = _ab_spec(models)
  bad_in = StageSpec(**{**spec.stages[0].__dict__, "inputs": {"nosuch:0": "features.pixels"}})
  assert "nosuch:0" in _error(CascadeSpec(FEATURES, (bad_in, spec.stages[1])))
  bad_out = StageSpec(**{**spec.stages[0].__dict__,
                         "outputs": {"logits": "nosuch_out:0", "confidence": "confidence:0"}})
  msg = _error(CascadeSpec(FEATURES, (bad_out, spec.stages[1])))
  assert "nosuch_out:0" in msg and "stage 'a'" in msg


def test_forward_reference_and_unknown_refs(models):
  spec = _ab_spec(models)
  a = StageSpec(**{**spec.stages[0].__dict__, "inputs": {"input:0": "b.probs"}})
  msg = _error(CascadeSpec(FEATURES, (a, spec.stages[1])))
  assert "refers to stage 'b', which does not run before 'a'" in msg
  b = StageSpec(**{**spec.stages[1].__dict__, "run_if": "b.probs < 1"})
  assert "does not run before 'b'" in _error(CascadeSpec(FEATURES, (spec.stages[0], b)))
  b = StageSpec(**{**spec.stages[1].__dict__,
                   "inputs": {"input:0": "a.logits", "pixels:0": "features.nosuch"}})
  assert "features.nosuch" in _error(CascadeSpec(FEATURES, (spec.stages[0], b)))
  b = StageSpec(**{**spec.stages[1].__dict__, "run_if": "a.logits < 1"})
  assert "per-row scalar" in _error(CascadeSpec(FEATURES, (spec.stages[0], b)))


@pytest.mark.parametrize("op", sorted(OPERATORS))
def test_every_gate_operator_compares_like_numpy(op):
  """The in-graph comparison named by OPERATORS, for each operator symbol."""
  values = np.array([-1.0, 0.0, 0.5, 0.5, 2.0], np.float32)
  gate = parse_gate(f"a.x {op} 0.5")
  assert gate.op == op
  stage = StageSpec("b", ModelSource("builder", "m:f"), "", "b", {}, {})
  with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
    mask = sess.run(_gate_mask(gate, tf.constant(values), stage))
  np.testing.assert_array_equal(mask, getattr(np, OPERATORS[op])(values, 0.5))


def test_gate_grammar_rejects_code(models):
  spec = _ab_spec(models, run_if="__import__('os').system('true')")
  assert "is not of the form" in _error(spec)


def test_bad_record_raises_invalid_argument(models):
  with CascadeSession(_ab_spec(models)) as session:
    with pytest.raises(tf.errors.InvalidArgumentError):
      session.run([b"not a proto"])


def test_engine_imports_without_beam():
  code = ("import sys; sys.modules['apache_beam'] = None\n"
          "import tfcascade.transforms.engine, tfcascade.transforms.engine.cascade\n"
          "print('ok')")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert result.stdout.strip() == "ok", result.stderr[-2000:]


# --- names the engine uses itself (issue 21, point 11) ------------------------


def _renamed_ab_spec(models, a_name="a", a_scope="a", b_name="b", b_scope="b"):
  """_ab_spec (b gated on a) with other stage names and scopes."""
  return CascadeSpec(FEATURES, (
      meta_stage(a_name, models["a1"], {"input:0": "features.pixels"}, A_OUT,
                 scope=a_scope),
      meta_stage(b_name, models["b"], {"input:0": f"{a_name}.logits",
                                       "pixels:0": "features.pixels"},
                 {"probs": "probs:0"}, scope=b_scope,
                 run_if=f"{a_name}.confidence < 0.99"),
  ))


@pytest.mark.parametrize("names", [
    {"a_name": "parse", "a_scope": "parse"},
    {"b_name": "parse", "b_scope": "parse"},
    {"a_scope": "Parse"},
    {"a_scope": "serialized_examples"},
    {"b_scope": "Shape"},
    {"b_scope": "strided_slice"},
    {"b_scope": "Cast"},
    {"b_scope": "Less"},
    {"b_scope": "Where"},
    {"a_scope": "concat"},
    {"b_scope": "Size"},
    {"a_name": "tfcascade", "a_scope": "tfcascade"},
])
def test_names_the_engine_uses_are_free_for_stages(models, names):
  """Before, the engine's parse ("parse"), placeholder and gate ops sat at
  the graph's top level: a stage placed under one of those names landed
  under "<name>_1" and its outputs were "not found"."""
  pixels = _pixels(100)
  spec = _renamed_ab_spec(models, **names)
  a, b = (s.name for s in spec.stages)
  with CascadeSession(spec) as session:
    out = session.run(tm.make_examples(pixels))
  a_out, b_out = _oracle_ab(models, pixels)
  ran = a_out["confidence"] < 0.99
  assert 0 < ran.sum() < len(pixels)
  np.testing.assert_allclose(out.outputs[f"{a}/logits"], a_out["logits"], atol=1e-5)
  np.testing.assert_array_equal(out.outputs[f"{b}/ran"], ran.astype(np.int64))
  np.testing.assert_allclose(out.outputs[f"{b}/probs"][ran], b_out["probs"][ran], atol=1e-5)


def test_a_scope_named_like_a_gate_scope_is_free(models):
  """c placed under "b_gate", the name b's gate ops had."""
  pixels = _pixels(100)
  spec = CascadeSpec(FEATURES, _ab_spec(models, run_if="a.confidence < 0.99").stages + (
      meta_stage("c", models["c"], {"input:0": "b.probs"}, {"logits": "logits:0"},
                 scope="b_gate"),))
  with CascadeSession(spec) as session:
    out = session.run(tm.make_examples(pixels))
  expected = tm.oracle_meta_graph(models["c"], {"input:0": out.outputs["b/probs"]},
                                  "logits:0")
  np.testing.assert_allclose(out.outputs["c/logits"], expected, atol=1e-5)


@pytest.mark.parametrize("scope", ["tfcascade.engine", "tfcascade.engine/a",
                                   "TFCascade.Engine"])
def test_the_engine_scope_is_refused_naming_the_stage(models, scope):
  assert _error(_renamed_ab_spec(models, a_scope=scope)) == (
      f"stage 'a': scope '{scope}' is reserved: the engine builds its own ops (the "
      f"parse, the gates) under 'tfcascade.engine/'; give the stage another scope")


def test_scopes_differing_only_in_case_are_refused_naming_the_stage(models):
  msg = _error(_renamed_ab_spec(models, a_scope="m", b_scope="M"))
  assert msg.startswith("stage 'b': scope 'M' is already taken in the graph (by node 'm/")
  assert "TensorFlow's names ignore letter case" in msg and "'M_1'" in msg


def test_a_scope_an_earlier_stage_created_works_or_is_refused(models):
  """b under "a_restore": the name stage a's Saver takes (sources.py)."""
  spec = _renamed_ab_spec(models, b_scope="a_restore")
  try:
    build_cascade_graph(spec)
  except CascadeError as e:
    assert str(e).startswith("stage 'b': scope 'a_restore' is already taken in the "
                             "graph (by node 'a_restore/")
    assert "give the stage another scope" in str(e)
    return
  test_names_the_engine_uses_are_free_for_stages(models, {"b_scope": "a_restore"})


@pytest.mark.parametrize("name", ["a b", "a/b", ""])
def test_a_stage_name_the_graph_cannot_hold_is_refused(models, name):
  msg = _error(_renamed_ab_spec(models, a_name=name))
  assert msg == (f"stage {name!r}: a stage name is letters, digits, '_', '.' and '-'")


def test_stage_of_names_the_stage_of_engine_and_model_nodes(models):
  spec = _renamed_ab_spec(models, a_scope="m", b_scope="m/inner")
  with CascadeSession(spec) as session:
    def stage_of(node):
      return session.stage_of(tf.errors.InvalidArgumentError(
          None, None, f"boom\n\t [[{{{{node {node}}}}}]]"))
    assert stage_of("tfcascade.engine/stage/b/gate/GatherV2") == "b"
    assert stage_of("tfcascade.engine/stage/a/outputs/Cast") == "a"
    assert stage_of("m/dense/MatMul") == "a"
    assert stage_of("m/inner/dense/MatMul") == "b"
    assert stage_of("tfcascade.engine/input/parse/ParseExampleV2") is None
    ops = [op.name for op in session.cascade.graph.get_operations()]
  # Every op is the engine's or a model's; the name Savers of sources.py
  # still sit at the top as "<scope>_restore" (refused as a scope, above).
  elsewhere = [n for n in ops if not n.startswith(("tfcascade.engine/", "m/"))]
  assert all(n.startswith("m_restore/") for n in elsewhere), elsewhere
