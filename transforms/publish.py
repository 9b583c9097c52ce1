"""The output's life cycle: prepare, account, publish — `_SUCCESS` means
complete and correct.

- `prepare` (launcher): finishes an interrupted publish, refuses a complete
  output unless overwriting, refuses while another run of the output is
  alive, removes dead runs' staging, and starts this run's own staging
  directory (transforms.staging). The previous output is NOT touched.
- workers write uniquely named files under the run's staging directory and
  report `(file key, records)` counts as data (transforms.write), next to
  `records_read` (counted by the reader), per-stage rows and dead-letter
  reasons (counted by the scorer).
- `finalize` (the pipeline's last step, on a worker): checks
  `records_read == written + dead_lettered` and the dead-letter share against
  `dead_letter.max_fraction`; on failure it writes the summary into the
  run's staging directory (kept, with the dead letters, for the user to read)
  and raises. Otherwise it writes a publish journal, then replaces the
  previous output: old `_SUCCESS` first, old published files, renames, the
  summary, `_SUCCESS` last. A publish cut short is finished by the next
  `prepare` from the journal (it only moves forward).

Imports nothing of the launcher (`pipeline`).
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Dict, List, Tuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms import output_layout as layout
from transforms import staging as staging_lib
from transforms.output_layout import (DEAD_LETTER, DEAD_LETTER_DIR, PREDICTIONS,
                                      QUARANTINE, SUCCESS, SUMMARY, join, write_json)
from transforms.shard_writer import WrittenFile

_LOG = logging.getLogger("tfcascade")
JOURNAL = "PUBLISH.json"

# The counts a run sums up (keys of the dict `finalize` receives).
RECORDS_READ = "records_read"
ROWS_IN = "rows_in/"  # + stage
ROWS_RUN = "rows_run/"  # + stage
DEAD_REASON = "dead_reason:"  # + reason (see transforms.scoring.reason_class)
QUARANTINED = "quarantined:"  # + input file
FILE = "file:"  # + kind + ":" + staged path -> records in it
_TOP_REASONS = 10


class OutputExistsError(RuntimeError):
  """A complete output is already there and --overwrite was not given."""


class RunInProgressError(RuntimeError):
  """Another run of the same output is alive; this launch is refused."""


class AccountingError(RuntimeError):
  """Records read != written + dead-lettered: the run is not complete."""


class RejectionError(RuntimeError):
  """More records were dead-lettered than dead_letter.max_fraction allows."""


class ConcurrentRunError(RuntimeError):
  """Another run of the same output goes first; this one does not publish."""


def file_count(written: WrittenFile) -> Tuple[str, int]:
  """The count a writer reports for a committed staged file."""
  return f"{FILE}{written.kind}:{written.path}", written.records


# --- launcher side -------------------------------------------------------------

def prepare(output_path: str, overwrite: bool, detached: bool = False
            ) -> staging_lib.RunStaging:
  """Checks the output directory and starts this run's staging.

  Raises:
    OutputExistsError: a complete output and no `overwrite`.
    RunInProgressError: another run of this output is alive.
  """
  finish_interrupted_publish(output_path)
  if layout.exists(join(output_path, SUCCESS)) and not overwrite:
    raise OutputExistsError(
        f"{output_path} already holds a complete run ({SUCCESS} present); "
        f"pass --overwrite to replace it")
  alive = []
  for state in map(staging_lib.state, staging_lib.runs(output_path)):
    if state.alive:
      alive.append(state)
    else:
      _LOG.info("removing the staging of dead run %s (%s)", state.staging.run_id, state.why)
      layout.delete_tree(state.staging.run_dir)
  if alive:
    raise _in_progress(output_path, alive)
  _delete_stray_staging(output_path)
  run = staging_lib.start_run(output_path, detached)
  rivals = staging_lib.rivals(run)
  if rivals:  # started at the same moment as another: the earlier one goes on
    layout.delete_tree(run.run_dir)
    raise _in_progress(output_path, rivals)
  return run


def _in_progress(output_path, states) -> RunInProgressError:
  return RunInProgressError(
      f"another run of {output_path} is in progress: "
      + "; ".join(f"{s.staging.run_id} ({s.why})" for s in states)
      + f". Wait for it, or, if it is dead, remove {states[0].staging.run_dir}; a run "
      f"counts as dead when its process on this host is gone or its heartbeat "
      f"is older than {staging_lib.STALE_AFTER_S} s")


def _delete_stray_staging(output_path: str) -> None:
  """Files directly under _staging/ (an older layout's), Beam temp dirs."""
  layout.delete_paths(layout.matches(join(output_path, layout.STAGING, "*"))
                      + layout.matches(join(output_path, "beam-temp-*")))


def read_summary(output_path: str):
  """run_summary.json of a complete output, or None when _SUCCESS is absent."""
  if not layout.exists(join(output_path, SUCCESS)):
    return None
  return layout.read_json(join(output_path, SUMMARY))


# --- the pipeline's last step ----------------------------------------------------

def summarize(counts: Dict[str, int], info: dict) -> dict:
  """The run_summary.json contents, from the counts of what was written.

  Args:
    counts: summed counts (see the keys above).
    info: what the launcher knew (runner, start, stages, run id, limits); see
      `pipeline.job.run_info`.
  """
  files = committed_files(counts)
  read = counts.get(RECORDS_READ, 0)
  written = sum(f.records for f in files if f.kind == PREDICTIONS)
  dead = sum(f.records for f in files if f.kind == DEAD_LETTER)
  reasons = collections.Counter({k[len(DEAD_REASON):]: v for k, v in counts.items()
                                 if k.startswith(DEAD_REASON)})
  stages = {}
  for stage in info["stages"]:
    name = stage["name"]
    stages[name] = {"rows_in": counts.get(f"{ROWS_IN}{name}", 0),
                    "rows_run": counts.get(f"{ROWS_RUN}{name}", 0),
                    **{k: v for k, v in stage.items() if k != "name"}}
  return {
      "run_id": info["run_id"],
      "records_read": read,
      "records_written": written,
      "records_dead_lettered": dead,
      "accounted": read == written + dead,
      "dead_letter_fraction": round(dead / read, 6) if read else 0.0,
      "max_dead_letter_fraction": info["max_dead_letter_fraction"],
      "dead_letter_reasons": dict(reasons.most_common(_TOP_REASONS)),
      "files_quarantined": sorted(k[len(QUARANTINED):] for k in counts
                                  if k.startswith(QUARANTINED)),
      "stages": stages,
      "runner": info["runner"],
      "started_at": info["started_at"],
      "wall_seconds": round(time.time() - info["start_epoch"], 3),
      "output_format": info["output_format"],
      "run_date": info["run_date"],
  }


def committed_files(counts: Dict[str, int]) -> List[WrittenFile]:
  """The staged files the writers reported (committed attempts only)."""
  files = []
  for key, records in counts.items():
    if key.startswith(FILE):
      kind, path = key[len(FILE):].split(":", 1)
      files.append(WrittenFile(kind, path, records))
  return sorted(files)


def finalize(counts: Dict[str, int], output_path: str, run_id: str, info: dict):
  """Checks the run and publishes it (the pipeline's last step).

  Raises:
    AccountingError: records do not add up.
    RejectionError: the dead-lettered share is above max_fraction.
    ConcurrentRunError: another live run of this output goes first.
    (The summary and the dead letters stay in the run's staging directory;
    no _SUCCESS is written; the previous output is untouched.)
  """
  run = staging_lib.RunStaging(output_path, run_id)
  summary = summarize(counts, info)
  if not summary["accounted"]:
    _fail(run, summary, AccountingError(
        f"records_read {summary['records_read']} != records_written "
        f"{summary['records_written']} + records_dead_lettered "
        f"{summary['records_dead_lettered']}; nothing published (no {SUCCESS}); "
        f"summary in {run.run_dir}"))
  if summary["dead_letter_fraction"] > summary["max_dead_letter_fraction"]:
    _fail(run, summary, RejectionError(_rejection_message(summary, run)))
  rivals = staging_lib.rivals(run)
  if rivals:
    _fail(run, summary, ConcurrentRunError(
        f"another run of {output_path} started first and is alive: "
        + "; ".join(f"{s.staging.run_id} ({s.why})" for s in rivals)
        + "; this run does not publish"))
  files = committed_files(counts)
  if not any(f.kind == PREDICTIONS for f in files):
    files.append(_empty_predictions_file(run, info))
  journal = _publish_plan(output_path, files, summary)
  write_json(join(run.run_dir, JOURNAL), journal)
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
  old = [p for pattern in layout.PUBLISHED for p in layout.matches(join(output_path, pattern))
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
  if not layout.matches(join(staging_root, "**")):
    layout.delete_paths([staging_root])


def finish_interrupted_publish(output_path: str) -> bool:
  """Applies the journal of a publish that was cut short (its run is dead);
  True if there was one."""
  finished = False
  for run in staging_lib.runs(output_path):
    path = join(run.run_dir, JOURNAL)
    # A live run may be publishing right now; only a dead one's is finished.
    if layout.exists(path) and not staging_lib.state(run).alive:
      _LOG.warning("finishing the interrupted publish of run %s", run.run_id)
      apply_journal(run, layout.read_json(path))
      finished = True
  return finished
