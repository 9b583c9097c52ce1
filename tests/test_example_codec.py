"""Tests for transforms/formats/example_codec.py against TensorFlow's own protos/parser.

The oracle is a tf.train.Example built with the ordinary protobuf API from the
same values; the encoded bytes must parse to the same message (floats compared
bit for bit, NaN included) and, barring NaN, be byte-identical to protobuf's
deterministic serialization.
"""

import struct

import hypothesis
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
import numpy as np
import pytest
import tensorflow as tf

from tfcascade.transforms.formats import example_codec as ec
from tfcascade.transforms.formats import tfrecord_framing as framing

_INT64 = st.integers(-2**63, 2**63 - 1)
_NAMES = st.text(min_size=0, max_size=8)


@st.composite
def _column(draw, n):
  """(column_type, values) for one feature of n rows."""
  column_type = draw(st.sampled_from(
      ["float32", "float64", "int64", "int32", "bool", "bytes", "str",
       "bytes_lists"]))
  shape = (n,) + draw(st.sampled_from([(), (0,), (1,), (3,), (2, 2)]))
  if column_type in ("float32", "float64"):
    return column_type, draw(hnp.arrays(column_type, shape, elements=st.floats(
        width=32, allow_nan=True, allow_infinity=True)))
  if column_type == "int64":
    return column_type, draw(hnp.arrays(np.int64, shape, elements=_INT64))
  if column_type in ("int32", "bool"):
    return column_type, draw(hnp.arrays(column_type, shape))
  if column_type == "bytes":
    return column_type, draw(st.lists(st.binary(max_size=200), min_size=n,
                                      max_size=n))
  if column_type == "str":  # unicode ids, stored as UTF-8
    return column_type, draw(st.lists(st.text(max_size=20), min_size=n,
                                      max_size=n))
  return column_type, draw(st.lists(
      st.lists(st.one_of(st.binary(max_size=20), st.text(max_size=5)),
               max_size=4), min_size=n, max_size=n))


@st.composite
def _batch(draw):
  n = draw(st.integers(1, 4))
  names = draw(st.lists(_NAMES, min_size=1, max_size=4, unique=True))
  return n, {name: draw(_column(n)) for name in names}


def _utf8(v):
  return v.encode("utf-8") if isinstance(v, str) else v


def _oracle(typed_columns, i):
  """Row i as a tf.train.Example built the ordinary way."""
  feature = {}
  for name, (column_type, values) in typed_columns.items():
    if column_type.startswith("float"):
      f = tf.train.Feature(float_list=tf.train.FloatList(
          value=values[i].astype(np.float32).ravel().tolist()))
    elif column_type in ("int64", "int32", "bool"):
      f = tf.train.Feature(int64_list=tf.train.Int64List(
          value=values[i].astype(np.int64).ravel().tolist()))
    elif column_type == "bytes_lists":
      f = tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[_utf8(v) for v in values[i]]))
    else:
      f = tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[_utf8(values[i])]))
    feature[name] = f
  return tf.train.Example(features=tf.train.Features(feature=feature))


def _normalized(example):
  """name -> (list kind, values), floats as bit patterns and NaN as 'nan'."""
  out = {}
  for name, f in example.features.feature.items():
    list_kind = f.WhichOneof("kind")
    values = list(getattr(f, list_kind).value) if list_kind else []
    if list_kind == "float_list":
      values = ["nan" if v != v else struct.pack("<f", v) for v in values]
    out[name] = (list_kind, values)
  return out


def _entries(example_bytes):
  """The raw map entries of a serialized Example with one Features field."""
  assert example_bytes[0] == 0x0A
  size, pos = ec._read_varint(example_bytes, 1, len(example_bytes))
  assert pos + size == len(example_bytes)
  out = []
  while pos < len(example_bytes):
    assert example_bytes[pos] == 0x0A
    size, start = ec._read_varint(example_bytes, pos + 1, len(example_bytes))
    out.append(example_bytes[pos:start + size])
    pos = start + size
  return out


