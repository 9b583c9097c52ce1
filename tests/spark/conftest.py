"""Fixtures for the Spark tests (issue 11): a real standalone cluster (a master
and two 1-core workers on loopback, ci/spark/cluster.sh), a SparkSession on it,
and an embedded local-mode SparkSession.

Spark comes from the `spark` extra (pyspark ships Spark's jars) and needs
Java 17. Without pyspark or Java the tests SKIP saying "Spark NOT tested" --
except under TFCASCADE_REQUIRE_SPARK=1 (or CI=true), where that, and a cluster
that does not come up, is a FAILURE: CI must not go green without Spark.

Env:
  TFCASCADE_SPARK_MASTER        use this running cluster (spark://host:port)
                                instead of starting one; it is not stopped
  TFCASCADE_SPARK_MASTER_WEBUI  its web UI (default: http://127.0.0.1:18180,
                                cluster.sh's default)
  TFCASCADE_SPARK_EXECUTORS     executors to wait for before a test (default 2)
  TFCASCADE_SPARK_PYTHON        Python for the executors (default: this one)

Only one SparkContext can live in a process, so the two session fixtures
share one holder: asking for the other kind stops the current one first (keep
tests of one kind together: one module each).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO / "ci" / "spark" / "cluster.sh"
REQUIRE_ENV = "TFCASCADE_REQUIRE_SPARK"
START_TIMEOUT_S = 180


def spark_required():
  return (os.environ.get(REQUIRE_ENV) == "1" or
          os.environ.get("CI", "").lower() in ("1", "true", "yes"))


def _unavailable(reason):
  if spark_required():
    pytest.fail("Spark is required here (%s=1 or CI) but: %s"
                % (REQUIRE_ENV, reason), pytrace=False)
  pytest.skip("Spark NOT tested: " + reason)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def master_json(webui):
  """The standalone master's status (/json/ of its web UI) as a dict."""
  with urllib.request.urlopen(webui.rstrip("/") + "/json/", timeout=5) as r:
    return json.load(r)


@pytest.fixture(scope="session")
def spark_python():
  """The Python the executors run: the venv's (it has TF and the project)."""
  return os.environ.get("TFCASCADE_SPARK_PYTHON") or sys.executable


@pytest.fixture(scope="session")
def spark_env(spark_python):
  """Environment for a Spark driver (this process, or a subprocess such as
  `tfcascade run --engine spark`): loopback only, the venv's Python for the
  executors, Spark from the installed pyspark. Also applied to os.environ,
  since pyspark's SparkContext reads PYSPARK_PYTHON from it."""
  try:
    import pyspark  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    _unavailable("pyspark is not installed (pip install -c constraints.txt "
                 "-e '.[spark]'): %s" % e)
  if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
    _unavailable("no java on PATH and no JAVA_HOME (Spark 4 needs Java 17)")
  env = {
      "SPARK_HOME": os.path.dirname(pyspark.__file__),
      "SPARK_LOCAL_IP": "127.0.0.1",
      "PYSPARK_PYTHON": spark_python,
      "PYSPARK_DRIVER_PYTHON": spark_python,
  }
  os.environ.update(env)
  return env


@pytest.fixture(scope="session")
def _spark_cluster_info(spark_env, tmp_path_factory):
  """{"url": master URL, "webui": its web UI} of the session's cluster."""
  given = os.environ.get("TFCASCADE_SPARK_MASTER")
  if given:
    webui = os.environ.get("TFCASCADE_SPARK_MASTER_WEBUI",
                           "http://127.0.0.1:18180")
    try:
      state = master_json(webui)
    except OSError as e:
      pytest.fail("TFCASCADE_SPARK_MASTER=%s but its web UI %s does not "
                  "answer (set TFCASCADE_SPARK_MASTER_WEBUI): %s"
                  % (given, webui, e), pytrace=False)
    if state.get("url") != given:
      pytest.fail("the master at %s is %s, not TFCASCADE_SPARK_MASTER=%s"
                  % (webui, state.get("url"), given), pytrace=False)
    yield {"url": given, "webui": webui}
    return
  master_webui = _free_port()
  env = dict(
      os.environ, **spark_env,
      TFCASCADE_SPARK_STATE=str(tmp_path_factory.mktemp("spark-cluster")),
      TFCASCADE_SPARK_MASTER_PORT=str(_free_port()),
      TFCASCADE_SPARK_MASTER_WEBUI_PORT=str(master_webui),
      TFCASCADE_SPARK_WORKER_PORTS="%d %d" % (_free_port(), _free_port()),
      TFCASCADE_SPARK_WORKER_WEBUI_PORTS="%d %d" % (_free_port(),
                                                    _free_port()),
      TFCASCADE_SPARK_PYTHON=spark_env["PYSPARK_PYTHON"],
      TFCASCADE_SPARK_START_TIMEOUT=str(START_TIMEOUT_S - 30),
  )

  def cluster_sh(cmd):
    return subprocess.run(["bash", str(CLUSTER_SH), cmd], env=env,
                          capture_output=True, text=True,
                          timeout=START_TIMEOUT_S, check=False)

  r = cluster_sh("start")
  if r.returncode != 0:
    cluster_sh("stop")
    # A broken install or cluster is a failure, never a skip.
    pytest.fail("ci/spark/cluster.sh start failed (rc %d):\n%s%s"
                % (r.returncode, r.stdout, r.stderr), pytrace=False)
  try:
    yield {"url": r.stdout.strip().splitlines()[-1],
           "webui": "http://127.0.0.1:%d" % master_webui}
  finally:
    r = cluster_sh("stop")
    if r.returncode != 0:
      sys.stderr.write("cluster.sh stop: rc %d\n%s" % (r.returncode, r.stderr))


