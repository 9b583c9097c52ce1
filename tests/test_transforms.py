"""The unit of work (transforms/unit_runner.py) and its Beam adapter
(transforms/beam/score_units.py): read -> score -> write -> commit, checked
against the engine, in a real pipeline, and across two worker processes."""

import glob
import io
import json
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
from tfcascade.transforms.accounting import RunCounts
from tfcascade.transforms.beam.score_units import ScoreUnits
from tfcascade.transforms.engine import CascadeSession
from tfcascade.transforms.formats import tfrecord_framing as framing
from tfcascade.transforms.publishing import unit_commits
from tfcascade.transforms.publishing.run_registry import RunStaging
from tfcascade.transforms.reading.record_ranges import (InputFile, ReadRange, RecordChunk,
                                                        plan_ranges)
from tfcascade.transforms.scoring.chunk_scorer import ChunkScorer
from tfcascade.transforms.unit_runner import UnitSettings, run_unit

DIRECT = ["--runner=DirectRunner"]
RUN_KEY = {"config": "test", "models": "test"}


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
  return tm.linear_cascade_spec(tmp_path_factory.mktemp("models"), "a.confidence < 0.99")


def _records(n, seed=0, prefix="id"):
  pixels = np.random.default_rng(seed).normal(size=(n, 64)).astype("float32")
  return tm.make_examples(pixels, [f"{prefix}-{i}".encode() for i in range(n)])


def _input_file(path, records, compression="none") -> InputFile:
  with tf.io.TFRecordWriter(str(path), "GZIP" if compression == "gzip" else None) as w:
    for r in records:
      w.write(r)
  stat = os.stat(path)
  return InputFile(str(path), compression, stat.st_size, stat.st_mtime)


def _settings(out, chunk_size=16, output_format_suffix=".tfrecord"):
  return UnitSettings(run=RunStaging(str(out), "test-run"), run_key=RUN_KEY,
                      chunk_size=chunk_size, chunk_bytes=None, max_record_bytes=1 << 20,
                      on_corrupt="fail", predictions_suffix=output_format_suffix,
                      compression="none")


def _rows(paths):
  rows = []
  for path in paths:
    for chunk in framing.read_record_chunks(path):
      rows += [tf.train.Example.FromString(r).features.feature for _, r in chunk]
  return rows


def test_a_unit_writes_the_engines_values_and_commits_itself(spec, tmp_path):
  """run_unit: every record scored once with exactly the engine's values,
  the counts of what it wrote, and a commit naming those files."""
  records = _records(50, seed=5) + [b"garbage"]
  file = _input_file(tmp_path / "in.tfrecord", records)
  settings = _settings(tmp_path / "out")
  task = plan_ranges(file, 1 << 30, 1 << 20)[0]
  with CascadeSession(spec) as session:
    expected = session.run(records[:50])
    counts = run_unit(ChunkScorer(session, "tfrecord", ["id"], True), task, settings)
  assert counts.records_read == 51
  assert counts.records_in("predictions") == 50 and counts.records_in("dead_letter") == 1
  assert counts.rows_in["a"] == 50 and counts.rows_run["a"] == 50
  assert counts.rows_run["b"] == int(expected.outputs["b/ran"].sum())
  [reason] = counts.dead_reasons
  assert reason.startswith("record does not parse")
  rows = _rows([f.path for f in counts.files if f.kind == "predictions"])
  assert [r["id"].bytes_list.value[0] for r in rows] == [f"id-{i}".encode() for i in range(50)]
  # (Batches of other sizes than the engine's one call: float sums may
  # differ in the last bit.)
  for i, row in enumerate(rows):
    np.testing.assert_allclose(row["a/logits"].float_list.value,
                               expected.outputs["a/logits"][i], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(row["b/probs"].float_list.value,
                               expected.outputs["b/probs"][i], rtol=1e-4, atol=1e-6)
    assert row["b/ran"].int64_list.value[0] == expected.outputs["b/ran"][i]
  commits = unit_commits.read_commits(settings.run)
  assert list(commits) == [unit_commits.unit_key(task)]
  committed = commits[unit_commits.unit_key(task)]
  assert committed.counts == counts and committed.run_key == RUN_KEY
  assert committed.input_bytes == file.size


def test_jsonl_copies_raw_passthrough(spec, tmp_path):
  """`id` is not in spec.passthrough here, so it is copied from the records."""
  file = _input_file(tmp_path / "in.tfrecord", _records(5, seed=2))
  settings = _settings(tmp_path / "out", output_format_suffix=".jsonl")
  with CascadeSession(spec) as session:
    counts = run_unit(ChunkScorer(session, "jsonl", ["id"], True),
                      plan_ranges(file, 1 << 30, 1 << 20)[0], settings)
  [predictions] = [f.path for f in counts.files if f.kind == "predictions"]
  rows = [json.loads(line) for line in open(predictions)]
  assert [r["id"] for r in rows] == [[f"id-{i}"] for i in range(5)]
  assert all(len(r["a/logits"]) == 10 for r in rows)


def test_score_units_in_a_pipeline(spec, tmp_path):
  """The Beam adapter over two files (plain and gzip): one RunCounts per unit,
  units already done are skipped."""
  files = [_input_file(tmp_path / "p0.tfrecord", _records(25, 1, "p0")),
           _input_file(tmp_path / "p1.tfrecord.gz", _records(30, 2, "p1"), "gzip"),
           _input_file(tmp_path / "p2.tfrecord", _records(7, 3, "p2"))]
  done = {unit_commits.unit_key(plan_ranges(files[2], 1 << 30, 1 << 20)[0])}
  settings = _settings(tmp_path / "out", chunk_size=10)
  with TestPipeline(options=PipelineOptions(DIRECT)) as p:
    counts = p | ScoreUnits(files, spec, "tfrecord", ["id"], True, settings,
                            split_bytes=1 << 30, done=done)
    assert_that(counts | beam.Map(lambda c: c.records_read), equal_to([25, 30]))
    total = counts | beam.CombineGlobally(RunCounts.total)
    assert_that(total | beam.Map(lambda c: (c.records_in("predictions"), c.rows_in["b"])),
                equal_to([(55, 55)]), label="Total")
  written = glob.glob(os.path.join(settings.run.files_dir, "predictions-*"))
  ids = sorted(r["id"].bytes_list.value[0] for r in _rows(written))
  assert ids == sorted([f"p0-{i}".encode() for i in range(25)]
                       + [f"p1-{i}".encode() for i in range(30)])
  assert len(unit_commits.read_commits(settings.run)) == 2


_VALID = _records(8, seed=9)


@pytest.fixture(scope="module")
def scorer(spec):
  with CascadeSession(spec) as session:
    yield ChunkScorer(session, "tfrecord", ["id"], True)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 7), st.lists(
    st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=4),
    st.integers(0, 400)), min_size=1, max_size=12))
