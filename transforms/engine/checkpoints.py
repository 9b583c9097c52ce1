"""Finding checkpoints, reading their variable tables and fingerprinting them."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import posixpath
import re
import struct
from typing import Dict, Iterator, Optional, Tuple

import tensorflow as tf

from tfcascade.transforms.engine.spec import CascadeError


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
  """A resolved checkpoint and its variable table.

  Attributes:
    prefix: the checkpoint prefix (path without .index/.data-*).
    variables: checkpoint variable name -> (shape, dtype name).
    fingerprint: "sha256:<hex of the .index file>"; the index holds a CRC of
      every tensor, so it changes whenever any weight does.
    global_step: the `global_step` value when the checkpoint has one.
    checksums: checkpoint variable name -> (byte size, CRC32C of its bytes),
      read from the .index; two entries with equal shape, dtype and checksum
      hold the same values. Empty when the index could not be parsed.
  """
  prefix: str
  variables: Dict[str, Tuple[Tuple[int, ...], str]]
  fingerprint: str
  global_step: Optional[int]
  checksums: Dict[str, Tuple[int, int]] = dataclasses.field(default_factory=dict)


def resolve_prefix(path: str, stage: str) -> str:
  """Returns the checkpoint prefix for `path` (a prefix or a directory).

  Raises:
    CascadeError: naming the stage and path when no checkpoint is there, or
      when TensorFlow cannot read the one there (check_readable_prefix).
  """
  return check_readable_prefix(_find_prefix(path, stage), stage)


# TensorFlow finds a checkpoint by globbing "<prefix>.index" (Saver.restore,
# tf.train.load_checkpoint and the RestoreV2 op alike), then reads the prefix
# as written. In a glob, `[...]` is a character class and `\` an escape, so a
# prefix holding them can miss its own files: TF then reports the checkpoint
# missing. `*` and `?` match themselves: such prefixes read fine.
_TF_GLOB_CHARS = "[*?\\"


def check_readable_prefix(prefix: str, stage: str) -> str:
  """`prefix` if TensorFlow can restore it; else one CascadeError that names
  the path and says what to do (no TF "not found" error from a worker).

  Exactly TF's test: its glob of "<prefix>.index" finds something.
  """
  if not any(c in prefix for c in _TF_GLOB_CHARS):
    return prefix
  try:
    found = tf.io.gfile.glob(prefix + ".index")
  except tf.errors.OpError:
    found = []
  if found:
    return prefix
  raise CascadeError(
      f"stage '{stage}': TensorFlow cannot read the checkpoint {prefix}: it looks "
      f"checkpoints up as a glob pattern, and the '[...]' or '\\' in this path "
      f"stops the pattern matching the checkpoint's own files. Rename the folder, "
      f"or name it through a symlink whose path has no '[' or '\\' "
      f"(spaces, non-ASCII letters, '*' and '?' are fine)")


def _find_prefix(path: str, stage: str) -> str:
  if tf.io.gfile.exists(path + ".index"):
    return path
  match = re.fullmatch(r"(.+)\.(index|data-\d+-of-\d+)", path)
  if match and tf.io.gfile.exists(match.group(1) + ".index"):
    return match.group(1)  # a file of the checkpoint given: its prefix
  if tf.io.gfile.isdir(path):
    try:
      state = tf.train.get_checkpoint_state(path)  # latest_checkpoint, less its glob
      latest = state.model_checkpoint_path if state else None
    except Exception:  # pylint: disable=broad-except; a damaged `checkpoint` file
      latest = None
    if latest:
      # Savers write absolute paths: in a folder copied, moved or reached by
      # a symlink, the latest checkpoint is the one of that name HERE.
      here = f"{path.rstrip('/')}/{latest.rstrip('/').rsplit('/', 1)[-1]}"
      for candidate in (here, latest):
        if tf.io.gfile.exists(candidate + ".index"):
          return candidate
    indexes = sorted(f"{path.rstrip('/')}/{name}" for name in tf.io.gfile.listdir(path)
                     if name.endswith(".index"))  # listed: the path is no glob
    if len(indexes) == 1:  # no `checkpoint` state file, one checkpoint: use it
      return indexes[0][:-len(".index")]
    raise CascadeError(
        f"stage '{stage}': directory {path} holds no checkpoint "
        f"(no 'checkpoint' state file and {len(indexes)} *.index files)")
  if tf.io.gfile.exists(path):
    raise CascadeError(f"stage '{stage}': checkpoint {path} is a file, not a "
                       f"checkpoint prefix (no {path}.index) or a directory")
  raise CascadeError(f"stage '{stage}': no checkpoint at {path} "
                     f"(neither {path}.index nor a directory exists)")


def read_checkpoint(path: str, stage: str) -> CheckpointInfo:
  """Resolves and reads a checkpoint's variable table.

  Raises:
    CascadeError: the checkpoint is missing or unreadable, naming the file.
  """
  prefix = resolve_prefix(path, stage)
  with tf.io.gfile.GFile(prefix + ".index", "rb") as f:
    index = f.read()
  try:
    entries = dict(index_entries(index))
  except (ValueError, IndexError, struct.error):  # an index format we do not know
    entries = {}
  short = _short_data_file(prefix, entries)
  if short:
    raise CascadeError(f"stage '{stage}': checkpoint {prefix} is damaged: {short}")
  try:
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    step = (int(reader.get_tensor("global_step"))
            if "global_step" in shapes else None)
  except (tf.errors.OpError, ValueError, IndexError) as e:  # IndexError: a short read
    raise CascadeError(f"stage '{stage}': cannot read checkpoint {prefix}: "
                       f"{_first_line(e)}") from e
  variables = {name: (tuple(shapes[name]), dtypes[name].name)
               for name in shapes}
  digest = hashlib.sha256(index).hexdigest()
  checksums = {name: (entry.size, entry.crc32c) for name, entry in entries.items()}
  return CheckpointInfo(prefix, variables, f"sha256:{digest}", step, checksums)


def _short_data_file(prefix: str, entries: Dict[str, object]) -> Optional[str]:
  """Which `.data-*` file is missing or shorter than its index says, or None
  (TF itself says only "Read less bytes than requested", naming no file)."""
  folder, name = posixpath.split(prefix) if "://" in prefix else os.path.split(prefix)
  shards = {}
  for entry in entries.values():
    shards[entry.shard_id] = max(shards.get(entry.shard_id, 0), entry.offset + entry.size)
  files = {int(m.group(1)): m.group(0) for m in (
      re.fullmatch(re.escape(name) + r"\.data-(\d+)-of-\d+", f)
      for f in tf.io.gfile.listdir(folder or ".")) if m}
  for shard, needed in sorted(shards.items()):
    if shard not in files:
      return f"its data file for shard {shard} is missing (the index lists {needed:,} bytes in it)"
    path = f"{folder}/{files[shard]}" if folder else files[shard]
    size = tf.io.gfile.stat(path).length
    if size < needed:
      return (f"{path} is truncated: {size:,} bytes, its index needs {needed:,} "
              f"(copied while it was written, or cut short?)")
  return None


# --- the .index file: a TF table (LevelDB format) of BundleEntryProto --------

_TABLE_MAGIC = 0xdb4775248b80fb57
_FOOTER_BYTES = 48  # two BlockHandles padded to 40 bytes, then the magic


def index_entries(index: bytes) -> Iterator[Tuple[str, object]]:
  """(variable name, BundleEntryProto) of each tensor in a checkpoint .index.

  The index is a table (tensorflow/core/lib/io/table_builder.h) written
  uncompressed by the bundle writer; each entry records its tensor's dtype,
  shape, byte size and CRC32C.

  Raises:
    ValueError: not an uncompressed TF table.
  """
  from tensorflow.core.protobuf import tensor_bundle_pb2  # pylint: disable=g-import-not-at-top
  if len(index) < _FOOTER_BYTES or struct.unpack_from("<Q", index, len(index) - 8)[0] != _TABLE_MAGIC:
    raise ValueError("not a TF table (no magic number)")
  footer = index[-_FOOTER_BYTES:]
  _, pos = _varint(footer, 0)  # the metaindex handle: unused
  _, pos = _varint(footer, pos)
  index_offset, pos = _varint(footer, pos)
  index_size, pos = _varint(footer, pos)
  for _, handle in _table_block(index, index_offset, index_size):
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    for key, value in _table_block(index, offset, size):
      if key:  # the "" key holds the BundleHeaderProto
        entry = tensor_bundle_pb2.BundleEntryProto()
        entry.ParseFromString(value)
        yield key.decode("utf-8", "replace"), entry


def _varint(buf: bytes, pos: int) -> Tuple[int, int]:
  result = shift = 0
  while True:
    byte = buf[pos]
    pos += 1
    result |= (byte & 0x7F) << shift
    if not byte & 0x80:
      return result, pos
    shift += 7


def _table_block(data: bytes, offset: int, size: int) -> Iterator[Tuple[bytes, bytes]]:
  """The (key, value) entries of one table block (prefix-compressed keys)."""
  if offset + size + 5 > len(data) or data[offset + size] != 0:
    raise ValueError("compressed or truncated table block")
  block = data[offset:offset + size]
  restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
  end = len(block) - 4 * (restarts + 1)
  pos, key = 0, b""
  while pos < end:
    shared, pos = _varint(block, pos)
    non_shared, pos = _varint(block, pos)
    value_length, pos = _varint(block, pos)
    key = key[:shared] + block[pos:pos + non_shared]
    pos += non_shared
    yield key, block[pos:pos + value_length]
    pos += value_length


def _first_line(error: Exception) -> str:
  return str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
