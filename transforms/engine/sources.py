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

from tfcascade.transforms.engine.checkpoints import CheckpointInfo, read_checkpoint
from tfcascade.transforms.engine.spec import ENGINE_SCOPE, CascadeError, StageSpec

# Checkpoints written by TF2 object-based saving (tf.train.Checkpoint,
# tf.saved_model.save) carry this key; their variable names are object paths
# that only the SavedModel's own saver knows how to map.
_OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
# Checkpoint entries that are bookkeeping, never a model's weights.
_BOOKKEEPING = {"global_step", _OBJECT_GRAPH_KEY,
                "save_counter/.ATTRIBUTES/VARIABLE_VALUE"}

# How a stage's variables are restored (PlacedModel.restored_by): the words
# the plan, `validate`, `run` and run_summary.json all use.
RESTORED_BY_NAME = "name (one Saver mapping checkpoint names into the stage's scope)"
RESTORED_BY_SAVED_MODEL = "the SavedModel's own saver"
_VARIABLE_OPS = ("VarHandleOp", "VariableV2", "Variable")


@dataclasses.dataclass
class PlacedModel:
  """A model placed in the graph, ready to be restored.

  Attributes:
    outputs: output name (config) -> tensor in the shared graph.
    saver: restores this model's variables; call `saver.restore(sess, prefix)`.
    checkpoint: the checkpoint `saver` restores from.
    restored: checkpoint variable name -> graph variable name ("" where the
      SavedModel's saver does not say which variable it fills), every
      variable `saver` restores.
    unused: checkpoint variables the outputs do not read, restored or not
      (reported only); byte-identical copies of variables they read are not
      counted here but in `copies`.
    restored_by: RESTORED_BY_NAME or RESTORED_BY_SAVED_MODEL.
    read: the checkpoint variables the outputs read (a subset of `restored`).
    copies: restored checkpoint variables the outputs do not read that hold
      the same bytes as one they do (shape, dtype, size and CRC32C equal) ->
      that one; a Keras 3 `model.export()` saves every weight twice.
  """
  outputs: Dict[str, tf.Tensor]
  saver: tf.compat.v1.train.Saver
  checkpoint: CheckpointInfo
  restored: Dict[str, str]
  unused: List[str]
  restored_by: str = ""
  read: List[str] = dataclasses.field(default_factory=list)
  copies: Dict[str, str] = dataclasses.field(default_factory=dict)


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
  try:
    return read_meta_graph_file(path)
  except ValueError as e:
    raise CascadeError(f"stage '{stage.name}': {e}") from e


def read_meta_graph_file(path: str) -> tf.compat.v1.MetaGraphDef:
  """Reads a `.meta` file (a serialized MetaGraphDef).

  Raises:
    ValueError: one line naming the path and the problem (missing, a
      directory, unreadable, not a MetaGraphDef).
  """
  if not tf.io.gfile.exists(path):
    raise ValueError(f"meta graph {path} does not exist")
  if tf.io.gfile.isdir(path):
    raise ValueError(f"meta graph {path} is a directory; expected a .meta file "
                     f"(a directory holding saved_model.pb is a saved_model:)")
  meta = tf.compat.v1.MetaGraphDef()
  try:
    with tf.io.gfile.GFile(path, "rb") as f:
      data = f.read()
  except (tf.errors.OpError, OSError) as e:
    raise ValueError(f"cannot read meta graph {path}: "
                     f"{getattr(e, 'message', None) or e}") from e
  try:
    meta.ParseFromString(data)
  except Exception as e:  # protobuf raises DecodeError, a bare Exception subclass
    raise ValueError(f"{path} is not a MetaGraphDef (.meta file): "
                     f"{str(e) or type(e).__name__}") from e
  if not meta.graph_def.node:
    raise ValueError(f"{path} is not a MetaGraphDef (.meta file): it holds no "
                     f"graph ({len(data):,} bytes)")
  return meta


def _read_saved_model(stage: StageSpec):
  export_dir = stage.source.ref
  if tf.io.gfile.exists(export_dir) and not tf.io.gfile.isdir(export_dir):
    hint = (" (a Keras model file: export it with model.export(DIR) and give DIR)"
            if export_dir.endswith((".keras", ".h5")) else "")
    raise CascadeError(f"stage '{stage.name}': saved_model {export_dir} is a file; "
                       f"expected an export directory holding saved_model.pb{hint}")
  try:
    saved_model = loader_impl.parse_saved_model(export_dir)
  except (IOError, OSError, tf.errors.OpError) as e:
    raise CascadeError(f"stage '{stage.name}': no SavedModel at {export_dir}: "
                       f"{_first_line(e)}") from e
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
    return _with_embedded_saver(stage, meta, outputs, embedded_saver, checkpoint)
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
  saver = tf.compat.v1.train.Saver(var_list=var_list,
                                  name=f"{ENGINE_SCOPE}/stage/{stage.name}/restore")
  restored = {name: var.op.name for name, var in var_list.items()}
  # The Saver covers exactly the variables the outputs read.
  return PlacedModel(outputs, saver, checkpoint, restored,
                     _unused(checkpoint, restored), RESTORED_BY_NAME,
                     sorted(restored))


