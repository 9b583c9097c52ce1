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

from pipeline import outputs
from pipeline.config import JobConfig
from transforms import tfrecord_framing as framing
from transforms.read import QUARANTINE_TAG, ReadRecordChunks, open_raw
from transforms.run_cascade import COUNTS_TAG, DEAD_LETTER_TAG, RunCascade
from transforms.write import CountWrittenRecords, WriteBlobs

_LOG = logging.getLogger("tfcascade")
DEFAULT_RUNNER = "DirectRunner"


class PreflightError(RuntimeError):
  """A problem found before any data is processed; names the culprit."""


class AccountingError(RuntimeError):
  """Records read != written + dead-lettered: the run is not complete."""


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
  from transforms.engine import build_cascade_graph  # pylint: disable=g-import-not-at-top
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
                   files: Sequence[Tuple[str, str, int]], staging: str) -> None:
  """Adds the whole job to `p`, writing under `staging`."""
  read = p | "ReadInputs" >> ReadRecordChunks(
      files, chunk_size=config.batch_size,
      max_record_bytes=config.input.max_record_bytes,
      on_corrupt=config.input.on_corrupt, split_bytes=config.input.split_bytes)
  scored = read.chunks | "RunCascade" >> RunCascade(
      config.cascade_spec(), config.output.format, config.output.passthrough,
      config.dead_letter.non_finite_outputs)

  fmt = config.output.format
  suffix = ".tfrecord" if fmt == "tfrecord" else ".jsonl"
  if config.output.compression == "gzip":
    suffix += ".gz"
  predictions = scored.blobs | "WritePredictions" >> WriteBlobs(
      outputs.join(staging, outputs.PREDICTIONS), suffix,
      config.output.num_shards, config.output.compression)

  dead = ((scored[DEAD_LETTER_TAG], read[QUARANTINE_TAG])
          | "AllDeadLetters" >> beam.Flatten()
          | "DeadLetterJson" >> beam.Map(
              lambda d: (json.dumps(d, sort_keys=True) + "\n").encode("utf-8")))
  dead_files = dead | "WriteDeadLetters" >> WriteBlobs(
      outputs.join(staging, outputs.DEAD_LETTER_DIR, "dead_letter"), ".jsonl")
  quarantined = (read[QUARANTINE_TAG]
                 | "QuarantinedFiles" >> beam.Map(lambda d: (f"quarantined:{d['source']}", 1)))

  counts = (
      (scored[COUNTS_TAG],
       predictions | "CountWritten" >> CountWrittenRecords(fmt, "records_written"),
       dead_files | "CountDeadLettered" >> CountWrittenRecords(
           "dead_letter", "records_dead_lettered_written"),
       quarantined)
      | "AllCounts" >> beam.Flatten()
      | "SumCounts" >> beam.CombinePerKey(sum)
      | "CountsToDict" >> beam.combiners.ToDict())
  counts_path = outputs.join(staging, outputs.COUNTS)
  _ = counts | "WriteCounts" >> beam.Map(
      lambda totals: outputs.write_json(counts_path, totals))


def summarize(config: JobConfig, counts: Dict[str, int], plan, runner: str,
              wall_seconds: float, started: str) -> dict:
  """The run_summary.json contents; checks records are all accounted for."""
  read = counts.get("records_read", 0)
  written = counts.get("records_written", 0)
  dead = counts.get("records_dead_lettered_written", 0)
  stages = {}
  for p in plan:
    stages[p.name] = {
        "rows_in": counts.get(f"rows_in/{p.name}", 0),
        "rows_run": counts.get(f"rows_run/{p.name}", 0),
        "gate": p.gate or None, "source": p.source, "checkpoint": p.checkpoint,
        "fingerprint": p.fingerprint, "global_step": p.global_step,
    }
  return {
      "records_read": read,
      "records_written": written,
      "records_dead_lettered": dead,
      "accounted": read == written + dead,
      "files_quarantined": sorted(k.split(":", 1)[1] for k in counts
                                  if k.startswith("quarantined:")),
      "stages": stages,
      "runner": runner,
      "started_at": started,
      "wall_seconds": round(wall_seconds, 3),
      "output_format": config.output.format,
      "run_date": config.run_date.isoformat() if config.run_date else None,
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


def run(config: JobConfig, beam_args: Sequence[str] = (), overwrite: bool = False,
        pre: Optional[Preflight] = None) -> dict:
  """Runs the job to completion and publishes the output.

  Args:
    config: the validated job config.
    beam_args: Beam pipeline flags (--runner, --flink_master, ...).
    overwrite: replace a complete output already at output.path.
    pre: a Preflight already done (else it is done here).

  Returns:
    The run summary (also written to run_summary.json).

  Raises:
    PreflightError, CascadeError, OutputExistsError: before any worker starts.
    AccountingError: the pipeline finished but records do not add up.
  """
  pre = pre or preflight(config)
  options = PipelineOptions(list(beam_args))
  standard = options.view_as(StandardOptions)
  if not standard.runner:
    standard.runner = DEFAULT_RUNNER  # never the download-on-first-use default
  output_path = config.output_path
  staging = outputs.prepare(output_path, overwrite)
  started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  start = time.perf_counter()
  pipeline = beam.Pipeline(options=options)
  build_pipeline(pipeline, config, pre.files, staging)
  result = pipeline.run()
  state = result.wait_until_finish()
  if str(state) not in ("DONE", "PipelineState.DONE"):
    raise RuntimeError(f"pipeline ended in state {state}; output left incomplete "
                       f"(no {outputs.SUCCESS})")
  counts = outputs.read_counts(staging)
  summary = summarize(config, counts, pre.plan, standard.runner,
                      time.perf_counter() - start, started)
  summary["metrics"] = _counters(result)
  if not summary["accounted"]:
    outputs.write_json(outputs.join(staging, outputs.SUMMARY), summary)
    raise AccountingError(
        f"records_read {summary['records_read']} != records_written "
        f"{summary['records_written']} + records_dead_lettered "
        f"{summary['records_dead_lettered']}; output left in {staging}, "
        f"no {outputs.SUCCESS} written")
  summary["outputs"] = outputs.publish(output_path, staging, summary)
  return summary