def _prefix_free(names):
  return not any(a != b and b.startswith(a) for a in names for b in names)


def _has_nan(typed_columns):
  return any(k.startswith("float") and np.isnan(v).any()
             for k, v in typed_columns.values())


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(_batch())
def test_round_trip_matches_protobuf(batch):
  n, typed_columns = batch
  encoded = ec.encode_examples({k: v for k, (_, v) in typed_columns.items()}, n)
  assert len(encoded) == n
  for i, data in enumerate(encoded):
    ref = _oracle(typed_columns, i)
    assert _normalized(tf.train.Example.FromString(data)) == _normalized(ref)
    if not _has_nan(typed_columns):
      expected = ref.SerializeToString(deterministic=True)
      # Same map entries, byte for byte; ours in bytewise key order, which is
      # upb's deterministic order too unless a key is a prefix of another
      # (upb puts "ab" before "a").
      assert sorted(_entries(data)) == sorted(_entries(expected))
      if _prefix_free(typed_columns):
        assert data == expected
    keys = [list(tf.train.Features.FromString(e).feature)[0].encode()
            for e in _entries(data)]  # each entry is a one-entry Features
    assert keys == sorted(keys)
    # Float payloads are the input's float32 bits, exactly (NaN payloads too).
    raw = ec.raw_feature_bytes(data, list(typed_columns))
    for name, (column_type, values) in typed_columns.items():
      if column_type.startswith("float") and values[i].size:
        assert raw[name].endswith(values[i].astype("<f4").tobytes())


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(_batch(), st.data())
def test_packed_examples_are_the_same_bytes(batch, data):
  """encode_examples_packed: a matrix only when every row has one width,
  and either way the bytes encode_examples gives, framed the same."""
  n, typed_columns = batch
  columns = {k: v for k, (_, v) in typed_columns.items()}
  passed = data.draw(st.lists(st.sampled_from(sorted(columns)), unique=True))
  source = ec.encode_examples(columns, n)
  raw = {p: [ec.raw_feature_bytes(s, [p]).get(p) for s in source] for p in passed}
  rest = {k: v for k, v in columns.items() if k not in passed}
  packed = ec.encode_examples_packed(rest, n, raw_features=raw)
  one_width = n > 0 and len(set(map(len, source))) == 1
  is_matrix = isinstance(packed, np.ndarray)
  assert one_width or not is_matrix
  assert ([bytes(r) for r in packed] if is_matrix else packed) == source
  if is_matrix:
    assert framing.frame_matrix(packed) == framing.frame_records(source)


def test_fixed_shape_rows_with_equal_ids_pack_into_one_matrix():
  """The job's common case (float outputs, ids of one length, a raw
  passthrough copied) takes the matrix path; a longer id falls back."""
  n = 5
  columns = {"b/probs": np.arange(n * 3, dtype=np.float32).reshape(n, 3),
             "id": [b"r%03d" % i for i in range(n)]}
  note = [ec.raw_feature_bytes(e, ["note"])["note"] for e in ec.encode_examples(
      {"note": [b"n%d" % i for i in range(n)]}, n)]
  packed = ec.encode_examples_packed(columns, n, raw_features={"note": note})
  assert isinstance(packed, np.ndarray) and packed.shape[0] == n
  assert [bytes(r) for r in packed] == ec.encode_examples(
      columns, n, raw_features={"note": note})
  columns["id"][2] = b"longer-id"
  assert isinstance(ec.encode_examples_packed(columns, n), list)


@hypothesis.settings(max_examples=100, deadline=None)
@hypothesis.given(_batch(), st.data())
def test_raw_passthrough_is_unchanged(batch, data):
  n, typed_columns = batch
  columns = {k: v for k, (_, v) in typed_columns.items()}
  source = ec.encode_examples(columns, n)
  passed = data.draw(st.lists(st.sampled_from(sorted(columns)), unique=True))
  raw = [ec.raw_feature_bytes(s, passed + ["not-there"]) for s in source]
  assert all("not-there" not in r for r in raw)
  rest = {k: v for k, v in columns.items() if k not in passed}
  out = ec.encode_examples(
      rest, n, raw_features={p: [r[p] for r in raw] for p in passed})
  assert out == source  # byte for byte: raw bytes are copied, order sorted


