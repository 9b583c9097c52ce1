"""Wide records: peak memory and throughput of the job by `batch_bytes`.

Records of ~160 KB (a float32 feature of 40960 values, an image or an
embedding, plus an id) at `batch_size: 1024` make a batch of ~160 MB, and a
job holds several copies of a batch (its bytes, the parsed tensor, the
session's, the one being written). `batch_bytes` ends a batch earlier; this
measures what each cap costs and saves:

    .venv/bin/python -m benchmarks.wide_records            # ~14 min on 2 cores
    .venv/bin/python -m benchmarks.wide_records --quick    # a smoke run (~3 min)

The real CLI job (`python -m tfcascade run`) runs in a subprocess, in-process
and DirectRunner multi_processing with 2 workers, uncapped (batch_bytes 1 TiB)
and capped, in interleaved rounds; peak RSS is of the whole process tree
(launcher and workers summed, sampled every 50 ms). Throughput is records /
run_summary.json's wall_seconds (the run itself) and records / the process's
wall (with start-up); both carry seconds of start-up that no cap changes, so
the workers' own loop (`run_unit`) is also timed per cap in one process
(the steady state). The chosen default is the smallest cap whose median
throughput is within 10% of uncapped: the job's in every mode, and the
steady state's. Writes benchmarks/wide_records.json and
benchmarks/WIDE_RECORDS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time

import psutil

from benchmarks import common

WIDTH = 40960  # float32 values per record: 160 KB
SHARDS = 2  # one unit per worker, two full 1024-record chunks each
BATCH = 1024
UNCAPPED = 1 << 40  # bytes: never reached
CAPS_MIB = [8, 16, 32, 64]
MODES = {"in-process": common.DIRECT, "multi_processing x2": common.MP2}
WITHIN = 0.10  # a cap's throughput may be this much below uncapped
DATA_VERSION = 1


# --- data and models (run in a child: the driver stays TF-free) -------------

def _prepare_child(workdir: str, n: int) -> dict:
  """Writes n wide records in SHARDS plain shards and the two models."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from benchmarks import workloads as w  # pylint: disable=g-import-not-at-top
  tf1 = tf.compat.v1
  data = os.path.join(workdir, "data")
  os.makedirs(data, exist_ok=True)
  rng = np.random.default_rng(w.DATA_SEED)
  bounds = np.linspace(0, n, SHARDS + 1).astype(int)
  sizes = []
  for s in range(SHARDS):
    path = os.path.join(data, f"part-{s:05d}-of-{SHARDS:05d}.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
      for i in range(bounds[s], bounds[s + 1]):
        x = rng.standard_normal(WIDTH, dtype=np.float32)
        record = tf.train.Example(features=tf.train.Features(feature={
            "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[w.record_id(i)])),
            "x": tf.train.Feature(float_list=tf.train.FloatList(value=x.tolist())),
        })).SerializeToString()
        sizes.append(len(record))
        writer.write(record)
  # A: the whole vector -> 16 logits (a linear probe on an embedding);
  # B: A's logits -> 8 probabilities. Each saved from its own graph.
  widths = {"a": [WIDTH, 16], "b": [16, 64, 8]}
  for role, layers in widths.items():
    graph = tf.Graph()
    with graph.as_default():
      x = tf1.placeholder(tf.float32, [None, layers[0]], name="input")
      out, variables = w._mlp(x, layers)  # pylint: disable=protected-access
      if role == "a":
        tf.identity(out, name="logits")
        tf.identity(tf.reduce_max(tf.nn.softmax(out), axis=1), name="confidence")
      else:
        tf.identity(tf.nn.softmax(out), name="probs")
      with tf1.Session(graph=graph) as sess:
        sess.run(tf1.global_variables_initializer())
        values = [v for pair in w._weights(layers, w.MODEL_SEEDS[role])  # pylint: disable=protected-access
                  for v in pair]
        for var, value in zip(variables, values):
          var.load(value, sess)
        directory = os.path.join(workdir, "models", role)
        os.makedirs(directory, exist_ok=True)
        saver = tf1.train.Saver(variables)
        saver.save(sess, os.path.join(directory, "model.ckpt"), write_meta_graph=False)
        saver.export_meta_graph(os.path.join(directory, "model.meta"))
  return {"version": DATA_VERSION, "n": n, "width": WIDTH, "shards": SHARDS,
          "bytes_per_record": sum(sizes) / len(sizes), "input_bytes": sum(sizes)}


def prepare(workdir: str, n: int, log) -> dict:
  manifest_path = os.path.join(workdir, "manifest.json")
  if os.path.exists(manifest_path):
    with open(manifest_path) as f:
      found = json.load(f)
    if (found.get("version"), found.get("n"), found.get("width")) == (DATA_VERSION, n, WIDTH):
      log(f"reusing {n:,} wide records in {workdir}")
      return found
  shutil.rmtree(workdir, ignore_errors=True)
  log(f"writing {n:,} records of {WIDTH * 4 // 1024} KB floats to {workdir}")
  manifest = common.in_child(
      "import json; from benchmarks import wide_records as b; "
      f"print('WIDE_DATA', json.dumps(b._prepare_child({workdir!r}, {n})))", "WIDE_DATA")
  with open(manifest_path, "w") as f:
    json.dump(manifest, f, indent=1)
  return manifest


def job_config(workdir: str) -> dict:
  def stage(role, inputs, outputs):
    model = os.path.join(workdir, "models", role)
    return {"name": role, "checkpoint": model,
            "meta_graph": os.path.join(model, "model.meta"),
            "inputs": inputs, "outputs": outputs}
  return {
      "input": {"pattern": os.path.join(workdir, "data", "part-*.tfrecord"),
                "compression": "none",
                "features": {"id": {"dtype": "string"},
                             "x": {"dtype": "float32", "shape": [WIDTH]}}},
      "stages": [stage("a", {"input:0": "features.x"},
                       {"logits": "logits:0", "confidence": "confidence:0"}),
                 stage("b", {"input:0": "a.logits"}, {"probs": "probs:0"})],
      "output": {"path": os.path.join(workdir, "out"), "format": "tfrecord",
                 "passthrough": ["id"]},
      "batch_size": BATCH,
  }


# --- measuring --------------------------------------------------------------

class MemorySampler(threading.Thread):
  """Peaks of a process tree's memory, sampled every `period` s: the sum of
  RSS (what the issue's target is in), the sum of anonymous RSS (RSS less
  file-backed and shared pages: the data a process holds, without
  TensorFlow's libraries counted once per process), and the largest RSS of
  the root process (the launcher) and of any one child (a worker)."""

  def __init__(self, pid, period=0.05):
    super().__init__(daemon=True)
    self._root, self._period, self._halt = psutil.Process(pid), period, threading.Event()
    self.rss = self.anon = self.root = self.child = self.procs = 0

  def run(self):
    while not self._halt.is_set():
      try:
        procs = [self._root] + self._root.children(recursive=True)
      except psutil.Error:
        procs = []
      total = anon = 0
      for p in procs:
        try:
          m = p.memory_info()
        except psutil.Error:
          continue
        total, anon = total + m.rss, anon + m.rss - m.shared
        if p is self._root:
          self.root = max(self.root, m.rss)
        else:
          self.child = max(self.child, m.rss)
      self.rss, self.anon = max(self.rss, total), max(self.anon, anon)
      self.procs = max(self.procs, len(procs))
      self._halt.wait(self._period)

  def stop(self):
    self._halt.set()
    self.join()


def run_sampled(cmd, log_path, timeout) -> dict:
  """Runs cmd (output to log_path) under a MemorySampler; a timeout takes
  the whole tree down."""
  before, load = psutil.cpu_times(), os.getloadavg()[0]
  ours_before = resource.getrusage(resource.RUSAGE_CHILDREN)
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, "w") as log:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=common.ROOT, env=common.child_env(), stdout=log,
                            stderr=subprocess.STDOUT)
    sampler = MemorySampler(proc.pid)
    sampler.start()
    try:
      rc = proc.wait(timeout=timeout)
    except BaseException:
      common.kill_tree(proc)
      rc = proc.wait()
      if not isinstance(sys.exc_info()[1], subprocess.TimeoutExpired):
        raise
    wall = time.perf_counter() - start
    sampler.stop()
  ours_after = resource.getrusage(resource.RUSAGE_CHILDREN)
  with open(log_path, errors="replace") as f:
    output = f.read()
  ours = sum(getattr(ours_after, k) - getattr(ours_before, k) for k in ("ru_utime", "ru_stime"))
  return {"rc": rc, "wall_s": wall, "sampler": sampler, "output": output, "cpu_s": ours,
          "machine_cpu_s": common.busy(psutil.cpu_times()) - common.busy(before),
          "loadavg_1m": load}


