"""Writing blobs into sharded files, then counting what was actually written.

Elements are ready-to-append file bytes (a batch of framed TFRecords or JSON
lines), so the sink appends them as they are. Beam's FileBasedSink gives
temp-file writing and atomic rename to `prefix-SSSSS-of-NNNNN<suffix>`.
"""

from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.io import filebasedsink
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms import dead_letters
from transforms import tfrecord_framing as framing
from transforms.read import NAMESPACE, open_raw

__all__ = ["WriteBlobs", "CountWrittenRecords"]


class _BlobSink(filebasedsink.FileBasedSink):
  """A FileBasedSink whose elements are already-encoded file bytes."""

  def __init__(self, file_path_prefix, file_name_suffix, num_shards, compression):
    super().__init__(
        file_path_prefix, coder=beam.coders.BytesCoder(),
        file_name_suffix=file_name_suffix, num_shards=num_shards,
        shard_name_template="-SSSSS-of-NNNNN",
        mime_type="application/octet-stream",
        compression_type=(CompressionTypes.GZIP if compression == "gzip"
                          else CompressionTypes.UNCOMPRESSED))

  def write_encoded_record(self, file_handle, encoded_record):
    file_handle.write(encoded_record)


class WriteBlobs(beam.PTransform):
  """Blobs -> sharded files; outputs the final file names."""

  def __init__(self, file_path_prefix: str, file_name_suffix: str,
               num_shards: int = 0, compression: str = "none"):
    super().__init__()
    self._sink = _BlobSink(file_path_prefix, file_name_suffix, num_shards, compression)

  def expand(self, blobs):
    return blobs | "WriteShards" >> beam.io.Write(self._sink)


class _CountRecords(beam.DoFn):
  """Counts the records in a written file by reading it back."""

  def __init__(self, file_format: str, count_key: str):
    self._file_format = file_format
    self._count_key = count_key
    self._counter = beam.metrics.Metrics.counter(NAMESPACE, count_key)

  def process(self, path: str):
    if self._file_format == "tfrecord":  # walks the framing; data is skipped
      records = framing.count_records(path, open_fn=open_raw)
    else:
      records = _count_lines(path, self._file_format == "dead_letter")
    self._counter.inc(records)
    yield (self._count_key, records)


def _count_lines(path: str, dead_letter: bool) -> int:
  """Non-blank lines; in a dead-letter file, record entries only (quarantine
  entries stand for damaged file tails, not records)."""
  records = 0
  with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as f:
    for line in f:
      if not line.strip():
        continue
      if dead_letter and dead_letters.is_quarantine(json.loads(line)):
        continue
      records += 1
  return records


class CountWrittenRecords(beam.PTransform):
  """Final file names -> (count_key, records in file) pairs.

  Args:
    file_format: "tfrecord" (framed records), "jsonl" (lines) or
      "dead_letter" (lines; quarantine entries are not records).
    count_key: the key the counts are reported under.
  """

  def __init__(self, file_format: str, count_key: str):
    super().__init__()
    self._file_format = file_format
    self._count_key = count_key

  def expand(self, paths):
    return paths | "CountRecordsInFile" >> beam.ParDo(
        _CountRecords(self._file_format, self._count_key))
