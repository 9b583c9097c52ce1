"""Tests for transforms/formats/tfrecord_framing.py.

Files are written by TensorFlow's own TFRecordWriter (an independent
implementation), then damaged byte by byte. The index is checked against the
`tfrecord` package's tfrecord2idx, run in a subprocess because `tfrecord`
cannot be imported in a process that imported TensorFlow.
"""

import gzip
import io
import os
import pickle
import struct
import subprocess
import sys
import tracemalloc

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest
import tensorflow as tf

from tfcascade.transforms.formats import tfrecord_framing as fr

RECORDS = [b"", b"a", b"hello world" * 3, bytes(range(256)) * 4, b"x" * 70,
           b"\x00" * 13, b"last record"]


def _offsets(records):
  """Header offset of each record, plus the end of the file."""
  out = [0]
  for r in records:
    out.append(out[-1] + 16 + len(r))
  return out


def _write(path, records, gzip_=False):
  options = tf.io.TFRecordOptions(compression_type="GZIP" if gzip_ else "")
  with tf.io.TFRecordWriter(str(path), options=options) as w:
    for r in records:
      w.write(r)
  return str(path)


def _read_all(path, **kwargs):
  return [rec for chunk in fr.read_record_chunks(path, **kwargs)
          for rec in chunk]


def _damage(path, offset, xor=0xFF):
  data = bytearray(open(path, "rb").read())
  data[offset] ^= xor
  open(path, "wb").write(bytes(data))


def _read_until_error(path, **kwargs):
  """Returns (good records yielded, the CorruptRecordError raised)."""
  good = []
  with pytest.raises(fr.CorruptRecordError) as info:
    for chunk in fr.read_record_chunks(path, chunk_size=2, **kwargs):
      good.extend(chunk)
  return good, info.value


@pytest.fixture
def plain(tmp_path):
  return _write(tmp_path / "data.tfrecord", RECORDS)


def test_reads_tf_written_files(tmp_path, plain):
  expected = list(enumerate(RECORDS))
  gz = _write(tmp_path / "data.tfrecord.gz", RECORDS, gzip_=True)
  gz_no_suffix = _write(tmp_path / "data.bin", RECORDS, gzip_=True)
  assert _read_all(plain) == expected
  assert _read_all(gz) == expected
  assert _read_all(gz_no_suffix) == expected  # sniffed
  assert _read_all(gz_no_suffix, compression="gzip") == expected
  assert _read_all(plain, compression="none") == expected
  assert fr.detect_compression(plain) == "none"
  assert fr.detect_compression(gz) == "gzip"
  assert fr.detect_compression(gz_no_suffix) == "gzip"
  assert fr.detect_compression(gz_no_suffix, "NONE") == "none"
  with pytest.raises(ValueError, match="compression"):
    fr.detect_compression(plain, "snappy")


def test_chunking_and_offsets(plain):
  chunks = list(fr.read_record_chunks(plain, chunk_size=3))
  assert [len(c) for c in chunks] == [3, 3, 1]
  with open(plain, "rb") as f:
    got = [(i, o) for i, o, _ in fr.iter_records(f, plain)]
  assert got == list(enumerate(_offsets(RECORDS)[:-1]))


def test_short_reads_and_custom_open_fn(plain):
  """Streams may return fewer bytes than asked (sockets, some FileSystems)."""

  class Trickle(io.RawIOBase):

    def __init__(self, data):
      self._f = io.BytesIO(data)

    def readable(self):
      return True

    def seekable(self):
      return True

    def seek(self, pos, whence=0):
      return self._f.seek(pos, whence)

    def read(self, n=-1):
      return self._f.read(min(n, 5) if n >= 0 else 5)

  data = open(plain, "rb").read()
  opened = []

  def open_fn(path):
    opened.append(path)
    return Trickle(data)

  assert _read_all("mem://x", open_fn=open_fn) == list(enumerate(RECORDS))
  assert opened == ["mem://x"]  # sniffing reused the one stream


