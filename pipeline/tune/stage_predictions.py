"""What a stage predicts: the output tune takes as a stage's answer, and the
per-row class ids it holds.

A stage's prediction is the output named by `--prediction <stage>.<output>`,
else its output named `prediction`, else the argmax of its output named
`probs`, else of `logits`. An output of shape [N, C] (C > 1) is reduced by
argmax; [N] or [N, 1] is taken as class ids.
"""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

from tfcascade.pipeline.tune.tune_error import TuneError
from tfcascade.transforms.engine.spec import StageSpec

# Outputs taken as a stage's prediction when --prediction does not name one,
# in this order; the first is class ids, the others are argmax-ed.
PREDICTION_OUTPUTS = ("prediction", "probs", "logits")


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
