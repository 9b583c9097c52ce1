"""Every core by default (pipeline.local_workers): the choice of worker
processes, a real run on two warm worker processes checked against the
oracle, and a worker killed mid-run failing the run (exit 1) so that a rerun
resumes it."""

import glob
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tfcascade.pipeline import local_workers
from tests.jobs import check_against_oracle, make_job, summary_of, write_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 2**20


@pytest.mark.parametrize("input_bytes, units, wanted, available, workers, says", [
    (700 * MIB, 24, None, 2, 2, "one per core of 2"),
    (600 * MIB, 24, None, 2, 1, "under 640 MiB, too little to pay for 2 worker start-ups"),
    (600 * MIB, 24, None, 4, 4, "one per core of 4"),  # break-even 213 MiB on 4 cores
    (200 * MIB, 24, None, 4, 1, "under 213 MiB"),
    (70 * MIB, 24, None, 16, 16, "one per core of 16"),  # never below 64 MiB
    (60 * MIB, 24, None, 16, 1, "under 64 MiB"),
    (700 * MIB, 3, None, 16, 3, "with 3 worker processes"),  # never more than units
    (10 * MIB, 24, None, 2, 1, "too little to pay for 2 worker start-ups"),
    (700 * MIB, 24, None, 1, 1, "1 core"),
    (700 * MIB, 1, None, 2, 1, "in-process"),
    (1 * MIB, 3, 2, 2, 2, "--direct_num_workers=2"),  # asked: even for a small input
    (1 * MIB, 3, 0, 4, 3, "--direct_num_workers=0"),  # 0: one per core, capped by units
    (1 * MIB, 3, 1, 4, 1, "in-process (--direct_num_workers=1"),
])
def test_the_choice_of_worker_processes(input_bytes, units, wanted, available, workers, says):
  choice = local_workers.choose(input_bytes, units, wanted, available)
  assert choice.workers == workers
  assert says in choice.why
  assert choice.why.startswith("in-process" if workers == 1 else f"with {workers} worker")


@pytest.mark.parametrize("flags, ours, wanted", [
    ([], True, None),
    (["--direct_num_workers=3"], True, 3),
    (["--direct_num_workers", "0"], True, 0),
    (["--runner=DirectRunner"], False, None),
    (["--direct_running_mode=multi_processing", "--direct_num_workers=2"], False, 2),
    (["--environment_type=EXTERNAL"], False, None),
])
def test_which_flags_leave_the_choice_to_us(flags, ours, wanted):
  assert local_workers.ours_to_choose(flags) is ours
  assert local_workers.requested(flags) == wanted


def _run(config, *flags, out):
  return subprocess.Popen(
      [sys.executable, "-m", "tfcascade", "run", "--config", config,
       f"--set=output.path={out}", *flags],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})


@pytest.fixture(scope="module")
def job(tmp_path_factory):
  return make_job(tmp_path_factory.mktemp("warm"))


def test_two_warm_worker_processes_score_like_the_oracle(job):
  out = job["root"] / "out-warm"
  proc = _run(job["config"], "--direct_num_workers=2", out=out)
  stdout, stderr = proc.communicate(timeout=600)
  assert proc.returncode == 0, stderr[-3000:]
  assert "scoring with 2 worker processes (--direct_num_workers=2;" in stderr
  summary = summary_of(out)
  assert summary["runner"] == "DirectRunner (2 worker processes)"
  assert summary["metrics"]["sessions_opened"] == 2  # one session in each process
  assert summary["records_read"] == summary["records_written"] == len(job["ids"])
  check_against_oracle(out, job["oracle"])
  assert not [p for p in psutil.process_iter(["cmdline"])  # every worker ended
              if "warm_worker" in " ".join(p.info["cmdline"] or [])]


def test_a_small_input_runs_in_process_by_default_and_says_so(job):
  out = job["root"] / "out-default"
  proc = _run(job["config"], out=out)
  _, stderr = proc.communicate(timeout=600)
  assert proc.returncode == 0, stderr[-3000:]
  assert "scoring in-process (" in stderr and "too little to pay for" in stderr
  assert summary_of(out)["runner"] == "DirectRunner"


def _warm_workers_of(launcher):
  return [p for p in psutil.Process(launcher.pid).children(recursive=True)
          if "warm_worker" in " ".join(p.cmdline())]


def test_a_worker_killed_mid_run_fails_the_run_and_a_rerun_resumes(tmp_path):
  # Long enough to be killed mid-run: 60,000 rows in batches of 10.
  slow = make_job(tmp_path, n_records=60_000)
  config = write_config(tmp_path / "slow.yaml")
  with open(config) as f:
    text = f.read().replace("batch_size: 200", "batch_size: 10")
  with open(config, "w") as f:
    f.write(text)
  out = tmp_path / "out"
  proc = _run(config, "--direct_num_workers=2", out=out)
  deadline = time.monotonic() + 300
  while not glob.glob(str(out / "_staging" / "*" / "units" / "*")):  # scoring for sure
    assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
    time.sleep(0.2)
  workers = _warm_workers_of(proc)
  assert len(workers) == 2
  victim = workers[0]
  victim.send_signal(signal.SIGKILL)
  _, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 1, stderr[-3000:]
  last = stderr.strip().splitlines()[-1]
  assert last == (f"tfcascade: run FAILED: worker process {victim.pid} ended with exit "
                  f"code -9 while the job was running (killed: out of memory?)"), stderr[-3000:]
  assert "Traceback" not in stderr, stderr
  assert not (out / "_SUCCESS").exists()
  assert not [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
  # The units committed before the kill are kept; the rerun scores the rest.
  rerun = _run(config, "--direct_num_workers=2", out=out)
  _, stderr = rerun.communicate(timeout=600)
  assert rerun.returncode == 0, stderr[-3000:]
  summary = summary_of(out)
  assert summary["records_read"] == summary["records_written"] == 60_000
  # At least the unit committed before the kill (all three if the kill came
  # after the last commit: the run still failed, nothing was published).
  assert 20_000 <= summary["records_resumed"] <= 60_000
  check_against_oracle(out, slow["oracle"])
