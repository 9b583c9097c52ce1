"""Fast tests of ChunkScorer with a fake session (no graph, no Beam).

The fake is a two-stage cascade over tiny byte records, so each test says
exactly which records are bad and why, and checks what the scorer made of
them: the dead letters (index and reason), the rows encoded (exactly the good
ones, decoded back), the counts, and how many session calls it took.
"""

import base64
import collections
import functools
import io
import json
import math
import re

import numpy as np
import pytest
import tensorflow as tf

from tfcascade.transforms.engine import (CascadeResult, CascadeSpec, FeatureSpec,
                                         ModelSource, StageSpec)
from tfcascade.transforms.formats import tfrecord_framing as framing
from tfcascade.transforms.reading.record_ranges import RecordChunk
from tfcascade.transforms.scoring.chunk_scorer import ChunkScorer, StageFailedError

SOURCE = "gs://in/part-00003.tfrecord"
FIRST = 500  # source index of a chunk's first record: indices are not positions
A_MODEL = "(model meta_graph: /models/a/model.meta, checkpoint /models/a/ckpt-7)"
B_MODEL = "(model saved_model: /models/b/export)"

SPEC = CascadeSpec(
    (FeatureSpec("key", "int64"),),
    (StageSpec("a", ModelSource("meta_graph", "/models/a/model.meta"),
               "/models/a/ckpt-7", "a_net", {"x:0": "features.key"},
               {"score": "score:0"}),
     StageSpec("b", ModelSource("saved_model", "/models/b/export"), "", "b_net",
               {"x": "a.score"}, {"score": "score"}, run_if="a.score < 1000")),
    passthrough=("key",))

TAGS = ("ok", "fail-a", "fail-b", "nan-a", "inf-b")


class FakeSession:
  """A two-stage cascade on records b"<tag>:<key>", with CascadeSession's API.

  Tags: "ok" scores; "fail-a"/"fail-b": that stage's model fails on the
  record (stage b only if its gate passes the record); "nan-a"/"inf-b": that
  stage's score is not finite. Any other record does not parse (one not UTF-8
  raises UnicodeDecodeError, as TF's parser may). Stage a scores [key]; stage
  b, on the rows `gate(key)` passes, [-key, key + 0.5] (else its fill, 0).

  Args:
    gate: key -> whether stage b runs on the row (default: every row).
    broken: stages whose model fails on any batch it runs on.
    scoped: model errors name their node (stage_of finds the stage); False:
      they name none, so stage_of returns None.
  """

  def __init__(self, gate=None, broken=(), scoped=True):
    self.spec = SPEC
    self.gate = gate or (lambda key: True)
    self.broken = set(broken)
    self.scoped = scoped
    self.run_calls = self.parse_calls = self.failures = self.runs_scored = 0

  def parse(self, records):
    self.parse_calls += 1
    self._failing(self._parsed, records)

  def run(self, records):
    self.run_calls += 1
    result = self._failing(self._run, records)
    self.runs_scored += 1
    return result

  def _failing(self, call, records):
    try:
      return call(records)
    except (tf.errors.OpError, UnicodeDecodeError):
      self.failures += 1
      raise

  def _run(self, records):
    rows = self._parsed(records)
    tags = [t for t, _ in rows]
    keys = np.array([k for _, k in rows], dtype=np.int64)
    self._check("a", [(t, k) for t, k in rows])
    gated = np.array([self.gate(int(k)) for k in keys], dtype=bool)
    self._check("b", [(t, k) for (t, k), g in zip(rows, gated) if g])
    a = keys.astype(np.float32)
    a[[t == "nan-a" for t in tags]] = np.nan
    b = np.stack([-keys, keys + 0.5], axis=1).astype(np.float32).reshape(-1, 2)
    b[[t == "inf-b" for t in tags], 1] = np.inf
    b[~gated] = 0.0
    return CascadeResult({"a/score": a, "b/score": b, "b/ran": gated},
                         {"key": keys}, {"a": len(rows), "b": int(gated.sum())})

  def stage_of(self, error):
    match = re.search(r"\{\{node ([^}]+)\}\}", getattr(error, "message", ""))
    if not match:
      return None
    for stage in self.spec.stages:
      if match.group(1).startswith(stage.scope + "/"):
        return stage.name
    return None

  def _parsed(self, records):
    return [_parse_record(record) for record in records]

  def _check(self, stage, rows):
    """Raises the stage's model error if it fails on any of `rows`."""
    failing = [k for t, k in rows if t == f"fail-{stage}" or stage in self.broken]
    if failing:
      node = f"\n\t [[{{{{node {stage}_net/MatMul}}}}]]" if self.scoped else ""
      raise tf.errors.InvalidArgumentError(
          None, None, f"Incompatible shapes at key {failing[0]}{node}")


