"""Batch encoding of tf.train.Example protos, without TensorFlow or protobuf.

Building one tf.train.Example per row in Python costs tens of microseconds
(docs/design.md, fact 11), more than a light model's whole compute. The wire format is
simple, so a batch is encoded column-wise here:

  Example  {1: Features {1: repeated MapEntry {1: key, 2: Feature}}}
  Feature  {1: BytesList {1: repeated bytes}
          | 2: FloatList {1: packed float}     (raw little-endian float32)
          | 3: Int64List {1: packed varint}}

numpy produces every fixed-width part of every row at once (float payloads,
small-int varints and the constant framing around them, as one [rows, width]
byte matrix); Python only slices that matrix and joins a few pieces per row.
Map entries are written in bytewise key order: the output is then exactly
protobuf's deterministic serialization, except that Python's upb sorts a key
after its own extensions ("ab" before "a"); parsers don't care about order.

Pure Python + numpy on purpose: no TensorFlow or Beam import.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np

Column = Union[np.ndarray, Sequence]

# Feature fields, one per list kind: the `list_kind` tags below.
_BYTES_LIST, _FLOAT_LIST, _INT64_LIST = 0x0A, 0x12, 0x1A
_LEN1 = 0x0A  # field 1, wire type 2 (length-delimited)
_FEATURE = 0x12  # MapEntry field 2 (the Feature), length-delimited
_INT64_MAX = np.iinfo(np.int64).max


def encode_examples(columns: Mapping[str, Column], num_rows: int, *,
                    raw_features: Optional[Mapping[str, Sequence[Optional[bytes]]]] = None
                    ) -> List[bytes]:
  """Serializes `num_rows` tf.train.Example protos from columns.

  Args:
    columns: feature name -> per-row values. A float array [N, ...] becomes a
      float_list (cast to float32, flattened per row); an integer or bool
      array [N, ...] an int64_list; a list or object/bytes/str array of N
      bytes (or str, UTF-8 encoded) values, or of N lists of them, a
      bytes_list. A list of numbers is converted with np.asarray.
    num_rows: N, the number of Examples.
    raw_features: feature name -> N already-serialized `Feature` messages
      (e.g. from raw_feature_bytes), copied into the output unchanged; None
      for a row that lacks the feature (the row's Example has no entry).

  Returns:
    N serialized tf.train.Example messages.

  Raises:
    ValueError: a column with the wrong number of rows or an unsupported
      type, or a name given both as a column and as a raw feature.
    TypeError: a bytes_list value that is neither bytes nor str.
  """
  pieces, lengths = _pieces(columns, num_rows, raw_features)
  return _joined_rows(pieces, lengths)


def encode_examples_packed(columns: Mapping[str, Column], num_rows: int, *,
                           raw_features: Optional[Mapping[str, Sequence[Optional[bytes]]]] = None
                           ) -> Union[np.ndarray, List[bytes]]:
  """encode_examples' Examples as ONE uint8 matrix [num_rows, width] when
  every row serializes to the same width (fixed-shape numbers, equal-length
  ids: the common case), else as encode_examples' list. The matrix lets the
  caller frame a whole batch with numpy instead of per row in Python.

  Args and Raises: as for encode_examples.
  """
  pieces, lengths = _pieces(columns, num_rows, raw_features)
  matrix = _fixed_width(pieces, lengths, num_rows)
  return matrix if matrix is not None else _joined_rows(pieces, lengths)


def _pieces(columns, num_rows, raw_features):
  """(pieces, per-row lengths of the Features message): pieces are per-row
  byte strings, in row order, or a fixed-width uint8 matrix; consecutive
  matrices are merged into one."""
  if num_rows < 0:
    raise ValueError(f"num_rows must be >= 0, got {num_rows}")
  raw_features = raw_features or {}
  both = set(columns) & set(raw_features)
  if both:
    raise ValueError(f"features given as both columns and raw: {sorted(both)}")
  names = sorted(list(columns) + list(raw_features),
                 key=lambda k: k.encode("utf-8"))
  pieces: List[Union[List[bytes], np.ndarray]] = []
  lengths = np.zeros(num_rows, np.int64)
  for name in names:
    key_field = _key_field(name)
    if name in raw_features:
      parts = _raw_parts(key_field, raw_features[name], num_rows, name)
    else:
      parts = _column_parts(key_field, columns[name], num_rows, name)
    for part in parts:
      if isinstance(part, np.ndarray):
        lengths += part.shape[1]
        if pieces and isinstance(pieces[-1], np.ndarray):
          pieces[-1] = np.concatenate([pieces[-1], part], axis=1)
          continue
      else:
        lengths += np.fromiter(map(len, part), np.int64, num_rows)
      pieces.append(part)
  return pieces, lengths


def _example_header(length: int) -> bytes:
  """An Example's own field: 0A varint(length of its Features)."""
  return bytes([_LEN1]) + _varint(length)


def _joined_rows(pieces, lengths) -> List[bytes]:
  headers = _memo_map(_example_header, lengths)
  row_parts = [headers] + [_row_slices(p) if isinstance(p, np.ndarray) else p
                           for p in pieces]
  return list(map(b"".join, zip(*row_parts)))


def _fixed_width(pieces, lengths, num_rows) -> Optional[np.ndarray]:
  """The rows as one uint8 matrix, or None when their widths differ."""
  if not num_rows or (lengths != lengths[0]).any():
    return None
  matrices = [np.frombuffer(_example_header(int(lengths[0])), np.uint8)[None, :]
              .repeat(num_rows, axis=0)]
  for piece in pieces:
    if not isinstance(piece, np.ndarray):
      widths = set(map(len, piece))
      if len(widths) != 1:
        return None
      piece = np.frombuffer(b"".join(piece), np.uint8).reshape(num_rows, widths.pop())
    matrices.append(piece)
  return np.concatenate(matrices, axis=1)


def raw_feature_bytes(serialized_example: bytes,
                      names: Iterable[str]) -> Dict[str, bytes]:
  """Extracts serialized Feature messages from an Example, without decoding.

  Args:
    serialized_example: a serialized tf.train.Example.
    names: the features wanted.

  Returns:
    name -> the Feature message's bytes, for each wanted name present (a
    missing feature is simply absent). Pass these to encode_examples'
    `raw_features` to copy features through unchanged.

  Raises:
    ValueError: the bytes are not a well-formed Example.
  """
  wanted = {n.encode("utf-8"): n for n in names}
  found: Dict[str, bytes] = {}
  if not wanted:
    return found
  buf = bytes(serialized_example)
  for field, start, end in _fields(buf, 0, len(buf)):
    if field != 1:
      continue
    pos = start
    while pos < end:  # Features: MapEntry after MapEntry
      tag = buf[pos]
      if tag != _LEN1:  # rare: another field; take the general path
        for entry_field, e_start, e_end in _fields(buf, pos, end):
          if entry_field == 1:
            _take_entry(buf, e_start, e_end, wanted, found)
        break
      size, pos = _read_varint(buf, pos + 1, end)
      if pos + size > end:
        raise ValueError("malformed Example: field overruns its message")
      _take_entry(buf, pos, pos + size, wanted, found)
      pos += size
  return found


def _take_entry(buf, start, end, wanted, found):
  """Records a map entry's Feature bytes if its key is wanted."""
  # Fast path for the canonical layout: exactly one key, then one value.
  # Anything else takes the general parse, where protobuf's rules apply
  # (last field wins, a missing key is "").
  if start < end and buf[start] == _LEN1:
    key_len, pos = _read_varint(buf, start + 1, end)
    key_end = pos + key_len
    if key_end < end and buf[key_end] == _FEATURE:
      value_len, value_start = _read_varint(buf, key_end + 1, end)
      if value_start + value_len == end:
        key = buf[pos:key_end]
        if key in wanted:
          found[wanted[key]] = buf[value_start:end]
        return
  key, value = b"", b""
  for f, s, t in _fields(buf, start, end):
    if f == 1:
      key = buf[s:t]
    elif f == 2:
      value = buf[s:t]
  if key in wanted:
    # Last entry wins for a repeated key, as when protobuf parses a map.
    found[wanted[key]] = value


def _column_parts(key_field, values, n, name):
  """Per-row pieces of one feature's map entries."""
  if not isinstance(values, np.ndarray):
    if _is_bytes_column(values):
      return _bytes_parts(key_field, values, n, name)
    try:
      values = np.asarray(values)
    except ValueError as e:  # ragged numbers
      raise ValueError(f"feature {name!r}: numeric rows must all have the "
                       f"same shape ({e})") from None
  if values.dtype.kind in "OSU":
    return _bytes_parts(key_field, list(values), n, name)
  if values.ndim == 0 or values.shape[0] != n:
    raise ValueError(f"feature {name!r}: expected {n} rows, got shape "
                     f"{values.shape}")
  flat = values.reshape(n, int(np.prod(values.shape[1:])))
  if values.dtype.kind == "f":
    payload = np.ascontiguousarray(flat, dtype="<f4").view(np.uint8)
    return [_fixed_entries(key_field, _FLOAT_LIST, payload)]
  if values.dtype.kind in "iub":
    return _int64_parts(key_field, flat, name)
  raise ValueError(f"feature {name!r}: unsupported dtype {values.dtype}")


def _int64_parts(key_field, flat, name):
  """Per-row pieces of an int64_list feature (values as packed varints)."""
  if flat.dtype.kind == "u" and flat.size and flat.max() > _INT64_MAX:
    raise ValueError(f"feature {name!r}: value {flat.max()} exceeds int64")
  # Negative values become 10-byte varints of their two's complement.
  v = flat.astype(np.int64).view(np.uint64)
  n, k = v.shape
  if not v.size or v.max() < 0x80:  # every varint is one byte: fixed width
    return [_fixed_entries(key_field, _INT64_LIST, v.astype(np.uint8))]
  data, lens = _varints(v.ravel())
  row_lens = lens.reshape(n, k).sum(axis=1)
  if (row_lens == row_lens[0]).all():
    return [_fixed_entries(key_field, _INT64_LIST, data.reshape(n, -1))]
  ends = np.cumsum(row_lens).tolist()
  blob = data.tobytes()
  headers = _memo_map(
      lambda p: _entry_header(key_field, _INT64_LIST, _packed_len(p),
                              _packed_prefix(p)), row_lens)
  return [headers, [blob[s:e] for s, e in zip([0] + ends[:-1], ends)]]


def _bytes_parts(key_field, values, n, name):
  """Per-row pieces of a bytes_list feature."""
  values = list(values)
  if len(values) != n:
    raise ValueError(f"feature {name!r}: expected {n} rows, got {len(values)}")
  if set(map(type, values)) == {bytes}:  # the common case: one id per row
    # BytesList body = 0A varint(len) value, so the whole entry up to the
    # value depends only on len(value).
    headers = _memo_map(
        lambda m: _entry_header(key_field, _BYTES_LIST, 1 + _vlen(m) + m,
                                bytes([_LEN1]) + _varint(m)),
        list(map(len, values)))
    return [headers, values]
  bodies = [_bytes_list_body(v, name) for v in values]
  headers = _memo_map(
      lambda m: _entry_header(key_field, _BYTES_LIST, m, b""),
      [len(b) for b in bodies])
  return [headers, bodies]


def _bytes_list_body(row, name):
  """A BytesList message body for one row (a value or a list of values)."""
  if isinstance(row, (bytes, str, np.bytes_, np.str_)):
    row = [row]
  out = []
  for v in row:
    if isinstance(v, str):
      v = v.encode("utf-8")
    elif not isinstance(v, bytes):
      raise TypeError(f"feature {name!r}: bytes_list value {v!r} is "
                      f"{type(v).__name__}, not bytes or str")
    out += (bytes([_LEN1]), _varint(len(v)), v)
  return b"".join(out)


def _raw_parts(key_field, features, n, name):
  """Per-row pieces of a feature given as serialized Feature messages."""
  features = list(features)
  if len(features) != n:
    raise ValueError(f"raw feature {name!r}: expected {n} rows, got "
                     f"{len(features)}")
  # A MapEntry is key_field, then 12 varint(len) Feature; a row lacking the
  # feature (None) gets no entry at all.
  headers = _memo_map(
      lambda m: b"" if m < 0 else _entry_header_for_feature(key_field, m),
      [-1 if f is None else len(f) for f in features])
  return [headers, [b"" if f is None else bytes(f) for f in features]]


def _fixed_entries(key_field, list_kind, payload):
  """Entries whose payload has the same width in every row, as one matrix."""
  width = payload.shape[1]
  prefix = np.frombuffer(
      _entry_header(key_field, list_kind, _packed_len(width),
                    _packed_prefix(width)),
      np.uint8)
  block = np.empty((payload.shape[0], len(prefix) + width), np.uint8)
  block[:, :len(prefix)] = prefix
  block[:, len(prefix):] = payload
  return block


def _packed_prefix(payload_len):
  """The packed field's tag and length, in front of its payload."""
  # An empty packed field is omitted altogether, as protobuf does.
  return bytes([_LEN1]) + _varint(payload_len) if payload_len else b""


def _packed_len(payload_len):
  """Length of a list message holding one packed field of payload_len."""
  return 1 + _vlen(payload_len) + payload_len if payload_len else 0


def _entry_header(key_field, list_kind, list_len, list_prefix):
  """Map entry bytes up to the list's payload: 0A len key 12 len list_kind len."""
  feature_len = 1 + _vlen(list_len) + list_len
  return (_entry_header_for_feature(key_field, feature_len)
          + bytes([list_kind]) + _varint(list_len) + list_prefix)


def _entry_header_for_feature(key_field, feature_len):
  """Map entry bytes up to the Feature message: 0A len key 12 len."""
  entry_len = len(key_field) + 1 + _vlen(feature_len) + feature_len
  return (bytes([_LEN1]) + _varint(entry_len) + key_field + bytes([_FEATURE])
          + _varint(feature_len))


def _key_field(name):
  """The map entry's key field: 0A len UTF-8 name."""
  key = name.encode("utf-8")
  return bytes([_LEN1]) + _varint(len(key)) + key


def _is_bytes_column(values):
  """Whether a non-array column holds bytes/str values (vs numbers)."""
  # Decided by the first non-empty row (rows of [] fit either); every
  # row's values are type-checked while encoding.
  for v in values:
    if isinstance(v, (bytes, str)):
      return True
    if isinstance(v, (list, tuple)):
      if v:
        return isinstance(v[0], (bytes, str))
      continue
    return False
  return True


def _memo_map(fn, keys):
  """[fn(k) for k in keys], computing fn once per distinct key."""
  if isinstance(keys, np.ndarray):
    keys = keys.tolist()
  return list(map(_Memo(fn).__getitem__, keys))  # the loop stays in C


class _Memo(dict):
  """A dict that fills a missing key with fn(key)."""

  def __init__(self, fn):
    super().__init__()
    self._fn = fn

  def __missing__(self, key):
    value = self[key] = self._fn(key)
    return value


def _row_slices(block):
  """The rows of a uint8 matrix as bytes objects."""
  blob = block.tobytes()
  width = block.shape[1]
  return [blob[i:i + width] for i in range(0, len(blob), width)]


def _varints(v):
  """Varint-encodes a uint64 vector: (concatenated bytes, length of each)."""
  shifts = np.arange(0, 70, 7, dtype=np.uint64)
  groups = (v[:, None] >> shifts[None, :]) & np.uint64(0x7F)
  lens = 1 + (v[:, None] >= (np.uint64(1) << shifts[None, 1:])).sum(axis=1)
  pos = np.arange(10)[None, :]
  groups |= np.where(pos < (lens - 1)[:, None], np.uint64(0x80), np.uint64(0))
  return groups[pos < lens[:, None]].astype(np.uint8), lens


def _varint(n):
  """Varint-encodes a non-negative int."""
  out = bytearray()
  while n >= 0x80:
    out.append((n & 0x7F) | 0x80)
    n >>= 7
  out.append(n)
  return bytes(out)


def _vlen(n):
  """Length of n's varint encoding."""
  return max(1, (n.bit_length() + 6) // 7)


def _read_varint(buf, pos, end):
  """Decodes the varint at buf[pos:end]; returns (value, next position)."""
  if pos < end and buf[pos] < 0x80:  # the common one-byte case
    return buf[pos], pos + 1
  result = shift = 0
  while True:
    if pos >= end or shift > 63:
      raise ValueError("malformed Example: bad varint")
    b = buf[pos]
    pos += 1
    result |= (b & 0x7F) << shift
    if b < 0x80:
      return result, pos
    shift += 7


def _fields(buf, pos, end):
  """Yields (field, start, end) per length-delimited field; skips others."""
  while pos < end:
    tag, pos = _read_varint(buf, pos, end)
    wire = tag & 7
    if wire == 2:
      size, pos = _read_varint(buf, pos, end)
      if pos + size > end:
        raise ValueError("malformed Example: field overruns its message")
      yield tag >> 3, pos, pos + size
      pos += size
    elif wire == 0:
      _, pos = _read_varint(buf, pos, end)
    elif wire in (1, 5):
      pos += 8 if wire == 1 else 4
      if pos > end:
        raise ValueError("malformed Example: field overruns its message")
    else:
      raise ValueError(f"malformed Example: wire type {wire}")
