"""Turning a batch of engine outputs into output bytes (TFRecord or JSONL).

A whole batch becomes ONE blob of ready-to-append file bytes, so the sink
writes a few large strings instead of one element per row (DESIGN.md fact 11).
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Dict, List, Sequence

import numpy as np

from transforms import example_codec
from transforms.tfrecord_framing import masked_crc32c


def _masked_crc(data: bytes) -> bytes:
  return struct.pack("<I", masked_crc32c(data))


def frame_records(records: Sequence[bytes]) -> bytes:
  """TFRecord-frames records: length, length CRC, data, data CRC each."""
  parts = []
  for record in records:
    header = struct.pack("<Q", len(record))
    parts += (header, _masked_crc(header), record, _masked_crc(record))
  return b"".join(parts)


def encode_tfrecord(outputs: Dict[str, np.ndarray], records: Sequence[bytes],
                    passthrough: Sequence[str]) -> bytes:
  """Framed `tf.train.Example`s: passthrough features + `<stage>/<output>`.

  Args:
    outputs: feature name -> [rows, ...] array: `<stage>/<output>` columns and
      passthrough features the engine parsed.
    records: the rows' input records, aligned with `outputs`.
    passthrough: feature names copied byte for byte from `records`.
  """
  raw = None
  if passthrough:
    raw = {name: [] for name in passthrough}
    for record in records:
      found = example_codec.raw_feature_bytes(record, passthrough)
      for name in passthrough:
        raw[name].append(found.get(name))
  return frame_records(example_codec.encode_examples(outputs, len(records),
                                                     raw_features=raw))


def _json_bytes(value: bytes):
  try:
    return value.decode("utf-8")
  except UnicodeDecodeError:
    return {"b64": base64.b64encode(value).decode("ascii")}


def _json_value(feature) -> list:
  kind = feature.WhichOneof("kind")
  if kind == "bytes_list":
    return [_json_bytes(b) for b in feature.bytes_list.value]
  return list(getattr(feature, kind).value) if kind else []


def encode_jsonl(outputs: Dict[str, np.ndarray], records: Sequence[bytes],
                 passthrough: Sequence[str]) -> bytes:
  """One JSON object per row: passthrough values and outputs, as lists.

  Args: as for encode_tfrecord.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top; workers have TF loaded
  lines: List[str] = []
  for row, record in enumerate(records):
    obj = {}
    if passthrough:
      features = tf.train.Example.FromString(record).features.feature
      for name in passthrough:
        if name in features:
          obj[name] = _json_value(features[name])
    for name, value in outputs.items():
      values = np.asarray(value[row]).reshape(-1).tolist()
      obj[name] = [_json_bytes(v) if isinstance(v, bytes) else v for v in values]
    lines.append(json.dumps(obj, separators=(",", ":")))
  return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""


ENCODERS = {"tfrecord": encode_tfrecord, "jsonl": encode_jsonl}
