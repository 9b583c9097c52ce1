"""Nothing lost: dead letters, damaged framing under both policies, fail-fast
checks naming the culprit, and a SIGKILLed run followed by a clean rerun."""

import glob
import gzip
import json
import os
import signal
import struct
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from tfcascade.pipeline.cli import main
from tests.jobs import make_job, read_predictions_independently, summary_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def job(tmp_path_factory):
  return make_job(tmp_path_factory.mktemp("badjob"), n_records=300)


def _example(**features):
  return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def _floats(values):
  return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _id(text):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode()]))


def _read_dead_letters(out):
  entries = []
  for path in sorted(glob.glob(str(out / "dead_letter" / "*.jsonl"))):
    with open(path) as f:
      entries += [json.loads(line) for line in f if line.strip()]
  return entries


def _run(job, out, *extra):
  return main(["run", "--config", job["config"], "--set", f"output.path={out}",
               "--runner=DirectRunner", *extra])


def test_bad_records_are_dead_lettered_and_good_ones_predicted(job, tmp_path):
  good = [0.1] * 64
  records = [
      _example(id=_id("good-0"), pixels=_floats(good)),
      b"\xff\xfe definitely not a proto",
      _example(id=_id("good-2"), pixels=_floats(good)),
      _example(id=_id("no-pixels")),
      _example(id=_id("int-pixels"),
               pixels=tf.train.Feature(int64_list=tf.train.Int64List(value=[1] * 64))),
      _example(id=_id("short-pixels"), pixels=_floats([0.5] * 3)),
      _example(id=_id("nan-pixels"), pixels=_floats([float("nan")] + good[1:])),
      _example(id=_id("good-7"), pixels=_floats(good)),
  ]
  bad_file = job["root"] / "data" / "part-9.tfrecord.gz"
  with tf.io.TFRecordWriter(str(bad_file), "GZIP") as w:
    for r in records:
      w.write(r)
  try:
    out = tmp_path / "out"
    # 5 bad of 308: over the default 1% share, within 5%.
    assert _run(job, out, "--set", "dead_letter.max_fraction=0.05") == 0
  finally:
    os.remove(bad_file)
  dead = {d["index"]: d for d in _read_dead_letters(out)}
  assert sorted(dead) == [1, 3, 4, 5, 6]
  for entry in dead.values():
    assert entry["source"] == str(bad_file)
    assert entry["raw_b64"]
  assert "does not parse" in dead[1]["error"]
  assert "pixels" in dead[3]["error"] and "required" in dead[3]["error"]
  assert "pixels" in dead[4]["error"]
  assert "pixels" in dead[5]["error"]
  assert "non-finite model output a/" in dead[6]["error"]
  ids = {row["id"] for row in read_predictions_independently(out)}
  assert {"good-0", "good-2", "good-7"} <= ids and len(ids) == 303
  summary = summary_of(out)
  assert summary["records_read"] == 308
  assert (summary["records_written"], summary["records_dead_lettered"]) == (303, 5)


def _framed(records):
  from tfcascade.transforms.formats.tfrecord_framing import frame_records  # pylint: disable=g-import-not-at-top
  return frame_records(records)


def _damaged(kind, records):
  data = bytearray(_framed(records))
  second = 16 + len(records[0]) + 0  # offset of record 1's header
  if kind == "flipped_data":
    data[second + 12 + 5] ^= 0xFF
  elif kind == "flipped_length":
    data[second] ^= 0x01
  elif kind == "flipped_crc":
    data[second + 8] ^= 0xFF
  elif kind == "huge_length":  # with a valid length CRC: only the size is wrong
    from tfcascade.transforms.formats.tfrecord_framing import masked_crc32c  # pylint: disable=g-import-not-at-top
    header = struct.pack("<Q", 2 ** 60)
    data[second:second + 12] = header + struct.pack("<I", masked_crc32c(header))
  elif kind == "truncated":
    data = data[:-7]
  elif kind == "not_tfrecord":
    return b"id,pixels\n1,0.1 0.2\n" * 50, 0, 0
  expected_index = len(records) - 1 if kind == "truncated" else 1
  offset = (sum(16 + len(r) for r in records[:-1]) if kind == "truncated" else second)
  return bytes(data), expected_index, offset


@pytest.mark.parametrize("kind", ["flipped_data", "flipped_length", "flipped_crc",
                                  "huge_length", "truncated", "not_tfrecord"])
def test_framing_damage_under_both_policies(job, tmp_path, kind):
  records = job["examples"][:5]
  data, index, offset = _damaged(kind, records)
  bad_file = job["root"] / "data" / "part-8.tfrecord.gz"
  with gzip.open(bad_file, "wb") as f:
    f.write(data)
  try:
    fail_out = tmp_path / "fail"
    assert _run(job, fail_out) == 2
    assert not (fail_out / "_SUCCESS").exists()
    assert not glob.glob(str(fail_out / "predictions-*"))
    quarantine_out = tmp_path / "quarantine"
    assert _run(job, quarantine_out, "--set", "input.on_corrupt=quarantine") == 0
  finally:
    os.remove(bad_file)
  summary = summary_of(quarantine_out)
  assert summary["files_quarantined"] == [str(bad_file)]
  entry = [d for d in _read_dead_letters(quarantine_out) if "records_salvaged" in d]
  assert len(entry) == 1
  assert entry[0]["source"] == str(bad_file)
  assert (entry[0]["index"], entry[0]["offset"]) == (index, offset)
  assert entry[0]["records_salvaged"] == index
  assert summary["records_read"] == 300 + index == summary["records_written"]


