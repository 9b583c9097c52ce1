"""The Beam job: plan -> Beam pipeline -> run -> publish (launcher side).

    ListInputFiles -> PlanUnits -> SpreadUnits -> ScoreUnits  (RunCounts per unit)
      + the units a dead run committed (adopted)  -> SumCounts -> PublishOutput

Each unit (an input file or a byte range) is read, scored, written and
committed by one worker (transforms.unit_runner); the last step checks the
counts and publishes (transforms.publishing.finalize), so a job the launcher
does not wait for (a Dataflow template) still ends complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Dict, Optional, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from tfcascade.pipeline import (failure_cause, local_workers, prism_runner, progress, run_start,
                                worker_pool)
from tfcascade.pipeline.config import JobConfig
from tfcascade.pipeline.run_plan import Preflight, predictions_suffix, preflight, run_info
from tfcascade.transforms.accounting import RunCounts
from tfcascade.transforms.beam.score_units import ScoreUnits
from tfcascade.transforms.metrics import NAMESPACE
from tfcascade.transforms.publishing import finalize
from tfcascade.transforms.publishing import output_layout as layout
from tfcascade.transforms.publishing.run_registry import RunStaging
from tfcascade.transforms.unit_runner import UnitSettings

_LOG = logging.getLogger("tfcascade")
DEFAULT_RUNNER = "DirectRunner"


def unit_settings(config: JobConfig, run: RunStaging, pre: Preflight) -> UnitSettings:
  """How this run's units are read, written and committed (any engine)."""
  return UnitSettings(
      run=run, run_key=pre.run_key, chunk_size=config.batch_size,
      chunk_bytes=config.batch_bytes, max_record_bytes=config.input.max_record_bytes,
      on_corrupt=config.input.on_corrupt, predictions_suffix=predictions_suffix(config),
      compression=config.output.compression, read_in_graph=config.input.read_in_graph)


def build_pipeline(p: beam.Pipeline, config: JobConfig, pre: Preflight,
                   run: RunStaging, info: dict,
                   resumed: Optional[run_start.Resumed] = None,
                   processes: Optional[int] = None) -> None:
  """Adds the whole job to `p`: units write under the run's staging, the
  last step publishes.

  Args:
    p: the pipeline.
    config: the job config.
    pre: the launcher's Preflight (pinned inputs and models).
    run: the run's staging, from `run_start.prepare`.
    info: `run_info(...)`, for the summary.
    resumed: units adopted from a dead run: not scored again, counted.
    processes: worker processes on this machine, when the launcher chose
      them (local_workers); else taken from the runner's options.
  """
  resumed = resumed or run_start.Resumed()
  units = p | "ScoreInputs" >> ScoreUnits(
      pre.files, cascade_spec_for(pre.spec, config, p.options, processes),
      config.output.format,
      config.output.passthrough, config.dead_letter.non_finite_outputs,
      unit_settings(config, run, pre), config.input.split_bytes,
      done=frozenset(resumed.commits))
  adopted = p | "ResumedUnits" >> beam.Create([resumed.counts])
  counts = ((units, adopted)
            | "AllCounts" >> beam.Flatten()
            | "SumCounts" >> beam.CombineGlobally(RunCounts.total))
  _ = counts | "PublishOutput" >> beam.Map(
      finalize.finalize, run.output_path, run.run_id, info)


def cascade_spec_for(spec, config: JobConfig, options: PipelineOptions,
                     processes: Optional[int] = None):
  """The pinned spec, with the worker processes per machine (`processes`, or
  from the runner's options) when the config leaves
  session.processes_per_host unset."""
  if config.session.processes_per_host is not None:
    return spec
  return dataclasses.replace(spec, session=dataclasses.replace(
      spec.session, processes_per_host=processes or processes_per_host(options)))


def processes_per_host(options: PipelineOptions) -> int:
  """Worker processes (sessions) per machine the runner will start; 0: one
  per core (Dataflow's default of one SDK process per vCPU)."""
  all_options = options.get_all_options(retain_unknown_options=True)
  runner = str(all_options.get("runner") or DEFAULT_RUNNER)
  if runner.endswith("DataflowRunner"):
    experiments = all_options.get("experiments") or []
    return 1 if "no_use_multiple_sdk_containers" in experiments else 0
  if all_options.get("direct_running_mode") == "multi_processing":
    workers = all_options.get("direct_num_workers")
    return 1 if workers is None else int(workers)  # 0: Beam's one per core
  return 1


def _counters(result) -> Dict[str, int]:
  """Beam counters of our namespace (sessions_opened, ...), where the runner
  reports them; informative only: accounting uses counts written as data."""
  try:
    found = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(
        NAMESPACE))["counters"]
  except Exception:  # pylint: disable=broad-except; some runners have no metrics
    return {}
  totals: Dict[str, int] = {}
  for counter in found:
    value = counter.committed if counter.committed is not None else counter.attempted
    totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + (value or 0)
  return totals


