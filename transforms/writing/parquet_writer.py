"""Staged Parquet files (`output.format: parquet`), under ShardWriter's rules.

A unit's record batches (parquet_columns.encode_parquet) are gathered into
row groups and written into one new, uniquely named file; as with
ShardWriter, the file appears with its first row group, the count is of the
rows written, and a file that cannot be written fails the run with
OutputWriteError naming it (the file is deleted).

Row groups hold ROW_GROUP_ROWS rows, or fewer when the rows gathered reach
ROW_GROUP_BYTES of Arrow data first (wide passthrough features): about
DuckDB's own 122,880 rows, so a scan has a row group per thread and min/max
statistics prune at that grain, and Spark splits files at row groups; the
byte cap bounds what a worker holds beyond its two batches in flight. A
file holds one unit's rows (an input file, or a `input.split_bytes` range
of one) unless `output.num_shards` merges them (`merge`).

Parquet files cannot be concatenated as bytes (each ends with its own
footer), so `merge` re-reads the units' files batch by batch and writes
them into new files, re-gathered into full row groups.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from tfcascade.transforms.accounting import WrittenFile
from tfcascade.transforms.writing.shard_writer import ShardWriter

PARQUET_SUFFIX = ".parquet"
# output.compression for parquet: the codec of every column chunk.
PARQUET_CODECS = ("none", "snappy", "gzip", "zstd")
ROW_GROUP_ROWS = 128 * 1024
ROW_GROUP_BYTES = 64 << 20


class ParquetShardWriter(ShardWriter):
  """Writes record batches into one new, uniquely named staged Parquet file."""

  def __init__(self, directory: str, kind: str, codec: str):
    super().__init__(directory, kind, PARQUET_SUFFIX)
    self._codec = codec
    self._schema: Optional[pa.Schema] = None
    self._gathered: List[pa.RecordBatch] = []  # the next row group's rows
    self._gathered_rows = self._gathered_bytes = 0

  def write(self, blob: pa.RecordBatch, records: int) -> None:
    """Adds the batch `blob` (of `records` rows) to the file; a row group
    is written whenever enough rows are gathered.

    Raises:
      ValueError: the batch's schema is not the file's (a model output
        whose shape changes between batches).
      OutputWriteError: the file cannot be created or written.
    """
    del records  # the batch counts its own rows
    if self._schema is None:
      self._schema = blob.schema
    elif not blob.schema.equals(self._schema, check_metadata=True):
      raise ValueError(_schema_changed(self._schema, blob.schema, self.path))
    self._gather([blob])
    while self._gathered_rows >= ROW_GROUP_ROWS or self._gathered_bytes >= ROW_GROUP_BYTES:
      self._write_row_group()

  def close(self) -> Optional[WrittenFile]:
    """Writes the last row group and the footer; None when nothing was
    written.

    Raises:
      OutputWriteError: the file's last bytes cannot be written.
    """
    if self._gathered_rows:
      self._write_row_group()
    if self._file is None:
      return None
    try:
      self._file.close()  # the footer; the file beneath stays open
      self._raw.close()
    except OSError as e:
      raise self._failed("closing", e) from e
    self._file = self._raw = None
    return WrittenFile(self.kind, self.path, self.records)

  def _write_row_group(self) -> None:
    """Writes up to ROW_GROUP_ROWS gathered rows as one row group; the rest
    stay gathered."""
    table = pa.Table.from_batches(self._gathered, self._schema)
    group = table.slice(0, ROW_GROUP_ROWS)
    self._gathered, self._gathered_rows, self._gathered_bytes = [], 0, 0
    try:
      if self._file is None:
        self._raw = self._create()
        self._file = pq.ParquetWriter(self._raw, self._schema, compression=self._codec,
                                      **_encodings(self._schema))
      self._file.write_table(group, row_group_size=group.num_rows)
    except OSError as e:
      raise self._failed("writing", e) from e
    self.records += group.num_rows
    self._gather(table.slice(group.num_rows).to_batches())

  def _gather(self, batches: List[pa.RecordBatch]) -> None:
    self._gathered += [b for b in batches if b.num_rows]
    self._gathered_rows += sum(b.num_rows for b in batches)
    self._gathered_bytes += sum(b.nbytes for b in batches)


def _encodings(schema: pa.Schema) -> dict:
  """The writer's choices per column (measured: benchmarks/writers.py):

  - a dictionary for the scalar integer and binary columns (class indexes,
    labels, ids): it shrinks the few-valued ones many times, and the writer
    falls back to plain by itself where values are many; float columns
    rarely repeat a value, and trying a dictionary on them cost more than
    all the rest of writing them;
  - min/max statistics for the scalar columns, what a reader's WHERE prunes
    row groups with (`a/confidence < 0.5`); none for lists' values.
  """
  scalars = [f for f in schema if not pa.types.is_fixed_size_list(f.type)]
  return {"use_dictionary": [f.name for f in scalars if pa.types.is_integer(f.type)
                             or pa.types.is_binary(f.type)],
          "write_statistics": [f.name for f in scalars]}


def _schema_changed(first: pa.Schema, now: pa.Schema, path: str) -> str:
  changed = next((f"column {f.name!r} is {f.type} here, {first.field(f.name).type} "
                  f"before" for f in now if f.name in first.names
                  and not f.equals(first.field(f.name), check_metadata=True)),
                 f"columns {now.names} here, {first.names} before")
  return (f"writing {path}: {changed}; a Parquet column has one type for the whole "
          f"output, so a model output whose shape changes between batches needs "
          f"format tfrecord or jsonl")


def merge(directory: str, kind: str, sources: Sequence[str]) -> WrittenFile:
  """The rows of the Parquet files `sources`, in order, as one new staged
  file under `directory`, compressed with their codec.

  Raises:
    ValueError: the files' schemas differ.
    OutputWriteError: the new file cannot be written.
    OSError: a source cannot be read.
  """
  writer = None
  for path in sources:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
      source = pq.ParquetFile(f)
      if writer is None:
        writer = ParquetShardWriter(directory, kind, _codec(source))
      for batch in source.iter_batches():
        writer.write(batch, batch.num_rows)
  return writer.close()


def _codec(source: pq.ParquetFile) -> str:
  """The codec of a file our writer wrote (every chunk has the same)."""
  codec = source.metadata.row_group(0).column(0).compression.lower()
  return "none" if codec == "uncompressed" else codec
