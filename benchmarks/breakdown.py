"""Per-row cost of each piece of tfcascade's hot path, without Beam's runner.

`.venv/bin/python -m benchmarks.breakdown [--kind light] [--n 100000]
[--workdir /tmp/tfcascade-bench/100000_400000]` on benchmarks.run's data
(benchmarks.run also runs it, as system "breakdown"). Pieces, median of 3
passes, wall and process CPU (TF's pool threads included): read (the job's
framing reader, 2 CRCs, in batch_size chunks), read-gzip (same, gzip copy),
read-tfdata (tf.data's C++ reader, records turned into Python bytes: the
Python path's alternative, not used), score (CascadeSession.run alone),
read-score-in-graph (the job's happy path since the in-graph reader: one
session call reads, checks, parses and scores each batch; compare with
read + score),
dofn (what a unit of work runs per chunk beyond reading and writing: the
job's ChunkScorer, i.e. the session call, bad-record isolation and
encoding; the key keeps its name from when a DoFn did it), write
(ShardWriter appending the encoded blobs).
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks import workloads  # noqa: E402  (imports TF)
from tfcascade.pipeline.config import JobConfig  # noqa: E402
from tfcascade.transforms.formats import tfrecord_framing as framing  # noqa: E402
from tfcascade.transforms.engine import CascadeSession  # noqa: E402
from tfcascade.transforms.engine.in_graph_reader import NO_END  # noqa: E402
from tfcascade.transforms.reading.record_ranges import RecordChunk  # noqa: E402
from tfcascade.transforms.scoring.chunk_scorer import ChunkScorer  # noqa: E402
from tfcascade.transforms.writing.shard_writer import ShardWriter  # noqa: E402

PIECES = ("read", "read-gzip", "read-tfdata", "score", "read-score-in-graph", "dofn",
          "write")


class _Clock:
  """Wall and process-CPU seconds of each timed block, per piece."""

  def __init__(self):
    self.wall = {k: [] for k in PIECES}
    self.cpu = {k: [] for k in PIECES}

  def time(self, piece, fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    self.wall[piece].append(time.perf_counter() - wall)
    self.cpu[piece].append(time.process_time() - cpu)
    return result


def one_pass(clock, config, files, gzip_files, session, scorer, scratch):
  """Times every piece once over all files; returns the rows processed."""
  chunks = clock.time("read", lambda: [
      RecordChunk(f, c) for f in files for c in framing.read_record_chunks(
          f, compression="none", chunk_size=config.batch_size)])
  clock.time("read-gzip", lambda: [
      c for f in gzip_files for c in framing.read_record_chunks(
          f, compression="gzip", chunk_size=config.batch_size)])
  clock.time("read-tfdata", lambda: _read_tfdata(files, config.batch_size))
  clock.time("score", lambda: [session.run([r for _, r in c.records])
                               for c in chunks])
  clock.time("read-score-in-graph", lambda: _read_in_graph(session, files, config.batch_size))
  scored = clock.time("dofn", lambda: [scorer.score(c) for c in chunks])
  blobs = [blob for s in scored for blob in s.blobs]
  clock.time("write", lambda: _write(blobs, scratch))
  return sum(len(c.records) for c in chunks)


def _read_tfdata(files, batch_size):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return [RecordChunk(f, list(enumerate(batch.numpy().tolist())))
          for f in files
          for batch in tf.data.TFRecordDataset(f, buffer_size=1 << 20).batch(batch_size)]


def _read_in_graph(session, files, batch_size):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for f in files:
    slot = session.open_reader(f, "none", 0, 0, batch_size)
    try:
      while True:
        try:
          session.read_and_run(slot, NO_END)
        except tf.errors.OutOfRangeError:
          break
    finally:
      session.close_reader(slot)


def _write(blobs, directory):
  writer = ShardWriter(directory, "predictions", ".tfrecord")
  for records, blob in blobs:
    writer.write(blob, records)
  writer.close()
  os.remove(writer.path)


def summarize(clock, rows):
  """us/row per piece, median of the passes: {piece: (wall, cpu)}, with
  "dofn-score" (the DoFn beyond the engine) and "outside_models" (read +
  dofn-score + write: what the job spends per row besides TF running the
  parse and the models)."""
  med = {k: (statistics.median(clock.wall[k]) / rows * 1e6,
             statistics.median(clock.cpu[k]) / rows * 1e6) for k in PIECES}
  med["dofn-score"] = tuple(med["dofn"][i] - med["score"][i] for i in (0, 1))
  med["outside_models"] = tuple(med["read"][i] + med["dofn-score"][i] + med["write"][i]
                                for i in (0, 1))
  return med


def measure(workdir, kind, n, passes=3):
  """Runs every piece `passes` times on the n-row sharded data; summarize()."""
  config = JobConfig.model_validate(workloads.job_config(
      {"workdir": workdir, "kind": kind, "n": n, "out": "/tmp/tfcascade-breakdown"}))
  files = sorted(glob.glob(config.input_patterns[0]))
  gzip_files = sorted(glob.glob(workloads.data_paths(workdir, n)["gzip"]))
  if not files or len(gzip_files) != len(files):
    raise SystemExit(f"no data at {config.input_patterns[0]}: run "
                     f"`python -m benchmarks.run` first")
  session = CascadeSession(config.cascade_spec())
  # The scorer a unit of work builds for this config, on the same session.
  scorer = ChunkScorer(session, config.output.format, config.output.passthrough,
                       config.dead_letter.non_finite_outputs)
  clock = _Clock()
  with tempfile.TemporaryDirectory(prefix="tfcascade-breakdown-") as tmp:
    for _ in range(passes):
      rows = one_pass(clock, config, files, gzip_files, session, scorer, tmp)
  session.close()
  return {"rows": rows, "passes": passes, "us_per_row": summarize(clock, rows)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--kind", default="light")
  parser.add_argument("--n", type=int, default=100000)
  parser.add_argument("--workdir", default="/tmp/tfcascade-bench/100000_400000")
  parser.add_argument("--passes", type=int, default=3)
  args = parser.parse_args()
  result = measure(args.workdir, args.kind, args.n, args.passes)
  print(f"{args.kind}, {result['rows']:,} rows, us/row (median of {args.passes} "
        f"passes): wall / process CPU")
  for name, (wall, cpu) in result["us_per_row"].items():
    print(f"  {name:14s} {wall:7.2f} / {cpu:7.2f}")


if __name__ == "__main__":
  main()
