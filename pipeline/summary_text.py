"""The run summary as a few readable lines (end of `run`, and `inspect`)."""

from __future__ import annotations


def format_summary(summary: dict) -> str:
  """A few readable lines from a run_summary.json dict."""
  lines = [
      f"records read {summary['records_read']:,}, written "
      f"{summary['records_written']:,}, dead-lettered "
      f"{summary['records_dead_lettered']:,} "
      f"({'all accounted for' if summary['accounted'] else 'MISMATCH'}) in "
      f"{summary['wall_seconds']:.1f} s on {summary['runner']}"]
  if summary.get("records_resumed"):
    lines.append(f"  {summary['records_resumed']:,} of the records read were scored by a "
                 f"dead run of the same job and reused (resumed)")
  for name, stage in summary["stages"].items():
    share = stage["rows_run"] / stage["rows_in"] if stage["rows_in"] else 0.0
    lines.append(f"  stage {name}: ran on {stage['rows_run']:,} of "
                 f"{stage['rows_in']:,} rows ({share:.1%})")
  if summary["files_quarantined"]:
    lines.append(f"  quarantined files: {', '.join(summary['files_quarantined'])}")
  return "\n".join(lines)
