"""A failed run's cause in one line, and the exit code it deserves.

Used by the CLI (the line it prints) and by the launchers (the reason a dead
run's marker records, which `tfcascade inspect` shows).
"""

from __future__ import annotations

from typing import Tuple

from tfcascade.pipeline import exit_codes
from tfcascade.transforms.publishing import finalize


def of(error: BaseException) -> Tuple[str, int]:
  """(one line, exit code) of a failed run.

  Beam wraps worker errors several times; the line of our own error says
  most. Errors that running again cannot cure (the data or the models must be
  fixed) exit REFUSED, the rest FAILED, so a scheduler retries only those.
  """
  from tfcascade.transforms.reading.record_ranges import CorruptInputError, InputChangedError  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.engine.pinning import ModelChangedError  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.gpu_check import DeviceError  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.scoring.chunk_scorer import StageFailedError  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.writing.shard_writer import OutputWriteError  # pylint: disable=g-import-not-at-top
  # Errors a worker raises on purpose: their message names the culprit.
  code_of = {
      CorruptInputError: exit_codes.REFUSED,  # fix the file, or on_corrupt: quarantine
      StageFailedError: exit_codes.REFUSED,  # the model fails on this data
      finalize.RejectionError: exit_codes.REFUSED,  # too many bad records
      InputChangedError: exit_codes.FAILED,  # a rerun plans the new inputs
      ModelChangedError: exit_codes.FAILED,  # ... and pins the new checkpoint
      DeviceError: exit_codes.FAILED,  # another worker machine may have it
      OutputWriteError: exit_codes.FAILED,  # disk full, storage flaking
      finalize.AccountingError: exit_codes.FAILED,
      finalize.ConcurrentRunError: exit_codes.FAILED,
  }
  text = str(error)
  if isinstance(error, tuple(code_of)):  # raised here, not wrapped by a runner
    text = f"{type(error).__name__}: {text}"
  # The last of our errors in the text: the innermost cause.
  found = [(text.rindex(f"{cls.__name__}: "), cls) for cls in code_of
           if f"{cls.__name__}: " in text]
  if found:
    at, cls = max(found, key=lambda f: f[0])
    return text[at:].splitlines()[0], code_of[cls]
  lines = [l for l in text.strip().splitlines() if l.strip()]
  return (lines[-1] if lines else f"{type(error).__name__} (no message)"), exit_codes.FAILED
