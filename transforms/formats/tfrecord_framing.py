"""TFRecord framing: a checked reader, the writer, and tfrecord2idx-style
indexes for byte ranges.

TFRecord framing, per record:

  uint64 length (little endian) | uint32 masked_crc32c(length bytes)
  | data (length bytes) | uint32 masked_crc32c(data)

Every CRC is checked (google_crc32c, C-accelerated), and a length field is
checked against `max_record_bytes` BEFORE anything is read for it, so a damaged
header fails fast instead of allocating exabytes. Damage surfaces as one
exception type, CorruptRecordError, which says where (path, byte offset,
record index) and why; the caller decides between failing and quarantining.

No TensorFlow or Beam import (numpy and google-crc32c only), so it runs in any worker
(callers pass Beam's `FileSystems.open` as `open_fn` for remote paths).
"""

from __future__ import annotations

import bisect
import contextlib
import gzip
import io
import os
import struct
import zlib
from typing import BinaryIO, Callable, Iterator, List, Optional, Sequence, Tuple

import google_crc32c
import numpy as np

_HEADER = struct.Struct("<QI")  # length, masked CRC of the 8 length bytes
_LENGTH = struct.Struct("<Q")  # the header's length field alone
_FOOTER = struct.Struct("<I")  # masked CRC of the data
_HEADER_BYTES = _HEADER.size  # 12
_FRAME_BYTES = _HEADER_BYTES + _FOOTER.size  # 16: framing around each record
_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_SUFFIXES = (".gz", ".gzip")
_GZIP_BLOCK_BYTES = 1 << 20
_GZIP_PIECE_BYTES = 64 << 10  # compressed bytes inflated at a time
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip header and trailer (CRC, size) checked
_CHECKED_HEADERS = 4096  # distinct record headers remembered per file
COMPRESSIONS = ("auto", "none", "gzip")  # what a config may ask for

DEFAULT_MAX_RECORD_BYTES = 64 << 20
# Serialized bytes per chunk (config `batch_bytes`): several copies of a chunk
# are alive at once (its bytes, the parsed tensors, the encoded output), and
# 1024 records of ~160 KB are 160 MB a copy. The smallest cap measured that
# costs no throughput: benchmarks/WIDE_RECORDS.md.
DEFAULT_BATCH_BYTES = 8 << 20

# What a damaged gzip stream raises from read(); anything else (a network
# OSError, say) is a real I/O failure and must not be mistaken for damage.
_GZIP_DAMAGE = (gzip.BadGzipFile, EOFError, zlib.error)

OpenFn = Callable[[str], BinaryIO]
IndexEntry = Tuple[int, int]  # (offset, framed length = 16 + data length)


class CorruptRecordError(Exception):
  """The TFRecord framing of a file is damaged.

  Attributes:
    path: the file.
    offset: byte offset, in the decompressed stream, of the header of the
      record that could not be read.
    index: 0-based index of that record (records before it were good).
    reason: what is wrong, e.g. "data CRC mismatch".
  """

  def __init__(self, path: str, offset: int, index: int, reason: str):
    self.path = path
    self.offset = offset
    self.index = index
    self.reason = reason
    super().__init__(path, offset, index, reason)

  def __str__(self) -> str:
    return (f"corrupt TFRecord file {self.path}: record {self.index} at byte "
            f"offset {self.offset}: {self.reason}")


def masked_crc32c(data: bytes) -> int:
  """Returns the TFRecord-masked CRC32C of `data`."""
  return _mask(google_crc32c.value(data))


def _mask(crc):
  """TFRecord's mask of a CRC32C: of an int, or of a numpy uint64 array.

  The one definition of the mask; iter_records' hot loop inlines this same
  expression (and is the only place that does).
  """
  return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


def frame_records(records: Sequence[bytes]) -> bytes:
  """TFRecord-frames records: length, length CRC, data, data CRC each."""
  # Rows of one batch mostly share a length: each length's 12-byte header is
  # built once (-0.24 us/record of ~0.57).
  headers = {}
  parts = []
  pack = _FOOTER.pack
  for record in records:
    header = headers.get(len(record))
    if header is None:
      header = headers[len(record)] = _record_header(len(record))
    parts += (header, record, pack(masked_crc32c(record)))
  return b"".join(parts)


