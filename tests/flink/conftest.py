"""Fixtures for the Flink / portable-runner tests (see tests/flink/harness.py).

A missing prerequisite (Java, Beam's Flink job-server jar) SKIPS with the
reason, except under TFCASCADE_REQUIRE_FLINK=1, where it FAILS: a CI that
promises Flink coverage must not go green by skipping it.
"""
import sys

import pytest

from tests.flink import harness


def pytest_configure(config):
  # pytest.ini registers it too; repeating it keeps this folder usable alone.
  config.addinivalue_line(
      "markers", "flink: runs a job on real Flink or a portable runner with "
      "an EXTERNAL worker pool (slow; needs Java for the Flink parts)")


def _unavailable(reason):
  if harness.flink_required():
    pytest.fail("%s=1 but: %s" % (harness.REQUIRE_ENV, reason))
  pytest.skip(reason)


@pytest.fixture(scope="session")
def java():
  reason = harness.java_available()
  if reason:
    _unavailable(reason)


@pytest.fixture(scope="session")
def _jar_lookup():
  # One lookup per session: a failing mvn fetch costs ~15 s each time.
  return harness.job_server_jar()


@pytest.fixture
def job_server_jar(java, _jar_lookup):
  jar, reason = _jar_lookup
  if jar is None:
    _unavailable("Beam's Flink job-server jar (beam-runners-flink-%s-job-server"
                 ":%s) is not available: %s. Put a copy at $%s to run this." %
                 (harness.FLINK_VERSION, harness.BEAM_VERSION, reason,
                  harness.JAR_ENV))
  return jar


@pytest.fixture(scope="session")
def flink_cluster(java, tmp_path_factory):
  """A real standalone Flink cluster (ci/flink/cluster.sh) for the session, on
  free loopback ports so it never collides with a user's cluster on 8081."""
  cluster = harness.FlinkCluster(
      state_dir=tmp_path_factory.mktemp("flink-cluster"))
  try:
    cluster.start()
  except Exception as e:  # a broken install is a failure, not a skip
    pytest.fail("could not start the Flink cluster: %s" % e)
  yield cluster
  cluster.stop()


@pytest.fixture(scope="session")
def worker_python():
  """Interpreter of the worker venv: the project's wheel + declared deps."""
  return harness.make_worker_venv(harness.REPO)


TOY = harness.REPO / "tests" / "flink" / "toy_pipeline.py"


@pytest.fixture(scope="session")
def toy_input(tmp_path_factory):
  path = tmp_path_factory.mktemp("toy") / "input.txt"
  with open(path, "w") as f:
    for i in range(2000):
      f.write("k%d,%d\n" % (i % 37, i))
  return path


def toy_cmd(input_path, out_prefix):
  return [sys.executable, str(TOY), "--input", str(input_path), "--output",
          str(out_prefix)]


@pytest.fixture(scope="session")
def toy_reference(toy_input, tmp_path_factory):
  """Outputs of the toy job on the in-process FnApiRunner: the oracle."""
  out = tmp_path_factory.mktemp("toy-ref") / "out"
  harness.run_job(toy_cmd(toy_input, out) + harness.reference_args())
  return {
      kind: harness.read_lines("%s-%s-*" % (out, kind))
      for kind in ("records", "totals")
  }
