"""Step 4, publish: account, then publish — `_SUCCESS` means complete and
correct.

- the launcher has prepared the run's staging directory (pipeline.run_start;
  the previous output is NOT touched);
- workers write uniquely named files under it and report `RunCounts` as
  data (transforms.accounting): the files they committed, records read,
  rows per stage and dead-letter reasons;
- `finalize` (the pipeline's last step, on a worker; the Spark driver): checks
  `records_read == written + dead_lettered` and the dead-letter share against
  `dead_letter.max_fraction`; on failure it writes the summary into the
  run's staging directory (kept, with the dead letters, for the user to read)
  and raises. Otherwise it writes a publish journal, then replaces the
  previous output: old `_SUCCESS` first, old published files, renames, the
  summary, `_SUCCESS` last. A publish cut short is finished by the next
  `prepare` from the journal (it only moves forward).

Imports nothing of the launcher (`tfcascade.pipeline`).
"""

from __future__ import annotations

import logging
import time
from typing import List

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from tfcascade.transforms.accounting import RunCounts, WrittenFile
from tfcascade.transforms.writing import parquet_writer
from tfcascade.transforms.writing.parquet_writer import PARQUET_SUFFIX
from tfcascade.transforms.writing.shard_writer import failures_named
from tfcascade.transforms.publishing import output_layout as layout
from tfcascade.transforms.publishing import run_registry
from tfcascade.transforms.publishing.output_layout import (
    DEAD_LETTER, DEAD_LETTER_DIR, PREDICTIONS, QUARANTINE, SUCCESS, SUMMARY, join, write_json)

_LOG = logging.getLogger("tfcascade")
JOURNAL = "PUBLISH.json"
_TOP_REASONS = 10


class AccountingError(RuntimeError):
  """Records read != written + dead-lettered: the run is not complete."""


class RejectionError(RuntimeError):
  """More records were dead-lettered than dead_letter.max_fraction allows."""


class ConcurrentRunError(RuntimeError):
  """Another run of the same output goes first; this one does not publish."""


# --- the pipeline's last step ----------------------------------------------------

def summarize(counts: RunCounts, info: dict) -> dict:
  """The run_summary.json contents, from the counts of what was written.

  Args:
    counts: the run's summed counts.
    info: what the launcher knew (runner, start, stages, run id, limits); see
      `tfcascade.pipeline.run_plan.run_info`.
  """
  read = counts.records_read
  written = counts.records_in(PREDICTIONS)
  dead = counts.records_in(DEAD_LETTER)
  stages = {}
  for stage in info["stages"]:
    name = stage["name"]
    stages[name] = {"rows_in": counts.rows_in[name], "rows_run": counts.rows_run[name],
                    **{k: v for k, v in stage.items() if k != "name"}}
  return {
      "run_id": info["run_id"],
      "run_key": info.get("run_key"),
      "records_read": read,
      "records_resumed": counts.records_resumed,
      "records_read_in_graph": counts.records_read_in_graph,
      "records_written": written,
      "records_dead_lettered": dead,
      "accounted": read == written + dead,
      "dead_letter_fraction": round(dead / read, 6) if read else 0.0,
      "max_dead_letter_fraction": info["max_dead_letter_fraction"],
      "dead_letter_reasons": dict(counts.dead_reasons.most_common(_TOP_REASONS)),
      "files_quarantined": sorted(counts.quarantined),
      "stages": stages,
      "runner": info["runner"],
      "started_at": info["started_at"],
      "wall_seconds": round(time.time() - info["start_epoch"], 3),
      "output_format": info["output_format"],
      "run_date": info["run_date"],
      # scoring.output_histograms: what `tfcascade report` draws and compares.
      "histograms": counts.histograms.summary(),
  }


