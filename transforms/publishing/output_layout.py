"""The output directory's names, and the file operations on it (any Beam
FileSystems path: local, gs://, ...).

```
<output>/predictions-SSSSS-of-NNNNN.tfrecord[.gz] | .jsonl[.gz] | .parquet   published files
<output>/dead_letter/dead_letter-SSSSS-of-NNNNN.jsonl
<output>/dead_letter/quarantine-SSSSS-of-NNNNN.jsonl
<output>/run_summary.json, run_metrics.json
<output>/_SUCCESS                                     written last
<output>/_staging/<run id>/RUN.json                   one directory per run
<output>/_staging/<run id>/files/...                  what its workers wrote
<output>/_staging/<run id>/PUBLISH.json               the publish journal
```

Output paths are literal: `out [v2]` is a folder with brackets in its name,
never a glob (transforms/paths.py says why that needs care). Globs appear
only where this module's callers write them, relative to a literal folder:
`matches_under(output_path, "predictions-*")`.
"""

from __future__ import annotations

import json
import uuid
from typing import Iterable, List

from apache_beam.io.filesystems import FileSystems

from tfcascade.transforms import paths

SUCCESS = "_SUCCESS"
SUMMARY = "run_summary.json"
METRICS = "run_metrics.json"  # written by the launcher when it waits
STAGING = "_staging"
DEAD_LETTER_DIR = "dead_letter"
PREDICTIONS = "predictions"
DEAD_LETTER = "dead_letter"
QUARANTINE = "quarantine"

# Published files a run of ours leaves (replaced by the next publish).
PUBLISHED = (f"{PREDICTIONS}-*", SUMMARY, METRICS, f"{DEAD_LETTER_DIR}/*")


def join(*parts: str) -> str:
  return FileSystems.join(*parts)


def exists(path: str) -> bool:
  """Whether the literal path exists (FileSystems.exists does not glob)."""
  return FileSystems.exists(path)


def matches_under(directory: str, pattern: str) -> List[str]:
  """Paths under the literal folder `directory` matching the glob `pattern`
  (relative to it: "predictions-*", "**"); [] when nothing does."""
  return [m.path for m in paths.match_under(directory, pattern)]


def matches(pattern: str) -> List[str]:
  """Paths matching a glob, ALL of which is read as a glob ([] when nothing
  does): for a glob under an output folder, use matches_under."""
  return [m.path for m in FileSystems.match([pattern])[0].metadata_list]


def modified_seconds(path: str) -> float:
  """The file's last-modified time (epoch seconds), 0 when unknown."""
  found = paths.file_metadata(path)
  return float(found.last_updated_in_seconds or 0) if found else 0.0


def delete_paths(names: Iterable[str]) -> None:
  """Deletes what exists of these literal paths; deepest first, so a
  directory never goes before its contents."""
  for path in sorted(set(names), key=len, reverse=True):
    if FileSystems.exists(path):
      paths.delete_literal(path)


def delete_tree(path: str) -> None:
  """A directory and its contents; on object stores, every object under it."""
  delete_paths(matches_under(path, "**") + [path])


def read_json(path: str):
  with FileSystems.open(path) as f:
    return json.loads(f.read().decode("utf-8"))


def write_json(path: str, obj) -> None:
  """Writes a JSON file whole: under a temporary name, then renamed over
  `path`, so a reader (another launch reading a run marker) never sees half."""
  partial = f"{path}.{uuid.uuid4().hex}.partial"
  with FileSystems.create(partial) as f:
    f.write(json.dumps(obj, indent=2, sort_keys=True).encode("utf-8") + b"\n")
  FileSystems.rename([partial], [path])
