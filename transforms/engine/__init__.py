"""TF-only cascade engine: scoped restore of several models into one session.

Public surface:
  CascadeSpec, StageSpec, FeatureSpec, ModelSource, SessionSpec: what to build.
  CascadeSession: the one graph + session; `run(serialized_examples)` returns
    a CascadeResult (outputs, parsed passthrough, rows run per stage).
  build_cascade_graph: build and validate without opening a session.
  CascadeError: every validation/wiring problem, with the culprit named.
  pin_models / ModelChangedError: the launcher pins each stage's files and
    fingerprints; a worker finding other files fails the run.
"""

import importlib

# Loaded on first use (PEP 562): `from tfcascade.transforms.engine.spec import
# ...` (the config, the CLI's prestart of worker processes) must not import
# TensorFlow, which `cascade` does.
_WHERE = {
    "CascadeResult": "cascade", "CascadeSession": "cascade", "build_cascade_graph": "cascade",
    "ModelChangedError": "pinning", "pin_models": "pinning",
    "CascadeError": "spec", "CascadeSpec": "spec", "FeatureSpec": "spec",
    "ModelSource": "spec", "SessionSpec": "spec", "StageSpec": "spec",
}

__all__ = [
    "CascadeError", "CascadeResult", "CascadeSession", "CascadeSpec", "FeatureSpec",
    "ModelChangedError", "ModelSource", "SessionSpec", "StageSpec", "build_cascade_graph",
    "pin_models",
]


def __getattr__(name):
  if name not in _WHERE:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