def finalize(counts: RunCounts, output_path: str, run_id: str, info: dict):
  """Checks the run and publishes it (the pipeline's last step).

  Raises:
    AccountingError: records do not add up.
    RejectionError: the dead-lettered share is above max_fraction.
    ConcurrentRunError: another live run of this output goes first.
    (The summary and the dead letters stay in the run's staging directory;
    no _SUCCESS is written; the previous output is untouched.)
  """
  run = run_registry.RunStaging(output_path, run_id)
  summary = summarize(counts, info)
  if not summary["accounted"]:
    _fail(run, summary, AccountingError(
        f"records_read {summary['records_read']} != records_written "
        f"{summary['records_written']} + records_dead_lettered "
        f"{summary['records_dead_lettered']}; nothing published (no {SUCCESS}); "
        f"summary in {run.run_dir}"))
  if summary["dead_letter_fraction"] > summary["max_dead_letter_fraction"]:
    _fail(run, summary, RejectionError(_rejection_message(summary, run)))
  rivals = run_registry.rivals(run)
  if rivals:
    _fail(run, summary, ConcurrentRunError(
        f"another run of {output_path} started first and is alive: "
        + "; ".join(f"{s.staging.run_id} ({s.why})" for s in rivals)
        + "; this run does not publish"))
  files = sorted(counts.files)  # committed attempts only
  # Parquet: no file, since its columns' types come from the rows scored.
  if not any(f.kind == PREDICTIONS for f in files) and \
      info["predictions_suffix"] != PARQUET_SUFFIX:
    files.append(_empty_predictions_file(run, info))
  if info.get("num_shards"):
    with failures_named("merging the predictions into output.num_shards files in",
                        run.files_dir):
      files = _merge_predictions(run, files, info["num_shards"])
  journal = _publish_plan(output_path, files, summary)
  journal_path = join(run.run_dir, JOURNAL)
  with failures_named("writing the publish journal", journal_path):
    write_json(journal_path, journal)  # whole or absent: a half journal never wedges
  with failures_named("publishing into", output_path,
                      f"no {SUCCESS}; the next run of this output finishes the publish "
                      f"from {journal_path}"):
    apply_journal(run, journal)


def _rejection_message(summary: dict, run) -> str:
  top = "; ".join(f"{n:,} x {reason}" for reason, n in
                  list(summary["dead_letter_reasons"].items())[:3])
  return (f"{summary['records_dead_lettered']:,} of {summary['records_read']:,} "
          f"records were dead-lettered ({summary['dead_letter_fraction']:.2%}), more "
          f"than dead_letter.max_fraction {summary['max_dead_letter_fraction']:g} "
          f"allows; top reasons: {top or 'none recorded'}. Nothing published (no "
          f"{SUCCESS}); the summary and the dead letters are in {run.run_dir} "
          f"(files/{DEAD_LETTER}-*.jsonl) until the next run. "
          f"--set dead_letter.max_fraction=1 accepts any share.")


def _fail(run, summary: dict, error: Exception) -> None:
  summary["failed"] = str(error)
  write_json(join(run.run_dir, SUMMARY), summary)
  raise error


def _empty_predictions_file(run, info) -> WrittenFile:
  """A run with no prediction rows still publishes one (empty) shard."""
  suffix = info["predictions_suffix"]
  path = join(run.files_dir, f"{PREDICTIONS}-empty{suffix}")
  with FileSystems.create(path, compression_type=(
      CompressionTypes.GZIP if suffix.endswith(".gz") else CompressionTypes.UNCOMPRESSED)):
    pass
  return WrittenFile(PREDICTIONS, path, 0)


