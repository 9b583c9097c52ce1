"""What a run did, as `inspect` lines: its summary (run_summary.json) or,
for a run that died before writing one, the counts of the units it
committed; and its top dead-letter reasons, each with its full error and
one record it happened to. The counts are the run's own (reasons shortened
to their first 120 characters); the full text and the record come from its
dead-letter files (one JSON entry a line: transforms/formats/dead_letters.py).
"""

from __future__ import annotations

import glob
import os
from typing import Dict, List

from tfcascade.pipeline.inspection.inspect_io import InspectError, read_json, read_json_lines
from tfcascade.pipeline.summary_text import format_summary
from tfcascade.transforms.publishing.output_layout import DEAD_LETTER, PREDICTIONS

_TOP = 5
_SCAN_ENTRIES = 100_000  # read at most this many entries looking for examples


def read_summary(path: str) -> dict:
  """A run_summary.json; InspectError when it is not one."""
  summary = read_json(path)
  if not isinstance(summary, dict) or "records_read" not in summary:
    raise InspectError(f"{path} is not a tfcascade run summary (no records_read)")
  return summary


def summary_lines(summary: dict, path: str, dead_letter_dir: str) -> List[str]:
  """The summary's lines and its top dead-letter reasons (`path`: the
  summary's file, named if its contents are not what a run writes)."""
  try:
    text = format_summary(summary)
  except (KeyError, TypeError, ValueError, AttributeError) as e:
    raise InspectError(f"{path} is not a tfcascade run summary "
                       f"({type(e).__name__}: {e})") from e
  return text.splitlines() + reason_lines(summary.get("dead_letter_reasons") or {},
                                          dead_letter_files(dead_letter_dir))


def counts_lines(counts, units: int, when: str) -> List[str]:
  """What a run's committed units add up to (a RunCounts), for a run with
  no summary; `when`: "so far" or "before it stopped"."""
  lines = [f"{units} unit(s) committed {when}: records read {counts.records_read:,}, "
           f"written {counts.records_in(PREDICTIONS):,}, dead-lettered "
           f"{counts.records_in(DEAD_LETTER):,}"]
  for stage in counts.rows_in:
    lines.append(f"  stage {stage}: ran on {counts.rows_run[stage]:,} of "
                 f"{counts.rows_in[stage]:,} rows")
  return lines


def dead_letter_files(directory: str) -> List[str]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    return sorted(tf.io.gfile.glob(os.path.join(glob.escape(directory),
                                                f"{DEAD_LETTER}-*.jsonl")))
  except (tf.errors.OpError, OSError):
    return []


def reason_lines(reasons: Dict[str, int], files: List[str]) -> List[str]:
  """Lines (indented two spaces) on the most frequent reasons; [] for none."""
  top = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))[:_TOP]
  if not top:
    return []
  examples = _examples(files, [reason for reason, _ in top])
  where = (f" (dead-letter entries: {os.path.dirname(files[0])}/{DEAD_LETTER}-*.jsonl)"
           if files else "")
  lines = [f"  top dead-letter reasons{where}:"]
  for reason, count in top:
    entry = examples.get(reason)
    error = (str(entry["error"]) if entry else reason).strip().splitlines()
    lines.append(f"    {count:,} x {error[0] if error else '(no message)'}" + (
        f"  (e.g. record {entry.get('index')} of {entry.get('source')})" if entry else ""))
  if len(reasons) > _TOP:
    lines.append(f"    ... and {len(reasons) - _TOP} more reasons")
  return lines


def _examples(files: List[str], reasons: List[str]) -> Dict[str, dict]:
  """reason -> the first entry whose error starts with it."""
  found, scanned = {}, 0
  for path in files:
    try:
      for entry in read_json_lines(path):
        scanned += 1
        error = str(entry.get("error", ""))
        for reason in reasons:
          if reason not in found and error.startswith(reason):
            found[reason] = entry
        if len(found) == len(reasons) or scanned >= _SCAN_ENTRIES:
          return found
    except InspectError:  # a file still being written ends mid-line: examples are extras
      continue
  return found
