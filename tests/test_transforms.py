"""TestPipeline tests of the Beam building blocks: read, cascade DoFn, write."""

import bisect
import math
import os

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import HealthCheck, example, given, settings, strategies as st

from tests import tiny_models as tm
from tfcascade.transforms.formats import tfrecord_framing as framing
from tfcascade.transforms.engine import CascadeSpec, FeatureSpec, ModelSource, StageSpec
from tfcascade.transforms.accounting import RunCounts
from tfcascade.transforms.beam.read_chunks import ReadRecordChunks
from tfcascade.transforms.reading.record_ranges import RecordChunk
from tfcascade.transforms.beam.score_chunks import (COUNTS_TAG, DEAD_LETTER_TAG, RunCascade, _CascadeDoFn,
                                    process_bundle)

DIRECT = ["--runner=DirectRunner"]


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
  root = tmp_path_factory.mktemp("models")
  a = tm.save_linear(str(root / "a"), seed=1)
  b = tm.save_two_input(str(root / "b"), seed=2)
  return CascadeSpec(
      (FeatureSpec("id", "string"), FeatureSpec("pixels", "float32", (64,))),
      (StageSpec("a", ModelSource("meta_graph", f"{a}/model.meta"), a, "a",
                 {"input:0": "features.pixels"},
                 {"logits": "logits:0", "confidence": "confidence:0"}),
       StageSpec("b", ModelSource("meta_graph", f"{b}/model.meta"), b, "b",
                 {"input:0": "a.logits", "pixels:0": "features.pixels"},
                 {"probs": "probs:0"}, run_if="a.confidence < 0.99")))


def _records(n, seed=0):
  pixels = np.random.default_rng(seed).normal(size=(n, 64)).astype("float32")
  return tm.make_examples(pixels, [f"id-{i}".encode() for i in range(n)])


def _write_tfrecord(path, records, options=None):
  with tf.io.TFRecordWriter(str(path), options) as w:
    for r in records:
      w.write(r)
  return str(path)


def test_read_record_chunks_keeps_provenance(tmp_path):
  files = []
  for shard, compression in enumerate(["none", "gzip"]):
    records = [f"s{shard}-r{i}".encode() for i in range(25)]
    path = _write_tfrecord(tmp_path / f"part-{shard}", records,
                           "GZIP" if compression == "gzip" else None)
    files.append((path, compression, os.path.getsize(path)))
  with TestPipeline(options=PipelineOptions(DIRECT)) as p:
    read = p | ReadRecordChunks(files, chunk_size=10, max_record_bytes=1 << 20,
                                on_corrupt="fail", split_bytes=1 << 30)
    flat = read.chunks | beam.FlatMap(
        lambda c: [(os.path.basename(c.source), i, r) for i, r in c.records])
    assert_that(flat, equal_to([(f"part-{s}", i, f"s{s}-r{i}".encode())
                                for s in range(2) for i in range(25)]))
    sizes = read.chunks | "Sizes" >> beam.Map(lambda c: len(c.records) <= 10)
    assert_that(sizes, equal_to([True] * 6), label="ChunksAreBatchSized")


def test_run_cascade_outputs_blobs_dead_letters_and_counts(spec):
  records = _records(20)
  chunk = RecordChunk("src.tfrecord", [(i, r) for i, r in enumerate(records)]
                      + [(20, b"garbage")])
  with TestPipeline(options=PipelineOptions(DIRECT)) as p:
    scored = p | beam.Create([chunk]) | RunCascade(spec, passthrough=["id"])
    # Each (records, blob) pair says how many records its blob holds.
    n_written = scored.blobs | beam.Map(
        lambda pair: (pair[0], sum(1 for _ in framing.iter_records(
            __import__("io").BytesIO(pair[1]), "blob"))))
    assert_that(n_written | beam.Map(lambda c: c[0] == c[1]) | "AllTrue" >> beam.CombineGlobally(all),
                equal_to([True]), label="CountsMatchBlobs")
    assert_that(n_written | beam.Map(lambda c: c[1]) | "Sum" >> beam.CombineGlobally(sum),
                equal_to([20]))
    assert_that(scored[DEAD_LETTER_TAG] | beam.Map(lambda d: (d["source"], d["index"])),
                equal_to([("src.tfrecord", 20)]), label="DeadLetters")
    totals = scored[COUNTS_TAG] | beam.CombineGlobally(RunCounts.total)
    assert_that(totals | beam.Map(lambda c: (c.rows_in["a"], c.rows_run["a"])),
                equal_to([(20, 20)]), label="Counts")
    assert_that(totals | beam.Map(lambda c: [(r.startswith("record does not parse"), n)
                                             for r, n in c.dead_reasons.items()]),
                equal_to([[(True, 1)]]), label="DeadReasons")


def _encoded_blobs(spec, output_format, records):
  """Runs a fresh cascade DoFn (passthrough `id`) on one chunk of records;
  returns the output blobs it yields."""
  dofn = _CascadeDoFn(spec, beam.utils.shared.Shared(), output_format, ["id"], True)
  dofn.setup()
  try:
    return [o[1] for o in process_bundle(dofn, [RecordChunk("s", list(enumerate(records)))])
            if isinstance(o, tuple)]
  finally:
    dofn.teardown()


