"""The cascade: every model in ONE graph and ONE session, run in one call.

`build_cascade_graph` parses features in-graph, places each stage under its
own scope, wires inputs from features or earlier stages, gates stages
in-graph (gather -> model -> scatter), joins combine stages (engine.combine)
and computes the final answer (engine.final_answer); the engine's own ops
live under spec.ENGINE_SCOPE, out of the stages' way. `CascadeSession` restores every
model with its own Saver, finalizes the graph and runs batches through a C++
callable (docs/design.md, fact 4). Nothing here imports Beam.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import re
import threading
import time
import weakref
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2

from tfcascade.transforms.engine.combine import combine_graph
from tfcascade.transforms.engine.combine import input_problem as combine_input_problem
from tfcascade.transforms.engine.final_answer import final_graph, final_outputs, signature
from tfcascade.transforms.engine.gate import (MEASURES, OPERATORS, Gate, operand_problem,
                                              stage_gate)
from tfcascade.transforms.engine.in_graph_reader import ReaderGraph, build_reader
from tfcascade.transforms.engine.pinning import verify_pins
from tfcascade.transforms.engine.sources import PlacedModel, place_model
from tfcascade.transforms.engine.spec import (ENGINE_SCOPE, FEATURE_DTYPES, FINAL,
                                              CascadeError, CascadeSpec, FeatureSpec,
                                              StageSpec)

SERIALIZED_INPUT = "serialized_examples"
# StagePlan.restored_by of a combine stage: nothing is restored.
COMBINED_IN_GRAPH = "no checkpoint: combined in-graph from its inputs"


@dataclasses.dataclass
class StagePlan:
  """What one stage became in the graph (printed by `validate` and `run`,
  and in run_summary.json).

  Attributes:
    restored: checkpoint variable -> graph variable, every one restored.
    unused: checkpoint variables the fetched outputs do not read (warned).
    restored_by: how: sources.RESTORED_BY_NAME or RESTORED_BY_SAVED_MODEL.
    read: the restored checkpoint variables the fetched outputs read.
    copies: restored variables the outputs do not read that are byte-identical
      copies of ones they do (a Keras 3 export saves each weight twice).
  """
  name: str
  scope: str
  source: str
  checkpoint: str
  fingerprint: str
  global_step: object
  inputs: Dict[str, str]
  outputs: Dict[str, str]
  gate: str
  restored: Dict[str, str]
  unused: List[str]
  restored_by: str = ""
  read: List[str] = dataclasses.field(default_factory=list)
  copies: Dict[str, str] = dataclasses.field(default_factory=dict)

  @property
  def variables_restored(self) -> int:
    return len(self.restored)

  def restore_text(self) -> str:
    """One sentence: how many variables were restored, by what, and how many
    of them the outputs read (the same words everywhere the plan appears)."""
    if self.restored_by == COMBINED_IN_GRAPH:
      return COMBINED_IN_GRAPH
    n = self.variables_restored
    text = f"{n} variable{'' if n == 1 else 's'} restored by {self.restored_by}"
    if len(self.read) == n:
      return text + ("" if n == 0 else ", all read by the outputs")
    text += f"; the outputs read {len(self.read)}"
    rest = n - len(self.read) - len(self.copies)
    if self.copies:
      text += (f"; {'the other' if not rest else ''} {len(self.copies)} "
               f"{'are' if len(self.copies) > 1 else 'is a'} byte-identical "
               f"cop{'ies' if len(self.copies) > 1 else 'y'} of "
               f"{'those' if len(self.copies) > 1 else 'one'} (same shape, "
               f"dtype and CRC32C)").replace(";  ", "; ")
    if rest:
      text += f"; {rest} restored but not read by these outputs"
    return text


@dataclasses.dataclass
class CascadeGraph:
  """A built, not yet restored, cascade graph.

  Attributes:
    graph: the one graph holding every model.
    serialized: the tf.string [batch] input: serialized Examples fed by the
      caller, or by default the in-graph reader's batch.
    reader: the in-graph reader (engine.in_graph_reader).
    parsed: feature name -> its parsed [batch, ...] tensor (the in-graph parse).
    fetches: engine output name ("<stage>/<output>", "<stage>/ran",
      "final/<output>", "final/stage") -> tensor.
    passthrough: passthrough feature name -> its parsed tensor.
    rows_run: stage name -> int32 scalar, rows the stage's model ran on.
    models: stage name -> placed model (Saver + checkpoint); combine stages
      have none.
    plan: per-stage description, in order.
  """
  graph: tf.Graph
  serialized: tf.Tensor
  reader: ReaderGraph
  parsed: Dict[str, tf.Tensor]
  fetches: Dict[str, tf.Tensor]
  passthrough: Dict[str, tf.Tensor]
  rows_run: Dict[str, tf.Tensor]
  models: Dict[str, PlacedModel]
  plan: List[StagePlan]


class ReadBatch(NamedTuple):
  """What the in-graph reader read for one call (CascadeSession.read_and_run).

  Attributes:
    rows: records scored (the batch's records inside the range's budget).
    consumed: their framed bytes in the file (uncompressed offsets).
    returned: records the reader returned; more than `rows` once the range
      ended inside the batch.
    largest: the longest scored record, in bytes.
  """
  rows: int
  consumed: int
  returned: int
  largest: int


class CascadeResult(NamedTuple):
  """What one cascade call returns, each array with the batch first.

  Attributes:
    outputs: "<stage>/<output>" (and "<stage>/ran" of a gated stage), then
      the final answer ("final/<output>", "final/stage": engine.final_answer)
      -> array.
    passthrough: passthrough feature -> its parsed values.
    rows_run: stage -> rows its model ran on (the batch, or the gate's rows).
  """
  outputs: Dict[str, np.ndarray]
  passthrough: Dict[str, np.ndarray]
  rows_run: Dict[str, int]


@dataclasses.dataclass
class _Gating:
  """A gated stage's rows: `mask` [batch] bool, `rows` the passing indices."""
  gate: Gate
  mask: tf.Tensor
  rows: tf.Tensor


def build_cascade_graph(spec: CascadeSpec) -> CascadeGraph:
  """Builds the whole cascade graph; validates wiring and checkpoints.

  Raises:
    CascadeError: naming the stage and the checkpoint, variable or tensor at
      fault.
  """
  stage_order = _check_stages(spec.stages)
  graph = tf.Graph()
  rows_run, models, plan = {}, {}, []
  with graph.as_default():
    with _engine_scope("input"):
      with tf.name_scope("reader"):
        reader = build_reader()
      serialized = tf.compat.v1.placeholder_with_default(reader.batch, [None],
                                                         name=SERIALIZED_INPUT)
      parsed = _parse_features(serialized, spec.features)
      batch = tf.shape(serialized, out_type=tf.int64)[0]
    available = {f"features.{name}": t for name, t in parsed.items()}
    passthrough = _passthrough_tensors(parsed, spec.passthrough)
    fetches, stage_outputs, ran = {}, {}, {}
    for stage in spec.stages:
      if stage.combine is not None:
        outputs, mask = _place_combine(stage, available, stage_order, ran)
        plan.append(_combine_plan(stage))
      else:
        model, gating = _place_stage(stage, available, stage_order)
        with _engine_scope("stage", stage.name, "outputs"):
          outputs = _full_batch_outputs(stage, model, gating, batch)
        mask = gating.mask if gating is not None else None
        models[stage.name] = model
        plan.append(_stage_plan(stage, model, gating))
      with _engine_scope("stage", stage.name, "outputs"):
        for out, tensor in outputs.items():
          available[f"{stage.name}.{out}"] = tensor
          fetches[f"{stage.name}/{out}"] = tensor
        if mask is not None:
          fetches[f"{stage.name}/ran"] = tf.cast(mask, tf.int64)
          rows_run[stage.name] = tf.math.count_nonzero(mask, dtype=tf.int64)
        else:
          rows_run[stage.name] = batch
      stage_outputs[stage.name], ran[stage.name] = outputs, mask
    with _engine_scope(FINAL):
      fetches.update(_final_fetches(spec, stage_outputs, ran, batch))
  return CascadeGraph(graph, serialized, reader, dict(parsed), fetches, passthrough, rows_run,
                      models, plan)


def _final_fetches(spec: CascadeSpec, stage_outputs, ran, batch) -> Dict[str, tf.Tensor]:
  """The final answer's fetches ("final/<output>", "final/stage"); none when
  output.final is off or the stages have no answer in common."""
  names, answering = final_outputs(
      spec.final, {stage: {out: signature(t) for out, t in outputs.items()}
                   for stage, outputs in stage_outputs.items()})
  if not names:
    return {}
  if FINAL in stage_outputs:
    raise CascadeError(f"stage '{FINAL}': the name is taken by the final answer's "
                       f"outputs ({FINAL}/<output>): rename the stage, or set "
                       f"output.final: false")
  return final_graph(names, answering, stage_outputs, ran, batch)


def _place_combine(stage: StageSpec, available: Mapping[str, tf.Tensor],
                   stage_order: Mapping[str, int], ran: Mapping[str, Optional[tf.Tensor]]):
  """A combine stage's outputs and ran mask (engine.combine), its inputs
  checked: each [N, C] floats, one C."""
  refs = stage.combine.inputs
  values = [_resolve(ref, available, stage_order, stage, "combine input") for ref in refs]
  problem = combine_input_problem(
      stage.name, refs, [t.shape.as_list() if t.shape.rank is not None else None
                         for t in values], [t.dtype.name for t in values])
  if problem:
    raise CascadeError(problem)
  with _engine_scope("stage", stage.name, "gate"):
    gate = stage_gate(stage)
    gate_mask = (None if gate is None else _gate_mask(
        gate, _resolve(gate.reference, available, stage_order, stage, "run_if"), stage))
  with _engine_scope("stage", stage.name, "combine"):
    return combine_graph(stage, values, [ran.get(ref.partition(".")[0]) for ref in refs],
                         gate_mask)


def _engine_scope(*parts: str):
  """The name scope of the engine's own ops: ENGINE_SCOPE/<parts>, the same
  scope each time it is entered (the trailing "/"), never a stage's."""
  return tf.name_scope("/".join((ENGINE_SCOPE,) + parts) + "/")


# A stage name as it appears in the engine's scopes ("<ENGINE_SCOPE>/stage/<name>/").
_STAGE_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


def _check_stages(stages: Sequence[StageSpec]) -> Dict[str, int]:
  """Checks stage count, names and scopes; returns stage name -> position."""
  if len(stages) < 2:
    raise CascadeError(f"a cascade needs at least 2 stages, got {len(stages)}")
  names = [s.name for s in stages]
  duplicates = sorted({n for n in names if names.count(n) > 1})
  if duplicates:
    raise CascadeError(f"stage names must be unique: {duplicates} repeat")
  for name in names:
    if not _STAGE_NAME.fullmatch(name):
      raise CascadeError(f"stage {name!r}: a stage name is letters, digits, '_', "
                         f"'.' and '-'")
  scopes = [s.scope for s in stages]
  if len(set(scopes)) != len(scopes):
    raise CascadeError(f"stage scopes must be unique: {scopes}")
  for s in stages:
    # TensorFlow compares names case-insensitively.
    if s.scope.split("/")[0].lower() == ENGINE_SCOPE.lower():
      raise CascadeError(f"stage '{s.name}': scope '{s.scope}' is reserved: the "
                         f"engine builds its own ops (the parse, the gates) under "
                         f"'{ENGINE_SCOPE}/'; give the stage another scope")
  return {s.name: i for i, s in enumerate(stages)}


def _check_scope_free(stage: StageSpec) -> None:
  """Refuses a scope the graph already holds (another stage's scope in other
  letter case, a name an earlier model or its saver created): TensorFlow
  would place the model under '<scope>_1' and its outputs would not be found."""
  graph = tf.compat.v1.get_default_graph()
  placed = graph.unique_name(stage.scope, mark_as_used=False)
  if placed == stage.scope:
    return
  key = stage.scope.lower()
  holder = next((op.name for op in graph.get_operations()
                 if op.name.lower() == key or op.name.lower().startswith(key + "/")), None)
  by = f" (by node '{holder}')" if holder else ""
  if holder and not holder.startswith(stage.scope):
    by += ": TensorFlow's names ignore letter case"
  raise CascadeError(f"stage '{stage.name}': scope '{stage.scope}' is already taken "
                     f"in the graph{by}, so the model would land under '{placed}'; "
                     f"give the stage another scope")


def _parse_features(serialized, features: Sequence[FeatureSpec]):
  """The in-graph parse: feature name -> [batch, *shape] tensor."""
  spec = {}
  for f in features:
    if f.dtype not in FEATURE_DTYPES:
      raise CascadeError(f"feature '{f.name}': dtype must be one of "
                         f"{sorted(FEATURE_DTYPES)}, got '{f.dtype}'")
    spec[f.name] = tf.io.FixedLenFeature(list(f.shape), tf.as_dtype(f.dtype),
                                         default_value=f.default)
  return tf.io.parse_example(serialized, spec, name="parse")


def _passthrough_tensors(parsed: Mapping[str, tf.Tensor],
                         passthrough: Sequence[str]) -> Dict[str, tf.Tensor]:
  """name -> parsed feature, for each passthrough feature."""
  for name in passthrough:
    if name not in parsed:
      raise CascadeError(f"passthrough feature '{name}' is not declared under "
                         f"input.features")
  return {name: parsed[name] for name in passthrough}


def _place_stage(stage: StageSpec, available: Mapping[str, tf.Tensor],
                 stage_order: Mapping[str, int]
                 ) -> Tuple[PlacedModel, Optional[_Gating]]:
  """Wires a stage's inputs, gates them and places its model on them."""
  inputs = {key: _resolve(ref, available, stage_order, stage, f"input '{key}' <-")
            for key, ref in stage.inputs.items()}
  with _engine_scope("stage", stage.name, "gate"):
    gating = _gating(stage, available, stage_order)
    if gating is not None:
      inputs = {k: tf.gather(t, gating.rows) for k, t in inputs.items()}
  _check_scope_free(stage)
  return place_model(stage, inputs), gating


def _resolve(reference: str, available: Mapping[str, tf.Tensor],
             stage_order: Mapping[str, int], stage: StageSpec, what: str):
  """Looks up "features.X" / "<stage>.<output>" among tensors built so far."""
  if reference in available:
    return available[reference]
  head, _, tail = reference.partition(".")
  if not tail:
    raise CascadeError(f"stage '{stage.name}': {what} {reference!r} must be "
                       f"'features.<name>' or '<stage>.<output>'")
  if head == "features":
    raise CascadeError(f"stage '{stage.name}': {what} {reference!r} names a "
                       f"feature not declared under input.features")
  if head in stage_order:
    if stage_order[head] >= stage_order[stage.name]:
      raise CascadeError(
          f"stage '{stage.name}': {what} {reference!r} refers to stage '{head}',"
          f" which does not run before '{stage.name}' (stages run in config "
          f"order; a stage may use only features and earlier stages)")
    raise CascadeError(f"stage '{stage.name}': {what} {reference!r}: stage "
                       f"'{head}' has no output '{tail}'")
  raise CascadeError(f"stage '{stage.name}': {what} {reference!r} names no "
                     f"stage (stages: {sorted(stage_order)})")


def _gating(stage: StageSpec, available: Mapping[str, tf.Tensor],
            stage_order: Mapping[str, int]) -> Optional[_Gating]:
  """The rows a stage runs on, from its run_if; None (every row) without one."""
  gate = stage_gate(stage)
  if gate is None:
    return None
  mask = _gate_mask(gate, _resolve(gate.reference, available, stage_order,
                                   stage, "run_if"), stage)
  return _Gating(gate, mask, tf.where(mask)[:, 0])


def _check_operand(gate: Gate, tensor: tf.Tensor, stage: StageSpec) -> None:
  """Refuses an output the gate cannot read: its shape (gate.operand_problem)
  or a dtype that is no number."""
  shape = tensor.shape.as_list() if tensor.shape.rank is not None else None
  problem = operand_problem(gate, shape)
  if problem:
    raise CascadeError(f"stage '{stage.name}': {problem}")
  if not (tensor.dtype.is_floating or tensor.dtype.is_integer or tensor.dtype.is_bool):
    raise CascadeError(f"stage '{stage.name}': run_if compares a number, but "
                       f"'{gate.reference}' is {tensor.dtype.name}")


def _gate_mask(gate: Gate, tensor: tf.Tensor, stage: StageSpec) -> tf.Tensor:
  """A [batch] bool mask: the gate's operand (a per-row scalar output, or
  the gate's measure of each row of a [batch, C] output) against its
  threshold, compared in float64."""
  _check_operand(gate, tensor, stage)
  if gate.measure:
    value = tf.cast(MEASURES[gate.measure].graph(tf.cast(tensor, tf.float64)), tf.float64)
  else:
    if tensor.shape.rank == 2:
      tensor = tf.squeeze(tensor, axis=1)
    value = tf.cast(tensor, tf.float64)
  threshold = tf.constant(gate.threshold, dtype=tf.float64)
  compare = getattr(tf.math, OPERATORS[gate.op])
  return compare(value, threshold)


def check_gates(spec: CascadeSpec, ungated: CascadeGraph) -> None:
  """Checks every stage's run_if against `ungated`, the graph of `spec`
  built with no gate (tune's run): the errors building `spec` would raise
  about a gate, without building it.

  Raises:
    CascadeError: naming the stage, the gate and what is wrong.
  """
  order = _check_stages(spec.stages)
  available = {f"features.{name}": t for name, t in ungated.parsed.items()}
  for stage in spec.stages:
    gate = stage_gate(stage)
    if gate is not None:
      _check_operand(gate, _resolve(gate.reference, available, order, stage, "run_if"),
                     stage)
    available.update({f"{stage.name}.{out}": ungated.fetches[f"{stage.name}/{out}"]
                      for out in stage.outputs})


def _full_batch_outputs(stage: StageSpec, model: PlacedModel,
                        gating: Optional[_Gating], batch: tf.Tensor
                        ) -> Dict[str, tf.Tensor]:
  """The model's outputs with a row per input record: a gated stage's rows
  that did not pass are filled with its fill_value."""
  if gating is None:
    return dict(model.outputs)
  return {out: _scatter(gating.rows, tensor, batch, stage.fill_value)
          for out, tensor in model.outputs.items()}


def _scatter(rows: tf.Tensor, values: tf.Tensor, batch: tf.Tensor,
             fill_value: float) -> tf.Tensor:
  """Puts per-passing-row `values` back at `rows` of a [batch, ...] tensor."""
  shape = tf.concat([[batch], tf.shape(values, out_type=tf.int64)[1:]], axis=0)
  if values.dtype == tf.string:
    fill = tf.constant("")
  elif values.dtype.is_integer or values.dtype.is_bool:
    fill = tf.cast(tf.constant(int(fill_value), tf.int64), values.dtype)
  else:
    fill = tf.constant(fill_value, dtype=values.dtype)
  filled = tf.fill(shape, fill)
  return tf.tensor_scatter_nd_update(filled, rows[:, None], values)


def _combine_plan(stage: StageSpec) -> StagePlan:
  """What `validate` prints about a combine stage (no checkpoint)."""
  gate = stage_gate(stage)
  return StagePlan(
      name=stage.name, scope=stage.scope,
      source=f"{stage.source.source_type}: {stage.source.ref}", checkpoint="",
      fingerprint="", global_step=None,
      inputs={f"input {i}": ref for i, ref in enumerate(stage.combine.inputs)},
      outputs=dict(stage.outputs), gate=str(gate) if gate is not None else "",
      restored={}, unused=[], restored_by=COMBINED_IN_GRAPH)


def _stage_plan(stage: StageSpec, model: PlacedModel,
                gating: Optional[_Gating]) -> StagePlan:
  """What `validate` prints about a placed stage."""
  return StagePlan(
      name=stage.name, scope=stage.scope,
      source=f"{stage.source.source_type}: {stage.source.ref}",
      checkpoint=model.checkpoint.prefix,
      fingerprint=model.checkpoint.fingerprint,
      global_step=model.checkpoint.global_step,
      inputs=dict(stage.inputs), outputs=dict(stage.outputs),
      gate=str(gating.gate) if gating is not None else "", restored=model.restored,
      unused=model.unused, restored_by=model.restored_by, read=list(model.read),
      copies=dict(model.copies))


def available_cores() -> int:
  """Cores this process may run on (its affinity mask, e.g. a container's)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


def session_config(spec: CascadeSpec) -> tf.compat.v1.ConfigProto:
  """The session's settings: thread pools sized to this process's share of
  the cores (SessionSpec.threads); the runner manages concurrency."""
  s = spec.session
  intra, inter = s.threads(available_cores())
  config = tf.compat.v1.ConfigProto(
      intra_op_parallelism_threads=intra,
      inter_op_parallelism_threads=inter,
      allow_soft_placement=True)
  if s.device == "cpu":
    config.device_count["GPU"] = 0
  else:
    config.gpu_options.allow_growth = True
  return config


def _close_if_alive(ref) -> None:
  session = ref()
  if session is not None:
    session.close()


class CascadeSession:
  """The one session holding every model. Thread-safe: `run` may be called
  from many threads at once."""

  def __init__(self, spec: CascadeSpec):
    start = time.perf_counter()
    self.spec = spec
    self.cascade = build_cascade_graph(spec)
    self.output_names = list(self.cascade.fetches)
    self._passthrough_names = list(self.cascade.passthrough)
    self._stage_names = list(self.cascade.rows_run)
    graph = self.cascade.graph
    # The files the launcher pinned, before and after restoring: a checkpoint
    # rewritten in place while this worker starts fails the run, never mixes.
    verify_pins(spec, "since the launcher planned the run")
    self._session = tf.compat.v1.Session(graph=graph, config=session_config(spec))
    try:
      with graph.as_default():  # Saver.restore refuses to run eagerly
        for name, model in self.cascade.models.items():
          try:
            model.saver.restore(self._session, model.checkpoint.prefix)
          except tf.errors.OpError as e:
            raise CascadeError(f"stage '{name}': restoring {model.checkpoint.prefix}"
                               f" failed: {e.message.splitlines()[0]}") from e
      graph.finalize()
      verify_pins(spec, "while this worker restored it")
      results = (list(self.cascade.fetches.values()) + list(self.cascade.passthrough.values())
                 + list(self.cascade.rows_run.values()))
      self._callable = self._make_callable(results)
      reader = self.cascade.reader
      self._read_callable = self._make_callable(
          results + [reader.kept, reader.consumed, reader.returned, reader.largest],
          feeds=[reader.handle, reader.budget])
      self._slot_handles = self._session.run(reader.slot_handles)
      self._free_slots = list(range(len(self._slot_handles)))
      self._slots_lock = threading.Lock()
      # Parsing alone: tells a record that does not parse from a model that
      # fails, at a fraction of a cascade call.
      self._parse_callable = self._make_callable(list(self.cascade.parsed.values()))
    except BaseException:
      self._session.close()
      raise
    self.load_seconds = time.perf_counter() - start
    # Release before interpreter teardown; a callable freed after TF's modules
    # are gone raises AttributeError in __del__ (docs/design.md, fact 4).
    atexit.register(_close_if_alive, weakref.ref(self))

  def _make_callable(self, fetches: Sequence[tf.Tensor],
                     feeds: Optional[Sequence[tf.Tensor]] = None):
    """A C++ callable from `feeds` (default: the serialized batch) to
    `fetches`: it skips Session.run's per-call Python bookkeeping
    (docs/design.md, fact 4)."""
    options = config_pb2.CallableOptions()
    options.feed.extend(t.name for t in (feeds or [self.cascade.serialized]))
    options.fetch.extend(t.name for t in fetches)
    return self._session._make_callable_from_options(options)  # pylint: disable=protected-access

  def parse(self, serialized: Sequence[bytes]) -> None:
    """Runs only the in-graph parse of a batch.

    Raises:
      tf.errors.InvalidArgumentError: a record does not parse.
    """
    self._parse_callable(np.asarray(serialized, dtype=object))

  def stage_of(self, error: tf.errors.OpError) -> Optional[str]:
    """The stage whose graph an error's failing node belongs to, if any."""
    match = re.search(r"\{\{node ([^}]+)\}\}", getattr(error, "message", str(error)))
    if not match:
      return None
    node = match.group(1)
    for stage in self.spec.stages:  # its gate, or the scatter of its outputs
      if node.startswith(f"{ENGINE_SCOPE}/stage/{stage.name}/"):
        return stage.name
    # Its model: the longest scope holding the node ("a/b" before "a").
    owners = [s for s in self.spec.stages if node.startswith(s.scope + "/")]
    return max(owners, key=lambda s: len(s.scope)).name if owners else None

  def run(self, serialized: Sequence[bytes]) -> CascadeResult:
    """Runs the cascade on a batch of serialized `tf.train.Example`s.

    Args:
      serialized: the records' bytes (a list or a 1-D object array).

    Raises:
      tf.errors.OpError: a record does not parse (InvalidArgumentError), or a
        stage's model fails; `parse` and `stage_of` tell which.
    """
    return self._result(iter(self._callable(np.asarray(serialized, dtype=object))))

  def _result(self, values) -> CascadeResult:
    outputs = {name: next(values) for name in self.output_names}
    passthrough = {name: next(values) for name in self._passthrough_names}
    rows_run = {name: int(next(values)) for name in self._stage_names}
    return CascadeResult(outputs, passthrough, rows_run)

  # --- reading in-graph (engine.in_graph_reader) -------------------------------

  def open_reader(self, path: str, compression: str, byte_offset: int, skip: int,
                  batch_size: int) -> Optional[int]:
    """Starts a reader slot on one file: records from `byte_offset`
    (uncompressed files) after passing over `skip` records, in batches of
    `batch_size`. Returns the slot, or None when every slot is reading."""
    with self._slots_lock:
      if not self._free_slots:
        return None
      slot = self._free_slots.pop()
    try:
      reader = self.cascade.reader
      self._session.run(reader.initializers[slot], feed_dict=reader.feeds(
          path, compression, byte_offset, skip, batch_size))
    except BaseException:
      self.close_reader(slot)
      raise
    return slot

  def read_and_run(self, slot: int, budget: int) -> Tuple[CascadeResult, ReadBatch]:
    """Reads the slot's next batch (the records of its `budget` framed bytes
    at most) and runs the cascade on it.

    Raises:
      tf.errors.OutOfRangeError: the file has no more records.
      tf.errors.OpError: a damaged record (DataLossError), a record that does
        not parse, or a stage failing; the caller rereads the batch outside
        TF to tell which.
    """
    values = iter(self._read_callable(self._slot_handles[slot], np.int64(budget)))
    result = self._result(values)
    return result, ReadBatch(*(int(next(values)) for _ in ReadBatch._fields))

  def close_reader(self, slot: int) -> None:
    """Frees a slot from open_reader."""
    with self._slots_lock:
      self._free_slots.append(slot)

  def close(self) -> None:
    """Releases the callable and the session; safe to call twice."""
    # Release the C++ callables before the session.
    self._callable = self._parse_callable = self._read_callable = None
    if getattr(self, "_session", None) is not None:
      self._session.close()
      self._session = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
