"""Staged output files with a commit protocol: exactly once under retries.

Every attempt of a unit of work (a Beam bundle, a Spark task) writes its own
file with a unique name and reports `WrittenFile(kind, path, records)` as
data. Runners keep the outputs of committed attempts only, so the files named
in those reports are exactly the ones to publish; a failed or duplicate
attempt's file is named nowhere and is deleted with the run's staging
directory. Records are counted here, where they are written: no second pass
re-reads the output.

Engine-agnostic (no Beam pipeline API): the Beam job and the Spark job both
use `ShardWriter`.
"""

from __future__ import annotations

import uuid
from typing import Optional

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from tfcascade.transforms.accounting import WrittenFile


class ShardWriter:
  """Appends ready-encoded blobs to one new, uniquely named staged file.

  The file is created on the first write, so an attempt that writes nothing
  leaves nothing behind.
  """

  def __init__(self, directory: str, kind: str, suffix: str,
               compression: str = "none"):
    self.kind = kind
    self.path = FileSystems.join(directory, f"{kind}-{uuid.uuid4().hex}{suffix}")
    self._compression = (CompressionTypes.GZIP if compression == "gzip"
                         else CompressionTypes.UNCOMPRESSED)
    self._file = None
    self.records = 0

  def write(self, blob: bytes, records: int) -> None:
    """Appends `blob`, which holds `records` encoded records."""
    if self._file is None:
      self._file = FileSystems.create(self.path, mime_type="application/octet-stream",
                                      compression_type=self._compression)
    self._file.write(blob)
    self.records += records

  def close(self) -> Optional[WrittenFile]:
    """Closes the file; None when nothing was written."""
    if self._file is None:
      return None
    self._file.close()
    self._file = None
    return WrittenFile(self.kind, self.path, self.records)
