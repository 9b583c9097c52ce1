"""What every kind of path `inspect` reads shares: InspectError, the one
EXPECTED phrase its errors end with, and filesystem calls (any TF/Beam
filesystem) that turn failures into one readable line.
"""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Iterator

EXPECTED = ("expected a SavedModel directory, a .meta file, a checkpoint prefix or "
            "directory, TFRecord file(s) (a path or glob) or a tfcascade output "
            "directory")


class InspectError(ValueError):
  """The path is none of the things inspect understands, or is unreadable."""


def exists(path: str) -> bool:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    return tf.io.gfile.exists(path)
  except (tf.errors.OpError, OSError):
    return False


def isdir(path: str) -> bool:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    return tf.io.gfile.isdir(path)
  except (tf.errors.OpError, OSError):
    return False


def first_line(error: BaseException) -> str:
  text = str(getattr(error, "message", None) or getattr(error, "strerror", None)
             or error).strip()
  return text.splitlines()[0] if text else type(error).__name__


def read_head(path: str, size: int = 64) -> bytes:
  """The first bytes of a file; InspectError when it cannot be read."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    with tf.io.gfile.GFile(path, "rb") as f:
      return f.read(size)
  except (tf.errors.OpError, OSError) as e:
    raise InspectError(f"cannot read {path}: {first_line(e)}") from e


def read_json(path: str):
  """A JSON file's contents; InspectError when unreadable or not JSON."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    with tf.io.gfile.GFile(path, "rb") as f:
      return json.loads(f.read())
  except (tf.errors.OpError, OSError) as e:
    raise InspectError(f"cannot read {path}: {first_line(e)}") from e
  except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
    raise InspectError(f"{path} is not JSON: {first_line(e)}") from e


def read_json_lines(path: str) -> Iterator[dict]:
  """The objects of a JSON-lines file (`.gz`: gzip), one per non-blank line;
  InspectError naming the file and line when one cannot be read."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  number = 0
  try:
    with tf.io.gfile.GFile(path, "rb") as raw:
      lines = gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw
      for number, line in enumerate(lines, 1):
        if line.strip():
          entry = json.loads(line)
          if not isinstance(entry, dict):
            raise ValueError(f"a JSON {type(entry).__name__}")
          yield entry
  except (tf.errors.OpError, OSError, EOFError, zlib.error) as e:  # gzip's errors too
    raise InspectError(f"cannot read {path}: {first_line(e)}") from e
  except ValueError as e:
    raise InspectError(f"{path} line {number}: not a JSON object: {first_line(e)}") from e


def what_it_looks_like(head: bytes) -> str:
  """A few words on what a file's first bytes suggest it is."""
  signatures = [
      (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
      (b"GIF8", "a GIF image"), (b"%PDF", "a PDF document"),
      (b"\x89HDF", "an HDF5 file (a Keras .h5 model? export it with "
                   "model.export(DIR) and use DIR as saved_model:)"),
      (b"PK\x03\x04", "a zip archive (a Keras .keras file? export it with "
                      "model.export(DIR) and use DIR as saved_model:)"),
      (b"\x1f\x8b", "gzip data that is not a TFRecord stream"),
  ]
  for magic, what in signatures:
    if head.startswith(magic):
      return what
  if not head:
    return "an empty file"
  try:
    text = head.decode("utf-8")
  except UnicodeDecodeError:
    return "binary data"
  first = text.strip().splitlines()[0][:40] if text.strip() else ""
  return f"a text file (starting {first!r})" if first else "a blank text file"
