"""What tune shows: the printed table and recommendation, tune.json and
tune.png (accuracy against the share of rows each gated stage runs on).
"""

from __future__ import annotations

import json
import os
from typing import List, Optional, Sequence

import numpy as np

from tfcascade.pipeline.tune.threshold_sweep import DEFAULT_TOLERANCE


def _pct(x: float) -> str:
  return f"{100 * x:.2f}%"


def _table_rows(rows: Sequence[dict], n: int = 9) -> List[dict]:
  picks = {id(rows[round(i * (len(rows) - 1) / (n - 1))]) for i in range(n)}
  return [r for r in rows if id(r) in picks or r["current"] or r.get("recommended")]


def format_report(result: dict, out_dir: Optional[str] = None) -> str:
  """The few lines `tfcascade tune` prints."""
  alone = ", ".join(f"{n} alone {_pct(a)} ({result['predictions'][n]})"
                    for n, a in result["accuracy_alone"].items())
  lines = [f"{result['rows']:,} rows, label '{result['label']}': {alone}; "
           f"every stage on every row (ungated) {_pct(result['ungated_accuracy'])}; "
           f"the final answer with the configured gates "
           f"{_pct(result['final_accuracy'])}"]
  costs = result["costs"]
  if costs:
    lines.append("measured session time per row: parse and ungated stages "
                 f"{costs['base_us_per_row']:.1f} us; "
                 + ", ".join(f"{n} {us:.1f} us" for n, us in costs["stage_us_per_row"].items()))
  for w in result["warnings"]:
    lines.append(f"warning: {w}")
  for g in result["gates"]:
    name = g["stage"]
    lines.append("")
    lines.append(f"stage {name}: run_if {g['reference']} {g['op']} t")
    lines.append(f"  {'run_if':28s} {name + ' runs on':>12s} {'accuracy':>9s} "
                 f"{'rows/s':>10s}")
    for r in _table_rows(g["rows"]):
      mark = ("  <- current" if r["current"] else "") + (
          "  <- recommended" if r.get("recommended") else "")
      rate = f"{r['rows_per_s']:,.0f}" if r["rows_per_s"] else "-"
      lines.append(f"  {r['run_if']:28s} {_pct(r['share']):>12s} "
                   f"{_pct(r['accuracy']):>9s} {rate:>10s}{mark}")
    best, cur, every = g["recommended"], g["current"], g["rows"][-1]
    target = (f"within {100 * DEFAULT_TOLERANCE:g} point of the ungated cascade's "
              f"{_pct(result['ungated_accuracy'])}"
              if result["target_is_default"] else f"of at least {_pct(result['target_accuracy'])}")
    if not g["target_reached"]:
      lines.append(f"no threshold reaches {_pct(result['target_accuracy'])}; the most "
                   f"accurate: {best['run_if']}")
    else:
      lines.append(f"recommended (the cheapest threshold with accuracy {target}): "
                   f"{best['run_if']}")
    lines.append(f"  {name} runs on {_pct(best['share'])} of rows (now "
                 f"{_pct(cur['share'])}), cascade accuracy {_pct(best['accuracy'])} "
                 f"(now {_pct(cur['accuracy'])})")
    if best["rows_per_s"] and cur["rows_per_s"] and every["rows_per_s"]:
      lines.append(f"  session rows/s from the measured costs: {best['rows_per_s']:,.0f}, "
                   f"{best['rows_per_s'] / every['rows_per_s']:.2f}x {name} on every row, "
                   f"{best['rows_per_s'] / cur['rows_per_s']:.2f}x the current gate")
    lines.append(f"  apply: {g['set']}")
    lines.extend(_measure_lines(g, name))
  if out_dir:
    lines.append("")
    lines.append(f"wrote {os.path.join(out_dir, 'tune.json')} and "
                 f"{os.path.join(out_dir, 'tune.png')}")
  return "\n".join(lines)


def _measure_lines(gate: dict, name: str) -> List[str]:
  """The measures compared on a gate of a [N, C] output, one line each."""
  if not gate.get("measures"):
    return []
  lines = ["  each measure's cheapest threshold reaching the target (else its most "
           "accurate):"]
  for m in gate["measures"]:
    if "skipped" in m:
      lines.append(f"    {m['measure']}(): not compared, {m['skipped']}")
      continue
    rate = f", {m['rows_per_s']:,.0f} rows/s" if m["rows_per_s"] else ""
    notes = [note for note, on in (("configured", m["configured"]),
                                   ("misses the target", not m["target_reached"])) if on]
    lines.append(f"    {m['run_if']:28s} {name} runs on {_pct(m['share']):>7s}, accuracy "
                 f"{_pct(m['accuracy'])}{rate}" + (f"  ({', '.join(notes)})" if notes else ""))
  return lines


