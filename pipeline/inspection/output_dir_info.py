"""`inspect` on a tfcascade output directory: the run summary, completeness
(`_SUCCESS`) and, given a label passthrough, each stage's and the cascade's
accuracy."""

from __future__ import annotations

import collections
import glob
import json
import os
from typing import Dict, List

import numpy as np

from tfcascade.pipeline.inspection.tfrecord_info import read_all
from tfcascade.pipeline.summary_text import format_summary
from tfcascade.transforms.publishing import output_layout as layout


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
  files = sorted(tf.io.gfile.glob(os.path.join(glob.escape(path),
                                               layout.PREDICTIONS + "-*.tfrecord*")))
  if not files:
    return "\n".join(lines)
  columns = collections.defaultdict(list)
  for file in files:
    for record in read_all(file):
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