def _record_header(length: int) -> bytes:
  """A record's 12-byte header: its length and the length's masked CRC."""
  packed = _LENGTH.pack(length)
  return packed + _FOOTER.pack(masked_crc32c(packed))


def frame_matrix(records: np.ndarray) -> bytes:
  """TFRecord-frames the rows of a uint8 matrix (records of one width): the
  bytes frame_records gives for the rows, with only the data CRCs computed
  per row (the header is the same for every row; numpy places the rest)."""
  n, width = records.shape
  if not n:
    return b""
  blob = records.tobytes()
  rows = ([blob[i:i + width] for i in range(0, len(blob), width)] if width
          else [b""] * n)
  crcs = _mask(np.fromiter(map(google_crc32c.value, rows), np.uint64, n))
  framed = np.empty((n, width + _FRAME_BYTES), np.uint8)
  framed[:, :_HEADER_BYTES] = np.frombuffer(_record_header(width), np.uint8)
  framed[:, _HEADER_BYTES:_HEADER_BYTES + width] = records
  framed[:, _HEADER_BYTES + width:] = crcs.astype("<u4").view(np.uint8).reshape(n, 4)
  return framed.tobytes()


def detect_compression(path: str, compression: str = "auto", *,
                       open_fn: Optional[OpenFn] = None) -> str:
  """Resolves a configured compression to "none" or "gzip".

  Args:
    path: the file.
    compression: "auto", "none" or "gzip". "auto" means gzip for a .gz/.gzip
      suffix, else sniff the file's first two bytes for the gzip magic.
    open_fn: opens `path` for binary reading (default: builtin open).

  Returns:
    "none" or "gzip".

  Raises:
    ValueError: an unknown `compression`.
  """
  compression = _compression_from_name(path, compression)
  if compression != "auto":
    return compression
  with _open(path, open_fn) as stream:
    return _sniff_compression(stream)


def iter_records(stream: BinaryIO, path: str, *,
                 max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
                 start_index: int = 0, start_offset: int = 0,
                 end_offset: Optional[int] = None
                 ) -> Iterator[Tuple[int, int, bytes]]:
  """Yields the records of a TFRecord stream, checking all framing.

  Args:
    stream: binary stream (already decompressed) positioned at
      `start_offset`, which must be a record boundary.
    path: the file's name, for error messages.
    max_record_bytes: largest record accepted; a larger length field is
      treated as damage and nothing is allocated for it.
    start_index: index of the record at `start_offset`.
    start_offset: byte offset of the stream's position (used for reporting
      and for `end_offset`; the stream is not seeked).
    end_offset: stop before the first record starting at or after this
      offset (that record belongs to the next byte range). None: read to EOF.

  Yields:
    (index, offset, data) per record; offset is the record header's offset.

  Raises:
    CorruptRecordError: a CRC mismatch, an oversized length, a truncated
      header or record, or a damaged gzip stream.
  """
  index, offset = start_index, start_offset
  # Hot loop (~0.7 us/record): locals bound once and masked_crc32c inlined
  # (the same expression at both checks), because per-call overhead, not the
  # C CRC, dominates at ~300-byte records. Helpers run only off the common
  # path: a short read, EOF, damage.
  read, crc = stream.read, google_crc32c.value
  # Records of a file mostly share a few lengths: a header whose length CRC
  # was checked once is looked up, not re-checked (~0.1 us/record).
  checked = {}
  unpack_header, unpack_footer = _HEADER.unpack_from, _FOOTER.unpack_from
  while end_offset is None or offset < end_offset:
    try:
      header = read(_HEADER_BYTES)
      if len(header) < _HEADER_BYTES:
        header = _complete_header(stream, header, path, offset, index)
        if not header:
          return
      length = checked.get(header)
      if length is None:
        length, length_crc = unpack_header(header)
        c = crc(header[:8])
        if ((((c >> 15) | (c << 17)) & _U32) + _MASK_DELTA) & _U32 != length_crc:
          raise CorruptRecordError(path, offset, index, "length CRC mismatch")
        if len(checked) < _CHECKED_HEADERS:
          checked[header] = length
      if length > max_record_bytes:
        raise CorruptRecordError(
            path, offset, index,
            f"length {length} exceeds max_record_bytes {max_record_bytes}")
      want = length + 4
      body = read(want)
      if len(body) < want:
        body += _read_exact(stream, want - len(body))
    except _GZIP_DAMAGE as e:
      raise CorruptRecordError(path, offset, index,
                               f"damaged gzip stream: {e}") from e
    if len(body) < want:
      raise CorruptRecordError(path, offset, index,
                               _truncation_reason(length, len(body)))
    data = body[:length]
    c = crc(data)
    if ((((c >> 15) | (c << 17)) & _U32) + _MASK_DELTA) & _U32 != (
        unpack_footer(body, length)[0]):
      raise CorruptRecordError(path, offset, index, "data CRC mismatch")
    yield index, offset, data
    index += 1
    offset += length + _FRAME_BYTES


