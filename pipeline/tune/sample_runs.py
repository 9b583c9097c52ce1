"""The models on the sample: reading the sample, running every stage on every
row in one session, and timing the gated sessions.

The only part of tune that reads files or opens TensorFlow sessions; what it
returns is plain arrays and a `Costs` for the sweep.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from tfcascade.pipeline.tune.threshold_sweep import Costs, format_number
from tfcascade.pipeline.tune.tune_error import TuneError
from tfcascade.transforms.engine.gate import Gate
from tfcascade.transforms.engine.spec import CascadeSpec, FeatureSpec

DEFAULT_SAMPLE = 10_000
_TIMING_REPEATS = 3


# --- the sample ---------------------------------------------------------------


def read_sample(files: Sequence, n: int,
                max_record_bytes: int) -> List[bytes]:
  """Up to n records: the first ceil(n / files) of each file, then more from
  the files that have more, until n."""
  from tfcascade.pipeline.inspection.tfrecord_info import read_records  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.formats import tfrecord_framing as framing  # pylint: disable=g-import-not-at-top
  open_files = [(f.path, f.compression) for f in files if f.size]
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
  return f"{gate.operand} {gate.op} {format_number(gate.threshold)}"


def _batches(records: Sequence[bytes], size: int):
  for i in range(0, len(records), size):
    yield records[i:i + size]


def run_ungated(spec: CascadeSpec, records: Sequence[bytes], batch_size: int
                ) -> Dict[str, np.ndarray]:
  """Every stage on every record, in ONE session: output name -> values.

  Raises:
    CascadeError: a gate of `spec` cannot read its output (checked on the
      ungated graph before any record runs, as building `spec` would).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.engine import CascadeSession  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.engine.cascade import check_gates  # pylint: disable=g-import-not-at-top
  parts: Dict[str, list] = {}
  with CascadeSession(gated_variant(spec, {})) as session:
    check_gates(spec, session.cascade)
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
