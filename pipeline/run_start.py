"""Starting a run (launcher side): the output directory checked, this run's
staging started, and its marker kept beating while the launcher waits.

- `prepare` finishes an interrupted publish, refuses a complete output unless
  overwriting, refuses while another run of the output is alive, removes dead
  runs' staging and starts this run's own staging directory
  (transforms.publishing.run_registry). The previous output is NOT touched.
- `Heartbeat` beats the run's marker while the launcher waits for the job.
- `mark_ended` marks a run that failed, so the next run may clean it up.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import socket
import time
import uuid
from typing import Dict, List, Optional, Tuple

from apache_beam.io.filesystems import FileSystems

from tfcascade.pipeline.periodic import Periodic
from tfcascade.transforms.accounting import RunCounts
from tfcascade.transforms.publishing import finalize, run_registry, unit_commits
from tfcascade.transforms.publishing import output_layout as layout
from tfcascade.transforms.publishing.output_layout import SUCCESS, SUMMARY, join
from tfcascade.transforms.publishing.run_registry import RunStaging
from tfcascade.transforms.reading.record_ranges import ReadRange

_LOG = logging.getLogger("tfcascade")


class OutputExistsError(RuntimeError):
  """A complete output is already there and --overwrite was not given."""


class RunInProgressError(RuntimeError):
  """Another run of the same output is alive; this launch is refused."""


class AlreadyComplete(Exception):
  """A dead run of the same job had only its publish left; prepare finished
  it, so the output is complete and there is nothing left to run."""

  def __init__(self, summary: dict):
    super().__init__(f"run {summary.get('run_id')} of the same job had scored "
                     f"everything; its interrupted publish was finished")
    self.summary = summary


def prepare(output_path: str, overwrite: bool, detached: bool = False,
            run_key: Optional[Dict[str, str]] = None, keep_dead: bool = False
            ) -> run_registry.RunStaging:
  """Checks the output directory and starts this run's staging.

  Args:
    output_path: the output directory.
    overwrite: replace a complete output.
    detached: the launcher will not wait (a template launch).
    run_key: this job's run key (run_plan.run_key), if known.
    keep_dead: leave dead runs' staging for `adopt_dead_units` (else removed here).

  Raises:
    OutputExistsError: a complete output and no `overwrite`.
    RunInProgressError: another run of this output is alive.
    AlreadyComplete: an interrupted publish of a run with `run_key` was
      finished here.
  """
  if finalize.finish_interrupted_publish(output_path) and run_key is not None:
    summary = read_summary(output_path)
    if summary and summary.get("run_key") == run_key:
      raise AlreadyComplete(summary)
  _refuse_complete(output_path, overwrite)
  alive = []
  for state in map(run_registry.state, run_registry.runs(output_path)):
    if state.alive:
      alive.append(state)
    elif not keep_dead:
      _LOG.info("removing the staging of dead run %s (%s)", state.staging.run_id, state.why)
      layout.delete_tree(state.staging.run_dir)
  if alive:
    raise _in_progress(output_path, alive)
  _delete_stray_staging(output_path)
  run = start_run(output_path, detached)
  rivals = run_registry.rivals(run)
  if rivals:  # started at the same moment as another: the earlier one goes on
    layout.delete_tree(run.run_dir)
    raise _in_progress(output_path, rivals)
  return run


def check_output(output_path: str, overwrite: bool) -> None:
  """What `prepare` refuses, checked without changing anything (`validate`).

  Raises:
    OutputExistsError: a complete output and no `overwrite`.
    RunInProgressError: another run of this output is alive.
  """
  _refuse_complete(output_path, overwrite)
  alive = [s for s in map(run_registry.state, run_registry.runs(output_path)) if s.alive]
  if alive:
    raise _in_progress(output_path, alive)


def _refuse_complete(output_path: str, overwrite: bool) -> None:
  if layout.exists(join(output_path, SUCCESS)) and not overwrite:
    raise OutputExistsError(
        f"{output_path} already holds a complete run ({SUCCESS} present); "
        f"pass --overwrite to replace it")


def _in_progress(output_path, states) -> RunInProgressError:
  return RunInProgressError(
      f"another run of {output_path} is in progress: "
      + "; ".join(f"{s.staging.run_id} ({s.why})" for s in states)
      + f". Wait for it, or, if it is dead, remove {states[0].staging.run_dir}; a run "
      f"counts as dead when its process on this host is gone or its heartbeat "
      f"is older than {run_registry.STALE_AFTER_S} s")


def _delete_stray_staging(output_path: str) -> None:
  """Files directly under _staging/ (an older layout's), Beam temp dirs."""
  layout.delete_paths(layout.matches_under(join(output_path, layout.STAGING), "*")
                      + layout.matches_under(output_path, "beam-temp-*"))


def read_summary(output_path: str):
  """run_summary.json of a complete output, or None when _SUCCESS is absent."""
  if not layout.exists(join(output_path, SUCCESS)):
    return None
  return layout.read_json(join(output_path, SUMMARY))


def new_run_id() -> str:
  """Sortable by start time; unique across hosts."""
  now = datetime.datetime.now(datetime.timezone.utc)
  return f"{now:%Y%m%dT%H%M%S%f}Z-{uuid.uuid4().hex[:8]}"


def start_run(output_path: str, detached: bool = False) -> RunStaging:
  """Creates this run's staging directory and marker."""
  staging = RunStaging(output_path, new_run_id())
  now = time.time()
  layout.write_json(staging.marker, {
      "run_id": staging.run_id, "host": socket.gethostname(), "pid": os.getpid(),
      "started_epoch": now, "heartbeat_epoch": now, "detached": detached,
      "ended": None})
  return staging


def mark_ended(staging: RunStaging, why: str) -> None:
  """Marks a run that failed as dead: the next run may clean it up. Called
  while an error is on its way to the user, so a marker that cannot be
  written (a full disk) is only logged: the run still counts as dead once
  this launcher process is gone."""
  try:
    run_registry.update_marker(staging, ended=why)
  except Exception:  # pylint: disable=broad-except; never mask the run's own error
    _LOG.warning("could not mark run %s ended", staging.run_id, exc_info=True)


def Heartbeat(run_staging: RunStaging) -> Periodic:  # pylint: disable=invalid-name
  """Beats the run's marker while the launcher waits (a `with` block), so
  another launch of the same output sees this run alive."""
  return Periodic(run_registry.HEARTBEAT_S, lambda: run_registry.heartbeat(run_staging),
                  "tfcascade-heartbeat")


# --- resuming a dead run's committed units -------------------------------------

@dataclasses.dataclass(frozen=True)
class ResumePlan:
  """What makes a dead run's units reusable by this one.

  Attributes:
    run_key: {"config": hash, "models": hash}: the config as loaded (after
      --set) and the models' pinned fingerprints; a commit under another
      run key is never reused.
    inputs: input path -> (size, modified) as planned now; a unit of a file
      that is gone or changed is never reused.
  """
  run_key: Dict[str, str]
  inputs: Dict[str, Tuple[int, float]]

  @classmethod
  def of(cls, pre) -> "ResumePlan":
    """The plan of a run_plan.Preflight."""
    return cls(pre.run_key, {f.path: (f.size, f.modified) for f in pre.files})


@dataclasses.dataclass
class Resumed:
  """The units this run adopted from dead runs, and why others were not."""
  from_runs: List[str] = dataclasses.field(default_factory=list)
  commits: Dict[str, unit_commits.UnitCommit] = dataclasses.field(default_factory=dict)
  notes: List[str] = dataclasses.field(default_factory=list)

  @property
  def counts(self) -> RunCounts:
    total = RunCounts.total(c.counts for c in self.commits.values())
    total.records_resumed = total.records_read
    return total

  @property
  def input_bytes(self) -> int:
    return sum(c.input_bytes for c in self.commits.values())


def adopt_dead_units(run: RunStaging, plan: ResumePlan) -> Resumed:
  """Adopts the units that dead runs of this output committed, when their
  run key and input files match this run's; removes the dead runs.

  The adopted units' files move into this run's staging and their commits
  with them, so a run that dies again hands them on.
  """
  resumed = Resumed()
  for state in map(run_registry.state, run_registry.runs(run.output_path)):
    old = state.staging
    if old.run_id == run.run_id or state.alive:
      continue
    commits = unit_commits.read_commits(old)
    mismatch = _run_key_mismatch(commits, plan.run_key)
    if mismatch:
      resumed.notes.append(f"not resuming run {old.run_id}: {mismatch}")
    else:
      changed = set()
      for key, commit in commits.items():
        if key in resumed.commits:
          continue
        source = _unit_input(commit)
        if plan.inputs.get(source[0]) != source[1:]:
          changed.add(source[0])
          continue
        resumed.commits[key] = _adopt(commit, old, run, plan.run_key)
      if commits:
        resumed.from_runs.append(old.run_id)
      for path in sorted(changed):
        resumed.notes.append(f"input file {path} changed since run {old.run_id} read it "
                             f"(or is no longer an input): its units are scored again")
    _LOG.info("removing the staging of dead run %s (%s)", old.run_id, state.why)
    layout.delete_tree(old.run_dir)
  return resumed


def _run_key_mismatch(commits, key: Dict[str, str]) -> str:
  """Why a dead run's commits are not this run's work ("" when they are)."""
  keys = {json.dumps(c.run_key, sort_keys=True) for c in commits.values()}
  if not keys or keys == {json.dumps(key, sort_keys=True)}:
    return ""
  old = json.loads(sorted(keys)[0])
  what = [part for part in ("config", "models") if old.get(part) != key.get(part)]
  return {("config",): "its config differs",
          ("models",): "a model's checkpoint or graph changed (fingerprints differ)",
          }.get(tuple(what), "its config and its models differ") + "; starting fresh"


def _unit_input(commit: unit_commits.UnitCommit) -> Tuple[str, int, float]:
  task = ReadRange(*commit.task)
  return task.path, task.size, task.modified


def _adopt(commit, old: RunStaging, run: RunStaging, key) -> unit_commits.UnitCommit:
  """Moves a commit's files into `run`'s staging and commits it there."""
  if commit.counts.files and not layout.exists(run.files_dir):
    FileSystems.mkdirs(run.files_dir)
  moved = []
  for written in commit.counts.files:
    target = layout.join(run.files_dir, written.path.rsplit("/", 1)[-1])
    FileSystems.rename([written.path], [target])
    moved.append(written._replace(path=target))
  counts = dataclasses.replace(commit.counts, files=moved)
  unit_commits.commit(run, key, ReadRange(*commit.task), counts)
  return commit._replace(counts=counts)


def prepare_run(output_path: str, overwrite: bool, pre, detached: bool = False,
                resume: bool = True) -> Tuple[RunStaging, Resumed]:
  """`prepare`, then (resume) adopts what dead runs of the same job
  committed, and says so in a line or two on stdout.

  Args:
    pre: the run's run_plan.Preflight (its run key and pinned inputs).
  """
  run = prepare(output_path, overwrite, detached, run_key=pre.run_key, keep_dead=resume)
  if not resume:
    return run, Resumed()
  resumed = adopt_dead_units(run, ResumePlan.of(pre))
  for line in resume_lines(resumed, sum(f.size for f in pre.files)):
    print(line, flush=True)
  return run, resumed


def resume_lines(resumed: Resumed, total_bytes: int) -> List[str]:
  """What the user is told about resuming."""
  lines = list(resumed.notes)
  if resumed.commits:
    share = resumed.input_bytes / total_bytes if total_bytes else 1.0
    lines.append(
        f"resuming run {', '.join(resumed.from_runs)}: {resumed.counts.records_read:,} "
        f"records already scored in {len(resumed.commits)} unit(s), {share:.1%} of the "
        f"input bytes; scoring the rest (--no-resume starts fresh)")
  return lines
