"""`tfcascade inspect`: describe any model source, TFRecord files or an output dir.

What `describe` understands, tried in this order:
  - a SavedModel directory (saved_model.pb): tags, signatures with each input
    and output key's dtype, shape and tensor name, its variables, and a
    ready-to-paste `stages:` entry;
  - a `.meta` file: placeholders (candidate inputs), likely outputs, variables
    and a `stages:` entry;
  - a checkpoint prefix or directory: variables, shapes, dtypes, fingerprint
    (and the directory's `.meta` file when it has one);
  - a tfcascade output directory: summary, completeness, accuracy;
  - TFRecord file(s), a path or a glob: record counts and the feature schema.
Anything else is one InspectError line saying what was found and what was
expected.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import re
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from tfcascade.pipeline.summary_text import format_summary
from tfcascade.transforms.publishing import output_layout as layout
from tfcascade.transforms.engine.spec import LIST_KIND_DTYPES

_SCHEMA_SAMPLE = 1000
EXPECTED = ("expected a SavedModel directory, a .meta file, a checkpoint prefix or "
            "directory, TFRecord file(s) (a path or glob) or a tfcascade output "
            "directory")
_SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
_TFRECORD_NAME = re.compile(r"\.(tfrecords?|tfr)(\.gz|\.gzip)?$|\.tfrecord-|part-", re.I)
_CHECKPOINT_FILE = re.compile(r"^(.+)\.(index|data-\d+-of-\d+)$")


class InspectError(ValueError):
  """The path is none of the things inspect understands, or is unreadable."""


def describe(path: str, label: str = "label") -> str:
  """Returns a human-readable description of `path` (see the module doc).

  Raises:
    InspectError: one line naming the path, what was found there and what
      was expected.
  """
  if _is_glob(path):
    files = _glob(path)
    if not files:
      raise InspectError(f"{path}: no file matches; {EXPECTED}")
    return describe_tfrecords(files)
  if not _exists(path):
    if _exists(path + ".index"):
      return describe_checkpoint(path)
    raise InspectError(f"{path}: no such file or directory; {EXPECTED}")
  if _isdir(path):
    return _describe_directory(path, label)
  name = os.path.basename(path)
  if name in _SAVED_MODEL_FILES:
    return describe_saved_model(os.path.dirname(path) or ".")
  if _CHECKPOINT_FILE.match(name) or _exists(path + ".index"):
    return describe_checkpoint(path)
  if name == "checkpoint":  # the checkpoint state file
    return describe_checkpoint(os.path.dirname(path) or ".")
  if name == layout.SUMMARY:
    return describe_output(os.path.dirname(path) or ".", label)
  head = _head(path)
  if name.endswith(".meta") or _looks_like_meta_graph(path, head):
    return describe_meta_graph(path)
  return describe_tfrecords([path], head=head)


def _is_glob(path: str) -> bool:
  return any(c in path for c in "*?[")


def _glob(pattern: str) -> List[str]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    found = tf.io.gfile.glob(pattern)
  except (tf.errors.OpError, OSError) as e:
    raise InspectError(f"{pattern}: cannot list: {_first_line(e)}") from e
  return sorted(f for f in found if not f.endswith(".idx") and not _isdir(f))


def _exists(path: str) -> bool:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    return tf.io.gfile.exists(path)
  except (tf.errors.OpError, OSError):
    return False


def _isdir(path: str) -> bool:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    return tf.io.gfile.isdir(path)
  except (tf.errors.OpError, OSError):
    return False


def _first_line(error: BaseException) -> str:
  text = str(getattr(error, "message", None) or getattr(error, "strerror", None)
             or error).strip()
  return text.splitlines()[0] if text else type(error).__name__


def _head(path: str, size: int = 64) -> bytes:
  """The first bytes of a file; InspectError when it cannot be read."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    with tf.io.gfile.GFile(path, "rb") as f:
      return f.read(size)
  except (tf.errors.OpError, OSError) as e:
    raise InspectError(f"cannot read {path}: {_first_line(e)}") from e


