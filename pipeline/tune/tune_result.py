"""`tune()`: everything tune computes, as the dict written to tune.json.

It checks the gates and predictions, reads the sample, runs the ungated
cascade once, measures the costs and sweeps each gate (the steps of the
package doc).
"""

from __future__ import annotations

import dataclasses
import shlex
from typing import List, Mapping, Optional, Sequence

import numpy as np

from tfcascade.pipeline.tune.sample_runs import (
    DEFAULT_SAMPLE, measure_costs, read_sample, run_ungated, tune_spec)
from tfcascade.pipeline.tune.stage_predictions import (
    PREDICTION_OUTPUTS, class_ids, prediction_outputs)
from tfcascade.pipeline.tune.threshold_sweep import (
    ABOVE, BELOW, DEFAULT_POINTS, DEFAULT_TOLERANCE, Cascade, candidate_thresholds,
    recommend, sweep_gate)
from tfcascade.pipeline.tune.tune_error import TuneError
from tfcascade.transforms.engine.gate import CONFIDENCE_MEASURES, MEASURES, Gate, stage_gate
from tfcascade.transforms.engine.spec import StageSpec


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
  gates = {s.name: stage_gate(s) for s in stages if s.run_if}
  if not gates:
    raise TuneError("no stage has a run_if gate: nothing to tune")
  unsweepable = [n for n, g in gates.items() if g.op not in BELOW + ABOVE]
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
    from tfcascade.pipeline.input_files import match_inputs  # pylint: disable=g-import-not-at-top
    records = read_sample(match_inputs(config), sample, config.input.max_record_bytes)
  if not records:
    raise TuneError("the input holds no records")
  outputs = run_ungated(spec, records, config.batch_size)
  labels = outputs.pop(f"passthrough/{label}").reshape(len(records))
  predicted = {name: class_ids(outputs[f"{name}/{out}"], f"{name}.{out}")
               for name, out in chosen.items()}
  cascade = Cascade(stages, outputs, predicted, labels, chosen)
  ungated_accuracy = cascade.accuracy(cascade.run({})[0])
  final_accuracy = cascade.accuracy(cascade.run(gates)[0])
  target = (ungated_accuracy - DEFAULT_TOLERANCE if target_accuracy is None
            else target_accuracy)

  nothing, everything, warnings = {}, {}, _warnings(stages, gates)
  for name, gate in gates.items():
    values = cascade.gate_values(gate, {})
    ends = candidate_thresholds(values, gate.op, points=1)
    problem = _not_finite(gate, values)
    if not ends:
      raise TuneError(f"stage '{name}': {problem}: nothing to sweep")
    if problem:
      warnings.append(f"stage '{name}': {problem}; those rows never pass the gate")
    nothing[name] = dataclasses.replace(gate, threshold=ends[0])
    everything[name] = dataclasses.replace(gate, threshold=ends[-1])
  costs = (measure_costs(spec, records, config.batch_size, gates, nothing, everything)
           if measure else None)

  result = {
      "label": label, "rows": cascade.rows,
      "predictions": {name: f"{name}.{out}" for name, out in chosen.items()},
      "accuracy_alone": {name: cascade.accuracy(p) for name, p in predicted.items()},
      "ungated_accuracy": ungated_accuracy,
      # The final answer (final/<output>) under the configured gates.
      "final_accuracy": final_accuracy,
      "target_accuracy": target,
      "target_is_default": target_accuracy is None,
      "costs": None if costs is None else {
          "measured_on_rows": costs.rows,
          "base_seconds": costs.base_seconds,
          "stage_seconds": costs.stage_seconds,
          "base_us_per_row": 1e6 * costs.base_seconds / costs.rows,
          "stage_us_per_row": {n: 1e6 * s / costs.rows
                               for n, s in costs.stage_seconds.items()}},
      "warnings": warnings,
      "gates": [],
  }
  for name, gate in gates.items():
    stage = next(s for s in stages if s.name == name)
    rows = sweep_gate(cascade, stage, gates, costs, points)
    best, reached = recommend(rows, target)
    current = next(r for r in rows if r["current"])
    for r in rows:
      r["recommended"] = r is best
    entry = {
        "stage": name, "reference": gate.operand, "op": gate.op,
        "current": current, "recommended": best, "target_reached": reached,
        "set": _set_line(name, best), "rows": rows}
    if gate.measure in CONFIDENCE_MEASURES:
      entry["measures"] = _compare_measures(cascade, stage, gates, costs, points,
                                            target, entry)
    result["gates"].append(entry)
  return result


def _set_line(stage: str, row: dict) -> str:
  return "--set " + shlex.quote(f"stages.{stage}.run_if={row['run_if']}")


def _compare_measures(cascade: Cascade, stage: StageSpec, gates: Mapping[str, Gate],
                      costs, points: int, target: float, configured: dict) -> List[dict]:
  """For a gate taking a confidence measure of a [N, C] output: each
  confidence measure's cheapest threshold reaching `target` (the configured
  measure as swept above; the others compared with their own operator:
  max and margin below, entropy above). A measure that is not finite on
  every row (entropy of logits) is left out, saying why."""
  gate = gates[stage.name]
  compared = []
  for measure in CONFIDENCE_MEASURES:
    if measure == gate.measure:
      best, reached, rows = (configured["recommended"], configured["target_reached"],
                             configured["rows"])
    else:
      swept = dataclasses.replace(gate, measure=measure, op=MEASURES[measure].uncertain)
      problem = _not_finite(swept, cascade.gate_values(swept, {}))
      if problem:
        compared.append({"measure": measure, "configured": False, "skipped": problem})
        continue
      rows = sweep_gate(cascade, stage, gates, costs, points, swept=swept)
      best, reached = recommend(rows, target)
      for r in rows:
        r["recommended"] = r is best
    compared.append({
        "measure": measure, "configured": measure == gate.measure,
        "run_if": best["run_if"], "share": best["share"], "accuracy": best["accuracy"],
        "rows_per_s": best["rows_per_s"], "target_reached": reached,
        "set": _set_line(stage.name, best), "rows": rows})
  return compared


def _not_finite(gate: Gate, values: np.ndarray) -> str:
  """'' when the gate's operand is finite on every sampled row, else how
  many rows it is not."""
  bad = int(np.count_nonzero(~np.isfinite(values)))
  if not bad:
    return ""
  hint = (" (entropy expects probabilities: no negative value in a row)"
          if gate.measure == "entropy" else "")
  return f"{gate.operand} is not finite on {bad:,} of {len(values):,} sampled rows{hint}"


def _warnings(stages: Sequence[StageSpec], gates: Mapping[str, Gate]) -> List[str]:
  """Where emulating on ungated outputs differs from the real cascade: a
  model reading a gated stage, or a combine stage that joins one (tune
  recomputes a combine stage under the gates, but not a model it feeds)."""
  found, joins_gated = [], set()
  for s in stages:
    if s.combine is not None:
      if any(ref.split(".")[0] in set(gates) | joins_gated for ref in s.combine.inputs):
        joins_gated.add(s.name)
      continue
    for ref in s.inputs.values():
      head = ref.split(".")[0]
      if head in gates:
        found.append(f"stage '{s.name}' reads {ref} of gated stage '{head}': tune "
                     f"gives it {head}'s real outputs on every row; the real cascade "
                     f"feeds it {head}'s fill_value on rows {head} did not run on")
      elif head in joins_gated:
        found.append(f"stage '{s.name}' reads {ref} of combine stage '{head}', which "
                     f"joins gated stages: tune gives it {head} with every input on "
                     f"every row; the real cascade leaves out the inputs that did not "
                     f"run")
  return found
