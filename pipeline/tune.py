"""`tfcascade tune`: choose each gate's `run_if` threshold from data.

What it does, in order:

1. reads a sample of records (`--sample N`, spread over the input files: the
   first ceil(N / files) records of each file) from the config's input or
   `--input`;
2. runs EVERY stage on every sampled row, once, in one CascadeSession (the
   config's stages with `run_if` removed), with the label parsed in-graph;
3. measures what each gated stage costs (see `measure_costs`);
4. for each gated stage, sweeps its threshold over the observed values of the
   gate's reference output (`a.confidence`) and, per threshold, emulates the
   real cascade in numpy: which rows the stage runs on, the cascade's answer
   (the prediction of the last stage that ran on the row), its accuracy
   against the label, and the rows/s the measured costs predict;
5. writes DIR/tune.json (one row per threshold) and DIR/tune.png (accuracy vs
   share of rows the stage runs on), prints a short table and the
   recommended threshold with the `--set` line that applies it.

A stage's prediction (the class it answers) is the output named by
`--prediction <stage>.<output>`, else its output named `prediction`, else the
argmax of its output named `probs`, else of `logits`. An output of shape
[N, C] (C > 1) is reduced by argmax; [N] or [N, 1] is taken as class ids.
"""

from __future__ import annotations

import dataclasses
import decimal
import importlib.util
import json
import math
import os
import shlex
import sys
import time
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from tfcascade.pipeline import exit_codes
from tfcascade.pipeline.config import ConfigError, load_config
from tfcascade.transforms.engine.gate import OPERATORS, Gate, parse_gate
from tfcascade.transforms.engine.spec import CascadeError, CascadeSpec, FeatureSpec, StageSpec

DEFAULT_SAMPLE = 10_000
DEFAULT_POINTS = 200
DEFAULT_TOLERANCE = 0.005  # 0.5 point of accuracy below the ungated cascade
# Outputs taken as a stage's prediction when --prediction does not name one,
# in this order; the first is class ids, the others are argmax-ed.
PREDICTION_OUTPUTS = ("prediction", "probs", "logits")
_BELOW = ("<", "<=")  # gates that pass rows with small values
_ABOVE = (">", ">=")
_TIMING_REPEATS = 3


class TuneError(ValueError):
  """tune cannot run as asked; the message says why and what to do."""


# --- what a stage predicts ----------------------------------------------------


def prediction_outputs(stages: Sequence[StageSpec],
                       chosen: Sequence[str] = ()) -> Dict[str, str]:
  """Stage name -> the output holding its prediction (stages with none are
  left out: they answer nothing, e.g. a feature extractor).

  Args:
    stages: the cascade's stages.
    chosen: `<stage>.<output>` strings from --prediction.

  Raises:
    TuneError: a --prediction names no stage or no output of it.
  """
  by_name = {s.name: s for s in stages}
  picked: Dict[str, str] = {}
  for item in chosen:
    stage, _, output = item.partition(".")
    if stage not in by_name or not output:
      raise TuneError(f"--prediction {item!r}: expected <stage>.<output> with a "
                      f"stage of the config ({', '.join(by_name)})")
    if output not in by_name[stage].outputs:
      raise TuneError(f"--prediction {item!r}: stage '{stage}' has no output "
                      f"'{output}' (outputs: {', '.join(by_name[stage].outputs)})")
    picked[stage] = output
  for s in stages:
    if s.name not in picked:
      found = next((o for o in PREDICTION_OUTPUTS if o in s.outputs), None)
      if found:
        picked[s.name] = found
  return {s.name: picked[s.name] for s in stages if s.name in picked}


