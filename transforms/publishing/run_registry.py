"""The run registry: per-run staging directories, and which runs are alive.

Every run stages under its own `<output>/_staging/<run id>/`, with a marker
`RUN.json` (host, pid, start, heartbeat). Two launches of one job therefore
never write into each other's files, and the rules below decide who goes on:

- a run is DEAD when it ended (its marker says so, or its run_summary.json of
  a failed run is there), when it was started on this host by a launcher
  process that no longer exists, or when its heartbeat is older than
  `STALE_AFTER_S`. The launcher beats while it waits, and so do the workers
  while they score (transforms.beam.score_units, the Spark task), so a
  submitted-only job (a
  Dataflow template launch, whose launcher exits at once) stays alive while
  it works; it gets `DETACHED_STALE_AFTER_S` for its workers to start. A dead
  run's directory is removed by the next run;
- a new run is refused while another run of the same output is alive;
- two runs that start at the same moment both see each other: the one with
  the smaller run id (its start time) goes on, the other is refused, at start
  and again before publishing.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import socket
import time
from typing import List, Optional

from tfcascade.transforms.publishing import output_layout as layout

RUN_MARKER = "RUN.json"
FILES = "files"
STALE_AFTER_S = 600  # the launcher beats every HEARTBEAT_S while it waits
HEARTBEAT_S = 60
DETACHED_STALE_AFTER_S = 1800  # until a submitted job's first workers beat
_LOG = logging.getLogger("tfcascade")


@dataclasses.dataclass(frozen=True)
class RunStaging:
  """One run's staging directory."""
  output_path: str
  run_id: str

  @property
  def run_dir(self) -> str:
    return layout.join(self.output_path, layout.STAGING, self.run_id)

  @property
  def files_dir(self) -> str:
    """Where the run's workers write their (uniquely named) files."""
    return layout.join(self.run_dir, FILES)

  @property
  def marker(self) -> str:
    return layout.join(self.run_dir, RUN_MARKER)


@dataclasses.dataclass(frozen=True)
class RunState:
  staging: RunStaging
  alive: bool
  why: str  # for messages: what the marker says, or why the run is dead


def heartbeat(staging: RunStaging) -> None:
  """Tells other launches this run is alive; a failed beat is only logged
  (one missed beat is not fatal, the next one follows)."""
  try:
    update_marker(staging, heartbeat_epoch=time.time())
  except Exception:  # pylint: disable=broad-except
    _LOG.warning("heartbeat of run %s failed", staging.run_id, exc_info=True)


def update_marker(staging: RunStaging, **fields) -> None:
  """Updates fields of an existing marker. A marker that is gone (its run
  was cleaned up while a straggling worker still beat) is not recreated: a
  marker without its host and pid would look alive to every launch."""
  marker = _read_marker(staging.marker)
  if marker is None:
    _LOG.warning("run %s has no readable marker %s; not updating it",
                 staging.run_id, staging.marker)
    return
  marker.update(fields)
  layout.write_json(staging.marker, marker)


def runs(output_path: str) -> List[RunStaging]:
  """Every run directory under the output's _staging/."""
  root = layout.join(output_path, layout.STAGING)
  ids = set()
  for path in layout.matches_under(root, "**"):
    relative = path[len(root):].lstrip("/")
    if "/" in relative:
      ids.add(relative.split("/", 1)[0])
  return [RunStaging(output_path, run_id) for run_id in sorted(ids)]


def state(staging: RunStaging) -> RunState:
  """Whether a run is alive, and why (see the module doc for the rules)."""
  marker = _read_marker(staging.marker)
  if marker is None:
    age = time.time() - layout.modified_seconds(staging.marker)
    if layout.exists(staging.marker) and age < STALE_AFTER_S:
      return RunState(staging, True, "marker being written")
    return RunState(staging, False, "no readable run marker")
  if marker.get("ended"):
    return RunState(staging, False, f"ended: {marker['ended']}")
  if layout.exists(layout.join(staging.run_dir, layout.SUMMARY)):
    return RunState(staging, False, "ended: it wrote its failure summary")
  if (marker.get("host") == socket.gethostname() and not marker.get("detached")
      and not _pid_alive(marker.get("pid"))):
    return RunState(staging, False, f"its process {marker.get('pid')} on this host is gone")
  beat = float(marker.get("heartbeat_epoch") or 0)
  age = time.time() - beat
  first_beat = beat == float(marker.get("started_epoch") or 0)
  limit = (DETACHED_STALE_AFTER_S if marker.get("detached") and first_beat
           else STALE_AFTER_S)
  if age > limit:
    return RunState(staging, False, f"no heartbeat for {age:.0f} s (limit {limit} s)")
  started = datetime.datetime.fromtimestamp(
      float(marker.get("started_epoch") or 0), datetime.timezone.utc)
  return RunState(staging, True,
                  f"started {started:%Y-%m-%d %H:%M:%S} UTC on {marker.get('host')} "
                  f"(pid {marker.get('pid')}{', detached' if marker.get('detached') else ''})")


def rivals(staging: RunStaging) -> List[RunState]:
  """Live runs of the same output that go before this one (smaller id)."""
  return [s for s in map(state, runs(staging.output_path))
          if s.staging.run_id < staging.run_id and s.alive]


def _read_marker(path: str) -> Optional[dict]:
  try:
    return layout.read_json(path)
  except Exception:  # pylint: disable=broad-except; missing or half-written
    return None


def _pid_alive(pid) -> bool:
  if not isinstance(pid, int) or pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # alive, someone else's
    return True
  return True