@pytest.fixture(scope="session")
def spark_cluster(_spark_cluster_info):
  """Master URL (spark://127.0.0.1:PORT) of a standalone cluster with two
  1-core workers, for the whole session. Started by ci/spark/cluster.sh on
  free loopback ports with its state (logs, executors' work dirs) under
  pytest's tmp dir, and stopped at the end; or the running cluster named by
  TFCASCADE_SPARK_MASTER, left running."""
  return _spark_cluster_info["url"]


@pytest.fixture(scope="session")
def spark_cluster_webui(_spark_cluster_info):
  """The cluster's master web UI; master_json(it) is the master's state."""
  return _spark_cluster_info["webui"]


class _OneSparkContext:
  """The process's single SparkSession, re-created when a test asks for a
  different master."""

  def __init__(self):
    self.master = None
    self.session = None

  def get(self, master, conf):
    if self.session is not None and self.master == master and (
        self.session.sparkContext._jsc is not None):  # pylint: disable=protected-access
      return self.session
    self.close()
    from pyspark.sql import SparkSession  # pylint: disable=import-outside-toplevel
    builder = SparkSession.builder.master(master).appName("tfcascade-tests")
    for k, v in conf.items():
      builder = builder.config(k, v)
    self.session = builder.getOrCreate()
    self.master = master
    return self.session

  def close(self):
    if self.session is not None:
      self.session.stop()
    self.session = self.master = None


@pytest.fixture(scope="session")
def _spark_context_holder():
  holder = _OneSparkContext()
  yield holder
  holder.close()


def spark_conf(python):
  """Settings every test session uses (the adapter's defaults should match)."""
  return {
      "spark.python.worker.reuse": "true",
      "spark.task.maxFailures": "4",
      "spark.executor.cores": "1",
      "spark.executor.memory": "1g",
      "spark.driver.memory": "1g",
      "spark.driver.host": "127.0.0.1",
      "spark.driver.bindAddress": "127.0.0.1",
      # The driver's UI would take 4040+; nothing here reads it.
      "spark.ui.enabled": "false",
      "spark.ui.showConsoleProgress": "false",
      "spark.pyspark.python": python,
      "spark.executorEnv.PYSPARK_PYTHON": python,
      # tests/spark/tasks.py must be importable in the Python workers (the
      # project's packages are, through the editable install).
      "spark.executorEnv.PYTHONPATH": str(REPO),
      "spark.sql.shuffle.partitions": "4",
  }


def live_executors(spark):
  """Ids of the executors registered with the driver (not the driver)."""
  ids = spark.sparkContext._jsc.sc().getExecutorIds()  # pylint: disable=protected-access
  return sorted(ids.apply(i) for i in range(ids.size()))


def wait_for_executors(spark, n, timeout_s=120):
  deadline = time.monotonic() + timeout_s
  while len(live_executors(spark)) < n:
    if time.monotonic() > deadline:
      pytest.fail("only executors %s registered after %ss (want %d)"
                  % (live_executors(spark), timeout_s, n), pytrace=False)
    time.sleep(0.2)
  return live_executors(spark)


@pytest.fixture
def spark_cluster_session(spark_cluster, spark_python, _spark_context_holder):
  """SparkSession on the standalone cluster, all of whose executors (one per
  worker, 1 core each) have registered: a job's tasks spread over both."""
  spark = _spark_context_holder.get(spark_cluster, spark_conf(spark_python))
  wait_for_executors(spark, int(os.environ.get("TFCASCADE_SPARK_EXECUTORS",
                                               "2")))
  return spark


@pytest.fixture
def spark_local_session(spark_env, spark_python, _spark_context_holder):
  """Embedded SparkSession on `local[2,4]`: 2 task threads, and -- unlike a
  plain `local[2]`, where spark.task.maxFailures is ignored and a failed task
  fails the job -- up to 4 attempts per task, like on the cluster."""
  del spark_env
  return _spark_context_holder.get("local[2,4]", spark_conf(spark_python))
