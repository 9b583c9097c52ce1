"""`import tensorflow` without the optional libraries Keras drags in, and
(quiet) without the INFO lines TF's C++ side prints while it loads.

Importing TensorFlow imports Keras 3 eagerly (its optimizers), and Keras
imports whatever optional packages it finds installed: scikit-learn (with
SciPy) for its sklearn wrappers, matplotlib.pyplot for an image gallery,
pandas for its data adapters. None of that is used by tfcascade's scoring,
yet with the `demo` and `plot` extras installed it costs about 3 CPU seconds
of a ~7 s import (measured: `python -c "import tensorflow"`, docs/performance.md)
in the launcher and again in every worker process Beam or Spark starts.

So our own entry points (the CLI, and the workers of our own jobs) import TF
with those packages hidden, then un-hide them: a later `import matplotlib`
(tune, report) or `import sklearn` (demo) imports them as usual. Only Keras's
optional helpers keep seeing them as absent. Never used for code that runs
inside a user's own process (the RunInference handler): their Keras may want
pandas.

Quiet: TF logs some INFO lines through absl while it is being imported
(absl's "All log messages before absl::InitializeLog()", oneDNN, CUDA stubs),
which TF_CPP_MIN_LOG_LEVEL does not reach; the import runs with the process's
stderr captured, and every captured line that is not INFO chatter (errors,
warnings, Python warnings) is printed after it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
import tempfile
from types import ModuleType
from typing import Optional

# Optional to Keras (each import is wrapped in `except ImportError`), heavy,
# and not used by a scoring process.
KERAS_OPTIONAL = ("sklearn", "scipy", "matplotlib", "pandas")


# An INFO record: absl's format (`I0000 00:00:17... 123 port.cc:153] ...`),
# TF's own (`2026-11-30 10:00:00.123: I tensorflow/...`), and absl's
# pre-initialisation notice.
_INFO = re.compile(r"^(I\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\]"
                   r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: I "
                   r"|WARNING: All log messages before absl::InitializeLog\(\))")
# Any other record starts a line that is kept.
_RECORD = re.compile(r"^([EWF]\d{4} \d\d:\d\d:\d\d|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [EWF] "
                     r"|Traceback|\S+(Warning|Error): |\S+:\d+: \w*Warning)")


def without_info(text: str) -> str:
  """`text` less TF's INFO records (with their continuation lines)."""
  kept, dropping = [], False
  for line in text.splitlines():
    if _INFO.match(line):
      dropping = True
    elif _RECORD.match(line):
      dropping = False
    if not dropping:
      kept.append(line)
  return "\n".join(kept)


@contextlib.contextmanager
def _stderr_without_info():
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      rest = without_info(captured.read().decode("utf-8", errors="replace"))
      if rest.strip():
        print(rest, file=sys.stderr)


def import_tensorflow(quiet: Optional[bool] = None) -> ModuleType:
  """Imports (or returns the already imported) TensorFlow, hiding
  KERAS_OPTIONAL from Keras while it loads (those already imported stay).

  Args:
    quiet: without TF's INFO lines; None (workers): when TF_CPP_MIN_LOG_LEVEL
      hides INFO, as the CLI sets it for the processes it starts.
  """
  if "tensorflow" in sys.modules:
    return sys.modules["tensorflow"]
  if quiet is None:
    quiet = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") not in ("", "0")
  hidden = [name for name in KERAS_OPTIONAL if name not in sys.modules]
  for name in hidden:
    sys.modules[name] = None  # `import name` raises ImportError
  try:
    with _stderr_without_info() if quiet else contextlib.nullcontext():
      return importlib.import_module("tensorflow")
  finally:
    for name in hidden:
      if sys.modules.get(name, False) is None:
        del sys.modules[name]
