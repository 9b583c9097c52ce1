"""Placing one model into the shared graph under its own scope.

Three sources are supported (see spec.ModelSource): a MetaGraph + checkpoint,
a builder function + checkpoint, and a SavedModel directory. Each yields the
model's output tensors and a Saver that restores exactly that model's
variables from that model's checkpoint.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable, Dict, List, Mapping

import tensorflow as tf
from tensorflow.python.saved_model import loader_impl

from transforms.engine.checkpoints import CheckpointInfo, read_checkpoint
from transforms.engine.spec import CascadeError, StageSpec

# Checkpoints written by TF2 object-based saving (tf.train.Checkpoint,
# tf.saved_model.save) carry this key; their variable names are object paths
# that only the SavedModel's own saver knows how to map.
_OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


@dataclasses.dataclass
class PlacedModel:
  """A model placed in the graph, ready to be restored.

  Attributes:
    outputs: output name (config) -> tensor in the shared graph.
    saver: restores this model's variables; call `saver.restore(sess, prefix)`.
    checkpoint: the checkpoint `saver` restores from.
    restored: checkpoint variable name -> graph variable name.
    unused: checkpoint variables the model does not need (reported only).
  """
  outputs: Dict[str, tf.Tensor]
  saver: tf.compat.v1.train.Saver
  checkpoint: CheckpointInfo
  restored: Dict[str, str]
  unused: List[str]


def place_model(stage: StageSpec, inputs: Mapping[str, tf.Tensor]) -> PlacedModel:
  """Builds or imports `stage`'s model into the default graph.

  Args:
    stage: the stage to place.
    inputs: model input key (as in `stage.inputs`) -> tensor feeding it.

  Returns:
    The placed model.

  Raises:
    CascadeError: any wiring or checkpoint problem, naming stage and culprit.
  """
  source_type = stage.source.source_type
  if source_type == "builder":
    return _place_built(stage, inputs)
  if source_type == "meta_graph":
    meta = _read_meta_graph(stage)
    return _place_imported(stage, meta, inputs, stage.checkpoint,
                           signature=None)
  if source_type == "saved_model":
    meta, signature, variables_prefix = _read_saved_model(stage)
    return _place_imported(stage, meta, inputs,
                           stage.checkpoint or variables_prefix, signature)
  raise CascadeError(f"stage '{stage.name}': unknown model source '{source_type}'")


def _place_built(stage: StageSpec, inputs) -> PlacedModel:
  builder = load_builder(stage.source.ref, stage.name)
  checkpoint = read_checkpoint(stage.checkpoint, stage.name)
  graph = tf.compat.v1.get_default_graph()
  before = set(graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES))
  with tf.compat.v1.variable_scope(stage.scope):
    try:
      built = builder(dict(inputs))
    except CascadeError:
      raise
    except Exception as e:  # builder is user code: name it in the error.
      raise CascadeError(f"stage '{stage.name}': builder {stage.source.ref} "
                         f"failed: {type(e).__name__}: {e}") from e
  if not isinstance(built, Mapping):
    raise CascadeError(f"stage '{stage.name}': builder {stage.source.ref} must "
                       f"return a dict of output tensors, got {type(built).__name__}")
  outputs = {}
  for name, key in stage.outputs.items():
    if key not in built:
      raise CascadeError(
          f"stage '{stage.name}': output '{name}' maps to '{key}', which builder "
          f"{stage.source.ref} does not return (it returns {sorted(built)})")
    outputs[name] = tf.convert_to_tensor(built[key])
  created = [v for v in graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)
             if v not in before]
  return _with_name_saver(stage, outputs, created, checkpoint)


def load_builder(ref: str, stage: str) -> Callable:
  """Imports the "module:function" a config names (the only code it may name)."""
  module_name, _, function_name = ref.partition(":")
  if not module_name or not function_name:
    raise CascadeError(f"stage '{stage}': builder {ref!r} is not 'module:function'")
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise CascadeError(f"stage '{stage}': cannot import builder module "
                       f"'{module_name}': {e}") from e
  builder = getattr(module, function_name, None)
  if not callable(builder):
    raise CascadeError(f"stage '{stage}': module '{module_name}' has no "
                       f"function '{function_name}'")
  return builder


def _read_meta_graph(stage: StageSpec) -> tf.compat.v1.MetaGraphDef:
  path = stage.source.ref
  if not tf.io.gfile.exists(path):
    raise CascadeError(f"stage '{stage.name}': meta graph {path} does not exist")
  meta = tf.compat.v1.MetaGraphDef()
  try:
    with tf.io.gfile.GFile(path, "rb") as f:
      meta.ParseFromString(f.read())
  except Exception as e:  # protobuf raises DecodeError, a bare Exception subclass
    raise CascadeError(f"stage '{stage.name}': {path} is not a MetaGraphDef: "
                       f"{e}") from e
  return meta


def _read_saved_model(stage: StageSpec):
  export_dir = stage.source.ref
  try:
    saved_model = loader_impl.parse_saved_model(export_dir)
  except (IOError, OSError) as e:
    raise CascadeError(f"stage '{stage.name}': no SavedModel at {export_dir}: "
                       f"{e}") from e
  wanted = set(stage.source.tags)
  metas = [m for m in saved_model.meta_graphs
           if set(m.meta_info_def.tags) == wanted]
  if not metas:
    available = [sorted(m.meta_info_def.tags) for m in saved_model.meta_graphs]
    raise CascadeError(f"stage '{stage.name}': SavedModel {export_dir} has no "
                       f"meta graph tagged {sorted(wanted)} (has {available})")
  meta = tf.compat.v1.MetaGraphDef()
  meta.CopyFrom(metas[0])
  signature = meta.signature_def.get(stage.source.signature)
  prefix = export_dir.rstrip("/") + "/variables/variables"
  return meta, signature, prefix


def _tensor_name(stage, key, signature, side):
  """Maps a config key to a tensor name: "name:0" as is, else a key of the
  signature's `side` ("inputs" or "outputs")."""
  if ":" in key:
    return key
  entries = getattr(signature, side) if signature is not None else {}
  if key in entries:
    return entries[key].name
  raise CascadeError(
      f"stage '{stage.name}': {side[:-1]} '{key}' is neither a tensor name "
      f"('name:0') nor a key of signature '{stage.source.signature}' "
      f"(keys: {sorted(entries)})")


