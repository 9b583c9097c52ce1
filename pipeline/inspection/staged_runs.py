"""`inspect` on the runs of an output that did not publish: each run's
directory under `<output>/_staging/` (transforms.publishing.run_registry)
says whether the run is in progress, failed or died, and why; what it
counted (its failure summary, else the units it committed); and its top
dead-letter reasons. A failed run's staging stays until the next run of
the output, for the user to read."""

from __future__ import annotations

import os
from typing import List

from tfcascade.pipeline.inspection.inspect_io import InspectError, exists, first_line
from tfcascade.pipeline.inspection.run_report import (
    counts_lines, dead_letter_files, read_summary, reason_lines, summary_lines)
from tfcascade.transforms.publishing import output_layout as layout
from tfcascade.transforms.publishing import run_registry
from tfcascade.transforms.publishing.finalize import JOURNAL


def describe_runs(output_path: str) -> List[str]:
  """A heading and one section per run under <output_path>/_staging/
  ([] when there is none)."""
  try:
    runs = run_registry.runs(output_path)
  except (OSError, ValueError) as e:  # Beam's BeamIOError is an OSError
    raise InspectError(f"cannot list {layout.join(output_path, layout.STAGING)}: "
                       f"{first_line(e)}") from e
  if not runs:
    return []
  return ([f"{len(runs)} run(s) under {layout.join(output_path, layout.STAGING)} "
           f"(staged, not published):"] + [describe_run(run) for run in runs])


def run_of(run_dir: str) -> run_registry.RunStaging:
  """The run whose staging directory is `run_dir` (<output>/_staging/<id>)."""
  if "://" not in run_dir:
    run_dir = os.path.abspath(run_dir)  # "." when inspecting its RUN.json from there
  staging, run_id = os.path.split(run_dir.rstrip("/"))
  return run_registry.RunStaging(os.path.dirname(staging), run_id)


def describe_run(run: run_registry.RunStaging) -> str:
  """Status and why, the failure reason, counts and top dead-letter reasons."""
  state = run_registry.state(run)
  summary_path = layout.join(run.run_dir, layout.SUMMARY)
  summary = read_summary(summary_path) if exists(summary_path) else None
  lines = [f"run {run.run_id} ({run.run_dir}): {_status(state, summary)}"]
  reason = (summary or {}).get("failed") or _ended_reason(state)
  if reason:
    lines.append(f"  reason: {reason}")
  if exists(layout.join(run.run_dir, JOURNAL)):
    lines.append(f"  its publish was cut short ({JOURNAL} present): the next "
                 f"`tfcascade run` of this output finishes it")
  report = (summary_lines(summary, summary_path, run.files_dir) if summary
            else _committed_lines(run, state.alive))
  return "\n".join(lines + ["  " + line for line in report])


def _status(state: run_registry.RunState, summary) -> str:
  if state.alive:
    return f"IN PROGRESS ({state.why})"
  if summary is not None or _ended_reason(state) is not None:
    return "FAILED; nothing published"  # its reason follows
  return f"DEAD ({state.why}); nothing published"


def _ended_reason(state: run_registry.RunState):
  """The reason its launcher recorded when the run failed (`ended: ...`)."""
  if not state.why.startswith("ended:"):
    return None
  return state.why.removeprefix("ended:").strip().removeprefix("failed:").strip()


def _committed_lines(run: run_registry.RunStaging, alive: bool) -> List[str]:
  """What the units the run committed add up to (a run with no summary)."""
  from tfcascade.transforms.accounting import RunCounts  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.publishing import unit_commits  # pylint: disable=g-import-not-at-top
  try:
    commits = unit_commits.read_commits(run)
  except (OSError, ValueError, KeyError, TypeError) as e:  # a damaged commit file
    return [f"its unit commits are unreadable: {type(e).__name__}: {e}"]
  if not commits:
    return ["no unit committed" + (" yet" if alive else "")]
  counts = RunCounts.total(c.counts for c in commits.values())
  lines = counts_lines(counts, len(commits), "so far" if alive else "before it stopped")
  if not alive:
    lines.append("(a rerun of the same job and inputs reuses them; --no-resume "
                 "scores everything again)")
  return lines + reason_lines(dict(counts.dead_reasons), dead_letter_files(run.files_dir))
