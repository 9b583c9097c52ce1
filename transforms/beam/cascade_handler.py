"""CascadeModelHandler: the whole cascade as ONE model for Beam's RunInference.

For your own Beam pipeline: feed serialized `tf.train.Example` bytes (or
`(key, bytes)` through Beam's `KeyedModelHandler`) to `RunInference`, get a
`PredictionResult` per record whose `inference` holds every engine output of
that row: `<stage>/<output>` for every stage, `<stage>/ran` (int64 0/1) for a
gated stage, `passthrough/<feature>` for the spec's parsed passthrough
features.

    from apache_beam.ml.inference.base import RunInference
    import tfcascade

    handler = tfcascade.CascadeModelHandler.from_spec(spec)   # a CascadeSpec
    # or, from a job config (launcher side):
    #   handler = tfcascade.handler_from_config("configs/local.yaml")
    results = serialized | RunInference(handler)

One process loads ONE CascadeSession (one graph, one session, every model):
RunInference keeps the loaded model behind `beam.utils.shared.Shared`, so
every thread and DoFn instance of a worker process uses it. With
`large_model=True` one session serves every process of a machine (Beam's
`share_model_across_processes`), `model_copies=N` keeps N such sessions.

What the CLI job adds and this handler does not (the pipeline that uses it
owns them): bad records isolated one by one (here a batch holding a record
that does not parse fails as a whole; with `RunInference(...)
.with_exception_handling()` it goes to `failed_inferences` with TF's
message), dead-letter files, the record accounting, `_SUCCESS` and the
publish step. RunInference reports its own metrics (`num_inferences`,
`inference_batch_latency_micro_secs`, `load_model_latency_milli_secs`,
`failed_batches_counter`, ...) in namespace `tfcascade`, plus
`<stage>_rows_in` / `<stage>_rows_run` per stage.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional, Sequence

from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from tfcascade.transforms.engine.spec import CascadeSpec
from tfcascade.transforms.metrics import NAMESPACE, StageMetrics
DEFAULT_MAX_BATCH_SIZE = 1024


class CascadeModelHandler(ModelHandler[bytes, PredictionResult, Any]):
  """Runs every stage of a cascade, in one session, on batches of serialized
  `tf.train.Example`s."""

  def __init__(self, spec: CascadeSpec, *, min_batch_size: Optional[int] = None,
               max_batch_size: Optional[int] = DEFAULT_MAX_BATCH_SIZE,
               max_batch_duration_secs: Optional[float] = None,
               large_model: bool = False, model_copies: Optional[int] = None):
    """Args:
      spec: the cascade (pipeline.config's `JobConfig.cascade_spec()` builds
        one from a YAML config).
      min_batch_size, max_batch_size, max_batch_duration_secs: Beam's
        BatchElements bounds (one session call per batch).
      large_model: one session per machine, shared by its worker processes
        (Beam's share_model_across_processes), instead of one per process.
      model_copies: that many sessions per machine (implies sharing).
    """
    # Not ModelHandler.__init__(**kwargs): older Beam versions take none; the
    # hooks below say the same to every version.
    self._spec = spec
    self._batching = {k: v for k, v in {
        "min_batch_size": min_batch_size, "max_batch_size": max_batch_size,
        "max_batch_duration_secs": max_batch_duration_secs}.items() if v is not None}
    self._large_model = bool(large_model or model_copies)
    self._copies = model_copies
    self._env_vars = {}
    self._stage_metrics = None  # created on the first batch, once per handler

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
    result = model.run(records)
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