@pytest.mark.parametrize("where, reason", [
    (lambda o: o + 12 + 5, "data CRC mismatch"),  # a data byte
    (lambda o: o + 1, "length CRC mismatch"),  # a length byte
    (lambda o: o + 9, "length CRC mismatch"),  # a length-CRC byte
    (lambda o: o + 12 + len(RECORDS[3]) + 2, "data CRC mismatch"),  # data CRC
])
def test_damage_is_located(plain, where, reason):
  offsets = _offsets(RECORDS)
  _damage(plain, where(offsets[3]))
  good, err = _read_until_error(plain)
  assert good == list(enumerate(RECORDS[:3]))  # everything before the damage
  assert (err.path, err.offset, err.index, err.reason) == (
      plain, offsets[3], 3, reason)
  message = str(err)
  assert "\n" not in message
  copy = pickle.loads(pickle.dumps(err))  # crosses process boundaries in Beam
  assert (copy.path, copy.index, str(copy)) == (err.path, err.index, message)
  for part in (plain, str(offsets[3]), "record 3", reason):
    assert part in message


def _set_length(path, offset, length, fix_crc):
  data = bytearray(open(path, "rb").read())
  raw_len = struct.pack("<Q", length)
  data[offset:offset + 8] = raw_len
  if fix_crc:
    data[offset + 8:offset + 12] = struct.pack("<I", fr.masked_crc32c(raw_len))
  open(path, "wb").write(bytes(data))


class _RecordingStream(io.BufferedReader):
  """A file whose read() calls are recorded: how many bytes each asked for.

  A read of more than 1 MiB is recorded but not done (it returns b""), so a
  reader that trusts a huge length fails the test instead of the machine.
  """

  def __init__(self, path):
    super().__init__(io.FileIO(path, "rb"))
    self.requested = []

  def read(self, size=-1):
    self.requested.append(size)
    return b"" if size < 0 or size > 1 << 20 else super().read(size)


@pytest.mark.parametrize("fix_crc", [True, False])
def test_huge_length_fails_without_reading_or_allocating(plain, fix_crc):
  offset = _offsets(RECORDS)[2]
  _set_length(plain, offset, 2**60, fix_crc)
  streams = []

  def open_fn(path):
    streams.append(_RecordingStream(path))
    return streams[-1]

  tracemalloc.start()
  try:
    good, err = _read_until_error(plain, open_fn=open_fn)
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  # Nothing is asked for beyond the good records and the damaged header:
  # the huge length is rejected before any read (or buffer) for its data.
  requested = [n for s in streams for n in s.requested]
  assert requested and all(0 <= n <= 16 + max(map(len, RECORDS))
                           for n in requested)
  assert peak < 1 << 20
  assert (err.offset, err.index) == (offset, 2)
  assert len(good) == 2
  if fix_crc:
    assert err.reason == (
        "length 1152921504606846976 exceeds max_record_bytes 67108864")
  else:
    assert err.reason == "length CRC mismatch"


def test_max_record_bytes_applies_to_valid_records(plain):
  _, err = _read_until_error(plain, max_record_bytes=len(RECORDS[3]) - 1)
  assert err.index == 3
  assert err.reason.startswith(f"length {len(RECORDS[3])} exceeds")
  assert len(_read_all(plain, max_record_bytes=len(RECORDS[3]))) == len(RECORDS)


@pytest.mark.parametrize("cut, reason", [
    (5, "truncated header: 5 bytes"),
    (12 + 37,
     f"truncated record: header says {len(RECORDS[3])} bytes, 37 left"),
    (12 + len(RECORDS[3]) + 2,
     "truncated record: data CRC cut short (2 of 4 bytes)"),
])
def test_truncated_tail(plain, cut, reason):
  offset = _offsets(RECORDS)[3]
  data = open(plain, "rb").read()[:offset + cut]
  open(plain, "wb").write(data)
  good, err = _read_until_error(plain)
  assert len(good) == 3
  assert (err.offset, err.index, err.reason) == (offset, 3, reason)


