"""Scoring one chunk of records: the cascade, bad-record isolation, encoding.

Engine-agnostic (no Beam): the Beam DoFn and the Spark task both call
`ChunkScorer.score` and only differ in how they emit what it returns.

Failures are told apart, because they mean different things:
- a record that does not parse is a bad record: a failing batch is bisected
  with the parse-only callable (cheap) until the bad records are alone; they
  are dead-lettered with the parser's reason;
- a model that fails on a batch that parses: bisected with the cascade; a
  row that makes a stage fail on its own is dead-lettered with a reason
  naming the stage, but when the stage fails on EVERY row it runs on in the
  batch (at least two; for a gated stage, the rows its gate passes), the
  model is broken, not the data: StageFailedError fails the run instead of
  dead-lettering a billion records one bisection at a time.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import numpy as np
from google.protobuf.message import DecodeError

from tfcascade.transforms.accounting import RunCounts
from tfcascade.transforms.formats import dead_letters, example_codec
from tfcascade.transforms.reading.record_ranges import RecordChunk
from tfcascade.transforms.writing.encoders import ENCODERS

if TYPE_CHECKING:  # the engine imports TensorFlow
  from tfcascade.transforms.engine import CascadeResult

_REASON_CHARS = 500


class StageFailedError(RuntimeError):
  """A stage's model fails on every row it runs on in a batch that parses."""


@dataclasses.dataclass
class ScoredChunk:
  """What scoring one chunk produced.

  Attributes:
    blobs: (records encoded, ready-to-append file bytes) per good part.
    dead_letters: dead-letter entries (see formats.dead_letters).
    rows_in: stage -> rows that reached it.
    rows_run: stage -> rows its model ran on (the gate).
    failed_calls: session calls that failed while isolating bad records.
    batch_latencies_us: wall time of each successful cascade call.
  """
  blobs: List[Tuple[int, bytes]]
  dead_letters: List[dict]
  rows_in: Dict[str, int]
  rows_run: Dict[str, int]
  failed_calls: int = 0
  batch_latencies_us: List[int] = dataclasses.field(default_factory=list)

  @property
  def rows_scored(self) -> int:
    """Rows the cascade ran on (every stage's rows_in is that number)."""
    return next(iter(self.rows_in.values()), 0)

  def counts(self) -> RunCounts:
    """This chunk's part of the run's accounting: rows in and run per stage,
    dead letters per reason."""
    counts = RunCounts(rows_in=collections.Counter(self.rows_in),
                       rows_run=collections.Counter(self.rows_run))
    counts.dead_reasons.update(reason_class(d["error"]) for d in self.dead_letters)
    return counts


@dataclasses.dataclass
class Inferred:
  """A chunk's session results before encoding (ChunkScorer.infer)."""
  rows: int  # records the reader read for this batch
  records: List[bytes]  # the chunk's serialized records, by position (none read in TF)
  scored: ScoredChunk  # counts and timings so far; blobs come in finish
  parts: List[Tuple[np.ndarray, CascadeResult]]  # (positions, result) that scored
  dead: List[Tuple[int, str]]  # (position, reason)


def reason_class(reason: str) -> str:
  """A dead-letter reason shortened for counting reasons (top reasons)."""
  return reason[:120]


