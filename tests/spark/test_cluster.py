"""Smoke tests of the Spark infrastructure (issue 11) on a real standalone
cluster (ci/spark/cluster.sh: a master + two 1-core workers on loopback): both
executors run Python tasks with the venv's TensorFlow, and a task whose
executor JVM -- or only whose Python worker -- dies mid-job is retried so that
the collected result holds every element exactly once."""

import collections
import functools
import os
import sys

import psutil
import pytest

from tests.spark import tasks
from tests.spark.conftest import live_executors, master_json

pytestmark = pytest.mark.spark


def test_cluster_has_two_alive_workers(spark_cluster, spark_cluster_webui):
  state = master_json(spark_cluster_webui)
  assert state["url"] == spark_cluster
  assert state["status"] == "ALIVE"
  alive = [w for w in state["workers"] if w["state"] == "ALIVE"]
  assert len(alive) >= 2, state["workers"]
  assert all(w["host"] == "127.0.0.1" for w in alive), alive


def test_both_executors_run_python_tasks_with_the_venvs_tf(
    spark_cluster_session, spark_python):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  sc = spark_cluster_session.sparkContext
  rows = sc.parallelize(range(80), 8).mapPartitionsWithIndex(
      tasks.probe).collect()

  assert sorted(r["partition"] for r in rows) == list(range(8))
  assert sum(r["elements"] for r in rows) == 80
  assert all(r["attempt"] == 0 for r in rows)
  # Both executors (one per worker) ran Python tasks...
  by_executor = collections.defaultdict(list)
  for r in rows:
    by_executor[r["executor_id"]].append(r)
  assert len(by_executor) == 2, by_executor.keys()
  assert "driver" not in by_executor
  # ...in separate executor JVMs, none of them this driver's...
  assert len({r["executor_pid"] for r in rows}) == 2
  # ...with the venv's Python and its TF (which computed something).
  assert {r["prefix"] for r in rows} == {sys.prefix}
  assert {os.path.realpath(r["python"]) for r in rows} == {
      os.path.realpath(spark_python)}
  assert {r["tf_version"] for r in rows} == {tf.__version__}
  assert {r["tf_sum"] for r in rows} == {6.0}
  # spark.python.worker.reuse: an executor with 1 core keeps ONE Python
  # worker for all its tasks, which imported TF (its per-process cache) once.
  for executor, runs in by_executor.items():
    assert len({r["pid"] for r in runs}) == 1, (executor, runs)
    counts = sorted(r["tasks_in_this_process"] for r in runs)
    assert counts == list(range(counts[0], counts[0] + len(runs))), runs
    assert len({r["tf_import_s"] for r in runs}) == 1, runs


def _run_failing_job(spark, tmp_path, how, n=8000, partitions=8):
  marker_dir = tmp_path / "markers"
  marker_dir.mkdir()
  job = functools.partial(tasks.fail_first_attempt, str(marker_dir), how)
  out = spark.sparkContext.parallelize(range(n), partitions)\
      .mapPartitionsWithIndex(job).collect()
  victim_executor, victim_jvm, victim_python, victim_task, victim_how = \
      (marker_dir / "killed").read_text().split()
  assert victim_how == how
  # Every element exactly once...
  assert sorted(v for v, _, _, _ in out) == list(range(n))
  # ...each partition's elements from ONE attempt (no mix of a dead attempt
  # and its retry), partition 0 from a retry, the others from attempt 0.
  attempts = collections.defaultdict(set)
  executors = collections.defaultdict(set)
  for _, partition, attempt, executor in out:
    attempts[partition].add(attempt)
    executors[partition].add(executor)
  assert all(len(a) == 1 for a in attempts.values()), attempts
  assert attempts[0] != {0}, "partition 0's failed first attempt was kept"
  assert all(attempts[p] == {0} for p in range(1, partitions)), attempts
  return {
      "executor": victim_executor, "jvm": int(victim_jvm),
      "python": int(victim_python), "task": int(victim_task),
      "retried_on": executors[0].pop(), "retry_attempt": attempts[0].pop(),
  }


def test_killed_executor_jvm_mid_job_is_retried_exactly_once(
    spark_cluster_session, tmp_path):
  before = live_executors(spark_cluster_session)
  victim = _run_failing_job(spark_cluster_session, tmp_path, "executor")
  assert victim["executor"] in before
  assert not psutil.pid_exists(victim["jvm"])
  # The retry ran on another executor (the survivor or the replacement the
  # worker started), and the lost executor is gone from the driver.
  assert victim["retried_on"] != victim["executor"]
  assert victim["executor"] not in live_executors(spark_cluster_session)


def test_killed_python_worker_mid_job_is_retried_exactly_once(
    spark_cluster_session, tmp_path):
  before = live_executors(spark_cluster_session)
  victim = _run_failing_job(spark_cluster_session, tmp_path, "python")
  assert not psutil.pid_exists(victim["python"])
  # Only the Python worker died: its executor JVM lives on, and no executor
  # was lost or added.
  assert psutil.pid_exists(victim["jvm"])
  assert victim["executor"] in before
  assert live_executors(spark_cluster_session) == before
