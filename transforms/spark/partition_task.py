"""What one Spark task runs: its ReadRanges -> scored, written, counted.

The Spark engine's worker side, built from the same pieces as the Beam job:
the reader (`read_range`), the scorer (`ChunkScorer`: the one CascadeSession,
bad-record isolation, encoding), the dead-letter schema and the staged-file
writer (`ShardWriter`). A task attempt writes its own uniquely named files
and returns its RunCounts; Spark keeps the result of one successful
attempt per partition, so the driver publishes exactly the committed files
(publishing.finalize) — a retried or speculative attempt's files are named
nowhere and are deleted with the run's staging directory.

No pyspark import at module level: Spark's Python workers import this module
by name (so the per-process session cache below survives across tasks with
`spark.python.worker.reuse`), and it must also import where Spark is absent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import threading
from typing import Dict, Iterable, Iterator, Sequence, Tuple

from tfcascade.transforms.accounting import RunCounts
from tfcascade.transforms.formats.dead_letters import entry_line
from tfcascade.transforms.gpu_check import check_device
from tfcascade.transforms.publishing import output_layout as layout
from tfcascade.transforms.publishing import run_registry
from tfcascade.transforms.reading.record_ranges import ReadRange, RecordChunk, read_range
from tfcascade.transforms.scoring.chunk_scorer import ChunkScorer
from tfcascade.transforms.writing.shard_writer import ShardWriter

# One scorer (one CascadeSession) per Python worker process, reused by every
# task the process runs.
_SCORERS: Dict[str, ChunkScorer] = {}
_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class TaskConfig:
  """Everything a task needs; pickled into each task by the driver."""
  spec: object  # tfcascade.transforms.engine.CascadeSpec
  output_format: str
  passthrough: Sequence[str]
  reject_non_finite: bool
  chunk_size: int
  max_record_bytes: int
  on_corrupt: str
  predictions_suffix: str
  compression: str
  run: run_registry.RunStaging


def _threads_for(spec, cpus: int):
  """The session sized to the cores Spark gives a task, unless the config
  sets thread counts: N concurrent tasks on N cores then run N x cpus
  threads, not N x every core (docs/design.md, fact 12)."""
  session = spec.session
  if session.intra_op_threads or session.inter_op_threads:
    return spec
  return dataclasses.replace(spec, session=dataclasses.replace(
      session, intra_op_threads=cpus, inter_op_threads=cpus))


def _scorer(config: TaskConfig, cpus: int) -> Tuple[ChunkScorer, bool]:
  """This process's scorer (opened on first use); True if opened now."""
  spec = _threads_for(config.spec, cpus)
  key = hashlib.sha256(pickle.dumps((spec, config.output_format, tuple(
      config.passthrough), config.reject_non_finite))).hexdigest()
  with _LOCK:
    if key in _SCORERS:
      return _SCORERS[key], False
    from tfcascade.transforms.engine import CascadeSession  # pylint: disable=g-import-not-at-top
    check_device(spec.session.device)  # gpu asked, none on this executor: fail, not crawl
    _SCORERS[key] = ChunkScorer(CascadeSession(spec), config.output_format,
                                config.passthrough, config.reject_non_finite)
    return _SCORERS[key], True


def spark_task(config: TaskConfig, ranges: Iterable[ReadRange]
               ) -> Iterator[RunCounts]:
  """The function Spark runs per partition: the session is sized to the
  task's cores (`spark.task.cpus`)."""
  from pyspark import TaskContext  # pylint: disable=g-import-not-at-top
  context = TaskContext.get()
  cpus = int(context.cpus()) if context is not None else 1
  return score_partition(config, ranges, cpus)


def score_partition(config: TaskConfig, ranges: Iterable[ReadRange],
                    cpus: int = 1) -> Iterator[RunCounts]:
  """Reads, scores and writes a partition's ranges; yields its RunCounts."""
  scorer, opened = _scorer(config, cpus)
  run_registry.heartbeat(config.run)
  counts = RunCounts(sessions_opened=int(opened))
  writers = {kind: ShardWriter(config.run.files_dir, kind, suffix, compression)
             for kind, suffix, compression in (
                 (layout.PREDICTIONS, config.predictions_suffix, config.compression),
                 (layout.DEAD_LETTER, ".jsonl", "none"),
                 (layout.QUARANTINE, ".jsonl", "none"))}
  for task in ranges:
    for item in read_range(task, config.chunk_size, config.max_record_bytes,
                           config.on_corrupt):
      if isinstance(item, RecordChunk):
        counts.records_read += len(item.records)
        _score_chunk(scorer, item, writers, counts)
      else:
        counts.quarantined[item["source"]] += 1
        _write_entry(writers[layout.QUARANTINE], item)
  for writer in writers.values():
    written = writer.close()
    if written is not None:
      counts.files.append(written)
  yield counts


def _score_chunk(scorer, chunk, writers, counts) -> None:
  scored = scorer.score(chunk)
  for records, blob in scored.blobs:
    writers[layout.PREDICTIONS].write(blob, records)
  for entry in scored.dead_letters:
    _write_entry(writers[layout.DEAD_LETTER], entry)
  counts.add(scored.counts())


def _write_entry(writer: ShardWriter, entry: dict) -> None:
  records, line = entry_line(entry)
  writer.write(line, records)
