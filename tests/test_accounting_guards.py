"""Accounting guards for performance work: every record read is written or
dead-lettered, exactly once, whatever the input throws at the job.

- each bad-record kind, through the real job (reasons, raw bytes, counts) and
  alone at each place of a batch through the scorer;
- each kind of damaged TFRecord framing and gzip stream, under both
  `input.on_corrupt` policies, through the real job (also a byte-range split
  file);
- hypothesis fuzz through the job's ChunkScorer on a real session (what each
  unit of work runs): mutated and malformed Example protos mixed with good ones
  over several chunks, checked record by record against an oracle (each model
  alone, in its own session); damaged framing bytes through the worker's
  reader and on into the scorer;
- a record duplicated or a dead letter lost between steps: no `_SUCCESS`, no
  final-named file.

Real checkpoints (tests/tiny_models.py), real TFRecord files, the real job on
the DirectRunner; outputs read back by the `tfrecord` package in a TF-free
process (tests/jobs.py). The SIGKILL-and-rerun guard is
tests/test_bad_input.py::test_sigkill_then_rerun_gives_exactly_the_complete_output.
"""

import base64
import glob
import contextlib
import gzip
import hashlib
import io
import json
import os
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings, strategies as st

from tfcascade.pipeline.cli import main
from tests import tiny_models as tm
from tests.jobs import make_job, read_predictions_independently, summary_of
from tfcascade.transforms.formats import example_codec
from tfcascade.transforms.accounting import RunCounts
from tfcascade.transforms.engine import (CascadeSession, CascadeSpec, FeatureSpec, ModelSource,
                                         SessionSpec, StageSpec)
from tfcascade.transforms.formats import tfrecord_framing as framing
from tfcascade.transforms.reading.record_ranges import (CorruptInputError, ReadRange, RecordChunk,
                                                        read_range)
from tfcascade.transforms.publishing.run_registry import RunStaging
from tfcascade.transforms.scoring.chunk_scorer import ChunkScorer
from tfcascade.transforms.unit_runner import UnitSettings, run_unit

GATE = 0.99  # b runs where a.confidence < GATE (as in tests/jobs.py)


# --- Example builders ----------------------------------------------------------

def _floats(values):
  return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def _ints(values):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _bytes(values):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _example(**features):
  return tf.train.Example(features=tf.train.Features(
      feature=features)).SerializeToString()


def _overrun_last_entry(record, key):
  """`record`, whose last map entry is feature `key`, with that entry's length
  one byte too long: TF's parser accepts it, the raw passthrough copy
  (example_codec) rejects it (the case tests/test_transforms.py's fuzz found)."""
  data = bytearray(record)
  # The entry is `0a <len> 0a <keylen> <key> 12 <feature>`, up to the end.
  at = bytes(data).rindex(b"\x0a" + bytes([len(key)]) + key)
  assert data[at - 2] == 0x0A and at + data[at - 1] == len(data), "not the last entry"
  data[at - 1] += 1
  return bytes(data)


def _bad_record(kind, rid, pixels):
  """A record of one bad kind -> (bytes, what its dead letter's reason says)."""
  px = list(pixels)
  kinds = {
      "not_a_proto": (b"\xff\xfe definitely not a proto", "record does not parse"),
      "empty_record": (b"", "is required but could not be found"),
      "missing_pixels": (_example(id=_bytes([rid])), "Feature: pixels"),
      "missing_id": (_example(pixels=_floats(px)), "Feature: id"),
      "pixels_int64": (_example(id=_bytes([rid]), pixels=_ints([1] * 64)), "Key: pixels"),
      "pixels_bytes": (_example(id=_bytes([rid]), pixels=_bytes([b"x"] * 64)), "Key: pixels"),
      "pixels_short": (_example(id=_bytes([rid]), pixels=_floats(px[:3])), "Key: pixels"),
      "pixels_long": (_example(id=_bytes([rid]), pixels=_floats(px + [0.5])), "Key: pixels"),
      "pixels_no_list": (_example(id=_bytes([rid]), pixels=tf.train.Feature()),
                         "Feature: pixels"),
      "id_float": (_example(id=_floats([1.0]), pixels=_floats(px)), "Key: id"),
      "id_two_values": (_example(id=_bytes([rid, rid]), pixels=_floats(px)), "Key: id"),
      "id_no_value": (_example(id=_bytes([]), pixels=_floats(px)), "Key: id"),
      "nan_pixel": (_example(id=_bytes([rid]), pixels=_floats([float("nan")] + px[1:])),
                    "non-finite model output a/"),
      # -inf makes the logits infinite (not NaN): an Inf check, not only NaN.
      "inf_pixel": (_example(id=_bytes([rid]), pixels=_floats(px[:7] + [float("-inf")] + px[8:])),
                    "non-finite model output a/logits"),
  }
  return kinds[kind]


BAD_KINDS = ["not_a_proto", "empty_record", "missing_pixels", "missing_id", "pixels_int64",
             "pixels_bytes", "pixels_short", "pixels_long", "pixels_no_list", "id_float",
             "id_two_values", "id_no_value", "nan_pixel", "inf_pixel"]
NON_FINITE = {"nan_pixel", "inf_pixel"}