class ChunkScorer:
  """Scores RecordChunks with one CascadeSession (which may be shared)."""

  def __init__(self, session, output_format: str, passthrough: Sequence[str],
               reject_non_finite: bool):
    """Args:
      session: a tfcascade.transforms.engine.CascadeSession.
      output_format: "tfrecord" or "jsonl".
      passthrough: input features copied to the output unchanged.
      reject_non_finite: dead-letter rows whose float outputs hold NaN/Inf.
    """
    self._session = session
    self._encode = ENCODERS[output_format]
    spec = session.spec
    # Passthrough features the engine does not return parsed are copied from
    # the raw records.
    self._raw_passthrough = tuple(n for n in passthrough if n not in spec.passthrough)
    self._reject_non_finite = reject_non_finite
    self._stages = {s.name: s for s in spec.stages}
    import tensorflow as tf  # pylint: disable=g-import-not-at-top; workers have TF
    # TF reports an unparseable record as InvalidArgumentError or, when its
    # message quotes non-UTF-8 record bytes, as a UnicodeDecodeError.
    self.errors = (tf.errors.OpError, UnicodeDecodeError)
    self.end_of_input = tf.errors.OutOfRangeError
    self._feature_type = tf.train.Feature

  @property
  def session(self):
    return self._session

  @property
  def reads_in_graph(self) -> bool:
    """Whether batches may be read inside TF (scoring.unit_batches): not
    when passthrough features are copied from the record bytes."""
    return not self._raw_passthrough

  def score(self, chunk: RecordChunk) -> ScoredChunk:
    """Scores a chunk: encoded good rows, dead letters, per-stage counts.

    Raises:
      StageFailedError: a stage fails on every row it runs on in a batch
        whose records all parse.
    """
    return self.finish(chunk, self.infer(chunk))

  def infer(self, chunk: RecordChunk) -> Inferred:
    """The session calls of `score` (TF releases the GIL while they run, so a
    caller may run this in another thread while it finishes a previous chunk).

    Raises:
      StageFailedError: as in score.
    """
    records = [r for _, r in chunk.records]
    inferred = Inferred(len(records), records, self._unscored(), [], [])
    inferred.parts = list(self._run_isolating(
        records, np.arange(len(records)), inferred.dead, inferred.scored, chunk))
    return inferred

  def infer_in_graph(self, slot: int, budget: int):
    """Reads a reader slot's next batch and scores it in one session call
    (CascadeSession.read_and_run): (Inferred, ReadBatch). Nothing is
    isolated here: a failing batch is read again on the Python path."""
    start = time.perf_counter()
    result, read = self._session.read_and_run(slot, budget)
    scored = self._unscored()
    scored.batch_latencies_us.append(int((time.perf_counter() - start) * 1e6))
    # rows as the outputs hold them, apart from the reader's count (read.rows)
    rows = len(next(iter(result.outputs.values())))
    return Inferred(read.rows, [], scored, [(np.arange(rows), result)], []), read

  def _unscored(self) -> ScoredChunk:
    return ScoredChunk([], [], {s: 0 for s in self._stages}, {s: 0 for s in self._stages})

  def all_finite(self, inferred: Inferred) -> bool:
    """False when reject_non_finite would dead-letter a row of `inferred`."""
    if not self._reject_non_finite:
      return True
    return all(np.isfinite(v).all() for _, result in inferred.parts
               for v in result.outputs.values() if v.dtype.kind == "f")

  def finish(self, chunk: RecordChunk, inferred: Inferred) -> ScoredChunk:
    """The Python part of `score`: checks, passthrough copies, encoding."""
    records, out, dead = inferred.records, inferred.scored, inferred.dead
    for positions, result in inferred.parts:
      self._emit(records, positions, result, dead, out)
    out.dead_letters = [
        dead_letters.record_entry(chunk.source, chunk.records[p][0], reason, records[p])
        for p, reason in dead]
    return out

  # --- running, and telling bad records from broken models -----------------

  def _run_isolating(self, records, positions, dead, out, chunk):
    """Yields (positions, result) for the parts that score; appends
    (position, reason) to `dead` for records that fail on their own."""
    result, error = self._try_run(records, positions, out)
    if error is None:
      yield positions, result
      return
    unparsed = self._unparseable(records, positions, out)
    if unparsed:
      dead.extend(unparsed)
      bad = {p for p, _ in unparsed}
      rest = np.array([p for p in positions if p not in bad], dtype=positions.dtype)
      if len(rest):
        yield from self._run_isolating(records, rest, dead, out, chunk)
      return
    failures: List[Tuple[int, Exception]] = []
    parts = list(self._bisect(records, positions, failures, out, error))
    # Judged per stage: rows failing one stage say nothing about another.
    by_stage: Dict[Optional[str], list] = {}
    for _, e in failures:
      by_stage.setdefault(self._session.stage_of(e), []).append(e)
    for stage, errors in by_stage.items():
      if len(errors) > 1 and not self._stage_ran(stage, parts):
        raise self._stage_failed(errors[0], chunk, positions, len(errors))
    dead.extend((p, self._model_reason(e)) for p, e in failures)
    yield from parts

  def _try_run(self, records, positions, out):
    """(result, None) when the cascade scores `positions`, else (None, the
    error), counted as a failed call."""
    start = time.perf_counter()
    try:
      result = self._session.run([records[p] for p in positions])
    except self.errors as e:
      out.failed_calls += 1
      return None, e
    out.batch_latencies_us.append(int((time.perf_counter() - start) * 1e6))
    return result, None

  def _unparseable(self, records, positions, out) -> List[Tuple[int, str]]:
    """Records of `positions` that do not parse on their own, with reasons
    (bisecting with the parse-only callable)."""
    try:
      self._session.parse([records[p] for p in positions])
      return []
    except self.errors as e:
      out.failed_calls += 1
      if len(positions) == 1:
        return [(int(positions[0]), _parse_reason(e))]
    middle = len(positions) // 2
    return (self._unparseable(records, positions[:middle], out)
            + self._unparseable(records, positions[middle:], out))

  def _bisect(self, records, positions, failures, out, error=None):
    """Runs the cascade on halves of records that all parse; yields the parts
    that score, collects (position, error) of rows that fail alone.
    `error`: the error these positions already failed with (not run again)."""
    if error is None:
      result, error = self._try_run(records, positions, out)
      if error is None:
        yield positions, result
        return
    if len(positions) == 1:
      failures.append((int(positions[0]), error))
      return
    middle = len(positions) // 2
    yield from self._bisect(records, positions[:middle], failures, out)
    yield from self._bisect(records, positions[middle:], failures, out)

  @staticmethod
  def _stage_ran(stage: Optional[str], parts) -> bool:
    """Whether the failing stage (None: unknown) ran on any row of the
    batch's good parts (for a gated stage, rows its gate did not pass prove
    nothing)."""
    if stage is None:
      return bool(parts)
    return any(result.rows_run.get(stage, 0) > 0 for _, result in parts)

  def _stage_name(self, error) -> str:
    stage = self._session.stage_of(error)
    return f"stage '{stage}'" if stage else "a stage"

  def _model_reason(self, error) -> str:
    return (f"{self._stage_name(error)} fails on this record: "
            f"{_first_line(error)[:_REASON_CHARS]}")

  def _stage_failed(self, error, chunk, positions, failed) -> StageFailedError:
    stage = self._session.stage_of(error)
    model = ""
    if stage:
      spec = self._stages[stage]
      model = (f" (model {spec.source.source_type}: {spec.source.ref}"
               + (f", checkpoint {spec.checkpoint}" if spec.checkpoint else "") + ")")
    first, last = chunk.records[positions[0]][0], chunk.records[positions[-1]][0]
    return StageFailedError(
        f"{self._stage_name(error)}{model} fails on every row it runs on in a "
        f"batch of {len(positions)} records that parse ({failed} rows failed; "
        f"{chunk.source}, records {first}..{last}); the model is broken, not the "
        f"data: {_first_line(error)[:_REASON_CHARS]}")

  # --- turning a scored part into output -------------------------------------

  def _emit(self, records, positions, result, dead, out) -> None:
    outputs = result.outputs
    for stage, n in result.rows_run.items():
      out.rows_in[stage] += len(positions)
      out.rows_run[stage] += n
    keep = (self._finite_rows(outputs, positions, dead) if self._reject_non_finite
            else np.ones(len(positions), dtype=bool))
    raw = self._copy_raw_passthrough(records, positions, keep, dead)
    if keep.any():
      columns = {k: v[keep] for k, v in {**result.passthrough, **outputs}.items()}
      kept = int(keep.sum())
      out.blobs.append(self._encode(columns, kept, raw))

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
        for name, value in found.items():
          self._check_feature(name, value)
      except ValueError as e:
        keep[i] = False
        dead.append((int(positions[i]), f"passthrough features cannot be copied: {e}"))
        continue
      for name in self._raw_passthrough:
        raw[name].append(found.get(name))
    return raw

  def _check_feature(self, name: str, value: bytes) -> None:
    """ValueError unless `value` is a whole Feature message. raw_feature_bytes
    checks the record's map entries; TF never parsed this feature, so a
    damaged length inside it would be copied into an unreadable output."""
    try:
      self._feature_type.FromString(value)
    except DecodeError as e:
      raise ValueError(f"feature {name!r} is not a valid tf.train.Feature "
                       f"({e})") from None

  @staticmethod
  def _finite_rows(outputs, positions, dead) -> np.ndarray:
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


def _first_line(error) -> str:
  text = getattr(error, "message", None) or str(error)
  lines = text.strip().splitlines()
  return lines[0] if lines else type(error).__name__


def _parse_reason(error) -> str:
  """The first line of a parse error, which names the feature at fault."""
  if isinstance(error, UnicodeDecodeError):
    return "record does not parse: not a serialized tf.train.Example"
  return f"record does not parse: {_first_line(error)[:_REASON_CHARS]}"
