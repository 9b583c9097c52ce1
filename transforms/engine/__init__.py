"""TF-only cascade engine: scoped restore of several models into one session.

Public surface:
  CascadeSpec, StageSpec, FeatureSpec, ModelSource, SessionSpec: what to build.
  CascadeSession: the one graph + session; `run(serialized_examples)`.
  build_cascade_graph: build and validate without opening a session.
  CascadeError: every validation/wiring problem, with the culprit named.
"""

from transforms.engine.cascade import CascadeSession, build_cascade_graph
from transforms.engine.spec import (CascadeError, CascadeSpec, FeatureSpec,
                                    ModelSource, SessionSpec, StageSpec)

__all__ = [
    "CascadeError", "CascadeSession", "CascadeSpec", "FeatureSpec",
    "ModelSource", "SessionSpec", "StageSpec", "build_cascade_graph",
]
