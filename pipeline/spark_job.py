"""The job on Apache Spark: `tfcascade run --engine spark [--master URL]`.

The driver does what the Beam launcher does — preflight, `run_start.prepare`,
the run info — then plans the input's ReadRanges (whole files, or byte ranges
of big uncompressed files), runs one Spark task per range
(`transforms.spark.partition_task.score_partition`), sums the RunCounts the
committed task attempts returned and publishes with `finalize.finalize`: the
same checks, files, summary and `_SUCCESS` as the Beam job.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import signal
import sys
import tempfile
from typing import Dict, Iterator, Optional, Sequence

from tfcascade.pipeline import failure_cause, progress, run_start
from tfcascade.pipeline.beam_job import unit_settings
from tfcascade.pipeline.run_plan import Preflight, preflight, run_info
from tfcascade.pipeline.config import JobConfig
from tfcascade.transforms.accounting import RunCounts
from tfcascade.transforms.publishing import finalize
from tfcascade.transforms.publishing import output_layout as layout
from tfcascade.transforms.publishing.run_registry import RunStaging
from tfcascade.transforms.publishing.unit_commits import unit_key
from tfcascade.transforms.reading.record_ranges import plan_ranges
from tfcascade.transforms.spark import master_url
from tfcascade.transforms.spark.partition_task import TaskConfig, spark_task

_LOG = logging.getLogger("tfcascade")
DEFAULT_MASTER = "local[*]"


class SparkSetupError(ValueError):
  """The config or the Spark options cannot run on the Spark engine."""


class SparkUnreachableError(RuntimeError):
  """The standalone master does not answer: nothing was started, and a retry
  may succeed once the cluster is up (exit 1, not 2)."""


def check_config(config: JobConfig) -> None:
  """What the Spark engine refuses before reading data."""
  if config.output.num_shards:
    raise SparkSetupError(
        "output.num_shards is not supported with --engine spark (each task "
        "writes one file per kind); set it to 0")


def check_master(master: str) -> None:
  """Refuses a master URL Spark cannot parse (SparkSetupError)."""
  problem = master_url.problem(master)
  if problem:
    raise SparkSetupError(problem)


def _check_reachable(master: str) -> None:
  """A standalone master that does not take a TCP connection fails the run
  in seconds (SparkUnreachableError), before Spark's minute of retries."""
  why = master_url.unreachable(master)
  if why:
    raise SparkUnreachableError(
        f"the Spark master {master} does not answer ({why}); nothing was started, "
        f"retry once the cluster is up")


def _verbose() -> bool:
  """The CLI's --verbose: tfcascade logs at DEBUG."""
  return _LOG.isEnabledFor(logging.DEBUG)


@contextlib.contextmanager
def _spark_log() -> Iterator[Optional[str]]:
  """Where Spark's JVM writes its stderr (log4j, Java stack traces, and in
  local mode the Python workers' output: TF's start-up lines): a temp file,
  kept only when the block fails and then named in the error. None (the
  terminal) with --verbose, or when spark-submit started the JVM."""
  if _verbose() or "PYSPARK_GATEWAY_PORT" in os.environ:
    yield None
    return
  fd, path = tempfile.mkstemp(prefix="tfcascade-spark-", suffix=".log")
  os.close(fd)
  _LOG.info("spark: Spark's own log (--verbose shows it here): %s", path)
  keep = False
  try:
    yield path
  except Exception:
    keep = True  # the error names it
    raise
  finally:
    if not keep:
      os.remove(path)


def _quiet_defaults(conf: Dict[str, str]) -> Dict[str, str]:
  """Spark settings that keep start-up chatter off the terminal: executors'
  Python workers get the CLI's TF_CPP_MIN_LOG_LEVEL (set unless --verbose;
  local-mode workers inherit it), and no console progress bar unless
  --verbose (tfcascade logs progress). The user's --spark-conf wins."""
  quiet = {}
  if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
    quiet["spark.executorEnv.TF_CPP_MIN_LOG_LEVEL"] = os.environ["TF_CPP_MIN_LOG_LEVEL"]
  if not _verbose():
    quiet["spark.ui.showConsoleProgress"] = "false"
  return dict(quiet, **conf)


