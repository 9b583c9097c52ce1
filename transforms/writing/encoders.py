"""Turning a batch of engine outputs into output bytes (TFRecord or JSONL), or
into an Arrow record batch (Parquet: parquet_columns).

A whole batch becomes ONE blob of ready-to-append file bytes, so the sink
writes a few large strings instead of one element per row (docs/design.md,
fact 11); for Parquet the blob is the batch, which
parquet_writer.ParquetShardWriter gathers into row groups.
Each encoder returns (records in the blob, blob): the count is of what it
produced, not of what it was asked for, so a row lost in encoding fails the
run's accounting instead of vanishing.
"""

from __future__ import annotations

import base64
import json
from typing import Dict, List, Optional, Tuple

import numpy as np

from tfcascade.transforms.formats import example_codec
from tfcascade.transforms.formats.tfrecord_framing import frame_matrix, frame_records
from tfcascade.transforms.writing.parquet_columns import encode_parquet


def encode_tfrecord(columns: Dict[str, np.ndarray], num_rows: int,
                    raw: Optional[Dict[str, List[Optional[bytes]]]]
                    ) -> Tuple[int, bytes]:
  """Framed `tf.train.Example`s: passthrough features + `<stage>/<output>`.

  Args:
    columns: feature name -> [rows, ...] array: `<stage>/<output>` columns and
      passthrough features the engine parsed.
    num_rows: rows to encode.
    raw: passthrough feature name -> per-row serialized `Feature` bytes copied
      from the input records (None where a record lacks it), or None.
  """
  examples = example_codec.encode_examples_packed(columns, num_rows, raw_features=raw)
  if isinstance(examples, np.ndarray):  # one width: framed with numpy
    return len(examples), frame_matrix(examples)
  return len(examples), frame_records(examples)


def _json_bytes(value: bytes):
  try:
    return value.decode("utf-8")
  except UnicodeDecodeError:
    return {"b64": base64.b64encode(value).decode("ascii")}


def _json_value(feature) -> list:
  list_kind = feature.WhichOneof("kind")  # "bytes_list", "float_list", ...
  if list_kind == "bytes_list":
    return [_json_bytes(b) for b in feature.bytes_list.value]
  return list(getattr(feature, list_kind).value) if list_kind else []


def encode_jsonl(columns: Dict[str, np.ndarray], num_rows: int,
                 raw: Optional[Dict[str, List[Optional[bytes]]]]
                 ) -> Tuple[int, bytes]:
  """One JSON object per row: passthrough values and outputs, as lists.

  Args: as for encode_tfrecord.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top; workers have TF loaded
  lines: List[str] = []
  for row in range(num_rows):
    obj = {}
    for name, values in (raw or {}).items():
      if values[row] is not None:
        obj[name] = _json_value(tf.train.Feature.FromString(values[row]))
    for name, value in columns.items():
      values = np.asarray(value[row]).reshape(-1).tolist()
      obj[name] = [_json_bytes(v) if isinstance(v, bytes) else v for v in values]
    lines.append(json.dumps(obj, separators=(",", ":")))
  return len(lines), ("\n".join(lines) + "\n").encode("utf-8") if lines else b""


ENCODERS = {"tfrecord": encode_tfrecord, "jsonl": encode_jsonl, "parquet": encode_parquet}