def class_ids(values: np.ndarray, what: str) -> np.ndarray:
  """Per-row class ids from an output: argmax of [N, C], else the ids."""
  values = np.asarray(values)
  if values.ndim == 2 and values.shape[1] > 1:
    return values.argmax(axis=1).astype(np.int64)
  values = values.reshape(len(values), -1)
  if values.shape[1] != 1:
    raise TuneError(f"{what} has shape {list(values.shape)}: a prediction must be "
                    f"[N] class ids or [N, C] scores")
  values = values[:, 0]
  if values.dtype.kind == "f":
    if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
      raise TuneError(f"{what} holds non-integer values: name an output of class "
                      f"ids or of per-class scores with --prediction")
  elif values.dtype.kind not in "iub":
    raise TuneError(f"{what} is {values.dtype}, not class ids")
  return values.astype(np.int64)


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

  @property
  def rows(self) -> int:
    return int(len(self.labels))

  def gate_values(self, gate: Gate, ran: Mapping[str, np.ndarray]) -> np.ndarray:
    """The gate's reference output as the real cascade sees it: a gated
    stage's outputs are its fill_value on rows it did not run on."""
    stage = next(s for s in self.stages if s.name == gate.stage)
    values = np.asarray(self.outputs[f"{gate.stage}/{gate.output}"])
    values = values.reshape(len(values), -1)[:, 0].astype(np.float64)
    if gate.stage in ran:
      values = np.where(ran[gate.stage], values, np.float64(stage.fill_value))
    return values

  def run(self, gates: Mapping[str, Optional[Gate]]
          ) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """The cascade's answer per row and the rows each gated stage ran on.

    Args:
      gates: stage -> its gate (None or absent: the stage runs on every row).
    """
    ran: Dict[str, np.ndarray] = {}
    answer = None
    for stage in self.stages:
      gate = gates.get(stage.name)
      if gate is not None:
        compare = getattr(np, OPERATORS[gate.op])
        ran[stage.name] = compare(self.gate_values(gate, ran), np.float64(gate.threshold))
      prediction = self.predictions.get(stage.name)
      if prediction is None:
        continue
      if answer is None or gate is None:
        answer = prediction.copy()
      else:
        answer = np.where(ran[stage.name], prediction, answer)
    return answer, ran

  def accuracy(self, answer: np.ndarray) -> float:
    return float(np.mean(answer == self.labels)) if self.rows else 0.0


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
  if op in _BELOW:
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
               costs: Optional[Costs], points: int = DEFAULT_POINTS) -> List[dict]:
  """One row per threshold of `stage`'s gate, the other gates as in `gates`.

  Rows: threshold, run_if, share (of rows the stage runs on), accuracy (of
  the cascade against the label), rows_per_s (from `costs`), shares (every
  gated stage's share), current (the configured threshold).
  """
  current = gates[stage.name]
  values = cascade.gate_values(current, cascade.run({**gates, stage.name: None})[1])
  thresholds = candidate_thresholds(values, current.op, points)
  if current.threshold not in thresholds:
    thresholds.append(current.threshold)
  rows = []
  for t in thresholds:
    gate = dataclasses.replace(current, threshold=t)
    answer, ran = cascade.run({**gates, stage.name: gate})
    shares = {name: float(mask.mean()) if len(mask) else 0.0 for name, mask in ran.items()}
    rows.append({
        "threshold": t,
        "run_if": f"{gate.reference} {gate.op} {format_number(t)}",
        "share": shares[stage.name],
        "accuracy": cascade.accuracy(answer),
        "rows_per_s": costs.rows_per_second(shares) if costs else None,
        "shares": shares,
        "current": t == current.threshold,
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


# --- running the models -------------------------------------------------------


def tune_spec(spec: CascadeSpec, label: str) -> CascadeSpec:
  """The config's cascade with the label parsed (int64 class) and returned."""
  features = list(spec.features)
  declared = next((f for f in features if f.name == label), None)
  if declared is None:
    features.append(FeatureSpec(label, "int64"))
  elif declared.dtype != "int64" or int(np.prod(declared.shape or (1,))) != 1:
    raise TuneError(f"--label {label}: input.features declares it "
                    f"{declared.dtype} {list(declared.shape)}; tune needs one int64 "
                    f"class id per record")
  return dataclasses.replace(spec, features=tuple(features), passthrough=(label,))


def gated_variant(spec: CascadeSpec, gates: Mapping[str, Optional[Gate]]) -> CascadeSpec:
  """`spec` with each stage's run_if replaced by `gates[stage]` (None: ungated)."""
  stages = tuple(dataclasses.replace(
      s, run_if=(str_gate(gates[s.name]) if gates.get(s.name) else None))
      for s in spec.stages)
  return dataclasses.replace(spec, stages=stages)


def str_gate(gate: Gate) -> str:
  return f"{gate.reference} {gate.op} {format_number(gate.threshold)}"


def _batches(records: Sequence[bytes], size: int):
  for i in range(0, len(records), size):
    yield records[i:i + size]


def run_ungated(spec: CascadeSpec, records: Sequence[bytes], batch_size: int
                ) -> Dict[str, np.ndarray]:
  """Every stage on every record, in ONE session: output name -> values."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.engine import CascadeSession  # pylint: disable=g-import-not-at-top
  parts: Dict[str, list] = {}
  with CascadeSession(gated_variant(spec, {})) as session:
    for batch in _batches(records, batch_size):
      try:
        out = session.run(batch)
      except tf.errors.InvalidArgumentError as e:
        raise TuneError(f"sample records do not parse with input.features (and the "
                        f"label as int64): {e.message.splitlines()[0]}") from e
      named = {**{f"passthrough/{k}": v for k, v in out.passthrough.items()}, **out.outputs}
      for name, value in named.items():
        parts.setdefault(name, []).append(value)
  return {name: np.concatenate(values) for name, values in parts.items()}


def _time_session(session, records, batch_size) -> float:
  start = time.perf_counter()
  for batch in _batches(records, batch_size):
    session.run(batch)
  return time.perf_counter() - start


def measure_costs(spec: CascadeSpec, records: Sequence[bytes], batch_size: int,
                  gates: Mapping[str, Gate], nothing: Mapping[str, Gate],
                  everything: Mapping[str, Gate],
                  repeats: int = _TIMING_REPEATS) -> Costs:
  """Times the real gated session on the sample.

  `base`: every gated stage's gate passing no row. For each gated stage S:
  S passing every row, the others none. S's cost is the difference. Each
  session runs the sample once to warm up, then `repeats` times, the
  sessions taking turns; the fastest pass of each counts.
  """
  from tfcascade.transforms.engine import CascadeSession  # pylint: disable=g-import-not-at-top
  variants = {"": gated_variant(spec, nothing)}
  for name in gates:
    variants[name] = gated_variant(spec, {**nothing, name: everything[name]})
  sessions = {}
  try:
    for key, variant in variants.items():
      sessions[key] = CascadeSession(variant)
      _time_session(sessions[key], records[:batch_size], batch_size)  # warm up
    best = {key: float("inf") for key in sessions}
    for _ in range(repeats):
      for key, session in sessions.items():
        best[key] = min(best[key], _time_session(session, records, batch_size))
  finally:
    for session in sessions.values():
      session.close()
  base = best.pop("")
  return Costs(base, {name: max(seconds - base, 0.0) for name, seconds in best.items()},
               len(records))


def read_sample(files: Sequence[Tuple[str, str, int]], n: int,
                max_record_bytes: int) -> List[bytes]:
  """Up to n records: the first ceil(n / files) of each file, then more from
  the files that have more, until n."""
  from tfcascade.pipeline.inspection import read_records  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.formats import tfrecord_framing as framing  # pylint: disable=g-import-not-at-top
  open_files = [(p, c) for p, c, size in files if size]
  taken: Dict[str, List[bytes]] = {p: [] for p, _ in open_files}
  total = 0
  try:
    while open_files and total < n:
      quota = math.ceil((n - total) / len(open_files))
      more = []
      for path, compression in open_files:
        want = min(quota, n - total)
        if want <= 0:
          break
        have = len(taken[path])
        got = list(read_records(path, compression=compression, limit=have + want,
                                max_record_bytes=max_record_bytes))[have:]
        taken[path].extend(got)
        total += len(got)
        if len(got) == want:  # the file may hold more
          more.append((path, compression))
      open_files = more
  except framing.CorruptRecordError as e:
    raise TuneError(str(e)) from e
  return [r for records in taken.values() for r in records]


# --- the result ---------------------------------------------------------------


def tune(config, label: str, sample: int = DEFAULT_SAMPLE,
         target_accuracy: Optional[float] = None, predictions: Sequence[str] = (),
         points: int = DEFAULT_POINTS, measure: bool = True,
         records: Optional[Sequence[bytes]] = None) -> dict:
  """Everything tune computes, as the dict written to tune.json.

  Args:
    config: a pipeline.config.JobConfig.
    label: the int64 class feature.
    sample: records to read.
    target_accuracy: the accuracy the recommendation must reach; None: the
      ungated cascade's minus DEFAULT_TOLERANCE.
    predictions: --prediction `<stage>.<output>` choices.
    points: thresholds per gate (about).
    measure: time the stages (else rows_per_s is None).
    records: use these serialized Examples instead of reading the input.

  Raises:
    TuneError, CascadeError, PreflightError: naming what is wrong.
  """
  spec = tune_spec(config.cascade_spec(), label)
  stages = spec.stages
  gates = {s.name: parse_gate(s.run_if) for s in stages if s.run_if}
  if not gates:
    raise TuneError("no stage has a run_if gate: nothing to tune")
  unsweepable = [n for n, g in gates.items() if g.op not in _BELOW + _ABOVE]
  if unsweepable:
    raise TuneError(f"the gate of stage(s) {', '.join(unsweepable)} compares with "
                    f"== or !=; tune sweeps <, <=, > and >= gates")
  chosen = prediction_outputs(stages, predictions)
  for name in gates:
    if name not in chosen:
      raise TuneError(f"stage '{name}' has no output named "
                      f"{' / '.join(PREDICTION_OUTPUTS)}: name its prediction with "
                      f"--prediction {name}.<output>")
  first = stages[0].name
  if first not in chosen:
    raise TuneError(f"stage '{first}' has no output named "
                    f"{' / '.join(PREDICTION_OUTPUTS)}: name its prediction with "
                    f"--prediction {first}.<output>")
  if records is None:
    from tfcascade.pipeline.beam_job import match_inputs  # pylint: disable=g-import-not-at-top
    records = read_sample(match_inputs(config), sample, config.input.max_record_bytes)
  if not records:
    raise TuneError("the input holds no records")
  outputs = run_ungated(spec, records, config.batch_size)
  labels = outputs.pop(f"passthrough/{label}").reshape(len(records))
  predicted = {name: class_ids(outputs[f"{name}/{out}"], f"{name}.{out}")
               for name, out in chosen.items()}
  cascade = Cascade(stages, outputs, predicted, labels)
  ungated_accuracy = cascade.accuracy(cascade.run({})[0])
  target = (ungated_accuracy - DEFAULT_TOLERANCE if target_accuracy is None
            else target_accuracy)

  nothing, everything = {}, {}
  for name, gate in gates.items():
    values = cascade.gate_values(gate, {})
    ends = candidate_thresholds(values, gate.op, points=1)
    nothing[name] = dataclasses.replace(gate, threshold=ends[0])
    everything[name] = dataclasses.replace(gate, threshold=ends[-1])
  costs = (measure_costs(spec, records, config.batch_size, gates, nothing, everything)
           if measure else None)

  result = {
      "label": label, "rows": cascade.rows,
      "predictions": {name: f"{name}.{out}" for name, out in chosen.items()},
      "accuracy_alone": {name: cascade.accuracy(p) for name, p in predicted.items()},
      "ungated_accuracy": ungated_accuracy,
      "target_accuracy": target,
      "target_is_default": target_accuracy is None,
      "costs": None if costs is None else {
          "measured_on_rows": costs.rows,
          "base_seconds": costs.base_seconds,
          "stage_seconds": costs.stage_seconds,
          "base_us_per_row": 1e6 * costs.base_seconds / costs.rows,
          "stage_us_per_row": {n: 1e6 * s / costs.rows
                               for n, s in costs.stage_seconds.items()}},
      "warnings": _warnings(stages, gates),
      "gates": [],
  }
  for name in gates:
    stage = next(s for s in stages if s.name == name)
    rows = sweep_gate(cascade, stage, gates, costs, points)
    best, reached = recommend(rows, target)
    current = next(r for r in rows if r["current"])
    for r in rows:
      r["recommended"] = r is best
    result["gates"].append({
        "stage": name, "reference": gates[name].reference, "op": gates[name].op,
        "current": current, "recommended": best, "target_reached": reached,
        "set": "--set " + shlex.quote(f"stages.{name}.run_if={best['run_if']}"),
        "rows": rows})
  return result


def _warnings(stages: Sequence[StageSpec], gates: Mapping[str, Gate]) -> List[str]:
  """Where emulating on ungated outputs differs from the real cascade."""
  found = []
  for s in stages:
    for ref in s.inputs.values():
      head = ref.split(".")[0]
      if head in gates:
        found.append(f"stage '{s.name}' reads {ref} of gated stage '{head}': tune "
                     f"gives it {head}'s real outputs on every row; the real cascade "
                     f"feeds it {head}'s fill_value on rows {head} did not run on")
  return found


# --- printing and plotting ----------------------------------------------------


def _pct(x: float) -> str:
  return f"{100 * x:.2f}%"


def _table_rows(rows: Sequence[dict], n: int = 9) -> List[dict]:
  picks = {id(rows[round(i * (len(rows) - 1) / (n - 1))]) for i in range(n)}
  return [r for r in rows if id(r) in picks or r["current"] or r.get("recommended")]


def format_report(result: dict, out_dir: Optional[str] = None) -> str:
  """The few lines `tfcascade tune` prints."""
  alone = ", ".join(f"{n} alone {_pct(a)} ({result['predictions'][n]})"
                    for n, a in result["accuracy_alone"].items())
  lines = [f"{result['rows']:,} rows, label '{result['label']}': {alone}; "
           f"every stage on every row (ungated) {_pct(result['ungated_accuracy'])}"]
  costs = result["costs"]
  if costs:
    lines.append("measured session time per row: parse and ungated stages "
                 f"{costs['base_us_per_row']:.1f} us; "
                 + ", ".join(f"{n} {us:.1f} us" for n, us in costs["stage_us_per_row"].items()))
  for w in result["warnings"]:
    lines.append(f"warning: {w}")
  for g in result["gates"]:
    name = g["stage"]
    lines.append("")
    lines.append(f"stage {name}: run_if {g['reference']} {g['op']} t")
    lines.append(f"  {'run_if':28s} {name + ' runs on':>12s} {'accuracy':>9s} "
                 f"{'rows/s':>10s}")
    for r in _table_rows(g["rows"]):
      mark = ("  <- current" if r["current"] else "") + (
          "  <- recommended" if r.get("recommended") else "")
      rate = f"{r['rows_per_s']:,.0f}" if r["rows_per_s"] else "-"
      lines.append(f"  {r['run_if']:28s} {_pct(r['share']):>12s} "
                   f"{_pct(r['accuracy']):>9s} {rate:>10s}{mark}")
    best, cur, every = g["recommended"], g["current"], g["rows"][-1]
    target = (f"within {100 * DEFAULT_TOLERANCE:g} point of the ungated cascade's "
              f"{_pct(result['ungated_accuracy'])}"
              if result["target_is_default"] else f"of at least {_pct(result['target_accuracy'])}")
    if not g["target_reached"]:
      lines.append(f"no threshold reaches {_pct(result['target_accuracy'])}; the most "
                   f"accurate: {best['run_if']}")
    else:
      lines.append(f"recommended (the cheapest threshold with accuracy {target}): "
                   f"{best['run_if']}")
    lines.append(f"  {name} runs on {_pct(best['share'])} of rows (now "
                 f"{_pct(cur['share'])}), cascade accuracy {_pct(best['accuracy'])} "
                 f"(now {_pct(cur['accuracy'])})")
    if best["rows_per_s"] and cur["rows_per_s"] and every["rows_per_s"]:
      lines.append(f"  session rows/s from the measured costs: {best['rows_per_s']:,.0f}, "
                   f"{best['rows_per_s'] / every['rows_per_s']:.2f}x {name} on every row, "
                   f"{best['rows_per_s'] / cur['rows_per_s']:.2f}x the current gate")
    lines.append(f"  apply: {g['set']}")
  if out_dir:
    lines.append("")
    lines.append(f"wrote {os.path.join(out_dir, 'tune.json')} and "
                 f"{os.path.join(out_dir, 'tune.png')}")
  return "\n".join(lines)


def plot(result: dict, path: str) -> None:
  """tune.png: per gated stage, the cascade's accuracy against the share of
  rows the stage runs on (its cost), with the current and the recommended
  threshold marked and each stage alone as a horizontal line."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  gates = result["gates"]
  fig, axes = plt.subplots(len(gates), 1, figsize=(9, 5.8 * len(gates)), squeeze=False)
  alone = {stage: 100 * a for stage, a in result["accuracy_alone"].items()}
  for ax, g in zip(axes[:, 0], gates):
    name = g["stage"]
    share = np.array([100 * r["share"] for r in g["rows"]])
    acc = np.array([100 * r["accuracy"] for r in g["rows"]])
    low = min(acc.min(), *alone.values())
    high = max(acc.max(), *alone.values())
    pad = max(0.3, 0.07 * (high - low))
    ax.set_ylim(low - pad, high + pad)
    ax.set_xlim(-2, 102)
    ax.plot(share, acc, "-", color="tab:blue", lw=2.2, zorder=3,
            label="cascade (one point per threshold)")
    for stage, a in alone.items():
      ax.axhline(a, color="0.45", ls="--", lw=1.1, zorder=1)
      ax.text(101, a, f"{stage} alone {a:.2f}%", ha="right", fontsize=9, color="0.3",
              va="top" if a == low else "bottom")
    target = 100 * result["target_accuracy"]
    ax.axhline(target, color="tab:green", ls=":", lw=1.3, zorder=1,
               label=f"target accuracy {target:.2f}%")
    cur, best = g["current"], g["recommended"]
    ax.plot(100 * cur["share"], 100 * cur["accuracy"], "o", ms=11, color="tab:orange",
            zorder=5, label=f"current: {cur['run_if']}")
    ax.plot(100 * best["share"], 100 * best["accuracy"], "*", ms=19, color="tab:red",
            zorder=6, label=f"recommended: {best['run_if']}")
    marks = [(best, "tab:red", "recommended")]
    if best is not cur:
      marks.append((cur, "tab:orange", "current"))
    # Below and to the right of the points: under a rising accuracy curve.
    offsets = sorted([(50, -50), (15, -115)], key=lambda o: -o[1])
    for (r, color, what), offset in zip(sorted(marks, key=lambda m: -m[0]["share"]),
                                        offsets):
      text = (f"{what}: {name} runs on {100 * r['share']:.1f}% of rows\n"
              f"accuracy {100 * r['accuracy']:.2f}%")
      if r["rows_per_s"]:
        text += f", session ~{r['rows_per_s']:,.0f} rows/s"
      ax.annotate(text, (100 * r["share"], 100 * r["accuracy"]), xytext=offset,
                  textcoords="offset points", fontsize=9, color=color, va="top",
                  bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": color,
                        "alpha": 0.9},
                  arrowprops={"arrowstyle": "-", "color": color, "lw": 0.9})
    ax.set_xlabel(f"share of rows stage {name} runs on (%) = its cost")
    ax.set_ylabel(f"cascade accuracy against '{result['label']}' (%)")
    ax.set_title(f"Gate of stage {name}: run_if {g['reference']} {g['op']} t\n"
                 f"accuracy vs cost on {result['rows']:,} sampled rows; recommended = "
                 f"cheapest t reaching the target", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 0.06), fontsize=9, framealpha=0.95)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write(result: dict, out_dir: str) -> None:
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "tune.json"), "w") as f:
    json.dump(result, f, indent=1)
    f.write("\n")
  plot(result, os.path.join(out_dir, "tune.png"))


