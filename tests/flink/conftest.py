"""Fixtures for the Flink tests: jobs that a Flink job server (Beam's
job-server jar) executes, on its embedded MiniCluster or on a standalone
cluster (ci/flink/cluster.sh). Shared fixtures are in tests/conftest.py.

Every test here needs Beam's Flink job-server jar, which only
$TFCASCADE_FLINK_JOB_SERVER_JAR provides (the Maven repository our machines
reach does not serve it). Without it, or without Java, the tests SKIP saying
so, which means Flink was NOT tested; under TFCASCADE_REQUIRE_FLINK=1 they
FAIL instead, so a CI that promises Flink coverage cannot go green without it.
"""

import pytest

from tests.runners import harness


def _unavailable(reason):
  if harness.flink_required():
    pytest.fail("%s=1 but: %s" % (harness.REQUIRE_ENV, reason))
  pytest.skip("Flink NOT tested: " + reason)


@pytest.fixture(scope="session")
def job_server_jar():
  # The jar first: without it nothing here runs, whatever else is installed.
  jar, reason = harness.job_server_jar()
  if jar is None:
    _unavailable(reason)
  reason = harness.java_available()
  if reason:
    _unavailable(reason)
  return jar


@pytest.fixture(scope="session")
def flink_cluster(job_server_jar, tmp_path_factory):
  """A real standalone Flink cluster (ci/flink/cluster.sh) for the session, on
  free loopback ports so it never collides with a user's cluster on 8081.
  Started only for tests that can submit to it (needs the jar)."""
  cluster = harness.FlinkCluster(
      state_dir=tmp_path_factory.mktemp("flink-cluster"))
  try:
    cluster.start()
  except Exception as e:  # a broken install is a failure, not a skip
    pytest.fail("could not start the Flink cluster: %s" % e)
  yield cluster
  cluster.stop()