def _merge_predictions(run, files: List[WrittenFile], shards: int) -> List[WrittenFile]:
  """output.num_shards: the units' prediction files concatenated into that
  many staged files (TFRecord frames, gzip members and JSON lines all stay
  valid when concatenated; Parquet files are re-read and re-written into
  full row groups). It copies the whole output once, on this one worker: the
  price of choosing the file count."""
  predictions = [f for f in files if f.kind == PREDICTIONS]
  if len(predictions) <= shards:
    return files
  merged = []
  suffix = _suffix(predictions[0].path, PREDICTIONS)
  for shard in range(shards):
    group = predictions[shard::shards]
    if suffix == PARQUET_SUFFIX:
      merged.append(_merged_parquet(run, group))
      continue
    path = join(run.files_dir, f"{PREDICTIONS}-merged{shard:05d}{suffix}")
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as out:
      for f in group:
        with FileSystems.open(f.path, compression_type=CompressionTypes.UNCOMPRESSED) as src:
          while True:
            block = src.read(1 << 22)
            if not block:
              break
            out.write(block)
    merged.append(WrittenFile(PREDICTIONS, path, sum(f.records for f in group)))
  return [f for f in files if f.kind != PREDICTIONS] + merged


def _merged_parquet(run, group: List[WrittenFile]) -> WrittenFile:
  merged = parquet_writer.merge(run.files_dir, PREDICTIONS, [f.path for f in group])
  if merged.records != sum(f.records for f in group):
    raise AccountingError(f"merging {len(group)} Parquet files into {merged.path} wrote "
                          f"{merged.records} rows; their units committed "
                          f"{sum(f.records for f in group)}; nothing published (no {SUCCESS})")
  return merged


def _publish_plan(output_path: str, files: List[WrittenFile], summary: dict) -> dict:
  """The journal: what to move where, what of the old output to delete."""
  moves = []
  for kind, directory in ((PREDICTIONS, output_path),
                          (DEAD_LETTER, join(output_path, DEAD_LETTER_DIR)),
                          (QUARANTINE, join(output_path, DEAD_LETTER_DIR))):
    of_kind = [f for f in files if f.kind == kind]
    for i, f in enumerate(of_kind):
      suffix = _suffix(f.path, kind)
      moves.append([f.path, join(directory, f"{kind}-{i:05d}-of-{len(of_kind):05d}{suffix}")])
  destinations = {dst for _, dst in moves}
  old = [p for pattern in layout.PUBLISHED for p in layout.matches_under(output_path, pattern)
         if p not in destinations]
  return {"moves": moves, "delete": sorted(old), "summary": summary}


def _suffix(staged_path: str, kind: str) -> str:
  """".tfrecord.gz" of "<kind>-<32 hex><suffix>" (ShardWriter's names)."""
  name = staged_path.rsplit("/", 1)[-1][len(kind) + 1:]
  return name[name.index("."):] if "." in name else ""


def apply_journal(run, journal: dict) -> None:
  """Replaces the previous output with the run's files. Idempotent, so an
  interrupted publish is finished by applying its journal again."""
  output_path = run.output_path
  layout.delete_paths([join(output_path, SUCCESS)])  # first: never looks complete
  layout.delete_paths(journal["delete"])
  sources, destinations = [], []
  for src, dst in journal["moves"]:
    if layout.exists(src):
      sources.append(src)
      destinations.append(dst)
  if any(d.startswith(join(output_path, DEAD_LETTER_DIR)) for d in destinations) and \
      not layout.exists(join(output_path, DEAD_LETTER_DIR)):
    FileSystems.mkdirs(join(output_path, DEAD_LETTER_DIR))
  if sources:
    FileSystems.rename(sources, destinations)
  write_json(join(output_path, SUMMARY), journal["summary"])
  with FileSystems.create(join(output_path, SUCCESS)) as f:
    f.write(b"")
  layout.delete_tree(run.run_dir)
  staging_root = join(output_path, layout.STAGING)
  if not layout.matches_under(staging_root, "**"):
    layout.delete_paths([staging_root])


def finish_interrupted_publish(output_path: str) -> bool:
  """Applies the journal of a publish that was cut short (its run is dead);
  True if there was one."""
  finished = False
  for run in run_registry.runs(output_path):
    path = join(run.run_dir, JOURNAL)
    # A live run may be publishing right now; only a dead one's is finished.
    if layout.exists(path) and not run_registry.state(run).alive:
      _LOG.warning("finishing the interrupted publish of run %s", run.run_id)
      apply_journal(run, layout.read_json(path))
      finished = True
  return finished
