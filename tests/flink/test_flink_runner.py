"""Jobs executed by Flink: Beam's Flink job server (the jar from
$TFCASCADE_FLINK_JOB_SERVER_JAR) on its embedded MiniCluster or on a real
standalone cluster. Outputs must equal the in-process FnApiRunner's (toy job)
or the oracle's and the DirectRunner's (the real job).

Without the jar every test here skips with the reason (see conftest.py): the
FlinkRunner has not been run on our machines yet.
"""
from pathlib import Path

import pytest

from tests.runners import harness, real_job

pytestmark = pytest.mark.flink


# job_server_jar comes first in each signature: without the jar the test skips
# before anything (the FnApiRunner reference, the worker venv) is built.


def test_toy_job_on_flinkrunner_minicluster(job_server_jar, toy_input,
                                            toy_reference, tmp_path):
  out = tmp_path / "out"
  harness.run_job(
      harness.toy_cmd(toy_input, out) +
      harness.runner_args("minicluster", jar=job_server_jar), timeout=300)
  assert harness.toy_outputs(out) == toy_reference


def test_toy_job_on_flinkrunner_standalone_cluster(job_server_jar, flink_cluster,
                                                   toy_input, toy_reference,
                                                   tmp_path):
  out = tmp_path / "out"
  harness.run_job(
      harness.toy_cmd(toy_input, out) +
      harness.runner_args("standalone", jar=job_server_jar,
                          flink_master=flink_cluster.address), timeout=300)
  assert harness.toy_outputs(out) == toy_reference


def test_toy_job_on_flink_job_server_with_external_workers(
    job_server_jar, toy_input, toy_reference, worker_python, tmp_path):
  """PortableRunner -> Flink job server (embedded MiniCluster) -> EXTERNAL
  worker pool from the worker venv."""
  out = tmp_path / "out"
  with harness.FlinkJobServer(job_server_jar, log_dir=tmp_path) as endpoint, \
      harness.WorkerPool(worker_python, log_dir=tmp_path) as pool:
    harness.run_job(
        harness.toy_cmd(toy_input, out) +
        harness.runner_args("portable_external", job_endpoint=endpoint,
                            worker_pool=pool), timeout=300)
  assert harness.toy_outputs(out) == toy_reference
  venv = str(Path(worker_python).parent.parent)
  assert {prefix for prefix, _ in harness.toy_workers(out)} == {venv}


def test_real_job_on_flinkrunner_minicluster(job_server_jar, tmp_path):
  job = real_job.prepare(tmp_path / "job")
  out = tmp_path / "flink"
  real_job.run(job, out, harness.runner_args("minicluster", jar=job_server_jar))
  real_job.check_same_as_direct(job, out, tmp_path / "direct")
