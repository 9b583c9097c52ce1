"""PortableRunner -> Beam's own Python job service (no Java, no Flink) -> SDK
harnesses started by an EXTERNAL worker pool running from a separate venv that
holds ONLY the wheel built from setup.py and its declared dependencies (what
Dataflow and Flink workers get). The same SDK harness as Flink and Dataflow
Runner v2; the job service itself is not Flink (tests/flink/ is)."""

import sys
from pathlib import Path

import pytest

from tests.runners import harness, real_job

pytestmark = pytest.mark.portable


def _portable(tmp_path, worker_python):
  """(job endpoint, worker pool) context managers, logs under tmp_path."""
  return (harness.PythonJobService(log_dir=tmp_path),
          harness.WorkerPool(worker_python, log_dir=tmp_path))


def test_toy_job_on_external_worker_pool(toy_input, toy_reference,
                                         worker_python, tmp_path):
  out = tmp_path / "out"
  service, pool = _portable(tmp_path, worker_python)
  with service as endpoint, pool as pool_address:
    harness.run_job(
        harness.toy_cmd(toy_input, out) +
        harness.runner_args("portable_external", job_endpoint=endpoint,
                            worker_pool=pool_address),
        timeout=300)
  assert harness.toy_outputs(out) == toy_reference
  venv = str(Path(worker_python).parent.parent)
  where = harness.toy_workers(out)
  # User code ran in the worker venv, not in the launcher's interpreter...
  assert {prefix for prefix, _ in where} == {venv}, where
  # ...and the project's package came from the installed wheel, not the repo.
  assert all(loc.startswith(venv) for _, loc in where), where
  assert sys.prefix != venv


def test_real_job_on_external_worker_pool(worker_python, tmp_path):
  job = real_job.prepare(tmp_path / "job")
  out = tmp_path / "portable"
  service, pool = _portable(tmp_path, worker_python)
  with service as endpoint, pool as pool_address:
    real_job.run(job, out, harness.runner_args(
        "portable_external", job_endpoint=endpoint, worker_pool=pool_address))
  real_job.check_same_as_direct(job, out, tmp_path / "direct")
