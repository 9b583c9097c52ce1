"""`session.device: gpu` fails fast where TensorFlow sees no GPU.

Without this check a session asked to run on a GPU quietly runs on the CPU
(the engine allows soft placement), many times slower than planned. The
launcher checks when the workers run on its own machine (DirectRunner,
Spark local, `validate`, `tune`); CascadeModelHandler checks in each worker
process before it opens its session. No Beam here; TensorFlow is imported
when asked.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Iterator, List, Optional

INSTALL_HINT = ("install TensorFlow's GPU build and NVIDIA's libraries with "
                "`pip install -c constraints.txt '.[gpu]'` (docs/install.md), or set "
                "session.device: cpu")


class DeviceError(RuntimeError):
  """The session's device is not available in this process."""


@contextlib.contextmanager
def _stderr_lines() -> Iterator[List[str]]:
  """Captures what C++ writes to stderr (fd 2) inside the block."""
  lines: List[str] = []
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield lines
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      lines.extend(captured.read().decode("utf-8", errors="replace").splitlines())


def gpu_problem() -> Optional[str]:
  """Why a session here cannot run on a GPU, or None when TF sees one."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with _stderr_lines() as lines:
    gpus = tf.config.list_physical_devices("GPU")
  if gpus:
    return None
  if not tf.test.is_built_with_cuda():
    return (f"session.device is gpu, but this TensorFlow ({tf.__version__}) is a "
            f"CPU-only build (tensorflow-cpu?): {INSTALL_HINT}")
  # TF says why in an E-line of its own (e.g. "failed call to cuInit: ...").
  reasons = [line.split("] ", 1)[-1] for line in lines if "cuInit" in line or "CUDA" in line]
  why = reasons[0] if reasons else "no CUDA device is visible"
  return (f"session.device is gpu, but TensorFlow {tf.__version__} finds no GPU on "
          f"this machine ({why}); check the NVIDIA driver (nvidia-smi) and "
          f"CUDA_VISIBLE_DEVICES, or {INSTALL_HINT}")


def check_device(device: str) -> None:
  """Raises DeviceError when `device` is "gpu" and TF sees no GPU here."""
  if device == "gpu":
    problem = gpu_problem()
    if problem:
      raise DeviceError(problem)
