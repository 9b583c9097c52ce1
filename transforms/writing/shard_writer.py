"""Staged output files with a commit protocol: exactly once under retries.

Every attempt of a unit of work (a Beam bundle, a Spark task) writes its own
file with a unique name and reports `WrittenFile(kind, path, records)` as
data. Runners keep the outputs of committed attempts only, so the files named
in those reports are exactly the ones to publish; a failed or duplicate
attempt's file is named nowhere and is deleted with the run's staging
directory. Records are counted here, where they are written: no second pass
re-reads the output.

A file that cannot be created, written or closed (a full disk, lost
permissions) raises `OutputWriteError` naming the file and the OS error: the
run fails (exit 1) before anything is published, so the previous output is
untouched. The half-written file is deleted at once (best effort), so a full
disk is not left fuller for the next attempt.

`failures_named` gives other writers of the output (the publish step) the
same one-line errors.

Engine-agnostic (no Beam pipeline API): the Beam job and the Spark job both
use `ShardWriter` (and `parquet_writer.ParquetShardWriter`, its Parquet
form).
"""

from __future__ import annotations

import contextlib
import errno
import uuid
from typing import Iterator, Optional

from apache_beam.io.filesystem import CompressedFile, CompressionTypes
from apache_beam.io.filesystems import FileSystems

from tfcascade.transforms.accounting import WrittenFile


class OutputWriteError(RuntimeError):
  """A file of the output could not be created, written or closed (a full
  disk, lost permissions); the message says what that left. A retry may cure
  it (space freed, permissions restored), so the run FAILS (exit 1), not
  refused."""


def _os_error(error: BaseException) -> Optional[OSError]:
  """The OSError that says what went wrong: `error` itself, or the first one
  Beam's BeamIOError (an OSError without an errno) wraps per path."""
  details = getattr(error, "exception_details", None)
  if isinstance(details, dict):
    for inner in details.values():
      if isinstance(inner, OSError):
        return _os_error(inner)
  return error if isinstance(error, OSError) else None


def describe_os_error(error: OSError) -> str:
  """"No space left on device (ENOSPC)": the OS's words and the errno's name
  (what a user searches for); Python's own text when there is no errno."""
  error = _os_error(error) or error
  code = getattr(error, "errno", None)
  if code is None:
    return str(error).splitlines()[0] if str(error) else type(error).__name__
  name = errno.errorcode.get(code, f"errno {code}")
  return f"{error.strerror or str(error)} ({name})"


NOT_PUBLISHED = "nothing was published and the previous output is untouched"


def write_error(doing: str, path: str, error: OSError,
                outcome: str = NOT_PUBLISHED) -> OutputWriteError:
  """"<doing> <path> failed: <OS error>[ (at <where>)]; <outcome>": one line.
  An OSError from write() or close() carries no file name, so `path` is
  the caller's; a different file named by the error (a directory that
  could not be made) is added."""
  cause = _os_error(error) or error
  where = getattr(cause, "filename", None)
  at = f" (at {where})" if where and where != path else ""
  return OutputWriteError(f"{doing} {path} failed: {describe_os_error(error)}{at}; {outcome}")


@contextlib.contextmanager
def failures_named(doing: str, path: str, outcome: str = NOT_PUBLISHED) -> Iterator[None]:
  """OSErrors (Beam's BeamIOError included) inside become OutputWriteError
  naming `path` and what the failure left, e.g.
  `with failures_named("writing the publish journal", path): ...`."""
  try:
    yield
  except OSError as e:
    raise write_error(doing, path, e, outcome) from e


class ShardWriter:
  """Appends ready-encoded blobs to one new, uniquely named staged file.

  The file is created on the first write, so an attempt that writes nothing
  leaves nothing behind.
  """

  def __init__(self, directory: str, kind: str, suffix: str,
               compression: str = "none"):
    self.kind = kind
    self.path = FileSystems.join(directory, f"{kind}-{uuid.uuid4().hex}{suffix}")
    self._gzip = compression == "gzip"
    self._raw = None  # the file itself
    self._file = None  # what is written to: the file, or gzip around it
    self.records = 0

  def write(self, blob: bytes, records: int) -> None:
    """Appends `blob`, which holds `records` encoded records.

    Raises:
      OutputWriteError: the file cannot be created or written.
    """
    if self._file is None:
      self._raw = self._create()
      # Compressed here, not by FileSystems.create: a failed gzip close skips
      # closing the file beneath, and _failed must close (free) it.
      self._file = (CompressedFile(self._raw, CompressionTypes.GZIP) if self._gzip
                    else self._raw)
    try:
      self._file.write(blob)
    except OSError as e:
      raise self._failed("writing", e) from e
    self.records += records

  def close(self) -> Optional[WrittenFile]:
    """Closes the file; None when nothing was written.

    Raises:
      OutputWriteError: the file's last bytes cannot be written.
    """
    if self._file is None:
      return None
    try:
      self._file.close()
    except OSError as e:
      raise self._failed("closing", e) from e
    self._file = self._raw = None
    return WrittenFile(self.kind, self.path, self.records)

  def _create(self):
    """The new file, its bytes as written (no compression layer).

    Raises:
      OutputWriteError: it cannot be created.
    """
    try:
      return FileSystems.create(self.path, mime_type="application/octet-stream",
                                compression_type=CompressionTypes.UNCOMPRESSED)
    except OSError as e:
      raise self._failed("creating", e) from e

  def _failed(self, doing: str, error: OSError) -> OutputWriteError:
    """Drops the broken file (best effort: it is named nowhere, and on a full
    disk its bytes are what the next attempt needs) and says what failed."""
    for broken in (self._file, self._raw):  # gzip's close may skip the file's
      if broken is not None:
        try:
          broken.close()
        except Exception:  # pylint: disable=broad-except; it failed already
          pass
    self._file = self._raw = None
    try:
      FileSystems.delete([self.path])
    except Exception:  # pylint: disable=broad-except; absent, or the run fails anyway
      pass
    return write_error(f"{doing} the staged output file", self.path, error)
