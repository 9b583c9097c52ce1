"""The Beam adapter: input files -> units of work -> a RunCounts per unit.

    ListInputFiles -> PlanUnits (byte ranges; units a dead run committed are
    skipped) -> SpreadUnits (Reshuffle) -> ScoreUnits (unit_runner.run_unit)

Each worker process holds ONE CascadeSession (one graph, one session, every
model) behind one `beam.utils.shared.Shared` handle, however many threads or
DoFn instances it runs (docs/design.md, fact 3). A unit's files and commit
are written by the worker; its RunCounts come out as data, so the runner's
commit of the bundle decides what this run publishes.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import pickle
import threading
import time
from typing import AbstractSet, Dict, Sequence

import apache_beam as beam
from apache_beam.utils import shared

from tfcascade.transforms.gpu_check import check_device
from tfcascade.transforms.metrics import ReadMetrics, ScoreMetrics
from tfcascade.transforms.publishing import run_registry
from tfcascade.transforms.publishing.unit_commits import unit_key
from tfcascade.transforms.reading.record_ranges import InputFile, ReadRange, plan_ranges
from tfcascade.transforms.scoring.chunk_scorer import ChunkScorer
from tfcascade.transforms.tf_import import import_tensorflow
from tfcascade.transforms.unit_runner import UnitSettings, run_unit

__all__ = ["ScoreUnits"]

_LOG = logging.getLogger("tfcascade")
_PROGRESS_EVERY_S = 10.0


class _SharedSession:
  """What a worker process shares between its threads and DoFn instances:
  the one CascadeSession, its load time, and the progress log. Thread-safe."""

  def __init__(self, session, load_ms: int):
    self.session = session
    self.load_ms = load_ms
    self._lock = threading.Lock()
    self._open_reported = False
    self._records = 0
    self._stage_rows: Dict[str, int] = {}
    self._start = self._last_log = time.monotonic()
    self._last_beat = float("-inf")

  def heartbeat_due(self) -> bool:
    """True at most once per run_registry.HEARTBEAT_S in this process."""
    with self._lock:
      now = time.monotonic()
      if now - self._last_beat < run_registry.HEARTBEAT_S:
        return False
      self._last_beat = now
      return True

  def report_open_once(self) -> bool:
    """True for exactly one caller: metrics only count inside a bundle, not
    in setup(), so the first bundle reports the session this process opened."""
    with self._lock:
      first, self._open_reported = not self._open_reported, True
      return first

  def progress(self, records: int, rows_run: Dict[str, int]) -> None:
    """Adds a batch; logs records done, rate and per-stage rows every 10 s."""
    with self._lock:
      self._records += records
      for stage, n in rows_run.items():
        self._stage_rows[stage] = self._stage_rows.get(stage, 0) + n
      now = time.monotonic()
      if now - self._last_log < _PROGRESS_EVERY_S:
        return
      self._last_log = now
      rate = self._records / max(now - self._start, 1e-9)
      stages = ", ".join(f"{s} ran {n:,}" for s, n in self._stage_rows.items())
      _LOG.info("tfcascade worker: %s records scored, %.0f records/s; %s",
                f"{self._records:,}", rate, stages)


class _PlanUnits(beam.DoFn):
  """An input file -> its units (ReadRanges), minus those already done."""

  def __init__(self, split_bytes: int, max_record_bytes: int, done: AbstractSet[str]):
    self._split_bytes = split_bytes
    self._max_record_bytes = max_record_bytes
    self._done = frozenset(done)

  def process(self, file: InputFile):
    for task in plan_ranges(file, self._split_bytes, self._max_record_bytes):
      if unit_key(task) not in self._done:
        yield task


class _ScoreUnitsDoFn(beam.DoFn):
  """Runs units (unit_runner.run_unit) with this process's one session."""

  def __init__(self, spec, shared_handle, output_format: str,
               passthrough: Sequence[str], reject_non_finite: bool,
               settings: UnitSettings):
    # Specs only: DoFns must pickle small. Initialized in setup().
    self._spec = spec
    self._shared = shared_handle
    self._output_format = output_format
    self._passthrough = tuple(passthrough)
    self._reject_non_finite = reject_non_finite
    self._settings = settings
    self._tag = hashlib.sha256(pickle.dumps(spec)).hexdigest()
    self._shared_session = None
    self._metrics = ScoreMetrics(s.name for s in spec.stages)
    self._read_metrics = ReadMetrics()

  def setup(self):
    import_tensorflow()  # first, so that Keras's optional extras stay out
    from tfcascade.transforms.engine import CascadeSession  # pylint: disable=g-import-not-at-top; TF on workers only

    def load():
      start = time.perf_counter()
      check_device(self._spec.session.device)  # gpu asked, none here: fail, not crawl
      session = CascadeSession(self._spec)
      return _SharedSession(session, int((time.perf_counter() - start) * 1000))

    self._shared_session = self._shared.acquire(load, tag=self._tag)
    self._scorer = ChunkScorer(self._shared_session.session, self._output_format,
                               self._passthrough, self._reject_non_finite)
    # One chunk deep pipelining: chunk k+1's session calls run here while
    # this thread encodes and writes chunk k.
    self._inferring = concurrent.futures.ThreadPoolExecutor(
        1, thread_name_prefix="tfcascade-infer")

  def start_bundle(self):
    if self._shared_session.report_open_once():
      self._metrics.sessions_opened.inc()
      self._metrics.load_ms.update(self._shared_session.load_ms)

  def process(self, task: ReadRange):
    counts = run_unit(self._scorer, task, self._settings, self._inferring, self._scored)
    self._read_metrics.records_read.inc(counts.records_read)
    self._read_metrics.files_quarantined.inc(sum(counts.quarantined.values()))
    yield counts

  def _scored(self, scored) -> None:
    """Metrics and the progress log (informative; the accounting is the
    RunCounts emitted as data)."""
    self._metrics.record(scored)
    self._shared_session.progress(scored.rows_scored, scored.rows_run)
    # Workers beat the run's marker too, so a job whose launcher does not
    # wait (a Dataflow template) is seen alive while it works.
    if self._shared_session.heartbeat_due():
      run_registry.heartbeat(self._settings.run)

  def teardown(self):
    # The session is shared by the process and closed when the Shared
    # handle's last reference goes; here we only drop ours.
    if getattr(self, "_inferring", None) is not None:
      self._inferring.shutdown(wait=True)
    self._shared_session = self._scorer = self._inferring = None


