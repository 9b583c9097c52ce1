"""Gates on class-probability outputs (issue 21, point 18): `max(a.probs) <
0.9`, `margin(...)`, `entropy(...)`, `argmax(...)`.

A real Keras classifier exported with `model.export()` gates a second Keras
model, checked against each model run alone in its own session and the
measures computed here in numpy, independently of the engine's table; then
`tune` on the same models, each recommended line applied to the real
session. Also the grammar and the shape checks, without models.
"""

import os
import shlex
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tests import tiny_models as tm
from tfcascade.pipeline import tune
from tfcascade.pipeline.cli import main
from tfcascade.pipeline.config import load_config
from tfcascade.transforms.engine import (CascadeError, CascadeSession, CascadeSpec,
                                         FeatureSpec, ModelSource, StageSpec)
from tfcascade.transforms.engine.cascade import _gate_mask
from tfcascade.transforms.engine.gate import (MEASURES, OPERATORS, Gate, operand_problem,
                                              parse_gate)

N = 300


# --- the grammar --------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("max(a.probs) < 0.9", Gate("a", "probs", "<", 0.9, "max")),
    ("  margin ( a.probs )<=.2 ", Gate("a", "probs", "<=", 0.2, "margin")),
    ("entropy(a.probs)>1.2", Gate("a", "probs", ">", 1.2, "entropy")),
    ("argmax(a.probs) == 3", Gate("a", "probs", "==", 3.0, "argmax")),
    ("a.confidence < 0.9", Gate("a", "confidence", "<", 0.9)),
])
def test_the_grammar_reads_measures_and_plain_outputs(text, expected):
  gate = parse_gate(text)
  assert gate == expected
  assert str(gate) == f"{expected.operand} {expected.op} {expected.threshold:g}"


@pytest.mark.parametrize("text", [
    "max(a.probs)",                 # no comparison
    "max(a.probs) <",               # no number
    "max(a.probs < 0.9",            # unclosed
    "max a.probs < 0.9",            # no parentheses
    "max(a.probs)) < 0.9",
    "a.probs) < 0.9",
    "max(max(a.probs)) < 0.9",      # no nesting
    "max(a) < 0.9",                 # not <stage>.<output>
    "max() < 0.9",
    "max(a.probs) < 0.9 and b.x > 1",
    "max(a.probs) < nan",
    "__import__('os').system('true')",
])
def test_malformed_gates_are_refused_with_the_grammar(text):
  with pytest.raises(CascadeError) as info:
    parse_gate(text)
  message = str(info.value)
  assert "is not of the form" in message and "<measure>(<stage>.<output>)" in message
  assert "max, margin, entropy, argmax" in message


@pytest.mark.parametrize("name", ["mean", "Max", "softmax", "top1"])
def test_an_unknown_measure_is_named_with_the_known_ones(name):
  with pytest.raises(CascadeError) as info:
    parse_gate(f"{name}(a.probs) < 0.9")
  assert str(info.value) == (f"run_if '{name}(a.probs) < 0.9': unknown measure "
                             f"'{name}' (measures: max, margin, entropy, argmax)")


def test_a_threshold_must_be_finite():
  with pytest.raises(CascadeError, match="threshold must be finite"):
    parse_gate("max(a.probs) < 1e999")


@pytest.mark.parametrize("text, shape, expected", [
    ("a.probs < 0.9", [None, 10], "run_if needs a per-row scalar, but 'a.probs' has "
     "shape [N, 10]; apply a measure to its rows, e.g. run_if: \"max(a.probs) < 0.9\""),
    ("max(a.conf) < 0.9", [None], "max() reads a row of class values ([N, C]), but "
     "'a.conf' has shape [N], one number per row: compare it directly, e.g. run_if: "
     "\"a.conf < 0.9\""),
    ("margin(a.conf) < 0.2", [None, 1], "'a.conf' has shape [N, 1], one number per row"),
    ("entropy(a.x) > 1", [None, 4, 5], "'a.x' has shape [N, 4, 5]"),
    ("max(a.x) > 1", None, "'a.x' has shape unknown"),
    ("max(a.x) > 1", [None, 0], "'a.x' has shape [N, 0], no class values per row"),
    ("a.x > 1", [None, 3, 2], "run_if needs a per-row scalar, but 'a.x' has shape [N, 3, 2]"),
])
def test_shape_problems_name_the_reference_and_shape(text, shape, expected):
  assert expected in operand_problem(parse_gate(text), shape)