def rescope_shared_names(graph_def, scope: str) -> None:
  """Prefixes every resource variable's `shared_name` with `scope`.

  `import_meta_graph(import_scope=...)` renames nodes but not the
  `shared_name` attr, so two imports whose variables share names would point
  at ONE resource and the second restore would overwrite the first model's
  weights (docs/design.md, fact 1).
  """
  for node in graph_def.node:
    if node.op == "VarHandleOp" and node.attr["shared_name"].s:
      node.attr["shared_name"].s = (
          f"{scope}/".encode() + node.attr["shared_name"].s)


def _place_imported(stage, meta, inputs, checkpoint_path, signature) -> PlacedModel:
  checkpoint = read_checkpoint(checkpoint_path, stage.name)
  rescope_shared_names(meta.graph_def, stage.scope)
  input_map = {_tensor_name(stage, key, signature, "inputs"): tensor
               for key, tensor in inputs.items()}
  graph = tf.compat.v1.get_default_graph()
  before = set(graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES))
  try:
    embedded_saver = tf.compat.v1.train.import_meta_graph(
        meta, import_scope=stage.scope, input_map=input_map, clear_devices=True)
  except (ValueError, TypeError) as e:
    raise CascadeError(f"stage '{stage.name}': cannot wire inputs "
                       f"{sorted(input_map)} into {stage.source.ref}: {e}") from e
  outputs = {}
  for name, key in stage.outputs.items():
    tensor_name = _tensor_name(stage, key, signature, "outputs")
    try:
      outputs[name] = graph.get_tensor_by_name(f"{stage.scope}/{tensor_name}")
    except (KeyError, ValueError) as e:
      raise CascadeError(f"stage '{stage.name}': output '{name}' names tensor "
                         f"'{tensor_name}', which {stage.source.ref} does not "
                         f"have") from e
  if _OBJECT_GRAPH_KEY in checkpoint.variables:
    if embedded_saver is None:
      raise CascadeError(f"stage '{stage.name}': {stage.source.ref} uses an "
                         f"object-based checkpoint but has no saver")
    return _with_embedded_saver(stage, outputs, embedded_saver, checkpoint)
  created = [v for v in graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)
             if v not in before]
  return _with_name_saver(stage, outputs, created, checkpoint)


