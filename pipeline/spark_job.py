"""The job on Apache Spark: `tfcascade run --engine spark [--master URL]`.

The driver does what the Beam launcher does — preflight, `run_start.prepare`,
the run info — then plans the input's ReadRanges (whole files, or byte ranges
of big uncompressed files), runs one Spark task per range
(`transforms.spark.partition_task.score_partition`), sums the RunCounts the
committed task attempts returned and publishes with `finalize.finalize`: the
same checks, files, summary and `_SUCCESS` as the Beam job.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Dict, Optional, Sequence

from tfcascade.pipeline import run_start
from tfcascade.pipeline import progress
from tfcascade.pipeline.beam_job import unit_settings
from tfcascade.pipeline.run_plan import Preflight, preflight, run_info
from tfcascade.pipeline.config import JobConfig
from tfcascade.transforms.accounting import RunCounts
from tfcascade.transforms.publishing import finalize
from tfcascade.transforms.publishing import output_layout as layout
from tfcascade.transforms.publishing.run_registry import RunStaging
from tfcascade.transforms.publishing.unit_commits import unit_key
from tfcascade.transforms.reading.record_ranges import plan_ranges
from tfcascade.transforms.spark.partition_task import TaskConfig, spark_task

_LOG = logging.getLogger("tfcascade")
DEFAULT_MASTER = "local[*]"


class SparkSetupError(ValueError):
  """The config or the Spark options cannot run on the Spark engine."""


def check_config(config: JobConfig) -> None:
  """What the Spark engine refuses before reading data."""
  if config.output.num_shards:
    raise SparkSetupError(
        "output.num_shards is not supported with --engine spark (each task "
        "writes one file per kind); set it to 0")


def _session(master: str, conf: Dict[str, str]):
  from pyspark.sql import SparkSession  # pylint: disable=g-import-not-at-top
  # Executors run this interpreter unless told otherwise: the same venv, TF.
  os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
  builder = (SparkSession.builder.master(master).appName("tfcascade")
             # One Python worker (one CascadeSession) per task slot, kept
             # across tasks.
             .config("spark.python.worker.reuse", "true")
             .config("spark.pyspark.python", os.environ["PYSPARK_PYTHON"]))
  for key, value in conf.items():
    builder = builder.config(key, value)
  return builder.getOrCreate()


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
    RuntimeError: the Spark job failed, or the run did not pass its checks;
      nothing was published.
  """
  check_config(config)
  pre = pre or preflight(config)
  run_staging, resumed = run_start.prepare_run(config.output_path, overwrite, pre,
                                               resume=resume)
  info = run_info(config, pre, f"Spark ({master})", run_staging.run_id)
  ranges = [r for f in pre.files for r in plan_ranges(
      f, config.input.split_bytes, config.input.max_record_bytes)
            if unit_key(r) not in resumed.commits]
  _LOG.info("spark: %d read range(s) from %d file(s) on %s", len(ranges),
            len(pre.files), master)
  spark = _session(master, dict(spark_conf or {}))
  try:
    watch = progress.Progress(run_staging, sum(f.size for f in pre.files), resumed.commits)
    with run_start.Heartbeat(run_staging), progress.ProgressLog(watch):
      parts = (spark.sparkContext.parallelize(ranges, max(1, len(ranges)))
               .mapPartitions(functools.partial(
                   spark_task, _task_config(config, run_staging, pre)))
               .collect()) if ranges else []
  except BaseException as e:
    run_start.mark_ended(run_staging, f"failed: {type(e).__name__}")
    raise RuntimeError(f"the Spark job failed; nothing published: {e}") from e
  finally:
    spark.stop()
  counts = RunCounts.total(parts + [resumed.counts])
  finalize.finalize(counts, config.output_path, run_staging.run_id, info)
  summary = run_start.read_summary(config.output_path)
  summary["metrics"] = {"sessions_opened": counts.sessions_opened,
                        "tasks": max(1, len(ranges))}
  layout.write_json(layout.join(config.output_path, layout.METRICS), summary["metrics"])
  return summary


def parse_conf(items: Sequence[str]) -> Dict[str, str]:
  """`--spark-conf KEY=VALUE` items -> a dict (SparkSetupError when malformed)."""
  conf = {}
  for item in items:
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise SparkSetupError(f"--spark-conf {item!r}: expected KEY=VALUE")
    conf[key] = value
  return conf