@functools.lru_cache(maxsize=None)
def _parse_record(record):
  """(tag, key) of a fake record (cached: the bisection parses each often)."""
  tag, _, key = record.decode("utf-8").partition(":")
  if tag not in TAGS or not key.isdigit():
    raise tf.errors.InvalidArgumentError(
        None, None, f"Could not parse example input, value: '{record.decode()}'"
        "\n\t [[{{node ParseExample/ParseExampleV2}}]]")
  return tag, int(key)


def records_of(tags):
  """Records b"<tag>:<position>" (a tag None: b"junk:<position>", which
  does not parse)."""
  return [f"{tag or 'junk'}:{i}".encode() for i, tag in enumerate(tags)]


def score(records, output_format="jsonl", reject_non_finite=True, **fake_args):
  fake = FakeSession(**fake_args)
  scorer = ChunkScorer(fake, output_format, passthrough=("key",),
                       reject_non_finite=reject_non_finite)
  chunk = RecordChunk(SOURCE, [(FIRST + i, r) for i, r in enumerate(records)])
  return fake, scorer.score(chunk)


def decoded_rows(scored, output_format="jsonl"):
  """key -> {column: values} of every encoded row (keys are positions)."""
  rows = []
  for n, blob in scored.blobs:
    if output_format == "jsonl":
      part = [json.loads(line) for line in blob.decode("utf-8").splitlines()]
    else:
      part = []
      for _, _, data in framing.iter_records(io.BytesIO(blob), "blob"):
        feature = tf.train.Example.FromString(data).features.feature
        part.append({name: list(getattr(f, f.WhichOneof("kind")).value)
                     for name, f in feature.items()})
    assert len(part) == n  # each blob's count is what it holds
    rows.extend(part)
  by_key = {row["key"][0]: row for row in rows}
  assert len(by_key) == len(rows), "a row was encoded twice"
  return by_key


def parse_reason(i, tag="junk"):
  return f"record does not parse: Could not parse example input, value: '{tag}:{i}'"


def model_reason(stage, i):
  return f"stage '{stage}' fails on this record: Incompatible shapes at key {i}"


def non_finite_reason(column):
  return f"non-finite model output {column} (NaN or Inf)"


def check(records, scored, dead, gate=lambda key: True, output_format="jsonl"):
  """Checks a scored chunk against `dead` ({position: reason}): the dead
  letters, the rows encoded (every other record, with the fake's scores) and
  the counts.

  Returns the decoded rows (key -> columns).
  """
  got = {d["index"] - FIRST: d["error"] for d in scored.dead_letters}
  assert got == dead
  assert len(scored.dead_letters) == len(dead), "a record was dead-lettered twice"
  for d in scored.dead_letters:
    assert d["source"] == SOURCE
    assert base64.b64decode(d["raw_b64"]) == records[d["index"] - FIRST]

  rows = decoded_rows(scored, output_format)
  good = [i for i in range(len(records)) if i not in dead]
  assert sorted(rows) == good
  for key, row in rows.items():
    assert row["a/score"] == [key]
    assert row["b/score"] == ([-key, key + 0.5] if gate(key) else [0.0, 0.0])
  assert sum(n for n, _ in scored.blobs) + len(scored.dead_letters) == len(records)

  # Rows whose outputs were not finite ran; the other dead ones did not.
  ran = good + [i for i, r in dead.items() if r.startswith("non-finite")]
  counts = scored.counts()
  assert counts.rows_in == collections.Counter({"a": len(ran), "b": len(ran)})
  assert counts.rows_run == collections.Counter(
      {"a": len(ran), "b": sum(map(gate, ran))})
  assert counts.dead_reasons == collections.Counter(dead.values())
  assert scored.rows_scored == len(ran)
  return rows


def test_clean_chunk_is_one_cascade_call():
  records = records_of(["ok"] * 7)
  fake, scored = score(records)
  check(records, scored, {})
  assert (fake.run_calls, fake.parse_calls, scored.failed_calls) == (1, 0, 0)
  assert len(scored.batch_latencies_us) == 1


@pytest.mark.parametrize("bad", [0, 4, 8], ids=["first", "middle", "last"])
def test_one_unparseable_record_is_dead_lettered_alone(bad):
  tags = ["ok"] * 9
  tags[bad] = None
  records = records_of(tags)
  fake, scored = score(records)
  check(records, scored, {bad: parse_reason(bad)})
  # The bisection runs on the parse-only callable; the cascade runs twice:
  # the whole chunk (fails), then the rest.
  assert fake.run_calls == 2
  assert fake.parse_calls >= 3


