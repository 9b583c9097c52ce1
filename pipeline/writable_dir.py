"""Why a local directory the user named (output.path, --out) cannot be
written, checked before any work so the mistake costs seconds, not a run."""

from __future__ import annotations

import os
from typing import Optional


def dir_problem(path: str, what: str) -> Optional[str]:
  """Why `path` cannot be (or be created as) a writable directory, or None.

  Args:
    path: a local path; object-store URLs (`gs://...`) have no directories
      in the way and are never refused here.
    what: how the user named it, for the message (`output.path`, `--out`).
  """
  if "://" in path:
    return None
  existing = os.path.abspath(path)
  while not os.path.exists(existing) and os.path.dirname(existing) != existing:
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    where = "is a file" if existing == os.path.abspath(path) else f"is under {existing}, a file"
    return f"{what} {path} {where}; expected a directory (created if missing)"
  if not os.access(existing, os.W_OK | os.X_OK):
    return f"{what} {path}: cannot write in {existing} (permission denied)"
  return None
