"""The output directory's life cycle: refuse, clean, stage, publish.

A run writes everything under `<output>/_staging/`; only after the counts add
up are files moved to their final names, `run_summary.json` written, and
`_SUCCESS` written last. A killed run therefore never leaves `_SUCCESS`, and
the next run removes whatever a previous incomplete run left behind.
"""

from __future__ import annotations

import json

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