def read_record_chunks(path: str, *, compression: str = "auto",
                       chunk_size: int = 1024,
                       chunk_bytes: Optional[int] = None,
                       max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
                       start_offset: int = 0,
                       end_offset: Optional[int] = None,
                       start_index: int = 0,
                       open_fn: Optional[OpenFn] = None
                       ) -> Iterator[List[Tuple[int, bytes]]]:
  """Reads a TFRecord file (or a byte range of it) in chunks, sequentially.

  On damage, the good records read before it are yielded first (as a final,
  possibly short chunk), then CorruptRecordError is raised.

  Args:
    path: the file.
    compression: "auto", "none" or "gzip" (see detect_compression).
    chunk_size: records per yielded list.
    chunk_bytes: a list also ends before a record that would take its
      records' bytes past this (None: no byte cap); a record larger than that
      is a list alone.
    max_record_bytes: largest record accepted (see iter_records).
    start_offset: first byte of the range; must be a record boundary.
    end_offset: records starting at or after this offset are left to the next
      range. None: to the end of the file.
    start_index: index of the record at `start_offset`.
    open_fn: opens `path` for binary reading (default: builtin open). Pass
      Beam's FileSystems.open with compression_type UNCOMPRESSED, since
      decompression happens here.

  Yields:
    Lists of up to `chunk_size` (index, data) pairs holding at most
    `chunk_bytes` bytes of data (but for a single larger record).

  Raises:
    CorruptRecordError: damaged framing (after the good chunks before it).
    ValueError: bad arguments, or a byte range on a gzip file (a gzip stream
      cannot be entered in the middle).
  """
  _check_chunk_args(path, chunk_size, chunk_bytes, start_offset, end_offset)
  ranged = start_offset > 0 or end_offset is not None
  compression = _compression_from_name(path, compression)
  _check_rangeable(path, compression, ranged)
  with _open(path, open_fn) as raw:
    if compression == "auto":
      # Sniff on the stream we read anyway: one open per file, which is what
      # counts on object stores.
      compression = _sniff_compression(raw)
      _check_rangeable(path, compression, ranged)
      raw.seek(0)
    if start_offset:
      raw.seek(start_offset)
    with _decompressed(raw, compression) as stream:
      yield from _chunked(stream, path, chunk_size, chunk_bytes, max_record_bytes,
                          start_index, start_offset, end_offset)