def _oracle(model_root, pixels):
  """Each model alone, in its own graph and session: per-row expected outputs."""
  a = tm.oracle_meta_graph(os.path.join(model_root, "a"), {"input:0": pixels},
                           {"logits": "logits:0", "confidence": "confidence:0"})
  b = tm.oracle_meta_graph(os.path.join(model_root, "b"),
                           {"input:0": a["logits"], "pixels:0": pixels}, "probs:0")
  return [{"a/logits": a["logits"][i], "a/confidence": a["confidence"][i],
           "b/ran": int(a["confidence"][i] < GATE), "b/probs": b[i]}
          for i in range(len(pixels))]


def _check_outputs(row, want):
  """row: feature name -> list of values."""
  np.testing.assert_allclose(row["a/logits"], want["a/logits"], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(row["a/confidence"], [want["a/confidence"]], rtol=1e-5, atol=1e-5)
  assert list(row["b/ran"]) == [want["b/ran"]]
  if want["b/ran"]:
    np.testing.assert_allclose(row["b/probs"], want["b/probs"], rtol=1e-5, atol=1e-5)
  else:
    assert list(row["b/probs"]) == [0.0] * 10  # fill_value


# --- the cascade DoFn, set up once per module ----------------------------------

@pytest.fixture(scope="module")
def models(tmp_path_factory):
  root = tmp_path_factory.mktemp("guard_models")
  tm.save_linear(str(root / "a"), seed=1)
  tm.save_two_input(str(root / "b"), seed=2)
  return str(root)


POOL = np.random.default_rng(21).normal(size=(16, 64)).astype("float32")


@pytest.fixture(scope="module")
def pool_oracle(models):
  return _oracle(models, POOL)


def _spec(models, parsed_id):
  return CascadeSpec(
      (FeatureSpec("id", "string"), FeatureSpec("pixels", "float32", (64,))),
      (StageSpec("a", ModelSource("meta_graph", f"{models}/a/model.meta"), f"{models}/a",
                 "a", {"input:0": "features.pixels"},
                 {"logits": "logits:0", "confidence": "confidence:0"}),
       StageSpec("b", ModelSource("meta_graph", f"{models}/b/model.meta"), f"{models}/b",
                 "b", {"input:0": "a.logits", "pixels:0": "features.pixels"},
                 {"probs": "probs:0"}, run_if=f"a.confidence < {GATE}")),
      SessionSpec(), ("id",) if parsed_id else ())


@contextlib.contextmanager
def _chunk_scorer(models, parsed_id, passthrough=("id",)):
  """The job's scorer (one real CascadeSession, TFRecord output)."""
  with CascadeSession(_spec(models, parsed_id)) as session:
    yield ChunkScorer(session, "tfrecord", passthrough, True)


@pytest.fixture(scope="module", params=["parsed_id", "raw_id"])
def scorer(request, models):
  """The scorer with passthrough `id`: parsed in-graph (what the job does
  for a required declared feature) or copied raw from the record."""
  with _chunk_scorer(models, request.param == "parsed_id") as made:
    yield made


def _feature_values(feature):
  kind = feature.WhichOneof("kind")
  return list(getattr(feature, kind).value) if kind else []


def _score(scorer, chunks):
  """Scores `chunks` as a unit does; returns (rows, dead letters, summed
  counts). Checks that every blob holds exactly the number of records it
  claims."""
  rows, dead, counts = [], [], RunCounts()
  blobs = []
  for chunk in chunks:
    scored = scorer.score(chunk)
    dead += scored.dead_letters
    counts.add(scored.counts())
    blobs += scored.blobs
  for claimed, blob in blobs:
    framed = [r for _, _, r in framing.iter_records(io.BytesIO(blob), "blob")]
    assert len(framed) == claimed, "a blob does not hold the records it claims"
    for record in framed:
      feature = tf.train.Example.FromString(record).features.feature
      rows.append({k: _feature_values(v) for k, v in feature.items()})
  return rows, dead, counts


def _check_bundle(inputs, rows, dead, counts, expect_written, expect_dead):
  """Every input accounted exactly once.

  Args:
    inputs: {(source, index): record bytes} of every record fed.
    rows, dead, counts: from _score.
    expect_written: {(source, index): (id, oracle)} that must be written.
    expect_dead: {(source, index): reason substring} that must be dead letters.
  """
  assert len(rows) + len(dead) == len(inputs)
  where = [(d["source"], d["index"]) for d in dead]
  assert len(set(where)) == len(where), "a record dead-lettered twice"
  for entry in dead:
    key = (entry["source"], entry["index"])
    assert key in inputs, f"dead letter names no input record: {key}"
    assert base64.b64decode(entry["raw_b64"]) == inputs[key]
    assert entry["error"]
  for key, reason in expect_dead.items():
    assert key in where, f"{key} should be a dead letter ({reason})"
    assert reason in dead[where.index(key)]["error"], dead[where.index(key)]["error"]
  by_id = {}
  for row in rows:
    by_id.setdefault(bytes(row["id"][0]) if row.get("id") else None, []).append(row)
  for key, (rid, want) in expect_written.items():
    assert key not in where, f"{key} is good but was dead-lettered: {dead[where.index(key)]}"
    assert len(by_id.get(rid, [])) == 1, f"{rid} written {len(by_id.get(rid, []))} times"
    _check_outputs(by_id[rid][0], want)
  # The counts the accounting and the summary use agree with what came out.
  assert sum(counts.dead_reasons.values()) == len(dead)
  unparsed = sum(d["error"].startswith("record does not parse") for d in dead)
  assert counts.rows_in["a"] == counts.rows_in["b"] == len(inputs) - unparsed
  assert counts.rows_run["a"] == counts.rows_in["a"]
  ran = sum(r["b/ran"] == [1] for r in rows)
  assert ran <= counts.rows_run["b"] <= ran + len(dead) - unparsed


@pytest.mark.parametrize("position", ["first", "middle", "last"])
@pytest.mark.parametrize("kind", BAD_KINDS)
def test_each_bad_record_kind_alone_in_a_batch(scorer, pool_oracle, kind, position):
  """One bad record among 8 good ones is isolated (wherever it sits), named
  by its source and index, and the good ones equal the oracle."""
  good = [(b"good-%d" % i, i) for i in range(8)]
  at = {"first": 0, "middle": 4, "last": 8}[position]
  bad, reason = _bad_record(kind, b"bad", POOL[15])
  records = [_example(id=_bytes([rid]), pixels=_floats(POOL[p])) for rid, p in good]
  records.insert(at, bad)
  chunk = RecordChunk("part-7.tfrecord", [(100 + i, r) for i, r in enumerate(records)])
  rows, dead, counts = _score(scorer, [chunk])
  good_keys = [k for k in range(100, 109) if k != 100 + at]
  _check_bundle({("part-7.tfrecord", i): r for i, r in chunk.records}, rows, dead, counts,
                {("part-7.tfrecord", k): (rid, pool_oracle[p])
                 for k, (rid, p) in zip(good_keys, good)},
                {("part-7.tfrecord", 100 + at): reason})
  assert len(dead) == 1


# --- fuzz: mutated and malformed Examples through the DoFn ---------------------

_GOOD = ["good", "good", "good", "extra_features", "merged"]
_BAD = ["missing_pixels", "missing_id", "pixels_int64", "pixels_bytes", "pixels_len",
        "id_float", "id_int64", "id_multi", "id_no_value", "non_finite", "random_bytes"]
_UNKNOWN = ["flipped", "truncated"]  # may or may not still parse
_NAMES = st.text(max_size=6).filter(lambda n: n not in ("id", "pixels"))
_FEATURE = st.one_of(
    st.lists(st.floats(width=32), max_size=5).map(_floats),
    st.lists(st.integers(-2**63, 2**63 - 1), max_size=5).map(_ints),
    st.lists(st.binary(max_size=8), max_size=3).map(_bytes))


def _good_id(pos):
  # Long and unlike any mutated record's id: byte flips cannot forge it.
  return b"good-%03d-%s" % (pos, hashlib.sha256(b"%d" % pos).hexdigest()[:12].encode())


def _draw_record(data, pos):
  """-> (kind, record bytes, pool index, id)."""
  kind = data.draw(st.sampled_from(_GOOD + _BAD + _UNKNOWN), label="kind")
  p = data.draw(st.integers(0, len(POOL) - 1), label="pool")
  px = [float(v) for v in POOL[p]]
  rid = _good_id(pos) if kind in _GOOD else b"m%d" % pos
  if kind == "good" or kind in _UNKNOWN:
    record = _example(id=_bytes([rid]), pixels=_floats(px))
  elif kind == "extra_features":
    extra = data.draw(st.dictionaries(_NAMES, _FEATURE, max_size=3), label="extra")
    record = _example(id=_bytes([rid]), pixels=_floats(px), **extra)
  elif kind == "merged":  # two serialized Examples concatenated = one merged message
    parts = [_example(pixels=_floats(px)), _example(id=_bytes([rid]))]
    if data.draw(st.booleans(), label="swap"):
      parts.reverse()
    record = b"".join(parts)
  elif kind == "missing_pixels":
    record = _example(id=_bytes([rid]))
  elif kind == "missing_id":
    record = _example(pixels=_floats(px))
  elif kind == "pixels_int64":
    record = _example(id=_bytes([rid]), pixels=_ints(
        [int(v * 100) for v in px[:data.draw(st.integers(0, 64), label="n")]]))
  elif kind == "pixels_bytes":
    record = _example(id=_bytes([rid]), pixels=_bytes([b"x"] * data.draw(
        st.integers(0, 64), label="n")))
  elif kind == "pixels_len":
    n = data.draw(st.integers(0, 130).filter(lambda n: n != 64), label="n")
    record = _example(id=_bytes([rid]), pixels=_floats((px * 3)[:n]))
  elif kind == "id_float":
    record = _example(id=_floats([1.5]), pixels=_floats(px))
  elif kind == "id_int64":
    record = _example(id=_ints([7]), pixels=_floats(px))
  elif kind == "id_multi":
    record = _example(id=_bytes([rid] * data.draw(st.integers(2, 3), label="n")),
                      pixels=_floats(px))
  elif kind == "id_no_value":
    record = _example(id=_bytes([]), pixels=_floats(px))
  elif kind == "non_finite":
    for i in data.draw(st.lists(st.integers(0, 63), min_size=1, max_size=3), label="at"):
      px[i] = data.draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
    record = _example(id=_bytes([rid]), pixels=_floats(px))
  elif kind == "random_bytes":  # too short to hold 64 floats: never a valid row
    record = data.draw(st.binary(max_size=100), label="bytes")
  if kind == "flipped":
    edits = data.draw(st.lists(st.tuples(st.integers(0, 10**4), st.integers(0, 255)),
                               min_size=1, max_size=4), label="edits")
    mutable = bytearray(record)
    for at, value in edits:
      mutable[at % len(mutable)] = value
    record = bytes(mutable)
  elif kind == "truncated":
    record = record[:data.draw(st.integers(0, len(record) - 1), label="cut")]
  return kind, record, p, rid


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_fuzzed_examples_through_the_dofn_are_each_accounted_once(scorer, pool_oracle, data):
  """Good, malformed and byte-mutated Examples over several chunks of two
  sources in one bundle: each written exactly once (good ones equal to the
  oracle) or dead-lettered naming its source and index, never both, never
  lost, and the counts agree."""
  n = data.draw(st.integers(1, 24), label="records")
  sizes = data.draw(st.lists(st.integers(1, 9), min_size=1, max_size=6), label="chunks")
  drawn = [_draw_record(data, pos) for pos in range(n)]
  chunks, inputs, expect_written, expect_dead = [], {}, {}, {}
  next_index = {"fuzz-a": data.draw(st.integers(0, 1000), label="start"), "fuzz-b": 0}
  pos = 0
  while pos < n:
    size = sizes[len(chunks) % len(sizes)]
    source = "fuzz-a" if len(chunks) % 2 == 0 else "fuzz-b"
    chunk = []
    for kind, record, p, rid in drawn[pos:pos + size]:
      key = (source, next_index[source])
      chunk.append((key[1], record))
      inputs[key] = record
      next_index[source] += 1
      if kind in _GOOD:
        expect_written[key] = (rid, pool_oracle[p])
      elif kind in _BAD:
        expect_dead[key] = ("non-finite model output a/" if kind == "non_finite"
                            else "record does not parse")
    chunks.append(RecordChunk(source, chunk))
    pos += size
  rows, dead, counts = _score(scorer, chunks)
  _check_bundle(inputs, rows, dead, counts, expect_written, expect_dead)


# --- the real job: bad records ---------------------------------------------------

@pytest.fixture(scope="module")
def job(tmp_path_factory):
  """tests/jobs.py's job: models, 3 gzip shards of 10 records, the config."""
  return make_job(tmp_path_factory.mktemp("guards"), n_records=30)


def _run(job, out, *extra):
  return main(["run", "--config", job["config"], "--set", f"output.path={out}",
               "--runner=DirectRunner", *extra])


def _dead_letters(out, kind="dead_letter"):
  entries = []
  for path in sorted(glob.glob(str(out / "dead_letter" / f"{kind}-*.jsonl"))):
    with open(path) as f:
      entries += [json.loads(line) for line in f if line.strip()]
  return entries


def _nothing_published(out):
  """No _SUCCESS and no final-named file of any kind."""
  assert not (out / "_SUCCESS").exists()
  assert not glob.glob(str(out / "predictions-*"))
  assert not (out / "dead_letter").exists()
  assert not (out / "run_summary.json").exists()


@pytest.mark.parametrize("reject_non_finite", [True, False])
def test_every_bad_record_kind_through_the_job(job, tmp_path, reject_non_finite):
  """A file mixing every bad-record kind with good records (and a record whose
  raw passthrough `note` cannot be copied): the bad ones are dead letters naming file,
  index and reason with their exact bytes; good ones equal the oracle; the
  counts add up."""
  rng = np.random.default_rng(4)
  plan = []  # (kind, record, pixels, id)
  for i, kind in enumerate(["good"] + [k for pair in zip(BAD_KINDS, ["good"] * len(BAD_KINDS))
                                       for k in pair] + ["passthrough_overrun"]):
    px = rng.normal(size=64).astype("float32")
    rid = b"row-%02d" % i
    # Every record that parses carries `note` (copied raw); records lacking
    # it: test_a_record_lacking_a_raw_passthrough_feature_is_still_written.
    if kind == "good":
      record = _example(id=_bytes([rid]), pixels=_floats(px), note=_bytes([b"n%d" % i]))
    elif kind == "passthrough_overrun":
      record = _overrun_last_entry(
          _example(id=_bytes([rid]), pixels=_floats(px))
          + _example(note=_bytes([b"n%d" % i])), b"note")
    else:
      record, _ = _bad_record(kind, rid, px)
      if kind in NON_FINITE:
        record += _example(note=_bytes([b"n%d" % i]))  # merged in
    plan.append((kind, record, px, rid))
  overrun = plan[-1][1]
  # The overrun case is what it should be: TF parses it, the raw copy does not.
  tf.io.parse_example([overrun], {"id": tf.io.FixedLenFeature([], tf.string)})
  with pytest.raises(ValueError):
    example_codec.raw_feature_bytes(overrun, ["note"])
  bad_file = tmp_path / "data" / "mixed.tfrecord.gz"
  bad_file.parent.mkdir()
  with tf.io.TFRecordWriter(str(bad_file), "GZIP") as w:
    for _, record, _, _ in plan:
      w.write(record)
  out = tmp_path / "out"
  assert _run(job, out, "--set", f"input.pattern={bad_file}",
              "--set", "output.passthrough=[id, note]",
              "--set", "dead_letter.max_fraction=1",
              "--set", f"dead_letter.non_finite_outputs={str(reject_non_finite).lower()}") == 0
  assert (out / "_SUCCESS").exists()
  expected_dead = {}
  for i, (kind, _, _, _) in enumerate(plan):
    if kind == "passthrough_overrun":
      expected_dead[i] = "passthrough features cannot be copied"
    elif kind != "good" and (reject_non_finite or kind not in NON_FINITE):
      expected_dead[i] = _bad_record(kind, b"x", np.zeros(64))[1]
  dead = {d["index"]: d for d in _dead_letters(out)}
  assert sorted(dead) == sorted(expected_dead)
  for i, reason in expected_dead.items():
    assert dead[i]["source"] == str(bad_file)
    assert reason in dead[i]["error"], (plan[i][0], dead[i]["error"])
    assert base64.b64decode(dead[i]["raw_b64"]) == plan[i][1]
  rows = {row["id"]: row for row in read_predictions_independently(out)}
  good = [i for i, (kind, _, _, _) in enumerate(plan) if kind == "good"]
  written = [i for i in range(len(plan)) if i not in expected_dead]
  assert sorted(rows) == sorted(plan[i][3].decode() for i in written)
  want = _oracle(os.path.join(job["root"], "models"), np.stack([plan[i][2] for i in good]))
  for i, oracle in zip(good, want):
    row = rows[plan[i][3].decode()]
    _check_outputs(row, oracle)
    assert row["note"] == "n%d" % i  # copied byte for byte
  for i in written:
    if plan[i][0] in NON_FINITE:  # kept: its outputs are not finite
      assert not np.isfinite(rows[plan[i][3].decode()]["a/logits"]).all()
  summary = summary_of(out)
  assert summary["records_read"] == len(plan)
  assert (summary["records_written"], summary["records_dead_lettered"]) == (
      len(written), len(expected_dead))
  assert summary["accounted"] and not summary["files_quarantined"]
  assert summary["stages"]["a"]["rows_in"] == len(written) + sum(
      1 for i in expected_dead if plan[i][0] in NON_FINITE | {"passthrough_overrun"})


# --- the real job: damaged framing under both policies -------------------------

DAMAGED_RECORDS = 6
DAMAGE_AT = 2


def _damaged_file_records():
  pixels = np.random.default_rng(7).normal(size=(DAMAGED_RECORDS, 64)).astype("float32")
  return tm.make_examples(pixels, [b"dmg-%03d" % i for i in range(DAMAGED_RECORDS)])


def _offset(records, index):
  return sum(16 + len(r) for r in records[:index])


def _flip(data, at, xor=0xFF):
  data = bytearray(data)
  data[at] ^= xor
  return bytes(data)


def _huge_length(data, at):
  header = struct.pack("<Q", 2 ** 60)
  return data[:at] + header + struct.pack("<I", framing.masked_crc32c(header)) + data[at + 12:]


def _framing_damage(kind, records):
  """Plain damaged framing of record DAMAGE_AT -> (bytes, reason substring)."""
  data = framing.frame_records(records)
  at = _offset(records, DAMAGE_AT)
  length = len(records[DAMAGE_AT])
  return {
      "length_bytes": (_flip(data, at + 1, 0x01), "length CRC mismatch"),
      "length_crc": (_flip(data, at + 9), "length CRC mismatch"),
      "data_bytes": (_flip(data, at + 12 + 5), "data CRC mismatch"),
      "data_crc": (_flip(data, at + 12 + length + 1), "data CRC mismatch"),
      "truncated_header": (data[:at + 5], "truncated header: 5 bytes"),
      "truncated_body": (data[:at + 12 + 40], "truncated record: header says"),
      "truncated_data_crc": (data[:at + 12 + length + 2], "truncated record: data CRC cut short"),
      "oversized_length": (_huge_length(data, at), f"length {2 ** 60} exceeds max_record_bytes"),
  }[kind]


def _gzip_salvage(gz):
  """Independently of the reader: how many leading records of a damaged gzip
  TFRecord stream decompress (zlib, fed byte by byte, keeps every byte decoded
  before an error) with valid framing -> (count, offset of the next)."""
  decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
  out = bytearray()
  for i in range(len(gz)):
    try:
      out += decoder.decompress(gz[i:i + 1])
    except zlib.error:
      break
    if decoder.eof:
      break
  count = offset = 0
  while offset + 12 <= len(out):
    length, length_crc = struct.unpack_from("<QI", out, offset)
    if framing.masked_crc32c(bytes(out[offset:offset + 8])) != length_crc:
      break
    end = offset + 12 + length
    if end + 4 > len(out) or struct.unpack_from("<I", out, end)[0] != (
        framing.masked_crc32c(bytes(out[offset + 12:end]))):
      break
    count, offset = count + 1, end + 4
  return count, offset


def _damaged_file(kind, records):
  """-> (file name, bytes, expected (index, offset) of the first record that
  cannot be read, what the reason starts with)."""
  at = _offset(records, DAMAGE_AT)
  if kind.startswith("gzip_framing_"):  # damaged framing inside a sound gzip stream
    data, reason = _framing_damage(kind[len("gzip_framing_"):], records)
    return "bad.tfrecord.gz", gzip.compress(data, mtime=0), (DAMAGE_AT, at), reason
  if not kind.startswith("gzip_"):
    if kind == "not_tfrecord":
      return "bad.tfrecord", b"id,pixels\n1,0.1 0.2\n" * 20, (0, 0), "length CRC mismatch"
    data, reason = _framing_damage(kind, records)
    return "bad.tfrecord", data, (DAMAGE_AT, at), reason
  gz = gzip.compress(framing.frame_records(records), mtime=0)
  end = _offset(records, len(records))
  name = "bad.tfrecord.gz"
  if kind == "gzip_truncated":
    bad = gz[:len(gz) // 2]
    return name, bad, _gzip_salvage(bad), "damaged gzip stream"
  if kind == "gzip_trailer_crc":
    return name, _flip(gz, len(gz) - 6, 0x01), (len(records), end), "damaged gzip stream"
  if kind == "gzip_trailer_size":
    return name, _flip(gz, len(gz) - 2, 0x01), (len(records), end), "damaged gzip stream"
  if kind == "gzip_header":
    return name, b"\x1f\x8b not really gzip", (0, 0), "damaged gzip stream"
  if kind == "gzip_deflate_flip":  # garbage out of deflate: caught by a CRC
    bad = _flip(gz, len(gz) // 2)
    return name, bad, _gzip_salvage(bad), ""
  raise AssertionError(kind)


DAMAGE_KINDS = [
    "length_bytes", "length_crc", "data_bytes", "data_crc", "truncated_header",
    "truncated_body", "truncated_data_crc", "oversized_length", "not_tfrecord",
    "gzip_framing_data_crc", "gzip_framing_truncated_header", "gzip_framing_oversized_length",
    "gzip_truncated", "gzip_trailer_crc", "gzip_trailer_size", "gzip_header",
    "gzip_deflate_flip"]


@pytest.mark.parametrize("kind", DAMAGE_KINDS)
def test_damaged_framing_under_both_policies(job, tmp_path, capsys, kind):
  """'fail': the run fails naming the file (and the record), nothing is
  published. 'quarantine' (rerun into the same output, which also shows a
  failed run's leftovers do not leak into the next): the records before the
  damage are written, one quarantine entry says where, records_read ==
  written + dead-lettered, _SUCCESS."""
  records = _damaged_file_records()
  name, data, expected, reason = _damaged_file(kind, records)
  bad_file = tmp_path / "in" / name
  bad_file.parent.mkdir()
  bad_file.write_bytes(data)
  pattern = f"input.pattern=[{job['root']}/data/part-*.tfrecord.gz, {bad_file}]"
  out = tmp_path / "out"
  capsys.readouterr()
  assert _run(job, out, "--set", pattern) == 2  # on_corrupt: fail (the default): fix the file, or quarantine
  err = capsys.readouterr().err
  assert f"corrupt TFRecord file {bad_file}" in err, err
  assert f"record {expected[0]} at byte offset {expected[1]}: {reason}" in err, err
  _nothing_published(out)

  assert _run(job, out, "--set", pattern, "--set", "input.on_corrupt=quarantine") == 0
  assert (out / "_SUCCESS").exists()
  assert not (out / "_staging").exists()
  entries = _dead_letters(out, "quarantine")
  assert len(entries) == 1
  entry = entries[0]
  assert entry["source"] == str(bad_file)
  assert entry["error"].startswith("corrupt TFRecord framing: ")
  assert reason in entry["error"]
  salvaged = entry["records_salvaged"]
  assert entry["index"] == salvaged
  assert (entry["index"], entry["offset"]) == expected
  assert not _dead_letters(out)  # a quarantine entry is no record dead letter
  ids = sorted(row["id"] for row in read_predictions_independently(out))
  assert ids == sorted([rid.decode() for rid in job["ids"]]
                       + ["dmg-%03d" % i for i in range(salvaged)])
  summary = summary_of(out)
  assert summary["files_quarantined"] == [str(bad_file)]
  assert summary["records_read"] == 30 + salvaged == summary["records_written"]
  assert summary["records_dead_lettered"] == 0 and summary["accounted"]


@pytest.mark.parametrize("policy", ["fail", "quarantine"])
def test_damage_inside_a_byte_range_split_file(job, tmp_path, capsys, policy):
  """An uncompressed file read in byte ranges (from its .idx) with a damaged
  record in its second range: 'fail' names it; 'quarantine' writes every
  record before the damage, never the damaged one, and accounts for all
  records it read."""
  pixels = np.random.default_rng(8).normal(size=(40, 64)).astype("float32")
  records = tm.make_examples(pixels, [b"split-%03d" % i for i in range(40)])
  path = tmp_path / "in" / "big.tfrecord"
  path.parent.mkdir()
  data = framing.frame_records(records)
  path.write_bytes(data)
  framing.write_index(framing.build_index(str(path)), framing.index_path(str(path)))
  damaged = 15  # in the second of 4 ranges
  at = _offset(records, damaged)
  path.write_bytes(_flip(data, at + 12 + 5))  # same size: the index still applies
  args = ["--set", f"input.pattern={path}", "--set", f"input.split_bytes={len(data) // 4}",
          "--set", f"input.on_corrupt={policy}"]
  out = tmp_path / "out"
  capsys.readouterr()
  if policy == "fail":
    assert _run(job, out, *args) == 2
    assert f"{path}: record {damaged} at byte offset {at}: data CRC mismatch" in (
        capsys.readouterr().err)
    _nothing_published(out)
    return
  assert _run(job, out, *args) == 0
  assert (out / "_SUCCESS").exists()
  entries = _dead_letters(out, "quarantine")
  assert [(e["source"], e["index"], e["offset"]) for e in entries] == [(str(path), damaged, at)]
  ids = {row["id"] for row in read_predictions_independently(out)}
  assert {"split-%03d" % i for i in range(damaged)} <= ids
  assert "split-%03d" % damaged not in ids
  assert ids <= {"split-%03d" % i for i in range(40)}
  summary = summary_of(out)
  assert summary["records_read"] == len(ids) == summary["records_written"]
  assert summary["records_dead_lettered"] == 0 and summary["accounted"]
  assert summary["files_quarantined"] == [str(path)]


# --- fuzz: damaged framing bytes through the worker's reader and the DoFn -------

_FRAMED = _damaged_file_records()


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory):
  return str(tmp_path_factory.mktemp("framing_fuzz") / "fuzz.tfrecord")


@pytest.fixture(scope="module")
def fuzz_unit_settings(tmp_path_factory):
  """A unit runner writing into a run staging of its own."""
  run = RunStaging(str(tmp_path_factory.mktemp("fuzz_out")), "fuzz-run")
  return UnitSettings(run=run, run_key={}, chunk_size=2, chunk_bytes=None,
                      max_record_bytes=1 << 20, on_corrupt="quarantine",
                      predictions_suffix=".tfrecord", compression="none")


def _read_task(path, compression, policy):
  """The worker's reader (read_range) on one file -> (chunks, quarantine
  entries, error raised or None)."""
  chunks, quarantine = [], []
  try:
    for item in read_range(ReadRange(path, compression), 2, 1 << 20, policy):
      (chunks if isinstance(item, RecordChunk) else quarantine).append(item)
  except CorruptInputError as e:
    return chunks, quarantine, e
  return chunks, quarantine, None


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.integers(0, 10**5), st.integers(0, 255)), max_size=3),
       cut=st.one_of(st.none(), st.integers(0, 10**5)),
       as_gzip=st.booleans())
