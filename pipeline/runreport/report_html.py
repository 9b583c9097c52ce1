"""The report as one self-contained HTML page: tables, and the charts of
report_charts inline (no script, no stylesheet or image from elsewhere)."""

from __future__ import annotations

import html
from typing import Iterable, List, Optional, Sequence

from tfcascade.pipeline.runreport import report_charts
from tfcascade.pipeline.runreport.drift_table import DriftRow, gate_share
from tfcascade.pipeline.runreport.report_input import PublishedRun

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;
max-width:1100px;color:#222;padding:0 16px}
h1{font-size:1.5em;margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:4px;
margin-top:32px}.sub{color:#666;margin-top:4px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:4px 8px;
text-align:left;vertical-align:top}.models td{overflow-wrap:anywhere}th{background:#f4f4f4}td.n{text-align:right;
font-variant-numeric:tabular-nums}code{font-size:.9em}
.banner{padding:10px 14px;border-radius:6px;margin:16px 0;font-weight:600}
.ok{background:#e6f4ea;color:#1e6b34}.bad{background:#fde7e7;color:#a61b1b}
.warn{background:#fff4e0;color:#8a5300}tr.flag td{background:#fde7e7}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{flex:1 1 480px;max-width:100%}
.chart svg{max-width:100%;height:auto}
"""


def _e(value) -> str:
  return html.escape(str(value))


def _table(head: Sequence[str], rows: Iterable[Sequence], numeric: Sequence[int] = (),
           flagged: Sequence[bool] = ()) -> str:
  lines = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
  flags = list(flagged)
  for i, row in enumerate(rows):
    cls = ' class="flag"' if i < len(flags) and flags[i] else ""
    cells = "".join(f'<td class="n">{_e(v)}</td>' if j in numeric else f"<td>{_e(v)}</td>"
                    for j, v in enumerate(row))
    lines.append(f"<tr{cls}>{cells}</tr>")
  return "\n".join(lines + ["</table>"])


def _chart(svg: str, caption: str = "") -> str:
  note = f'<div class="sub">{_e(caption)}</div>' if caption else ""
  return f'<div class="chart">{svg}{note}</div>'


def render(run: PublishedRun, previous: Optional[PublishedRun],
           drift: Optional[List[DriftRow]]) -> str:
  """The whole page."""
  s = run.summary
  title = f"tfcascade run report: {run.path}"
  parts = [f"<h1>{_e(title)}</h1>",
           f'<div class="sub">run {_e(s["run_id"])} · run date {_e(s.get("run_date") or "-")}'
           f' · started {_e(s["started_at"])} · {_e(s["runner"])} · output format '
           f'{_e(s.get("output_format", "-"))}'
           + (f" · compared with {_e(previous.path)} (run {_e(previous.summary['run_id'])})"
              if previous else "") + "</div>"]
  parts.append(_at_a_glance(s))
  parts += _banners(run, previous, drift)
  parts += _counts(run, previous)
  parts += _stages(run, previous)
  parts += _outputs(run, previous)
  parts += _dead_letters(s)
  parts += _models(run, previous)
  return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
          f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
          + "\n".join(parts) + "\n</body></html>\n")


def _at_a_glance(s: dict) -> str:
  """The run in three sentences, for whoever opens the page first."""
  wall = s["wall_seconds"]
  speed = f" ({s['records_read'] / wall:,.0f} records/s)" if wall else ""
  lines = [f"{s['records_read']:,} records read: {s['records_written']:,} written, "
           f"{s['records_dead_lettered']:,} dead-lettered"
           + (" (all accounted for)" if s["accounted"] else " (they DO NOT add up)")
           + f", in {wall:,.1f} s{speed}."]
  for name, stage in s["stages"].items():
    if stage.get("gate"):
      share = gate_share(stage)
      lines.append(f"Stage {name} ran on {stage['rows_run']:,} of {stage['rows_in']:,} "
                   f"rows ({'-' if share is None else f'{share:.1%}'}): where "
                   f"{stage['gate']}.")
  return "<p>" + " ".join(_e(l) for l in lines) + "</p>"


def _banners(run, previous, drift) -> List[str]:
  out = []
  s = run.summary
  if not s["accounted"]:
    out.append('<div class="banner bad">records do not add up (read != written + '
               'dead-lettered)</div>')
  missing = s["histograms"].get("units_missing", 0)
  if missing:
    out.append(f'<div class="banner warn">{missing} unit(s) were resumed from a run of an '
               f'older tfcascade that recorded no histograms: the charts cover fewer rows '
               f'than the run scored</div>')
  if drift is None:
    return out
  flagged = [r for r in drift if r.flagged]
  if flagged:
    out.append(f'<div class="banner bad">DRIFT: {len(flagged)} row(s) of the drift table '
               f'flagged: ' + _e("; ".join(r.check for r in flagged)) + "</div>")
  else:
    out.append('<div class="banner ok">no drift flagged against the previous run</div>')
  out.append("<h2>Drift against the previous run</h2>")
  out.append(_table(["check", "this run", "previous run", "change", "flag when", "flagged",
                     "note"],
                    [(r.check, r.current, r.previous, r.change, r.threshold,
                      "FLAGGED" if r.flagged else "", r.note) for r in drift],
                    flagged=[r.flagged for r in drift]))
  changed = [name for name, stage in run.summary["stages"].items()
             if name in previous.summary["stages"]
             and stage.get("fingerprint") != previous.summary["stages"][name].get("fingerprint")]
  out.append('<div class="sub">' + (
      f"models changed since the previous run: {_e(', '.join(changed))} (see Models)"
      if changed else "same models (fingerprints) as the previous run") + "</div>")
  return out


def _counts(run, previous) -> List[str]:
  def row(summary):
    wall = summary["wall_seconds"]
    return [f"{summary['records_read']:,}", f"{summary['records_written']:,}",
            f"{summary['records_dead_lettered']:,}",
            f"{summary.get('records_resumed', 0):,}",
            "yes" if summary["accounted"] else "NO",
            f"{wall:,.1f} s", f"{summary['records_read'] / wall:,.0f}" if wall else "-"]
  rows = [["this run"] + row(run.summary)]
  if previous:
    rows.append(["previous run"] + row(previous.summary))
  return ["<h2>Counts and accounting</h2>",
          _table(["", "records read", "written", "dead-lettered", "resumed", "accounted",
                  "wall time", "records/s"], rows, numeric=range(1, 8)),
          '<div class="sub">records read = written + dead-lettered when accounted; '
          'resumed: scored by an earlier, dead run of the same job and reused; '
          'records/s = records read / wall time of the whole job.</div>']


def _stages(run, previous) -> List[str]:
  before = previous.summary["stages"] if previous else {}
  rows = []
  for name, stage in run.summary["stages"].items():
    share = gate_share(stage)
    then = gate_share(before[name]) if name in before else None
    rows.append([name, stage.get("gate") or "(every row)", f"{stage['rows_in']:,}",
                 f"{stage['rows_run']:,}", "-" if share is None else f"{share:.1%}"]
                + ([("-" if then is None else f"{then:.1%}")] if previous else []))
  head = ["stage", "runs if", "rows in", "rows run", "gate pass share"] + (
      ["previous share"] if previous else [])
  return ["<h2>Stages</h2>", _table(head, rows, numeric=range(2, len(head))),
          _chart(report_charts.stage_chart(run.summary["stages"], before or None))]


def _outputs(run, previous) -> List[str]:
  current = run.histograms
  then = previous.histograms if previous else {"floats": {}, "classes": {}}
  out = ["<h2>Scored outputs</h2>",
         '<div class="sub">Recorded while the job scored (fixed bins, every row a stage '
         'ran on; a gated stage\'s outputs only where its gate passed). '
         + ("Blue: this run; grey: the previous run." if previous else "") + "</div>"]
  charts = []
  for name, histogram in sorted(current["floats"].items()):
    charts.append(_chart(report_charts.float_chart(name, current["edges"], histogram,
                                                   then["floats"].get(name)),
                         _float_caption(histogram, current["edges"])))
  for name, counts in sorted(current["classes"].items()):
    charts.append(_chart(report_charts.class_chart(name, counts, then["classes"].get(name)),
                         f"{sum(counts.values()):,} rows"))
  if not charts:
    out.append("<p>No output of one number per row (float, integer or string) to "
               "chart.</p>")
  out.append('<div class="charts">' + "\n".join(charts) + "</div>")
  return out


def _float_caption(histogram: dict, edges: List[float]) -> str:
  finite = histogram["rows"] - histogram["non_finite"]
  parts = [f"{histogram['rows']:,} rows"]
  if finite:
    parts.append(f"mean {histogram['sum'] / finite:.4g}, min {histogram['min']:.4g}, "
                 f"max {histogram['max']:.4g}")
  under, over = histogram["bins"].get("0", 0), histogram["bins"].get(str(len(edges)), 0)
  if under or over:
    parts.append(f"{under:,} below {edges[0]:g}, {over:,} at or above {edges[-1]:g}")
  if histogram["non_finite"]:
    parts.append(f"{histogram['non_finite']:,} NaN/Inf")
  return "; ".join(parts)


def _dead_letters(summary) -> List[str]:
  reasons = summary.get("dead_letter_reasons") or {}
  out = ["<h2>Dead letters</h2>",
         f"<p>{summary['records_dead_lettered']:,} record(s) dead-lettered "
         f"({summary['dead_letter_fraction']:.2%}; the run fails above "
         f"{summary['max_dead_letter_fraction']:.2%}).</p>"]
  if reasons:
    out.append(_table(["reason (top 10)", "records"],
                      [(r, f"{n:,}") for r, n in reasons.items()], numeric=[1]))
  if summary.get("files_quarantined"):
    out.append("<p>quarantined input files: "
               + _e(", ".join(summary["files_quarantined"])) + "</p>")
  return out


def _models(run, previous) -> List[str]:
  before = previous.summary["stages"] if previous else {}
  rows = []
  for name, stage in run.summary["stages"].items():
    fingerprint = stage.get("fingerprint", "-")
    same = ""
    if name in before:
      same = "same" if before[name].get("fingerprint") == fingerprint else "CHANGED"
    rows.append([name, stage.get("checkpoint") or stage.get("source", "-"),
                 stage.get("global_step", "-"), fingerprint] + ([same] if previous else []))
  head = ["stage", "checkpoint / model", "global step", "fingerprint"] + (
      ["vs previous"] if previous else [])
  return ["<h2>Models</h2>", '<div class="models">' + _table(head, rows) + "</div>",
          f'<div class="sub">run key: {_e(run.summary.get("run_key"))}</div>']
