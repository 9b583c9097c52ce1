"""`tfcascade report`'s exit code: reads OUTPUT (and --compare), writes the
page, judges the drift (the package doc says what the codes mean)."""

from __future__ import annotations

import importlib.util
import sys

from tfcascade.pipeline import exit_codes


def command(args) -> int:
  """Runs `tfcascade report`; returns the exit code."""
  if importlib.util.find_spec("matplotlib") is None:
    return _refused("report draws with matplotlib, which is not installed: "
                    "pip install -c constraints.txt -e '.[plot]'")
  if args.fail_on_drift and not args.compare:
    return _refused("--fail-on-drift needs --compare PREVIOUS_OUTPUT")
  # pylint: disable=g-import-not-at-top; matplotlib checked first
  from tfcascade.pipeline.runreport import drift_table, report_html
  from tfcascade.pipeline.runreport.report_input import (ReportError, default_report_path,
                                                        load_run, write_report)
  try:
    run = load_run(args.output, "OUTPUT")
    previous = load_run(args.compare, "--compare") if args.compare else None
  except ReportError as e:
    return _refused(str(e))
  if previous is not None and \
      previous.histograms.get("scheme") != run.histograms.get("scheme"):
    return _refused(f"--compare {previous.path}: its histograms use bins "
                    f"{previous.histograms.get('scheme')!r}, OUTPUT's "
                    f"{run.histograms.get('scheme')!r}: not comparable")
  drift = drift_table.drift_rows(run.summary, previous.summary) if previous else None
  path = args.out or default_report_path(run.path)
  try:
    write_report(path, report_html.render(run, previous, drift))
  except OSError as e:
    return _refused(f"--out {path}: cannot write the report: {e.strerror or e}")
  flagged = [r for r in drift or [] if r.flagged]
  print(f"report written to {path}"
        + ("" if drift is None else f" ({len(flagged)} drift row(s) flagged against "
                                    f"{previous.path})"))
  if flagged and args.fail_on_drift:
    first = flagged[0]
    print(f"tfcascade: drift: {first.check}: {first.current} vs {first.previous} "
          f"({first.change}; flag when {first.threshold})"
          + (f" and {len(flagged) - 1} more" if len(flagged) > 1 else "")
          + f"; see {path}", file=sys.stderr)
    return exit_codes.FAILED
  return exit_codes.OK


def _refused(message: str) -> int:
  print(f"tfcascade: error: {message}", file=sys.stderr)
  return exit_codes.REFUSED