def plot(result: dict, path: str) -> None:
  """tune.png: per gated stage, the cascade's accuracy against the share of
  rows the stage runs on (its cost), with the current and the recommended
  threshold marked and each stage alone as a horizontal line."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  gates = result["gates"]
  fig, axes = plt.subplots(len(gates), 1, figsize=(9, 5.8 * len(gates)), squeeze=False)
  alone = {stage: 100 * a for stage, a in result["accuracy_alone"].items()}
  for ax, g in zip(axes[:, 0], gates):
    name = g["stage"]
    share = np.array([100 * r["share"] for r in g["rows"]])
    acc = np.array([100 * r["accuracy"] for r in g["rows"]])
    others = [m for m in g.get("measures", ()) if not m["configured"] and "rows" in m]
    compared = [100 * r["accuracy"] for m in others for r in m["rows"]]
    low = min(acc.min(), *alone.values(), *compared)
    high = max(acc.max(), *alone.values(), *compared)
    pad = max(0.3, 0.07 * (high - low))
    ax.set_ylim(low - pad, high + pad)
    ax.set_xlim(-2, 102)
    ax.plot(share, acc, "-", color="tab:blue", lw=2.2, zorder=3,
            label="cascade (one point per threshold)"
            + (f": {g['reference']} {g['op']} t" if others else ""))
    for m, color in zip(others, ("tab:purple", "tab:brown")):
      ax.plot([100 * r["share"] for r in m["rows"]], [100 * r["accuracy"] for r in m["rows"]],
              "-", color=color, lw=1.2, zorder=2,
              label=f"{m['run_if'].rsplit(' ', 1)[0]} t, for comparison")
    for stage, a in alone.items():
      ax.axhline(a, color="0.45", ls="--", lw=1.1, zorder=1)
      ax.text(101, a, f"{stage} alone {a:.2f}%", ha="right", fontsize=9, color="0.3",
              va="top" if a == low else "bottom")
    target = 100 * result["target_accuracy"]
    ax.axhline(target, color="tab:green", ls=":", lw=1.3, zorder=1,
               label=f"target accuracy {target:.2f}%")
    cur, best = g["current"], g["recommended"]
    ax.plot(100 * cur["share"], 100 * cur["accuracy"], "o", ms=11, color="tab:orange",
            zorder=5, label=f"current: {cur['run_if']}")
    ax.plot(100 * best["share"], 100 * best["accuracy"], "*", ms=19, color="tab:red",
            zorder=6, label=f"recommended: {best['run_if']}")
    marks = [(best, "tab:red", "recommended")]
    if best is not cur:
      marks.append((cur, "tab:orange", "current"))
    # Below and to the right of the points: under a rising accuracy curve.
    offsets = sorted([(50, -50), (15, -115)], key=lambda o: -o[1])
    for (r, color, what), offset in zip(sorted(marks, key=lambda m: -m[0]["share"]),
                                        offsets):
      text = (f"{what}: {name} runs on {100 * r['share']:.1f}% of rows\n"
              f"accuracy {100 * r['accuracy']:.2f}%")
      if r["rows_per_s"]:
        text += f", session ~{r['rows_per_s']:,.0f} rows/s"
      ax.annotate(text, (100 * r["share"], 100 * r["accuracy"]), xytext=offset,
                  textcoords="offset points", fontsize=9, color=color, va="top",
                  bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": color,
                        "alpha": 0.9},
                  arrowprops={"arrowstyle": "-", "color": color, "lw": 0.9})
    ax.set_xlabel(f"share of rows stage {name} runs on (%) = its cost")
    ax.set_ylabel(f"cascade accuracy against '{result['label']}' (%)")
    ax.set_title(f"Gate of stage {name}: run_if {g['reference']} {g['op']} t\n"
                 f"accuracy vs cost on {result['rows']:,} sampled rows; recommended = "
                 f"cheapest t reaching the target", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 0.06), fontsize=9, framealpha=0.95)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write(result: dict, out_dir: str) -> None:
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "tune.json"), "w") as f:
    json.dump(result, f, indent=1)
    f.write("\n")
  plot(result, os.path.join(out_dir, "tune.png"))
