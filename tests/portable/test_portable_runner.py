"""The job on a portable runner whose SDK harnesses an EXTERNAL worker pool
starts, as separate processes, from a venv that holds ONLY the wheel built
from setup.py and its declared dependencies (what Dataflow and Flink workers
get). The same SDK harness as Flink and Dataflow Runner v2, behind two job
services:

  python  Beam's own Python job service (FnApiRunner behind the Job API; no
          Java, no Flink);
  prism   Beam's Prism runner, a Go program (ci/prism/build.sh): an
          independent implementation of the runner side of the portability
          API (job service, fusion, data plane, splitting), the contract Flink
          and Dataflow Runner v2 implement.

Neither is Flink (tests/flink/ is).
"""

import contextlib
import os
import sys
from pathlib import Path

import pytest

from tests.jobs import check_against_oracle, summary_of
from tests.runners import harness, real_job

pytestmark = pytest.mark.portable
JOB_SERVICES = ("python", "prism")


@contextlib.contextmanager
def _portable(job_service, request, worker_python, tmp_path):
  """Beam args for `job_service` with a worker pool from worker_python; the
  services run (logs under tmp_path) until the block ends."""
  prism = request.getfixturevalue("prism_binary") if job_service == "prism" else None
  with harness.WorkerPool(worker_python, log_dir=tmp_path) as pool:
    if prism:
      yield harness.runner_args("prism_external", prism=prism, worker_pool=pool)
      return
    with harness.PythonJobService(log_dir=tmp_path) as endpoint:
      yield harness.runner_args("portable_external", job_endpoint=endpoint,
                                worker_pool=pool)


@pytest.mark.parametrize("job_service", JOB_SERVICES)
def test_toy_job_on_external_worker_pool(job_service, request, toy_input, toy_reference,
                                         worker_python, tmp_path):
  out = tmp_path / "out"
  with _portable(job_service, request, worker_python, tmp_path) as runner_args:
    harness.run_job(harness.toy_cmd(toy_input, out) + runner_args, timeout=300)
  assert harness.toy_outputs(out) == toy_reference
  venv = str(Path(worker_python).parent.parent)
  where = harness.toy_workers(out)
  # User code ran in the worker venv, not in the launcher's interpreter...
  assert {prefix for prefix, _ in where} == {venv}, where
  # ...and the project's package came from the installed wheel, not the repo.
  assert all(loc.startswith(venv) for _, loc in where), where
  assert sys.prefix != venv


@pytest.mark.parametrize("job_service", JOB_SERVICES)
def test_real_job_on_external_worker_pool(job_service, request, worker_python, tmp_path):
  job = real_job.prepare(tmp_path / "job")
  out = tmp_path / job_service
  with _portable(job_service, request, worker_python, tmp_path) as runner_args:
    real_job.run(job, out, runner_args)
  real_job.check_same_as_direct(job, out, tmp_path / "direct")


def test_cli_finds_prism_through_the_env(prism_binary, tmp_path):
  """`tfcascade run --runner=PrismRunner`, no --prism_location, no `prism`
  on PATH, an empty cache: the binary named by $TFCASCADE_PRISM runs the job
  (Prism's default environment: workers in the launcher)."""
  job = real_job.prepare(tmp_path / "job", n_records=300)
  calls = tmp_path / "prism-calls"
  wrapper = tmp_path / "bin" / "prism-wrapper"  # the real Prism, its calls noted
  wrapper.parent.mkdir()
  wrapper.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec {prism_binary} "$@"\n')
  wrapper.chmod(0o755)
  path = [d for d in os.environ["PATH"].split(os.pathsep)
          if not os.access(os.path.join(d, "prism"), os.X_OK)]
  env = dict(os.environ, TFCASCADE_PRISM=str(wrapper), TFCASCADE_CACHE=str(tmp_path / "cache"),
             PATH=os.pathsep.join(path))
  out = tmp_path / "out"
  real_job.run(job, out, ["--runner=PrismRunner"], env=env)
  assert "--job_port" in calls.read_text()  # Beam started the Prism we named
  check_against_oracle(out, job["oracle"])
  summary = summary_of(out)
  assert summary["runner"] == "PrismRunner"
  assert summary["records_read"] == 300 == summary["records_written"]
