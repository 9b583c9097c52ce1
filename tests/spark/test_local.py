"""The embedded engine: Spark in local mode (`local[2,4]`, in the driver's JVM;
Python workers forked by its daemon) runs the venv's TF and retries a task
whose Python worker died."""

import functools
import sys

import pytest

from tests.spark import tasks

pytestmark = pytest.mark.spark


def test_local_mode_runs_python_tasks_with_the_venvs_tf(spark_local_session):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  rows = spark_local_session.sparkContext.parallelize(range(40), 4)\
      .mapPartitionsWithIndex(tasks.probe).collect()
  assert sorted(r["partition"] for r in rows) == [0, 1, 2, 3]
  assert {r["executor_id"] for r in rows} == {"driver"}
  assert {r["prefix"] for r in rows} == {sys.prefix}
  assert {r["tf_version"] for r in rows} == {tf.__version__}


def test_local_mode_retries_a_dead_python_worker(spark_local_session,
                                                 tmp_path):
  job = functools.partial(tasks.fail_first_attempt, str(tmp_path), "python")
  out = spark_local_session.sparkContext.parallelize(range(1000), 4)\
      .mapPartitionsWithIndex(job).collect()
  assert sorted(v for v, _, _, _ in out) == list(range(1000))
  assert {a for _, p, a, _ in out if p == 0} == {1}
  assert (tmp_path / "killed").exists()
