"""Full disks and lost permissions while writing (issue 20): the run FAILS
(exit 1: freeing space or restoring permissions and running again cures it)
with one `run FAILED` line naming the staged file and the OS error, and the
previous complete output is left byte for byte as it was, `_SUCCESS`
included.

The full disk is a real one: a small tmpfs mounted for each test (needs root,
or CAP_SYS_ADMIN: so it runs here and in CI; where mounting is refused the
tests SKIP saying so). Models and data stay outside it; only output.path is
on it. The CLI runs in a subprocess, so the exit code and stderr are the
user's, on the DirectRunner in-process, on multi_processing (the error
travels from a worker process) and on Spark local mode (from a Python
worker, through the JVM).

Lost permissions: as root, a read-only directory does not stop writes
(CAP_DAC_OVERRIDE), and a run as another user (`nobody`) is impossible here
because the venv's interpreter lives under /root (mode 0700). So the run is
started as root WITHOUT the capabilities that bypass file permissions
(`setpriv --bounding-set=-dac_override,...`): root is then bound by the mode
bits like any user, and the test takes write permission away mid-run.
"""

import contextlib
import errno
import glob
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.jobs import ENGINES, check_against_oracle, make_job
from tests.spark.conftest import spark_env, spark_python  # noqa: F401 (fixtures)
from tfcascade.transforms.writing.shard_writer import (OutputWriteError, ShardWriter,
                                                       describe_os_error, failures_named)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DISK = "1m"  # the previous output (~60 KB) fits; the big run's (~2.4 MB) does not
SMALL_RECORDS = 300
BIG_RECORDS = 12000  # 3 input files: 3 units of ~0.8 MB of predictions each
# Engines whose own logs print a failed worker's traceback on the launcher's
# stderr, beside our one line (not ours to silence: the launcher's Beam and
# Spark adapters would have to). The test says so (xfail) once everything
# else has passed; a fix there turns it green.
TRACEBACK_LEAKS = {
    "multi_processing": "Beam's SDK worker processes print a failed bundle's traceback "
                        "straight to the inherited stderr (apache_beam/runners/worker/"
                        "sdk_worker.py, print(traceback_string, file=sys.stderr)) and the "
                        "launcher re-logs it as an ERROR 'Worker: ...' record",
}
# Root less the capabilities that bypass file permissions.
NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]


@contextlib.contextmanager
def small_disk(path, size):
  """A tmpfs of `size` mounted at `path` (created), unmounted afterwards."""
  os.makedirs(path, exist_ok=True)
  if not shutil.which("mount"):
    pytest.skip("full disk NOT tested: no `mount` command to make a small tmpfs")
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                           capture_output=True, text=True, check=False)
  if mounted.returncode != 0:
    pytest.skip(f"full disk NOT tested: mounting a {size} tmpfs at {path} was refused "
                f"(needs root with CAP_SYS_ADMIN; uid {os.getuid()}): "
                f"{(mounted.stderr or mounted.stdout).strip()}")
  try:
    yield path
  finally:
    if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode:
      subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def _free_bytes(path):
  stat = os.statvfs(path)
  return stat.f_bavail * stat.f_frsize


def _total_bytes(path):
  stat = os.statvfs(path)
  return stat.f_blocks * stat.f_frsize


# --- the writer, on a full disk ---------------------------------------------------

@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_a_full_disk_names_the_file_and_the_os_error_and_frees_its_bytes(
    tmp_path, compression):
  with small_disk(tmp_path / "disk", "256k") as disk:
    writer = ShardWriter(str(disk / "files"), "predictions", ".tfrecord", compression)
    with pytest.raises(OutputWriteError) as raised:
      for _ in range(64):  # 1 MiB into 256 KiB; the error may wait for close()
        writer.write(os.urandom(16 * 1024), 1)  # fresh random bytes: gzip cannot shrink them
      writer.close()
    message = str(raised.value)
    assert "\n" not in message  # one line: what the CLI prints
    assert f"the staged output file {writer.path} failed: " in message
    assert "No space left on device (ENOSPC)" in message
    assert "nothing was published and the previous output is untouched" in message
    assert isinstance(raised.value.__cause__, OSError)
    assert raised.value.__cause__.errno == errno.ENOSPC
    # The half-written file is gone, its space given back to the next attempt.
    assert not os.path.exists(writer.path)
    assert _free_bytes(disk) == _total_bytes(disk)
    assert writer.close() is None  # a broken writer reports no file