def test_empty_files(tmp_path):
  empty = tmp_path / "empty.tfrecord"
  empty.write_bytes(b"")
  assert _read_all(str(empty)) == []
  assert fr.detect_compression(str(empty)) == "none"
  assert fr.build_index(str(empty)) == []
  assert _read_all(_write(tmp_path / "none.tfrecord", [])) == []
  assert _read_all(_write(tmp_path / "none.gz", [], gzip_=True)) == []


def test_not_a_tfrecord_file(tmp_path):
  text = tmp_path / "notes.txt"
  text.write_text("this is not a TFRecord file, just some text\n" * 10)
  _, err = _read_until_error(str(text))
  assert (err.offset, err.index, err.reason) == (0, 0, "length CRC mismatch")
  tiny = tmp_path / "tiny.txt"
  tiny.write_text("hi")
  _, err = _read_until_error(str(tiny))
  assert err.reason == "truncated header: 2 bytes"


def test_damaged_gzip(tmp_path):
  gz = _write(tmp_path / "data.tfrecord.gz", RECORDS * 50, gzip_=True)
  data = open(gz, "rb").read()
  open(gz, "wb").write(data[:len(data) // 2])
  _, err = _read_until_error(gz)
  assert err.reason.startswith("damaged gzip stream")
  # A flipped byte in the trailer (gzip CRC32) is caught at end of stream.
  open(gz, "wb").write(data[:-6] + bytes([data[-6] ^ 1]) + data[-5:])
  good, err = _read_until_error(gz)
  assert len(good) == len(RECORDS) * 50
  assert err.index == len(RECORDS) * 50 and "gzip" in err.reason


def test_gzip_rejects_byte_ranges(tmp_path):
  gz = _write(tmp_path / "data.tfrecord.gz", RECORDS, gzip_=True)
  sniffed = _write(tmp_path / "data.bin", RECORDS, gzip_=True)
  for path in (gz, sniffed):
    with pytest.raises(ValueError, match="byte ranges"):
      _read_all(path, start_offset=16)
    with pytest.raises(ValueError, match="gzip"):
      fr.build_index(path)


def test_frame_records_writes_what_tensorflow_writes(tmp_path):
  path = _write(tmp_path / "tf.tfrecord", RECORDS)
  with open(path, "rb") as f:
    assert fr.frame_records(RECORDS) == f.read()
  assert fr.frame_records([]) == b""


def _valid_frames(data):
  """Independent check that each yielded record is a CRC-valid frame."""
  def check(offset, record):
    n = len(record)
    header = data[offset:offset + 12]
    assert struct.unpack("<Q", header[:8])[0] == n
    assert struct.unpack("<I", header[8:])[0] == fr.masked_crc32c(header[:8])
    assert data[offset + 12:offset + 12 + n] == record
    assert struct.unpack("<I", data[offset + 12 + n:offset + 16 + n])[0] == (
        fr.masked_crc32c(record))
  return check


_SMALL = [b"abc", b"", b"0123456789" * 3]


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                   max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 10**6)),
    as_gzip=st.booleans())
def test_fuzz_only_valid_records_or_corrupt_error(edits, cut, as_gzip):
  framed = fr.frame_records(_SMALL)
  data = bytearray(gzip.compress(framed) if as_gzip else framed)
  for pos, value in edits:
    data[pos % len(data)] = value
  if cut is not None:
    data = data[:cut % (len(data) + 1)]
  data = bytes(data)
  plain = data
  if as_gzip:
    try:
      plain = gzip.decompress(data)
    except Exception:  # the reader must report it as CorruptRecordError
      plain = None
  try:
    # compression="gzip" pins the codec: a damaged magic must not flip modes.
    records = _read_all("fuzz", open_fn=lambda _: io.BytesIO(data),
                        compression="gzip" if as_gzip else "none")
  except fr.CorruptRecordError:
    return
  assert plain is not None  # undetected gzip damage would be a bug
  check = _valid_frames(plain)
  offset = 0
  for _, record in records:
    check(offset, record)
    offset += 16 + len(record)
  assert offset == len(plain)


