"""The sweep's arithmetic, numpy only (no session, no files).

`Cascade` emulates the real cascade on the ungated run's outputs: which rows
each gated stage runs on under given gates, what each combine stage joins
from the inputs that ran (engine.combine's NumPy twin) and the cascade's
answer (the prediction of the last stage that ran on the row: the engine's
final answer). `candidate_thresholds`
picks one short threshold per distinct set of passing rows; `sweep_gate`
scores each against the label and the measured `Costs`; `recommend` picks
the cheapest that reaches the target accuracy.
"""

from __future__ import annotations

import dataclasses
import decimal
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from tfcascade.pipeline.tune.stage_predictions import class_ids
from tfcascade.transforms.engine.combine import combine_numpy
from tfcascade.transforms.engine.gate import MEASURES, OPERATORS, Gate
from tfcascade.transforms.engine.spec import StageSpec

DEFAULT_POINTS = 200
DEFAULT_TOLERANCE = 0.005  # 0.5 point of accuracy below the ungated cascade
BELOW = ("<", "<=")  # gates that pass rows with small values
ABOVE = (">", ">=")


# --- the cascade, emulated on ungated outputs --------------------------------


@dataclasses.dataclass
class Cascade:
  """Every stage's outputs on every row (the ungated run) and what the cascade
  makes of them under given gates.

  Attributes:
    stages: the cascade's stages, in order.
    outputs: "<stage>/<output>" -> value on every row (the ungated run).
    predictions: stage -> class ids on every row (stages that predict).
    labels: the true class of every row.
  """
  stages: Tuple[StageSpec, ...]
  outputs: Mapping[str, np.ndarray]
  predictions: Mapping[str, np.ndarray]
  labels: np.ndarray
  # stage -> the output its prediction is read from (recomputed for combine
  # stages, whose outputs depend on the gates).
  prediction_outputs: Mapping[str, str] = dataclasses.field(default_factory=dict)

  @property
  def rows(self) -> int:
    return int(len(self.labels))

  def gate_values(self, gate: Gate, ran: Mapping[str, np.ndarray],
                  outputs: Optional[Mapping[str, np.ndarray]] = None) -> np.ndarray:
    """The gate's operand per row as the real cascade sees it: a gated
    stage's outputs are its fill_value on rows it did not run on, a combine
    stage's are joined from the inputs that ran (`outputs`: as run() has
    them so far; None: from `ran`), and a measure is taken of those rows
    (the table in engine.gate)."""
    stage = next(s for s in self.stages if s.name == gate.stage)
    outputs = self._combined(ran) if outputs is None else outputs
    raw = np.asarray(outputs[f"{gate.stage}/{gate.output}"])
    rows = raw.reshape(len(raw), -1).astype(np.float64)
    if gate.stage in ran:
      rows = np.where(ran[gate.stage][:, None], rows, _fill(raw.dtype, stage.fill_value))
    if gate.measure:
      return MEASURES[gate.measure].numpy(rows).astype(np.float64)
    return rows[:, 0]

  def run(self, gates: Mapping[str, Optional[Gate]]
          ) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """The cascade's answer per row and the rows each gated stage ran on.

    Args:
      gates: stage -> its gate (None or absent: the stage runs on every row).
    """
    ran: Dict[str, np.ndarray] = {}
    outputs = dict(self.outputs)
    answer = None
    for stage in self.stages:
      gate, mask = gates.get(stage.name), None
      if gate is not None:
        compare = getattr(np, OPERATORS[gate.op])
        mask = compare(self.gate_values(gate, ran, outputs), np.float64(gate.threshold))
      if stage.combine is not None:
        mask = self._combine(stage, outputs, ran, mask)
      if mask is not None:
        ran[stage.name] = mask
      prediction = self._prediction(stage, outputs)
      if prediction is None:
        continue
      if answer is None or mask is None:
        answer = prediction.copy()
      else:
        answer = np.where(mask, prediction, answer)
    return answer, ran

  def _prediction(self, stage: StageSpec, outputs) -> Optional[np.ndarray]:
    if stage.combine is None or stage.name not in self.prediction_outputs:
      return self.predictions.get(stage.name)
    output = self.prediction_outputs[stage.name]
    return class_ids(outputs[f"{stage.name}/{output}"], f"{stage.name}.{output}")

  def _combine(self, stage: StageSpec, outputs: Dict[str, np.ndarray],
               ran: Mapping[str, np.ndarray], gate_mask: Optional[np.ndarray]
               ) -> Optional[np.ndarray]:
    """Puts a combine stage's outputs under `ran` into `outputs`; returns its
    ran mask (None: every row)."""
    refs = stage.combine.inputs
    combined, mask = combine_numpy(
        stage, [outputs[ref.replace(".", "/", 1)] for ref in refs],
        [ran.get(ref.partition(".")[0]) for ref in refs], gate_mask)
    outputs.update({f"{stage.name}/{out}": value for out, value in combined.items()})
    return mask

  def _combined(self, ran: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
    """The outputs with each combine stage's joined under `ran` (a combine
    stage's own entry in `ran` stands for its gate: it is within its inputs'
    rows)."""
    combines = [s for s in self.stages if s.combine is not None]
    if not combines:
      return self.outputs
    outputs = dict(self.outputs)
    for stage in combines:
      self._combine(stage, outputs, ran, ran.get(stage.name))
    return outputs

  def accuracy(self, answer: np.ndarray) -> float:
    return float(np.mean(answer == self.labels)) if self.rows else 0.0


def _fill(dtype: np.dtype, fill_value: float) -> np.float64:
  """fill_value as the graph writes it into an output of `dtype` (rounded to
  a float32, truncated to an integer), read back in float64."""
  value = int(fill_value) if dtype.kind in "iub" else fill_value
  return np.asarray(value).astype(dtype).astype(np.float64)


# --- thresholds ---------------------------------------------------------------


def _fits(t: float, lo, lo_closed: bool, hi, hi_closed: bool) -> bool:
  if lo is not None and (t < lo or (t == lo and not lo_closed)):
    return False
  if hi is not None and (t > hi or (t == hi and not hi_closed)):
    return False
  return True


def short_number(lo: Optional[float], lo_closed: bool, hi: Optional[float],
                 hi_closed: bool) -> float:
  """The number with the fewest decimals in an interval (None: unbounded), so
  that the printed `run_if` reads well and means exactly that interval."""
  for digits in range(0, 20):
    step = decimal.Decimal(1).scaleb(-digits)
    if lo is None:
      cand = (decimal.Decimal(hi) / step).to_integral_value(decimal.ROUND_FLOOR) * step
      if not hi_closed and cand == decimal.Decimal(hi):
        cand -= step
    else:
      cand = (decimal.Decimal(lo) / step).to_integral_value(decimal.ROUND_CEILING) * step
      if not lo_closed and cand == decimal.Decimal(lo):
        cand += step
    t = float(cand)
    if _fits(t, lo, lo_closed, hi, hi_closed):
      return t
  return float(lo if lo is not None else hi)  # the interval is one float wide


def format_number(t: float) -> str:
  text = repr(float(t))
  return text[:-2] if text.endswith(".0") else text


def candidate_thresholds(values: np.ndarray, op: str,
                         points: int = DEFAULT_POINTS) -> List[float]:
  """Thresholds for a gate `<value> <op> t`, one per distinct set of passing
  rows, from none passing to all, at most `points + 1` of them spread evenly
  over the share of rows that pass.

  Each is the shortest number giving that set (the sets change only at the
  observed values).
  """
  finite = values[np.isfinite(values)]
  u = np.unique(finite)
  m = len(u)
  if m == 0:
    return []
  # Partition k passes the rows <= u[k] (below gates; k = -1: none) or
  # >= u[k] (above gates; k = m: none). Rows passing, per partition:
  counts = np.searchsorted(np.sort(finite), u, side="right")  # rows <= u[k]
  if op in BELOW:
    ks = np.arange(-1, m)
    passing = np.concatenate([[0], counts])
  else:
    ks = np.arange(m, -1, -1)
    passing = np.concatenate([[0], len(finite) - np.concatenate([[0], counts[:-1]])[::-1]])
  # Spread `points` partitions evenly over the share that passes.
  levels = np.linspace(0, passing[-1], points + 1)
  chosen = sorted(set(np.clip(np.searchsorted(passing, levels), 0, len(ks) - 1).tolist())
                  | {0, len(ks) - 1})
  thresholds = []
  for i in chosen:
    k = int(ks[i])
    below = u[k] if 0 <= k < m else None
    above = u[k + 1] if k + 1 < m else None
    if op == "<":      # v < t passes v <= u[k]: t in (u[k], u[k+1]]
      t = short_number(below, False, above, True)
    elif op == "<=":   # t in [u[k], u[k+1])
      t = short_number(below, True, above, False)
    else:
      prev = u[k - 1] if k - 1 >= 0 else None
      here = u[k] if k < m else None
      if op == ">":    # v > t passes v >= u[k]: t in [u[k-1], u[k])
        t = short_number(prev, True, here, False)
      else:            # ">=": t in (u[k-1], u[k]]
        t = short_number(prev, False, here, True)
    thresholds.append(t)
  return thresholds


# --- the sweep ----------------------------------------------------------------


@dataclasses.dataclass
class Costs:
  """Seconds the session took on the sample, measured (see measure_costs).

  Attributes:
    base_seconds: every gated stage passing no row (ungated stages and the
      parse run on every row).
    stage_seconds: gated stage -> the extra seconds when it runs on EVERY row.
    rows: rows in the sample.
  """
  base_seconds: float
  stage_seconds: Dict[str, float]
  rows: int

  def rows_per_second(self, shares: Mapping[str, float]) -> float:
    seconds = self.base_seconds + sum(self.stage_seconds.get(s, 0.0) * share
                                      for s, share in shares.items())
    return self.rows / seconds if seconds > 0 else float("inf")


def sweep_gate(cascade: Cascade, stage: StageSpec, gates: Mapping[str, Optional[Gate]],
               costs: Optional[Costs], points: int = DEFAULT_POINTS,
               swept: Optional[Gate] = None) -> List[dict]:
  """One row per threshold of `stage`'s gate, the other gates as in `gates`.

  Args:
    swept: sweep this gate instead of the configured one (another measure
      of the same output, tune's comparison); no row is then current.

  Rows: threshold, run_if, share (of rows the stage runs on), accuracy (of
  the cascade against the label), rows_per_s (from `costs`), shares (every
  gated stage's share), current (the configured threshold).
  """
  current = swept or gates[stage.name]
  values = cascade.gate_values(current, cascade.run({**gates, stage.name: None})[1])
  thresholds = candidate_thresholds(values, current.op, points)
  if swept is None and current.threshold not in thresholds:
    thresholds.append(current.threshold)
  rows = []
  for t in thresholds:
    gate = dataclasses.replace(current, threshold=t)
    answer, ran = cascade.run({**gates, stage.name: gate})
    shares = {name: float(mask.mean()) if len(mask) else 0.0 for name, mask in ran.items()}
    rows.append({
        "threshold": t,
        "run_if": f"{gate.operand} {gate.op} {format_number(t)}",
        "share": shares[stage.name],
        "accuracy": cascade.accuracy(answer),
        "rows_per_s": costs.rows_per_second(shares) if costs else None,
        "shares": shares,
        "current": swept is None and t == current.threshold,
    })
  rows.sort(key=lambda r: (r["share"], -r["accuracy"], r["threshold"]))
  for r in rows:  # the configured text, not its float
    if r["current"]:
      r["run_if"] = stage.run_if.strip()
  return rows


def recommend(rows: Sequence[dict], target: float) -> Tuple[Optional[dict], bool]:
  """The cheapest row reaching `target` accuracy (ties: the more accurate);
  when none does, the most accurate row and False."""
  reaching = [r for r in rows if r["accuracy"] >= target - 1e-12]
  if reaching:
    return min(reaching, key=lambda r: (r["share"], -r["accuracy"])), True
  if not rows:
    return None, False
  return max(rows, key=lambda r: (r["accuracy"], -r["share"])), False
