"""`handler_from_config`: a CascadeModelHandler from a job config (launcher side).

The handler itself lives in `transforms/beam/cascade_handler.py` (worker side, which
never imports the launcher); this builds it from YAML and checks the cascade
before any pipeline starts.
"""

from __future__ import annotations

from typing import Sequence

from tfcascade.pipeline.config import load_config
from tfcascade.transforms.beam.cascade_handler import CascadeModelHandler


def handler_from_config(path: str, overrides: Sequence[str] = (), *, check: bool = True,
                        **kwargs) -> CascadeModelHandler:
  """The RunInference handler for a job config's cascade.

  Args:
    path: the YAML config (its `input`, `stages`, `session` and `batch_size`
      are used; `output` and `dead_letter` belong to the CLI job). Its
      required passthrough features come back as `passthrough/<name>`.
    overrides: `--set`-style `dotted.key=value` strings.
    check: build the graph and check every checkpoint now, before a
      pipeline starts (CascadeError naming the problem), and pin each
      stage's files: workers restore exactly those or fail
      (ModelChangedError). Without it, each worker resolves a checkpoint
      directory itself.
    **kwargs: CascadeModelHandler's (max_batch_size and max_batch_bytes
      default to the config's batch_size and batch_bytes).

  Raises:
    tfcascade.pipeline.config.ConfigError, tfcascade.transforms.engine.CascadeError.
  """
  config = load_config(path, overrides)
  spec = config.cascade_spec()
  if check:  # and pin the models, as the CLI job does (engine.pinning)
    from tfcascade.transforms.engine import build_cascade_graph, pin_models  # pylint: disable=g-import-not-at-top
    spec = pin_models(spec, build_cascade_graph(spec).plan)
  kwargs.setdefault("max_batch_size", config.batch_size)
  kwargs.setdefault("max_batch_bytes", config.batch_bytes)
  return CascadeModelHandler.from_spec(spec, **kwargs)
