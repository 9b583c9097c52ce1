"""The output's life cycle, one rule at a time: the commit protocol under
retried attempts, accounting and rejection checks, overwrite that keeps the
last good output, the publish journal, per-run staging, live and dead runs.

End-to-end versions through the CLI are in tests/test_success_contract.py."""

import dataclasses
import json
import os
import subprocess
import sys
import time

import pytest

from tfcascade.pipeline import run_start
from tfcascade.transforms.accounting import RunCounts
from tfcascade.transforms.formats.tfrecord_framing import frame_records
from tfcascade.transforms.publishing import finalize as publish
from tfcascade.transforms.publishing import output_layout as layout
from tfcascade.transforms.publishing import run_registry
from tfcascade.transforms.writing.shard_writer import ShardWriter


def _info(run_id, **extra):
  info = {"run_id": run_id, "runner": "test", "started_at": "t",
          "start_epoch": time.time(), "output_format": "tfrecord",
          "predictions_suffix": ".tfrecord", "max_dead_letter_fraction": 0.01,
          "run_date": None, "stages": []}
  info.update(extra)
  return info


def _attempt(run, records, kind="predictions"):
  """One attempt of a unit of work: writes its own file; returns its counts."""
  writer = ShardWriter(run.files_dir, kind, ".tfrecord")
  writer.write(frame_records(records), len(records))
  return RunCounts(files=[writer.close()])


def _published_records(out):
  from tfcascade.transforms.formats.tfrecord_framing import read_record_chunks  # pylint: disable=g-import-not-at-top
  found = []
  for path in sorted(layout.matches(os.path.join(out, "predictions-*"))):
    for chunk in read_record_chunks(path):
      found += [r for _, r in chunk]
  return found


def test_only_committed_attempts_are_published(tmp_path):
  """A bundle (task) that ran twice: the failed first attempt wrote its file
  but was never committed, so it reported nothing; only the retry's file is
  published, and the orphan goes with the staging directory."""
  out = str(tmp_path / "out")
  run = run_start.prepare(out, overwrite=False)
  records = [b"r%d" % i for i in range(10)]
  _attempt(run, records[:5])  # attempt 1 of bundle 1: dies before committing
  committed = [_attempt(run, records[:5]),  # attempt 2 of bundle 1
               _attempt(run, records[5:])]  # bundle 2
  assert len(layout.matches(os.path.join(run.files_dir, "*"))) == 3
  counts = RunCounts.total([RunCounts(records_read=10)] + committed)
  publish.finalize(counts, out, run.run_id, _info(run.run_id))
  assert sorted(_published_records(out)) == sorted(records)  # each exactly once
  assert os.path.exists(os.path.join(out, "_SUCCESS"))
  assert not os.path.exists(os.path.join(out, "_staging"))
  summary = json.load(open(os.path.join(out, "run_summary.json")))
  assert (summary["records_read"], summary["records_written"]) == (10, 10)


def test_a_duplicate_commit_fails_the_accounting(tmp_path):
  """If a runner ever reported both attempts, the records would not add up."""
  out = str(tmp_path / "out")
  run = run_start.prepare(out, overwrite=False)
  records = [b"r%d" % i for i in range(4)]
  counts = RunCounts.total([_attempt(run, records), _attempt(run, records),
                            RunCounts(records_read=4)])
  with pytest.raises(publish.AccountingError, match="records_read 4 != records_written 8"):
    publish.finalize(counts, out, run.run_id, _info(run.run_id))
  assert not os.path.exists(os.path.join(out, "_SUCCESS"))
  assert json.load(open(os.path.join(run.run_dir, "run_summary.json")))["failed"]
  assert not run_registry.state(run).alive  # the next run may clean it up


def test_rejection_threshold(tmp_path):
  out = str(tmp_path / "out")
  run = run_start.prepare(out, overwrite=False)
  counts = _attempt(run, [b"ok"] * 90)
  writer = ShardWriter(run.files_dir, "dead_letter", ".jsonl")
  for _ in range(10):
    writer.write(b"{}\n", 1)
  counts.files.append(writer.close())
  counts.records_read = 100
  counts.dead_reasons.update({"record does not parse: x": 7,
                              "non-finite model output a/logits (NaN or Inf)": 3})
  with pytest.raises(publish.RejectionError) as error:
    publish.finalize(counts, out, run.run_id, _info(run.run_id))
  message = str(error.value)
  assert "10 of 100 records were dead-lettered (10.00%)" in message
  assert "7 x record does not parse: x" in message
  assert run.run_dir in message and "max_fraction=1" in message
  assert not os.path.exists(os.path.join(out, "_SUCCESS"))
  # The same counts pass when the share is allowed.
  run2 = run_start.prepare(out, overwrite=False)
  counts2 = dataclasses.replace(counts, files=[
      f._replace(path=f.path.replace(run.run_dir, run2.run_dir)) for f in counts.files])
  for src in layout.matches(os.path.join(run.files_dir, "*")):
    os.makedirs(run2.files_dir, exist_ok=True)
    os.rename(src, src.replace(run.run_dir, run2.run_dir))
  publish.finalize(counts2, out, run2.run_id,
                   _info(run2.run_id, max_dead_letter_fraction=0.1))
  summary = json.load(open(os.path.join(out, "run_summary.json")))
  assert summary["dead_letter_fraction"] == 0.1
  assert summary["dead_letter_reasons"]["record does not parse: x"] == 7


