"""`inspect` on a SavedModel directory: tags, signatures with each input and
output key's dtype, shape and tensor name, its variables (and what each
signature reads of them), and a ready-to-paste `stages:` entry."""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

from tfcascade.pipeline.inspection.inspect_io import InspectError, exists, first_line
from tfcascade.pipeline.inspection.stage_entry import (
    dtype_name, feature_guess, flow, output_name, paste_path, paths_hint, shape_text,
    stage_name)


def describe_saved_model(export_dir: str, relative_to: Optional[str] = None) -> str:
  """Tags, signatures (keys, dtypes, shapes, tensor names), variables and a
  ready-to-paste `stages:` entry per tag set (its path relative to the
  directory `relative_to`, else as given)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.python.saved_model import loader_impl  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.engine import sources  # pylint: disable=g-import-not-at-top
  try:
    saved_model = loader_impl.parse_saved_model(export_dir)
  except (IOError, OSError, tf.errors.OpError) as e:
    raise InspectError(f"{export_dir}: not a readable SavedModel: {first_line(e)}") from e
  except Exception as e:  # protobuf's DecodeError and friends
    raise InspectError(f"{export_dir}: saved_model.pb does not parse: {first_line(e)}") from e
  prefix = os.path.join(export_dir, "variables", "variables")
  checkpoint = _saved_model_variables(prefix)
  lines = [f"SavedModel {export_dir}"]
  if not saved_model.meta_graphs:
    raise InspectError(f"{export_dir}: the SavedModel holds no meta graph")
  for meta in saved_model.meta_graphs:
    tags = sorted(meta.meta_info_def.tags)
    signatures = {k: v for k, v in meta.signature_def.items()
                  if not k.startswith("__")}  # __saved_model_init_op is no signature
    version = meta.meta_info_def.tensorflow_version
    lines.append(f"  tags {tags}: {len(signatures)} signature(s), "
                 f"{len(meta.graph_def.node)} graph nodes"
                 + (f", saved by TF {version}" if version else ""))
    reads = _signature_reads(meta, checkpoint, sources)
    for key in sorted(signatures, key=lambda k: (k != "serving_default", k)):
      sig = signatures[key]
      lines.append(f"  signature {key!r}" + (f" ({sig.method_name})" if sig.method_name else "")
                   + (f": reads {reads[key]}" if key in reads else ""))
      for side, entries in (("inputs", sig.inputs), ("outputs", sig.outputs)):
        lines.append(f"    {side}:")
        for name in sorted(entries):
          info = entries[name]
          lines.append(f"      {name:20s} {dtype_name(info.dtype):9s} "
                       f"{shape_text(info.tensor_shape):16s} {info.name}")
    lines.append(_variables_line(prefix, checkpoint))
    if signatures:
      lines += _saved_model_stage(export_dir, tags, signatures, relative_to)
    else:
      lines.append("  (no signatures: give tensor names as inputs/outputs)")
  return "\n".join(lines)


def _saved_model_variables(prefix: str):
  from tfcascade.transforms.engine.checkpoints import read_checkpoint  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.engine.spec import CascadeError  # pylint: disable=g-import-not-at-top
  if not exists(prefix + ".index"):
    return None
  try:
    return read_checkpoint(prefix, stage="inspect")
  except CascadeError as e:
    return str(e).replace("stage 'inspect': ", "")


def _variables_line(prefix, checkpoint) -> str:
  if checkpoint is None:
    return "  variables: none (no variables/variables.index)"
  if isinstance(checkpoint, str):
    return f"  variables: UNREADABLE: {checkpoint}"
  object_based = "_CHECKPOINTABLE_OBJECT_GRAPH" in checkpoint.variables
  count = len([n for n in checkpoint.variables if n != "_CHECKPOINTABLE_OBJECT_GRAPH"])
  how = ("object-based, restored by the SavedModel's own saver" if object_based
         else "name-based (TF1), restored by name")
  return (f"  variables: {prefix} ({count} entries, {how}; "
          f"{checkpoint.fingerprint[:19]}...)")


def _signature_reads(meta, checkpoint, sources) -> Dict[str, str]:
  """signature key -> "N of the M restored variables" its outputs read, for
  a SavedModel restored by its own saver (what `validate` will report)."""
  if checkpoint is None or isinstance(checkpoint, str):
    return {}
  if "_CHECKPOINTABLE_OBJECT_GRAPH" not in checkpoint.variables:
    return {}
  restore = meta.saver_def.restore_op_name
  if not restore:
    return {}
  assigned = {k: v for k, v in sources.saver_restores(meta.graph_def, restore).items()
              if k != "_CHECKPOINTABLE_OBJECT_GRAPH"}
  if not assigned or not all(assigned.values()):
    return {}
  nodes = {n.name: n for n in meta.graph_def.node}
  result = {}
  for key, sig in meta.signature_def.items():
    if key.startswith("__"):
      continue
    seen, stack = set(), [t.name.split(":")[0] for t in sig.outputs.values()]
    while stack:
      name = stack.pop().lstrip("^").split(":")[0]
      if name in seen or name not in nodes:
        continue
      seen.add(name)
      stack.extend(nodes[name].input)
    read = [k for k, node in assigned.items() if node in seen]
    unread = [k for k in assigned if k not in read]
    copies = sources._copies(checkpoint, unread, read)  # pylint: disable=protected-access
    text = f"{len(read)} of the {len(assigned)} variables its saver restores"
    if copies:
      text += f" (the other {len(copies)} are byte-identical copies of those)" if len(
          copies) == len(unread) else f" ({len(copies)} more are byte-identical copies)"
    result[key] = text
  return result


def _saved_model_stage(export_dir, tags, signatures, relative_to) -> List[str]:
  key = "serving_default" if "serving_default" in signatures else sorted(signatures)[0]
  sig = signatures[key]
  lines = ["  stages: entry (paste under `stages:`; wire each input to "
           "features.<name> or <earlier stage>.<output>):",
           f"    {paths_hint(export_dir, relative_to)}",
           f"    - name: {stage_name(export_dir)}",
           f"      saved_model: {paste_path(export_dir, relative_to)}"]
  if tags != ["serve"]:
    lines.append(f"      tags: {json.dumps(tags)}")
  if key != "serving_default":
    lines.append(f"      signature: {key}")
  lines.append(f"      inputs: {flow({k: feature_guess(k) for k in sorted(sig.inputs)})}")
  lines.append(f"      outputs: {flow({output_name(k): k for k in sorted(sig.outputs)})}")
  return lines