def test_fuzzed_framing_is_read_as_a_prefix_and_accounted(scorer, fuzz_file, fuzz_unit_settings,
                                                          edits, cut, as_gzip):
  """Whatever happens to a file's bytes, the reader hands out exactly a prefix
  of its records and (quarantine) one entry at the first record it could not
  read, or (fail) raises naming the file; records_read counts exactly what
  it handed out; scored, each is written once."""
  framed = framing.frame_records(_FRAMED)
  data = bytearray(gzip.compress(framed, mtime=0) if as_gzip else framed)
  for at, value in edits:
    data[at % len(data)] = value
  if cut is not None:
    data = data[:cut % (len(data) + 1)]
  with open(fuzz_file, "wb") as f:
    f.write(bytes(data))
  compression = "gzip" if as_gzip else "none"
  chunks, quarantine, error = _read_task(fuzz_file, compression, "quarantine")
  assert error is None
  got = [record for chunk in chunks for record in chunk.records]
  assert all(chunk.source == fuzz_file for chunk in chunks)
  k = len(got)
  assert got == list(enumerate(_FRAMED))[:k]  # exactly a prefix, in order
  assert len(quarantine) <= 1
  if quarantine:
    entry = quarantine[0]
    assert (entry["source"], entry["index"], entry["records_salvaged"]) == (fuzz_file, k, k)
    assert entry["offset"] == _offset(_FRAMED, k)
  else:  # no damage reported: the bytes are exactly the k records (a cut at
    # a record boundary is not damage TFRecord framing can tell)
    if as_gzip:
      data = gzip.decompress(bytes(data))  # raises if the damage went unreported
    assert bytes(data) == framing.frame_records(_FRAMED[:k])
  # The 'fail' policy fails exactly when quarantine found damage, naming it.
  chunks_f, quarantine_f, error = _read_task(fuzz_file, compression, "fail")
  assert not quarantine_f
  assert [r for c in chunks_f for r in c.records] == got
  assert (error is not None) == bool(quarantine)
  if error is not None:
    assert f"corrupt TFRecord file {fuzz_file}: record {k} " in str(error)
  # On through the cascade: every record read is written, once.
  rows, dead, _ = _score(scorer, chunks)
  assert not dead
  assert sorted(bytes(row["id"][0]) for row in rows) == [b"dmg-%03d" % i for i in range(k)]
  # And as a whole unit of work: counted where read, written where counted.
  counts = run_unit(scorer, ReadRange(fuzz_file, compression), fuzz_unit_settings)
  assert counts.records_read == counts.records_in("predictions") == k
  assert sum(counts.quarantined.values()) == counts.records_in("quarantine") == len(quarantine)