def test_several_unparseable_records_side_by_side_and_apart():
  bad = [0, 3, 4, 11, 12]
  records = records_of([None if i in bad else "ok" for i in range(13)])
  fake, scored = score(records)
  check(records, scored, {i: parse_reason(i) for i in bad})
  assert fake.run_calls == 2


def test_all_records_unparseable():
  records = records_of([None] * 6)
  fake, scored = score(records)
  check(records, scored, {i: parse_reason(i) for i in range(6)})
  assert scored.blobs == []
  assert fake.run_calls == 1  # nothing left to run


def test_record_that_is_not_utf8_is_a_parse_failure():
  records = records_of(["ok"] * 4)
  records[2] = b"\xff\xfe\x00"
  _, scored = score(records)
  check(records, scored,
        {2: "record does not parse: not a serialized tf.train.Example"})


@pytest.mark.parametrize("stage", ["a", "b"])
@pytest.mark.parametrize("failing", [[5], [0, 9], [2, 3, 7]])
def test_record_failing_a_stage_alone_is_dead_lettered_naming_it(stage, failing):
  records = records_of([f"fail-{stage}" if i in failing else "ok" for i in range(10)])
  fake, scored = score(records)
  check(records, scored, {i: model_reason(stage, i) for i in failing})
  assert fake.parse_calls == 1  # the chunk parses: no parse bisection


def test_mix_of_unparseable_and_model_failing_records():
  tags = ["ok"] * 16
  tags[1] = tags[9] = None
  tags[4] = "fail-a"
  tags[10] = tags[15] = "fail-b"
  tags[6] = "nan-a"
  records = records_of(tags)
  _, scored = score(records)
  check(records, scored, {1: parse_reason(1), 9: parse_reason(9),
                          4: model_reason("a", 4), 10: model_reason("b", 10),
                          15: model_reason("b", 15),
                          6: non_finite_reason("a/score")})


@pytest.mark.parametrize("output_format", ["jsonl", "tfrecord"])
def test_encoded_rows_are_the_good_ones_in_either_format(output_format):
  tags = ["ok"] * 12
  tags[0], tags[5], tags[11] = None, "fail-b", "inf-b"
  def gate(key):
    return key % 3 != 1
  records = records_of(tags)
  _, scored = score(records, output_format=output_format, gate=gate)
  check(records, scored, {0: parse_reason(0), 5: model_reason("b", 5),
                          11: non_finite_reason("b/score")},
        gate=gate, output_format=output_format)


def test_stage_failing_on_every_row_fails_the_run():
  records = records_of(["ok"] * 6)
  with pytest.raises(StageFailedError) as raised:
    score(records, broken={"a"})
  assert str(raised.value) == (
      f"stage 'a' {A_MODEL} fails on every row it runs on in a batch of 6 "
      f"records that parse (6 rows failed; {SOURCE}, records 500..505); the "
      "model is broken, not the data: Incompatible shapes at key 0")


def test_broken_stage_range_leaves_out_records_that_do_not_parse():
  records = records_of([None, "ok", None, "ok", "ok", None])
  with pytest.raises(StageFailedError,
                     match=re.escape(f"batch of 3 records that parse (3 rows failed; "
                                     f"{SOURCE}, records 501..504)")):
    score(records, broken={"b"})


def test_gated_stage_failing_on_every_row_its_gate_passes_fails_the_run():
  # Rows the gate does not pass score (b never runs on them): they prove
  # nothing about b, which fails on each of the 4 rows it runs on.
  records = records_of(["ok"] * 12)
  with pytest.raises(StageFailedError) as raised:
    score(records, broken={"b"}, gate=lambda key: key % 3 == 0)
  message = str(raised.value)
  assert message.startswith(f"stage 'b' {B_MODEL} fails on every row it runs on "
                            "in a batch of 12 records that parse (4 rows failed;")
  assert "checkpoint" not in message


def test_gated_stage_with_one_row_through_its_gate_dead_letters_it():
  # A stage broken on the one row its gate passes: one failure is no proof
  # that the model is broken ("at least two").
  records = records_of(["ok"] * 8)
  def gate(key):
    return key == 3
  _, scored = score(records, broken={"b"}, gate=gate)
  check(records, scored, {3: model_reason("b", 3)}, gate=gate)


def test_gated_stage_runs_only_on_rows_its_gate_passes():
  # fail-b records the gate does not pass score; those it passes do not.
  records = records_of(["fail-b" if i % 2 else "ok" for i in range(10)])
  def gate(key):
    return key < 5
  _, scored = score(records, gate=gate)
  check(records, scored, {1: model_reason("b", 1), 3: model_reason("b", 3)},
        gate=gate)
  assert scored.counts().rows_run["b"] == 3  # keys 0, 2, 4 (1 and 3 failed)