def what_it_looks_like(head: bytes) -> str:
  """A few words on what a file's first bytes suggest it is."""
  signatures = [
      (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
      (b"GIF8", "a GIF image"), (b"%PDF", "a PDF document"),
      (b"\x89HDF", "an HDF5 file (a Keras .h5 model? export it with "
                   "model.export(DIR) and use DIR as saved_model:)"),
      (b"PK\x03\x04", "a zip archive (a Keras .keras file? export it with "
                      "model.export(DIR) and use DIR as saved_model:)"),
      (b"\x1f\x8b", "gzip data that is not a TFRecord stream"),
  ]
  for magic, what in signatures:
    if head.startswith(magic):
      return what
  if not head:
    return "an empty file"
  try:
    text = head.decode("utf-8")
  except UnicodeDecodeError:
    return "binary data"
  first = text.strip().splitlines()[0][:40] if text.strip() else ""
  return f"a text file (starting {first!r})" if first else "a blank text file"


def _looks_like_meta_graph(path: str, head: bytes) -> bool:
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


def _describe_directory(path: str, label: str) -> str:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  join = os.path.join
  try:
    entries = sorted(tf.io.gfile.listdir(path))
  except (tf.errors.OpError, OSError) as e:
    raise InspectError(f"cannot list directory {path}: {_first_line(e)}") from e
  entries = [e.rstrip("/") for e in entries]
  if any(e in _SAVED_MODEL_FILES for e in entries):
    return describe_saved_model(path)
  if layout.SUMMARY in entries or any(e.startswith(layout.PREDICTIONS + "-") for e in entries):
    return describe_output(path, label)
  metas = [e for e in entries if e.endswith(".meta")]
  if "checkpoint" in entries or any(e.endswith(".index") for e in entries):
    text = describe_checkpoint(path)
    if len(metas) == 1:
      text += "\n\n" + describe_meta_graph(join(path, metas[0]))
    elif metas:
      text += f"\n\n.meta files here (inspect one for its tensors): {', '.join(metas)}"
    return text
  if len(metas) == 1:
    return describe_meta_graph(join(path, metas[0]))
  records = [join(path, e) for e in entries if _TFRECORD_NAME.search(e)
             and not e.endswith(".idx") and not _isdir(join(path, e))]
  if records:
    return describe_tfrecords(records)
  if "variables" in entries and _isdir(join(path, "variables")):
    raise InspectError(f"{path}: a variables/ directory but no saved_model.pb: "
                       f"not a complete SavedModel; {EXPECTED}")
  shown = ", ".join(entries[:5]) + (f", ... ({len(entries) - 5} more)"
                                    if len(entries) > 5 else "")
  found = f"a directory holding {shown}" if entries else "an empty directory"
  raise InspectError(f"{path}: {found}; {EXPECTED} (for TFRecord files in a "
                     f"directory, give a glob: '{join(path, '*')}')")


# --- checkpoints ----------------------------------------------------------------

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


# --- SavedModels ----------------------------------------------------------------

def _dtype_name(enum: int) -> str:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    return tf.as_dtype(enum).name
  except TypeError:
    return f"dtype#{enum}"


def _shape_text(shape_proto) -> str:
  if shape_proto.unknown_rank:
    return "unknown"
  return str([d.size for d in shape_proto.dim])


def describe_saved_model(export_dir: str) -> str:
  """Tags, signatures (keys, dtypes, shapes, tensor names), variables and a
  ready-to-paste `stages:` entry per tag set."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.python.saved_model import loader_impl  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.engine import sources  # pylint: disable=g-import-not-at-top
  try:
    saved_model = loader_impl.parse_saved_model(export_dir)
  except (IOError, OSError, tf.errors.OpError) as e:
    raise InspectError(f"{export_dir}: not a readable SavedModel: {_first_line(e)}") from e
  except Exception as e:  # protobuf's DecodeError and friends
    raise InspectError(f"{export_dir}: saved_model.pb does not parse: {_first_line(e)}") from e
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
          lines.append(f"      {name:20s} {_dtype_name(info.dtype):9s} "
                       f"{_shape_text(info.tensor_shape):16s} {info.name}")
    lines.append(_variables_line(prefix, checkpoint))
    if signatures:
      lines += _saved_model_stage(export_dir, tags, signatures)
    else:
      lines.append("  (no signatures: give tensor names as inputs/outputs)")
  return "\n".join(lines)


def _saved_model_variables(prefix: str):
  from tfcascade.transforms.engine.checkpoints import read_checkpoint  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.engine.spec import CascadeError  # pylint: disable=g-import-not-at-top
  if not _exists(prefix + ".index"):
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


def _stage_name(path: str) -> str:
  """A stage name from a model path: its directory name, made a valid name."""
  parts = [p for p in os.path.normpath(path).split(os.sep) if p and p != "."]
  name = parts[-1] if parts else "model"
  if name.isdigit() and len(parts) > 1:  # export/<version>/
    name = parts[-2]
  name = re.sub(r"\W", "_", name)
  return name if re.match(r"^[A-Za-z_]", name) else f"m_{name}"


def _yaml_key(key: str) -> str:
  return key if re.fullmatch(r"[A-Za-z_][\w.]*", key) else json.dumps(key)


def _flow(mapping: Dict[str, str]) -> str:
  return "{" + ", ".join(f"{_yaml_key(k)}: {_yaml_key(v)}" for k, v in mapping.items()) + "}"


def _feature_guess(key: str) -> str:
  return "features." + re.sub(r"\W", "_", key.split(":")[0].split("/")[-1])


def _saved_model_stage(export_dir, tags, signatures) -> List[str]:
  key = "serving_default" if "serving_default" in signatures else sorted(signatures)[0]
  sig = signatures[key]
  lines = ["  stages: entry (paste under `stages:`; wire each input to "
           "features.<name> or <earlier stage>.<output>):",
           f"    - name: {_stage_name(export_dir)}",
           f"      saved_model: {export_dir}"]
  if tags != ["serve"]:
    lines.append(f"      tags: {json.dumps(tags)}")
  if key != "serving_default":
    lines.append(f"      signature: {key}")
  lines.append(f"      inputs: {_flow({k: _feature_guess(k) for k in sorted(sig.inputs)})}")
  lines.append(f"      outputs: {_flow({_output_name(k): k for k in sorted(sig.outputs)})}")
  return lines


def _output_name(key: str) -> str:
  name = re.sub(r"\W", "_", key.split(":")[0].split("/")[-1])
  return name if re.match(r"^[A-Za-z_]", name) else f"out_{name}"


# --- meta graphs --------------------------------------------------------------------

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


def describe_meta_graph(path: str) -> str:
  """Placeholders (candidate inputs), likely outputs, variables and a
  `stages:` entry, from a `.meta` file."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.engine.sources import read_meta_graph_file  # pylint: disable=g-import-not-at-top
  try:
    meta = read_meta_graph_file(path)
  except ValueError as e:
    head = _head(path) if _exists(path) and not _isdir(path) else b""
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
    lines.append(f"  (the graph does not import here: {_first_line(e)}; "
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
  lines.append(f"    - name: {_stage_name(directory)}")
  lines.append(f"      meta_graph: {path}")
  lines.append(f"      checkpoint: {directory}" if has_checkpoint else
               "      checkpoint: PATH/TO/CHECKPOINT   # a prefix or a directory")
  lines.append(f"      inputs: {_flow({n: _feature_guess(n) for n, _, _ in inputs})}")
  lines.append(f"      outputs: {_flow({_output_name(n): n for n, _, _ in outputs[:_MAX_OUTPUTS]})}")
  return "\n".join(lines)


def _checkpoint_in(directory: str) -> bool:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    return bool(tf.io.gfile.glob(os.path.join(directory, "*.index")))
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
    shape = _shape_text(node.attr["shape"].shape) if "shape" in node.attr else "?"
    return _dtype_name(node.attr["dtype"].type), shape
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


# --- TFRecord files -----------------------------------------------------------------

def read_records(path: str, *, compression: str = "auto", limit: Optional[int] = None,
                 max_record_bytes: Optional[int] = None) -> Iterator[bytes]:
  """The records of one TFRecord file (the first `limit`), every CRC checked.

  Shared by `inspect` and `validate`'s sample; any Beam FileSystems path.

  Raises:
    transforms.tfrecord_framing.CorruptRecordError: damaged framing.
  """
  from tfcascade.transforms.formats import tfrecord_framing as framing  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.reading.record_ranges import open_raw  # pylint: disable=g-import-not-at-top
  chunks = framing.read_record_chunks(
      path, compression=compression, chunk_size=min(limit or 1024, 1024),
      max_record_bytes=max_record_bytes or framing.DEFAULT_MAX_RECORD_BYTES,
      open_fn=open_raw)
  records = (record for chunk in chunks for _, record in chunk)
  return itertools.islice(records, limit)


def _read_all(path: str, head: Optional[bytes] = None) -> Iterator[bytes]:
  from tfcascade.transforms.formats import tfrecord_framing as framing  # pylint: disable=g-import-not-at-top
  try:
    yield from read_records(path)
  except framing.CorruptRecordError as e:
    if e.index == 0 and e.offset == 0:  # not even one record: a wrong kind of file
      head = head if head is not None else _head(path)
      raise InspectError(f"{path} is not a TFRecord file ({e.reason} at its first "
                         f"record; it looks like {what_it_looks_like(head)}); "
                         f"{EXPECTED}") from e
    raise InspectError(str(e)) from e
  except InspectError:
    raise
  except Exception as e:  # pylint: disable=broad-except; IO errors of any filesystem
    raise InspectError(f"cannot read {path}: {_first_line(e)}") from e


def describe_tfrecords(files: List[str], head: Optional[bytes] = None) -> str:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  lines, total = [], 0
  list_kinds: Dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  lengths: Dict[str, set] = collections.defaultdict(set)
  sampled = 0
  for path in files:
    count = 0
    for record in _read_all(path, head if len(files) == 1 else None):
      count += 1
      if sampled < _SCHEMA_SAMPLE:
        sampled += 1
        try:
          example = tf.train.Example.FromString(record)
        except Exception:  # a record that is not an Example: say so, go on
          list_kinds["<not a tf.train.Example>"]["bytes"] += 1
          continue
        for name, feature in example.features.feature.items():
          list_kind = feature.WhichOneof("kind") or "empty"
          list_kinds[name][list_kind] += 1
          lengths[name].add(len(getattr(feature, list_kind).value) if list_kind != "empty" else 0)
    total += count
    lines.append(f"  {path}: {count:,} records")
  lines.insert(0, f"{len(files)} file(s), {total:,} records")
  lines.append(f"inferred features (from the first {sampled:,} records):")
  for name in sorted(list_kinds):
    list_kind = list_kinds[name].most_common(1)[0][0]
    seen = sorted(lengths[name])
    shape = ([] if seen == [1] else [seen[0]]) if len(seen) == 1 else f"varying {seen[0]}..{seen[-1]}"
    present = sum(list_kinds[name].values())
    lines.append(f"  {name}: {{dtype: {LIST_KIND_DTYPES.get(list_kind, list_kind)}, shape: {shape}}}"
                 + ("" if present == sampled else f"  (present in {present} of {sampled})"))
  return "\n".join(lines)


def cascade_report(rows: Dict[str, np.ndarray], stages: List[str], label: str) -> dict:
  """Accuracy of each stage alone and of the cascade, from output columns.

  The cascade's answer for a row is the `prediction` of the last stage that
  ran on it (ungated stages run on every row).

  Args:
    rows: feature name -> per-row values (`<stage>/prediction`, `<stage>/ran`,
      and the label).
    stages: stage names in cascade order.
    label: the column holding the true class.
  """
  truth = rows[label]
  answer = None
  report = {"rows": int(len(truth))}
  for stage in stages:
    pred = rows.get(f"{stage}/prediction")
    if pred is None:
      continue
    ran = rows.get(f"{stage}/ran", np.ones(len(truth), dtype=np.int64)).astype(bool)
    answer = pred.copy() if answer is None else np.where(ran, pred, answer)
    report[f"{stage}_share_run"] = float(ran.mean()) if len(ran) else 0.0
    report[f"{stage}_accuracy_on_rows_run"] = (
        float((pred[ran] == truth[ran]).mean()) if ran.any() else None)
  if answer is not None:
    report["cascade_accuracy"] = float((answer == truth).mean())
  return report


def describe_output(path: str, label: str) -> str:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  lines = []
  summary = None
  summary_path = os.path.join(path, layout.SUMMARY)
  if tf.io.gfile.exists(summary_path):
    with tf.io.gfile.GFile(summary_path) as f:
      summary = json.load(f)
    lines.append(format_summary(summary))
  complete = tf.io.gfile.exists(os.path.join(path, layout.SUCCESS))
  lines.append(f"complete ({layout.SUCCESS} present)" if complete
               else f"INCOMPLETE: no {layout.SUCCESS}")
  files = sorted(tf.io.gfile.glob(os.path.join(path, layout.PREDICTIONS + "-*.tfrecord*")))
  if not files:
    return "\n".join(lines)
  columns = collections.defaultdict(list)
  for file in files:
    for record in _read_all(file):
      feature = tf.train.Example.FromString(record).features.feature
      for name in feature:
        if name == label or name.endswith("/prediction") or name.endswith("/ran"):
          columns[name].append(feature[name].int64_list.value[0])
  if label not in columns:
    lines.append(f"(no '{label}' passthrough feature: accuracy not computed)")
    return "\n".join(lines)
  stages = (list(summary["stages"]) if summary else
            sorted({n.split("/")[0] for n in columns if "/" in n}))
  report = cascade_report({k: np.asarray(v) for k, v in columns.items()}, stages, label)
  lines.append("accuracy against '%s' on %s rows:" % (label, f"{report['rows']:,}"))
  for stage in stages:
    if f"{stage}_share_run" in report:
      acc = report[f"{stage}_accuracy_on_rows_run"]
      lines.append(f"  stage {stage}: ran on {report[f'{stage}_share_run']:.1%} of rows, "
                   f"accuracy there {acc:.4f}" if acc is not None else
                   f"  stage {stage}: ran on no rows")
  if "cascade_accuracy" in report:
    first = stages[0]
    lines.append(f"  {first} alone: {report[f'{first}_accuracy_on_rows_run']:.4f}; "
                 f"cascade: {report['cascade_accuracy']:.4f}")
  return "\n".join(lines)
