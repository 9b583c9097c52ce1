"""The demo's arguments, checked before any work (TensorFlow not imported),
and its --out directory: recognised by its demo.json, replaced whole.

A build writes the new demo into a hidden sibling, `.<name>.demo-partial`,
and swaps it in only once complete (two renames), so whoever reads
`<out>/data` sees the old demo or the new one, never a mix and never a
half-written data set: an interrupted build removes its sibling, a killed one
leaves it for the next build to remove. Files the demo did not write are never
deleted: an --out holding any is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from typing import Iterator, Optional

DEMO_JSON = "demo.json"
CONFIG = "config.yaml"  # the demo job's config (job_config)
# Everything the demo writes into --out (`.records`: the marker run_local.sh
# wrote before demo.json said how a demo was built).
OWN_ENTRIES = frozenset({DEMO_JSON, CONFIG, "models", "data", ".records"})


class DemoError(ValueError):
  """An --out or a number the demo refuses; the message is one line."""


def check_numbers(records: int, shards: int, seed: int) -> None:
  """Raises DemoError unless the numbers make a demo (every file a record)."""
  if records < 1:
    raise DemoError(f"--records must be at least 1 (got {records})")
  if not 1 <= shards <= records:
    raise DemoError(f"--shards must be between 1 and --records ({records:,}), so that "
                    f"every file holds a record (got {shards})")
  if seed < 0:
    raise DemoError(f"--seed must be >= 0 (got {seed})")


def previous_demo(out_dir: str) -> Optional[dict]:
  """The demo.json of the demo in `out_dir` ({} if it does not read), or
  None when `out_dir` is missing or empty.

  Raises:
    DemoError: `out_dir` holds files the demo did not write, or is (or holds)
      the current directory, which a swap would pull from under the user.
  """
  if not os.path.isdir(out_dir):
    return None
  if _holds_cwd(out_dir):
    raise DemoError(f"--out {out_dir} is (or holds) the current directory, which the "
                    f"demo would replace whole; run it from outside (e.g. --out ../NAME)")
  entries = sorted(os.listdir(out_dir))
  if not entries:
    return None
  if DEMO_JSON not in entries:
    raise DemoError(f"--out {out_dir} is a directory holding other files "
                    f"({', '.join(entries[:3])}{', ...' if len(entries) > 3 else ''}) and "
                    f"no {DEMO_JSON}: the demo replaces its --out whole; choose a new or "
                    f"empty directory")
  foreign = [e for e in entries if e not in OWN_ENTRIES]
  if foreign:
    raise DemoError(f"--out {out_dir} holds a demo and also {foreign[0]}, which the demo "
                    f"did not write: a rebuild replaces --out whole; move it elsewhere "
                    f"first")
  try:
    with open(os.path.join(out_dir, DEMO_JSON)) as f:
      previous = json.load(f)
  except (OSError, ValueError):
    return {}  # a demo, but nothing of it can be trusted: rebuilt whole
  return previous if isinstance(previous, dict) else {}


def _holds_cwd(path: str) -> bool:
  target, cwd = os.path.realpath(path), os.path.realpath(os.getcwd())
  return os.path.commonpath([target, cwd]) == target


@contextlib.contextmanager
def replaced(out_dir: str) -> Iterator[str]:
  """Yields a new empty directory to build the demo in; when the block ends
  without an exception it becomes `out_dir` (any old one removed), otherwise
  it is removed and `out_dir` is left as it was.

  Raises:
    DemoError: the directory that holds `out_dir` cannot be written.
  """
  # The link's target is swapped, so a symlinked --out stays a link.
  target = os.path.realpath(out_dir)
  parent = os.path.dirname(target)
  os.makedirs(parent, exist_ok=True)
  if not os.access(parent, os.W_OK | os.X_OK):
    raise DemoError(f"--out {out_dir}: cannot write in {parent} (permission denied), "
                    f"where the demo is built before it replaces {out_dir}")
  partial, old = _sibling(target, "partial"), _sibling(target, "old")
  for leftover in (partial, old):  # from a build killed before it finished
    shutil.rmtree(leftover, ignore_errors=True)
  os.mkdir(partial)
  try:
    yield partial
  except BaseException:
    shutil.rmtree(partial, ignore_errors=True)
    raise
  if os.path.isdir(target):
    os.rename(target, old)
  os.rename(partial, target)
  shutil.rmtree(old, ignore_errors=True)


def _sibling(target: str, role: str) -> str:
  return os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.demo-{role}")
