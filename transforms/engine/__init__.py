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

from tfcascade.transforms.engine.cascade import (CascadeResult, CascadeSession,
                                                build_cascade_graph)
from tfcascade.transforms.engine.pinning import ModelChangedError, pin_models
from tfcascade.transforms.engine.spec import (CascadeError, CascadeSpec, FeatureSpec,
                                              ModelSource, SessionSpec, StageSpec)

__all__ = [
    "CascadeError", "CascadeResult", "CascadeSession", "CascadeSpec", "FeatureSpec",
    "ModelChangedError", "ModelSource", "SessionSpec", "StageSpec", "build_cascade_graph",
    "pin_models",
]
