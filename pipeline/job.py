"""The job: config -> checks -> Beam pipeline -> run -> publish.

Launcher side. Everything that can fail without data (config, input files,
checkpoints, variables, wiring, existing output) fails here, before any worker
starts.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import time
from typing import Dict, List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline.config import JobConfig
from transforms import publish
from transforms import tfrecord_framing as framing
from transforms.engine import build_cascade_graph
from transforms.read import QUARANTINE_TAG, ReadRecordChunks, open_raw
from transforms.run_cascade import COUNTS_TAG, DEAD_LETTER_TAG, RunCascade
from transforms.write import CountWrittenRecords, WriteBlobs

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
  warnings = [f"stage '{p.name}': checkpoint {p.checkpoint} holds variables the "
              f"model does not use: {', '.join(p.unused)}"
              for p in cascade.plan if p.unused]
  undeclared = [n for n in config.output.passthrough if n not in known]
  if undeclared:
    warnings.append(f"output.passthrough {undeclared} are not declared under "
                    f"input.features; they are copied when present")
  return Preflight(files, cascade.plan, warnings)


def build_pipeline(p: beam.Pipeline, config: JobConfig,
                   files: Sequence[Tuple[str, str, int]], staging: str,
                   info: dict) -> None:
  """Adds the whole job to `p`: it writes under `staging`, then publishes.

  read -> score -> write predictions / dead letters -> count -> publish.

  Args:
    p: the pipeline.
    config: the job config.
    files: (path, compression, size) of every input file.
    staging: the staging directory `publish.prepare` returned.
    info: `run_info(...)`, for the summary.
  """
  read = p | "ReadInputs" >> ReadRecordChunks(
      files, chunk_size=config.batch_size,
      max_record_bytes=config.input.max_record_bytes,
      on_corrupt=config.input.on_corrupt, split_bytes=config.input.split_bytes)
  scored = read.chunks | "RunCascade" >> RunCascade(
      config.cascade_spec(), config.output.format, config.output.passthrough,
      config.dead_letter.non_finite_outputs)
  prediction_files = _write_predictions(scored.blobs, config, staging)
  dead_letter_files = _write_dead_letters(
      (scored[DEAD_LETTER_TAG], read[QUARANTINE_TAG]), staging)
  quarantined = (read[QUARANTINE_TAG]
                 | "QuarantinedFiles" >> beam.Map(lambda d: (f"quarantined:{d['source']}", 1)))
  counts = (
      (scored[COUNTS_TAG],
       prediction_files | "CountWritten" >> CountWrittenRecords(
           config.output.format, "records_written"),
       dead_letter_files | "CountDeadLettered" >> CountWrittenRecords(
           "dead_letter", "records_dead_lettered_written"),
       quarantined)
      | "AllCounts" >> beam.Flatten()
      | "SumCounts" >> beam.CombinePerKey(sum)
      | "CountsToDict" >> beam.combiners.ToDict())
  # The last step publishes, so a run the launcher does not wait for (a
  # Dataflow Flex Template, --template_location) still ends complete.
  _ = counts | "PublishOutput" >> beam.Map(
      publish.finalize, config.output_path, staging, info)


def _write_predictions(blobs, config: JobConfig, staging: str):
  """Encoded prediction blobs -> staged shards; returns their file names."""
  suffix = ".tfrecord" if config.output.format == "tfrecord" else ".jsonl"
  if config.output.compression == "gzip":
    suffix += ".gz"
  return blobs | "WritePredictions" >> WriteBlobs(
      publish.join(staging, publish.PREDICTIONS), suffix,
      config.output.num_shards, config.output.compression)


def _write_dead_letters(dead_letter_pcolls, staging: str):
  """Dead-letter dicts (records and quarantined file tails) -> staged JSONL."""
  return (dead_letter_pcolls
          | "AllDeadLetters" >> beam.Flatten()
          | "DeadLetterJson" >> beam.Map(
              lambda d: (json.dumps(d, sort_keys=True) + "\n").encode("utf-8"))
          | "WriteDeadLetters" >> WriteBlobs(
              publish.join(staging, publish.DEAD_LETTER_DIR, "dead_letter"), ".jsonl"))


def run_info(config: JobConfig, plan, runner: str) -> dict:
  """What the summary says about the run besides counts (picklable)."""
  return {
      "runner": runner,
      "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "start_epoch": time.time(),
      "output_format": config.output.format,
      "run_date": config.run_date.isoformat() if config.run_date else None,
      "stages": [{"name": p.name, "gate": p.gate or None, "source": p.source,
                  "checkpoint": p.checkpoint, "fingerprint": p.fingerprint,
                  "global_step": p.global_step} for p in plan],
  }


def _counters(result) -> Dict[str, int]:
  """Beam counters of our namespace (sessions_opened, ...), where the runner
  reports them; informative only: accounting uses counts written as data."""
  try:
    found = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(
        "tfcascade"))["counters"]
  except Exception:  # pylint: disable=broad-except; some runners have no metrics
    return {}
  totals: Dict[str, int] = {}
  for counter in found:
    value = counter.committed if counter.committed is not None else counter.attempted
    totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + (value or 0)
  return totals


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
    PreflightError, CascadeError, OutputExistsError: before any worker starts.
    RuntimeError: the pipeline failed (e.g. records did not add up).
  """
  pre = pre or preflight(config)
  options = PipelineOptions(list(beam_args))
  standard = options.view_as(StandardOptions)
  if not standard.runner:
    standard.runner = DEFAULT_RUNNER  # never the download-on-first-use default
  output_path = config.output_path
  staging = publish.prepare(output_path, overwrite)
  pipeline = beam.Pipeline(options=options)
  build_pipeline(pipeline, config, pre.files, staging,
                 run_info(config, pre.plan, standard.runner))
  result = pipeline.run()
  if _submits_only(options):
    return None
  state = result.wait_until_finish()
  if str(state) not in ("DONE", "PipelineState.DONE"):
    raise RuntimeError(f"pipeline ended in state {state}; output left incomplete "
                       f"(no {publish.SUCCESS})")
  summary = publish.read_summary(output_path)
  if summary is None:
    raise RuntimeError(f"the pipeline finished but {output_path} has no "
                       f"{publish.SUCCESS}; the output is incomplete")
  summary["metrics"] = _counters(result)
  publish.write_json(publish.join(output_path, publish.METRICS), summary["metrics"])
  return summary
