"""Step 2 on Beam: RunCascade, RecordChunks -> encoded output blobs, dead
letters and counts.

Each worker process holds ONE CascadeSession (one graph, one session, every
model) behind one `beam.utils.shared.Shared` handle, however many threads or
DoFn instances it runs (docs/design.md, fact 3).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import pickle
import threading
import time
from typing import Dict, Optional, Sequence

import apache_beam as beam
from apache_beam.transforms import window
from apache_beam.utils import shared

from tfcascade.transforms.gpu_check import check_device
from tfcascade.transforms.metrics import ScoreMetrics
from tfcascade.transforms.publishing import run_registry
from tfcascade.transforms.publishing.run_registry import RunStaging
from tfcascade.transforms.reading.record_ranges import RecordChunk
from tfcascade.transforms.scoring.chunk_scorer import ChunkScorer

__all__ = ["RunCascade", "DEAD_LETTER_TAG", "COUNTS_TAG"]

DEAD_LETTER_TAG = "dead_letter"
COUNTS_TAG = "counts"
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


class _CascadeDoFn(beam.DoFn):
  """Scores RecordChunks (scoring.chunk_scorer) and emits what came out.

  One chunk deep pipelining: the session calls of chunk k+1 run in a helper
  thread (TF releases the GIL) while this thread encodes chunk k and the
  reader fused before us reads the next chunk. Outputs of the last chunk of a
  bundle come out in finish_bundle.
  """

  def __init__(self, spec, shared_handle, output_format: str,
               passthrough: Sequence[str], reject_non_finite: bool,
               run: Optional[RunStaging] = None):
    # Specs only: DoFns must pickle small. Initialized in setup().
    self._spec = spec
    self._shared = shared_handle
    self._output_format = output_format
    self._passthrough = tuple(passthrough)
    self._reject_non_finite = reject_non_finite
    self._run = run
    self._tag = hashlib.sha256(pickle.dumps(spec)).hexdigest()
    self._shared_session = None
    self._metrics = ScoreMetrics(s.name for s in spec.stages)

  def setup(self):
    from tfcascade.transforms.engine import CascadeSession  # pylint: disable=g-import-not-at-top; TF on workers only

    def load():
      start = time.perf_counter()
      check_device(self._spec.session.device)  # gpu asked, none here: fail, not crawl
      session = CascadeSession(self._spec)
      return _SharedSession(session, int((time.perf_counter() - start) * 1000))

    self._shared_session = self._shared.acquire(load, tag=self._tag)
    self._scorer = ChunkScorer(self._shared_session.session, self._output_format,
                               self._passthrough, self._reject_non_finite)
    self._inferring = concurrent.futures.ThreadPoolExecutor(
        1, thread_name_prefix="tfcascade-infer")
    self._pending = None

  def start_bundle(self):
    self._pending = None
    if self._shared_session.report_open_once():
      self._metrics.sessions_opened.inc()
      self._metrics.load_ms.update(self._shared_session.load_ms)
    if self._run is not None and self._shared_session.heartbeat_due():
      run_registry.heartbeat(self._run)

  def process(self, chunk: RecordChunk):
    inferring = self._inferring.submit(self._scorer.infer, chunk)
    if self._pending is not None:
      yield from self._finish(*self._pending)
    self._pending = (chunk, inferring)

  def finish_bundle(self):
    if self._pending is not None:
      pending, self._pending = self._pending, None
      for output in self._finish(*pending):
        if isinstance(output, beam.pvalue.TaggedOutput):
          yield beam.pvalue.TaggedOutput(
              output.tag, window.GlobalWindows.windowed_value(output.value))
        else:
          yield window.GlobalWindows.windowed_value(output)

  def _finish(self, chunk, inferring):
    """Encodes a chunk whose session calls are done (or waits for them)."""
    scored = self._scorer.finish(chunk, inferring.result())
    self._metrics.record(scored)  # informative; the accounting is the counts below
    self._shared_session.progress(scored.rows_scored, scored.rows_run)
    yield beam.pvalue.TaggedOutput(COUNTS_TAG, scored.counts())
    yield from scored.blobs
    for entry in scored.dead_letters:
      yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, entry)

  def teardown(self):
    # The session is shared by the process and closed when the Shared
    # handle's last reference goes; here we only drop ours.
    if getattr(self, "_inferring", None) is not None:
      self._inferring.shutdown(wait=True)
    self._shared_session = self._scorer = self._inferring = None


def process_bundle(dofn: _CascadeDoFn, chunks) -> list:
  """Runs a set-up cascade DoFn over `chunks` as one bundle, outside a
  pipeline (tests, benchmarks): every output, unwrapped from its window."""
  dofn.start_bundle()
  outputs = [o for chunk in chunks for o in dofn.process(chunk)]
  for output in dofn.finish_bundle() or ():
    if isinstance(output, beam.pvalue.TaggedOutput):
      outputs.append(beam.pvalue.TaggedOutput(output.tag, output.value.value))
    else:
      outputs.append(output.value)
  return outputs


class RunCascade(beam.PTransform):
  """RecordChunks -> (records, blob) pairs (main), dead letters and a
  RunCounts per chunk (tagged).

  Args:
    spec: the engine's CascadeSpec.
    output_format: "tfrecord" or "jsonl".
    passthrough: input features copied to the output unchanged.
    reject_non_finite: dead-letter rows whose outputs hold NaN/Inf.
    run: the run's staging; workers beat its marker while they score, so a
      job whose launcher does not wait (a Dataflow template) is seen alive by
      other launches, and dead soon after it stops (publishing.run_registry).
  """

  def __init__(self, spec, output_format: str = "tfrecord",
               passthrough: Sequence[str] = (), reject_non_finite: bool = True,
               run: Optional[RunStaging] = None):
    super().__init__()
    self._args = (spec, output_format, passthrough, reject_non_finite, run)

  def expand(self, chunks):
    spec, output_format, passthrough, reject_non_finite, run = self._args
    return chunks | "ScoreChunks" >> beam.ParDo(_CascadeDoFn(
        spec, shared.Shared(), output_format, passthrough, reject_non_finite,
        run)).with_outputs(DEAD_LETTER_TAG, COUNTS_TAG, main="blobs")
