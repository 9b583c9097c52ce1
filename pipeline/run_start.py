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

import datetime
import logging
import os
import socket
import threading
import time
import uuid

from tfcascade.transforms.publishing import finalize, run_registry
from tfcascade.transforms.publishing import output_layout as layout
from tfcascade.transforms.publishing.output_layout import SUCCESS, SUMMARY, join
from tfcascade.transforms.publishing.run_registry import RunStaging

_LOG = logging.getLogger("tfcascade")


class OutputExistsError(RuntimeError):
  """A complete output is already there and --overwrite was not given."""


class RunInProgressError(RuntimeError):
  """Another run of the same output is alive; this launch is refused."""


def prepare(output_path: str, overwrite: bool, detached: bool = False
            ) -> run_registry.RunStaging:
  """Checks the output directory and starts this run's staging.

  Raises:
    OutputExistsError: a complete output and no `overwrite`.
    RunInProgressError: another run of this output is alive.
  """
  finalize.finish_interrupted_publish(output_path)
  if layout.exists(join(output_path, SUCCESS)) and not overwrite:
    raise OutputExistsError(
        f"{output_path} already holds a complete run ({SUCCESS} present); "
        f"pass --overwrite to replace it")
  alive = []
  for state in map(run_registry.state, run_registry.runs(output_path)):
    if state.alive:
      alive.append(state)
    else:
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


def _in_progress(output_path, states) -> RunInProgressError:
  return RunInProgressError(
      f"another run of {output_path} is in progress: "
      + "; ".join(f"{s.staging.run_id} ({s.why})" for s in states)
      + f". Wait for it, or, if it is dead, remove {states[0].staging.run_dir}; a run "
      f"counts as dead when its process on this host is gone or its heartbeat "
      f"is older than {run_registry.STALE_AFTER_S} s")


def _delete_stray_staging(output_path: str) -> None:
  """Files directly under _staging/ (an older layout's), Beam temp dirs."""
  layout.delete_paths(layout.matches(join(output_path, layout.STAGING, "*"))
                      + layout.matches(join(output_path, "beam-temp-*")))


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
  """Marks a run that failed as dead: the next run may clean it up."""
  run_registry.update_marker(staging, ended=why)


class Heartbeat:
  """Beats the run's marker while the launcher waits, so another launch of
  the same output sees this run alive."""

  def __init__(self, run_staging):
    self._run = run_staging
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._beat, daemon=True,
                                    name="tfcascade-heartbeat")

  def _beat(self):
    while not self._stop.wait(run_registry.HEARTBEAT_S):
      run_registry.heartbeat(self._run)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