@pytest.mark.parametrize("text, shape", [
    ("a.c < 1", [None]), ("a.c < 1", [None, 1]), ("max(a.p) < 1", [None, 2]),
    ("margin(a.p) < 1", [None, 2]), ("entropy(a.p) < 1", [None, None]),
])
def test_shapes_a_gate_reads(text, shape):
  assert operand_problem(parse_gate(text), shape) is None


# --- the one table: NumPy and the graph agree, and agree with an oracle -------


def _probability_rows(seed=0, n=500, classes=7):
  rng = np.random.default_rng(seed)
  logits = rng.normal(scale=3, size=(n, classes))
  rows = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  rows[:5] = np.eye(classes)[:5]  # one-hot rows: entropy 0 (0 * log 0 = 0)
  rows[5] = 1 / classes           # every class tied
  rows[6, :2] = rows[6, 2:4]      # a tie at the top
  return rows.astype(np.float32)


def _oracle_measures(rows):
  """Each measure written out row by row, apart from the engine's table."""
  rows = rows.astype(np.float64)
  out = {"max": [], "margin": [], "entropy": [], "argmax": []}
  for row in rows:
    ordered = sorted(row, reverse=True)
    out["max"].append(ordered[0])
    out["margin"].append(ordered[0] - ordered[1])
    out["entropy"].append(-sum(p * np.log(p) for p in row if p > 0))
    out["argmax"].append(list(row).index(ordered[0]))
  return {k: np.array(v, dtype=np.float64) for k, v in out.items()}