def cap_name(cap_mib) -> str:
  return "uncapped" if cap_mib is None else f"{cap_mib} MiB"


def run_one(config_path, workdir, mode, cap_mib, n, timeout, log) -> dict:
  out = os.path.join(workdir, "runs", f"{mode.split()[0]}-{cap_name(cap_mib).split()[0]}")
  shutil.rmtree(out, ignore_errors=True)
  cap = UNCAPPED if cap_mib is None else cap_mib << 20
  cmd = [sys.executable, "-m", "tfcascade", "run", "--config", config_path,
         "--set", f"output.path={out}", "--set", f"batch_bytes={cap}", *MODES[mode]]
  run = run_sampled(cmd, out + ".log", timeout)
  sampler, mb = run["sampler"], lambda b: round(b / 2**20)
  record = {"mode": mode, "cap": cap_name(cap_mib), "cap_mib": cap_mib, "rc": run["rc"],
            "wall_s": round(run["wall_s"], 3), "peak_rss_mb": mb(sampler.rss),
            "peak_anon_mb": mb(sampler.anon), "launcher_peak_rss_mb": mb(sampler.root),
            "worker_peak_rss_mb": mb(sampler.child) if sampler.procs > 1 else None,
            "processes": sampler.procs,
            "cpu_s": round(run["cpu_s"], 2),
            # CPU-seconds others on the machine used per wall second of the
            # run: they share these 2 cores, so this says how noisy it was.
            "others_busy_cores": round(
                max(0.0, run["machine_cpu_s"] - run["cpu_s"]) / run["wall_s"], 2),
            "loadavg_1m": round(run["loadavg_1m"], 2)}
  summary_path = os.path.join(out, "run_summary.json")
  summary = json.load(open(summary_path)) if os.path.exists(summary_path) else {}
  if run["rc"] or summary.get("records_written") != n:
    raise RuntimeError(f"{mode} {cap_name(cap_mib)}: exit {run['rc']}, records_written "
                       f"{summary.get('records_written')} != {n}; log {out}.log:\n"
                       f"{run['output'][-3000:]}")
  record.update(job_wall_s=summary["wall_seconds"],
                job_records_per_s=round(n / summary["wall_seconds"], 1),
                process_records_per_s=round(n / run["wall_s"], 1))
  shutil.rmtree(out, ignore_errors=True)  # outputs are small; keep the disk clean
  log(f"  {mode:20s} {cap_name(cap_mib):9s} peak {record['peak_rss_mb']:6,} MB  "
      f"job {record['job_records_per_s']:7,.0f} rec/s  process "
      f"{record['process_records_per_s']:6,.0f} rec/s  ({record['wall_s']:.1f} s)")
  return record


