"""Reading a published output for `tfcascade report`: its run_summary.json,
checked to be a complete tfcascade output with recorded histograms."""

from __future__ import annotations

import uuid
from typing import NamedTuple

from apache_beam.io.filesystems import FileSystems

from tfcascade.transforms.publishing import output_layout as layout


class ReportError(ValueError):
  """An OUTPUT the report cannot read; the message is one line."""


class PublishedRun(NamedTuple):
  """A complete output: where it is and its run_summary.json."""
  path: str
  summary: dict

  @property
  def histograms(self) -> dict:
    return self.summary["histograms"]


def load_run(path: str, flag: str) -> PublishedRun:
  """The complete output at `path` (named `flag` in errors: OUTPUT or
  --compare).

  Raises:
    ReportError: not a directory holding a tfcascade output, not complete (no
      `_SUCCESS`), or written by a tfcascade that recorded no histograms.
  """
  path = path.rstrip("/")
  summary_path = layout.join(path, layout.SUMMARY)
  if not layout.exists(path):
    raise ReportError(f"{flag} {path}: no such output directory")
  if not layout.exists(summary_path):
    raise ReportError(f"{flag} {path}: not a tfcascade output (no {layout.SUMMARY})")
  if not layout.exists(layout.join(path, layout.SUCCESS)):
    raise ReportError(f"{flag} {path}: the output is not complete (no {layout.SUCCESS}): "
                      f"its run failed or is still publishing")
  try:
    summary = layout.read_json(summary_path)
  except (OSError, ValueError) as e:
    raise ReportError(f"{flag} {summary_path}: does not read as JSON: {e}") from None
  if not isinstance(summary, dict) or not {"records_read", "stages"} <= set(summary):
    raise ReportError(f"{flag} {summary_path}: not a tfcascade run summary")
  if "histograms" not in summary:
    raise ReportError(f"{flag} {path}: written by an older tfcascade that recorded no "
                      f"output histograms; run the job again with this version "
                      f"(--overwrite) to report on it")
  return PublishedRun(path, summary)


def default_report_path(output: str) -> str:
  """Where the report goes without --out: beside the output, not in it (the
  output folder is what consumers read whole and what --overwrite replaces)."""
  return output.rstrip("/") + ".report.html"


def write_report(path: str, html: str) -> None:
  """Writes the report (a local path or gs://...) whole: under a temporary
  name, then renamed over `path`, so a reader never sees half a report."""
  partial = f"{path}.{uuid.uuid4().hex}.partial"
  with FileSystems.create(partial, mime_type="text/html") as f:
    f.write(html.encode("utf-8"))
  FileSystems.rename([partial], [path])
