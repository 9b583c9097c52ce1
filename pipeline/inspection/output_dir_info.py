"""`inspect` on a tfcascade output directory: what is published (the run
summary, completeness (`_SUCCESS`) and, given an int64 label passthrough,
each stage's and the cascade's accuracy, from TFRecord, JSONL or Parquet
predictions), then every run under `_staging/` that did not publish."""

from __future__ import annotations

import collections
import glob
import os
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np

from tfcascade.pipeline.inspection.inspect_io import (
    InspectError, exists, first_line, read_json_lines)
from tfcascade.pipeline.inspection.run_report import read_summary, summary_lines
from tfcascade.pipeline.inspection.staged_runs import describe_runs
from tfcascade.pipeline.inspection.tfrecord_info import read_all
from tfcascade.transforms.engine.spec import FINAL, LIST_KIND_DTYPES
from tfcascade.transforms.publishing import output_layout as layout

DEFAULT_LABEL = "label"  # `--label`'s default: an output without it is no mistake
# A row: feature name -> (dtype name, its values).
Row = Dict[str, Tuple[str, Sequence]]


def cascade_report(rows: Dict[str, np.ndarray], stages: List[str], label: str) -> dict:
  """Accuracy of each stage alone and of the cascade, from output columns.

  The cascade's answer for a row is the `prediction` of the last stage that
  ran on it (ungated stages run on every row): the output's own
  `final/prediction` where it has one (the engine's answer, computed
  in-graph), else worked out here from the stages' columns.

  Args:
    rows: feature name -> per-row values (`<stage>/prediction`, `<stage>/ran`,
      `final/prediction` when written, and the label).
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
  answer = rows.get(f"{FINAL}/prediction", answer)
  if answer is not None:
    report["cascade_accuracy"] = float((answer == truth).mean())
  return report


def describe_output(path: str, label: str = DEFAULT_LABEL) -> str:
  """What is published at `path`, then each run under its _staging/."""
  lines = _published_lines(path, label) or [
      f"nothing published in {path} (no {layout.SUCCESS}, {layout.SUMMARY} or "
      f"{layout.PREDICTIONS}-* files)"]
  return "\n".join(lines + describe_runs(path))


def _published_lines(path: str, label: str) -> List[str]:
  """Summary, completeness and accuracy; [] when nothing is published."""
  lines = []
  summary_path = os.path.join(path, layout.SUMMARY)
  summary = read_summary(summary_path) if exists(summary_path) else None
  if summary:
    lines += summary_lines(summary, summary_path,
                           os.path.join(path, layout.DEAD_LETTER_DIR))
  complete = exists(os.path.join(path, layout.SUCCESS))
  files = _prediction_files(path)
  if not (summary or complete or files):
    return []
  lines.append(f"complete ({layout.SUCCESS} present)" if complete
               else f"INCOMPLETE: no {layout.SUCCESS}")
  if files:
    stages = list(summary["stages"]) if summary else None
    lines += _accuracy_lines(path, files, label, stages)
  return lines


def _prediction_files(path: str) -> List[str]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  pattern = os.path.join(glob.escape(path), layout.PREDICTIONS + "-*")
  try:
    found = tf.io.gfile.glob(pattern)
  except (tf.errors.OpError, OSError) as e:
    raise InspectError(f"cannot list {path}: {first_line(e)}") from e
  return sorted(f for f in found if any(s in f for s in (".tfrecord", ".jsonl", ".parquet")))


def _accuracy_lines(path: str, files: List[str], label: str, stages) -> List[str]:
  """Each stage's and the cascade's accuracy against the label column."""
  columns, rows, passthrough = _label_columns(path, files, label)
  if not rows:
    return ["0 prediction rows: no accuracy to compute"]
  if label not in columns:
    if label != DEFAULT_LABEL:
      raise InspectError(f"--label {label}: the output {path} has no feature "
                         f"'{label}'; {_int64_features(passthrough)}")
    return [f"(no '{label}' feature in the output: accuracy not computed; "
            f"--label FEATURE names another; {_int64_features(passthrough)})"]
  lines = [f"accuracy against '{label}' on {len(columns[label]):,} rows"
           + (f" ({rows - len(columns[label]):,} rows without a '{label}' value "
              f"not counted)" if rows > len(columns[label]) else "") + ":"]
  usable = {name: values for name, values in columns.items()
            if len(values) == len(columns[label]) and None not in values}
  for name in sorted(set(columns) - set(usable)):
    lines.append(f"  ({name} is not one value in every row: left out)")
  # `final/*` columns are the cascade's answer, not a stage's.
  stages = stages or sorted({name.split("/")[0] for name in usable if "/" in name} - {FINAL})
  report = cascade_report({k: np.asarray(v) for k, v in usable.items()}, stages, label)
  scored = [stage for stage in stages if f"{stage}_share_run" in report]
  for stage in scored:
    accuracy = report[f"{stage}_accuracy_on_rows_run"]
    share = report[f"{stage}_share_run"]
    lines.append(f"  stage {stage}: ran on {share:.1%} of rows, accuracy there {accuracy:.4f}"
                 if accuracy is not None else f"  stage {stage}: ran on no rows")
  if scored and report[f"{scored[0]}_accuracy_on_rows_run"] is not None:
    lines.append(f"  {scored[0]} alone: {report[f'{scored[0]}_accuracy_on_rows_run']:.4f}; "
                 f"cascade: {report['cascade_accuracy']:.4f}")
  elif not scored:
    lines.append("  (no stage has a 'prediction' output: nothing to compare)")
  return lines


def _label_columns(path: str, files: List[str], label: str):
  """(columns, rows, passthrough): the label, `<stage>/prediction` and
  `<stage>/ran` values of the rows that have the label (None where a row has
  not exactly one value); how many rows there are; passthrough feature ->
  dtype. InspectError when the label is not one int64 per row."""
  columns = collections.defaultdict(list)
  passthrough: Dict[str, str] = {}
  rows = 0
  for row in _rows(files):
    rows += 1
    for name, (dtype, _) in row.items():
      if "/" not in name:
        passthrough.setdefault(name, dtype)
    if label not in row:
      continue
    _check_label(path, label, row[label], passthrough)
    for name, (_, values) in row.items():
      if name == label or name.endswith(("/prediction", "/ran")):
        columns[name].append(values[0] if len(values) == 1 else None)
  return columns, rows, passthrough


def _check_label(path: str, label: str, value, passthrough: Dict[str, str]) -> None:
  dtype, values = value
  if dtype != "int64":
    raise InspectError(f"--label {label}: feature '{label}' of the output {path} is "
                       f"{dtype}, not int64 (a class index); {_int64_features(passthrough)}")
  if len(values) != 1:
    raise InspectError(f"--label {label}: feature '{label}' of the output {path} holds "
                       f"{len(values)} values in a row; expected one int64 class index")


def _int64_features(passthrough: Dict[str, str]) -> str:
  ints = sorted(name for name, dtype in passthrough.items() if dtype == "int64")
  return (f"int64 passthrough features: {', '.join(ints)}" if ints else
          "the output has no int64 passthrough feature (output.passthrough "
          "copies the label from the inputs)")


def _rows(files: List[str]) -> Iterator[Row]:
  for file in files:
    name = os.path.basename(file)
    yield from (_jsonl_rows(file) if ".jsonl" in name else
                _parquet_rows(file) if name.endswith(".parquet") else _tfrecord_rows(file))


def _tfrecord_rows(file: str) -> Iterator[Row]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for index, record in enumerate(read_all(file)):
    try:
      features = tf.train.Example.FromString(record).features.feature
    except Exception as e:  # protobuf's DecodeError
      raise InspectError(f"{file}: record {index} is not a tf.train.Example: "
                         f"{first_line(e)}") from e
    row = {}
    for name, feature in features.items():
      kind = feature.WhichOneof("kind")
      row[name] = ((LIST_KIND_DTYPES[kind], getattr(feature, kind).value) if kind
                   else ("empty", ()))
    yield row


def _jsonl_rows(file: str) -> Iterator[Row]:
  """A JSONL output row: each feature a list (transforms/writing/encoders.py)."""
  for entry in read_json_lines(file):
    yield {name: _json_value(values) for name, values in entry.items()}


def _json_value(values) -> Tuple[str, Sequence]:
  values = values if isinstance(values, list) else [values]
  first = values[0] if values else None
  if first is None:
    return "empty", values
  if isinstance(first, bool):
    return "bool", values
  if isinstance(first, int):
    return "int64", values
  if isinstance(first, float):
    return "float32", values
  return "string", values  # text, or {"b64": ...} for other bytes


def _parquet_rows(file: str) -> Iterator[Row]:
  """A Parquet output row: a column per feature, scalars or fixed-size lists
  (transforms/writing/parquet_columns.py), read a row group at a time."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  try:
    # pyarrow's own file systems (local, gs://, s3://): TF's GFile lacks
    # what pyarrow asks of a Python file.
    with pq.ParquetFile(file) as source:
      dtypes = {field.name: _arrow_dtype(field.type) for field in source.schema_arrow}
      for batch in source.iter_batches():
        for row in batch.to_pylist():
          yield {name: (dtypes[name], value if isinstance(value, list) else (value,))
                 for name, value in row.items()}
  except (OSError, pa.ArrowException) as e:
    raise InspectError(f"cannot read {file}: {first_line(e)}") from e


def _arrow_dtype(arrow_type) -> str:
  """"int64", "float32", "bool", "string": a column's (or its lists') values."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  if pa.types.is_fixed_size_list(arrow_type) or pa.types.is_list(arrow_type):
    arrow_type = arrow_type.value_type
  if pa.types.is_boolean(arrow_type):
    return "bool"
  if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type):
    return np.dtype(arrow_type.to_pandas_dtype()).name
  return "string"  # binary: TF strings