def test_raw_feature_bytes_of_protobuf_output():
  ref = tf.train.Example(features=tf.train.Features(feature={
      "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"r-1"])),
      "x": tf.train.Feature(float_list=tf.train.FloatList(value=[1.5, -2])),
      "n": tf.train.Feature(int64_list=tf.train.Int64List(value=[-7, 2**40])),
      "empty": tf.train.Feature(),
      "é": tf.train.Feature(bytes_list=tf.train.BytesList(value=[])),
  }))
  data = ref.SerializeToString()
  names = ["id", "x", "n", "empty", "é"]
  raw = ec.raw_feature_bytes(data, names)
  assert raw == {k: ref.features.feature[k].SerializeToString() for k in names}
  assert ec.raw_feature_bytes(data, []) == {}
  assert ec.raw_feature_bytes(b"", ["id"]) == {}
  rebuilt = ec.encode_examples({}, 1, raw_features={k: [raw[k]] for k in names})
  assert tf.train.Example.FromString(rebuilt[0]) == ref


def test_raw_feature_bytes_follows_protobuf_rules_on_odd_layouts():
  def ld(field, payload):  # a length-delimited field
    return bytes([field << 3 | 2]) + ec._varint(len(payload)) + payload

  f1 = tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))
  f2 = tf.train.Feature(int64_list=tf.train.Int64List(value=[2]))
  b1, b2 = f1.SerializeToString(), f2.SerializeToString()
  entries = (ld(1, ld(2, b1) + ld(1, b"a"))  # value before key
             + ld(1, ld(1, b"b") + ld(2, b1)) + ld(1, ld(1, b"b") + ld(2, b2))
             + ld(1, ld(2, b2)))  # no key: ""
  data = (ld(1, entries) + b"\x10\x05"  # an unknown varint field in Example
          + ld(1, b"\x18\x01" + ld(1, ld(1, b"c") + ld(2, b2))))  # 2nd Features
  parsed = tf.train.Example.FromString(data)
  raw = ec.raw_feature_bytes(data, ["a", "b", "", "c"])
  assert set(raw) == set(parsed.features.feature) == {"a", "b", "", "c"}
  for k, v in raw.items():
    assert tf.train.Feature.FromString(v) == parsed.features.feature[k]
  for bad in (data[:-1], b"\x0a\x05\x0a", b"\x0b"):
    with pytest.raises(ValueError, match="malformed"):
      ec.raw_feature_bytes(bad, ["a"])


def test_tensorflow_parse_example_reads_a_batch():
  n = 5
  rng = np.random.default_rng(1)
  ids = ["é-%d" % i for i in range(n)]
  x = rng.standard_normal((n, 64), dtype=np.float32)
  x[0, 0] = np.nan
  ran = np.array([0, 1, 1, 0, 1], np.int64)
  big = np.array([[-1, 2**62], [0, 1], [127, 128], [-2**63, 2**63 - 1],
                  [300, -300]], np.int64)  # varint widths differ per row
  tags = [[b"a"], [], [b"b", "c"], [b"x" * 20000], ["\u2603"]]
  encoded = ec.encode_examples(
      {"id": ids, "x": x, "ran": ran, "big": big, "tags": tags}, n)
  parsed = tf.io.parse_example(tf.constant(encoded), {
      "id": tf.io.FixedLenFeature([], tf.string),
      "x": tf.io.FixedLenFeature([64], tf.float32),
      "ran": tf.io.FixedLenFeature([], tf.int64),
      "big": tf.io.FixedLenFeature([2], tf.int64),
      "tags": tf.io.VarLenFeature(tf.string),
  })
  assert [v.decode() for v in parsed["id"].numpy()] == ids
  np.testing.assert_array_equal(parsed["x"].numpy().view(np.uint32),
                                x.view(np.uint32))
  np.testing.assert_array_equal(parsed["ran"].numpy(), ran)
  np.testing.assert_array_equal(parsed["big"].numpy(), big)
  tags_dense = tf.sparse.to_dense(parsed["tags"], default_value=b"").numpy()
  assert [list(r[r != b""]) for r in tags_dense] == [
      [_utf8(v) for v in row] for row in tags]


