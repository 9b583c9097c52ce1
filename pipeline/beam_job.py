"""The Beam job: config -> checks -> Beam pipeline -> run -> publish.

Launcher side. Everything that can fail without data (config, input files,
checkpoints, variables, wiring, existing output) fails here, before any worker
starts.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from typing import Dict, List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from tfcascade.pipeline import run_start
from tfcascade.pipeline.config import JobConfig
from tfcascade.transforms.accounting import RunCounts
from tfcascade.transforms.beam.read_chunks import QUARANTINE_TAG, READ_COUNTS_TAG, ReadRecordChunks
from tfcascade.transforms.beam.score_chunks import COUNTS_TAG, DEAD_LETTER_TAG, RunCascade
from tfcascade.transforms.beam.write_shards import WriteShards
from tfcascade.transforms.engine import build_cascade_graph
from tfcascade.transforms.formats import tfrecord_framing as framing
from tfcascade.transforms.formats.dead_letters import entry_line
from tfcascade.transforms.metrics import NAMESPACE
from tfcascade.transforms.publishing import finalize
from tfcascade.transforms.publishing import output_layout as layout
from tfcascade.transforms.publishing.run_registry import RunStaging
from tfcascade.transforms.reading.record_ranges import open_raw

_LOG = logging.getLogger("tfcascade")
DEFAULT_RUNNER = "DirectRunner"


class PreflightError(RuntimeError):
  """A problem found before any data is processed; names the culprit."""


@dataclasses.dataclass
class Preflight:
  """What the launcher found: input files and the validated cascade plan."""
  files: List[Tuple[str, str, int]]  # (path, compression, size)
  plan: list
  warnings: List[str]


def match_inputs(config: JobConfig) -> List[Tuple[str, str, int]]:
  """Expands the input patterns; every pattern must match a file.

  Raises:
    PreflightError: naming each pattern that matched nothing.
  """
  files, empty = {}, []
  for pattern in config.input_patterns:
    try:
      found = FileSystems.match([pattern])[0].metadata_list
    except Exception as e:  # BeamIOError wraps the filesystem's own error
      raise PreflightError(f"input.pattern {pattern!r}: cannot list: {e}") from e
    found = [m for m in found if not m.path.endswith(".idx")]
    if not found:
      empty.append(pattern)
    for m in found:
      files[m.path] = m.size_in_bytes
  if empty:
    raise PreflightError("input.pattern matches no file: " + ", ".join(empty))
  result = []
  for path, size in sorted(files.items()):
    compression = framing.detect_compression(
        path, config.input.compression, open_fn=open_raw) if size else "none"
    result.append((path, compression, size))
  return result


def preflight(config: JobConfig) -> Preflight:
  """Checks inputs, checkpoints, variables and wiring without reading data."""
  files = match_inputs(config)
  cascade = build_cascade_graph(config.cascade_spec())
  known = set(config.input.features)
  warnings = [unused_warning(p) for p in cascade.plan if p.unused]
  undeclared = [n for n in config.output.passthrough if n not in known]
  if undeclared:
    warnings.append(f"output.passthrough {undeclared} are not declared under "
                    f"input.features; they are copied when present")
  return Preflight(files, cascade.plan, warnings)


def unused_warning(plan, limit: int = 10) -> str:
  """The warning for checkpoint variables the fetched outputs do not read
  (restored or not); byte-identical copies of read ones are not listed."""
  names = ", ".join(plan.unused[:limit]) + (
      f", ... ({len(plan.unused) - limit} more)" if len(plan.unused) > limit else "")
  restored = sum(1 for n in plan.unused if n in plan.restored)
  how = (f"{restored} of them restored by {plan.restored_by} anyway"
         if restored else "not restored")
  return (f"stage '{plan.name}': checkpoint {plan.checkpoint} holds "
          f"{len(plan.unused)} variable{'' if len(plan.unused) == 1 else 's'} "
          f"that outputs {sorted(plan.outputs)} do not read ({how}): {names}")


def build_pipeline(p: beam.Pipeline, config: JobConfig,
                   files: Sequence[Tuple[str, str, int]], run: RunStaging,
                   info: dict) -> None:
  """Adds the whole job to `p`: it writes under the run's staging, then publishes.

  read -> score -> write predictions / dead letters -> sum counts -> publish.

  Args:
    p: the pipeline.
    config: the job config.
    files: (path, compression, size) of every input file.
    run: the run's staging, from `run_start.prepare`.
    info: `run_info(...)`, for the summary.
  """
  read = p | "ReadInputs" >> ReadRecordChunks(
      files, chunk_size=config.batch_size,
      max_record_bytes=config.input.max_record_bytes,
      on_corrupt=config.input.on_corrupt, split_bytes=config.input.split_bytes)
  scored = read.chunks | "RunCascade" >> RunCascade(
      cascade_spec_for(config, p.options), config.output.format,
      config.output.passthrough, config.dead_letter.non_finite_outputs, run)
  predictions = scored.blobs | "WritePredictions" >> WriteShards(
      run.files_dir, layout.PREDICTIONS, predictions_suffix(config),
      config.output.num_shards, config.output.compression)
  dead_letter_files = (scored[DEAD_LETTER_TAG]
                       | "DeadLetterLines" >> beam.Map(entry_line)
                       | "WriteDeadLetters" >> WriteShards(
                           run.files_dir, layout.DEAD_LETTER, ".jsonl"))
  quarantine_files = (read[QUARANTINE_TAG]
                      | "QuarantineLines" >> beam.Map(entry_line)
                      | "WriteQuarantine" >> WriteShards(
                          run.files_dir, layout.QUARANTINE, ".jsonl"))
  counts = (
      (read[READ_COUNTS_TAG], scored[COUNTS_TAG], predictions, dead_letter_files,
       quarantine_files)
      | "AllCounts" >> beam.Flatten()
      | "SumCounts" >> beam.CombineGlobally(RunCounts.total))
  # The last step publishes, so a run the launcher does not wait for (a
  # Dataflow Flex Template, --template_location) still ends complete.
  _ = counts | "PublishOutput" >> beam.Map(
      finalize.finalize, run.output_path, run.run_id, info)


def cascade_spec_for(config: JobConfig, options: PipelineOptions):
  """The engine's spec, with the worker processes per machine taken from the
  runner's options when the config leaves session.processes_per_host unset."""
  spec = config.cascade_spec()
  if config.session.processes_per_host is not None:
    return spec
  return dataclasses.replace(spec, session=dataclasses.replace(
      spec.session, processes_per_host=processes_per_host(options)))


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


