"""The job's Beam metrics: one namespace, each counter created once.

Metrics are informative (the launcher prints them and writes
run_metrics.json); the accounting uses `RunCounts` emitted as data. Each class
below is built once per DoFn or model handler (in its constructor), never per
batch.
"""

from __future__ import annotations

from typing import Iterable

from apache_beam.metrics import Metrics

NAMESPACE = "tfcascade"


class ReadMetrics:
  """What the reader counts."""

  def __init__(self):
    self.records_read = Metrics.counter(NAMESPACE, "records_read")
    self.files_quarantined = Metrics.counter(NAMESPACE, "files_quarantined")


class WriteMetrics:
  """Records written into staged files of one kind."""

  def __init__(self, kind: str):
    self.records_written = Metrics.counter(NAMESPACE, f"{kind}_records_written")


class StageMetrics:
  """Rows in and rows run per stage (RunInference-style names)."""

  def __init__(self, stages: Iterable[str]):
    self._stages = {s: (Metrics.counter(NAMESPACE, f"{s}_rows_in"),
                        Metrics.counter(NAMESPACE, f"{s}_rows_run")) for s in stages}

  def update(self, rows_in, rows_run) -> None:
    """Adds stage -> n mappings of rows in and rows run."""
    for stage, (counter_in, counter_run) in self._stages.items():
      counter_in.inc(rows_in.get(stage, 0))
      counter_run.inc(rows_run.get(stage, 0))


class ScoreMetrics(StageMetrics):
  """What the scorer counts: sessions, batches, latencies, rows, dead letters."""

  def __init__(self, stages: Iterable[str]):
    super().__init__(stages)
    self.sessions_opened = Metrics.counter(NAMESPACE, "sessions_opened")
    self.load_ms = Metrics.distribution(NAMESPACE, "load_model_latency_milli_secs")
    self.batch_latency_us = Metrics.distribution(
        NAMESPACE, "inference_batch_latency_micro_secs")
    self.batch_size = Metrics.distribution(NAMESPACE, "inference_request_batch_size")
    self.inferences = Metrics.counter(NAMESPACE, "num_inferences")
    self.records_dead_lettered = Metrics.counter(NAMESPACE, "records_dead_lettered")
    self.failed_batches = Metrics.counter(NAMESPACE, "failed_batches_counter")

  def record(self, scored) -> None:
    """Adds what scoring one chunk did (a scoring.chunk_scorer.ScoredChunk)."""
    for latency in scored.batch_latencies_us:
      self.batch_latency_us.update(latency)
    if scored.rows_scored:
      self.batch_size.update(scored.rows_scored)
      self.inferences.inc(scored.rows_scored)
    self.failed_batches.inc(scored.failed_calls)
    self.records_dead_lettered.inc(len(scored.dead_letters))
    self.update(scored.rows_in, scored.rows_run)
