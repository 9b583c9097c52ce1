"""CascadeModelHandler: the whole cascade as ONE model for Beam's RunInference.

For your own Beam pipeline: feed serialized `tf.train.Example` bytes (or
`(key, bytes)` through Beam's `KeyedModelHandler`) to `RunInference`, get a
`PredictionResult` per record whose `inference` holds every engine output of
that row: `<stage>/<output>` for every stage, `<stage>/ran` (int64 0/1) for a
gated stage, the final answer (`final/<output>` of the last answering stage
that ran on the row, `final/stage` that stage's position in the spec's
stages: engine.final_answer, CascadeSpec.final), `passthrough/<feature>` for
the spec's parsed passthrough features.

    from apache_beam.ml.inference.base import RunInference
    import tfcascade

    handler = tfcascade.CascadeModelHandler.from_spec(spec)   # a CascadeSpec
    # or, from a job config (launcher side):
    #   handler = tfcascade.handler_from_config("configs/local.yaml")
    results = serialized | RunInference(handler)

Batches end at `max_batch_size` records or `max_batch_bytes` serialized bytes
(default: the CLI job's `batch_bytes`), whichever comes first, so wide
records (images, embeddings) do not hold GBs per batch.

One process loads ONE CascadeSession (one graph, one session, every model):
RunInference keeps the loaded model behind `beam.utils.shared.Shared`, so
every thread and DoFn instance of a worker process uses it. With
`large_model=True` one session serves every process of a machine (Beam's
`share_model_across_processes`), `model_copies=N` keeps N such sessions.

What the CLI job adds and this handler does not (the pipeline that uses it
owns them): bad records isolated one by one (here a batch holding a record
that does not parse fails as a whole; with `RunInference(...)
.with_exception_handling()` it goes to `failed_inferences`, its error's repr
carrying the first line of TF's message and the failing stage, if known),
dead-letter files, the record accounting, `_SUCCESS` and the
publish step. RunInference reports its own metrics (`num_inferences`,
`inference_batch_latency_micro_secs`, `load_model_latency_milli_secs`,
`failed_batches_counter`, ...) in namespace `tfcascade`, plus
`<stage>_rows_in` / `<stage>_rows_run` per stage.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional, Sequence

from apache_beam.ml.inference.base import ModelHandler, PredictionResult
import tensorflow as tf

from tfcascade.transforms.engine.spec import CascadeSpec
from tfcascade.transforms.formats.tfrecord_framing import DEFAULT_BATCH_BYTES
from tfcascade.transforms.metrics import NAMESPACE, StageMetrics

DEFAULT_MAX_BATCH_SIZE = 1024
# A failure reason's length at most: TF quotes a record that does not parse
# whole, and records can be megabytes.
REASON_CHARS = 500
DEFAULT_MAX_BATCH_BYTES = DEFAULT_BATCH_BYTES  # the CLI job's batch_bytes


class _BatchWeight:
  """BatchElements' element_size_fn carrying both caps in one weight.

  Beam 2.77's BatchElements caps one number per batch (its max_batch_size, a
  sum of element_size_fn) and takes no max_batch_weight, so with count cap
  M and byte cap B an element weighs max(B, bytes * M), at most M * B,
  against a fixed target of M * B: a batch of weights within M * B holds at
  most M elements (each weighs >= B) and at most B bytes (each weighs >=
  bytes * M), and a record of more than B bytes weighs M * B, a batch alone.
  Mixed sizes can end a batch a little before both caps, never after.
  """

  def __init__(self, max_batch_size: int, max_batch_bytes: int, num_bytes):
    self._count, self._bytes, self._num_bytes = max_batch_size, max_batch_bytes, num_bytes

  @property
  def target(self) -> int:
    return self._count * self._bytes

  def __call__(self, element) -> int:
    # KeyedModelHandler batches (key, example) pairs with our kwargs.
    record = element[1] if isinstance(element, tuple) and len(element) == 2 else element
    return min(self.target, max(self._bytes, self._num_bytes([record]) * self._count))


class CascadeModelHandler(ModelHandler[bytes, PredictionResult, Any]):
  """Runs every stage of a cascade, in one session, on batches of serialized
  `tf.train.Example`s."""

  def __init__(self, spec: CascadeSpec, *, min_batch_size: Optional[int] = None,
               max_batch_size: Optional[int] = DEFAULT_MAX_BATCH_SIZE,
               max_batch_duration_secs: Optional[float] = None,
               max_batch_bytes: Optional[int] = DEFAULT_MAX_BATCH_BYTES,
               large_model: bool = False, model_copies: Optional[int] = None):
    """Args:
      spec: the cascade (pipeline.config's `JobConfig.cascade_spec()` builds
        one from a YAML config).
      min_batch_size, max_batch_size, max_batch_duration_secs: Beam's
        BatchElements bounds (one session call per batch).
      max_batch_bytes: a batch also ends before a record that would take its
        serialized bytes (get_num_bytes) past this; a larger record is a
        batch alone. Several copies of a batch are alive during its session
        call, so wide records (images, embeddings) at max_batch_size would
        hold GBs. With it, batches are filled to the caps (Beam's adaptive
        batch size search, min_batch_size below max_batch_size, cannot be
        combined with it on Beam 2.77); None: count only, as Beam batches.
      large_model: one session per machine, shared by its worker processes
        (Beam's share_model_across_processes), instead of one per process.
      model_copies: that many sessions per machine (implies sharing).

    Raises:
      ValueError: max_batch_bytes with max_batch_duration_secs (Beam's
        stateful batching counts elements only), without max_batch_size, or
        with a min_batch_size below max_batch_size; or a cap below 1.
    """
    # Not ModelHandler.__init__(**kwargs): older Beam versions take none; the
    # hooks below say the same to every version.
    self._spec = spec
    self._batching = {k: v for k, v in {
        "min_batch_size": min_batch_size, "max_batch_size": max_batch_size,
        "max_batch_duration_secs": max_batch_duration_secs}.items() if v is not None}
    if max_batch_bytes is not None:
      self._batching = self._byte_capped(max_batch_bytes)
    self._large_model = bool(large_model or model_copies)
    self._copies = model_copies
    self._env_vars = {}
    self._stage_metrics = None  # created on the first batch, once per handler

  def _byte_capped(self, max_batch_bytes: int) -> Dict[str, Any]:
    """BatchElements kwargs for both caps (see _BatchWeight)."""
    count, least = self._batching.get("max_batch_size"), self._batching.get("min_batch_size")
    why = None
    if "max_batch_duration_secs" in self._batching:
      why = ("max_batch_duration_secs uses Beam's stateful batching, which counts "
             "elements and cannot cap bytes")
    elif count is None:
      why = "max_batch_bytes needs max_batch_size"
    elif least is not None and least != count:
      why = (f"min_batch_size={least} below max_batch_size={count} asks for Beam's "
             f"adaptive batch size, which cannot be combined with a byte cap on Beam "
             f"2.77 (an element heavier than the current target becomes an empty "
             f"batch)")
    if why:
      raise ValueError(f"CascadeModelHandler: {why}; pass max_batch_bytes=None")
    if count < 1 or max_batch_bytes < 1:
      raise ValueError(f"CascadeModelHandler: max_batch_size ({count}) and "
                       f"max_batch_bytes ({max_batch_bytes}) must be >= 1")
    weight = _BatchWeight(count, max_batch_bytes, self.get_num_bytes)
    return {"min_batch_size": weight.target, "max_batch_size": weight.target,
            "element_size_fn": weight}

  @classmethod
  def from_spec(cls, spec: CascadeSpec, **kwargs) -> "CascadeModelHandler":
    """The handler for a CascadeSpec (keyword arguments as __init__)."""
    return cls(spec, **kwargs)

  @property
  def spec(self) -> CascadeSpec:
    return self._spec

  def load_model(self):
    """Opens the one session: builds the graph, restores every stage.

    Raises:
      tfcascade.transforms.gpu_check.DeviceError: session.device is gpu and TensorFlow
        sees no GPU in this process.
    """
    from tfcascade.transforms.gpu_check import check_device  # pylint: disable=g-import-not-at-top
    from tfcascade.transforms.engine import CascadeSession  # pylint: disable=g-import-not-at-top
    check_device(self._spec.session.device)  # gpu without a GPU: fail, not crawl
    return CascadeSession(self._spec)

  def run_inference(self, batch: Sequence[bytes], model,
                    inference_args: Optional[Dict[str, Any]] = None
                    ) -> Iterable[PredictionResult]:
    """One session call for the batch; a PredictionResult per record."""
    records = list(batch)
    try:
      result = model.run(records)
    except tf.errors.OpError as e:
      # Beam's with_exception_handling() records repr(error), and an
      # OpError's is "InvalidArgumentError()": give it the reason.
      e.args = (_reason(model, e),)
      raise
    if self._stage_metrics is None:
      self._stage_metrics = StageMetrics(result.rows_run)
    self._stage_metrics.update({s: len(records) for s in result.rows_run},
                               result.rows_run)
    outputs = {**result.outputs,
               **{f"passthrough/{name}": v for name, v in result.passthrough.items()}}
    model_id = self.model_id
    return [PredictionResult(record, {name: value[i] for name, value in outputs.items()},
                             model_id)
            for i, record in enumerate(records)]

  @property
  def model_id(self) -> str:
    """The stages' checkpoints, e.g. 'a=/models/a,b=/models/b'."""
    return ",".join(f"{s.name}={s.checkpoint or s.source.ref}" for s in self._spec.stages)

  def get_num_bytes(self, batch: Sequence[bytes]) -> int:
    return sum(len(record) for record in batch)

  def get_metrics_namespace(self) -> str:
    return NAMESPACE

  def batch_elements_kwargs(self) -> Mapping[str, Any]:
    return dict(self._batching)

  def validate_inference_args(self, inference_args: Optional[Dict[str, Any]]):
    if inference_args:
      raise ValueError("CascadeModelHandler takes no inference_args (the config "
                       f"says everything); got {sorted(inference_args)}")

  def share_model_across_processes(self) -> bool:
    return self._large_model

  def model_copies(self) -> int:
    return self._copies or 1


def _reason(model, error: tf.errors.OpError) -> str:
  """The first line of TF's message (its node and graph lines are noise to a
  reader), after the failing stage when the error names its node."""
  lines = error.message.strip().splitlines()
  first = lines[0] if lines else type(error).__name__
  if len(first) > REASON_CHARS:
    first = first[:REASON_CHARS] + "..."
  stage = model.stage_of(error)
  return f"stage '{stage}': {first}" if stage else first
