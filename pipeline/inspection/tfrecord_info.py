"""`inspect` on TFRecord files: record counts (every CRC checked) and the
feature schema inferred from the first records; `read_records`, the reader
`validate`'s and `tune`'s samples share."""

from __future__ import annotations

import collections
import itertools
import re
from typing import Dict, Iterator, List, Optional

from tfcascade.pipeline.inspection.inspect_io import (
    EXPECTED, InspectError, first_line, read_head, what_it_looks_like)
from tfcascade.transforms.engine.spec import LIST_KIND_DTYPES

_SCHEMA_SAMPLE = 1000
TFRECORD_NAME = re.compile(r"\.(tfrecords?|tfr)(\.gz|\.gzip)?$|\.tfrecord-|part-", re.I)


def read_records(path: str, *, compression: str = "auto", limit: Optional[int] = None,
                 max_record_bytes: Optional[int] = None) -> Iterator[bytes]:
  """The records of one TFRecord file (the first `limit`), every CRC checked.

  Shared by `inspect` and `validate`'s sample; any Beam FileSystems path.

  Raises:
    tfcascade.transforms.formats.tfrecord_framing.CorruptRecordError: damaged
      framing.
  """
  from tfcascade.transforms.formats import tfrecord_framing as framing  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.reading.record_ranges import open_raw  # pylint: disable=g-import-not-at-top
  chunks = framing.read_record_chunks(
      path, compression=compression, chunk_size=min(limit or 1024, 1024),
      max_record_bytes=max_record_bytes or framing.DEFAULT_MAX_RECORD_BYTES,
      open_fn=open_raw)
  records = (record for chunk in chunks for _, record in chunk)
  return itertools.islice(records, limit)


def read_all(path: str, head: Optional[bytes] = None) -> Iterator[bytes]:
  """Every record of one file, for inspect: a file that is not TFRecord,
  damaged or unreadable is one InspectError line (`head`: its first bytes,
  when already read)."""
  from tfcascade.transforms.formats import tfrecord_framing as framing  # pylint: disable=g-import-not-at-top
  try:
    yield from read_records(path)
  except framing.CorruptRecordError as e:
    if e.index == 0 and e.offset == 0:  # not even one record: a wrong kind of file
      head = head if head is not None else read_head(path)
      raise InspectError(f"{path} is not a TFRecord file ({e.reason} at its first "
                         f"record; it looks like {what_it_looks_like(head)}); "
                         f"{EXPECTED}") from e
    raise InspectError(str(e)) from e
  except InspectError:
    raise
  except Exception as e:  # pylint: disable=broad-except; IO errors of any filesystem
    raise InspectError(f"cannot read {path}: {first_line(e)}") from e


def describe_tfrecords(files: List[str], head: Optional[bytes] = None) -> str:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  lines, total = [], 0
  list_kinds: Dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  lengths: Dict[str, set] = collections.defaultdict(set)
  sampled = 0
  for path in files:
    count = 0
    for record in read_all(path, head if len(files) == 1 else None):
      count += 1
      if sampled < _SCHEMA_SAMPLE:
        sampled += 1
        try:
          example = tf.train.Example.FromString(record)
        except Exception:  # a record that is not an Example: say so, go on
          list_kinds["<not a tf.train.Example>"]["bytes"] += 1
          continue
        for name, feature in example.features.feature.items():
          list_kind = feature.WhichOneof("kind") or "empty"
          list_kinds[name][list_kind] += 1
          lengths[name].add(len(getattr(feature, list_kind).value) if list_kind != "empty" else 0)
    total += count
    lines.append(f"  {path}: {count:,} records")
  lines.insert(0, f"{len(files)} file(s), {total:,} records")
  lines.append(f"inferred features (from the first {sampled:,} records):")
  for name in sorted(list_kinds):
    list_kind = list_kinds[name].most_common(1)[0][0]
    seen = sorted(lengths[name])
    shape = ([] if seen == [1] else [seen[0]]) if len(seen) == 1 else f"varying {seen[0]}..{seen[-1]}"
    present = sum(list_kinds[name].values())
    lines.append(f"  {name}: {{dtype: {LIST_KIND_DTYPES.get(list_kind, list_kind)}, shape: {shape}}}"
                 + ("" if present == sampled else f"  (present in {present} of {sampled})"))
  return "\n".join(lines)
