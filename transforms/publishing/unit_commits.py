"""Committed units of work: what a run keeps when it dies, and what the next
run of the same output may reuse.

A unit is one ReadRange (a whole input file, or a byte range of a big
uncompressed one) read, scored and written by one worker into its own staged
files. When those files are closed the worker COMMITS the unit: it writes
`<run dir>/units/<unit key>.json` (the run key, the range and the unit's
RunCounts, which name its files), whole or not at all. A unit done twice (a
retried bundle or task) keeps its first commit: either copy is complete.

The unit key covers the range AND the input file's pin (size, modification
time), so a file that changed since a unit was committed gives other keys:
its old units are never reused. The run key covers the config and the
models' fingerprints (pipeline.run_plan.run_key): a commit of another
run key is never reused either.
"""

from __future__ import annotations

import hashlib
import json
from typing import AbstractSet, Dict, List, NamedTuple

from tfcascade.transforms.accounting import RunCounts
from tfcascade.transforms.publishing import output_layout as layout
from tfcascade.transforms.publishing.run_registry import RunStaging
from tfcascade.transforms.reading.record_ranges import ReadRange
from tfcascade.transforms.writing.shard_writer import failures_named

UNITS = "units"


class UnitCommit(NamedTuple):
  """One committed unit, as read back from its commit file."""
  key: str
  run_key: Dict[str, str]
  task: List  # the ReadRange's fields
  input_bytes: int  # the range's share of its input file
  counts: RunCounts


def unit_key(task: ReadRange) -> str:
  """The unit's identity: its range and its input file's pin."""
  return hashlib.sha256(json.dumps(list(task), sort_keys=True).encode()).hexdigest()[:32]


def units_dir(run: RunStaging) -> str:
  return layout.join(run.run_dir, UNITS)


def commit(run: RunStaging, run_key: Dict[str, str], task: ReadRange,
           counts: RunCounts) -> None:
  """Commits a finished unit (its files are closed): whole or absent
  (layout.write_json renames a complete file into place). A second copy of
  the unit (a retried attempt) leaves the first one standing."""
  key = unit_key(task)
  final = layout.join(units_dir(run), f"{key}.json")
  if layout.exists(final):
    return
  with failures_named("committing the unit of work", final):
    layout.write_json(final, {"key": key, "run_key": run_key, "range": list(task),
                              "input_bytes": task.input_bytes, "counts": counts.to_json()})


def read_commits(run: RunStaging, skip: AbstractSet[str] = frozenset()
                 ) -> Dict[str, UnitCommit]:
  """The units a run committed, by key (partial writes are ignored; keys in
  `skip` are not read again)."""
  found = {}
  for path in layout.matches_under(units_dir(run), "*.json"):
    if path.rsplit("/", 1)[-1][:-len(".json")] in skip:
      continue
    data = layout.read_json(path)
    found[data["key"]] = UnitCommit(data["key"], data["run_key"], data["range"],
                                    int(data["input_bytes"]),
                                    RunCounts.from_json(data["counts"]))
  return found
