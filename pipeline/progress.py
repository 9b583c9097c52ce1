"""Progress with an end (launcher side): one line every 10 s while the job
runs, whatever the engine and however many worker processes it has.

Workers commit each unit they finish into the run's staging directory
(transforms.publishing.unit_commits); the launcher reads those commits — the
same channel on the DirectRunner, multi_processing, Spark or a remote runner
writing to an object store — and prints the share of input bytes done,
records scored, dead letters, rows/s and an ETA from the rate of bytes done
so far. Units a dead run committed (resumed) count as done from the start
but not into the rate. Until a first unit is done there is no rate, and the
line says so instead of guessing.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Dict, Optional, Set

from tfcascade.pipeline.periodic import Periodic
from tfcascade.transforms.accounting import RunCounts
from tfcascade.transforms.publishing import unit_commits
from tfcascade.transforms.publishing.run_registry import RunStaging

_LOG = logging.getLogger("tfcascade")
EVERY_S = 10.0


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
  """Adds up a run's unit commits and formats the progress line."""

  def __init__(self, run: RunStaging, total_bytes: int, resumed: Dict[str, object]):
    self._run = run
    self._total_bytes = total_bytes
    self._seen: Set[str] = set(resumed)
    self._resumed_bytes = sum(c.input_bytes for c in resumed.values())
    self._bytes = 0  # done by this run
    self._records = 0  # read by this run
    self._counts = RunCounts.total(c.counts for c in resumed.values())
    self._start = time.monotonic()

  def update(self) -> None:
    """Reads the commits that appeared since the last call."""
    for key, commit in unit_commits.read_commits(self._run, skip=self._seen).items():
      self._seen.add(key)
      self._bytes += commit.input_bytes
      self._records += commit.counts.records_read
      self._counts.add(commit.counts)

  def line(self) -> str:
    elapsed = max(time.monotonic() - self._start, 1e-9)
    done = self._resumed_bytes + self._bytes
    share = done / self._total_bytes if self._total_bytes else 1.0
    scored = self._counts.records_read
    dead = self._counts.records_in("dead_letter")
    text = (f"progress: {share:.1%} of input bytes ({done:,} of {self._total_bytes:,}) in "
            f"{len(self._seen)} unit(s); {scored:,} records scored, {dead:,} dead-lettered")
    if not self._bytes:
      return text + "; no unit finished yet, so no rate or ETA"
    rate = self._bytes / elapsed
    rows = self._records / elapsed
    eta = (self._total_bytes - done) / rate
    return text + f"; {rows:,.0f} records/s; ETA {_duration(eta)}"


def ProgressLog(progress: Progress, every_s: Optional[float] = None,  # pylint: disable=invalid-name
                stream=None) -> Periodic:
  """Prints progress.line() every `every_s` seconds (TFCASCADE_PROGRESS_S,
  default 10) while a `with` block runs; a failed update is only logged."""
  stream = stream or sys.stderr

  def tick():
    try:
      progress.update()
      print(progress.line(), file=stream, flush=True)
    except Exception:  # pylint: disable=broad-except; progress must never fail a run
      _LOG.debug("progress update failed", exc_info=True)

  every_s = every_s or float(os.environ.get("TFCASCADE_PROGRESS_S", EVERY_S))
  return Periodic(every_s, tick, "tfcascade-progress")