class ScoreUnits(beam.PTransform):
  """Input files -> one RunCounts per unit scored, written and committed.

  Args:
    files: every InputFile, matched and pinned on the launcher.
    spec: the engine's CascadeSpec (models pinned).
    output_format, passthrough, reject_non_finite: as in the config.
    settings: the run's UnitSettings.
    split_bytes: uncompressed files larger than this are split into ranges.
    done: keys of units a dead run committed and this run adopted.
  """

  def __init__(self, files: Sequence[InputFile], spec, output_format: str,
               passthrough: Sequence[str], reject_non_finite: bool,
               settings: UnitSettings, split_bytes: int,
               done: AbstractSet[str] = frozenset()):
    super().__init__()
    self._files = list(files)
    self._plan = _PlanUnits(split_bytes, settings.max_record_bytes, done)
    self._score = (spec, output_format, passthrough, reject_non_finite, settings)

  def expand(self, pbegin):
    spec, output_format, passthrough, reject_non_finite, settings = self._score
    return (pbegin
            | "ListInputFiles" >> beam.Create(self._files)
            | "PlanUnits" >> beam.ParDo(self._plan)
            # Spreads units over workers; without it they stay fused to the
            # single Create bundle.
            | "SpreadUnits" >> beam.Reshuffle()
            | "ScoreUnits" >> beam.ParDo(_ScoreUnitsDoFn(
                spec, shared.Shared(), output_format, passthrough,
                reject_non_finite, settings)))
