"""Code that runs INSIDE Spark's Python workers for the tests in tests/spark/.

It lives in an importable module (not a test module, not __main__) on purpose:
cloudpickle then ships the functions by reference, every Python worker imports
this module once, and the module's globals are a per-process cache that
survives from task to task while `spark.python.worker.reuse` keeps the worker
process alive. (Functions defined in __main__ are pickled by value, and so is
any "cache" they close over: one load per task.) Executors find the module
because the session fixtures put the repository on their PYTHONPATH
(spark.executorEnv.PYTHONPATH).
"""

import os
import signal
import socket
import sys
import time

# Per Python-worker process: how many tasks it ran, when it imported TF.
_TASKS_RUN = 0
_TF = None
_TF_IMPORT_S = None


def _tensorflow():
  """The per-process cache: TF is imported once per Python worker."""
  global _TF, _TF_IMPORT_S
  if _TF is None:
    t0 = time.monotonic()
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    _TF, _TF_IMPORT_S = tf, time.monotonic() - t0
  return _TF


def executor_process():
  """(executor id, pid of the executor JVM) of the calling Python worker.

  A Python worker is forked by pyspark.daemon, which the executor JVM
  (org.apache.spark.executor.CoarseGrainedExecutorBackend, started by the
  standalone Worker) spawned: walk up the parents to that JVM and read its
  `--executor-id`. In local mode the JVM is the driver: ("driver", its pid).
  """
  import psutil  # pylint: disable=import-outside-toplevel
  proc = psutil.Process()
  for parent in proc.parents():
    try:
      cmd = parent.cmdline()
    except psutil.Error:
      continue
    if any(a.endswith("CoarseGrainedExecutorBackend") for a in cmd):
      return cmd[cmd.index("--executor-id") + 1], parent.pid
    if cmd and os.path.basename(cmd[0]) == "java":
      return "driver", parent.pid
  raise RuntimeError("no JVM among the parents of Python worker %d" % proc.pid)


def _context():
  from pyspark import TaskContext  # pylint: disable=import-outside-toplevel
  ctx = TaskContext.get()
  return ctx.partitionId(), ctx.attemptNumber(), ctx.taskAttemptId()


def probe(index, iterator):
  """One row per task: where it ran and with which Python/TF."""
  global _TASKS_RUN
  _TASKS_RUN += 1
  n = sum(1 for _ in iterator)
  tf = _tensorflow()
  # A cheap but real TF computation in the executor's Python.
  total = float(tf.reduce_sum(tf.constant([1.0, 2.0, 3.0])).numpy())
  partition, attempt, task_id = _context()
  executor_id, executor_pid = executor_process()
  yield {
      "index": index,
      "partition": partition,
      "attempt": attempt,
      "task_id": task_id,
      "elements": n,
      "executor_id": executor_id,
      "executor_pid": executor_pid,
      "host": socket.gethostname(),
      "pid": os.getpid(),
      "python": sys.executable,
      "prefix": sys.prefix,
      "tf_version": tf.__version__,
      "tf_sum": total,
      "tasks_in_this_process": _TASKS_RUN,
      "tf_import_s": _TF_IMPORT_S,
  }


def _tag(values, index):
  partition, attempt, _ = _context()
  executor_id, _ = executor_process()
  return [(v, partition, attempt, executor_id) for v in values]


def _wait_for(path, timeout_s):
  deadline = time.monotonic() + timeout_s
  while not os.path.exists(path):
    if time.monotonic() > deadline:
      raise TimeoutError("%s did not appear within %ss" % (path, timeout_s))
    time.sleep(0.05)


def fail_first_attempt(marker_dir, how, index, iterator):
  """Toy job for the retry tests: tags each element with (partition, attempt,
  executor id). The FIRST attempt of partition 0 waits until another partition
  has finished (so the failure is mid-job, after results of other tasks are
  already in), records who it is in marker_dir/killed, and then:

    how == "executor": SIGKILLs its own executor JVM (the executor is lost;
                       its Python daemon and workers die with it);
    how == "python":   exits its Python worker (os._exit), the executor lives.

  Every other task sleeps a little so that the job is still running."""
  values = list(iterator)
  partition, attempt, task_id = _context()
  if partition != 0:
    time.sleep(0.3)
    out = _tag(values, index)
    with open(os.path.join(marker_dir, "done-%d-%d" % (partition, attempt)), "w"):
      pass
    return out
  if attempt == 0:
    # Partition 1 runs on the other executor at the same time; wait for it.
    _wait_for(os.path.join(marker_dir, "done-1-0"), 120)
    executor_id, executor_pid = executor_process()
    with open(os.path.join(marker_dir, "killed"), "w") as f:
      f.write("%s %d %d %d %s\n" % (executor_id, executor_pid, os.getpid(),
                                    task_id, how))
    if how == "executor":
      os.kill(executor_pid, signal.SIGKILL)
      time.sleep(30)  # the daemon takes this worker down with the JVM
    os._exit(17)  # pylint: disable=protected-access
  return _tag(values, index)
