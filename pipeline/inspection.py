"""`tfcascade inspect`: describe a checkpoint, TFRecord files or an output dir."""

from __future__ import annotations

import collections
import itertools
import json
import os
from typing import Dict, Iterator, List, Optional

import numpy as np

from pipeline.summary_text import format_summary
from transforms import output_layout as layout
from transforms.engine.spec import LIST_KIND_DTYPES

_SCHEMA_SAMPLE = 1000


class InspectError(ValueError):
  """The path is none of the things inspect understands, or is unreadable."""


def describe(path: str, label: str = "label") -> str:
  """Returns a human-readable description of `path`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if tf.io.gfile.exists(os.path.join(path, layout.SUMMARY)) or tf.io.gfile.glob(
      os.path.join(path, layout.PREDICTIONS + "-*")):
    return describe_output(path, label)
  if tf.io.gfile.exists(path + ".index") or (
      tf.io.gfile.isdir(path) and tf.io.gfile.glob(os.path.join(path, "*.index"))):
    return describe_checkpoint(path)
  files = sorted(f for f in tf.io.gfile.glob(path) if not f.endswith(".idx"))
  if not files:
    raise InspectError(f"{path}: no checkpoint, output directory or file matches")
  return describe_tfrecords(files)


def describe_checkpoint(path: str) -> str:
  from transforms.engine.checkpoints import read_checkpoint  # pylint: disable=g-import-not-at-top
  from transforms.engine.spec import CascadeError  # pylint: disable=g-import-not-at-top
  try:
    info = read_checkpoint(path, stage="inspect")
  except CascadeError as e:
    raise InspectError(str(e)) from e
  lines = [f"checkpoint {info.prefix}", f"  fingerprint {info.fingerprint}",
           f"  global_step {info.global_step}", f"  {len(info.variables)} variables:"]
  for name, (shape, dtype) in sorted(info.variables.items()):
    lines.append(f"    {name:40s} {str(list(shape)):16s} {dtype}")
  return "\n".join(lines)


def read_records(path: str, *, compression: str = "auto", limit: Optional[int] = None,
                 max_record_bytes: Optional[int] = None) -> Iterator[bytes]:
  """The records of one TFRecord file (the first `limit`), every CRC checked.

  Shared by `inspect` and `validate`'s sample; any Beam FileSystems path.

  Raises:
    transforms.tfrecord_framing.CorruptRecordError: damaged framing.
  """
  from transforms import tfrecord_framing as framing  # pylint: disable=g-import-not-at-top
  from transforms.read import open_raw  # pylint: disable=g-import-not-at-top
  chunks = framing.read_record_chunks(
      path, compression=compression, chunk_size=min(limit or 1024, 1024),
      max_record_bytes=max_record_bytes or framing.DEFAULT_MAX_RECORD_BYTES,
      open_fn=open_raw)
  records = (record for chunk in chunks for _, record in chunk)
  return itertools.islice(records, limit)


def _read_all(path: str) -> Iterator[bytes]:
  from transforms import tfrecord_framing as framing  # pylint: disable=g-import-not-at-top
  try:
    yield from read_records(path)
  except framing.CorruptRecordError as e:
    raise InspectError(str(e)) from e


def describe_tfrecords(files: List[str]) -> str:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  lines, total = [], 0
  list_kinds: Dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  lengths: Dict[str, set] = collections.defaultdict(set)
  sampled = 0
  for path in files:
    count = 0
    for record in _read_all(path):
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