def test_index_matches_tfrecord_package(tmp_path, plain):
  big = _write(tmp_path / "big.tfrecord",
               [os.urandom(n) for n in range(0, 3000, 37)])
  for path in (plain, big):
    theirs = str(tmp_path / "theirs.idx")
    # `tfrecord` and TensorFlow cannot share a process (duplicate protobuf
    # symbols), so the oracle runs in its own interpreter.
    subprocess.run(
        [sys.executable, "-c",
         "import sys; from tfrecord.tools.tfrecord2idx import create_index; "
         "create_index(sys.argv[1], sys.argv[2])", path, theirs],
        check=True, timeout=60)
    ours = fr.build_index(path)
    assert fr.read_index(theirs) == ours
    mine = fr.index_path(path)
    assert mine == path + ".idx"
    fr.write_index(ours, mine)
    assert open(mine).read() == open(theirs).read()
    assert fr.read_index(mine) == ours


@pytest.mark.parametrize("text, problem", [
    ("0 17\n17 zz\n", "idx:2: expected 'offset length'"),
    ("0 17 3\n", "idx:1: expected"),
    ("0 15\n", "idx:1: record length 15"),
    ("0 17\n20 17\n", "idx:2: offset 20, expected 17"),
    ("5 17\n", "idx:1: offset 5, expected 0"),
])
def test_read_index_rejects_garbage(tmp_path, text, problem):
  idx = tmp_path / "bad.idx"
  idx.write_text(text)
  with pytest.raises(ValueError, match=problem):
    fr.read_index(str(idx))


def test_build_index_finds_damage(plain):
  offsets = _offsets(RECORDS)
  _damage(plain, offsets[4] + 12)
  with pytest.raises(fr.CorruptRecordError) as info:
    fr.build_index(plain)
  assert (info.value.index, info.value.offset) == (4, offsets[4])


@pytest.mark.parametrize("num_splits", [1, 2, 3, 4, 7, 50, 1000])
def test_split_ranges_cover_each_record_once(tmp_path, num_splits):
  records = [os.urandom(n) for n in [5000] + list(range(0, 600, 7)) + [2000]]
  path = _write(tmp_path / "s.tfrecord", records)
  entries = fr.build_index(path)
  ranges = fr.split_ranges(entries, num_splits)
  assert 1 <= len(ranges) <= min(num_splits, len(records))
  offsets = [o for o, _ in entries]
  end = offsets[-1] + entries[-1][1]
  assert ranges[0][:2] == (0, 0) and ranges[-1][2] == end
  for (_, _, stop), (nxt_index, nxt_start, _) in zip(ranges, ranges[1:]):
    assert stop == nxt_start and offsets[nxt_index] == nxt_start
  got = []
  for start_index, start, stop in ranges:
    assert start < stop
    part = _read_all(path, start_index=start_index, start_offset=start,
                     end_offset=stop)
    assert part and part[0][0] == start_index
    got.extend(part)
  assert got == list(enumerate(records))
  if num_splits == 4:  # roughly equal bytes: within one big record of ideal
    sizes = [stop - start for _, start, stop in ranges]
    assert max(sizes) - min(sizes) <= 5016 + 2016


def test_split_ranges_edge_cases():
  assert fr.split_ranges([], 4) == []
  assert fr.split_ranges([(0, 16)], 4) == [(0, 0, 16)]
  with pytest.raises(ValueError):
    fr.split_ranges([(0, 16)], 0)


def test_range_arguments_are_checked(plain):
  with pytest.raises(ValueError, match="chunk_size"):
    _read_all(plain, chunk_size=0)
  with pytest.raises(ValueError, match="byte range"):
    _read_all(plain, start_offset=32, end_offset=16)