def test_other_writers_of_the_output_get_the_same_one_line_error(tmp_path):
  """failures_named: for writes outside ShardWriter (the publish step's)."""
  from tfcascade.transforms.publishing import output_layout as layout  # pylint: disable=g-import-not-at-top
  with small_disk(tmp_path / "disk", "64k") as disk:
    with open(disk / "filler", "wb", buffering=0) as f:  # the disk is full
      with pytest.raises(OSError):
        while True:
          f.write(b"\0" * 4096)
    journal = str(disk / "PUBLISH.json")
    with pytest.raises(OutputWriteError) as raised:
      with failures_named("writing the publish journal", journal):
        layout.write_json(journal, {"moves": [["a" * 100, "b" * 100]] * 100})
  assert str(raised.value) == (
      f"writing the publish journal {journal} failed: No space left on device (ENOSPC); "
      "nothing was published and the previous output is untouched")


def test_beams_wrapped_errors_are_described_by_the_os_error_inside():
  from apache_beam.io.filesystem import BeamIOError  # pylint: disable=g-import-not-at-top
  wrapped = BeamIOError("Rename operation failed", {
      ("/o/a", "/o/b"): OSError(errno.EACCES, "Permission denied", "/o/b")})
  assert describe_os_error(wrapped) == "Permission denied (EACCES)"
  assert describe_os_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) == \
      "No space left on device (ENOSPC)"
  assert describe_os_error(OSError("no errno here")) == "no errno here"


# --- the publish step, on a full disk ------------------------------------------------

def test_a_journal_cut_short_by_a_full_disk_does_not_wedge_the_output(tmp_path):
  """The disk fills between the units' commits and the publish: the journal
  cannot be written, so nothing was touched, and once space is freed the next
  run must start normally (not trip over half a journal)."""
  from tfcascade.pipeline import run_start  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.accounting import RunCounts  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.formats.tfrecord_framing import frame_records  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.publishing import finalize  # pylint: disable=g-import-not-at-top

  def stage(out, records):
    run = run_start.prepare(out, overwrite=True)
    writer = ShardWriter(run.files_dir, "predictions", ".tfrecord")
    writer.write(frame_records(records), len(records))
    info = {"run_id": run.run_id, "runner": "test", "started_at": "t",
            "start_epoch": time.time(), "output_format": "tfrecord",
            "predictions_suffix": ".tfrecord", "max_dead_letter_fraction": 0.01,
            "run_date": None, "stages": []}
    return run, RunCounts(records_read=len(records), files=[writer.close()]), info

  with small_disk(tmp_path / "disk", "256k") as disk:
    out = str(disk / "out")
    run, counts, info = stage(out, [b"old%d" % i for i in range(100)])
    finalize.finalize(counts, out, run.run_id, info)
    before = _snapshot(out)
    run, counts, info = stage(out, [b"new%d" % i for i in range(100)])
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:  # someone else fills the disk
      with pytest.raises(OSError):
        while True:
          f.write(b"\0" * 4096)
    with pytest.raises(OutputWriteError, match=r"writing the publish journal .*PUBLISH\.json "
                       r"failed: No space left on device \(ENOSPC\)"):
      finalize.finalize(counts, out, run.run_id, info)
    assert _snapshot(out) == before  # the journal comes before any change
    os.remove(filler)  # room again; the launcher (this process) marks the run ended
    run_start.mark_ended(run, "failed: OutputWriteError")
    run_start.prepare(out, overwrite=True)  # no half journal to trip over
    assert _snapshot(out) == before


# --- the CLI, on every engine -------------------------------------------------------

@pytest.fixture(scope="module")
def small_job(tmp_path_factory):
  return make_job(tmp_path_factory.mktemp("small"), n_records=SMALL_RECORDS)


@pytest.fixture(scope="module")
def big_job(tmp_path_factory):
  return make_job(tmp_path_factory.mktemp("big"), n_records=BIG_RECORDS)


def _cli(job, out, engine_args, *extra, env=None, prefix=(), popen=False):
  cmd = [*prefix, sys.executable, "-m", "tfcascade", "run", "--config", job["config"],
         "--set", f"output.path={out}", *engine_args, *extra]
  if popen:
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace",
                            start_new_session=True)
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                        errors="replace", timeout=600, check=False)


def _snapshot(out):
  """Every file of the published output (the failed run's _staging aside):
  relative path -> sha256 of its bytes."""
  found = {}
  for directory, dirs, files in os.walk(out):
    dirs[:] = [d for d in dirs if not (directory == str(out) and d == "_staging")]
    for name in files:
      path = os.path.join(directory, name)
      with open(path, "rb") as f:
        found[os.path.relpath(path, out)] = hashlib.sha256(f.read()).hexdigest()
  return found


def _publish_previous_output(small_job, out):
  done = _cli(small_job, out, ENGINES["direct"])
  assert done.returncode == 0, done.stderr
  before = _snapshot(out)
  assert "_SUCCESS" in before and any(p.startswith("predictions-") for p in before)
  return before


