"""The `run_if` gate grammar: `<stage>.<output> <op> <number>`.

Parsed with a regular expression and never evaluated as Python, so a config
cannot run code through a gate.
"""

from __future__ import annotations

import dataclasses
import math
import re

from tfcascade.transforms.engine.spec import CascadeError

# The one table of gate operators: symbol -> name of the comparison, which is
# the same in tf.math (cascade.py builds the in-graph comparison from it) and
# in NumPy.
OPERATORS = {
    "<": "less", "<=": "less_equal", ">": "greater",
    ">=": "greater_equal", "==": "equal", "!=": "not_equal",
}

_GATE = re.compile(
    r"""^\s*
    (?P<stage>[A-Za-z_][A-Za-z0-9_]*)\.(?P<output>[A-Za-z_][A-Za-z0-9_]*)
    \s*(?P<op>""" +
    # Longest first, so that "<=" is not read as "<".
    "|".join(map(re.escape, sorted(OPERATORS, key=len, reverse=True))) +
    r""")\s*
    (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
    \s*$""", re.VERBOSE)


@dataclasses.dataclass(frozen=True)
class Gate:
  """A parsed gate: rows where `<stage>.<output> <op> <threshold>` run."""
  stage: str
  output: str
  op: str
  threshold: float

  @property
  def reference(self) -> str:
    return f"{self.stage}.{self.output}"

  def __str__(self):
    return f"{self.reference} {self.op} {self.threshold:g}"


def parse_gate(text: str) -> Gate:
  """Parses a `run_if` expression.

  Args:
    text: e.g. "a.confidence < 0.9".

  Returns:
    The parsed Gate.

  Raises:
    CascadeError: the text is not `<stage>.<output> <op> <number>`.
  """
  match = _GATE.match(text or "")
  if not match:
    raise CascadeError(
        f"run_if {text!r} is not of the form '<stage>.<output> <op> <number>' "
        f"with <op> one of {' '.join(OPERATORS)}")
  threshold = float(match["number"])
  if not math.isfinite(threshold):
    raise CascadeError(f"run_if {text!r}: threshold must be finite")
  return Gate(match["stage"], match["output"], match["op"], threshold)
