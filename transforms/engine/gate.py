"""The `run_if` gate grammar: `<stage>.<output> <op> <number>`, or a measure
of a class-probability output: `<measure>(<stage>.<output>) <op> <number>`.

Parsed with a regular expression and never evaluated as Python, so a config
cannot run code through a gate. MEASURES is the one table of measures: the
graph computes them with its TensorFlow functions (cascade.py), `tune`
emulates the gate with its NumPy ones, so both read a gate alike.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Callable, Optional, Sequence

import numpy as np

from tfcascade.transforms.engine.spec import CascadeError, StageSpec

# The one table of gate operators: symbol -> name of the comparison, which is
# the same in tf.math (cascade.py builds the in-graph comparison from it) and
# in NumPy.
OPERATORS = {
    "<": "less", "<=": "less_equal", ">": "greater",
    ">=": "greater_equal", "==": "equal", "!=": "not_equal",
}


def _tf():
  # Imported when a graph is built: tune's emulation and the grammar run
  # without TensorFlow.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf


def _top_two_np(rows):
  ordered = np.sort(rows, axis=1)
  return ordered[:, -1] - ordered[:, -2]


def _entropy_np(rows):
  # 0 * log 0 = 0, as tf.math.xlogy has it.
  with np.errstate(divide="ignore", invalid="ignore"):
    terms = np.where(rows == 0, 0.0, rows * np.log(rows))
  return -terms.sum(axis=1)


def _top_two_tf(rows):
  top = _tf().math.top_k(rows, k=2).values
  return top[:, 0] - top[:, 1]


@dataclasses.dataclass(frozen=True)
class Measure:
  """One number per row from a row of class values ([N, C] -> [N]).

  Attributes:
    numpy: the measure on a float64 [N, C] array (tune's emulation).
    graph: the same on a float64 [N, C] tensor (the in-graph gate).
    uncertain: the operator that selects the rows the model is unsure of
      (the rows a next stage should see), None for a measure that is no
      confidence (argmax); tune compares the measures that have one.
  """
  numpy: Callable[[np.ndarray], np.ndarray]
  graph: Callable
  uncertain: Optional[str]


# The one table of measures: name -> Measure. Each is computed in float64 on
# the row as the model gives it (entropy expects probabilities: a row
# summing to 1 with no negative value).
MEASURES = {
    # The top-1 value.
    "max": Measure(lambda rows: rows.max(axis=1),
                   lambda rows: _tf().reduce_max(rows, axis=1), "<"),
    # Top-1 minus top-2.
    "margin": Measure(_top_two_np, _top_two_tf, "<"),
    # -sum p * ln(p), natural log; not finite on a row with a negative value.
    "entropy": Measure(_entropy_np,
                       lambda rows: -_tf().reduce_sum(_tf().math.xlogy(rows, rows), axis=1),
                       ">"),
    # The index of the top-1 value (the first on a tie): a class id.
    "argmax": Measure(lambda rows: rows.argmax(axis=1),
                      lambda rows: _tf().argmax(rows, axis=1), None),
}
# The measures that say how sure a model is, in the order tune compares them.
CONFIDENCE_MEASURES = tuple(n for n, m in MEASURES.items() if m.uncertain)

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_GATE = re.compile(
    r"""^\s*
    (?:(?P<measure>""" + _NAME + r""")\s*\(\s*)?
    (?P<stage>""" + _NAME + r""")\.(?P<output>""" + _NAME + r""")
    (?(measure)\s*\))
    \s*(?P<op>""" +
    # Longest first, so that "<=" is not read as "<".
    "|".join(map(re.escape, sorted(OPERATORS, key=len, reverse=True))) +
    r""")\s*
    (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
    \s*$""", re.VERBOSE)


@dataclasses.dataclass(frozen=True)
class Gate:
  """A parsed gate: rows where `<operand> <op> <threshold>` run, the operand
  being `<stage>.<output>` or `<measure>(<stage>.<output>)`."""
  stage: str
  output: str
  op: str
  threshold: float
  measure: Optional[str] = None

  @property
  def reference(self) -> str:
    """The output the gate reads: `<stage>.<output>`."""
    return f"{self.stage}.{self.output}"

  @property
  def operand(self) -> str:
    """What the gate compares: the output, or the measure of it."""
    return f"{self.measure}({self.reference})" if self.measure else self.reference

  def __str__(self):
    return f"{self.operand} {self.op} {self.threshold:g}"


def parse_gate(text: str) -> Gate:
  """Parses a `run_if` expression.

  Args:
    text: e.g. "a.confidence < 0.9" or "max(a.probs) < 0.9".

  Returns:
    The parsed Gate.

  Raises:
    CascadeError: the text is not of the grammar, or names an unknown
      measure.
  """
  match = _GATE.match(text or "")
  if not match:
    raise CascadeError(
        f"run_if {text!r} is not of the form '<stage>.<output> <op> <number>' "
        f"or '<measure>(<stage>.<output>) <op> <number>', with <op> one of "
        f"{' '.join(OPERATORS)} and <measure> one of {', '.join(MEASURES)}")
  measure = match["measure"]
  if measure is not None and measure not in MEASURES:
    raise CascadeError(f"run_if {text!r}: unknown measure '{measure}' (measures: "
                       f"{', '.join(MEASURES)})")
  threshold = float(match["number"])
  if not math.isfinite(threshold):
    raise CascadeError(f"run_if {text!r}: threshold must be finite")
  return Gate(match["stage"], match["output"], match["op"], threshold, measure)


def stage_gate(stage: StageSpec) -> Optional[Gate]:
  """The stage's parsed run_if, None without one.

  Raises:
    CascadeError: as parse_gate, naming the stage.
  """
  if not stage.run_if:
    return None
  try:
    return parse_gate(stage.run_if)
  except CascadeError as e:
    raise CascadeError(f"stage '{stage.name}': {e}") from e


def format_shape(shape: Optional[Sequence[Optional[int]]]) -> str:
  """[N, 10] for a batch of rows of 10 values; "unknown" without a rank."""
  if shape is None:
    return "unknown"
  return "[" + ", ".join(["N"] + ["?" if d is None else str(d) for d in shape[1:]]) + "]"


def operand_problem(gate: Gate, shape: Optional[Sequence[Optional[int]]]) -> Optional[str]:
  """Why `gate` cannot read an output of `shape` (batch first; None: rank
  unknown), or None when it can.

  A bare output must hold one number per row ([N] or [N, 1]); a measure
  reads a row of C class values ([N, C], C >= 2: one value per row is a
  scalar, to be compared directly).
  """
  scalar = shape is not None and (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1))
  shown = format_shape(shape)
  if gate.measure is None:
    if scalar:
      return None
    example = f"max({gate.reference}) {gate.op} {gate.threshold:g}"
    return (f"run_if needs a per-row scalar, but '{gate.reference}' has shape {shown}"
            + (f"; apply a measure to its rows, e.g. run_if: \"{example}\" (measures: "
               f"{', '.join(MEASURES)})" if shape is not None and len(shape) == 2 else ""))
  if scalar:
    return (f"run_if '{gate}': {gate.measure}() reads a row of class values "
            f"([N, C]), but '{gate.reference}' has shape {shown}, one number per "
            f"row: compare it directly, e.g. run_if: \"{gate.reference} {gate.op} "
            f"{gate.threshold:g}\"")
  if shape is None or len(shape) != 2:
    return (f"run_if '{gate}': {gate.measure}() reads a row of class values "
            f"([N, C]), but '{gate.reference}' has shape {shown}")
  if shape[1] == 0:
    return (f"run_if '{gate}': '{gate.reference}' has shape {shown}, no class values "
            f"per row to take {gate.measure}() of")
  return None
