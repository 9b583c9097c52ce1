"""Writing blobs into sharded files, then counting what was actually written.

Elements are ready-to-append file bytes (a batch of framed TFRecords or JSON
lines), so the sink appends them as they are. Beam's FileBasedSink gives
temp-file writing and atomic rename to `prefix-SSSSS-of-NNNNN<suffix>`.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.io import filebasedsink
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

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

  def __init__(self, kind: str, count_key: str):
    self._kind = kind
    self._count_key = count_key
    self._counter = beam.metrics.Metrics.counter(NAMESPACE, count_key)

  def process(self, path: str):
    quarantined = 0
    if self._kind == "tfrecord":  # walks the framing; data is skipped
      records = framing.count_records(path, open_fn=open_raw)
    else:
      records = 0
      with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as f:
        for line in f:
          # Quarantine entries stand for damaged file tails, not records.
          if self._kind == "dead_letter" and b'"records_salvaged"' in line:
            quarantined += 1
          elif line.strip():
            records += 1
    self._counter.inc(records)
    yield (self._count_key, records)
    if quarantined:
      yield ("quarantine_entries", quarantined)


class CountWrittenRecords(beam.PTransform):
  """Final file names -> (count_key, records in file) pairs.

  Args:
    kind: "tfrecord" (framed records), "jsonl" (lines) or "dead_letter"
      (lines; quarantine entries reported as "quarantine_entries").
    count_key: the key the counts are reported under.
  """

  def __init__(self, kind: str, count_key: str):
    super().__init__()
    self._kind = kind
    self._count_key = count_key

  def expand(self, paths):
    return paths | "CountRecordsInFile" >> beam.ParDo(
        _CountRecords(self._kind, self._count_key))