def _steady_child(workdir: str, caps, rounds: int) -> dict:
  """Seconds per cap of the workers' own loop (unit_runner.run_unit over
  every shard, the next chunk's session call overlapping the previous
  chunk's writing, as ScoreUnits runs it) in this one process, the caps
  interleaved: what a cap costs per batch, without start-up."""
  import concurrent.futures  # pylint: disable=g-import-not-at-top
  import glob  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  from tfcascade.pipeline.config import load_config  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.engine import CascadeSession  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.reading.record_ranges import InputFile, plan_ranges  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.scoring.chunk_scorer import ChunkScorer  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.unit_runner import run_unit  # pylint: disable=g-import-not-at-top
  config = load_config(os.path.join(workdir, "job.yaml"))
  tasks = []
  for path in sorted(glob.glob(config.input_patterns[0])):
    stat = os.stat(path)
    tasks += plan_ranges(InputFile(path, "none", stat.st_size, stat.st_mtime),
                         config.input.split_bytes, config.input.max_record_bytes)
  seconds = {cap_name(c): [] for c in caps}
  with CascadeSession(config.cascade_spec()) as session, \
      concurrent.futures.ThreadPoolExecutor(1) as inferring, \
      tempfile.TemporaryDirectory(prefix="tfcascade-wide-") as tmp:
    scorer = ChunkScorer(session, config.output.format, config.output.passthrough,
                         config.dead_letter.non_finite_outputs)
    run_unit(scorer, tasks[0], _settings(tmp, "warm-up", None))  # warm-up
    for rnd in range(rounds):
      for cap in caps[rnd % len(caps):] + caps[:rnd % len(caps)]:
        settings = _settings(tmp, f"r{rnd}-{cap_name(cap).split()[0]}", cap)
        start = time.perf_counter()
        records = sum(run_unit(scorer, t, settings, inferring).records_read for t in tasks)
        seconds[cap_name(cap)].append(round(time.perf_counter() - start, 3))
  return {"records": records, "seconds": seconds}


