"""tfcascade: batch cascade inference of several TF1 checkpoints in one session.

The public API (everything else may move between releases):

    import tfcascade
    config = tfcascade.load_config("configs/local.yaml", ["batch_size=512"])
    plan = tfcascade.validate(config)        # every check before data; raises
    summary = tfcascade.run(config, ["--runner=DirectRunner"], overwrite=True)

    # the whole cascade as one model in YOUR Beam pipeline:
    handler = tfcascade.handler_from_config("configs/local.yaml")
    results = serialized_examples | RunInference(handler)

Installed layout: `tfcascade.pipeline` (the launcher: CLI, config, jobs) and
`tfcascade.transforms` (the workers: read -> score -> write -> publish, with a
TF-only `engine`); the repository keeps them as its top-level `pipeline/` and
`transforms/` folders. Names resolve on first use, so `import tfcascade` is
cheap and a worker importing `tfcascade.transforms` loads nothing of the
launcher.
"""

import importlib

_PUBLIC = {
    # name: (module, attribute)
    "load_config": ("tfcascade.pipeline.config", "load_config"),
    "JobConfig": ("tfcascade.pipeline.config", "JobConfig"),
    "ConfigError": ("tfcascade.pipeline.config", "ConfigError"),
    "validate": ("tfcascade.pipeline.run_plan", "preflight"),
    "PreflightError": ("tfcascade.pipeline.input_files", "PreflightError"),
    "run": ("tfcascade.pipeline.beam_job", "run"),
    "handler_from_config": ("tfcascade.pipeline.handler_config", "handler_from_config"),
    "CascadeModelHandler": ("tfcascade.transforms.beam.cascade_handler",
                            "CascadeModelHandler"),
    "CascadeSpec": ("tfcascade.transforms.engine.spec", "CascadeSpec"),
    "CascadeError": ("tfcascade.transforms.engine.spec", "CascadeError"),
    "CascadeSession": ("tfcascade.transforms.engine", "CascadeSession"),
    "CascadeResult": ("tfcascade.transforms.engine", "CascadeResult"),
}
__all__ = sorted(_PUBLIC)
__version__ = "0.1.0"


def __getattr__(name):
  if name not in _PUBLIC:
    raise AttributeError(f"module 'tfcascade' has no attribute {name!r}")
  module, attribute = _PUBLIC[name]
  value = getattr(importlib.import_module(module), attribute)
  globals()[name] = value  # resolved once
  return value


def __dir__():
  return sorted(set(globals()) | set(__all__))
