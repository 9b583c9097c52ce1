"""Finding checkpoints, reading their variable tables and fingerprinting them."""

from __future__ import annotations

import dataclasses
import hashlib
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
    CascadeError: naming the stage and path when no checkpoint is there.
  """
  if tf.io.gfile.exists(path + ".index"):
    return path
  match = re.fullmatch(r"(.+)\.(index|data-\d+-of-\d+)", path)
  if match and tf.io.gfile.exists(match.group(1) + ".index"):
    return match.group(1)  # a file of the checkpoint given: its prefix
  if tf.io.gfile.isdir(path):
    try:
      latest = tf.train.latest_checkpoint(path)
    except Exception:  # pylint: disable=broad-except; a damaged `checkpoint` file
      latest = None
    if latest and tf.io.gfile.exists(latest + ".index"):
      return latest
    indexes = sorted(tf.io.gfile.glob(path.rstrip("/") + "/*.index"))
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
    index = f.read()
  digest = hashlib.sha256(index).hexdigest()
  try:
    checksums = {name: (entry.size, entry.crc32c)
                 for name, entry in index_entries(index)}
  except (ValueError, IndexError, struct.error):  # an index format we do not know
    checksums = {}
  return CheckpointInfo(prefix, variables, f"sha256:{digest}", step, checksums)


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
