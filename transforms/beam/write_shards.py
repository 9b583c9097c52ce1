"""Step 3 on Beam: (records, blob) pairs into staged files, counted as they
are written.

Elements are ready-to-append file bytes (a batch of framed TFRecords or JSON
lines) with the number of records they hold. Each bundle attempt writes its
own uniquely named file (writing.shard_writer) and emits a RunCounts naming
it; the runner keeps committed bundles' outputs only, so
`publishing.finalize` publishes exactly the committed files, and a retried
bundle can neither drop nor duplicate records.
"""

from __future__ import annotations

import random
from typing import Tuple

import apache_beam as beam
from apache_beam.transforms import window

from tfcascade.transforms.accounting import RunCounts
from tfcascade.transforms.metrics import WriteMetrics
from tfcascade.transforms.writing.shard_writer import ShardWriter

__all__ = ["WriteShards"]


class _WriteBundleFile(beam.DoFn):
  """Writes each bundle's elements into one new staged file."""

  def __init__(self, directory: str, kind: str, suffix: str, compression: str):
    self._args = (directory, kind, suffix, compression)
    self._metrics = WriteMetrics(kind)
    self._writer = None

  def start_bundle(self):
    self._writer = ShardWriter(*self._args)

  def process(self, element: Tuple[int, bytes]):
    records, blob = element
    self._writer.write(blob, records)

  def finish_bundle(self):
    written = self._writer.close()
    self._writer = None
    if written is not None:
      self._metrics.records_written.inc(written.records)
      yield window.GlobalWindows.windowed_value(RunCounts(files=[written]))


class _WriteGroupFile(beam.DoFn):
  """Writes one shard's group of elements into one new staged file."""

  def __init__(self, directory: str, kind: str, suffix: str, compression: str):
    self._args = (directory, kind, suffix, compression)
    self._metrics = WriteMetrics(kind)

  def process(self, keyed):
    _, elements = keyed
    writer = ShardWriter(*self._args)
    for records, blob in elements:
      writer.write(blob, records)
    written = writer.close()
    if written is not None:
      self._metrics.records_written.inc(written.records)
      yield RunCounts(files=[written])


class WriteShards(beam.PTransform):
  """(records, blob) pairs -> staged files; outputs a RunCounts per file.

  Args:
    directory: the run's staging directory for files.
    kind: "predictions", "dead_letter" or "quarantine" (the final file names).
    suffix: file name suffix (".tfrecord", ".jsonl", + ".gz").
    num_shards: 0: one file per bundle (the runner decides); N: exactly N
      groups, one file each (fewer when there are fewer elements).
    compression: "none" or "gzip".
  """

  def __init__(self, directory: str, kind: str, suffix: str, num_shards: int = 0,
               compression: str = "none"):
    super().__init__()
    self._args = (directory, kind, suffix, compression)
    self._num_shards = num_shards

  def expand(self, blobs):
    if not self._num_shards:
      return blobs | "WriteBundleFiles" >> beam.ParDo(_WriteBundleFile(*self._args))
    n = self._num_shards
    return (blobs
            | "AssignShard" >> beam.Map(lambda b: (random.randrange(n), b))
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShardFiles" >> beam.ParDo(_WriteGroupFile(*self._args)))