# Found by this test: TF's parser accepts the record, the raw passthrough copy
# of `id` does not; it must become a dead letter, not a crash.
@example(mutations=[(0, [(280, 15)], 0)])
def test_mutated_examples_are_all_accounted_for(scorer, mutations):
  """Byte flips and truncations of Example protos: never a crash, and every
  record is either written or dead-lettered."""
  records = []
  for source, flips, cut in mutations:
    data = bytearray(_VALID[source])
    for pos, value in flips:
      data[pos % len(data)] = value
    records.append(bytes(data[:max(len(data) - cut, 0)]))
  scored = scorer.score(RecordChunk("fuzz", list(enumerate(records))))
  written = sum(1 for _, blob in scored.blobs
                for _ in framing.iter_records(io.BytesIO(blob), "blob"))
  assert written == sum(n for n, _ in scored.blobs)
  assert written + len(scored.dead_letters) == len(records)
  assert len({d["index"] for d in scored.dead_letters}) == len(scored.dead_letters)
  assert all(d["error"] for d in scored.dead_letters)


@pytest.mark.slow
def test_one_big_file_is_split_over_two_workers(spec, tmp_path):
  """60k records in ONE uncompressed file, split into byte ranges from its
  index, scored by 2 worker processes: each planned range is one unit,
  committed once, and every record is written exactly once."""
  n = 60_000
  file = _input_file(tmp_path / "big.tfrecord", _records(n, seed=7))
  framing.write_index(framing.build_index(file.path), framing.index_path(file.path))
  split = file.size // 8
  planned = plan_ranges(file, split, 1 << 20)
  assert len(planned) >= 8
  settings = _settings(tmp_path / "out", chunk_size=1024)
  options = PipelineOptions(DIRECT + ["--direct_running_mode=multi_processing",
                                      "--direct_num_workers=2"])
  with beam.Pipeline(options=options) as p:
    _ = (p | ScoreUnits([file], spec, "tfrecord", ["id"], True, settings, split_bytes=split)
         | beam.Map(lambda c: c.records_read))
  commits = unit_commits.read_commits(settings.run)
  assert sorted(commits) == sorted(unit_commits.unit_key(t) for t in planned)
  for task in planned:
    committed = commits[unit_commits.unit_key(task)]
    assert ReadRange(*committed.task) == task
    assert committed.input_bytes == task.end_offset - task.start_offset
  assert sum(c.counts.records_read for c in commits.values()) == n
  ids = [r["id"].bytes_list.value[0] for c in commits.values()
         for r in _rows([f.path for f in c.counts.files if f.kind == "predictions"])]
  assert sorted(ids) == sorted(f"id-{i}".encode() for i in range(n))
