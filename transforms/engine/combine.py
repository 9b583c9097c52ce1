"""Combine stages: an ensemble of earlier stages' [N, C] class values, joined
in-graph, with no model and no checkpoint.

  mean           the per-class mean of the inputs that ran on the row
  weighted_mean  the same, input i weighing weights[i]
  max            the per-class maximum of the inputs that ran on the row
  vote           each input that ran votes for its argmax class; `probs` is
                 each class's share of those votes; `prediction` is the class
                 with the most votes, a tie going to the tied class with the
                 highest summed value over those inputs, then to the lowest
                 class index

Every op writes `probs` [N, C] and `prediction` [N] int64 (the argmax of
`probs` for mean, weighted_mean and max: the first class on a tie).

Gate-aware: an input whose stage did not run on a row (its `<stage>/ran` is
0) is left out of that row, never counted as its fill_value. A row on which
no input ran, or which the stage's own run_if does not pass, gets the stage's
fill_value and `ran` 0. `combine_graph` builds this in the graph;
`combine_numpy` is the same in NumPy, for tune's emulation of gates.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from tfcascade.transforms.engine.gate import format_shape
from tfcascade.transforms.engine.spec import CombineSpec, StageSpec


def _tf():
  # Imported when a graph is built: tune's emulation runs without TensorFlow.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf


def input_problem(stage: str, refs: Sequence[str], shapes: Sequence, dtypes: Sequence[str]
                  ) -> Optional[str]:
  """Why a combine stage cannot join inputs of these shapes (batch first,
  None: rank unknown) and dtype names, in one line naming every input; None
  when it can: each [N, C] floats, with one C >= 2 (a prediction is an
  argmax over classes; a binary model's [N, 1] score gives one as
  [1 - p, p])."""
  shown = ", ".join(f"{r} {format_shape(s)} {d}" for r, s, d in zip(refs, shapes, dtypes))
  classes = {tuple(s[1:]) if s is not None else None for s in shapes}
  if (len(classes) != 1 or None in classes or any(len(s) != 2 for s in shapes)
      or any(s[1] is None or s[1] < 2 for s in shapes)):
    return (f"stage '{stage}': combine inputs must each be [N, C] class values with "
            f"one known C >= 2: {shown}")
  if any(not d.startswith(("float", "bfloat")) for d in dtypes):
    return f"stage '{stage}': combine inputs must be floats: {shown}"
  return None


def _weights(combine: CombineSpec) -> Tuple[float, ...]:
  return combine.weights or (1.0,) * len(combine.inputs)


# --- in the graph ---------------------------------------------------------------


def combine_graph(stage: StageSpec, values: Sequence, present: Sequence,
                  gate_mask) -> Tuple[Dict[str, object], Optional[object]]:
  """The combine stage's outputs and its [batch] bool `ran` mask.

  Args:
    stage: the combine stage.
    values: each input's [batch, C] tensor, checked by input_problem.
    present: per input, its stage's [batch] bool ran mask, None where that
      stage runs on every row.
    gate_mask: the stage's own run_if mask, None without one.

  Returns:
    ({"probs": [batch, C], "prediction": [batch] int64}, the ran mask, or
    None when the stage runs on every row).
  """
  tf = _tf()
  combine = stage.combine
  dtype = tf.float64 if any(v.dtype == tf.float64 for v in values) else tf.float32
  values = [tf.cast(v, dtype) if v.dtype != dtype else v for v in values]
  masks = [m for m in present if m is not None]
  ran = _all(masks, tf.logical_or) if len(masks) == len(present) else None
  if gate_mask is not None:
    ran = gate_mask if ran is None else tf.logical_and(ran, gate_mask)
  if combine.op == "vote":
    probs, prediction = _vote_graph(values, present, dtype)
  else:
    probs = (_max_graph(values, present, dtype) if combine.op == "max"
             else _mean_graph(values, present, _weights(combine), dtype))
    prediction = tf.argmax(probs, axis=1, output_type=tf.int64)
  if ran is not None:  # rows the stage did not run on hold its fill_value
    probs = tf.where(ran[:, None], probs, tf.constant(stage.fill_value, dtype))
    prediction = tf.where(ran, prediction,
                          tf.constant(int(stage.fill_value), tf.int64))
  return {"probs": probs, "prediction": prediction}, ran


def _all(tensors, join):
  out = tensors[0]
  for t in tensors[1:]:
    out = join(out, t)
  return out


def _mean_graph(values, present, weights, dtype):
  """sum(w_i * v_i) / sum(w_i) over the inputs present on each row, in as few
  ops as the inputs allow (each op costs its launch on every batch)."""
  tf = _tf()
  if all(m is None for m in present):  # every input on every row: constants
    total = sum(weights)
    return tf.add_n([v if w == total else v * tf.constant(w / total, dtype)
                     for v, w in zip(values, weights)])
  terms, row_weights, constant = [], [], 0.0
  for v, m, w in zip(values, present, weights):
    if m is None:
      terms.append(v if w == 1 else v * tf.constant(w, dtype))
      constant += w
      continue
    weight = tf.cast(tf.reshape(m, [-1, 1]), dtype)
    weight = weight if w == 1 else weight * tf.constant(w, dtype)
    terms.append(v * weight)
    row_weights.append(weight)
  total = tf.add_n(row_weights) if len(row_weights) > 1 else row_weights[0]
  if constant:  # an input on every row: no row sums to 0
    return tf.add_n(terms) / (total + tf.constant(constant, dtype))
  return tf.math.divide_no_nan(tf.add_n(terms), total)


def _max_graph(values, present, dtype):
  tf = _tf()
  lowest = tf.constant(-np.inf, dtype)
  return _all([v if m is None else tf.where(m[:, None], v, lowest)
               for v, m in zip(values, present)], tf.maximum)


def _vote_graph(values, present, dtype):
  tf = _tf()
  classes = values[0].shape[1]
  votes, summed, voters = [], [], []
  for v, m in zip(values, present):
    vote = tf.one_hot(tf.argmax(v, axis=1), classes, dtype=dtype)
    if m is not None:
      weight = tf.cast(m, dtype)[:, None]
      vote, v = vote * weight, v * weight
      voters.append(weight)
    else:
      voters.append(tf.constant(1.0, dtype))
    votes.append(vote)
    summed.append(v)
  counts = _all(votes, tf.add)
  probs = tf.math.divide_no_nan(counts, _all(voters, tf.add))
  tied = tf.equal(counts, tf.reduce_max(counts, axis=1, keepdims=True))
  prediction = tf.argmax(tf.where(tied, _all(summed, tf.add), tf.constant(-np.inf, dtype)),
                         axis=1, output_type=tf.int64)
  return probs, prediction


# --- in NumPy (tune) -------------------------------------------------------------


def combine_numpy(stage: StageSpec, values: Sequence[np.ndarray],
                  present: Sequence[Optional[np.ndarray]],
                  gate_mask: Optional[np.ndarray]
                  ) -> Tuple[Dict[str, np.ndarray], Optional[np.ndarray]]:
  """combine_graph on arrays (float64): the same outputs and ran mask."""
  combine = stage.combine
  rows = len(values[0])
  values = [np.asarray(v, dtype=np.float64) for v in values]
  masks = [np.ones(rows, bool) if m is None else np.asarray(m, bool) for m in present]
  ran = (np.logical_or.reduce(masks) if all(m is not None for m in present) else None)
  if gate_mask is not None:
    ran = gate_mask if ran is None else ran & gate_mask
  stacked, mask = np.stack(values), np.stack(masks)[:, :, None]
  with np.errstate(invalid="ignore", divide="ignore"):
    if combine.op == "vote":
      votes = np.eye(stacked.shape[2])[stacked.argmax(axis=2)] * mask
      counts = votes.sum(axis=0)
      probs = counts / mask.sum(axis=0)
      tied = counts == counts.max(axis=1, keepdims=True)
      prediction = np.where(tied, (stacked * mask).sum(axis=0), -np.inf).argmax(axis=1)
    elif combine.op == "max":
      probs = np.where(mask, stacked, -np.inf).max(axis=0)
      prediction = probs.argmax(axis=1)
    else:
      weights = np.asarray(_weights(combine))[:, None, None] * mask
      probs = (stacked * weights).sum(axis=0) / weights.sum(axis=0)
      prediction = probs.argmax(axis=1)
  if ran is not None:
    probs = np.where(ran[:, None], probs, stage.fill_value)
    prediction = np.where(ran, prediction, int(stage.fill_value))
  return {"probs": probs, "prediction": prediction.astype(np.int64)}, ran
