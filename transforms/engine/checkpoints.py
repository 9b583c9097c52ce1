"""Finding checkpoints, reading their variable tables and fingerprinting them."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Dict, Optional, Tuple

import tensorflow as tf

from transforms.engine.spec import CascadeError


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
  """A resolved checkpoint and its variable table.

  Attributes:
    prefix: the checkpoint prefix (path without .index/.data-*).
    variables: checkpoint variable name -> (shape, dtype name).
    fingerprint: "sha256:<hex of the .index file>"; the index holds a CRC of
      every tensor, so it changes whenever any weight does.
    global_step: the `global_step` value when the checkpoint has one.
  """
  prefix: str
  variables: Dict[str, Tuple[Tuple[int, ...], str]]
  fingerprint: str
  global_step: Optional[int]


def resolve_prefix(path: str, stage: str) -> str:
  """Returns the checkpoint prefix for `path` (a prefix or a directory).

  Raises:
    CascadeError: naming the stage and path when no checkpoint is there.
  """
  if tf.io.gfile.exists(path + ".index"):
    return path
  if tf.io.gfile.isdir(path):
    latest = tf.train.latest_checkpoint(path)
    if latest and tf.io.gfile.exists(latest + ".index"):
      return latest
    indexes = sorted(tf.io.gfile.glob(path.rstrip("/") + "/*.index"))
    if len(indexes) == 1:  # no `checkpoint` state file, one checkpoint: use it
      return indexes[0][:-len(".index")]
    raise CascadeError(
        f"stage '{stage}': directory {path} holds no checkpoint "
        f"(no 'checkpoint' state file and {len(indexes)} *.index files)")
  raise CascadeError(f"stage '{stage}': no checkpoint at {path} "
                     f"(neither {path}.index nor a directory exists)")


def read_checkpoint(path: str, stage: str) -> CheckpointInfo:
  """Resolves and reads a checkpoint's variable table.

  Raises:
    CascadeError: the checkpoint is missing or unreadable, naming the file.
  """
  prefix = resolve_prefix(path, stage)
  try:
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    step = (int(reader.get_tensor("global_step"))
            if "global_step" in shapes else None)
  except (tf.errors.OpError, ValueError) as e:
    raise CascadeError(f"stage '{stage}': cannot read checkpoint {prefix}: "
                       f"{_first_line(e)}") from e
  variables = {name: (tuple(shapes[name]), dtypes[name].name)
               for name in shapes}
  with tf.io.gfile.GFile(prefix + ".index", "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()
  return CheckpointInfo(prefix, variables, f"sha256:{digest}", step)


def _first_line(error: Exception) -> str:
  return str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
