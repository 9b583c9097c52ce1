"""Records read inside TensorFlow (scoring.unit_batches, engine.in_graph_reader)
give exactly what the Python path gives: the same rows, dead letters,
quarantine entries and counts, on clean and damaged input, gzip and
uncompressed, whole files and byte ranges; and the reader is really used
where it can be (records_read_in_graph), and not where it must not be."""

import concurrent.futures
import dataclasses
import glob
import json
import os
import threading

import numpy as np
import pytest
import tensorflow as tf

from tests import tiny_models as tm
from tfcascade.transforms.engine import CascadeSession
from tfcascade.transforms.engine.in_graph_reader import SLOTS
from tfcascade.transforms.formats import tfrecord_framing as framing
from tfcascade.transforms.publishing.run_registry import RunStaging
from tfcascade.transforms.reading.record_ranges import (CorruptInputError, InputFile,
                                                        plan_ranges)
from tfcascade.transforms.scoring.chunk_scorer import ChunkScorer
from tfcascade.transforms.unit_runner import UnitSettings, run_unit

CHUNK = 64


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
  return tm.linear_cascade_spec(tmp_path_factory.mktemp("models"), "a.confidence < 0.3",
                                passthrough=("id",))


@pytest.fixture(scope="module")
def session(spec):
  with CascadeSession(spec) as s:
    yield s


def _records(n, seed=0, width=64, nan_at=()):
  pixels = np.random.default_rng(seed).normal(size=(n, width)).astype("float32")
  for i in nan_at:
    pixels[i, 3] = np.nan
  return tm.make_examples(pixels, [f"id-{i}".encode() for i in range(n)])


def _write(path, records, compression="none") -> InputFile:
  with tf.io.TFRecordWriter(str(path), "GZIP" if compression == "gzip" else None) as w:
    for r in records:
      w.write(r)
  stat = os.stat(path)
  return InputFile(str(path), compression, stat.st_size, stat.st_mtime)


def _settings(out, in_graph, **changes):
  base = UnitSettings(run=RunStaging(str(out), "run"), run_key={"config": "t"},
                      chunk_size=CHUNK, chunk_bytes=8 << 20, max_record_bytes=1 << 20,
                      on_corrupt="quarantine", predictions_suffix=".tfrecord",
                      compression="none", read_in_graph=in_graph)
  return dataclasses.replace(base, **changes)


def _outcome(counts):
  """What a unit wrote: rows in order, dead-letter and quarantine entries."""
  out = {}
  for f in sorted(counts.files, key=lambda f: f.kind):
    if f.kind == "predictions":
      out[f.kind] = [r for c in framing.read_record_chunks(f.path) for _, r in c]
    else:
      out[f.kind] = [json.loads(line) for line in open(f.path)]
  return out


def _both(session, task_list, tmp_path, scorer_args=(["id"], True), **changes):
  """Runs the tasks with and without the in-graph reader; returns
  (in-graph counts list, python counts list)."""
  scorer = ChunkScorer(session, "tfrecord", *scorer_args)
  results = {}
  for in_graph in (True, False):
    settings = _settings(tmp_path / f"out-{in_graph}", in_graph, **changes)
    results[in_graph] = [run_unit(scorer, task, settings) for task in task_list]
  return results[True], results[False]


def _assert_same(fast, slow):
  for f, s in zip(fast, slow, strict=True):
    assert _outcome(f) == _outcome(s)
    assert (f.records_read, f.rows_in, f.rows_run, f.dead_reasons, f.quarantined) == \
        (s.records_read, s.rows_in, s.rows_run, s.dead_reasons, s.quarantined)
    assert f.histograms == s.histograms
    assert s.records_read_in_graph == 0


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_clean_input_is_read_in_graph_after_the_first_chunk(session, tmp_path, compression):
  file = _write(tmp_path / "in", _records(1000), compression)
  fast, slow = _both(session, plan_ranges(file, 1 << 30, 1 << 20), tmp_path)
  _assert_same(fast, slow)
  assert fast[0].records_read == 1000
  assert fast[0].records_read_in_graph == 1000 - CHUNK


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_a_record_that_does_not_parse_is_reread_in_python(session, tmp_path, compression):
  records = _records(1000)
  records[500] = b"not an Example"
  file = _write(tmp_path / "in", records, compression)
  fast, slow = _both(session, plan_ranges(file, 1 << 30, 1 << 20), tmp_path)
  _assert_same(fast, slow)
  assert _outcome(fast[0])["dead_letter"][0]["error"].startswith("record does not parse")
  # batches before the bad one stayed in TF; from its batch on, Python
  assert fast[0].records_read_in_graph == 448 - CHUNK


