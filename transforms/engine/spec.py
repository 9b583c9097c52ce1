"""Plain, picklable descriptions of a cascade: what the engine builds.

The launcher validates YAML into these frozen dataclasses; workers receive them
pickled inside the DoFn. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Tuple

# Tables of names, each defined here only (configs, the engine and
# `tfcascade inspect` use them).

# tf.train.Feature list kind (its "kind" oneof) -> the feature dtype it holds.
LIST_KIND_DTYPES = {"float_list": "float32", "int64_list": "int64",
                    "bytes_list": "string"}
# Feature dtypes a config may declare: ("float32", "int64", "string").
FEATURE_DTYPES = tuple(LIST_KIND_DTYPES.values())
# Where a stage's graph comes from (ModelSource.source_type).
SOURCE_TYPES = ("meta_graph", "builder", "saved_model")
# The source type of a combine stage: built by the engine from earlier
# stages' outputs, no model file (not one of SOURCE_TYPES a config names).
COMBINE_SOURCE = "combine"
# How a combine stage joins its inputs (CombineSpec.op); docs/reference.md.
COMBINE_OPS = ("mean", "weighted_mean", "max", "vote")
# The outputs every combine stage has.
COMBINE_OUTPUTS = ("probs", "prediction")
# The engine's final-answer outputs: "<FINAL>/<output>" and "<FINAL>/stage";
# no stage may take the name while they are written.
FINAL = "final"
# What the session runs on (SessionSpec.device).
DEVICES = ("cpu", "gpu")
# The name scope of the engine's own ops (the placeholder, the parse, each
# stage's gate and scatter, under "<ENGINE_SCOPE>/stage/<stage name>/"). A
# stage's scope may not take it; the "." keeps it apart from every stage
# name (a stage's default scope).
ENGINE_SCOPE = "tfcascade.engine"


class CascadeError(ValueError):
  """A cascade cannot be built as specified; the message names every problem."""

  def __init__(self, problems):
    if isinstance(problems, str):
      problems = [problems]
    self.problems = list(problems)
    super().__init__("\n".join(f"- {p}" for p in self.problems)
                     if len(self.problems) > 1 else self.problems[0])


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
  """One feature of the input `tf.train.Example`, parsed in-graph.

  Attributes:
    name: feature key in the Example.
    dtype: one of FEATURE_DTYPES.
    shape: fixed shape of one record's value; () for a scalar.
    default: value used when the feature is absent; None makes it required.
  """
  name: str
  dtype: str
  shape: Tuple[int, ...] = ()
  default: Optional[object] = None


@dataclasses.dataclass(frozen=True)
class ModelSource:
  """Where a stage's graph comes from.

  Attributes:
    source_type: one of SOURCE_TYPES: "meta_graph" (path to a .meta file),
      "builder" ("module:function") or "saved_model" (an export directory).
    ref: the path or the "module:function" reference.
    tags: SavedModel tags (saved_model only).
    signature: SavedModel signature whose keys may name inputs/outputs.
  """
  source_type: str
  ref: str
  tags: Tuple[str, ...] = ("serve",)
  signature: str = "serving_default"


@dataclasses.dataclass(frozen=True)
class CombineSpec:
  """A stage computed in-graph from earlier stages' [N, C] outputs.

  Attributes:
    op: one of COMBINE_OPS.
    inputs: "<stage>.<output>" references, each [N, C] with one C.
    weights: one per input for "weighted_mean" (>= 0, not all 0); empty
      for the other ops.
  """
  op: str
  inputs: Tuple[str, ...]
  weights: Tuple[float, ...] = ()

  def describe(self) -> str:
    """e.g. 'mean(a.probs, b.probs)': the stage's source in plans and logs."""
    weights = f"; weights {list(self.weights)}" if self.weights else ""
    return f"{self.op}({', '.join(self.inputs)}{weights})"


