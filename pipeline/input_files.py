"""The run's input files, matched and pinned (launcher side, TF-free: the
default run's worker processes are started from it before TensorFlow loads,
pipeline.local_workers)."""

from __future__ import annotations

from typing import List

from tfcascade.pipeline.config import JobConfig
from tfcascade.transforms.formats import tfrecord_framing as framing
from tfcascade.transforms.paths import match_input
from tfcascade.transforms.reading.record_ranges import InputFile, open_raw


class PreflightError(RuntimeError):
  """A problem found before any data is processed; names the culprit."""


def match_inputs(config: JobConfig) -> List[InputFile]:
  """Expands the input patterns and pins each file (size, modification time);
  every pattern must match a file.

  Raises:
    PreflightError: naming each pattern that matched nothing.
  """
  files, empty = {}, []
  for pattern in config.input_patterns:
    try:
      found = match_input(pattern)  # docs/reference.md: input.pattern
    except Exception as e:  # BeamIOError wraps the filesystem's own error
      raise PreflightError(f"input.pattern {pattern!r}: cannot list: {e}") from e
    found = [m for m in found if not m.path.endswith(".idx")]
    if not found:
      empty.append(pattern)
    for m in found:
      files[m.path] = (m.size_in_bytes, float(m.last_updated_in_seconds or 0.0))
  if empty:
    raise PreflightError("input.pattern matches no file: " + ", ".join(empty))
  result = []
  for path, (size, modified) in sorted(files.items()):
    compression = framing.detect_compression(
        path, config.input.compression, open_fn=open_raw) if size else "none"
    result.append(InputFile(path, compression, size, modified))
  return result