# --- the command --------------------------------------------------------------


def command(args) -> int:
  """`tfcascade tune`: returns the exit code."""
  from tfcascade.pipeline.beam_job import PreflightError  # pylint: disable=g-import-not-at-top
  overrides = list(args.overrides)
  if args.input:
    overrides.append(f"input.pattern={args.input}")
  try:
    if args.sample < 1:
      raise TuneError("--sample must be at least 1")
    if args.target_accuracy is not None and not 0 < args.target_accuracy <= 1:
      raise TuneError("--target-accuracy is an accuracy between 0 and 1 (e.g. 0.97)")
    if importlib.util.find_spec("matplotlib") is None:
      raise TuneError("tune draws tune.png with matplotlib: pip install -c "
                      "constraints.txt -e '.[plot]'")
    config = load_config(args.config, overrides)
    from tfcascade.pipeline.device_policy import device_problem  # pylint: disable=g-import-not-at-top
    problem = device_problem(config)
    if problem:
      raise TuneError(problem)
    result = tune(config, args.label, sample=args.sample,
                  target_accuracy=args.target_accuracy, predictions=args.prediction)
  except (ConfigError, TuneError, CascadeError, PreflightError) as e:
    print(f"tfcascade: error: {e}", file=sys.stderr)
    return exit_codes.REFUSED
  result["config"] = os.path.abspath(args.config)
  result["overrides"] = overrides
  write(result, args.out)
  print(format_report(result, args.out))
  return exit_codes.OK
