"""The drift table of `tfcascade report --compare`: this run against a
previous one, row by row, each row flagged when its change passes a
threshold (docs/report.md says why these numbers).

Rows:
- gate pass share of each gated stage: the share of rows its gate passed,
  flagged when it moved by more than GATE_SHARE_POINTS (absolute);
- each float output (e.g. a/confidence): the population stability index
  (PSI) over the recorded bins, flagged above PSI_FLAG;
- each class output (e.g. a/prediction): the largest change of one class's
  share, flagged above CLASS_SHARE_POINTS (the PSI is shown beside it);
- the dead-letter share: flagged when it rose by more than
  DEAD_LETTER_POINTS.
An output with fewer than MIN_ROWS rows in either run is shown but never
flagged (too few rows to tell drift from chance); an output only one run has
is shown, not flagged (the config changed, not the data). Whether the
models changed (their fingerprints) is said beside the table: it explains a
drift, it is not one.
"""

from __future__ import annotations

import math
from typing import Dict, List, NamedTuple, Optional

GATE_SHARE_POINTS = 0.10
PSI_FLAG = 0.2
CLASS_SHARE_POINTS = 0.05
DEAD_LETTER_POINTS = 0.01
MIN_ROWS = 200
# The share an empty bin is given in the PSI (it is undefined for zero).
_PSI_FLOOR = 1e-4


class DriftRow(NamedTuple):
  """One row: what was compared, its value in each run, the change."""
  check: str  # e.g. "gate pass share b", "PSI a/confidence"
  current: str
  previous: str
  change: str
  threshold: str
  flagged: bool
  note: str = ""


def psi(current: Dict[str, int], previous: Dict[str, int]) -> float:
  """The population stability index of two count tables over the same keys:
  sum over keys of (p - q) * ln(p / q), shares floored at _PSI_FLOOR."""
  total_p, total_q = sum(current.values()), sum(previous.values())
  value = 0.0
  for key in set(current) | set(previous):
    p = max(current.get(key, 0) / total_p, _PSI_FLOOR)
    q = max(previous.get(key, 0) / total_q, _PSI_FLOOR)
    value += (p - q) * math.log(p / q)
  return value


def float_counts(histogram: dict) -> Dict[str, int]:
  """A float output's bins, with its NaN/Inf values as one more bin."""
  counts = dict(histogram["bins"])
  if histogram["non_finite"]:
    counts["non_finite"] = histogram["non_finite"]
  return counts


def gate_share(stage: dict) -> Optional[float]:
  return stage["rows_run"] / stage["rows_in"] if stage["rows_in"] else None


def drift_rows(current: dict, previous: dict) -> List[DriftRow]:
  """The table, from two run_summary.json dicts (histograms recorded)."""
  rows = []
  for name, stage in current["stages"].items():
    if not stage.get("gate"):
      continue
    before = previous["stages"].get(name)
    now, then = gate_share(stage), before and gate_share(before)
    if now is None or then is None:
      rows.append(DriftRow(f"gate pass share {name}", _pct(now), _pct(then), "",
                           "", False, "stage not in both runs" if before is None
                           else "no rows"))
      continue
    change = now - then
    rows.append(DriftRow(f"gate pass share {name}", _pct(now), _pct(then),
                         f"{change * 100:+.1f} points",
                         f"±{GATE_SHARE_POINTS * 100:g} points",
                         abs(change) > GATE_SHARE_POINTS, f"gate {stage['gate']}"))
  rows += _output_rows("PSI", current["histograms"]["floats"],
                       previous["histograms"]["floats"], float_counts, _mean, _psi_change)
  rows += _output_rows("class shares", current["histograms"]["classes"],
                       previous["histograms"]["classes"], dict,
                       lambda counts: f"{sum(counts.values()):,} rows", _class_change)
  now, then = current["dead_letter_fraction"], previous["dead_letter_fraction"]
  rows.append(DriftRow("dead-letter share", _pct(now, 2), _pct(then, 2),
                       f"{(now - then) * 100:+.2f} points",
                       f"+{DEAD_LETTER_POINTS * 100:g} points",
                       now - then > DEAD_LETTER_POINTS))
  return rows


def _output_rows(kind: str, current: dict, previous: dict, counts, shown,
                 measure) -> List[DriftRow]:
  """One row per output either run recorded. counts(histogram) -> the
  table to compare; shown(histogram) -> what the run column says;
  measure(now, then) -> (change, flag when, over the threshold)."""
  rows = []
  for name in sorted(set(current) | set(previous)):
    check, now, then = f"{kind} {name}", current.get(name), previous.get(name)
    if now is None or then is None:
      rows.append(_one_sided(check, now, then))
      continue
    now_counts, then_counts = counts(now), counts(then)
    total_now, total_then = sum(now_counts.values()), sum(then_counts.values())
    if not total_now or not total_then:
      rows.append(DriftRow(check, shown(now), shown(then), "", "", False, "no rows"))
      continue
    change, threshold, over = measure(now_counts, then_counts)
    few = min(total_now, total_then) < MIN_ROWS
    rows.append(DriftRow(check, shown(now), shown(then), change, threshold,
                         over and not few,
                         f"{min(total_now, total_then):,} rows: fewer than {MIN_ROWS}, "
                         f"not judged" if few else ""))
  return rows


def _psi_change(now: Dict[str, int], then: Dict[str, int]):
  value = psi(now, then)
  return f"PSI {value:.3f}", f"PSI > {PSI_FLAG:g}", value > PSI_FLAG


def _class_change(now: Dict[str, int], then: Dict[str, int]):
  total_now, total_then = sum(now.values()), sum(then.values())
  changes = {k: now.get(k, 0) / total_now - then.get(k, 0) / total_then
             for k in set(now) | set(then)}
  worst = max(sorted(changes), key=lambda k: abs(changes[k]))
  return (f"class {worst} {changes[worst] * 100:+.1f} points (PSI {psi(now, then):.3f})",
          f"±{CLASS_SHARE_POINTS * 100:g} points", abs(changes[worst]) > CLASS_SHARE_POINTS)


def _one_sided(check: str, now, then) -> DriftRow:
  return DriftRow(check, "-" if now is None else "recorded",
                  "-" if then is None else "recorded", "", "", False,
                  "only in " + ("this run" if then is None else "the previous run"))


def _mean(histogram: dict) -> str:
  finite = histogram["rows"] - histogram["non_finite"]
  return f"mean {histogram['sum'] / finite:.4g}" if finite else "no finite values"


def _pct(value: Optional[float], digits: int = 1) -> str:
  return "-" if value is None else f"{value * 100:.{digits}f}%"


def first_flag(rows: List[DriftRow]) -> Optional[DriftRow]:
  return next((r for r in rows if r.flagged), None)