def test_a_non_finite_output_is_dead_lettered_as_in_python(session, tmp_path):
  file = _write(tmp_path / "in", _records(600, nan_at=[300]))
  fast, slow = _both(session, plan_ranges(file, 1 << 30, 1 << 20), tmp_path)
  _assert_same(fast, slow)
  assert "non-finite" in _outcome(fast[0])["dead_letter"][0]["error"]
  assert 0 < fast[0].records_read_in_graph < 600


def _damage(path, at):
  data = bytearray(open(path, "rb").read())
  data[at] ^= 0xFF
  with open(path, "wb") as f:
    f.write(data)
  stat = os.stat(path)
  return stat.st_size, stat.st_mtime


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_damaged_framing_is_quarantined_as_in_python(session, tmp_path, compression):
  file = _write(tmp_path / "in", _records(1000), compression)
  size, mtime = _damage(file.path, file.size * 2 // 3)
  file = file._replace(size=size, modified=mtime)
  fast, slow = _both(session, plan_ranges(file, 1 << 30, 1 << 20), tmp_path)
  _assert_same(fast, slow)
  assert fast[0].quarantined == {file.path: 1}
  assert 0 < fast[0].records_read_in_graph < fast[0].records_read < 1000


def test_damaged_framing_under_fail_fails_the_unit_the_same_way(session, tmp_path):
  file = _write(tmp_path / "in", _records(1000))
  size, mtime = _damage(file.path, file.size // 2)
  task = plan_ranges(file._replace(size=size, modified=mtime), 1 << 30, 1 << 20)[0]
  scorer = ChunkScorer(session, "tfrecord", ["id"], True)
  errors = []
  for in_graph in (True, False):
    with pytest.raises(CorruptInputError) as e:
      run_unit(scorer, task, _settings(tmp_path / f"o{in_graph}", in_graph, on_corrupt="fail"))
    errors.append(str(e.value))
  assert errors[0] == errors[1]


def test_byte_ranges_end_where_the_next_begins(session, tmp_path):
  """A big uncompressed file split in ranges: each range scores its own
  records only, the in-graph reader stopping inside a batch at the range's
  end."""
  file = _write(tmp_path / "in", _records(3000))
  ranges = plan_ranges(file, file.size // 5, 1 << 20)
  assert len(ranges) == 5
  fast, slow = _both(session, ranges, tmp_path)
  _assert_same(fast, slow)
  ids = [tf.train.Example.FromString(r).features.feature["id"].bytes_list.value[0]
         for c in fast for r in _outcome(c)["predictions"]]
  assert ids == [f"id-{i}".encode() for i in range(3000)]
  assert all(c.records_read_in_graph > 0 for c in fast)


def test_a_record_over_max_record_bytes_is_quarantined_as_in_python(session, tmp_path):
  records = _records(400)
  records[250] = _records(1, width=4096)[0]  # ~16 KB
  file = _write(tmp_path / "in", records)
  fast, slow = _both(session, plan_ranges(file, 1 << 30, 1 << 20), tmp_path,
                     max_record_bytes=4096)
  _assert_same(fast, slow)
  assert fast[0].quarantined == {file.path: 1}
  assert fast[0].records_read_in_graph == 192 - CHUNK


def test_wide_records_stay_in_python_where_the_byte_cap_binds(session, tmp_path):
  file = _write(tmp_path / "in", _records(300))
  record_bytes = len(_records(1)[0])
  fast, slow = _both(session, plan_ranges(file, 1 << 30, 1 << 20), tmp_path,
                     chunk_bytes=record_bytes * CHUNK // 2)
  _assert_same(fast, slow)
  assert fast[0].records_read_in_graph == 0


def test_records_growing_wider_send_the_rest_of_the_unit_to_python(session, tmp_path):
  """The first chunk fits the byte cap; a later batch does not: that batch
  is kept, and the rest is read in Python under the cap."""
  records = _records(1000)[:500] + _records(500, width=512)
  file = _write(tmp_path / "in", records)
  cap = len(records[0]) * CHUNK * 2
  fast, slow = _both(session, plan_ranges(file, 1 << 30, 1 << 20), tmp_path, chunk_bytes=cap)
  # the wide records do not parse as 64 pixels: dead letters either way
  _assert_same(fast, slow)
  assert 0 < fast[0].records_read_in_graph < 1000


def test_raw_passthrough_keeps_the_unit_in_python(session, tmp_path):
  file = _write(tmp_path / "in", _records(300))
  fast, slow = _both(session, plan_ranges(file, 1 << 30, 1 << 20), tmp_path,
                     scorer_args=(["id", "pixels"], True))
  _assert_same(fast, slow)
  assert fast[0].records_read_in_graph == 0


def test_with_every_slot_busy_a_unit_reads_in_python(session, tmp_path):
  file = _write(tmp_path / "in", _records(300))
  task = plan_ranges(file, 1 << 30, 1 << 20)[0]
  slots = [session.open_reader(file.path, "none", 0, 0, CHUNK) for _ in range(SLOTS)]
  try:
    assert None not in slots and session.open_reader(file.path, "none", 0, 0, CHUNK) is None
    counts = run_unit(ChunkScorer(session, "tfrecord", ["id"], True), task,
                      _settings(tmp_path / "out", True))
  finally:
    for slot in slots:
      session.close_reader(slot)
  assert counts.records_read == 300 and counts.records_read_in_graph == 0


def test_threads_sharing_the_session_read_in_graph_at_once(session, tmp_path):
  """multi_threading: units on several threads, one session, each its own
  reader slot; every unit's rows are its own file's."""
  files = [_write(tmp_path / f"in{k}", _records(2000, seed=k)) for k in range(SLOTS)]
  scorer = ChunkScorer(session, "tfrecord", ["id"], True)
  barrier = threading.Barrier(SLOTS)

  def unit(k):
    barrier.wait()
    with concurrent.futures.ThreadPoolExecutor(1) as inferring:
      return run_unit(scorer, plan_ranges(files[k], 1 << 30, 1 << 20)[0],
                      _settings(tmp_path / f"out{k}", True), inferring)

  with concurrent.futures.ThreadPoolExecutor(SLOTS) as pool:
    fast = list(pool.map(unit, range(SLOTS)))
  slow = [run_unit(scorer, plan_ranges(f, 1 << 30, 1 << 20)[0],
                   _settings(tmp_path / f"py{k}", False)) for k, f in enumerate(files)]
  _assert_same(fast, slow)
  assert all(c.records_read_in_graph == 2000 - CHUNK for c in fast)
  assert len(glob.glob(str(tmp_path / "out*" / "**" / "predictions*"), recursive=True)) == SLOTS


def test_a_row_lost_between_the_reader_and_the_outputs_is_seen(session, tmp_path,
                                                               monkeypatch):
  """records_read is the in-graph reader's own count, not the rows the
  outputs hold: a row lost in between breaks read == written + dead, which
  fails the run at publish (tests/test_success_contract.py)."""
  original = CascadeSession.read_and_run
  lost = []

  def losing_one(self, slot, budget):
    result, read = original(self, slot, budget)
    if not lost:
      lost.append(read.rows)
      result = result._replace(
          outputs={k: v[1:] for k, v in result.outputs.items()},
          passthrough={k: v[1:] for k, v in result.passthrough.items()})
    return result, read

  monkeypatch.setattr(CascadeSession, "read_and_run", losing_one)
  file = _write(tmp_path / "in", _records(300))
  counts = run_unit(ChunkScorer(session, "tfrecord", ["id"], True),
                    plan_ranges(file, 1 << 30, 1 << 20)[0], _settings(tmp_path / "out", True))
  assert lost
  assert counts.records_read == 300
  assert counts.records_in("predictions") + counts.records_in("dead_letter") == 299