def count_records(path: str, *, compression: str = "auto",
                  open_fn: Optional[OpenFn] = None) -> int:
  """Counts a file's records from its framing: each length and its CRC are
  checked, the data is skipped without its CRC.

  Meant for files this process's job has just written (a cheap check that
  every record is there); read_record_chunks checks everything.

  Raises:
    CorruptRecordError: a length CRC mismatch or a truncated file.
  """
  compression = detect_compression(path, compression, open_fn=open_fn)
  with _open(path, open_fn) as raw, _decompressed(raw, compression) as stream:
    count = offset = 0
    while True:
      header = _complete_header(stream, b"", path, offset, count)
      if not header:
        break
      length, length_crc = _HEADER.unpack_from(header)
      if masked_crc32c(header[:8]) != length_crc:
        raise CorruptRecordError(path, offset, count, "length CRC mismatch")
      offset += length + _FRAME_BYTES
      if compression == "gzip":  # gzip seeks by decompressing anyway
        skipped = len(_read_exact(stream, length + _FOOTER.size))
        if skipped < length + _FOOTER.size:
          raise CorruptRecordError(path, offset - length - _FRAME_BYTES, count,
                                   "truncated record")
      else:
        stream.seek(offset)
      count += 1
    if compression != "gzip" and stream.seek(0, os.SEEK_END) != offset:
      raise CorruptRecordError(path, offset - length - _FRAME_BYTES, count - 1,
                               "truncated record")
    return count


def index_path(path: str) -> str:
  """Returns the conventional index file name for a TFRecord file."""
  return path + ".idx"


def read_index(idx_path: str, open_fn: Optional[OpenFn] = None
               ) -> List[IndexEntry]:
  """Reads a tfrecord2idx-style index: one "offset length" line per record.

  Args:
    idx_path: the index file.
    open_fn: opens it for binary reading (default: builtin open).

  Returns:
    (offset, length) per record, length being the framed size (16 + data).

  Raises:
    ValueError: a malformed line, or entries that do not tile the file from
      byte 0 (such an index would make byte ranges skip or repeat records);
      the message names the file and line.
  """
  with _open(idx_path, open_fn) as f:
    text = f.read().decode("utf-8", errors="replace")
  entries: List[IndexEntry] = []
  expected = 0
  for lineno, line in enumerate(text.splitlines(), start=1):
    if not line.strip():
      continue
    fields = line.split()
    try:
      if len(fields) != 2:
        raise ValueError
      offset, length = int(fields[0]), int(fields[1])
    except ValueError:
      raise ValueError(f"{idx_path}:{lineno}: expected 'offset length', got "
                       f"{line[:80]!r}") from None
    if length < _FRAME_BYTES:
      raise ValueError(f"{idx_path}:{lineno}: record length {length} is less "
                       f"than the {_FRAME_BYTES} framing bytes")
    if offset != expected:
      raise ValueError(f"{idx_path}:{lineno}: offset {offset}, expected "
                       f"{expected} (entries must tile the file)")
    entries.append((offset, length))
    expected = offset + length
  return entries


def build_index(path: str, *, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
                open_fn: Optional[OpenFn] = None) -> List[IndexEntry]:
  """Scans an uncompressed TFRecord file, CRCs included, into index entries.

  Args:
    path: the file.
    max_record_bytes: largest record accepted.
    open_fn: opens `path` for binary reading (default: builtin open).

  Returns:
    (offset, framed length) per record.

  Raises:
    CorruptRecordError: damaged framing.
    ValueError: the file is gzip (a gzip stream has no usable byte offsets).
  """
  if detect_compression(path, "auto", open_fn=open_fn) == "gzip":
    raise ValueError(f"cannot index {path}: it is gzip compressed")
  with _open(path, open_fn) as stream:
    return [(offset, len(data) + _FRAME_BYTES) for _, offset, data in
            iter_records(stream, path, max_record_bytes=max_record_bytes)]


def write_index(entries: List[IndexEntry], idx_path: str, *,
                create_fn: Optional[OpenFn] = None) -> None:
  """Writes index entries in the tfrecord2idx text format.

  Args:
    entries: (offset, length) per record.
    idx_path: where to write.
    create_fn: opens `idx_path` for binary writing (e.g. Beam's
      FileSystems.create). Default: a local write through a temporary file
      and a rename, so a concurrent reader never sees half an index.
  """
  payload = "".join(f"{o} {n}\n" for o, n in entries).encode("ascii")
  if create_fn is not None:
    with create_fn(idx_path) as f:
      f.write(payload)
    return
  tmp = f"{idx_path}.tmp-{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(payload)
  os.replace(tmp, idx_path)


