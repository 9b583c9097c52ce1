"""The report's charts, drawn with matplotlib as inline SVG (text kept as
text; no file, no network). Each function returns one `<svg>` element; with
a previous run, its values are drawn over this run's in grey."""

from __future__ import annotations

import io
from typing import Dict, List, Optional

import matplotlib
from matplotlib.figure import Figure

CURRENT = "#1f77b4"
PREVIOUS = "#7f7f7f"
_STYLE = {"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False,
          "axes.spines.right": False}


def _svg(figure: Figure) -> str:
  out = io.StringIO()
  with matplotlib.rc_context(_STYLE):
    figure.savefig(out, format="svg", bbox_inches="tight")
  text = out.getvalue()
  return text[text.index("<svg"):]  # the XML prologue does not belong inline


def _figure(width: float = 6.4, height: float = 2.6) -> Figure:
  return Figure(figsize=(width, height))


def stage_chart(stages: Dict[str, dict], previous: Optional[Dict[str, dict]]) -> str:
  """Per stage, the share of rows its model ran on (100% unless gated)."""
  with matplotlib.rc_context(_STYLE):
    figure = _figure(height=0.5 + 0.45 * len(stages) * (2 if previous else 1))
    axes = figure.add_subplot()
    names = list(stages)
    labels, shares, colors = [], [], []
    for name in names:
      runs = [("this run", stages[name], CURRENT)]
      if previous is not None and name in previous:
        runs.append(("previous", previous[name], PREVIOUS))
      for label, stage, color in runs:
        labels.append(f"{name} ({label})" if previous is not None else name)
        shares.append(stage["rows_run"] / stage["rows_in"] * 100 if stage["rows_in"] else 0)
        colors.append(color)
    positions = list(range(len(labels)))[::-1]
    bars = axes.barh(positions, shares, color=colors)
    axes.set_yticks(positions, labels)
    axes.set_xlim(0, 105)
    axes.set_xlabel("% of rows in that the stage ran on (gate pass share)")
    axes.bar_label(bars, fmt="%.1f%%", padding=2)
    return _svg(figure)


def float_chart(name: str, edges: List[float], current: dict,
                previous: Optional[dict]) -> str:
  """A float output's share of rows per recorded bin (bins drawn at their
  real edges; the under/overflow bins and NaN/Inf are in the caption)."""
  runs = [(current, CURRENT, "this run")]
  if previous is not None:
    runs.append((previous, PREVIOUS, "previous run"))
  shown = sorted({int(i) for h, _, _ in runs for i in h["bins"]
                  if 0 < int(i) < len(edges)})
  with matplotlib.rc_context(_STYLE):
    figure = _figure()
    axes = figure.add_subplot()
    if shown:
      lo, hi = shown[0], shown[-1]
      lefts = edges[lo - 1:hi]
      widths = [edges[i] - edges[i - 1] for i in range(lo, hi + 1)]
      for histogram, color, label in runs:
        total = max(histogram["rows"], 1)
        heights = [histogram["bins"].get(str(i), 0) / total * 100 for i in range(lo, hi + 1)]
        if color == CURRENT:
          axes.bar(lefts, heights, widths, align="edge", color=color, alpha=0.75, label=label)
        else:
          axes.stairs(heights, lefts + [edges[hi]], color=color, linewidth=1.5, label=label)
      if max(abs(edges[lo - 1]), abs(edges[hi])) > 100:
        axes.set_xscale("symlog", linthresh=1.0)
    axes.set_title(name)
    axes.set_xlabel("value")
    axes.set_ylabel("% of rows")
    if previous is not None:
      axes.legend(frameon=False)
    return _svg(figure)


def class_chart(name: str, current: Dict[str, int], previous: Optional[Dict[str, int]]) -> str:
  """A class output's share of rows per class, this run (and previous)."""
  keys = sorted(set(current) | set(previous or {}), key=_class_order)
  with matplotlib.rc_context(_STYLE):
    figure = _figure(width=max(4.0, min(12.0, 0.45 * len(keys) + 1.5)))
    axes = figure.add_subplot()
    positions = range(len(keys))
    width = 0.4 if previous is not None else 0.8
    total = max(sum(current.values()), 1)
    axes.bar([p - (width / 2 if previous is not None else 0) for p in positions],
             [current.get(k, 0) / total * 100 for k in keys], width, color=CURRENT,
             label="this run")
    if previous is not None:
      total_previous = max(sum(previous.values()), 1)
      axes.bar([p + width / 2 for p in positions],
               [previous.get(k, 0) / total_previous * 100 for k in keys], width,
               color=PREVIOUS, label="previous run")
      axes.legend(frameon=False)
    axes.set_xticks(list(positions), keys, rotation=0 if len(keys) <= 20 else 90)
    axes.set_title(name)
    axes.set_xlabel("class")
    axes.set_ylabel("% of rows")
    return _svg(figure)


def _class_order(key: str):
  """Numeric classes in number order, then the rest (e.g. "other") by name."""
  try:
    return (0, int(key), "")
  except ValueError:
    return (1, 0, key)
