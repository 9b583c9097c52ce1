"""Reading TFRecord files as chunks of records with provenance (any engine).

One element per record costs ~5 us in Beam (docs/design.md, fact 6), so records
travel in chunks of `batch_size`: `RecordChunk(source, [(index, bytes), ...])`.
Big uncompressed files are split into byte ranges on record boundaries so
several workers share one file.
"""

from __future__ import annotations

import logging
import math
from typing import Iterator, List, NamedTuple, Optional, Tuple, Union

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from tfcascade.transforms.formats import dead_letters
from tfcascade.transforms.formats import tfrecord_framing as framing

__all__ = ["RecordChunk", "ReadRange", "CorruptInputError", "open_raw",
           "plan_ranges", "read_range"]

_LOG = logging.getLogger("tfcascade")


class RecordChunk(NamedTuple):
  source: str
  records: List[Tuple[int, bytes]]  # (0-based index in source, serialized bytes)


class ReadRange(NamedTuple):
  """A slice of one file: records from start_index at start_offset up to
  end_offset (exclusive; None = end of file)."""
  path: str
  compression: str
  start_index: int = 0
  start_offset: int = 0
  end_offset: Optional[int] = None


def open_raw(path):
  """Opens any Beam FileSystems path as raw bytes.

  Our framing reader handles gzip itself, so Beam must not decompress.
  """
  return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def plan_ranges(file: Tuple[str, str, int], split_bytes: int,
                max_record_bytes: int) -> List[ReadRange]:
  """The ReadRanges of one input file: the whole file, or (a big uncompressed
  one) byte ranges on record boundaries from its tfrecord2idx index or a scan.

  Args:
    file: (path, compression "none"|"gzip", size in bytes).
    split_bytes: files larger than this are split.
    max_record_bytes: largest record accepted while scanning.
  """
  path, compression, size = file
  if compression != "none" or size <= split_bytes:
    return [ReadRange(path, compression)]
  entries = _index(path, size, max_record_bytes)
  if entries is None:  # damaged file: let the reader name the damage
    return [ReadRange(path, compression)]
  splits = max(1, math.ceil(size / split_bytes))
  return [ReadRange(path, compression, start_index, start, end)
          for start_index, start, end in framing.split_ranges(entries, splits)]


def _index(path, size, max_record_bytes):
  idx = framing.index_path(path)
  if FileSystems.exists(idx):
    entries = framing.read_index(idx, open_fn=open_raw)
    # An index that does not end at the file's end is stale (the file grew
    # or was rewritten); trusting it would silently skip records.
    if entries and entries[-1][0] + entries[-1][1] == size:
      return entries
    _LOG.warning("ignoring stale index %s: it does not cover %s's %d bytes",
                 idx, path, size)
  try:
    return framing.build_index(path, max_record_bytes=max_record_bytes,
                               open_fn=open_raw)
  except framing.CorruptRecordError:
    return None


def read_range(task: ReadRange, chunk_size: int, max_record_bytes: int,
               on_corrupt: str) -> Iterator[Union[RecordChunk, dict]]:
  """Reads one ReadRange: RecordChunks, then (damage under 'quarantine') one
  quarantine dead-letter entry for the rest of the range (a whole file, or
  one byte range of a split file: later ranges are read on their own).

  Raises:
    CorruptInputError: damaged framing under on_corrupt 'fail'.
  """
  salvaged = 0
  try:
    for chunk in framing.read_record_chunks(
        task.path, compression=task.compression, chunk_size=chunk_size,
        max_record_bytes=max_record_bytes, start_offset=task.start_offset,
        end_offset=task.end_offset, start_index=task.start_index,
        open_fn=open_raw):
      salvaged += len(chunk)
      yield RecordChunk(task.path, chunk)
  except framing.CorruptRecordError as e:
    if on_corrupt == "fail":
      raise CorruptInputError(
          f"{e} (input.on_corrupt is 'fail'; set it to 'quarantine' to keep "
          f"the records before the damage and go on)") from None
    ranged = task.start_offset > 0 or task.end_offset is not None
    yield dead_letters.quarantine_entry(
        e.path, e.index, e.offset,
        f"corrupt TFRecord framing: {e.reason}; rest of "
        f"{'byte range' if ranged else 'file'} skipped", salvaged)


class CorruptInputError(RuntimeError):
  """An input file's TFRecord framing is damaged and the policy is 'fail'."""


