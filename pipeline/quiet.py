"""TensorFlow without its C++ start-up chatter: the CLI's default.

TensorFlow prints INFO/WARNING lines from C++ (absl's "All log messages before
absl::InitializeLog()", oneDNN, cpu_feature_guard, MLIR, CUDA stubs) that say
nothing to a user of tfcascade. `TF_CPP_MIN_LOG_LEVEL=2` hides those logged
through TF's own logger (cpu_feature_guard, MLIR, ...); the ones logged while
TF is being imported are filtered by transforms.tf_import's quiet import.

Nothing is hidden with `--verbose`, or when the user set TF_CPP_MIN_LOG_LEVEL
themselves. Worker processes inherit TF_CPP_MIN_LOG_LEVEL: the default run's
own workers (pipeline.local_workers) import TF quietly when it is set to hide
INFO; Beam's (multi_processing, Flink, Dataflow) import TF outside the CLI and
log its oneDNN line in their own logs.
"""

from __future__ import annotations

import os

from tfcascade.transforms.tf_import import import_tensorflow

LEVEL = "2"  # TF_CPP_MIN_LOG_LEVEL: hide INFO and WARNING, keep errors


def quiet_tensorflow(verbose: bool) -> bool:
  """Imports TensorFlow (transforms.tf_import), quietly unless `verbose` or
  TF_CPP_MIN_LOG_LEVEL is set; returns whether it was quiet. Call before
  anything imports TensorFlow."""
  if verbose or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
    import_tensorflow(quiet=False)
    return False
  os.environ["TF_CPP_MIN_LOG_LEVEL"] = LEVEL
  import_tensorflow(quiet=True)
  return True