def _dry_run(options: PipelineOptions) -> bool:
  return bool(options.get_all_options(retain_unknown_options=True).get("dry_run"))


def _submits_only(options: PipelineOptions) -> bool:
  """True when pipeline.run() only stages or describes the job (templates,
  dry runs): the launcher must not wait for or judge the run."""
  all_options = options.get_all_options(retain_unknown_options=True)
  return bool(all_options.get("template_location") or all_options.get("dry_run"))


def run(config: JobConfig, beam_args: Sequence[str] = (), overwrite: bool = False,
        pre: Optional[Preflight] = None, resume: bool = True) -> Optional[dict]:
  """Runs the job; the pipeline's last step publishes the output.

  Args:
    config: the validated job config.
    beam_args: Beam pipeline flags (--runner, --flink_master, ...).
    overwrite: replace a complete output already at output.path.
    pre: a Preflight already done (else it is done here).
    resume: adopt the units a dead run of the same job committed.

  Returns:
    The run summary (run_summary.json plus the Beam counters the launcher
    saw), or None when the job was only submitted (template, dry run).

  Raises:
    PreflightError, CascadeError, run_start.OutputExistsError,
      run_start.RunInProgressError, prism_runner.PrismNotFound: before any
      worker starts.
    run_start.AlreadyComplete: a dead run of this job had only its publish
      left, which prepare finished.
    RuntimeError: the pipeline failed (records did not add up, too many
      dead letters, a broken model, ...); nothing was published.
  """
  pre = pre or preflight(config)
  # A Prism binary found here, not Beam's download on first use.
  options = PipelineOptions(prism_runner.with_location(beam_args))
  standard = options.view_as(StandardOptions)
  detached = _submits_only(options)
  ours = not standard.runner and not detached and local_workers.ours_to_choose(beam_args)
  if not standard.runner:
    standard.runner = DEFAULT_RUNNER  # never the download-on-first-use default
  resumed = run_start.Resumed()
  if _dry_run(options):  # describes the job only: no run starts, nothing staged
    run_staging = RunStaging(config.output_path, run_start.new_run_id())
  else:
    run_staging, resumed = run_start.prepare_run(config.output_path, overwrite, pre,
                                                 detached=detached, resume=resume)
  choice = None
  if ours:  # the DirectRunner on this machine: how many processes
    units = local_workers.units_of(pre.files, config.input.split_bytes)
    left = max(units - len(resumed.commits), 0)  # a resumed run scores the rest
    choice = local_workers.choose(sum(f.size for f in pre.files) * left // max(units, 1),
                                  left, local_workers.requested(beam_args))
    options.view_as(DirectOptions).direct_num_workers = choice.workers
    _LOG.info("tfcascade: scoring %s", choice.why)
    if choice.workers <= 1:
      local_workers.end_prestarted()
  with contextlib.ExitStack() as stack:
    workers = None
    runner_name = standard.runner
    if choice and choice.workers > 1:
      workers = stack.enter_context(worker_pool.WarmWorkers(choice.workers))
      runner_name = f"{standard.runner} ({choice.workers} worker processes)"
    pipeline = beam.Pipeline(runner=workers and worker_pool.runner(workers),
                             options=options)
    build_pipeline(pipeline, config, pre, run_staging,
                   run_info(config, pre, runner_name, run_staging.run_id), resumed,
                   processes=choice.workers if choice else None)
    if detached:
      pipeline.run()
      return None
    watch = progress.Progress(run_staging, sum(f.size for f in pre.files), resumed.commits)
    with run_start.Heartbeat(run_staging), progress.ProgressLog(watch):
      try:
        try:
          result = pipeline.run()
          state = result.wait_until_finish()
        except KeyboardInterrupt:
          if workers is not None and workers.lost:  # the watchdog's interrupt
            raise worker_pool.WorkerLostError(workers.lost) from None
          raise
      except BaseException as e:
        run_start.mark_ended(run_staging, f"failed: {failure_cause.of(e)[0]}")
        raise
  return _judge(config.output_path, run_staging, result, state)


def _judge(output_path: str, run_staging, result, state) -> dict:
  """The summary of a finished pipeline, or RuntimeError if it did not publish."""
  if str(state) not in ("DONE", "PipelineState.DONE"):
    run_start.mark_ended(run_staging, f"pipeline state {state}")
    raise RuntimeError(f"pipeline ended in state {state}; nothing published "
                       f"(no {layout.SUCCESS})")
  summary = run_start.read_summary(output_path)
  if summary is None or summary.get("run_id") != run_staging.run_id:
    run_start.mark_ended(run_staging, "finished without publishing")
    raise RuntimeError(f"the pipeline finished but did not publish {output_path} "
                       f"(no {layout.SUCCESS} of this run)")
  summary["metrics"] = _counters(result)
  layout.write_json(layout.join(output_path, layout.METRICS), summary["metrics"])
  return summary
