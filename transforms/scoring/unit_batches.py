"""The batches of one unit: read inside TensorFlow where it can, else in Python.

The happy path keeps the records inside TF (engine.in_graph_reader): TF's C++
reader frames, CRC-checks and inflates them and the same session call parses
and scores the batch, so no record becomes Python bytes (docs/design.md,
fact 13). Everything that needs a record's bytes stays on the Python path
(reading.record_ranges + ChunkScorer.infer), which is also the only path that
tells damaged framing, a record that does not parse and a failing model apart:

- the unit's first chunk is always read in Python: a unit smaller than one
  chunk never starts a reader, and a first chunk cut by `batch_bytes` (wide
  records) keeps the unit in Python, where the byte cap bounds every chunk;
- a batch that fails in TF for any reason (a damaged record, one that does
  not parse, a stage failing), has a record over `max_record_bytes` or a
  non-finite output under reject_non_finite, is read again in Python from
  its first record, together with the rest of the unit: provenance, dead
  letters and quarantine entries are then exactly those of the Python path;
- a batch wider than `batch_bytes` (the records grew wider inside the file)
  is kept and the rest of the unit goes to Python.

Inputs with raw passthrough features (copied from the record bytes), files
not on the local file system, runs with `input.read_in_graph: false` and
a session whose reader slots are all busy use the Python path throughout.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional, Tuple, Union

import numpy as np

from tfcascade.transforms.reading.record_ranges import (ReadRange, RecordChunk, check_pin,
                                                        read_records)
from tfcascade.transforms.scoring.chunk_scorer import ChunkScorer, Inferred

# framing bytes per record: length, its CRC, the data's CRC
_FRAME_BYTES = 16

# A batch to score: the chunk `finish` is given, and the call that infers it
# (in the runner's helper thread); the call returns None for no batch.
Batch = Tuple[RecordChunk, Callable[[], Optional[Inferred]]]


def unit_batches(scorer: ChunkScorer, task: ReadRange, settings
                 ) -> Iterator[Union[Batch, dict]]:
  """Batches of one unit, in record order, and quarantine entries (dicts) for
  damaged framing; the file's pin is checked before and after.

  Args:
    scorer: the process's ChunkScorer.
    task: the unit's range.
    settings: the run's unit_runner.UnitSettings.

  Raises:
    as reading.record_ranges.read_range.
  """
  check_pin(task, "after the launcher planned the run")
  python = _python(scorer, task, settings)
  first = next(python, None)
  if first is not None:
    yield first
    start = _in_graph_start(scorer, task, settings, first)
    slot = None if start is None else _open_slot(scorer, task, settings, *start)
    if slot is not None:
      python.close()
      resume = yield from _in_graph(scorer, task, settings, slot, *start)
      python = iter(()) if resume is None else _python(scorer, task, settings, *resume)
    yield from python
  check_pin(task, "while it was being read")


def _python(scorer, task, settings, *from_record):
  """The Python path from record (index, byte offset) or the range's start."""
  for item in read_records(task, settings.chunk_size, settings.max_record_bytes,
                           settings.on_corrupt, settings.chunk_bytes,
                           from_record or None):
    if isinstance(item, RecordChunk):
      yield item, lambda chunk=item: scorer.infer(chunk)
    else:
      yield item


def _in_graph_start(scorer, task, settings, first) -> Optional[Tuple[int, int]]:
  """(next record index, its byte offset) where the in-graph reader takes
  over after the unit's first Python chunk, or None to stay in Python."""
  if not (settings.read_in_graph and scorer.reads_in_graph and "://" not in task.path
          and not isinstance(first, dict)):
    return None
  chunk = first[0]
  if len(chunk.records) < settings.chunk_size:  # the unit's end, or cut by bytes
    return None
  index = chunk.records[-1][0] + 1
  return index, task.start_offset + sum(len(r) + _FRAME_BYTES for _, r in chunk.records)


def _open_slot(scorer, task, settings, index, offset) -> Optional[int]:
  """A reader slot started at record `index` (byte `offset`), or None: every
  slot is busy, or TF cannot start (the Python path will say why)."""
  gzip = task.compression != "none"
  try:
    return scorer.session.open_reader(
        task.path, task.compression, 0 if gzip else offset,
        index - task.start_index if gzip else 0, settings.chunk_size)
  except scorer.errors:
    return None


def _in_graph(scorer, task, settings, slot, index, offset):
  """Yields the in-graph batches of the range from record `index`; returns
  (index, offset) where the Python path takes over, or None: range read."""
  reading = _InGraphRange(scorer, task, settings, slot, index, offset)
  try:
    while reading.open:
      yield RecordChunk(task.path, []), reading.next
  finally:
    reading.close()
  return reading.resume


class _InGraphRange:
  """One reader slot reading one range; `next` runs in the helper thread."""

  def __init__(self, scorer, task, settings, slot, index, offset):
    self._scorer, self._settings, self._slot = scorer, settings, slot
    self.index, self.offset = index, offset
    self._budget = (np.iinfo(np.int64).max if task.end_offset is None
                    else task.end_offset - offset)
    self.open = True
    self.resume: Optional[Tuple[int, int]] = None

  def next(self) -> Optional[Inferred]:
    """The next batch scored, or None once the range ended or the Python
    path must take over (`resume` then says where)."""
    if not self.open:
      return None
    scorer = self._scorer
    try:
      inferred, read = scorer.infer_in_graph(self._slot, self._budget)
    except scorer.end_of_input:
      return self._stop(None)
    except scorer.errors:  # reread in Python: it tells what failed, and how
      return self._stop((self.index, self.offset))
    if read.rows == 0:
      return self._stop(None)
    if (read.largest > self._settings.max_record_bytes
        or not scorer.all_finite(inferred)):
      return self._stop((self.index, self.offset))
    self.index += read.rows
    self.offset += read.consumed
    self._budget -= read.consumed
    if read.rows < read.returned:  # the range ends inside this batch
      self._stop(None)
    elif (self._settings.chunk_bytes is not None
          and read.consumed - _FRAME_BYTES * read.rows > self._settings.chunk_bytes):
      self._stop((self.index, self.offset))
    return inferred

  def _stop(self, resume):
    self.resume = resume
    self.open = False
    return None

  def close(self) -> None:
    self._scorer.session.close_reader(self._slot)