def test_the_table_matches_in_numpy_and_in_graph_and_an_oracle():
  rows = _probability_rows()
  oracle = _oracle_measures(rows)
  with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
    placeholder = tf.compat.v1.placeholder(tf.float64, [None, rows.shape[1]])
    graph = sess.run({n: m.graph(placeholder) for n, m in MEASURES.items()},
                     {placeholder: rows.astype(np.float64)})
  for name, measure in MEASURES.items():
    in_numpy = measure.numpy(rows.astype(np.float64))
    np.testing.assert_allclose(in_numpy, oracle[name], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(graph[name], in_numpy, rtol=1e-12, atol=1e-15)
    if name != "entropy":  # the sums' order may differ; the rest is exact
      np.testing.assert_array_equal(graph[name], in_numpy)
  assert oracle["entropy"][0] == 0 and oracle["margin"][5] == 0


@pytest.mark.parametrize("measure", sorted(MEASURES))
@pytest.mark.parametrize("op", sorted(OPERATORS))
def test_each_measure_gates_like_its_oracle(measure, op):
  rows = _probability_rows(seed=1, n=200)
  values = _oracle_measures(rows)[measure]
  threshold = 3.0 if measure == "argmax" else float(np.median(values))
  gate = Gate("a", "p", op, threshold, measure)
  stage = StageSpec("b", ModelSource("builder", "m:f"), "", "b", {}, {})
  with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
    mask = sess.run(_gate_mask(gate, tf.constant(rows), stage))
  expected = getattr(np, OPERATORS[op])(values, threshold)
  mismatched = np.flatnonzero(mask != expected)
  # Only a row exactly on the threshold may differ by the sums' rounding.
  assert all(abs(values[i] - threshold) < 1e-12 for i in mismatched)
  assert 0 < mask.sum() < len(rows) or op in ("==", "!=")


# --- a Keras classifier, gated as exported -----------------------------------


@pytest.fixture(scope="module")
def keras(tmp_path_factory):
  """The Keras exports of tests/tiny_models.py, records with a label, and
  the oracle: each model alone, in its own session, on every record."""
  root = tmp_path_factory.mktemp("keras_gates")
  exported = tm.save_keras_models(str(root / "models"))
  rng = np.random.default_rng(11)
  pixels = rng.normal(size=(N, 64)).astype("float32")
  probs = tm.oracle_saved_model(exported["a"], {"pixels": pixels}, ["output_0"])["output_0"]
  scores = tm.oracle_saved_model(exported["b"], {"a_probs": probs, "pixels": pixels},
                                 ["output_0"])["output_0"]
  # A label A knows where it is sure and B where A is not, and some noise:
  # each measure's best gate passes some of the rows, not all or none.
  top = probs.max(1)
  labels = np.where(top > np.median(top), probs.argmax(1), scores.argmax(1))
  labels = np.where(rng.random(N) < 0.1, rng.integers(0, 10, N), labels)
  records = [_example(p, i, int(y)) for i, (p, y) in enumerate(zip(pixels, labels))]
  os.makedirs(root / "data")
  with tf.io.TFRecordWriter(str(root / "data/part-0.tfrecord")) as w:
    for r in records:
      w.write(r)
  return {"root": root, "exported": exported, "records": records, "probs": probs,
          "scores": scores, "labels": labels, "measures": _oracle_measures(probs)}


def _example(pixels, i, label):
  feature = {
      "pixels": tf.train.Feature(float_list=tf.train.FloatList(value=pixels)),
      "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"r{i}".encode()])),
      "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _between(values, quantile):
  """A threshold between two observed values far enough apart that float
  rounding cannot move a row across it."""
  ordered = np.unique(values)
  gaps = [i for i in range(len(ordered) - 1) if ordered[i + 1] - ordered[i] > 1e-6]
  k = min(gaps, key=lambda i: abs(i - quantile * len(ordered)))
  return float((ordered[k] + ordered[k + 1]) / 2)


def _keras_spec(exported, run_if):
  features = (FeatureSpec("id", "string"), FeatureSpec("pixels", "float32", (64,)))
  return CascadeSpec(features, (
      StageSpec("a", ModelSource("saved_model", exported["a"]), "", "a",
                {"pixels": "features.pixels"}, {"probs": "output_0"}),
      StageSpec("b", ModelSource("saved_model", exported["b"]), "", "b",
                {"a_probs": "a.probs", "pixels": "features.pixels"},
                {"scores": "output_0"}, run_if=run_if),
  ))


@pytest.mark.parametrize("measure, op, quantile", [
    ("max", "<", 0.4), ("margin", "<", 0.3), ("entropy", ">", 0.6),
    ("max", ">=", 0.5), ("argmax", "==", None), ("argmax", "!=", None),
])
def test_a_keras_classifier_gates_on_a_measure_of_its_probs(keras, measure, op, quantile):
  values = keras["measures"][measure]
  threshold = (float(np.bincount(values.astype(int)).argmax()) if quantile is None
               else _between(values, quantile))
  run_if = f"{measure}(a.probs) {op} {threshold!r}"
  with CascadeSession(_keras_spec(keras["exported"], run_if)) as session:
    out = session.run(keras["records"])
  ran = getattr(np, OPERATORS[op])(values, threshold)
  assert 0 < ran.sum() < N
  np.testing.assert_allclose(out.outputs["a/probs"], keras["probs"], atol=1e-6)
  np.testing.assert_array_equal(out.outputs["b/ran"], ran.astype(np.int64))
  assert out.rows_run["b"] == ran.sum()
  np.testing.assert_allclose(out.outputs["b/scores"][ran], keras["scores"][ran], atol=1e-5)
  np.testing.assert_array_equal(out.outputs["b/scores"][~ran], 0.0)
  assert session.cascade.plan[1].gate == f"{measure}(a.probs) {op} {threshold:g}"


@pytest.mark.parametrize("run_if, expected", [
    ("a.probs < 0.9", "stage 'b': run_if needs a per-row scalar, but 'a.probs' has shape "
     "[N, 10]; apply a measure to its rows, e.g. run_if: \"max(a.probs) < 0.9\" "
     "(measures: max, margin, entropy, argmax)"),
    ("mean(a.probs) < 0.9", "stage 'b': run_if 'mean(a.probs) < 0.9': unknown measure "
     "'mean' (measures: max, margin, entropy, argmax)"),
    ("max(a.nope) < 0.9", "stage 'b': run_if 'a.nope': stage 'a' has no output 'nope'"),
])
def test_a_gate_that_cannot_read_its_output_is_refused_at_build(keras, run_if, expected):
  with pytest.raises(CascadeError) as info:
    CascadeSession(_keras_spec(keras["exported"], run_if))
  assert str(info.value) == expected


def _write_config(keras, run_if, name):
  exported = keras["exported"]
  path = keras["root"] / f"{name}.yaml"
  path.write_text(textwrap.dedent(f"""\
      input:
        pattern: data/part-*.tfrecord
        features:
          id: {{dtype: string}}
          pixels: {{dtype: float32, shape: [64]}}
      stages:
        - name: a
          saved_model: {exported['a']}
          inputs: {{pixels: features.pixels}}
          outputs: {{probs: output_0}}
        - name: b
          saved_model: {exported['b']}
          inputs: {{a_probs: a.probs, pixels: features.pixels}}
          outputs: {{logits: output_0}}
          run_if: "{run_if}"
      output:
        path: out
        passthrough: [id]
      batch_size: 64
      """))
  return str(path)


def test_validate_refuses_a_bare_probs_gate_in_one_line(keras, capsys):
  config = _write_config(keras, "max(a.probs) < 0.5", "validate")
  assert main(["validate", "--config", config, "--sample", "4"]) == 0
  assert "runs if max(a.probs) < 0.5" in capsys.readouterr().out
  assert main(["validate", "--config", config, "--set",
               "stages.b.run_if=a.probs < 0.5"]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("tfcascade: error: ")
  assert "stage 'b'" in err and "'a.probs' has shape [N, 10]" in err
  assert 'e.g. run_if: "max(a.probs) < 0.5"' in err


# --- tune on the Keras classifier ----------------------------------------------


@pytest.fixture(scope="module")
def tuned(keras):
  threshold = _between(keras["measures"]["max"], 0.4)
  path = _write_config(keras, f"max(a.probs) < {threshold!r}", "tune")
  return path, threshold, tune.tune(load_config(path), "label",
                                    records=keras["records"], points=60,
                                    target_accuracy=0.8)


def _real_cascade(keras, config, assignment):
  """The real gated session with a `--set` line applied: b's share of rows
  and the cascade's accuracy."""
  spec = load_config(config, [assignment]).cascade_spec()
  with CascadeSession(spec) as session:
    out = session.run(keras["records"]).outputs
  answer = np.where(out["b/ran"] == 1, out["b/logits"].argmax(1), out["a/probs"].argmax(1))
  return out["b/ran"].mean(), np.mean(answer == keras["labels"])


def test_tune_sweeps_the_measure_the_config_uses(keras, tuned):
  config, threshold, result = tuned
  (gate,) = result["gates"]
  assert gate["reference"] == "max(a.probs)" and gate["op"] == "<"
  ran = keras["measures"]["max"] < threshold
  answer = np.where(ran, keras["scores"].argmax(1), keras["probs"].argmax(1))
  current = gate["current"]
  assert current["run_if"] == f"max(a.probs) < {threshold!r}"
  assert current["share"] == pytest.approx(ran.mean(), abs=1e-12)
  assert current["accuracy"] == pytest.approx(np.mean(answer == keras["labels"]), abs=1e-12)
  assert all(r["run_if"].startswith("max(a.probs) < ") for r in gate["rows"])
  flag, assignment = shlex.split(gate["set"])
  assert flag == "--set" and assignment.startswith("stages.b.run_if=max(a.probs) < ")
  share, accuracy = _real_cascade(keras, config, assignment)
  assert share == pytest.approx(gate["recommended"]["share"], abs=1e-12)
  assert accuracy == pytest.approx(gate["recommended"]["accuracy"], abs=1e-12)


def test_tune_compares_the_measures_each_applied_for_real(keras, tuned):
  """Each measure's recommended line, applied to the real gated session,
  runs B on the share of rows and gives the accuracy tune said; the shares
  also match the measures computed here (the oracle)."""
  config, _, result = tuned
  (gate,) = result["gates"]
  compared = gate["measures"]
  assert [m["measure"] for m in compared] == ["max", "margin", "entropy"]
  assert [m["configured"] for m in compared] == [True, False, False]
  assert compared[0]["run_if"] == gate["recommended"]["run_if"]
  assert all(0 < m["share"] < 1 and m["target_reached"] for m in compared)
  for m in compared:
    operand, op, number = m["run_if"].rsplit(" ", 2)
    assert operand == f"{m['measure']}(a.probs)"
    assert op == {"max": "<", "margin": "<", "entropy": ">"}[m["measure"]]
    ran = getattr(np, OPERATORS[op])(keras["measures"][m["measure"]], float(number))
    assert m["share"] == pytest.approx(ran.mean(), abs=1e-12)
    share, accuracy = _real_cascade(keras, config, shlex.split(m["set"])[1])
    assert share == pytest.approx(m["share"], abs=1e-12)
    assert accuracy == pytest.approx(m["accuracy"], abs=1e-12)
  printed = tune.format_report(result)
  assert "each measure's cheapest threshold reaching the target" in printed
  for m in compared:
    assert m["run_if"] in printed


def test_tune_refuses_a_gate_its_output_cannot_feed_before_running(keras):
  config = load_config(_write_config(keras, "a.probs < 0.5", "bare"))
  with pytest.raises(CascadeError, match=r"e\.g\. run_if: \"max\(a\.probs\) < 0\.5\""):
    tune.tune(config, "label", records=keras["records"], measure=False)