def test_fail_policy_error_names_file_and_offset(job, tmp_path, capsys):
  data, _, offset = _damaged("huge_length", job["examples"][:3])
  bad_file = job["root"] / "data" / "part-7.tfrecord.gz"
  with gzip.open(bad_file, "wb") as f:
    f.write(data)
  try:
    assert _run(job, tmp_path / "out") == 2
  finally:
    os.remove(bad_file)
  err = capsys.readouterr().err
  assert str(bad_file) in err and f"offset {offset}" in err
  assert "exceeds max_record_bytes" in err


def test_empty_input_file_is_fine(job, tmp_path):
  empty = job["root"] / "data" / "part-6.tfrecord.gz"
  empty.write_bytes(b"")
  try:
    assert _run(job, tmp_path / "out") == 0
  finally:
    os.remove(empty)
  assert summary_of(tmp_path / "out")["records_read"] == 300


# --- fail fast, before any worker starts -------------------------------------

@pytest.mark.parametrize("override,culprit", [
    ("input.pattern=/nonexistent/part-*.tfrecord", "/nonexistent/part-*.tfrecord"),
    ("stages.a.checkpoint=/nonexistent/ckpt", "/nonexistent/ckpt"),
    ("stages.b.checkpoint=models/a", "'b/dense/kernel'"),
    ("stages.b.outputs={probs: 'nosuch:0'}", "nosuch:0"),
    ("stages.a.inputs={'input:0': features.nosuch}", "features.nosuch"),
    ("stages.b.run_if=a.confidence ~ 3", "run_if"),
    ("batch_size=-3", "batch_size"),
    ("output.format=csv", "output.format"),
])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_fail_fast_names_the_culprit(job, tmp_path, capsys, command, override, culprit):
  cwd = os.getcwd()
  os.chdir(job["root"])  # --set paths are relative to the current directory
  try:
    args = [command, "--config", job["config"], "--set", override]
    if command == "run":
      args += ["--set", f"output.path={tmp_path / 'out'}", "--runner=DirectRunner"]
    assert main(args) == 2
  finally:
    os.chdir(cwd)
  err = capsys.readouterr().err
  assert culprit in err, err
  assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_unknown_config_key_is_named(job, tmp_path, capsys):
  config = tmp_path / "bad.yaml"
  config.write_text(open(job["config"]).read() + "bogus_key: 1\n")
  assert main(["validate", "--config", str(config)]) == 2
  assert "bogus_key: unknown key" in capsys.readouterr().err


# --- a SIGKILLed run leaves nothing that looks complete -----------------------

def _record_set(out):
  rows = read_predictions_independently(out)
  return sorted(json.dumps(r, sort_keys=True) for r in rows)


def _staged_prediction_shards(out):
  """Staged prediction files (under out/_staging, any depth) holding bytes."""
  found = []
  for path in glob.glob(str(out / "_staging" / "**" / "*.tfrecord"), recursive=True):
    try:
      if os.path.getsize(path) > 0:
        found.append(path)
    except OSError:  # moved or removed since the glob
      pass
  return found


def _kill_while_writing(cmd, out, log):
  """Starts the run; once a staged prediction shard holds bytes, freezes the
  process group (SIGSTOP) and looks at the disk. Returns True after killing
  it mid-write: the shard staged, nothing published, no _SUCCESS, the run
  alive. False when the run got further first (it then is killed too)."""
  with open(log, "wb") as log_file:
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
                            start_new_session=True)
  try:
    deadline = time.monotonic() + 600
    while not _staged_prediction_shards(out):
      if proc.poll() is not None:  # finished before we saw a staged shard
        assert proc.returncode == 0, log.read_text()[-3000:]
        return False
      assert time.monotonic() < deadline, "no staged prediction shard after 600 s"
      time.sleep(0.05)  # polling; the assertions below are on the frozen run
    os.killpg(proc.pid, signal.SIGSTOP)
    # Frozen: nothing changes on disk until the kill below.
    return (proc.poll() is None and bool(_staged_prediction_shards(out))
            and not glob.glob(str(out / "predictions-*"))
            and not (out / "_SUCCESS").exists())
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_sigkill_then_rerun_gives_exactly_the_complete_output(tmp_path):
  # 240+ batches of 50 are still to write when the first one is staged; should
  # the run nevertheless get past writing first, it is retried 4x larger.
  for attempt, n_records in enumerate((12000, 48000)):
    job = make_job(tmp_path / f"job{attempt}", n_records=n_records)
    out = tmp_path / f"out{attempt}"
    cmd = [sys.executable, "-m", "tfcascade", "run", "--config", job["config"],
           "--set", f"output.path={out}", "--set", "batch_size=50",
           "--runner=DirectRunner"]
    if _kill_while_writing(cmd, out, tmp_path / f"run{attempt}.log"):
      break
  else:
    pytest.fail("the run got past writing before it could be killed, twice")
  assert not (out / "_SUCCESS").exists()
  assert not glob.glob(str(out / "predictions-*"))
  assert main(cmd[3:]) == 0  # the rerun, in-process
  reference = tmp_path / "reference"
  assert main(cmd[3:6] + ["--set", f"output.path={reference}"] + cmd[8:]) == 0
  assert _record_set(out) == _record_set(reference)
  assert len(_record_set(out)) == n_records
  assert not (out / "_staging").exists()
