"""One unit of work, the same on every engine: a ReadRange read, scored,
written into its own staged files, and committed.

    read (scoring.unit_batches: in TF, or reading.record_ranges)
      -> score (scoring.chunk_scorer) -> write (writing.shard_writer)
      -> commit (publishing.unit_commits)

The Beam DoFn and the Spark task both call `run_unit` and differ only in how
they hold the session and report metrics. A unit's files are its own (unique
names), so a retried unit never appends to another attempt's file; its
RunCounts (with the histograms of its scored outputs) come back as data for
this run's accounting, and its commit lets the next run of the same output
reuse it if this run dies.

Memory: at most two chunks are in flight per unit (one being scored in the
helper thread, the one before it being encoded and written), each capped in
records and bytes by the reader; a Parquet output also holds the row group
being gathered (writing.parquet_writer.ROW_GROUP_BYTES at most).
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import Executor, wait
from typing import Callable, Dict, Optional

from tfcascade.transforms.accounting import RunCounts
from tfcascade.transforms.formats.dead_letters import entry_line
from tfcascade.transforms.publishing import output_layout as layout
from tfcascade.transforms.publishing import unit_commits
from tfcascade.transforms.publishing.run_registry import RunStaging
from tfcascade.transforms.reading.record_ranges import ReadRange
from tfcascade.transforms.scoring.chunk_scorer import ChunkScorer, ScoredChunk
from tfcascade.transforms.scoring.unit_batches import unit_batches
from tfcascade.transforms.writing.parquet_writer import PARQUET_SUFFIX, ParquetShardWriter
from tfcascade.transforms.writing.shard_writer import ShardWriter


@dataclasses.dataclass(frozen=True)
class UnitSettings:
  """How every unit of a run is read, written and committed (picklable)."""
  run: RunStaging
  run_key: str
  chunk_size: int  # records per chunk (batch_size)
  chunk_bytes: int  # bytes per chunk (batch_bytes)
  max_record_bytes: int
  on_corrupt: str
  predictions_suffix: str  # says the format: run_plan.predictions_suffix
  compression: str  # of the predictions: none | gzip, or the Parquet codec
  read_in_graph: bool = True  # input.read_in_graph: scoring.unit_batches


def _writers(settings: UnitSettings) -> Dict[str, ShardWriter]:
  directory = settings.run.files_dir
  if settings.predictions_suffix == PARQUET_SUFFIX:
    predictions = ParquetShardWriter(directory, layout.PREDICTIONS, settings.compression)
  else:
    predictions = ShardWriter(directory, layout.PREDICTIONS, settings.predictions_suffix,
                              settings.compression)
  return {layout.PREDICTIONS: predictions,
          layout.DEAD_LETTER: ShardWriter(directory, layout.DEAD_LETTER, ".jsonl"),
          layout.QUARANTINE: ShardWriter(directory, layout.QUARANTINE, ".jsonl")}


def _write_entry(writer: ShardWriter, entry: dict) -> None:
  records, line = entry_line(entry)
  writer.write(line, records)


def run_unit(scorer: ChunkScorer, task: ReadRange, settings: UnitSettings,
             inferring: Optional[Executor] = None,
             on_scored: Optional[Callable[[ScoredChunk], None]] = None) -> RunCounts:
  """Reads, scores, writes and commits one unit; returns its RunCounts.

  Args:
    scorer: the process's ChunkScorer (its one session).
    task: the unit's range.
    settings: the run's UnitSettings.
    inferring: a one-thread executor: the session calls of chunk k+1 run
      there (TF releases the GIL) while this thread encodes and writes chunk
      k. None: one chunk at a time.
    on_scored: called with each scored chunk (metrics, progress).

  Raises:
    CorruptInputError, InputChangedError, StageFailedError: the unit cannot
      be completed; nothing of it is committed.
  """
  writers = _writers(settings)
  counts = RunCounts()

  def finish(chunk, inferred):
    if inferred is None:  # the in-graph reader had no batch left
      return
    if not chunk.records:  # read inside TF: the reader's count comes with the batch
      counts.records_read += inferred.rows
      counts.records_read_in_graph += inferred.rows
    scored = scorer.finish(chunk, inferred)
    for _, result in inferred.parts:  # numpy per part, not per row
      counts.histograms.record(result.outputs)
    if on_scored is not None:
      on_scored(scored)
    for records, blob in scored.blobs:
      writers[layout.PREDICTIONS].write(blob, records)
    for entry in scored.dead_letters:
      _write_entry(writers[layout.DEAD_LETTER], entry)
    counts.add(scored.counts())

  batches = unit_batches(scorer, task, settings)
  pending = None
  try:
    for item in batches:
      if isinstance(item, dict):  # the damaged rest of the range
        counts.quarantined[item["source"]] += 1
        _write_entry(writers[layout.QUARANTINE], item)
        continue
      chunk, infer = item
      counts.records_read += len(chunk.records)  # the Python reader's count
      if inferring is None:
        finish(chunk, infer())
        continue
      future = inferring.submit(infer)
      if pending is not None:
        finish(pending[0], pending[1].result())
      pending = (chunk, future)
    if pending is not None:
      finish(pending[0], pending[1].result())
      pending = None
  finally:
    if pending is not None:  # a reader slot is free only once its call returned
      wait([pending[1]])
    batches.close()
  for writer in writers.values():
    written = writer.close()
    if written is not None:
      counts.files.append(written)
  unit_commits.commit(settings.run, settings.run_key, task, counts)
  return counts