@pytest.mark.parametrize("options", [None, "GZIP"])
def test_count_records_walks_framing_and_finds_truncation(tmp_path, options):
  path = str(tmp_path / "f.tfrecord")
  with tf.io.TFRecordWriter(path, options) as w:
    for i in range(57):
      w.write(b"x" * i)
  assert fr.count_records(path) == 57
  if options is None:
    data = open(path, "rb").read()
    with open(path, "wb") as f:
      f.write(data[:-3])
    with pytest.raises(fr.CorruptRecordError, match="truncated"):
      fr.count_records(path)
    with open(path, "wb") as f:
      f.write(data[:20] + bytes([data[20] ^ 1]) + data[21:])  # record 1's length
    with pytest.raises(fr.CorruptRecordError, match="length CRC mismatch"):
      fr.count_records(path)


@pytest.mark.parametrize("n,width", [(0, 5), (1, 0), (3, 0), (1, 7), (64, 300)])
def test_frame_matrix_frames_like_frame_records(n, width):
  rng = np.random.default_rng(n * 1000 + width)
  records = rng.integers(0, 256, (n, width), dtype=np.uint8)
  rows = [bytes(r) for r in records]
  assert fr.frame_matrix(records) == fr.frame_records(rows)


def test_gzip_zero_padding_is_skipped_like_gzipfile_does(tmp_path):
  """Zero bytes after a gzip member (padding) are not damage; zeros where a
  member must start are."""
  import gzip  # pylint: disable=g-import-not-at-top
  member = gzip.compress(fr.frame_records(RECORDS))
  padded = tmp_path / "padded.tfrecord.gz"
  padded.write_bytes(member + b"\0" * 70000 + member + b"\0")
  assert [r for _, r in _read_all(str(padded))] == RECORDS * 2
  leading = tmp_path / "leading.tfrecord.gz"
  leading.write_bytes(b"\0\0" + member)
  _, err = _read_until_error(str(leading))
  assert err.reason.startswith("damaged gzip stream")


# --- the byte cap (config batch_bytes) ---------------------------------------

def _sizes(chunks):
  return [[len(r) for _, r in c] for c in chunks]


def test_chunks_end_at_the_byte_cap(tmp_path):
  """A chunk ends before the record that would take it past chunk_bytes, and
  at exactly chunk_bytes; the records still come in order, none lost."""
  records = [bytes([i]) * n for i, n in enumerate([40, 30, 30, 50, 49, 1, 100, 10, 10])]
  path = _write(tmp_path / "capped.tfrecord", records)
  chunks = list(fr.read_record_chunks(path, chunk_size=1024, chunk_bytes=100))
  assert _sizes(chunks) == [[40, 30, 30], [50, 49, 1], [100], [10, 10]]
  assert [r for c in chunks for r in c] == list(enumerate(records))
  # One byte less: 40+30+30 no longer fits, so the third 30 starts chunk 2.
  chunks = list(fr.read_record_chunks(path, chunk_size=1024, chunk_bytes=99))
  assert _sizes(chunks) == [[40, 30], [30, 50], [49, 1], [100], [10, 10]]


def test_a_record_larger_than_the_cap_is_a_chunk_alone(tmp_path):
  records = [b"a" * 10, b"b" * 5000, b"c" * 10, b"d" * 10, b"e" * 7000, b"f" * 3000]
  for gz in (False, True):
    path = _write(tmp_path / f"big-{gz}.tfrecord", records, gzip_=gz)
    chunks = list(fr.read_record_chunks(path, chunk_size=8, chunk_bytes=1000))
    assert _sizes(chunks) == [[10], [5000], [10, 10], [7000], [3000]]
    assert [i for c in chunks for i, _ in c] == list(range(len(records)))
  # A one-byte cap: the empty record and the 1-byte one fit together (1
  # byte); every other record is a chunk alone.
  path = _write(tmp_path / "tiny.tfrecord", RECORDS)
  chunks = list(fr.read_record_chunks(path, chunk_bytes=1))
  assert chunks == [[(0, b""), (1, b"a")]] + [[(i, r)] for i, r in enumerate(RECORDS)][2:]