# --- accounting mismatch: no _SUCCESS, no final-named file ----------------------

@pytest.mark.parametrize("fault", ["duplicate_blob", "lost_dead_letter"])
def test_an_accounting_mismatch_publishes_nothing(job, tmp_path, capsys, monkeypatch, fault):
  """A blob emitted twice (records_written > records_read) or a dead letter
  that never reaches its writer (records_read > written + dead-lettered): the
  run fails with the numbers, no _SUCCESS, no final-named file; the failed
  summary stays in the run's staging. (A record lost on its way is
  tests/test_success_contract.py::test_a_record_lost_between_steps_fails_the_run.)"""
  garbage = tmp_path / "in" / "garbage.tfrecord.gz"
  garbage.parent.mkdir()
  with tf.io.TFRecordWriter(str(garbage), "GZIP") as w:
    w.write(b"\xff\xfe not an Example")
  original = ChunkScorer.finish
  injected = []

  def finish_with_fault(self, chunk, inferred):
    scored = original(self, chunk, inferred)
    if not injected and fault == "lost_dead_letter" and scored.dead_letters:
      injected.append(scored.dead_letters.pop())  # never reaches a writer
    if not injected and fault == "duplicate_blob" and scored.blobs:
      injected.append(scored.blobs[0])
      scored.blobs.append(scored.blobs[0])
    return scored

  monkeypatch.setattr(ChunkScorer, "finish", finish_with_fault)
  out = tmp_path / "out"
  capsys.readouterr()
  assert _run(job, out, "--set",
              f"input.pattern=[{job['root']}/data/part-*.tfrecord.gz, {garbage}]",
              "--set", "dead_letter.max_fraction=1") == 1
  assert injected
  err = capsys.readouterr().err
  if fault == "duplicate_blob":
    extra = injected[0][0]
    assert (f"records_read 31 != records_written {30 + extra} + records_dead_lettered 1"
            in err), err
  else:
    assert "records_read 31 != records_written 30 + records_dead_lettered 0" in err, err
  _nothing_published(out)
  staged = glob.glob(str(out / "_staging" / "*" / "run_summary.json"))
  assert len(staged) == 1
  summary = json.load(open(staged[0]))
  assert summary["failed"] and not summary["accounted"]