def split_ranges(entries: List[IndexEntry], num_splits: int
                 ) -> List[Tuple[int, int, int]]:
  """Cuts an indexed file into byte ranges of roughly equal size.

  Args:
    entries: index entries (see read_index), tiling the file from byte 0.
    num_splits: wanted number of ranges; fewer come back when there are
      fewer records (a range is never empty).

  Returns:
    (start_index, start_offset, end_offset) per range, in file order, on
    record boundaries, together covering every record exactly once. Empty for
    a file with no records.

  Raises:
    ValueError: num_splits < 1.
  """
  if num_splits < 1:
    raise ValueError(f"num_splits must be >= 1, got {num_splits}")
  if not entries:
    return []
  offsets = [o for o, _ in entries]
  total = entries[-1][0] + entries[-1][1]
  cuts = [0]
  for k in range(1, num_splits):
    target = total * k / num_splits
    i = bisect.bisect_left(offsets, target)
    # Cut at whichever record boundary is nearer the ideal byte position.
    if i > 0 and (i == len(offsets) or
                  target - offsets[i - 1] < offsets[i] - target):
      i -= 1
    if cuts[-1] < i < len(offsets):
      cuts.append(i)
  bounds = offsets + [total]
  ends = cuts[1:] + [len(offsets)]
  return [(s, bounds[s], bounds[e]) for s, e in zip(cuts, ends)]


def _chunked(stream, path, chunk_size, chunk_bytes, max_record_bytes, start_index,
             start_offset, end_offset):
  """Groups iter_records into lists; yields the good tail before raising."""
  chunk: List[Tuple[int, bytes]] = []
  held = 0
  records = iter_records(stream, path, max_record_bytes=max_record_bytes,
                         start_index=start_index, start_offset=start_offset,
                         end_offset=end_offset)
  try:
    for index, _, data in records:
      if chunk_bytes and chunk and held + len(data) > chunk_bytes:
        yield chunk  # this record would take the chunk past its byte cap
        chunk, held = [], 0
      chunk.append((index, data))
      held += len(data)
      if len(chunk) == chunk_size or (chunk_bytes and held >= chunk_bytes):
        yield chunk
        chunk, held = [], 0
  except CorruptRecordError:
    if chunk:
      yield chunk
    raise
  if chunk:
    yield chunk


def _complete_header(stream: BinaryIO, header: bytes, path: str, offset: int,
                     index: int) -> bytes:
  """Completes a header that a read returned short: b"" at a clean EOF.

  A short read is not EOF for every stream (a socket, a pipe), so the rest is
  read; CorruptRecordError if the file ends inside the header.
  """
  header += _read_exact(stream, _HEADER_BYTES - len(header))
  if header and len(header) < _HEADER_BYTES:
    raise CorruptRecordError(path, offset, index,
                             f"truncated header: {len(header)} bytes")
  return header


def _truncation_reason(length: int, got: int) -> str:
  """Why a record whose header says `length` is damaged when only `got`
  bytes of data + data CRC are left."""
  if got < length:
    return f"truncated record: header says {length} bytes, {got} left"
  return f"truncated record: data CRC cut short ({got - length} of 4 bytes)"


def _check_chunk_args(path: str, chunk_size: int, chunk_bytes: Optional[int],
                      start_offset: int, end_offset: Optional[int]) -> None:
  """ValueError for a chunk size or byte range read_record_chunks refuses."""
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
  if chunk_bytes is not None and chunk_bytes < 1:
    raise ValueError(f"chunk_bytes must be >= 1 (or None), got {chunk_bytes}")
  if start_offset < 0 or (end_offset is not None and end_offset < start_offset):
    raise ValueError(
        f"bad byte range [{start_offset}, {end_offset}) for {path}")


def _check_rangeable(path: str, compression: str, ranged: bool) -> None:
  """ValueError for a byte range on a gzip file (no usable byte offsets)."""
  if ranged and compression == "gzip":
    raise ValueError(f"byte ranges need an uncompressed file; {path} is gzip")


