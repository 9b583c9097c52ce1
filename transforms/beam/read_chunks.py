"""Step 1 on Beam: input files -> RecordChunks, quarantine entries and counts.

The reading itself is engine-agnostic (reading.record_ranges); this adapter
plans byte ranges, spreads them over workers and counts what was read.
"""

from __future__ import annotations

from typing import Tuple

import apache_beam as beam

from tfcascade.transforms.accounting import RunCounts
from tfcascade.transforms.metrics import ReadMetrics
from tfcascade.transforms.reading.record_ranges import (ReadRange, RecordChunk,
                                                        plan_ranges, read_range)

__all__ = ["ReadRecordChunks", "QUARANTINE_TAG", "READ_COUNTS_TAG"]

QUARANTINE_TAG = "quarantine"
READ_COUNTS_TAG = "read_counts"


class _PlanRanges(beam.DoFn):
  """Splits a big uncompressed file into byte ranges (see plan_ranges)."""

  def __init__(self, split_bytes: int, max_record_bytes: int):
    self._split_bytes = split_bytes
    self._max_record_bytes = max_record_bytes

  def process(self, file: Tuple[str, str, int]):
    yield from plan_ranges(file, self._split_bytes, self._max_record_bytes)


class _ReadChunks(beam.DoFn):
  """Reads one ReadRange; yields RecordChunks, quarantine entries and the
  records_read count (tagged): records are counted where they are read."""

  def __init__(self, chunk_size: int, max_record_bytes: int, on_corrupt: str):
    self._chunk_size = chunk_size
    self._max_record_bytes = max_record_bytes
    self._on_corrupt = on_corrupt
    self._metrics = ReadMetrics()

  def process(self, task: ReadRange):
    counts = RunCounts()
    for item in read_range(task, self._chunk_size, self._max_record_bytes,
                           self._on_corrupt):
      if isinstance(item, RecordChunk):
        counts.records_read += len(item.records)
        self._metrics.records_read.inc(len(item.records))
        yield item
      else:
        counts.quarantined[item["source"]] += 1
        self._metrics.files_quarantined.inc()
        yield beam.pvalue.TaggedOutput(QUARANTINE_TAG, item)
    yield beam.pvalue.TaggedOutput(READ_COUNTS_TAG, counts)


class ReadRecordChunks(beam.PTransform):
  """Files -> RecordChunks (main), quarantine dead letters and RunCounts of
  what was read (tagged).

  Args:
    files: (path, compression "none"|"gzip", size in bytes) per input file,
      matched on the launcher so missing inputs fail before any worker starts.
  """

  def __init__(self, files, chunk_size: int, max_record_bytes: int,
               on_corrupt: str, split_bytes: int):
    super().__init__()
    self._files = list(files)
    self._chunk_size = chunk_size
    self._max_record_bytes = max_record_bytes
    self._on_corrupt = on_corrupt
    self._split_bytes = split_bytes

  def expand(self, pbegin):
    return (pbegin
            | "ListInputFiles" >> beam.Create(self._files)
            | "PlanReadRanges" >> beam.ParDo(
                _PlanRanges(self._split_bytes, self._max_record_bytes))
            # Spreads ranges over workers; without it they stay fused to the
            # single Create bundle.
            | "SpreadRanges" >> beam.Reshuffle()
            | "ReadChunks" >> beam.ParDo(_ReadChunks(
                self._chunk_size, self._max_record_bytes, self._on_corrupt)
            ).with_outputs(QUARANTINE_TAG, READ_COUNTS_TAG, main="chunks"))
