"""The cascade's final answer, computed in-graph for every row.

`final/<output>` is `<stage>/<output>` of the last stage, in config order,
that ran on the row, among the "answering" stages: those that have every
final output. `final/stage` (int64) says which: that stage's position in the
config's `stages` list, from 0 (each stage's `position` in
run_summary.json); -1 on a row no answering stage ran on, whose `final/<output>` values
are then the first answering stage's (its fill_value). A number, not the
name: every row of a batch then encodes to the same width, which keeps
TFRecord encoding on its vectorized path (names of different lengths would
cost microseconds per row).

Which outputs: the config's `output.final` list (the stages having all of
them answer; they must agree in dtype and per-row shape), or by default
`prediction` and those of `probs` and `logits` that every answering stage
has with one dtype and per-row shape, the answering stages being those with
a `prediction` of the dtype and shape of the last one's (a stage without
one, e.g. a feature extractor or a model of logits only, does not answer).
No stage with a `prediction`: no final columns unless `output.final` names
some.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

from tfcascade.transforms.engine.gate import format_shape
from tfcascade.transforms.engine.spec import FINAL, CascadeError

# The outputs that are a stage's answer, taken as final outputs by default.
DEFAULT_OUTPUTS = ("prediction", "probs", "logits")
# final/<STAGE_OUTPUT>: the position of the stage that answered the row.
STAGE_OUTPUT = "stage"
# final/stage on a row no answering stage ran on.
NO_STAGE = -1

# An output's (per-row shape, dtype name), as the graph fixes them.
Signature = Tuple[Optional[Tuple], str]


def final_outputs(chosen: Optional[Sequence[str]],
                  signatures: Mapping[str, Mapping[str, Signature]]
                  ) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
  """(final output names, answering stages in order) for a cascade.

  Args:
    chosen: the config's output.final; None: the default.
    signatures: stage -> output -> Signature, stages in config order.

  Raises:
    CascadeError: a chosen output no stage has, or whose dtype or shape
      differs between the stages that answer.
  """
  if chosen is not None:
    return _chosen(tuple(chosen), signatures)
  key = DEFAULT_OUTPUTS[0]
  having = [s for s, outs in signatures.items() if key in outs]
  if not having:
    return (), ()
  answering = tuple(s for s in having if signatures[s][key] == signatures[having[-1]][key])
  names = tuple(n for n in DEFAULT_OUTPUTS
                if all(n in signatures[s] for s in answering)
                and len({signatures[s][n] for s in answering}) == 1)
  return names, answering


def _chosen(names, signatures):
  if not names:
    return (), ()
  if STAGE_OUTPUT in names:
    raise CascadeError(f"output.final: '{STAGE_OUTPUT}' is not a stage output: "
                       f"{FINAL}/{STAGE_OUTPUT} is always written with the others")
  answering = tuple(s for s, outs in signatures.items() if all(n in outs for n in names))
  if not answering:
    have = "; ".join(f"{s}: {', '.join(outs)}" for s, outs in signatures.items())
    raise CascadeError(f"output.final {list(names)}: no stage has all of these "
                       f"outputs (outputs: {have})")
  for name in names:
    found = {signatures[s][name] for s in answering}
    if len(found) > 1:
      shown = ", ".join(f"{s}.{name} {_shown(signatures[s][name])}" for s in answering)
      raise CascadeError(f"output.final '{name}': the stages answering differ in "
                         f"shape or dtype: {shown}")
  return names, answering


def _shown(signature: Signature) -> str:
  shape, dtype = signature
  return f"{format_shape(None if shape is None else (None,) + shape)} {dtype}"


def signature(tensor) -> Signature:
  """A tensor's Signature (per-row shape, None when the rank is unknown)."""
  shape = tensor.shape.as_list() if tensor.shape.rank is not None else None
  return (None if shape is None else tuple(shape[1:]), tensor.dtype.name)


def _per_row(tf, mask, value):
  """`mask` shaped to select whole rows of `value` ([N] -> [N, 1, ...])."""
  if value.shape.rank is not None:
    return tf.reshape(mask, [-1] + [1] * (value.shape.rank - 1))
  return tf.reshape(mask, tf.concat([[-1], tf.ones([tf.rank(value) - 1], tf.int32)], 0))


def final_graph(names: Sequence[str], answering: Sequence[str],
                outputs: Mapping[str, Mapping[str, object]],
                ran: Mapping[str, object], batch) -> Dict[str, object]:
  """"final/<output>" and "final/stage" -> tensor.

  Args:
    names, answering: as final_outputs returns them (names not empty).
    outputs: stage -> output -> its full-batch tensor, every stage in config
      order.
    ran: stage -> its [batch] bool ran mask, None for a stage on every row.
    batch: the batch size (int64 scalar).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  positions = {name: i for i, name in enumerate(outputs)}
  answer, stage = {}, None
  for name in answering:
    mask = ran.get(name)
    label = tf.constant(positions[name], tf.int64)
    if mask is None or stage is None:  # the first, or one on every row
      answer = {n: outputs[name][n] for n in names}
      stage = (tf.fill([batch], label) if mask is None
               else tf.where(mask, label, tf.constant(NO_STAGE, tf.int64)))
      continue
    for n in names:
      value = outputs[name][n]
      answer[n] = tf.where(_per_row(tf, mask, value), value, answer[n])
    stage = tf.where(mask, label, stage)
  # The stage's own tensor where one stage answers every row: fetched twice,
  # computed once (the callable returns both without a copy).
  fetches = {f"{FINAL}/{n}": t for n, t in answer.items()}
  fetches[f"{FINAL}/{STAGE_OUTPUT}"] = stage
  return fetches
