"""A batch of engine outputs -> one Arrow record batch (`output.format: parquet`).

Column names are the TFRecord feature keys (`id`, `a/logits`, `b/ran`), in
the order the engine returns them: passthrough features, then each stage's
outputs. A column's type follows from its numpy dtype and per-row shape,
which the graph fixes, so every batch of a run, and every file, has one
schema:

- a per-row scalar is a scalar column; any other fixed shape is a
  fixed_size_list of the row's values flattened in row-major order (in
  Parquet a LIST: one level, which BigQuery loads as an ARRAY); a shape of
  rank 2 or more is kept in the field's metadata as `shape` (JSON);
- floats keep their width (float16 becomes float32: few readers take
  Parquet's FLOAT16), integers and bool keep their type, `<stage>/ran` (the
  engine's int64 0/1) is bool;
- TF strings are `binary`: TF's strings are bytes, nothing guarantees UTF-8,
  and a column's type cannot depend on the rows of one batch (cast in the
  reader: DuckDB `decode(id)`, BigQuery `SAFE_CONVERT_BYTES_TO_STRING(id)`);
- nothing is nullable: every row holds every value (passthrough features
  are required ones, parsed in-graph: pipeline/config.py).

The numeric columns reach Arrow without a copy: the conversion is a few
calls per column, not per row.
"""

from __future__ import annotations

import json
from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa

RAN_SUFFIX = "/ran"  # the engine's `<stage>/ran` output of a gated stage


def encode_parquet(columns: Dict[str, np.ndarray], num_rows: int,
                   raw: Optional[Dict[str, List[Optional[bytes]]]]
                   ) -> Tuple[int, pa.RecordBatch]:
  """Output columns -> (rows in the batch, the batch).

  Args: as for encoders.encode_tfrecord (`num_rows` is every column's
  length: the count returned is of the rows the batch holds); `raw` must
  be empty: a Parquet column needs the declared type of a feature, which
  copied raw bytes do not carry (the config refuses such passthrough
  features with parquet).
  """
  del num_rows  # the batch counts its own rows
  if raw:
    raise ValueError(f"format parquet cannot copy passthrough features {sorted(raw)} "
                     f"raw: declare them under input.features, without a default")
  fields, arrays = [], []
  for name, values in columns.items():
    field, array = _column(name, np.asarray(values))
    fields.append(field)
    arrays.append(array)
  batch = pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))
  return batch.num_rows, batch


def _column(name: str, values: np.ndarray) -> Tuple[pa.Field, pa.Array]:
  per_row = values.shape[1:]
  flat = _flat_values(name, values.reshape(-1))
  if not per_row:
    return pa.field(name, flat.type, nullable=False), flat
  size = int(np.prod(per_row))
  list_type = pa.list_(pa.field("element", flat.type, nullable=False), size)
  metadata = {"shape": json.dumps(list(per_row))} if len(per_row) > 1 else None
  return (pa.field(name, list_type, nullable=False, metadata=metadata),
          pa.FixedSizeListArray.from_arrays(flat, type=list_type))


def _flat_values(name: str, flat: np.ndarray) -> pa.Array:
  kind = flat.dtype.kind
  if name.endswith(RAN_SUFFIX):
    return pa.array(flat != 0)
  if kind == "f":
    return pa.array(flat.astype(np.float32) if flat.dtype.itemsize < 4 else flat)
  if kind in "iub":
    return pa.array(flat)
  if kind in "OS":  # TF strings: bytes objects
    return pa.array(flat, type=pa.binary())
  raise ValueError(f"output column {name!r}: dtype {flat.dtype} has no Parquet "
                   f"column type here; use format tfrecord or jsonl")
