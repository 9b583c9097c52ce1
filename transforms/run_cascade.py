"""RunCascade: RecordChunks -> encoded output blobs, dead letters and counts.

Each worker process holds ONE CascadeSession (one graph, one session, every
model) behind one `beam.utils.shared.Shared` handle, however many threads or
DoFn instances it runs (docs/design.md, fact 3).
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import threading
import time
from typing import Dict, List, Sequence, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.utils import shared

from transforms import dead_letters, example_codec
from transforms.encode import ENCODERS
from transforms.read import NAMESPACE, RecordChunk

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
  """Scores RecordChunks; isolates bad records into dead letters."""

  def __init__(self, spec, shared_handle, output_format: str,
               passthrough: Sequence[str], reject_non_finite: bool):
    # Specs only: DoFns must pickle small. Initialized in setup().
    self._spec = spec
    self._shared = shared_handle
    self._encode = ENCODERS[output_format]
    # Passthrough features the engine does not return parsed are copied from
    # the raw records.
    self._raw_passthrough = tuple(n for n in passthrough if n not in spec.passthrough)
    self._reject_non_finite = reject_non_finite
    self._tag = hashlib.sha256(pickle.dumps(spec)).hexdigest()
    self._shared_session = None
    m = beam.metrics.Metrics
    self._sessions_opened = m.counter(NAMESPACE, "sessions_opened")
    self._load_ms = m.distribution(NAMESPACE, "load_model_latency_milli_secs")
    self._batch_latency = m.distribution(NAMESPACE, "inference_batch_latency_micro_secs")
    self._batch_size = m.distribution(NAMESPACE, "inference_request_batch_size")
    self._inferences = m.counter(NAMESPACE, "num_inferences")
    self._dead = m.counter(NAMESPACE, "records_dead_lettered")
    self._failed_batches = m.counter(NAMESPACE, "failed_batches_counter")
    self._stage_counters = {
        s.name: (m.counter(NAMESPACE, f"{s.name}_rows_in"),
                 m.counter(NAMESPACE, f"{s.name}_rows_run")) for s in spec.stages}

  def setup(self):
    from transforms.engine import CascadeSession  # pylint: disable=g-import-not-at-top

    def load():
      start = time.perf_counter()
      session = CascadeSession(self._spec)
      return _SharedSession(session, int((time.perf_counter() - start) * 1000))

    self._shared_session = self._shared.acquire(load, tag=self._tag)

  def start_bundle(self):
    if self._shared_session.report_open_once():
      self._sessions_opened.inc()
      self._load_ms.update(self._shared_session.load_ms)

  def process(self, chunk: RecordChunk):
    indices = [i for i, _ in chunk.records]
    records = [r for _, r in chunk.records]
    yield beam.pvalue.TaggedOutput(COUNTS_TAG, ("records_read", len(records)))
    dead: List[Tuple[int, str]] = []
    for positions, outputs, parsed, rows_run in self._run_isolating(
        records, np.arange(len(records)), dead):
      for stage, n in rows_run.items():
        yield beam.pvalue.TaggedOutput(COUNTS_TAG, (f"rows_in/{stage}", len(positions)))
        yield beam.pvalue.TaggedOutput(COUNTS_TAG, (f"rows_run/{stage}", n))
      keep = (self._finite_rows(outputs, positions, dead) if self._reject_non_finite
              else np.ones(len(positions), dtype=bool))
      raw = self._copy_raw_passthrough(records, positions, keep, dead)
      if keep.any():
        columns = {k: v[keep] for k, v in {**parsed, **outputs}.items()}
        yield self._encode(columns, int(keep.sum()), raw)
    for position, reason in dead:
      self._dead.inc()
      yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, dead_letters.record_entry(
          chunk.source, indices[position], reason, records[position]))

  def _run_isolating(self, records, positions, dead):
    """Runs a batch; on a parse error, bisects until bad records are alone.

    Yields (positions, stage outputs, parsed passthrough features, rows run
    per stage) for the good parts; appends
    (position, reason) to `dead` for each record that fails on its own.
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    try:
      start = time.perf_counter()
      result = self._shared_session.session.run([records[p] for p in positions])
      self._batch_latency.update(int((time.perf_counter() - start) * 1e6))
    # TF reports an unparseable record either as InvalidArgumentError or, when
    # its message quotes non-UTF-8 record bytes, as a UnicodeDecodeError.
    except (tf.errors.InvalidArgumentError, UnicodeDecodeError) as e:
      self._failed_batches.inc()
      if len(positions) == 1:
        dead.append((int(positions[0]), _reason(e)))
        return
      middle = len(positions) // 2
      yield from self._run_isolating(records, positions[:middle], dead)
      yield from self._run_isolating(records, positions[middle:], dead)
      return
    self._batch_size.update(len(positions))
    self._inferences.inc(len(positions))
    rows_run, outputs, parsed = {}, {}, {}
    for key, value in result.items():
      if key.endswith("/rows_run"):
        rows_run[key[:-len("/rows_run")]] = int(value)
      elif key.startswith("passthrough/"):
        parsed[key[len("passthrough/"):]] = value
      else:
        outputs[key] = value
    for stage, (rows_in, ran) in self._stage_counters.items():
      rows_in.inc(len(positions))
      ran.inc(rows_run[stage])
    self._shared_session.progress(len(positions), rows_run)
    yield positions, outputs, parsed, rows_run

  def _copy_raw_passthrough(self, records, positions, keep, dead):
    """Serialized passthrough Features of the kept rows, copied byte for byte.

    A record TF's parser accepted can still hold a malformed field elsewhere;
    such a row becomes a dead letter (its `keep` entry is cleared in place).
    """
    if not self._raw_passthrough:
      return None
    raw = {name: [] for name in self._raw_passthrough}
    for i in np.flatnonzero(keep):
      try:
        found = example_codec.raw_feature_bytes(records[positions[i]],
                                                self._raw_passthrough)
      except ValueError as e:
        keep[i] = False
        dead.append((int(positions[i]), f"passthrough features cannot be copied: {e}"))
        continue
      for name in self._raw_passthrough:
        raw[name].append(found.get(name))
    return raw

  def _finite_rows(self, outputs, positions, dead) -> np.ndarray:
    """A keep-mask; rows with NaN/Inf in any float output become dead letters."""
    bad = np.zeros(len(positions), dtype=bool)
    for name, value in outputs.items():
      if value.dtype.kind != "f":
        continue
      row_bad = ~np.isfinite(value.reshape(len(positions), -1)).all(axis=1)
      for i in np.flatnonzero(row_bad & ~bad):
        dead.append((int(positions[i]), f"non-finite model output {name} (NaN or Inf)"))
      bad |= row_bad
    return ~bad

  def teardown(self):
    # The session is shared by the process and closed when the Shared
    # handle's last reference goes; here we only drop ours.
    self._shared_session = None