# --- gaps this file found, fixed -----------------------------------------------

def test_a_record_lacking_a_raw_passthrough_feature_is_still_written(models):
  """`output.passthrough` naming an undeclared or optional feature that some
  records lack: those rows are written without it (as JSONL output does)."""
  with _chunk_scorer(models, parsed_id=True, passthrough=("id", "note")) as fn:
    records = [_example(id=_bytes([b"with"]), pixels=_floats(POOL[0]), note=_bytes([b"n"])),
               _example(id=_bytes([b"without"]), pixels=_floats(POOL[1]))]
    rows, dead, _ = _score(fn, [RecordChunk("s", list(enumerate(records)))])
  assert not dead
  assert {bytes(r["id"][0]): r.get("note") for r in rows} == {b"with": [b"n"], b"without": None}


def _gzip_with_invalid_block_after(records):
  """A gzip stream: `records` deflated and flushed to a byte boundary, then a
  deflate block of the reserved type 3 (invalid: zlib stops right there)."""
  deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
  body = deflate.compress(framing.frame_records(records)) + deflate.flush(zlib.Z_FULL_FLUSH)
  return body + b"\x07" + b"\x00" * 8  # BFINAL=1, BTYPE=11


def test_quarantine_salvages_every_good_record_before_deflate_damage(job, tmp_path):
  pixels = np.random.default_rng(9).normal(size=(20, 64)).astype("float32")
  records = tm.make_examples(pixels, [b"gz-%03d" % i for i in range(20)])
  bad = _gzip_with_invalid_block_after(records)
  if _gzip_salvage(bad) != (20, _offset(records, 20)):  # not an AssertionError
    pytest.fail("all 20 records should decode before the invalid block")
  bad_file = tmp_path / "in" / "bad.tfrecord.gz"
  bad_file.parent.mkdir()
  bad_file.write_bytes(bad)
  out = tmp_path / "out"
  assert _run(job, out, "--set", f"input.pattern={bad_file}",
              "--set", "input.on_corrupt=quarantine") == 0
  entry = _dead_letters(out, "quarantine")[0]
  assert (entry["index"], entry["records_salvaged"]) == (20, 20), entry


def test_a_raw_passthrough_feature_damaged_inside_is_dead_lettered(models):
  """Found by the DoFn fuzz: a byte flip that makes the id Feature's inner
  BytesList overrun the Feature. TF parses the record (it never reads `id`
  when it is copied raw), so the copy must check the Feature itself instead
  of writing an output Example no reader can parse."""
  with _chunk_scorer(models, parsed_id=False) as fn:
    good = _example(id=_bytes([b"m0"]), pixels=_floats(POOL[0]))
    at = good.index(b"\x12\x06\n\x04\n\x02m0") + 3  # the BytesList's length
    damaged = good[:at] + b"\x05" + good[at + 1:]  # 4 -> 5: overruns the Feature
    tf.io.parse_example([damaged], {"pixels": tf.io.FixedLenFeature([64], tf.float32)})
    rows, dead, _ = _score(fn, [RecordChunk("s", [(0, good), (1, damaged)])])
  assert [bytes(r["id"][0]) for r in rows] == [b"m0"]
  assert [d["index"] for d in dead] == [1]
  assert "passthrough features cannot be copied: feature 'id' is not a valid" in dead[0]["error"]
