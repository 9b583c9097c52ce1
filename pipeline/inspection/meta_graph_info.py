"""`inspect` on a `.meta` file (a MetaGraphDef): placeholders (candidate
inputs), likely outputs, variables and a ready-to-paste `stages:` entry."""

from __future__ import annotations

import glob
import os
import re
from typing import Optional, Tuple

from tfcascade.pipeline.inspection.inspect_io import (
    InspectError, exists, first_line, isdir, read_head, what_it_looks_like)
from tfcascade.pipeline.inspection.stage_entry import (
    dtype_name, feature_guess, flow, output_name, paste_path, paths_hint, shape_text,
    stage_name)

# Ops that are never a model's output, and name scopes of saving/training.
_NOT_OUTPUTS = {"NoOp", "Assign", "AssignVariableOp", "AssignAdd", "AssignSub",
                "AssignAddVariableOp", "AssignSubVariableOp", "VarHandleOp",
                "VariableV2", "Variable", "Const", "Placeholder",
                "PlaceholderWithDefault", "SaveV2", "SaveSlices", "RestoreV2",
                "MergeV2Checkpoints", "VarIsInitializedOp", "IsVariableInitialized",
                "Assert", "Print", "PrintV2", "ShardedFilename", "StringJoin",
                "ReadVariableOp", "ScalarSummary", "HistogramSummary",
                "MergeSummary", "TensorSummaryV2", "ResourceApplyAdam", "ApplyAdam"}
_NOT_OUTPUT_SCOPES = re.compile(
    r"^(save(_\d+)?|gradients(_\d+)?|train(ing)?|Adam|optimizer|init|report_uninitialized"
    r"\w*)(/|$)|(/read$|/Read/|/Initializer/|/Assign$|/IsInitialized/)")
_NAMED_RESULT_OPS = ("Identity", "Softmax", "Sigmoid", "ArgMax")
_MAX_OUTPUTS = 15


