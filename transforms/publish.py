"""The output directory's life cycle: refuse, clean, stage, account, publish.

A run writes everything under `<output>/_staging/`; only after the counts add
up are files moved to their final names, `run_summary.json` written, and
`_SUCCESS` written last. A killed run therefore never leaves `_SUCCESS`, and
the next run removes whatever a previous incomplete run left behind.

The launcher prepares the directory; the pipeline's last step (on a worker)
checks the accounting and publishes, so this module imports nothing of the
launcher (`pipeline`).
"""

from __future__ import annotations

import json
import time
from typing import Dict

from apache_beam.io.filesystems import FileSystems

SUCCESS = "_SUCCESS"
SUMMARY = "run_summary.json"
METRICS = "run_metrics.json"  # written by the launcher when it waits
STAGING = "_staging"
DEAD_LETTER_DIR = "dead_letter"
PREDICTIONS = "predictions"

# Everything a run of ours may leave in the output directory. Directories are
# listed both as themselves (local) and by contents (object stores have none).
_OWNED = (f"{PREDICTIONS}-*", SUMMARY, METRICS, DEAD_LETTER_DIR, f"{DEAD_LETTER_DIR}/**",
          STAGING, f"{STAGING}/**", "beam-temp-*", "beam-temp-*/**")


class AccountingError(RuntimeError):
  """Records read != written + dead-lettered: the run is not complete."""


class OutputExistsError(RuntimeError):
  """A complete output is already there and --overwrite was not given."""


def join(*parts: str) -> str:
  return FileSystems.join(*parts)


def _matches(pattern: str):
  result = FileSystems.match([pattern])[0]
  return [m.path for m in result.metadata_list]


def prepare(output_path: str, overwrite: bool) -> str:
  """Refuses a complete output (unless overwrite), clears ours; returns staging dir."""
  if FileSystems.exists(join(output_path, SUCCESS)):
    if not overwrite:
      raise OutputExistsError(
          f"{output_path} already holds a complete run ({SUCCESS} present); "
          f"pass --overwrite to replace it")
    # _SUCCESS goes first so an interrupted overwrite never looks complete.
    FileSystems.delete([join(output_path, SUCCESS)])
  _delete_owned(output_path)
  staging = join(output_path, STAGING)
  FileSystems.mkdirs(staging) if not FileSystems.exists(staging) else None
  return staging


def _delete_paths(paths) -> None:
  # Deepest first, so a directory is never removed before its contents.
  for path in sorted(set(paths), key=len, reverse=True):
    if FileSystems.exists(path):
      FileSystems.delete([path])


def _delete_owned(output_path: str) -> None:
  _delete_paths(p for pattern in _OWNED for p in _matches(join(output_path, pattern)))


def _delete_tree(path: str) -> None:
  """A directory and its contents; on object stores, every object under it."""
  _delete_paths(_matches(join(path, "**")) + [path])


def read_summary(output_path: str):
  """run_summary.json of a complete output, or None when _SUCCESS is absent."""
  if not FileSystems.exists(join(output_path, SUCCESS)):
    return None
  with FileSystems.open(join(output_path, SUMMARY)) as f:
    return json.loads(f.read().decode("utf-8"))


def publish(output_path: str, staging: str, summary: dict) -> dict:
  """Moves staged files to final names, writes the summary, then _SUCCESS.

  Returns:
    {"predictions": [...], "dead_letter": [...]} final file paths.
  """
  moved = {"predictions": [], "dead_letter": []}
  sources, destinations = [], []
  for path in sorted(_matches(join(staging, f"{PREDICTIONS}-*"))):
    sources.append(path)
    destinations.append(join(output_path, path.rsplit("/", 1)[-1]))
    moved["predictions"].append(destinations[-1])
  for path in sorted(_matches(join(staging, DEAD_LETTER_DIR, "*"))):
    sources.append(path)
    destinations.append(join(output_path, DEAD_LETTER_DIR, path.rsplit("/", 1)[-1]))
    moved["dead_letter"].append(destinations[-1])
  if moved["dead_letter"] and not FileSystems.exists(join(output_path, DEAD_LETTER_DIR)):
    FileSystems.mkdirs(join(output_path, DEAD_LETTER_DIR))
  if sources:
    FileSystems.rename(sources, destinations)
  write_json(join(output_path, SUMMARY), summary)
  _delete_tree(staging)
  with FileSystems.create(join(output_path, SUCCESS)) as f:
    f.write(b"")
  return moved


def write_json(path: str, obj) -> None:
  with FileSystems.create(path) as f:
    f.write(json.dumps(obj, indent=2, sort_keys=True).encode("utf-8") + b"\n")


def summarize(counts: Dict[str, int], info: dict) -> dict:
  """The run_summary.json contents, from the counts of what was written.

  Args:
    counts: summed counts: records_read, records_written,
      records_dead_lettered_written, rows_in/<stage>, rows_run/<stage>,
      quarantined:<file>.
    info: what the launcher knew (runner, start time, stages); see
      `pipeline.job.run_info`.
  """
  read = counts.get("records_read", 0)
  written = counts.get("records_written", 0)
  dead = counts.get("records_dead_lettered_written", 0)
  stages = {}
  for stage in info["stages"]:
    name = stage["name"]
    stages[name] = {"rows_in": counts.get(f"rows_in/{name}", 0),
                    "rows_run": counts.get(f"rows_run/{name}", 0),
                    **{k: v for k, v in stage.items() if k != "name"}}
  return {
      "records_read": read,
      "records_written": written,
      "records_dead_lettered": dead,
      "accounted": read == written + dead,
      "files_quarantined": sorted(k.split(":", 1)[1] for k in counts
                                  if k.startswith("quarantined:")),
      "stages": stages,
      "runner": info["runner"],
      "started_at": info["started_at"],
      "wall_seconds": round(time.time() - info["start_epoch"], 3),
      "output_format": info["output_format"],
      "run_date": info["run_date"],
  }


def finalize(counts: Dict[str, int], output_path: str, staging: str, info: dict):
  """Checks the accounting and publishes the output (the pipeline's last step).

  Raises:
    AccountingError: records do not add up; everything stays in staging, with
      the summary, and no _SUCCESS is written.
  """
  summary = summarize(counts, info)
  if not summary["accounted"]:
    write_json(join(staging, SUMMARY), summary)
    raise AccountingError(
        f"records_read {summary['records_read']} != records_written "
        f"{summary['records_written']} + records_dead_lettered "
        f"{summary['records_dead_lettered']}; output left in {staging}, "
        f"no {SUCCESS} written")
  publish(output_path, staging, summary)