def predictions_suffix(config: JobConfig) -> str:
  suffix = ".tfrecord" if config.output.format == "tfrecord" else ".jsonl"
  return suffix + (".gz" if config.output.compression == "gzip" else "")


def run_info(config: JobConfig, plan, runner: str, run_id: str) -> dict:
  """What the summary says about the run besides counts (picklable)."""
  return {
      "run_id": run_id,
      "runner": runner,
      "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "start_epoch": time.time(),
      "output_format": config.output.format,
      "predictions_suffix": predictions_suffix(config),
      "max_dead_letter_fraction": config.dead_letter.max_fraction,
      "run_date": config.run_date.isoformat() if config.run_date else None,
      "stages": [{"name": p.name, "gate": p.gate or None, "source": p.source,
                  "checkpoint": p.checkpoint, "fingerprint": p.fingerprint,
                  "global_step": p.global_step,
                  "variables_restored": p.variables_restored,
                  "restored_by": p.restored_by,
                  "variables_read": len(p.read),
                  "restore": p.restore_text()} for p in plan],
  }


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
        pre: Optional[Preflight] = None) -> Optional[dict]:
  """Runs the job; the pipeline's last step publishes the output.

  Args:
    config: the validated job config.
    beam_args: Beam pipeline flags (--runner, --flink_master, ...).
    overwrite: replace a complete output already at output.path.
    pre: a Preflight already done (else it is done here).

  Returns:
    The run summary (run_summary.json plus the Beam counters the launcher
    saw), or None when the job was only submitted (template, dry run).

  Raises:
    PreflightError, CascadeError, run_start.OutputExistsError,
      run_start.RunInProgressError:
      before any worker starts.
    RuntimeError: the pipeline failed (records did not add up, too many
      dead letters, a broken model, ...); nothing was published.
  """
  pre = pre or preflight(config)
  options = PipelineOptions(list(beam_args))
  standard = options.view_as(StandardOptions)
  if not standard.runner:
    standard.runner = DEFAULT_RUNNER  # never the download-on-first-use default
  detached = _submits_only(options)
  if _dry_run(options):  # describes the job only: no run starts, nothing staged
    run_staging = RunStaging(config.output_path, run_start.new_run_id())
  else:
    run_staging = run_start.prepare(config.output_path, overwrite, detached=detached)
  pipeline = beam.Pipeline(options=options)
  build_pipeline(pipeline, config, pre.files, run_staging,
                 run_info(config, pre.plan, standard.runner, run_staging.run_id))
  if detached:
    pipeline.run()
    return None
  with run_start.Heartbeat(run_staging):
    try:
      result = pipeline.run()
      state = result.wait_until_finish()
    except BaseException as e:
      run_start.mark_ended(run_staging, f"failed: {type(e).__name__}")
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