def _complete_output(out, records):
  run = run_start.prepare(out, overwrite=True)
  counts = _attempt(run, records)
  counts.records_read = len(records)
  publish.finalize(counts, out, run.run_id, _info(run.run_id))


def _snapshot(out):
  snap = {}
  for root, _, files in os.walk(out):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        snap[os.path.relpath(path, out)] = f.read()
  return snap


def test_overwrite_keeps_the_old_output_until_the_new_one_passes(tmp_path):
  out = str(tmp_path / "out")
  _complete_output(out, [b"old"] * 3)
  before = _snapshot(out)
  with pytest.raises(run_start.OutputExistsError):
    run_start.prepare(out, overwrite=False)
  run = run_start.prepare(out, overwrite=True)
  assert {k: v for k, v in _snapshot(out).items() if "_staging" not in k} == before
  counts = _attempt(run, [b"new"] * 5)
  counts.records_read = 6  # one lost: the new run fails
  with pytest.raises(publish.AccountingError):
    publish.finalize(counts, out, run.run_id, _info(run.run_id))
  assert {k: v for k, v in _snapshot(out).items() if "_staging" not in k} == before
  _complete_output(out, [b"new"] * 2)
  assert _published_records(out) == [b"new"] * 2
  assert "_staging" not in "".join(_snapshot(out))


def test_an_interrupted_publish_is_finished_by_the_next_run(tmp_path):
  out = str(tmp_path / "out")
  _complete_output(out, [b"old"] * 3)
  run = run_start.prepare(out, overwrite=True)
  counts = _attempt(run, [b"new"] * 4)
  counts.records_read = 4
  journal = publish._publish_plan(out, counts.files,  # pylint: disable=protected-access
                                  publish.summarize(counts, _info(run.run_id)))
  layout.write_json(os.path.join(run.run_dir, publish.JOURNAL), journal)
  # The publisher dies after deleting _SUCCESS and the old files.
  os.remove(os.path.join(out, "_SUCCESS"))
  layout.delete_paths(journal["delete"])
  run_start.mark_ended(run, "killed")
  assert run_start.read_summary(out) is None
  with pytest.raises(run_start.OutputExistsError):  # finished, so complete again
    run_start.prepare(out, overwrite=False)
  assert _published_records(out) == [b"new"] * 4
  assert run_start.read_summary(out)["run_id"] == run.run_id


def test_a_live_run_refuses_a_second_launch_and_a_dead_one_is_cleaned(tmp_path):
  out = str(tmp_path / "out")
  first = run_start.prepare(out, overwrite=False)
  with pytest.raises(run_start.RunInProgressError, match=first.run_id):
    run_start.prepare(out, overwrite=False)
  # A run started by a process of this host that no longer exists is dead.
  dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                            capture_output=True, text=True, check=True).stdout.strip()
  marker = layout.read_json(first.marker)
  marker["pid"] = int(dead_pid)
  layout.write_json(first.marker, marker)
  assert "is gone" in run_registry.state(first).why
  second = run_start.prepare(out, overwrite=False)
  assert not os.path.exists(first.run_dir) and os.path.exists(second.run_dir)
  # So is one whose heartbeat is too old (another host, or a hung launcher).
  marker = layout.read_json(second.marker)
  marker.update(host="elsewhere", heartbeat_epoch=time.time() - run_registry.STALE_AFTER_S - 1)
  layout.write_json(second.marker, marker)
  assert "no heartbeat" in run_registry.state(second).why
  run_start.prepare(out, overwrite=False)


def test_of_two_simultaneous_runs_the_earlier_one_publishes(tmp_path):
  out = str(tmp_path / "out")
  early = run_start.start_run(out)
  late = run_start.start_run(out)
  assert early.run_id < late.run_id
  counts = _attempt(late, [b"x"])
  counts.records_read = 1
  with pytest.raises(publish.ConcurrentRunError, match=early.run_id):
    publish.finalize(counts, out, late.run_id, _info(late.run_id))
  assert not os.path.exists(os.path.join(out, "_SUCCESS"))
  counts = _attempt(early, [b"y"])
  counts.records_read = 1
  publish.finalize(counts, out, early.run_id, _info(early.run_id))
  assert _published_records(out) == [b"y"]


def test_a_run_without_rows_publishes_an_empty_shard(tmp_path):
  out = str(tmp_path / "out")
  run = run_start.prepare(out, overwrite=False)
  publish.finalize(RunCounts(), out, run.run_id,
                   _info(run.run_id, predictions_suffix=".tfrecord.gz"))
  assert os.path.exists(os.path.join(out, "predictions-00000-of-00001.tfrecord.gz"))
  assert _published_records(out) == []