@dataclasses.dataclass(frozen=True)
class StageSpec:
  """One model of the cascade.

  Attributes:
    name: stage name; outputs are referred to as "<name>.<output>".
    source: the model's graph.
    checkpoint: checkpoint prefix or directory (latest checkpoint is used).
      Empty for a SavedModel (its own variables/ are used).
    scope: variable/name scope the model is placed under; not ENGINE_SCOPE
      (nor under it), and free in the graph when the stage is placed.
    inputs: model input -> "features.<name>" or "<earlier stage>.<output>".
      For meta graphs and SavedModels the key is a tensor name ("input:0") or a
      signature input key; for builders it is the builder's argument key.
    outputs: output name -> model tensor name (or signature output key, or the
      builder's returned key).
    run_if: optional gate, e.g. "a.confidence < 0.9".
    fill_value: value of this stage's outputs on rows the gate did not pass.
    fingerprints: (file, "sha256:...") pinned by the launcher (see
      engine.pinning); workers check them before scoring. Empty: not pinned.
    combine: set for a combine stage (see combine_stage): no model, no
      checkpoint; its outputs are COMBINE_OUTPUTS.
  """
  name: str
  source: ModelSource
  checkpoint: str
  scope: str
  inputs: Mapping[str, str]
  outputs: Mapping[str, str]
  run_if: Optional[str] = None
  fill_value: float = 0.0
  fingerprints: Tuple[Tuple[str, str], ...] = ()
  combine: Optional[CombineSpec] = None


def combine_stage(name: str, combine: CombineSpec, run_if: Optional[str] = None,
                  fill_value: float = 0.0) -> StageSpec:
  """The StageSpec of a combine stage (its source names the op and inputs, so
  plans, logs and model ids read it like a model's)."""
  return StageSpec(name=name, source=ModelSource(COMBINE_SOURCE, combine.describe()),
                   checkpoint="", scope=name, inputs={},
                   outputs={o: o for o in COMBINE_OUTPUTS}, run_if=run_if,
                   fill_value=fill_value, combine=combine)


@dataclasses.dataclass(frozen=True)
class SessionSpec:
  """How the single session runs.

  Attributes:
    intra_op_threads: threads inside one op; 0: this process's share of the
      cores (see processes_per_host).
    inter_op_threads: ops run concurrently; 0: as intra_op_threads' default.
    device: one of DEVICES: "cpu" (default; hides GPUs) or "gpu" (memory
      growth, soft placement).
    processes_per_host: worker processes sharing this machine's cores, each
      with its own session (DirectRunner multi_processing: its worker count;
      Dataflow: one SDK process per vCPU, written 0 = one per core). With
      thread counts left at 0, each session gets cores / processes threads:
      TF's default of every core per process would run N x N threads on N
      cores (docs/design.md, fact 12).
  """
  intra_op_threads: int = 0
  inter_op_threads: int = 0
  device: str = "cpu"
  processes_per_host: int = 1

  def threads(self, cores: int):
    """(intra, inter) thread counts for a machine with `cores` cores."""
    processes = cores if self.processes_per_host == 0 else self.processes_per_host
    share = max(1, cores // max(1, processes))
    return (self.intra_op_threads or share, self.inter_op_threads or share)


@dataclasses.dataclass(frozen=True)
class CascadeSpec:
  """Features to parse, ordered stages (>= 2) and session settings.

  Attributes:
    passthrough: declared features also returned as parsed
      ("passthrough/<name>"), so outputs can carry them without re-reading
      the records in Python.
    final: the outputs written as the final answer ("final/<output>", plus
      "final/stage"); None: the default ones (engine.final_answer), empty:
      none.
  """
  features: Tuple[FeatureSpec, ...]
  stages: Tuple[StageSpec, ...]
  session: SessionSpec = SessionSpec()
  passthrough: Tuple[str, ...] = ()
  final: Optional[Tuple[str, ...]] = None
