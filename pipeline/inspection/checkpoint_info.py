"""`inspect` on a checkpoint (a prefix, a directory, an .index/.data file):
variables with shapes and dtypes, fingerprint and global step."""

from __future__ import annotations

from tfcascade.pipeline.inspection.inspect_io import InspectError


def describe_checkpoint(path: str) -> str:
  from tfcascade.transforms.engine.checkpoints import read_checkpoint  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.engine.spec import CascadeError  # pylint: disable=g-import-not-at-top
  try:
    info = read_checkpoint(path, stage="inspect")
  except CascadeError as e:
    raise InspectError(str(e).replace("stage 'inspect': ", "")) from e
  object_based = "_CHECKPOINTABLE_OBJECT_GRAPH" in info.variables
  lines = [f"checkpoint {info.prefix}", f"  fingerprint {info.fingerprint}",
           f"  global_step {info.global_step}",
           f"  {len(info.variables)} variables"
           + (" (object-based: a TF2 tf.train.Checkpoint or SavedModel)"
              if object_based else "") + ":"]
  for name, (shape, dtype) in sorted(info.variables.items()):
    lines.append(f"    {name:40s} {str(list(shape)):16s} {dtype}")
  return "\n".join(lines)
