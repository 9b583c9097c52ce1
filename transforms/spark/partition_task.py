"""What one Spark task runs: its units (ReadRanges) -> scored, written,
committed, counted.

The Spark engine's worker side is the Beam job's unit of work
(`unit_runner.run_unit`: read, score with the process's one CascadeSession,
write its own files, commit) run per ReadRange. A task attempt writes its
own uniquely named files and returns their RunCounts; Spark keeps the result
of one successful attempt per partition, so the driver publishes exactly the
committed files (publishing.finalize) — a retried or speculative attempt's
files are named nowhere and are deleted with the run's staging directory.

No pyspark import at module level: Spark's Python workers import this module
by name (so the per-process session cache below survives across tasks with
`spark.python.worker.reuse`), and it must also import where Spark is absent.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import pickle
import threading
from typing import Dict, Iterable, Iterator, Optional, Sequence, Tuple

from tfcascade.transforms.accounting import RunCounts
from tfcascade.transforms.gpu_check import check_device
from tfcascade.transforms.publishing import run_registry
from tfcascade.transforms.reading.record_ranges import ReadRange
from tfcascade.transforms.scoring.chunk_scorer import ChunkScorer
from tfcascade.transforms.tf_import import import_tensorflow
from tfcascade.transforms.unit_runner import UnitSettings, run_unit

# One scorer (one CascadeSession) per Python worker process, reused by every
# task the process runs.
_SCORERS: Dict[str, ChunkScorer] = {}
_INFERRING: Optional[concurrent.futures.Executor] = None
_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class TaskConfig:
  """Everything a task needs; pickled into each task by the driver."""
  spec: object  # tfcascade.transforms.engine.CascadeSpec
  output_format: str
  passthrough: Sequence[str]
  reject_non_finite: bool
  settings: UnitSettings  # how units are read, written and committed


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
    import_tensorflow()  # first, so that Keras's optional extras stay out
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
  """Runs a partition's units (unit_runner.run_unit); yields one RunCounts
  per unit (the first also counts a session this process opened for it)."""
  scorer, opened = _scorer(config, cpus)
  run_registry.heartbeat(config.settings.run)
  for task in ranges:
    counts = run_unit(scorer, task, config.settings, _inferring())
    counts.sessions_opened, opened = int(opened), False
    yield counts


def _inferring() -> concurrent.futures.Executor:
  """This process's one-thread pool for the session calls (one chunk deep
  pipelining, as on Beam)."""
  global _INFERRING  # pylint: disable=global-statement
  with _LOCK:
    if _INFERRING is None:
      _INFERRING = concurrent.futures.ThreadPoolExecutor(
          1, thread_name_prefix="tfcascade-infer")
    return _INFERRING
