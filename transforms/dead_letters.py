"""The dead-letter schema: what goes into `dead_letter/*.jsonl`.

Two kinds of entry share the files, one JSON object per line:

  record entry      {"source", "index", "error", "raw_b64"}: one input record
                    that was not scored (it does not parse, its outputs are
                    not finite, ...). Each counts as a record in the accounting
                    `records_read == records_written + records_dead_lettered`.
  quarantine entry  the record entry's fields plus "offset" and
                    "records_salvaged": the damaged tail of an input file
                    (input.on_corrupt: quarantine). It stands for no record
                    that was read, so it is not counted as one.

Entries are built and told apart here only.
"""

from __future__ import annotations

import base64

__all__ = ["record_entry", "quarantine_entry", "is_quarantine"]

# The field only quarantine entries have.
_QUARANTINE_FIELD = "records_salvaged"


def record_entry(source: str, index: int, error: str, raw: bytes) -> dict:
  """The dead-letter entry of one input record.

  Args:
    source: the input file.
    index: the record's 0-based index in it.
    error: why it was not scored.
    raw: the record's bytes (written base64-encoded).
  """
  return {"source": source, "index": index, "error": error,
          "raw_b64": base64.b64encode(raw).decode("ascii")}


def quarantine_entry(source: str, index: int, offset: int, error: str,
                     records_salvaged: int) -> dict:
  """The dead-letter entry of a file whose framing is damaged.

  Args:
    source: the input file.
    index: index of the first record that could not be read.
    offset: byte offset (in the decompressed stream) of that record's header.
    error: what is wrong.
    records_salvaged: good records read before the damage (they were scored).
  """
  return {"source": source, "index": index, "offset": offset, "error": error,
          _QUARANTINE_FIELD: records_salvaged, "raw_b64": ""}


def is_quarantine(entry: dict) -> bool:
  """Whether a (parsed) dead-letter entry is a quarantine entry, which stands
  for a damaged file tail rather than for a record."""
  return _QUARANTINE_FIELD in entry
