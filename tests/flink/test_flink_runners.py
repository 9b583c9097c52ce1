"""The toy Beam job (tests/flink/toy_pipeline.py) on real Flink and on a
PortableRunner with an EXTERNAL worker pool must write exactly what the
in-process FnApiRunner writes.

These prove the infrastructure (tests/flink/harness.py, ci/flink/*); the same
`harness.flink_args(mode, ...)` is appended to `python -m pipeline run ...`
for the real job.
"""
import sys
from pathlib import Path

import pytest

from tests.flink import harness
from tests.flink.conftest import toy_cmd

pytestmark = pytest.mark.flink


def _assert_same_as_reference(out_prefix, reference):
  for kind, expected in reference.items():
    got = harness.read_lines("%s-%s-*" % (out_prefix, kind))
    assert got == expected, "%s differ from the FnApiRunner's" % kind


def _where(out_prefix):
  """{(sys.prefix, transforms location)} of the workers that ran user code."""
  return {
      tuple(line.split("\t"))
      for line in harness.read_lines("%s-where-*" % out_prefix)
  }


def test_flink_args_shapes():
  # Cheap and always on: the flags the lead appends to the real job.
  a = harness.flink_args("minicluster", jar="/j.jar")
  assert "--flink_master=[local]" in a and "--flink_version=1.20" in a
  assert "--environment_type=LOOPBACK" in a and "--parallelism=2" in a
  assert any(x.startswith("--job_server_jvm_properties=--add-opens=") for x in a)
  b = harness.flink_args("standalone", jar="/j.jar", flink_master="h:8081")
  assert "--flink_master=h:8081" in b
  c = harness.flink_args("portable_external", job_endpoint="localhost:1",
                         worker_pool="localhost:2")
  assert c[:4] == ["--runner=PortableRunner", "--job_endpoint=localhost:1",
                   "--environment_type=EXTERNAL",
                   "--environment_config=localhost:2"]
  with pytest.raises(ValueError):
    harness.flink_args("standalone", jar="/j.jar")
  with pytest.raises(ValueError):
    harness.flink_args("bogus")


def test_standalone_cluster_runs_a_flink_job(flink_cluster, tmp_path):
  """The cluster from ci/flink/cluster.sh is real: a plain Flink batch job
  (no Beam) is scheduled on its TaskManager with parallelism 2."""
  flink_cluster.smoke(tmp_path / "smoke")
  files = list((tmp_path / "smoke").iterdir())
  assert len(files) == 2  # one per parallel subtask
  lines = [l for f in files for l in f.read_text().splitlines()]
  assert sorted(int(l.split(",")[0]) for l in lines) == list(range(1, 1001))


def test_portable_external_worker_pool(toy_input, toy_reference, worker_python,
                                       tmp_path):
  """PortableRunner -> Beam's portable job service -> SDK harnesses started
  by an EXTERNAL worker pool running from a separate venv that holds only the
  project's wheel (+ deps). The same SDK harness as Flink and Dataflow
  Runner v2; needs no Java."""
  out = tmp_path / "out"
  with harness.PythonJobService(log_dir=tmp_path) as endpoint, \
      harness.WorkerPool(worker_python, log_dir=tmp_path) as pool:
    harness.run_job(
        toy_cmd(toy_input, out) +
        harness.flink_args("portable_external", job_endpoint=endpoint,
                           worker_pool=pool),
        timeout=300)
  _assert_same_as_reference(out, toy_reference)
  venv = str(Path(worker_python).parent.parent)
  where = _where(out)
  # User code ran in the worker venv, not in the launcher's interpreter...
  assert {prefix for prefix, _ in where} == {venv}, where
  # ...and the project's package came from the installed wheel, not the repo.
  if (harness.REPO / "setup.py").is_file():
    assert all(loc.startswith(venv) for _, loc in where), where
  assert sys.prefix != venv


def test_flinkrunner_minicluster(toy_input, toy_reference, job_server_jar,
                                 tmp_path):
  out = tmp_path / "out"
  harness.run_job(
      toy_cmd(toy_input, out) +
      harness.flink_args("minicluster", jar=job_server_jar), timeout=300)
  _assert_same_as_reference(out, toy_reference)


def test_flinkrunner_standalone_cluster(toy_input, toy_reference,
                                        job_server_jar, flink_cluster,
                                        tmp_path):
  out = tmp_path / "out"
  harness.run_job(
      toy_cmd(toy_input, out) +
      harness.flink_args("standalone", jar=job_server_jar,
                         flink_master=flink_cluster.address), timeout=300)
  _assert_same_as_reference(out, toy_reference)


def test_portable_external_on_flink_job_server(toy_input, toy_reference,
                                               job_server_jar, worker_python,
                                               tmp_path):
  """PortableRunner -> Flink job-server jar (embedded MiniCluster) -> EXTERNAL
  worker pool from the worker venv."""
  out = tmp_path / "out"
  with harness.FlinkJobServer(job_server_jar, log_dir=tmp_path) as endpoint, \
      harness.WorkerPool(worker_python, log_dir=tmp_path) as pool:
    harness.run_job(
        toy_cmd(toy_input, out) +
        harness.flink_args("portable_external", job_endpoint=endpoint,
                           worker_pool=pool), timeout=300)
  _assert_same_as_reference(out, toy_reference)
  venv = str(Path(worker_python).parent.parent)
  assert {prefix for prefix, _ in _where(out)} == {venv}