def test_errors_naming_no_stage():
  records = records_of(["ok", "fail-a", "ok", "ok"])
  _, scored = score(records, scoped=False)
  check(records, scored,
        {1: "a stage fails on this record: Incompatible shapes at key 1"})
  with pytest.raises(StageFailedError,
                     match=r"^a stage fails on every row it runs on in a batch of 4 "):
    score(records, broken={"a"}, scoped=False)


def test_non_finite_rows_are_dead_lettered_when_rejected():
  tags = ["ok", "nan-a", "ok", "inf-b", "ok", "inf-b", "nan-a"]
  def gate(key):
    return key != 5
  records = records_of(tags)
  _, scored = score(records, gate=gate)
  # Row 5's inf-b is never computed (b's gate does not pass it): it scores.
  check(records, scored, {1: non_finite_reason("a/score"),
                          3: non_finite_reason("b/score"),
                          6: non_finite_reason("a/score")}, gate=gate)


def test_non_finite_rows_are_kept_when_not_rejected():
  records = records_of(["ok", "nan-a", "inf-b", "ok"])
  _, scored = score(records, reject_non_finite=False)
  assert scored.dead_letters == []
  rows = decoded_rows(scored)
  assert sorted(rows) == [0, 1, 2, 3]
  assert math.isnan(rows[1]["a/score"][0])
  assert rows[2]["b/score"] == [-2.0, math.inf]
  assert rows[3]["a/score"] == [3.0]


def test_infer_runs_the_session_and_finish_encodes():
  fake = FakeSession()
  scorer = ChunkScorer(fake, "jsonl", passthrough=("key",), reject_non_finite=True)
  records = records_of(["ok", None, "ok", "nan-a"])
  chunk = RecordChunk(SOURCE, [(FIRST + i, r) for i, r in enumerate(records)])
  inferred = scorer.infer(chunk)
  calls = (fake.run_calls, fake.parse_calls)
  assert inferred.scored.blobs == [] and inferred.dead == [(1, parse_reason(1))]
  scored = scorer.finish(chunk, inferred)
  assert (fake.run_calls, fake.parse_calls) == calls  # finish calls no session
  check(records, scored, {1: parse_reason(1), 3: non_finite_reason("a/score")})


@pytest.mark.parametrize("tag", [None, "fail-a"], ids=["unparseable", "model-failing"])
@pytest.mark.parametrize("bad", [0, 511, 1023], ids=["first", "middle", "last"])
def test_one_bad_record_in_1024_takes_logarithmic_session_calls(tag, bad):
  n = 1024
  tags = ["ok"] * n
  tags[bad] = tag
  records = records_of(tags)
  fake = FakeSession()
  scorer = ChunkScorer(fake, "jsonl", passthrough=("key",), reject_non_finite=True)
  # infer only: the session calls are all in it, and encoding 1023 rows
  # would be most of this test's time.
  inferred = scorer.infer(
      RecordChunk(SOURCE, [(FIRST + i, r) for i, r in enumerate(records)]))
  reason = parse_reason(bad) if tag is None else model_reason("a", bad)
  assert inferred.dead == [(bad, reason)]
  scored_positions = np.concatenate([p for p, _ in inferred.parts])
  assert sorted(scored_positions) == [i for i in range(n) if i != bad]
  for positions, result in inferred.parts:  # each part's result is its rows'
    assert result.passthrough["key"].tolist() == positions.tolist()
  # Row by row would be ~n calls; bisection is two per halving.
  assert fake.run_calls + fake.parse_calls <= 2 * math.log2(n) + 4
  assert inferred.scored.failed_calls == fake.failures
  assert len(inferred.scored.batch_latencies_us) == fake.runs_scored


# --- failures of several stages in one batch are judged per stage ----------


def test_broken_gated_stage_is_not_hidden_by_an_earlier_row_failing_another_stage():
  records = records_of(["fail-a"] + ["ok"] * 11)
  try:
    score(records, broken={"b"}, gate=lambda key: key % 4 == 1)  # keys 1, 5, 9
  except StageFailedError as e:
    assert str(e).startswith(f"stage 'b' {B_MODEL} fails on every row")
  else:
    raise AssertionError("stage b fails on all 3 rows it runs on, and no error")


def test_two_rows_failing_different_stages_are_dead_letters():
  records = records_of(["ok", "fail-b", "ok", "fail-a", "ok", "ok"])
  def gate(key):
    return key == 1
  _, scored = score(records, gate=gate)
  check(records, scored, {1: model_reason("b", 1), 3: model_reason("a", 3)},
        gate=gate)