def test_run_cascade_outputs_equal_the_engine(spec):
  """The DoFn's encoded outputs carry exactly the engine's values."""
  from tfcascade.transforms.engine import CascadeSession  # pylint: disable=g-import-not-at-top
  records = _records(30, seed=5)
  with CascadeSession(spec) as session:
    expected = session.run(records)
  blobs = _encoded_blobs(spec, "tfrecord", records)
  import io  # pylint: disable=g-import-not-at-top
  rows = [tf.train.Example.FromString(r).features.feature
          for blob in blobs for _, _, r in framing.iter_records(io.BytesIO(blob), "blob")]
  assert len(rows) == 30
  for i, row in enumerate(rows):
    assert row["id"].bytes_list.value[0] == f"id-{i}".encode()
    np.testing.assert_array_equal(row["a/logits"].float_list.value,
                                  expected.outputs["a/logits"][i])
    np.testing.assert_array_equal(row["b/probs"].float_list.value,
                                  expected.outputs["b/probs"][i])
    assert row["b/ran"].int64_list.value[0] == expected.outputs["b/ran"][i]


@pytest.fixture(scope="module")
def dofn(spec):
  fn = _CascadeDoFn(spec, beam.utils.shared.Shared(), "tfrecord", ["id"], True)
  fn.setup()
  yield fn
  fn.teardown()


_VALID = _records(8, seed=9)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 7), st.lists(
    st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=4),
    st.integers(0, 400)), min_size=1, max_size=12))
# Found by this test: TF's parser accepts the record, the raw passthrough copy
# of `id` does not; it must become a dead letter, not a crash.
@example(mutations=[(0, [(280, 15)], 0)])
def test_mutated_examples_are_all_accounted_for(dofn, mutations):
  """Byte flips and truncations of Example protos: never a crash, and every
  record is either written or dead-lettered."""
  import io  # pylint: disable=g-import-not-at-top
  records = []
  for source, flips, cut in mutations:
    data = bytearray(_VALID[source])
    for pos, value in flips:
      data[pos % len(data)] = value
    records.append(bytes(data[:max(len(data) - cut, 0)]))
  outputs = process_bundle(dofn, [RecordChunk("fuzz", list(enumerate(records)))])
  written = sum(1 for o in outputs if isinstance(o, tuple)
                for _ in framing.iter_records(io.BytesIO(o[1]), "blob"))
  dead = [o.value for o in outputs
          if isinstance(o, beam.pvalue.TaggedOutput) and o.tag == DEAD_LETTER_TAG]
  assert written + len(dead) == len(records)
  assert len({d["index"] for d in dead}) == len(dead)
  assert all(d["error"] for d in dead)


@pytest.mark.slow
def test_one_big_file_is_split_over_two_workers(tmp_path):
  """1M records in ONE uncompressed file: byte-range splits from its index
  are read independently (on 2 worker processes), none lost or doubled.

  Which process gets which range is the runner's choice, so the check is on
  the ranges: every chunk lies inside one planned range, and each range is
  read completely, exactly once."""
  n = 1_000_000
  path = str(tmp_path / "big.tfrecord")
  with open(path, "wb") as f:
    for start in range(0, n, 100_000):
      f.write(framing.frame_records([b"%d" % i for i in range(start, start + 100_000)]))
  framing.write_index(framing.build_index(path), framing.index_path(path))
  size = os.path.getsize(path)
  out = str(tmp_path / "seen")
  options = PipelineOptions(DIRECT + ["--direct_running_mode=multi_processing",
                                      "--direct_num_workers=2"])
  with beam.Pipeline(options=options) as p:
    chunks = p | ReadRecordChunks([(path, "none", size)], chunk_size=4096,
                                  max_record_bytes=1 << 20, on_corrupt="fail",
                                  split_bytes=size // 8)
    _ = (chunks.chunks
         | beam.Map(lambda c: "%d %d %d %d" % (
             os.getpid(), c.records[0][0], len(c.records),
             sum(int(r) == i for i, r in c.records)))
         | beam.io.WriteToText(out))
  chunks_seen, covered = [], np.zeros(n, dtype=np.int64)
  for name in os.listdir(tmp_path):
    if name.startswith("seen"):
      for line in open(tmp_path / name):
        _, first, count, matching = map(int, line.split())
        assert matching == count  # each record sits at its own index
        chunks_seen.append((first, count))
        covered[first:first + count] += 1
  assert (covered == 1).all()
  planned = math.ceil(size / (size // 8))  # as _PlanRanges: size / split_bytes
  starts = [start for start, _, _ in framing.split_ranges(
      framing.read_index(framing.index_path(path)), planned)] + [n]
  assert len(starts) == planned + 1 >= 9
  for first, count in chunks_seen:
    inside = bisect.bisect_right(starts, first) - 1
    assert first + count <= starts[inside + 1], "a chunk straddles two ranges"


def test_jsonl_copies_raw_passthrough(spec):
  """`id` is not in spec.passthrough here, so it is copied from the records."""
  import json  # pylint: disable=g-import-not-at-top
  records = _records(5, seed=2)
  blobs = _encoded_blobs(spec, "jsonl", records)
  rows = [json.loads(line) for blob in blobs for line in blob.decode().splitlines()]
  assert [r["id"] for r in rows] == [[f"id-{i}"] for i in range(5)]
  assert all(len(r["a/logits"]) == 10 for r in rows)
