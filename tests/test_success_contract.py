"""`_SUCCESS` means complete and correct, through the CLI, in each way a
production run can go wrong: a broken model, a model that fails on one row,
mass rejection, a record lost between steps, a failed or killed --overwrite,
and two launches of one job at once. The rules one at a time (commit protocol,
journal, live/dead runs) are in tests/test_publish.py."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tfcascade.pipeline.cli import main
from tests import tiny_models as tm
from tests.jobs import check_against_oracle, make_job, summary_of
from tfcascade.transforms.scoring.chunk_scorer import ChunkScorer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def job(tmp_path_factory):
  root = tmp_path_factory.mktemp("contract")
  made = make_job(root, n_records=300)
  made["builder_ckpt"] = tm.save_builder_checkpoint(str(root / "models/lin"))
  return made


def _run(job, out, *extra):
  return main(["run", "--config", job["config"], "--set", f"output.path={out}",
               "--runner=DirectRunner", *extra])


def _builder_stage_b(job, builder, gated):
  """--set overrides turning stage b into a builder model fed the pixels."""
  return ["--set", "stages.b.meta_graph=", "--set", f"stages.b.builder={builder}",
          "--set", f"stages.b.checkpoint={job['builder_ckpt']}",
          "--set", "stages.b.inputs={pixels: features.pixels}",
          "--set", "stages.b.outputs={logits: logits, checked: checked}",
          "--set", "stages.b.run_if=" + ("a.confidence < 0.99" if gated else "")]


def _published(out):
  return sorted(p for p in glob.glob(str(out / "**"), recursive=True)
                if os.path.isfile(p) and "_staging" not in p)


def _snapshot(out):
  snap = {}
  for path in _published(out):
    with open(path, "rb") as f:
      snap[os.path.relpath(path, out)] = f.read()
  return snap


@pytest.mark.parametrize("gated", [False, True])
def test_a_broken_model_fails_the_run_naming_the_stage(job, tmp_path, capsys, gated):
  out = tmp_path / "out"
  assert _run(job, out, *_builder_stage_b(job, "tests.tiny_models:broken_builder",
                                          gated)) == 2
  err = capsys.readouterr().err
  assert "stage 'b'" in err and "tests.tiny_models:broken_builder" in err, err
  assert "broken model" in err and "fails on every row it runs on" in err
  assert not (out / "_SUCCESS").exists()
  assert not glob.glob(str(out / "predictions-*"))


def test_a_row_that_breaks_a_model_is_dead_lettered_naming_the_stage(job, tmp_path):
  pixels = np.random.default_rng(3).normal(size=(6, 64)).astype("float32")
  pixels[4, 0] = -1000.0  # fragile_builder's log fails on this row only
  bad_file = job["root"] / "data" / "part-5.tfrecord.gz"
  with tf.io.TFRecordWriter(str(bad_file), "GZIP") as w:
    for record in tm.make_examples(pixels, [b"x%d" % i for i in range(6)]):
      w.write(record)
  try:
    out = tmp_path / "out"
    assert _run(job, out, *_builder_stage_b(job, "tests.tiny_models:fragile_builder",
                                            gated=False)) == 0
  finally:
    os.remove(bad_file)
  dead = [json.loads(line) for path in glob.glob(str(out / "dead_letter" / "*.jsonl"))
          for line in open(path)]
  assert [(d["source"], d["index"]) for d in dead] == [(str(bad_file), 4)]
  assert dead[0]["error"].startswith("stage 'b' fails on this record:")
  assert "fragile model" in dead[0]["error"]
  summary = summary_of(out)
  assert (summary["records_read"], summary["records_written"],
          summary["records_dead_lettered"]) == (306, 305, 1)


def test_mass_rejection_fails_unless_allowed(job, tmp_path, capsys):
  # An upstream schema change: every record lacks a feature the config needs.
  schema_change = ["--set", "input.features.extra={dtype: float32}"]
  out = tmp_path / "out"
  assert _run(job, out, *schema_change) == 2
  err = capsys.readouterr().err
  assert "300 of 300 records were dead-lettered (100.00%)" in err
  assert "Feature: extra (data type: float) is required" in err
  assert not (out / "_SUCCESS").exists()
  staged = glob.glob(str(out / "_staging" / "*" / "run_summary.json"))
  assert len(staged) == 1 and json.load(open(staged[0]))["records_dead_lettered"] == 300
  assert glob.glob(str(out / "_staging" / "*" / "files" / "dead_letter-*.jsonl"))
  # The user may accept any share; the next run also cleans the failed staging.
  assert _run(job, out, *schema_change, "--set", "dead_letter.max_fraction=1") == 0
  summary = summary_of(out)
  assert (summary["records_written"], summary["records_dead_lettered"]) == (0, 300)
  assert summary["max_dead_letter_fraction"] == 1.0
  assert not (out / "_staging").exists()


def test_a_record_lost_between_steps_fails_the_run(job, tmp_path, capsys, monkeypatch):
  original = ChunkScorer.infer
  lost = []

  def infer_losing_one(self, chunk):
    if not lost:  # the first chunk read loses its first record on the way
      lost.append(chunk.records[0])
      chunk = chunk._replace(records=chunk.records[1:])
    return original(self, chunk)

  monkeypatch.setattr(ChunkScorer, "infer", infer_losing_one)
  out = tmp_path / "out"
  assert _run(job, out) == 1
  assert lost
  err = capsys.readouterr().err
  assert "records_read 300 != records_written 299 + records_dead_lettered 0" in err
  assert not (out / "_SUCCESS").exists()


def test_a_failed_overwrite_leaves_the_previous_output_as_it_was(job, tmp_path):
  out = tmp_path / "out"
  assert _run(job, out) == 0
  before = _snapshot(out)
  damaged = job["root"] / "data" / "part-4.tfrecord.gz"
  damaged.write_bytes(b"\x1f\x8b not really gzip")
  try:
    assert _run(job, out, "--overwrite") == 2  # on_corrupt: fail
  finally:
    os.remove(damaged)
  assert _snapshot(out) == before
  assert _run(job, out, "--overwrite", "--set", "stages.b.run_if=a.confidence < 0.5") == 0
  assert _snapshot(out) != before
  assert not (out / "_staging").exists()


@pytest.fixture(scope="module")
def slow_job(tmp_path_factory):
  """Enough records, in small batches, that a run can be caught mid-way."""
  return make_job(tmp_path_factory.mktemp("slowjob"), n_records=12000)


def _launch(job, out, *extra):
  cmd = [sys.executable, "-m", "tfcascade", "run", "--config", job["config"],
         "--set", f"output.path={out}", "--set", "batch_size=50",
         "--runner=DirectRunner", *extra]
  return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True)


def _wait_for_staged_data(out, proc, timeout=180):
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    staged = glob.glob(str(out / "_staging" / "*" / "files" / "predictions-*"))
    if any(os.path.getsize(p) > 0 for p in staged if os.path.exists(p)):
      return True
    time.sleep(0.05)
  return False


@pytest.mark.slow
def test_a_killed_overwrite_leaves_the_previous_output_as_it_was(slow_job, tmp_path):
  out = tmp_path / "out"
  assert _run(slow_job, out, "--set", "batch_size=500") == 0
  before = _snapshot(out)
  proc = _launch(slow_job, out, "--overwrite")
  assert _wait_for_staged_data(out, proc), "the overwrite run wrote nothing to kill"
  os.killpg(proc.pid, signal.SIGSTOP)  # nothing changes while we look
  assert proc.poll() is None and _snapshot(out) == before
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()
  assert _snapshot(out) == before
  # The next run cleans the dead run's staging (its process is gone).
  assert _run(slow_job, out, "--overwrite", "--set", "batch_size=500") == 0
  assert not (out / "_staging").exists()
  check_against_oracle(out, slow_job["oracle"])


@pytest.mark.slow
def test_two_launches_at_once_give_exactly_one_complete_output(slow_job, tmp_path):
  out = tmp_path / "out"
  procs = [_launch(slow_job, out), _launch(slow_job, out)]
  results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
  codes = sorted(code for code, _ in results)
  assert codes[0] == 0 and codes[1] in (1, 2), results
  loser = [err for code, err in results if code != 0][0]
  assert "in progress" in loser or "started first" in loser, loser
  assert (out / "_SUCCESS").exists()
  check_against_oracle(out, slow_job["oracle"])  # every record exactly once
  assert summary_of(out)["records_written"] == 12000
