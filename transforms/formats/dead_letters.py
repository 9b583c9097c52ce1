"""The dead-letter schema: what goes into `dead_letter/*.jsonl`.

Two kinds of entry, one JSON object per line, in files of their own:

  record entry      {"source", "index", "error", "raw_b64"}: one input record
                    that was not scored (it does not parse, its outputs are
                    not finite, ...). Each counts as a record in the accounting
                    `records_read == records_written + records_dead_lettered`.
                    Files: dead_letter/dead_letter-*.jsonl.
  quarantine entry  the record entry's fields plus "offset" and
                    "records_salvaged": the damaged tail of an input file
                    (input.on_corrupt: quarantine). It stands for no record
                    that was read, so it is not counted as one.
                    Files: dead_letter/quarantine-*.jsonl.

Entries are built here only.
"""

from __future__ import annotations

import base64
import json
from typing import Tuple

__all__ = ["record_entry", "quarantine_entry", "entry_line"]


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
    records_salvaged: good records read before the damage (they were
      scored): of the file, or of its byte range when it was split.
  """
  return {"source": source, "index": index, "offset": offset, "error": error,
          "records_salvaged": records_salvaged, "raw_b64": ""}


def entry_line(entry: dict) -> Tuple[int, bytes]:
  """An entry as one JSON line, ready to append: (1 record, its bytes)."""
  return 1, (json.dumps(entry, sort_keys=True) + "\n").encode("utf-8")
