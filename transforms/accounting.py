"""What a run counts, as typed records that add up.

Every piece of work reports a `RunCounts` as DATA (not as metrics, which
runners may drop or double): the reader counts records read, the scorer rows
per stage and dead-letter reasons, the writers the files they committed.
Runners keep the outputs of committed work only, so the sum of every
`RunCounts` a run emitted is exactly what it did; `publishing.finalize`
checks `records_read == written + dead_lettered` on that sum. The scored
outputs' histograms (scoring.output_histograms) travel the same way.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Iterable, List, NamedTuple

from tfcascade.transforms.scoring.output_histograms import OutputHistograms


class WrittenFile(NamedTuple):
  """One committed staged file: what it holds and how many records."""
  kind: str  # "predictions" | "dead_letter" | "quarantine"
  path: str
  records: int


def _counter() -> collections.Counter:
  return collections.Counter()


@dataclasses.dataclass
class RunCounts:
  """Counts of one piece of work, or of a whole run (their sum).

  Attributes:
    records_read: records the reader read (and handed on to be scored).
    records_read_in_graph: of records_read, those TensorFlow's reader read
      and the session scored without Python seeing them (scoring.unit_batches).
    rows_in: stage -> rows that reached it.
    rows_run: stage -> rows its model ran on (fewer when gated).
    dead_reasons: dead-letter reason (shortened) -> records.
    quarantined: input file -> damaged ranges quarantined in it.
    files: staged files written by committed work.
    records_resumed: of records_read, those a dead run of the same job had
      already scored (its committed units, adopted by this run).
    sessions_opened: sessions opened (informative: run_metrics.json).
    histograms: the scored outputs' histograms (run_summary.json, for
      `tfcascade report`).
  """
  records_read: int = 0
  records_read_in_graph: int = 0
  rows_in: collections.Counter = dataclasses.field(default_factory=_counter)
  rows_run: collections.Counter = dataclasses.field(default_factory=_counter)
  dead_reasons: collections.Counter = dataclasses.field(default_factory=_counter)
  quarantined: collections.Counter = dataclasses.field(default_factory=_counter)
  files: List[WrittenFile] = dataclasses.field(default_factory=list)
  records_resumed: int = 0
  sessions_opened: int = 0
  histograms: OutputHistograms = dataclasses.field(default_factory=OutputHistograms)

  def add(self, other: "RunCounts") -> "RunCounts":
    """Adds `other` into this one (in place); returns self."""
    self.records_read += other.records_read
    self.records_read_in_graph += other.records_read_in_graph
    self.rows_in.update(other.rows_in)
    self.rows_run.update(other.rows_run)
    self.dead_reasons.update(other.dead_reasons)
    self.quarantined.update(other.quarantined)
    self.files.extend(other.files)
    self.records_resumed += other.records_resumed
    self.sessions_opened += other.sessions_opened
    self.histograms.add(other.histograms)
    return self

  @classmethod
  def total(cls, parts: Iterable["RunCounts"]) -> "RunCounts":
    """The sum of `parts` (an empty sum is all zeros). Closed under its own
    results, so Beam can use it as a CombineGlobally function."""
    result = cls()
    for part in parts:
      result.add(part)
    return result

  def records_in(self, kind: str) -> int:
    """Records in the committed files of one kind."""
    return sum(f.records for f in self.files if f.kind == kind)

  def to_json(self) -> dict:
    """A JSON-able dict (for unit commits); from_json reads it back."""
    return {"records_read": self.records_read,
            "records_read_in_graph": self.records_read_in_graph,
            "rows_in": dict(self.rows_in),
            "rows_run": dict(self.rows_run), "dead_reasons": dict(self.dead_reasons),
            "quarantined": dict(self.quarantined),
            "files": [list(f) for f in self.files],
            "sessions_opened": self.sessions_opened,
            "histograms": self.histograms.to_json()}

  @classmethod
  def from_json(cls, data: dict) -> "RunCounts":
    return cls(records_read=int(data["records_read"]),
               records_read_in_graph=int(data.get("records_read_in_graph", 0)),
               rows_in=collections.Counter(data["rows_in"]),
               rows_run=collections.Counter(data["rows_run"]),
               dead_reasons=collections.Counter(data["dead_reasons"]),
               quarantined=collections.Counter(data["quarantined"]),
               files=[WrittenFile(k, p, int(n)) for k, p, n in data["files"]],
               sessions_opened=int(data.get("sessions_opened", 0)),
               histograms=OutputHistograms.from_json(data.get("histograms")))
