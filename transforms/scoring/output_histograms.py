"""Histograms of the scored outputs, recorded while the job scores.

`tfcascade report` draws and compares them without a second pass over the
output. Each unit of work counts its own rows into FIXED bins (the same for
every output, worker and run), so the units' histograms add up into the
run's without any worker knowing another's data, and two runs compare bin by
bin.

What is counted, per scored part of a chunk (rows a stage's gate did not pass
are left out of that stage's outputs: `<stage>/ran` masks them):

- a float output with one value per row (e.g. `a/confidence`): the value's
  bin in `EDGES` (below), plus how many rows, their sum, min and max, and the
  NaN/Inf values apart;
- an integer, bool or string output with one value per row (e.g.
  `a/prediction`): counts per value ("classes"); integers outside
  (-MAX_CLASS, MAX_CLASS) and strings beyond MAX_CLASSES distinct values
  count as OTHER;
- a stage without such an integer output: the argmax of its `*logits*` or
  `*probs*` vector output, as the classes of `argmax(<output>)`.

Other shapes (vectors, images) are not histogrammed. The counts are of the
rows scored, as `rows_in`/`rows_run` are (a row dead-lettered afterwards for
a NaN output is counted too).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Dict, Mapping

import numpy as np

SCHEME = "fixed-v1"


def _edges() -> np.ndarray:
  """The bin edges of every float output: 8 log-spaced bins per decade for
  |x| in [1e-3, 1e6], 50 equal bins over [0, 1] (probabilities and
  confidences), one bin [-1e-3, 0); below -1e6 and at or above 1e6: the
  under- and overflow bins. Bins are [left, right); 1.0 itself falls in the
  last bin of [0, 1]."""
  negative = -np.logspace(6, -3, 9 * 8 + 1)
  unit = np.linspace(0.0, 1.0, 51)
  unit[-1] = np.nextafter(1.0, 2.0)
  positive = np.logspace(0, 6, 6 * 8 + 1)[1:]
  return np.concatenate([negative, unit, positive])


EDGES = _edges()
# Bin i counts values in [EDGES[i-1], EDGES[i]); bin 0 those below EDGES[0],
# bin len(EDGES) those at or above EDGES[-1].
MAX_CLASS = 1000
MAX_CLASSES = 1000
OTHER = "other"
NON_FINITE = "non_finite"
_STRING_CHARS = 64
_CLASS_OUTPUT_NAMES = ("logits", "probs")


def _no_rows() -> np.ndarray:
  return np.zeros(len(EDGES) + 1, np.int64)


@dataclasses.dataclass
class FloatHistogram:
  """One float output's counts (see the module doc); `bins` dense, one count
  per bin (adding two is one numpy add)."""
  bins: np.ndarray = dataclasses.field(default_factory=_no_rows)
  rows: int = 0
  non_finite: int = 0
  total: float = 0.0
  low: float = float("inf")
  high: float = float("-inf")

  def __eq__(self, other) -> bool:  # `bins` is an array: compared whole
    return (isinstance(other, FloatHistogram) and np.array_equal(self.bins, other.bins)
            and (self.rows, self.non_finite, self.total, self.low, self.high)
            == (other.rows, other.non_finite, other.total, other.low, other.high))

  def add(self, other: "FloatHistogram") -> None:
    self.bins += other.bins
    self.rows += other.rows
    self.non_finite += other.non_finite
    self.total += other.total
    self.low = min(self.low, other.low)
    self.high = max(self.high, other.high)

  def record(self, values: np.ndarray) -> None:
    finite = np.isfinite(values)
    good = values[finite].astype(np.float64)
    self.rows += len(values)
    self.non_finite += int(len(values) - len(good))
    if not len(good):
      return
    self.bins += np.bincount(np.searchsorted(EDGES, good, side="right"),
                             minlength=len(EDGES) + 1)
    self.total += float(good.sum())
    self.low = min(self.low, float(good.min()))
    self.high = max(self.high, float(good.max()))

  def to_json(self) -> dict:
    finite = self.rows > self.non_finite
    return {"rows": self.rows, "non_finite": self.non_finite,
            "sum": self.total, "min": self.low if finite else None,
            "max": self.high if finite else None,
            "bins": {str(i): int(self.bins[i]) for i in np.flatnonzero(self.bins)}}

  @classmethod
  def from_json(cls, data: dict) -> "FloatHistogram":
    bins = _no_rows()
    for i, n in data["bins"].items():
      bins[int(i)] = n
    return cls(bins,
               int(data["rows"]), int(data["non_finite"]), float(data["sum"]),
               float("inf") if data["min"] is None else float(data["min"]),
               float("-inf") if data["max"] is None else float(data["max"]))


@dataclasses.dataclass
class OutputHistograms:
  """The histograms of one piece of work, or of a whole run (their sum).

  Attributes:
    floats: output name -> FloatHistogram.
    classes: output name (or `argmax(<output>)`) -> value -> rows.
    units_missing: units whose counts hold no histograms (committed by a
      tfcascade before they were recorded, then resumed): the run's
      histograms then cover fewer rows than it scored.
  """
  floats: Dict[str, FloatHistogram] = dataclasses.field(default_factory=dict)
  classes: Dict[str, collections.Counter] = dataclasses.field(default_factory=dict)
  units_missing: int = 0

  def add(self, other: "OutputHistograms") -> None:
    for name, histogram in other.floats.items():
      self.floats.setdefault(name, FloatHistogram()).add(histogram)
    for name, counts in other.classes.items():
      _add_capped(self.classes.setdefault(name, collections.Counter()), counts)
    self.units_missing += other.units_missing

  def record(self, outputs: Mapping[str, np.ndarray]) -> None:
    """Counts one scored part: the engine's outputs by name, batch first."""
    stages_with_class = set()
    vectors = {}
    for name, value in outputs.items():
      stage, _, output = name.rpartition("/")
      if output == "ran":
        continue
      ran = outputs.get(f"{stage}/ran") if stage else None
      rows = value if ran is None else value[np.asarray(ran).reshape(-1) != 0]
      if not rows.ndim or not len(rows):  # not one value per row, or none ran
        continue
      per_row = rows.reshape(len(rows), -1)
      if per_row.shape[1] != 1:
        if rows.dtype.kind == "f" and rows.ndim == 2 and \
            any(n in output for n in _CLASS_OUTPUT_NAMES):
          vectors[name] = (stage, rows)
        continue
      column = per_row[:, 0]
      if column.dtype.kind == "f":
        self.floats.setdefault(name, FloatHistogram()).record(column)
      elif column.dtype.kind in "iub":
        stages_with_class.add(stage)
        self._record_classes(name, _integer_classes(column))
      elif column.dtype.kind in "SOU":
        self._record_classes(name, _string_classes(column))
    for name, (stage, rows) in vectors.items():
      if stage not in stages_with_class and rows.shape[1] <= MAX_CLASS:
        self._record_classes(f"argmax({name})", _integer_classes(rows.argmax(axis=1)))

  def _record_classes(self, name: str, counts: Mapping[str, int]) -> None:
    _add_capped(self.classes.setdefault(name, collections.Counter()), counts)

  def to_json(self) -> dict:
    return {"scheme": SCHEME, "units_missing": self.units_missing,
            "floats": {n: h.to_json() for n, h in sorted(self.floats.items())},
            "classes": {n: dict(sorted(c.items())) for n, c in sorted(self.classes.items())}}

  def summary(self) -> dict:
    """What run_summary.json holds under "histograms": to_json and the
    bin edges, so a report never depends on this version's constants."""
    return {**self.to_json(), "edges": EDGES.tolist()}

  @classmethod
  def from_json(cls, data) -> "OutputHistograms":
    """None (a unit committed without histograms) counts as one unit missing."""
    if data is None:
      return cls(units_missing=1)
    return cls({n: FloatHistogram.from_json(h) for n, h in data["floats"].items()},
               {n: collections.Counter(c) for n, c in data["classes"].items()},
               int(data["units_missing"]))


def _integer_classes(values: np.ndarray) -> Dict[str, int]:
  values = values.astype(np.int64)
  if len(values) and 0 <= values.min() and values.max() < MAX_CLASS:  # the usual case
    counts = np.bincount(values)
    return {str(v): int(counts[v]) for v in np.flatnonzero(counts)}
  inside = np.abs(values) < MAX_CLASS
  found, counts = np.unique(values[inside], return_counts=True)
  result = {str(v): int(n) for v, n in zip(found.tolist(), counts.tolist())}
  outside = int(len(values) - inside.sum())
  if outside:
    result[OTHER] = outside
  return result


def _string_classes(values: np.ndarray) -> Dict[str, int]:
  found, counts = np.unique(values, return_counts=True)
  result: Dict[str, int] = collections.Counter()
  for value, n in zip(found.tolist(), counts.tolist()):
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    result[text[:_STRING_CHARS]] += int(n)
  return result


def _add_capped(into: collections.Counter, counts: Mapping[str, int]) -> None:
  """Adds `counts`; a value beyond MAX_CLASSES distinct ones counts as OTHER."""
  for value, n in counts.items():
    if value in into or len(into) < MAX_CLASSES:
      into[value] += n
    else:
      into[OTHER] += n