def test_large_rows_and_shapes():
  n = 3
  columns = {
      "wide": np.arange(n * 5000, dtype=np.float32).reshape(n, 5000),
      "cube": np.ones((n, 2, 3, 4), np.float64),
      "same_width_ints": np.full((n, 2), 1000, np.int32),  # 2-byte varints
      "u8": np.array([0, 200, 255], np.uint8),
      "blob": [b"y" * 70000, b"", b"z"],
      "fixed_s": np.array([b"ab", b"c", b""], dtype="S2"),
      "fixed_u": np.array(["é", "", "xyz"]),
      "obj": np.array([b"p", [b"q", b"r"], []], dtype=object),
  }
  typed_columns = {
      "wide": ("float32", columns["wide"]),
      "cube": ("float64", columns["cube"]),
      "same_width_ints": ("int32", columns["same_width_ints"]),
      "u8": ("int32", columns["u8"]),
      "blob": ("bytes", columns["blob"]),
      "fixed_s": ("bytes", [bytes(v) for v in columns["fixed_s"]]),
      "fixed_u": ("str", list(columns["fixed_u"])),
      "obj": ("bytes_lists", [[b"p"], [b"q", b"r"], []]),
  }
  for i, data in enumerate(ec.encode_examples(columns, n)):
    assert data == _oracle(typed_columns, i).SerializeToString(deterministic=True)


def test_numeric_lists_are_accepted():
  out = ec.encode_examples({"f": [[1.5, 2.0], [3.0, 4.0]], "i": [1, -2]}, 2)
  ex = tf.train.Example.FromString(out[1])
  assert list(ex.features.feature["f"].float_list.value) == [3.0, 4.0]
  assert list(ex.features.feature["i"].int64_list.value) == [-2]


@pytest.mark.parametrize("columns, raw, error, match", [
    ({"x": np.zeros((3, 2), np.float32)}, None, ValueError, "expected 2 rows"),
    ({"x": [b"a"]}, None, ValueError, "expected 2 rows"),
    ({"x": np.zeros(2, np.complex64)}, None, ValueError, "unsupported dtype"),
    ({"x": np.array([2**63, 1], np.uint64)}, None, ValueError, "exceeds int64"),
    ({"x": [[b"a"], [3]]}, None, TypeError, "not bytes or str"),
    ({"x": [[1.0], [1.0, 2.0]]}, None, ValueError, "same shape"),
    ({"x": [b"a", b"b"]}, {"x": [b"", b""]}, ValueError, "both"),
    ({}, {"x": [b""]}, ValueError, "expected 2 rows"),
])
def test_bad_input_is_rejected(columns, raw, error, match):
  with pytest.raises(error, match=match):
    ec.encode_examples(columns, 2, raw_features=raw)


def test_zero_rows_and_no_features():
  assert ec.encode_examples({"x": np.zeros((0, 3), np.float32)}, 0) == []
  assert ec.encode_examples({"x": [], "y": [[]] * 0, "z": np.zeros(0, int)},
                            0) == []
  with pytest.raises(ValueError, match="expected 0 rows"):
    ec.encode_examples({"x": np.zeros((1, 3), np.float32)}, 0)
  empty = tf.train.Example(features=tf.train.Features())
  assert ec.encode_examples({}, 2) == [
      empty.SerializeToString(deterministic=True)] * 2
