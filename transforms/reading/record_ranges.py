"""Reading TFRecord files as chunks of records with provenance (any engine).

One element per record costs ~5 us in Beam (docs/design.md, fact 6), so records
travel in chunks of `batch_size` records (and at most `batch_bytes` bytes):
`RecordChunk(source, [(index, bytes), ...])`. Big uncompressed files are split
into byte ranges on record boundaries so several workers share one file.

Input files are pinned when the launcher plans the run (`InputFile`: size and
modification time); the reader checks the pin before and after it reads a
range, so a file rewritten or appended to in between fails the run naming it
instead of being read half old, half new.
"""

from __future__ import annotations

import logging
import math
from typing import Iterator, List, NamedTuple, Optional, Tuple, Union

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from tfcascade.transforms.formats import dead_letters
from tfcascade.transforms.formats import tfrecord_framing as framing
from tfcascade.transforms.paths import file_metadata

__all__ = ["InputFile", "RecordChunk", "ReadRange", "CorruptInputError",
           "InputChangedError", "check_pin", "file_pin", "open_raw", "plan_ranges",
           "read_range", "read_records"]

_LOG = logging.getLogger("tfcascade")


class RecordChunk(NamedTuple):
  source: str
  records: List[Tuple[int, bytes]]  # (0-based index in source, serialized bytes)


class InputFile(NamedTuple):
  """An input file as the launcher planned it (its pin: size, modified)."""
  path: str
  compression: str  # "none" | "gzip"
  size: int
  modified: float = 0.0  # last-modified epoch seconds; 0: the file system has none


class ReadRange(NamedTuple):
  """A slice of one file: records from start_index at start_offset up to
  end_offset (exclusive; None = end of file), and the file's pin (size -1:
  not pinned)."""
  path: str
  compression: str
  start_index: int = 0
  start_offset: int = 0
  end_offset: Optional[int] = None
  size: int = -1
  modified: float = 0.0

  @property
  def input_bytes(self) -> int:
    """The range's bytes of its (compressed) file."""
    end = self.end_offset if self.end_offset is not None else max(self.size, 0)
    return max(end - self.start_offset, 0)


class InputChangedError(RuntimeError):
  """An input file changed between the launcher's plan and its reading."""


def file_pin(path: str) -> Tuple[int, float]:
  """(size, modified) of a file as its file system reports them now."""
  found = file_metadata(path)
  if found is None:
    return -1, 0.0
  return found.size_in_bytes, float(found.last_updated_in_seconds or 0.0)


def check_pin(task: ReadRange, when: str) -> None:
  """Raises InputChangedError unless the file is as the launcher pinned it."""
  if task.size < 0:
    return
  size, modified = file_pin(task.path)
  if (size, modified) != (task.size, task.modified):
    found = "is gone" if size < 0 else (
        f"is now {size:,} bytes modified at {modified:.3f}, planned {task.size:,} bytes "
        f"modified at {task.modified:.3f}")
    raise InputChangedError(
        f"input file {task.path} changed {when}: it {found}; nothing of this run is "
        f"published. Rerun to read the files as they are now")

def open_raw(path):
  """Opens any Beam FileSystems path as raw bytes.

  Our framing reader handles gzip itself, so Beam must not decompress.
  """
  return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def plan_ranges(file: InputFile, split_bytes: int,
                max_record_bytes: int) -> List[ReadRange]:
  """The ReadRanges of one input file: the whole file, or (a big uncompressed
  one) byte ranges on record boundaries from its tfrecord2idx index or a scan.
  Each carries the file's pin.

  Args:
    file: the pinned input file.
    split_bytes: files larger than this are split.
    max_record_bytes: largest record accepted while scanning.
  """
  path, compression, size, modified = file
  whole = [ReadRange(path, compression, size=size, modified=modified)]
  if compression != "none" or size <= split_bytes:
    return whole
  entries = _index(path, size, max_record_bytes)
  if entries is None:  # damaged file: let the reader name the damage
    return whole
  splits = max(1, math.ceil(size / split_bytes))
  return [ReadRange(path, compression, start_index, start, end, size, modified)
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
               on_corrupt: str, chunk_bytes: Optional[int] = None
               ) -> Iterator[Union[RecordChunk, dict]]:
  """Reads one ReadRange: RecordChunks of at most `chunk_size` records (and
  `chunk_bytes` bytes, when given), then (damage under 'quarantine') one
  quarantine dead-letter entry for the rest of the range (a whole file, or
  one byte range of a split file: later ranges are read on their own).

  Raises:
    CorruptInputError: damaged framing under on_corrupt 'fail'.
    InputChangedError: the file is not as the launcher pinned it (checked
      before and after reading).
  """
  check_pin(task, "after the launcher planned the run")
  yield from read_records(task, chunk_size, max_record_bytes, on_corrupt, chunk_bytes)
  check_pin(task, "while it was being read")


def read_records(task: ReadRange, chunk_size: int, max_record_bytes: int,
                 on_corrupt: str, chunk_bytes: Optional[int] = None,
                 from_record: Optional[Tuple[int, int]] = None
                 ) -> Iterator[Union[RecordChunk, dict]]:
  """read_range without the pin checks; from `from_record` (its index and,
  in an uncompressed file, byte offset) instead of the range's start: how
  a range is taken up again where the in-graph reader stopped."""
  start_index, start_offset, skip, salvaged = task.start_index, task.start_offset, 0, 0
  if from_record is not None:
    if task.compression == "none":
      start_index, start_offset = from_record
      salvaged = start_index - task.start_index  # read in TF, good
    else:  # no seeking into gzip: inflate again, pass over what was read
      skip = from_record[0] - task.start_index
  try:
    for chunk in framing.read_record_chunks(
        task.path, compression=task.compression, chunk_size=chunk_size,
        chunk_bytes=chunk_bytes, max_record_bytes=max_record_bytes,
        start_offset=start_offset, end_offset=task.end_offset,
        start_index=start_index, open_fn=open_raw):
      salvaged += len(chunk)
      if skip >= len(chunk):
        skip -= len(chunk)
        continue
      chunk, skip = chunk[skip:], 0
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