def describe_meta_graph(path: str, relative_to: Optional[str] = None) -> str:
  """Placeholders (candidate inputs), likely outputs, variables and a
  `stages:` entry, from a `.meta` file (its paths relative to the directory
  `relative_to`, else as given)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.engine.sources import read_meta_graph_file  # pylint: disable=g-import-not-at-top
  try:
    meta = read_meta_graph_file(path)
  except ValueError as e:
    head = read_head(path) if exists(path) and not isdir(path) else b""
    looks = f" (it looks like {what_it_looks_like(head)})" if head else ""
    raise InspectError(f"{e}{looks}") from e
  version = meta.meta_info_def.tensorflow_version
  lines = [f"meta graph {path} ({len(meta.graph_def.node)} nodes"
           + (f", saved by TF {version}" if version else "") + ")"]
  graph = tf.Graph()
  try:
    with graph.as_default():
      tf.compat.v1.train.import_meta_graph(meta, clear_devices=True)
  except Exception as e:  # pylint: disable=broad-except; custom ops: describe without
    lines.append(f"  (the graph does not import here: {first_line(e)}; "
                 f"dtypes and shapes are not shown)")
    graph = None
  inputs = _candidate_inputs(meta, graph)
  outputs = _likely_outputs(meta, graph)
  lines.append("  candidate inputs (placeholders):")
  lines += [f"    {name:28s} {dtype:9s} {shape}" for name, dtype, shape in inputs] or [
      "    (none: the graph has no Placeholder)"]
  lines.append("  likely outputs (consumed by no op, or a named "
               "Identity/Softmax/Sigmoid/ArgMax):")
  lines += [f"    {name:28s} {dtype:9s} {shape}" for name, dtype, shape in outputs[:_MAX_OUTPUTS]]
  if len(outputs) > _MAX_OUTPUTS:
    lines.append(f"    ... and {len(outputs) - _MAX_OUTPUTS} more")
  if not outputs:
    lines.append("    (none found)")
  variables = _meta_variables(meta, graph)
  if variables:
    lines.append(f"  variables ({len(variables)}): " + ", ".join(
        f"{n} {s}" for n, s in variables[:8]) + (" ..." if len(variables) > 8 else ""))
  for key, sig in sorted(meta.signature_def.items()):
    lines.append(f"  signature {key!r}: inputs {sorted(sig.inputs)} -> outputs "
                 f"{sorted(sig.outputs)}")
  directory = os.path.dirname(path) or "."
  has_checkpoint = _checkpoint_in(directory)
  lines.append("  stages: entry (paste under `stages:`; keep the outputs you need, "
               "wire each input to features.<name> or <earlier stage>.<output>):")
  lines.append(f"    {paths_hint(path, relative_to)}")
  lines.append(f"    - name: {stage_name(directory)}")
  lines.append(f"      meta_graph: {paste_path(path, relative_to)}")
  lines.append(f"      checkpoint: {paste_path(directory, relative_to)}" if has_checkpoint else
               "      checkpoint: PATH/TO/CHECKPOINT   # a prefix or a directory")
  lines.append(f"      inputs: {flow({n: feature_guess(n) for n, _, _ in inputs})}")
  lines.append(f"      outputs: {flow({output_name(n): n for n, _, _ in outputs[:_MAX_OUTPUTS]})}")
  return "\n".join(lines)


def _checkpoint_in(directory: str) -> bool:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    return bool(tf.io.gfile.glob(os.path.join(glob.escape(directory), "*.index")))
  except (tf.errors.OpError, OSError):
    return False


def _tensor_facts(graph, tensor_name: str, node=None) -> Tuple[str, str]:
  """(dtype, shape) of a tensor from the imported graph, else from attrs."""
  if graph is not None:
    try:
      t = graph.get_tensor_by_name(tensor_name)
      shape = "unknown" if t.shape.rank is None else str(
          [-1 if d is None else d for d in t.shape.as_list()])
      return t.dtype.name, shape
    except (KeyError, ValueError):
      pass
  if node is not None and "dtype" in node.attr:
    shape = shape_text(node.attr["shape"].shape) if "shape" in node.attr else "?"
    return dtype_name(node.attr["dtype"].type), shape
  return "?", "?"


def _candidate_inputs(meta, graph):
  found = []
  for node in meta.graph_def.node:
    if node.op in ("Placeholder", "PlaceholderWithDefault") and not _NOT_OUTPUT_SCOPES.search(node.name):
      dtype, shape = _tensor_facts(graph, node.name + ":0", node)
      found.append((node.name + ":0", dtype, shape))
  return found


def _named_result(node) -> bool:
  """An Identity/Softmax/Sigmoid/ArgMax someone gave a name (not the op
  type TF names it by default): a result meant to be fetched."""
  last = node.name.split("/")[-1]
  return node.op in _NAMED_RESULT_OPS and not re.fullmatch(
      rf"{node.op}(_\d+)?", last, re.I)


def _likely_outputs(meta, graph):
  nodes = meta.graph_def.node
  consumed = set()
  for node in nodes:
    for ref in node.input:
      consumed.add(ref.lstrip("^").split(":")[0])
  found = []
  for node in nodes:
    if node.op in _NOT_OUTPUTS or _NOT_OUTPUT_SCOPES.search(node.name):
      continue
    if node.name in consumed and not _named_result(node):
      continue
    tensor = node.name + ":0"
    dtype, shape = _tensor_facts(graph, tensor)
    if dtype in ("resource", "variant") or (graph is not None and dtype == "?"):
      continue  # no output (an op with none), or not a value
    found.append((tensor, dtype, shape))
  return found


def _meta_variables(meta, graph):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if graph is None:
    return []
  variables = graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)
  return [(v.op.name, str(v.shape.as_list())) for v in variables]


def looks_like_meta_graph(path: str, head: bytes) -> bool:
  """A MetaGraphDef without the .meta suffix: starts with field 1
  (meta_info_def) or 2 (graph_def) and parses, with nodes."""
  if not head or head[0] not in (0x0A, 0x12):
    return False
  from tfcascade.transforms.engine.sources import read_meta_graph_file  # pylint: disable=g-import-not-at-top
  try:
    read_meta_graph_file(path)
  except ValueError:
    return False
  return True