def _session(master: str, conf: Dict[str, str], log: Optional[str]):
  """A SparkContext on `master`; the JVM it starts writes its stderr to the
  file `log` (None: to this process's stderr)."""
  from pyspark import SparkConf, SparkContext  # pylint: disable=g-import-not-at-top
  from pyspark.java_gateway import launch_gateway  # pylint: disable=g-import-not-at-top
  # Executors run this interpreter unless told otherwise: the same venv, TF.
  os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
  spark_conf = (SparkConf().setMaster(master).setAppName("tfcascade")
                # One Python worker (one CascadeSession) per task slot, kept
                # across tasks.
                .set("spark.python.worker.reuse", "true")
                .set("spark.pyspark.python", os.environ["PYSPARK_PYTHON"]))
  for key, value in _quiet_defaults(conf).items():
    spark_conf.set(key, value)
  if SparkContext._active_spark_context is not None:  # pylint: disable=protected-access
    # One context per process (a caller's own, e.g. in tests): reuse it.
    return SparkContext.getOrCreate(spark_conf)
  gateway = None
  if log and SparkContext._gateway is None:  # pylint: disable=protected-access; else reused
    with open(log, "ab") as stderr:
      gateway = launch_gateway(spark_conf, popen_kwargs={"stderr": stderr})
  if not _verbose():
    _quiet_py4j()
  return SparkContext(conf=spark_conf, gateway=gateway)


def _quiet_py4j() -> None:
  """py4j's errors reach us as exceptions; its log only repeats them (and
  logs a Ctrl-C as an ERROR), partly through the root logger itself."""
  logging.getLogger("py4j").setLevel(logging.CRITICAL)
  logging.getLogger().addFilter(_not_from_py4j)  # records logged to root only


def _not_from_py4j(record: logging.LogRecord) -> bool:
  return f"{os.sep}py4j{os.sep}" not in record.pathname


@contextlib.contextmanager
def _own_sigint() -> Iterator[None]:
  """Puts back this process's SIGINT handler, which SparkContext replaces
  with one that cancels its jobs (and raises KeyboardInterrupt)."""
  before = signal.getsignal(signal.SIGINT)
  try:
    yield
  finally:
    if before is not None:
      signal.signal(signal.SIGINT, before)


def _task_config(config: JobConfig, run: RunStaging, pre: Preflight) -> TaskConfig:
  return TaskConfig(
      spec=pre.spec, output_format=config.output.format,
      passthrough=tuple(config.output.passthrough),
      reject_non_finite=config.dead_letter.non_finite_outputs,
      settings=unit_settings(config, run, pre))


def run(config: JobConfig, overwrite: bool = False, master: str = DEFAULT_MASTER,
        spark_conf: Optional[Dict[str, str]] = None,
        pre: Optional[Preflight] = None, resume: bool = True) -> dict:
  """Runs the job on Spark; returns the run summary (with `metrics`).

  Raises:
    SparkSetupError, PreflightError, CascadeError, run_start.OutputExistsError,
      run_start.RunInProgressError: before any task starts.
    SparkUnreachableError: the standalone master does not answer; nothing
      was started.
    KeyboardInterrupt: Ctrl-C; the run's staging is kept for a resume.
    RuntimeError: the Spark job failed, or the run did not pass its checks;
      nothing was published.
  """
  check_config(config)
  check_master(master)
  pre = pre or preflight(config)
  _check_reachable(master)
  run_staging, resumed = run_start.prepare_run(config.output_path, overwrite, pre,
                                               resume=resume)
  info = run_info(config, pre, f"Spark ({master})", run_staging.run_id)
  ranges = [r for f in pre.files for r in plan_ranges(
      f, config.input.split_bytes, config.input.max_record_bytes)
            if unit_key(r) not in resumed.commits]
  _LOG.info("spark: %d read range(s) from %d file(s) on %s", len(ranges),
            len(pre.files), master)
  watch = progress.Progress(run_staging, sum(f.size for f in pre.files), resumed.commits)
  try:
    parts = _run_tasks(master, dict(spark_conf or {}), ranges,
                       _task_config(config, run_staging, pre), watch)
  except BaseException as e:  # Ctrl-C too: the staging stays, for a resume
    run_start.mark_ended(run_staging, f"failed: {failure_cause.of(e)[0]}")
    raise
  counts = RunCounts.total(parts + [resumed.counts])
  finalize.finalize(counts, config.output_path, run_staging.run_id, info)
  summary = run_start.read_summary(config.output_path)
  summary["metrics"] = {"sessions_opened": counts.sessions_opened,
                        "tasks": max(1, len(ranges))}
  layout.write_json(layout.join(config.output_path, layout.METRICS), summary["metrics"])
  return summary