def _settings(tmp, run_id, cap_mib):
  from tfcascade.transforms.publishing.run_registry import RunStaging  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.unit_runner import UnitSettings  # pylint: disable=g-import-not-at-top
  return UnitSettings(run=RunStaging(tmp, run_id), run_key=run_id, chunk_size=BATCH,
                      chunk_bytes=UNCAPPED if cap_mib is None else cap_mib << 20,
                      max_record_bytes=64 << 20, on_corrupt="fail",
                      predictions_suffix=".tfrecord", compression="none")


def steady(workdir, caps, rounds, log) -> dict:
  """_steady_child in a child process; medians and ratios to uncapped."""
  log(f"steady state: run_unit in one process, {rounds} interleaved rounds")
  found = common.in_child(
      "import json; from benchmarks import wide_records as b; "
      f"print('WIDE_STEADY', json.dumps(b._steady_child({workdir!r}, {caps!r}, {rounds})))",
      "WIDE_STEADY")
  out = {}
  for cap, seconds in found["seconds"].items():
    out[cap] = {"seconds": seconds, "records_per_s": round(
        found["records"] / common.median(seconds), 1)}
  base = out[cap_name(None)]["records_per_s"]
  for cap, row in out.items():
    row["vs_uncapped"] = round(row["records_per_s"] / base, 3)
    log(f"  {cap:9s} {row['records_per_s']:7,.0f} rec/s ({row['vs_uncapped']:.2f}x)  "
        f"{row['seconds']}")
  return out


def summarize(runs, caps) -> dict:
  """Medians per (mode, cap) and throughput relative to uncapped."""
  table = {}
  for mode in MODES:
    rows = {}
    for cap in caps:
      mine = [r for r in runs if r["mode"] == mode and r["cap_mib"] == cap]
      if mine:
        rows[cap_name(cap)] = {
            key: common.median([r[key] for r in mine])
            for key in ("peak_rss_mb", "peak_anon_mb", "launcher_peak_rss_mb",
                        "worker_peak_rss_mb", "job_records_per_s",
                        "process_records_per_s", "wall_s", "job_wall_s",
                        "others_busy_cores")}
        rows[cap_name(cap)]["rounds"] = len(mine)
    base = rows.get(cap_name(None))
    for row in rows.values():
      for key in ("job_records_per_s", "process_records_per_s"):
        row[key.replace("records_per_s", "vs_uncapped")] = (
            round(row[key] / base[key], 3) if base else None)
    table[mode] = rows
  return table


def choose(table, steady_rows, caps):
  """The smallest cap within WITHIN of uncapped throughput: the job's (records
  / wall_seconds, in every mode) and the steady state's."""
  for cap in sorted(c for c in caps if c is not None):
    ratios = [table[mode][cap_name(cap)]["job_vs_uncapped"] for mode in table
              if cap_name(cap) in table[mode]]
    if steady_rows:
      ratios.append(steady_rows[cap_name(cap)]["vs_uncapped"])
    if ratios and all(r is not None and r >= 1 - WITHIN for r in ratios):
      return cap
  return None