def _reason(error) -> str:
  """The first line of a parse error, which names the feature at fault."""
  if isinstance(error, UnicodeDecodeError):
    return "record does not parse: not a serialized tf.train.Example"
  text = getattr(error, "message", str(error)).strip().splitlines()[0]
  return f"record does not parse: {text[:500]}"


class RunCascade(beam.PTransform):
  """RecordChunks -> output blobs (main), dead letters and counts (tagged).

  Args:
    spec: the engine's CascadeSpec.
    output_format: "tfrecord" or "jsonl".
    passthrough: input features copied to the output unchanged.
    reject_non_finite: dead-letter rows whose outputs hold NaN/Inf.
  """

  def __init__(self, spec, output_format: str = "tfrecord",
               passthrough: Sequence[str] = (), reject_non_finite: bool = True):
    super().__init__()
    self._spec = spec
    self._output_format = output_format
    self._passthrough = passthrough
    self._reject_non_finite = reject_non_finite

  def expand(self, chunks):
    return chunks | "ScoreChunks" >> beam.ParDo(_CascadeDoFn(
        self._spec, shared.Shared(), self._output_format, self._passthrough,
        self._reject_non_finite)).with_outputs(DEAD_LETTER_TAG, COUNTS_TAG,
                                               main="blobs")