def _failed_line(stderr, out, os_error):
  """The one `run FAILED` line; checks it names a staged file under `out`
  and the OS error. Returns it and the path."""
  lines = [l for l in stderr.splitlines() if l.startswith("tfcascade: run FAILED: ")]
  assert len(lines) == 1, stderr
  line = lines[0]
  assert os_error in line, line
  assert "nothing was published and the previous output is untouched" in line, line
  named = re.search(r"the staged output file (\S+) failed: ", line)
  assert named, line
  path = named.group(1)
  assert path.startswith(os.path.join(str(out), "_staging", "")), line
  return line, path


def _engine_env(engine, request):
  if engine != "spark":
    return None
  return dict(os.environ, **request.getfixturevalue("spark_env"))


@pytest.mark.slow
@pytest.mark.parametrize("engine", [
    "direct", "multi_processing", pytest.param("spark", marks=pytest.mark.spark)])
def test_a_full_disk_fails_the_run_and_keeps_the_previous_output(
    engine, small_job, big_job, tmp_path, request):
  env = _engine_env(engine, request)
  with small_disk(tmp_path / "disk", DISK) as disk:
    out = disk / "out"
    before = _publish_previous_output(small_job, out)
    failed = _cli(big_job, out, ENGINES[engine], "--overwrite", env=env)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    line, path = _failed_line(failed.stderr, out, "No space left on device (ENOSPC)")
    print(f"{engine}: {line}")  # the exact message, for the record (-s)
    assert not os.path.exists(path)  # the half-written file was dropped
    assert _snapshot(out) == before  # byte for byte, _SUCCESS included
    # A retry cures it: more space, the same command, a complete output.
    subprocess.run(["mount", "-o", "remount,size=32m", str(disk)], check=True)
    retried = _cli(big_job, out, ENGINES[engine], "--overwrite", env=env)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert os.path.exists(out / "_SUCCESS")
    check_against_oracle(out, big_job["oracle"])
  _no_traceback(failed.stderr, engine)


def _no_traceback(stderr, engine):
  """Only the one line by default (the traceback is --verbose's)."""
  if "Traceback" in stderr and engine in TRACEBACK_LEAKS:
    pytest.xfail(f"{engine} prints a traceback besides the one line: "
                 f"{TRACEBACK_LEAKS[engine]}")
  assert "Traceback" not in stderr, stderr


def _setpriv_works():
  if not shutil.which("setpriv"):
    return "no `setpriv` (util-linux) to drop root's CAP_DAC_OVERRIDE"
  probe = subprocess.run(NO_DAC + [sys.executable, "-c", "import os; print(os.access('/', 2))"],
                         capture_output=True, text=True, check=False)
  if probe.returncode != 0:
    return f"setpriv cannot drop capabilities here: {probe.stderr.strip()}"
  return None


@pytest.mark.slow
def test_lost_permissions_fail_the_run_and_keep_the_previous_output(
    small_job, big_job, tmp_path):
  """Write permission taken away while the run works (the launcher's check
  at start passed): EACCES when a worker creates its next staged file."""
  if os.getuid() != 0:
    pytest.skip("lost permissions NOT tested: the test takes permissions away from a "
                "root-owned directory, so it runs as root (here and in CI)")
  problem = _setpriv_works()
  if problem:
    pytest.skip(f"lost permissions NOT tested: {problem}")
  out = tmp_path / "out"
  before = _publish_previous_output(small_job, out)
  proc = _cli(big_job, out, ENGINES["direct"], "--overwrite", "--set", "batch_size=100",
              prefix=NO_DAC, popen=True)
  taken = None
  try:
    deadline = time.time() + 300
    while taken is None and time.time() < deadline and proc.poll() is None:
      markers = glob.glob(os.path.join(out, "_staging", "*", "RUN.json"))
      if markers:
        os.killpg(proc.pid, signal.SIGSTOP)  # nothing moves while permissions go
        run_dir = os.path.dirname(markers[0])
        files = os.path.join(run_dir, "files")
        # The files directory once it exists (the units' commits, beside it,
        # stay writable); before, the run directory, so it cannot be made.
        taken = files if os.path.isdir(files) else run_dir
        os.chmod(taken, 0o555)
        os.killpg(proc.pid, signal.SIGCONT)
      else:
        time.sleep(0.005)
    stdout, stderr = proc.communicate(timeout=600)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
    if taken:
      os.chmod(taken, 0o755)
  assert taken, f"the run ended before it started staging: {stdout}{stderr}"
  assert proc.returncode == 1, stdout + stderr
  line, _ = _failed_line(stderr, out, "Permission denied (EACCES)")
  print(f"permissions: {line}")
  assert _snapshot(out) == before
  _no_traceback(stderr, "direct")