def _upstream_ops(roots) -> set:
  """The `roots` ops and every op they depend on, by data or control input."""
  seen, stack = set(), list(roots)
  while stack:
    op = stack.pop()
    if op in seen:
      continue
    seen.add(op)
    stack.extend(t.op for t in op.inputs)
    stack.extend(op.control_inputs)
  return seen


def _needed(variables, outputs):
  """The variables the output tensors depend on (optimizer slots are not)."""
  ancestors = _upstream_ops(t.op for t in outputs.values())
  # Variables read inside functions (TF2 graphs) are captured as call inputs,
  # so they are ancestors too.
  return [v for v in variables if v.op in ancestors]


def _with_name_saver(stage, outputs, variables, checkpoint) -> PlacedModel:
  """Maps checkpoint names to scoped variables by name; checks every one."""
  problems, var_list = [], {}
  scope_prefix = stage.scope + "/"
  for var in _needed(variables, outputs):
    graph_name = var.op.name
    bare = graph_name[len(scope_prefix):] if graph_name.startswith(scope_prefix) else graph_name
    # Checkpoints from separately trained models usually carry no scope; ones
    # saved from inside a scope carry it. Accept either.
    candidates = [bare, graph_name]
    found = next((c for c in candidates if c in checkpoint.variables), None)
    shape = tuple(var.shape.as_list())
    dtype = var.dtype.base_dtype.name
    if found is None:
      problems.append(
          f"stage '{stage.name}': variable '{graph_name}' {list(shape)} {dtype} "
          f"is missing from checkpoint {checkpoint.prefix} (looked for "
          f"{' or '.join(repr(c) for c in dict.fromkeys(candidates))})")
      continue
    ckpt_shape, ckpt_dtype = checkpoint.variables[found]
    if ckpt_shape != shape or ckpt_dtype != dtype:
      problems.append(
          f"stage '{stage.name}': variable '{graph_name}' is {list(shape)} "
          f"{dtype} in the graph but checkpoint {checkpoint.prefix} holds "
          f"'{found}' as {list(ckpt_shape)} {ckpt_dtype}")
      continue
    var_list[found] = var
  if problems:
    raise CascadeError(problems)
  if not var_list:
    raise CascadeError(f"stage '{stage.name}': the model has no variables to "
                       f"restore from {checkpoint.prefix}")
  saver = tf.compat.v1.train.Saver(var_list=var_list, name=f"{stage.scope}_restore")
  restored = {name: var.op.name for name, var in var_list.items()}
  return PlacedModel(outputs, saver, checkpoint, restored,
                     _unused(checkpoint, restored))


def _with_embedded_saver(stage, outputs, saver, checkpoint) -> PlacedModel:
  """Uses the SavedModel's own saver; checks the keys its restore op reads."""
  graph = tf.compat.v1.get_default_graph()
  restore_op = graph.get_operation_by_name(
      f"{stage.scope}/{saver.saver_def.restore_op_name}" if not
      saver.saver_def.restore_op_name.startswith(stage.scope + "/")
      else saver.saver_def.restore_op_name)
  keys = set()
  for op in _upstream_ops([restore_op]):  # every RestoreV2 feeding the restore op
    if op.type == "RestoreV2":
      names = tf.get_static_value(op.inputs[1])
      keys.update(n.decode() for n in names)
  missing = sorted(k for k in keys if k not in checkpoint.variables)
  if missing:
    raise CascadeError([f"stage '{stage.name}': checkpoint {checkpoint.prefix} "
                        f"lacks '{k}', which {stage.source.ref} restores"
                        for k in missing])
  restored = {k: k for k in keys}
  return PlacedModel(outputs, saver, checkpoint, restored,
                     _unused(checkpoint, restored))


def _unused(checkpoint, restored):
  bookkeeping = {"global_step", _OBJECT_GRAPH_KEY}
  return sorted(n for n in checkpoint.variables
                if n not in restored and n not in bookkeeping)