def _with_embedded_saver(stage, meta, outputs, saver, checkpoint) -> PlacedModel:
  """Uses the SavedModel's own saver; checks the keys its restore op reads.

  A TF2 export's saver is a function call (`__inference__traced_restore_*`):
  its RestoreV2 and the AssignVariableOps that take each value to a variable
  are inside the function, so the graph is followed into the function
  library. Which of the restored variables the outputs read decides what is
  reported as unused.
  """
  restore_name = saver.saver_def.restore_op_name
  scope_prefix = stage.scope + "/"
  if restore_name.startswith(scope_prefix):
    restore_name = restore_name[len(scope_prefix):]
  assigned = saver_restores(meta.graph_def, restore_name)  # key -> variable node
  if not assigned:  # a saver we cannot follow: it restores the whole checkpoint
    assigned = dict.fromkeys(checkpoint.variables, "")
  missing = sorted(k for k in assigned if k not in checkpoint.variables)
  if missing:
    raise CascadeError([f"stage '{stage.name}': checkpoint {checkpoint.prefix} "
                        f"lacks '{k}', which {stage.source.ref} restores"
                        for k in missing])
  read_nodes = {op.name[len(scope_prefix):]
                for op in _upstream_ops(t.op for t in outputs.values())
                if op.type in _VARIABLE_OPS and op.name.startswith(scope_prefix)}
  weights = {k: v for k, v in assigned.items() if k not in _BOOKKEEPING}
  # A key whose variable the saver does not name is counted as read: we
  # cannot tell, so we do not call it unused.
  read = sorted(k for k, node in weights.items() if not node or node in read_nodes)
  restored = {k: f"{scope_prefix}{node}" if node else "" for k, node in weights.items()}
  copies = _copies(checkpoint, [k for k in weights if k not in read], read)
  unused = [n for n in _unused(checkpoint, dict.fromkeys(read)) if n not in copies]
  return PlacedModel(outputs, saver, checkpoint, restored, unused,
                     RESTORED_BY_SAVED_MODEL, read, copies)


def _copies(checkpoint, unread, read) -> Dict[str, str]:
  """unread key -> a read key holding the same bytes (shape, dtype, CRC32C)."""
  def identity(key):
    shape, dtype = checkpoint.variables[key]
    checksum = checkpoint.checksums.get(key)
    return (shape, dtype, checksum) if checksum else None
  by_identity = {}
  for key in read:
    if key in checkpoint.variables and identity(key):
      by_identity.setdefault(identity(key), key)
  return {key: by_identity[identity(key)] for key in unread
          if key in checkpoint.variables and identity(key) in by_identity}


def saver_restores(graph_def, restore_op_name: str) -> Dict[str, str]:
  """What a saver's restore op restores: checkpoint key -> the name of the
  graph's variable node it is assigned to ("" when that cannot be traced).

  Follows the restore op's inputs through the graph and into called
  functions (TF2 savers), binding each function argument to the graph node
  passed for it; RestoreV2's i-th output is key i of its `tensor_names`.
  """
  library = {f.signature.name: f for f in graph_def.library.function}
  found: Dict[str, str] = {}
  graph = {n.name: n for n in graph_def.node}
  root = restore_op_name.split(":")[0].lstrip("^")
  _trace_restore(graph, {}, [root] if root in graph else [], library, found,
                 in_function=False, depth=0)
  return found


def _trace_restore(nodes, binding, roots, library, found, in_function, depth):
  """Walks `nodes` upstream from `roots` (all nodes when roots is None)."""
  if depth > 8:  # call chains this deep are not savers; stop quietly
    return

  def node_of(ref):
    return ref.lstrip("^").split(":")[0]

  def resolve(ref):
    """("var", outer variable node) | ("key", checkpoint key) | None."""
    for _ in range(64):  # through Identity chains
      name = node_of(ref)
      if name in binding:
        return binding[name]
      node = nodes.get(name)
      if node is None:
        return None
      if node.op in _VARIABLE_OPS and not in_function:
        return ("var", node.name)
      if node.op == "RestoreV2":
        index = int(ref.split(":")[-1]) if ref.count(":") >= 1 else 0
        names = _restore_names(nodes, node)
        return ("key", names[index]) if index < len(names) else None
      if node.op in ("Identity", "IdentityN") and node.input:
        ref = node.input[0]
        continue
      return None
    return None

  pending = list(nodes) if roots is None else list(roots)
  seen = set()
  while pending:
    name = node_of(pending.pop())
    if name in seen or name not in nodes:
      continue
    seen.add(name)
    node = nodes[name]
    if roots is not None:
      pending.extend(node.input)
    if node.op == "RestoreV2":
      for key in _restore_names(nodes, node):
        found.setdefault(key, "")
    elif node.op in ("AssignVariableOp", "Assign") and len(node.input) >= 2:
      target, value = resolve(node.input[0]), resolve(node.input[1])
      if value and value[0] == "key" and target and target[0] == "var":
        found[value[1]] = target[1]
    function = (node.attr["f"].func.name if "f" in node.attr else
                node.op if node.op in library else None)
    if function in library:
      body = library[function]
      args = [a.name for a in body.signature.input_arg]
      data_inputs = [i for i in node.input if not i.startswith("^")]
      inner = {arg: resolve(ref) for arg, ref in zip(args, data_inputs)}
      _trace_restore({n.name: n for n in body.node_def}, inner, None, library,
                     found, in_function=True, depth=depth + 1)


def _restore_names(nodes, restore_node) -> List[str]:
  """The `tensor_names` a RestoreV2 node reads (a Const input)."""
  const = nodes.get(restore_node.input[1].lstrip("^").split(":")[0]) if len(
      restore_node.input) > 1 else None
  if const is None or const.op != "Const":
    return []
  return [n.decode() for n in tf.make_ndarray(const.attr["value"].tensor).ravel()]


def _first_line(error: Exception) -> str:
  text = str(getattr(error, "message", None) or error).strip()
  return text.splitlines()[0] if text else type(error).__name__


def _unused(checkpoint, used):
  return sorted(n for n in checkpoint.variables
                if n not in used and n not in _BOOKKEEPING)
