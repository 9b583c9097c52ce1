"""TensorFlow without its C++ start-up chatter: the CLI's default.

TensorFlow prints INFO/WARNING lines from C++ (absl's "All log messages before
absl::InitializeLog()", oneDNN, cpu_feature_guard, MLIR, CUDA stubs) that say
nothing to a user of tfcascade. `TF_CPP_MIN_LOG_LEVEL=2` hides those logged
through TF's own logger (cpu_feature_guard, MLIR, ...), but not the ones TF
logs through absl while it is being imported (oneDNN's "custom operations are
on", twice): so the import itself runs with the process's stderr captured,
and every captured line that is not INFO chatter (errors, warnings, Python
warnings) is printed after it.

Nothing is hidden with `--verbose`, or when the user set TF_CPP_MIN_LOG_LEVEL
themselves. Beam's worker processes inherit TF_CPP_MIN_LOG_LEVEL; worker
processes of their own (multi_processing, Flink, Dataflow) import TF outside
the CLI and log its oneDNN line in their own logs.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import tempfile

LEVEL = "2"  # TF_CPP_MIN_LOG_LEVEL: hide INFO and WARNING, keep errors

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


def quiet_tensorflow(verbose: bool) -> bool:
  """Imports TensorFlow quietly unless `verbose` or TF_CPP_MIN_LOG_LEVEL is
  set; returns whether it did. Call before anything imports TensorFlow."""
  if verbose or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
    return False
  os.environ["TF_CPP_MIN_LOG_LEVEL"] = LEVEL
  if "tensorflow" in sys.modules:
    return True
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      importlib.import_module("tensorflow")
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      rest = without_info(captured.read().decode("utf-8", errors="replace"))
      if rest.strip():
        print(rest, file=sys.stderr)
  return True
