"""The scored outputs' histograms (transforms/scoring/output_histograms.py):
fixed bins that add up across units in any order, gated rows left out, and
a round trip through a unit commit's JSON. Pure numpy; the end-to-end check
against the demo's numpy oracle is in test_report.py."""

import json

import numpy as np

from tfcascade.transforms.accounting import RunCounts
from tfcascade.transforms.scoring import output_histograms as oh


def _outputs(rng, n, gate=0.8):
  confidence = rng.uniform(0, 1, n).astype(np.float32)
  return {
      "a/confidence": confidence,
      "a/logits": rng.normal(0, 5, (n, 4)).astype(np.float32),
      "a/prediction": rng.integers(0, 4, n),
      "b/probs": rng.dirichlet(np.ones(3), n).astype(np.float32),
      "b/ran": (confidence < gate).astype(np.int64),
      "b/score": rng.normal(0, 100, n).astype(np.float32),
      "b/tag": np.array([b"x", b"y"] * (n // 2)),
  }


def _bin_of(value):
  """Independent of searchsorted: the bin [EDGES[i-1], EDGES[i]) holding it."""
  edges = oh.EDGES
  if value < edges[0]:
    return 0
  for i in range(1, len(edges)):
    if value < edges[i]:
      return i
  return len(edges)


def test_bins_classes_and_gating_match_a_row_by_row_count():
  rng = np.random.default_rng(1)
  out = _outputs(rng, 400)
  h = oh.OutputHistograms()
  h.record(out)
  ran = out["b/ran"] == 1
  # Float outputs, per row: a/confidence on every row, b/score only where b ran.
  want = {}
  for v in out["a/confidence"]:
    want[_bin_of(float(v))] = want.get(_bin_of(float(v)), 0) + 1
  assert h.floats["a/confidence"].to_json()["bins"] == {str(i): n for i, n in want.items()}
  assert h.floats["a/confidence"].rows == 400
  assert h.floats["b/score"].rows == ran.sum()
  np.testing.assert_allclose(h.floats["b/score"].total, out["b/score"][ran].sum(), rtol=1e-5)
  assert h.floats["b/score"].low == out["b/score"][ran].min()
  # Class outputs: integers and strings; a stage with an integer output gets
  # no argmax, one without gets the argmax of its probs.
  assert h.classes["a/prediction"] == {str(k): int((out["a/prediction"] == k).sum())
                                       for k in range(4)}
  assert sum(h.classes["b/tag"].values()) == ran.sum()
  assert "argmax(a/logits)" not in h.classes
  argmax = out["b/probs"][ran].argmax(axis=1)
  assert h.classes["argmax(b/probs)"] == {str(k): int((argmax == k).sum())
                                          for k in np.unique(argmax)}
  assert "b/ran" not in h.classes and "a/logits" not in h.floats


def test_edges_keep_probabilities_in_the_unit_bins():
  h = oh.FloatHistogram()
  h.record(np.array([0.0, 1.0, -2e6, 3e6, np.nan, np.inf], np.float32))
  unit_first = int(np.searchsorted(oh.EDGES, 0.0, side="right"))
  unit_last = int(np.searchsorted(oh.EDGES, 1.0, side="right"))
  assert oh.EDGES[unit_first - 1] == 0.0 and oh.EDGES[unit_last - 1] == 0.98
  assert h.to_json()["bins"] == {str(i): 1 for i in (0, unit_first, unit_last, len(oh.EDGES))}
  assert (h.rows, h.non_finite) == (6, 2)
  assert (h.low, h.high) == (-2e6, 3e6)


def test_units_add_up_to_the_whole_in_any_order():
  rng = np.random.default_rng(2)
  out = _outputs(rng, 1000)
  whole = oh.OutputHistograms()
  whole.record(out)
  parts = []
  for lo, hi in ((0, 100), (100, 650), (650, 1000)):
    part = oh.OutputHistograms()
    part.record({k: v[lo:hi] for k, v in out.items()})
    parts.append(part)
  for order in ([0, 1, 2], [2, 0, 1]):
    total = oh.OutputHistograms()
    for i in order:
      total.add(parts[i])
    assert total.to_json()["classes"] == whole.to_json()["classes"]
    got, want = total.to_json()["floats"], whole.to_json()["floats"]
    for name in want:
      assert got[name]["bins"] == want[name]["bins"]
      np.testing.assert_allclose(got[name]["sum"], want[name]["sum"], rtol=1e-9)


def test_a_unit_commit_round_trips_and_an_old_commit_counts_as_missing():
  rng = np.random.default_rng(3)
  counts = RunCounts(records_read=10)
  counts.histograms.record(_outputs(rng, 10))
  back = RunCounts.from_json(json.loads(json.dumps(counts.to_json())))
  assert back.histograms.to_json() == counts.histograms.to_json()
  old = counts.to_json()
  del old["histograms"]  # a unit committed before histograms were recorded
  total = RunCounts.total([back, RunCounts.from_json(old)])
  assert total.histograms.units_missing == 1  # the report says so
  assert total.histograms.classes == counts.histograms.classes  # the new unit's only
  assert total.records_read == 20


def test_classes_beyond_the_caps_count_as_other():
  h = oh.OutputHistograms()
  h.record({"s/cls": np.array([3, -5, oh.MAX_CLASS, -oh.MAX_CLASS - 7, 3])})
  assert h.classes["s/cls"] == {"3": 2, "-5": 1, oh.OTHER: 2}
  many = oh.OutputHistograms()
  many.record({"s/name": np.array([f"v{i}".encode() for i in range(oh.MAX_CLASSES + 5)])})
  assert len(many.classes["s/name"]) == oh.MAX_CLASSES + 1
  assert many.classes["s/name"][oh.OTHER] == 5


def test_a_part_where_the_gate_passed_no_row_counts_nothing_for_that_stage():
  h = oh.OutputHistograms()
  h.record({"a/confidence": np.array([0.99], np.float32),
            "b/probs": np.zeros((1, 10), np.float32), "b/score": np.zeros(1, np.float32),
            "b/ran": np.array([0])})
  assert set(h.floats) == {"a/confidence"} and h.classes == {}