def _compression_from_name(path: str, compression: str) -> str:
  """A configured compression, resolved as far as the path's name allows:
  "none", "gzip", or "auto" when only the file's bytes can tell."""
  compression = _check_compression(compression)
  if compression == "auto" and path.lower().endswith(_GZIP_SUFFIXES):
    return "gzip"
  return compression


def _sniff_compression(stream: BinaryIO) -> str:
  """Returns "gzip" if the stream starts with the gzip magic, else "none"."""
  return "gzip" if _read_exact(stream, 2) == _GZIP_MAGIC else "none"


def _decompressed(raw: BinaryIO, compression: str):
  """A context manager giving the decompressed stream of `raw` (which it
  leaves open)."""
  if compression == "gzip":
    # The hot loop's two small reads per record go through a C BufferedReader
    # over 1 MiB blocks (GzipFile.read is Python code: -13% CPU per gzip
    # record; docs/design.md).
    return io.BufferedReader(_Inflated(raw), buffer_size=_GZIP_BLOCK_BYTES)
  return contextlib.nullcontext(raw)


class _Inflated(io.RawIOBase):
  """The inflated bytes of a gzip stream, every byte before damage included.

  GzipFile drops what the call that hits damage had inflated, so good records
  just before the damage would be lost. Here a piece whose inflating fails is
  replayed byte by byte from a copy of the zlib state, handing out all it
  held before the bad byte; the damage is raised once those bytes are read.
  Concatenated gzip members are read in turn, zero padding after them skipped.
  """

  def __init__(self, raw: BinaryIO):
    super().__init__()
    self._raw = raw
    self._inflate = None  # the current member's; None between members
    self._after_member = False  # a member has ended: zero padding may follow
    self._pending = memoryview(b"")
    self._error: Optional[Exception] = None

  def readable(self) -> bool:
    return True

  def readinto(self, buffer) -> int:
    while not self._pending:
      if self._error is not None:
        raise self._error
      if not self._fill():
        return 0
    n = min(len(buffer), len(self._pending))
    buffer[:n] = self._pending[:n]
    self._pending = self._pending[n:]
    return n

  def _fill(self) -> bool:
    """Inflates the next piece of input into _pending; False at a clean end."""
    data = self._raw.read(_GZIP_PIECE_BYTES)
    if not data:
      if self._inflate is None:
        return False
      self._error = EOFError("compressed file ended before the end-of-stream "
                             "marker was reached")
      return True
    out = []
    while data:
      if self._inflate is None:
        if self._after_member:  # zero padding between or after members is
          data = data.lstrip(b"\0")  # allowed, as GzipFile allows it
          if not data:
            break
        self._inflate = zlib.decompressobj(_GZIP_WBITS)
      before = self._inflate.copy()
      try:
        out.append(self._inflate.decompress(data))
      except zlib.error as e:
        out.append(_inflate_until_damage(before, data))
        self._error = e
        break
      data = b""
      if self._inflate.eof:
        data, self._inflate = self._inflate.unused_data, None
        self._after_member = True
    self._pending = memoryview(b"".join(out))
    return True


def _inflate_until_damage(inflate, data: bytes) -> bytes:
  """What `data` inflates to, one byte at a time, before the byte that breaks it."""
  out = []
  for i in range(len(data)):
    try:
      out.append(inflate.decompress(data[i:i + 1]))
    except zlib.error:
      break
  return b"".join(out)


def _check_compression(compression: str) -> str:
  """Normalizes a compression name; ValueError for an unknown one."""
  value = (compression or "auto").lower()
  if value not in COMPRESSIONS:
    raise ValueError(f"compression must be one of {COMPRESSIONS}, "
                     f"got {compression!r}")
  return value


def _open(path: str, open_fn: Optional[OpenFn]) -> BinaryIO:
  """Opens path for binary reading with open_fn, or locally."""
  return open_fn(path) if open_fn is not None else open(path, "rb")


def _read_exact(stream: BinaryIO, n: int) -> bytes:
  """Reads n bytes, or fewer only at EOF (read() may return short)."""
  parts = []
  while n > 0:
    part = stream.read(n)
    if not part:
      break
    parts.append(part)
    n -= len(part)
  return b"".join(parts)