def test_the_count_cap_still_applies_under_a_byte_cap(plain):
  chunks = list(fr.read_record_chunks(plain, chunk_size=2, chunk_bytes=10**9))
  assert [len(c) for c in chunks] == [2, 2, 2, 1]
  # Both caps: whichever comes first ends the chunk. RECORDS' sizes are
  # 0, 1, 33, 1024, 70, 13, 11.
  chunks = list(fr.read_record_chunks(plain, chunk_size=3, chunk_bytes=90))
  assert _sizes(chunks) == [[0, 1, 33], [1024], [70, 13], [11]]  # count, bytes, bytes
  chunks = list(fr.read_record_chunks(plain, chunk_size=3, chunk_bytes=100))
  assert _sizes(chunks) == [[0, 1, 33], [1024], [70, 13, 11]]  # count, bytes, count
  assert [r for c in chunks for r in c] == list(enumerate(RECORDS))


def test_byte_capped_ranges_keep_indices_and_offsets_exact(tmp_path):
  """Split ranges read with a byte cap: every record once, with its index in
  the file; each chunk within the cap unless it is a single record."""
  rng = np.random.default_rng(7)
  records = [os.urandom(int(n)) for n in rng.integers(0, 3000, 300)]
  path = _write(tmp_path / "ranges.tfrecord", records)
  entries = fr.build_index(path)
  got = []
  for start_index, start, stop in fr.split_ranges(entries, 5):
    for chunk in fr.read_record_chunks(path, chunk_size=50, chunk_bytes=8000,
                                       start_index=start_index, start_offset=start,
                                       end_offset=stop):
      assert len(chunk) <= 50
      assert len(chunk) == 1 or sum(len(r) for _, r in chunk) <= 8000
      got.extend(chunk)
  assert got == list(enumerate(records))
  with open(path, "rb") as f:
    offsets = [o for _, o, _ in fr.iter_records(f, path)]
  assert offsets == _offsets(records)[:-1] == [o for o, _ in entries]


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(sizes=st.lists(st.integers(0, 300), max_size=40),
                  chunk_size=st.integers(1, 12), chunk_bytes=st.integers(1, 700))
def test_byte_cap_chunks_are_greedy_and_within_both_caps(sizes, chunk_size, chunk_bytes):
  records = [bytes([k % 256]) * n for k, n in enumerate(sizes)]
  data = fr.frame_records(records)
  chunks = list(fr.read_record_chunks("mem", open_fn=lambda _: io.BytesIO(data),
                                      compression="none", chunk_size=chunk_size,
                                      chunk_bytes=chunk_bytes))
  assert [r for c in chunks for r in c] == list(enumerate(records))
  held = [sum(len(r) for _, r in c) for c in chunks]
  for k, chunk in enumerate(chunks):
    assert chunk and len(chunk) <= chunk_size
    assert held[k] <= chunk_bytes or len(chunk) == 1
    if k + 1 < len(chunks):  # it ended because a cap was reached
      assert (len(chunk) == chunk_size or held[k] >= chunk_bytes
              or held[k] + len(chunks[k + 1][0][1]) > chunk_bytes)


def test_damage_after_byte_capped_chunks_yields_the_good_tail(tmp_path):
  records = [b"r" * 60] * 5
  path = _write(tmp_path / "damaged.tfrecord", records)
  _damage(path, _offsets(records)[4] + 12 + 3)  # record 4's data
  good = []
  with pytest.raises(fr.CorruptRecordError) as info:
    for chunk in fr.read_record_chunks(path, chunk_bytes=130):
      good.append(chunk)
  assert _sizes(good) == [[60, 60], [60, 60]]
  assert info.value.index == 4


def test_chunk_bytes_must_be_positive(plain):
  for bad in (0, -5):
    with pytest.raises(ValueError, match="chunk_bytes"):
      _read_all(plain, chunk_bytes=bad)
