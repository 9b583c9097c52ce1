"""`tfcascade report OUTPUT [--compare PREVIOUS] [--out FILE] [--fail-on-drift]`:
one self-contained HTML page about a complete run, drawn from what the job
recorded in its run_summary.json (counts, stages, and the histograms of the
scored outputs, scoring.output_histograms): no pass over the output.

Exit codes: 0 written (drift or not, without --fail-on-drift); 1 written, and
--fail-on-drift with a flagged drift row (one line names it); 2 refused (an
OUTPUT that is not a complete output with histograms, matplotlib missing, an
--out that cannot be written). docs/report.md.

Modules:
  report_command the command: its checks, the page, the exit code;
  report_input   reading and checking an output; where the report goes;
  drift_table    the drift rows and their thresholds;
  report_charts  the matplotlib charts, as inline SVG;
  report_html    the page.
"""