def report_md(data) -> str:
  m = data["manifest"]
  lines = [
      "# Wide records: memory and throughput by `batch_bytes`",
      "",
      f"Generated by `.venv/bin/python -m benchmarks.wide_records` "
      f"({data['date']}). {m['n']:,} records of {m['bytes_per_record'] / 1024:,.0f} KB "
      f"(a float32 feature of {WIDTH:,} values and an id) in {SHARDS} uncompressed "
      f"shards ({m['input_bytes'] / 2**30:.2f} GiB), a 2-stage cascade (A: the whole "
      f"vector -> 16 logits; B: logits -> 8 probabilities), `batch_size: {BATCH}`, "
      f"DirectRunner; medians of {data['rounds']} interleaved rounds. Peak RSS: the "
      f"whole process tree (launcher and workers summed, sampled every 50 ms; "
      f"TensorFlow's shared libraries count once per process); peak anon RSS: the "
      f"same without file-backed and shared pages (the data the processes hold). "
      f"Throughput: records / run_summary.json `wall_seconds` (job) and records / "
      f"the process's wall (process, with start-up). Others' cores: CPU-seconds "
      f"per wall second that other work on the machine used during the run (the "
      f"machine is shared; 0 is a quiet machine). Machine: "
      f"{data['machine']['cores']} cores, "
      f"{data['machine']['memory_gb']} GB, {data['machine'].get('cpu_model', '?')}.",
      ""]
  header = ["mode", "batch_bytes", "peak RSS (MB)", "peak anon RSS (MB)",
            "launcher / worker peak RSS (MB)", "job rec/s", "vs uncapped",
            "process rec/s", "vs uncapped", "process wall (s)", "others' cores"]
  rows = []
  for mode, caps in data["table"].items():
    for cap, row in caps.items():
      rows.append([mode, cap, common.fmt(row["peak_rss_mb"]), common.fmt(row["peak_anon_mb"]),
                   f"{common.fmt(row['launcher_peak_rss_mb'])} / "
                   f"{common.fmt(row['worker_peak_rss_mb'])}",
                   common.fmt(row["job_records_per_s"]),
                   common.fmt(row["job_vs_uncapped"], ".2f"),
                   common.fmt(row["process_records_per_s"]),
                   common.fmt(row["process_vs_uncapped"], ".2f"),
                   common.fmt(row["wall_s"], ".1f"),
                   common.fmt(row["others_busy_cores"], ".2f")])
  lines += common.md_table(header, rows, left=2)
  if data.get("steady"):
    lines += ["", "Steady state, no start-up: the workers' own loop (`run_unit` over "
              "both shards, the next chunk's session call overlapping the previous "
              "chunk's writing) in one process, the caps interleaved; median of "
              f"{data['rounds']} passes of {m['n']:,} records.", ""]
    lines += common.md_table(
        ["batch_bytes", "rec/s", "vs uncapped", "seconds per pass"],
        [[cap, common.fmt(row["records_per_s"]), common.fmt(row["vs_uncapped"], ".2f"),
          ", ".join(f"{v:.2f}" for v in row["seconds"])]
         for cap, row in data["steady"].items()])
  chosen = data["chosen_mib"]
  lines += ["", (f"Smallest cap within {WITHIN:.0%} of uncapped throughput (job rec/s "
                 f"in every mode, and the steady state): **{chosen} MiB**." if chosen else
                 f"No cap measured is within {WITHIN:.0%} of uncapped throughput in "
                 f"every mode."),
            "", "Per run: `benchmarks/wide_records.json`.", ""]
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="/tmp/tfcascade-wide")
  parser.add_argument("--records", type=int, default=4096)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--caps", type=int, nargs="*", default=CAPS_MIB,
                      help="caps in MiB (uncapped always runs)")
  parser.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES))
  parser.add_argument("--timeout", type=float, default=300)
  parser.add_argument("--no-steady", action="store_true",
                      help="skip the steady-state (one process, no start-up) pass")
  parser.add_argument("--jobs-from", help="a wide_records.json whose job runs to reuse "
                      "(only the steady state is measured again)")
  parser.add_argument("--quick", action="store_true",
                      help="1 round, 1200 records, caps 8 and 64 MiB; writes no report")
  parser.add_argument("--out", default=common.HERE, help="where the json and md go")
  args = parser.parse_args(argv)
  if args.quick:  # its own data: the full run's stays cached
    args.records, args.rounds, args.caps = 1200, 1, [8, 64]
    args.workdir += "-quick"
  log = common.logger(time.time())
  manifest = prepare(args.workdir, args.records, log)
  config_path = os.path.join(args.workdir, "job.yaml")
  import yaml  # pylint: disable=g-import-not-at-top
  with open(config_path, "w") as f:
    yaml.safe_dump(job_config(args.workdir), f, sort_keys=False)
  caps = [None] + sorted(args.caps)
  runs = []
  if args.jobs_from:
    with open(args.jobs_from) as f:
      runs = json.load(f)["runs"]
  for rnd in range(0 if args.jobs_from else args.rounds):
    log(f"round {rnd + 1}/{args.rounds}")
    # Interleaved, the order rotated each round so drift hits every cap.
    order = caps[rnd % len(caps):] + caps[:rnd % len(caps)]
    for mode in args.modes:
      for cap in order:
        record = run_one(config_path, args.workdir, mode, cap, args.records,
                         args.timeout, log)
        record["round"] = rnd
        runs.append(record)
  steady_rows = None if args.no_steady else steady(args.workdir, caps, args.rounds, log)
  table = summarize(runs, caps)
  chosen = choose(table, steady_rows, caps)
  data = {"date": time.strftime("%Y-%m-%d"), "machine": common.machine_info(),
          "manifest": manifest, "rounds": args.rounds, "batch_size": BATCH,
          "caps_mib": args.caps, "within": WITHIN, "table": table,
          "steady": steady_rows, "chosen_mib": chosen, "runs": runs}
  print(report_md(data))
  if not args.quick:
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "wide_records.json"), "w") as f:
      json.dump(data, f, indent=1)
    with open(os.path.join(args.out, "WIDE_RECORDS.md"), "w") as f:
      f.write(report_md(data))
    log(f"wrote {args.out}/wide_records.json and WIDE_RECORDS.md")
  return data


if __name__ == "__main__":
  main()