def _run_tasks(master: str, conf: Dict[str, str], ranges: list, task: TaskConfig,
               watch: progress.Progress) -> list:
  """One Spark task per range; the RunCounts the tasks returned.

  Raises:
    RuntimeError: Spark did not start, or the job failed (one line, naming
      Spark's log).
    KeyboardInterrupt: Ctrl-C (SparkContext's handler cancelled the job).
  """
  if not ranges:
    return []
  with _spark_log() as log, _own_sigint():
    try:
      context = _session(master, conf, log)
    except Exception as e:
      raise RuntimeError(_failure(f"Spark did not start on {master}", e, log)) from e
    try:
      with run_start.Heartbeat(task.settings.run), progress.ProgressLog(watch):
        return (context.parallelize(ranges, len(ranges))
                .mapPartitions(functools.partial(spark_task, task)).collect())
    except Exception as e:
      raise RuntimeError(_failure("the Spark job failed; nothing published", e, log)) from e
    finally:
      context.stop()


def _failure(what: str, error: Exception, log: Optional[str]) -> str:
  return f"{what}: {_reason(error, log)}" + (f" (Spark's log: {log})" if log else "")


_TRACEBACK = "Traceback (most recent call last):"
# An exception's own line: `ValueError: ...`, `org.apache.spark.SparkException: ...`.
_EXCEPTION_LINE = re.compile(r"^(?:[\w$]+\.)*[\w$]*(?:Error|Exception|Exit|Interrupt)\b.*")


def _reason(error: Exception, log: Optional[str]) -> str:
  """Why Spark failed, in one line and never empty: a task's own Python
  exception (Spark wraps its traceback in a Java one), else the first Java
  exception's line, else the error's type and first line (and for a JVM that
  exited at start, what it said on its stderr)."""
  text = str(error)
  if "PythonException" in text and _TRACEBACK in text:
    python = text.split(_TRACEBACK, 1)[1].split("\n\tat ", 1)[0]
    found = [l for l in python.splitlines() if _EXCEPTION_LINE.match(l)]
    if found:
      return found[-1].strip()
  found = [l.lstrip(": ").strip() for l in text.splitlines()
           if _EXCEPTION_LINE.match(l.lstrip(": "))]
  if found:
    return found[0]
  first = next((l.strip() for l in text.splitlines() if l.strip()), repr(error))
  said = _jvm_error(log) if "JAVA_GATEWAY_EXITED" in text else None
  return f"{type(error).__name__}: {first}" + (f"; the JVM said: {said}" if said else "")


# Lines of the JVM's stderr that do not say why it exited: notices, log
# records below ERROR, stack frames.
_JVM_NOISE = re.compile(r"^(WARNING: |Using Spark's |Setting default log level|To adjust logging"
                        r"|\d\d/\d\d/\d\d \d\d:\d\d:\d\d (INFO|WARN) |\s|$)")


def _jvm_error(log: Optional[str]) -> Optional[str]:
  """The first line of the JVM's stderr that says why it exited, or None."""
  if not log:
    return None
  with open(log, encoding="utf-8", errors="replace") as f:
    return next((l.strip() for l in f if not _JVM_NOISE.match(l)), None)


def parse_conf(items: Sequence[str]) -> Dict[str, str]:
  """`--spark-conf KEY=VALUE` items -> a dict (SparkSetupError when malformed)."""
  conf = {}
  for item in items:
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise SparkSetupError(f"--spark-conf {item!r}: expected KEY=VALUE")
    conf[key] = value
  return conf
