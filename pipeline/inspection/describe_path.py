"""`describe`: which kind of path this is, handed to the module that
describes that kind (the order is in the package doc)."""

from __future__ import annotations

import os
import re
from typing import List, Optional

from tfcascade.pipeline.inspection.checkpoint_info import describe_checkpoint
from tfcascade.pipeline.inspection.inspect_io import (
    EXPECTED, InspectError, exists, first_line, isdir, read_head)
from tfcascade.pipeline.inspection.meta_graph_info import (
    describe_meta_graph, looks_like_meta_graph)
from tfcascade.pipeline.inspection.output_dir_info import DEFAULT_LABEL, describe_output
from tfcascade.pipeline.inspection.saved_model_info import describe_saved_model
from tfcascade.pipeline.inspection.staged_runs import describe_run, describe_runs, run_of
from tfcascade.pipeline.inspection.tfrecord_info import TFRECORD_NAME, describe_tfrecords
from tfcascade.transforms.publishing import output_layout as layout
from tfcascade.transforms.publishing.run_registry import RUN_MARKER

_SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
_CHECKPOINT_FILE = re.compile(r"^(.+)\.(index|data-\d+-of-\d+)$")


def describe(path: str, label: str = DEFAULT_LABEL,
             relative_to: Optional[str] = None) -> str:
  """Returns a human-readable description of `path` (see the package doc).

  Args:
    path: what to describe.
    label: the int64 passthrough feature holding the true class (outputs).
    relative_to: the directory of the config a model's `stages:` entry is
      for (its paths are made relative to it); None: paths as given.

  Raises:
    InspectError: one line naming the path, what was found there and what
      was expected.
  """
  relative_to = _config_dir(relative_to)
  if _is_glob(path) and not exists(path):  # a folder named 'm [v1]' is a path
    files = _glob(path)
    if not files:
      raise InspectError(f"{path}: no file matches; {EXPECTED}")
    return describe_tfrecords(files)
  if not exists(path):
    if exists(path + ".index"):
      return describe_checkpoint(path)
    raise InspectError(f"{path}: no such file or directory; {EXPECTED}")
  if isdir(path):
    return _describe_directory(path, label, relative_to)
  name = os.path.basename(path)
  if name in _SAVED_MODEL_FILES:
    return describe_saved_model(os.path.dirname(path) or ".", relative_to)
  if _CHECKPOINT_FILE.match(name) or exists(path + ".index"):
    return describe_checkpoint(path)
  if name == "checkpoint":  # the checkpoint state file
    return describe_checkpoint(os.path.dirname(path) or ".")
  if name in (layout.SUMMARY, RUN_MARKER):
    return _describe_directory(os.path.dirname(path) or ".", label, relative_to)
  head = read_head(path)
  if name.endswith(".meta") or looks_like_meta_graph(path, head):
    return describe_meta_graph(path, relative_to)
  return describe_tfrecords([path], head=head)


def _config_dir(relative_to: Optional[str]) -> Optional[str]:
  """--relative-to's directory: as given, or a config file's directory."""
  if relative_to is None or "://" in relative_to or isdir(relative_to):
    return relative_to
  if exists(relative_to):
    return os.path.dirname(relative_to) or "."
  raise InspectError(f"--relative-to {relative_to}: no such directory (give the "
                     f"directory the config is kept in)")


def _is_glob(path: str) -> bool:
  return any(c in path for c in "*?[")


def _glob(pattern: str) -> List[str]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    found = tf.io.gfile.glob(pattern)
  except (tf.errors.OpError, OSError) as e:
    raise InspectError(f"{pattern}: cannot list: {first_line(e)}") from e
  return sorted(f for f in found if not f.endswith(".idx") and not isdir(f))


def _describe_directory(path: str, label: str, relative_to: Optional[str]) -> str:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  join = os.path.join
  try:
    entries = sorted(tf.io.gfile.listdir(path))
  except (tf.errors.OpError, OSError) as e:
    raise InspectError(f"cannot list directory {path}: {first_line(e)}") from e
  entries = [e.rstrip("/") for e in entries]
  if any(e in _SAVED_MODEL_FILES for e in entries):
    return describe_saved_model(path, relative_to)
  if RUN_MARKER in entries:  # <output>/_staging/<run id>
    return describe_run(run_of(path))
  if os.path.basename(path.rstrip("/")) == layout.STAGING:
    output = os.path.dirname(path.rstrip("/"))
    return "\n".join(describe_runs(output)) or f"no run staged under {path}"
  if layout.SUMMARY in entries or layout.STAGING in entries or any(
      e.startswith(layout.PREDICTIONS + "-") for e in entries):
    return describe_output(path, label)
  metas = [e for e in entries if e.endswith(".meta")]
  if "checkpoint" in entries or any(e.endswith(".index") for e in entries):
    text = describe_checkpoint(path)
    if len(metas) == 1:
      text += "\n\n" + describe_meta_graph(join(path, metas[0]), relative_to)
    elif metas:
      text += f"\n\n.meta files here (inspect one for its tensors): {', '.join(metas)}"
    return text
  if len(metas) == 1:
    return describe_meta_graph(join(path, metas[0]), relative_to)
  records = [join(path, e) for e in entries if TFRECORD_NAME.search(e)
             and not e.endswith(".idx") and not isdir(join(path, e))]
  if records:
    return describe_tfrecords(records)
  if "variables" in entries and isdir(join(path, "variables")):
    raise InspectError(f"{path}: a variables/ directory but no saved_model.pb: "
                       f"not a complete SavedModel; {EXPECTED}")
  shown = ", ".join(entries[:5]) + (f", ... ({len(entries) - 5} more)"
                                    if len(entries) > 5 else "")
  found = f"a directory holding {shown}" if entries else "an empty directory"
  raise InspectError(f"{path}: {found}; {EXPECTED} (for TFRecord files in a "
                     f"directory, give a glob: '{join(path, '*')}')")
