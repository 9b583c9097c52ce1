"""The benchmark: `.venv/bin/python -m benchmarks.run [--quick]`.

Builds deterministic TFRecords and three model pairs (benchmarks.workloads),
then runs every system (benchmarks.systems) in its own fresh process, in
interleaved rounds (every configuration once per round, shuffled), so a noisy
neighbour hurts all systems alike. The driver samples the RSS of each run's
process tree from a thread and notes how busy the rest of the machine was.
Outputs are checked against B0's (max |difference| of B's probabilities per
id; gate decisions against A's confidence). Results go to
benchmarks/results.json (raw, every run) and benchmarks/RESULTS.md (medians,
fits, ratios, targets, analysis) and the README's headline block;
`--report-only` rebuilds them from the json.
A `--quick` smoke run (small sizes, one round) writes results-quick.json and
RESULTS-quick.md instead, so it never overwrites the full run's report.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import platform
import random
import resource
import subprocess
import sys
import threading
import time

import psutil

from benchmarks import report

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS_JSON = os.path.join(HERE, "results.json")
RESULTS_MD = os.path.join(HERE, "RESULTS.md")
README = os.path.join(ROOT, "README.md")
DIRECT = ["--runner=DirectRunner"]
MP2 = DIRECT + ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
KINDS = ("heavy", "light", "ultralight")


def mt(n):
  return DIRECT + ["--direct_running_mode=multi_threading", f"--direct_num_workers={n}"]


def plan_runs(small: int, big: int, quick: bool):
  """Every configuration of one round (list of dicts; `once`: first round only).

  Naive Beam runs at small/4 and small rows: its cost is almost all per-row,
  so the fit on smaller sizes gives the same steady-state rate (its big-size
  time is extrapolated from the fit, and marked so in the report).
  """
  runs = []

  def add(name, system, kind, n, **extra):
    runs.append(dict(name=name, system=system, kind=kind, n=n, **extra))

  for kind in KINDS:
    for n in (small, big):
      add(f"{kind}/b0", "b0", kind, n)
      add(f"{kind}/tfdata", "tfdata", kind, n, layout="sharded")
      add(f"{kind}/tfcascade", "tfcascade", kind, n, layout="sharded",
          beam_args=DIRECT)
      if kind != "ultralight":
        # Every shipped config reads gzip: T0 and tfcascade on gzip input
        # (tfcascade also writes gzip).
        add(f"{kind}/tfdata-gzip", "tfdata", kind, n, layout="gzip")
        add(f"{kind}/tfcascade-gzip", "tfcascade", kind, n, layout="gzip",
            beam_args=DIRECT)
    if kind != "ultralight" and not quick:
      for n in (small // 4, small):
        add(f"{kind}/naive", "naive", kind, n, layout="sharded", beam_args=DIRECT)
    # CPU per piece of the hot path (benchmarks.breakdown), without Beam.
    add(f"{kind}/breakdown", "breakdown", kind, small, layout="sharded")
  # Two worker processes: each imports TF and restores its own session; two
  # sizes, so a steady rate (without those fixed costs) can be fitted.
  for n in (small, big):
    add("heavy/tfcascade-mp2", "tfcascade", "heavy", n, layout="sharded",
        beam_args=MP2)
  # Gated heavy cascades; the ungated one is heavy/tfcascade above.
  for gate in ("100", "10") + (() if quick else ("50",)):
    for n in ((small, big) if gate != "50" else (big,)):
      add(f"heavy/tfcascade-gate{gate}", "tfcascade", "heavy", n,
          layout="sharded", gate=gate, beam_args=DIRECT)
  # Memory with the heavy models: one process, 1 vs 4 threads (one session
  # either way); the start-up run opens a second session as the control.
  add("heavy/tfcascade-mt1", "tfcascade", "heavy", big, layout="sharded",
      beam_args=mt(1))
  add("heavy/tfcascade-mt4", "tfcascade", "heavy", big, layout="sharded",
      beam_args=mt(4))
  # Start-up: pieces timed in-process, and the whole job on one batch.
  add("heavy/startup", "startup", "heavy", 0)
  add("heavy/tfcascade-1batch", "tfcascade", "heavy", 0, beam_args=DIRECT)
  add("roofline", "roofline", "heavy", 0, once=True)
  # One big file, split into byte ranges for two worker processes.
  if not quick:
    add("heavy/tfcascade-mp2-singlefile", "tfcascade", "heavy", big,
        layout="single", beam_args=MP2, split_bytes=8 << 20, once=True)
  return runs


class TreeSampler(threading.Thread):
  """Peak RSS (sum over the process tree) sampled every `period` s.

  The sum double-counts pages shared between worker processes (TF's
  libraries); for one process it is exact.
  """

  def __init__(self, pid, period=0.05):
    super().__init__(daemon=True)
    self._root = psutil.Process(pid)
    self._period = period
    self._halt = threading.Event()
    self.peak = 0
    self.max_procs = 0

  def run(self):
    while not self._halt.is_set():
      try:
        procs = [self._root] + self._root.children(recursive=True)
      except psutil.NoSuchProcess:
        break
      total = 0
      for p in procs:
        try:
          total += p.memory_info().rss
        except psutil.Error:
          pass
      self.peak = max(self.peak, total)
      self.max_procs = max(self.max_procs, len(procs))
      self._halt.wait(self._period)

  def stop(self):
    self._halt.set()
    self.join()


def _busy(t):
  return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)


def run_one(spec, timeout, log):
  """Runs one configuration in a fresh process; returns its measurements."""
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  before_ru = resource.getrusage(resource.RUSAGE_CHILDREN)
  before_cpu = psutil.cpu_times()
  load = os.getloadavg()[0]
  start = time.perf_counter()
  proc = subprocess.Popen(
      [sys.executable, "-m", "benchmarks.systems", json.dumps(spec)],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  sampler = TreeSampler(proc.pid)
  sampler.start()
  try:
    out, _ = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    out, _ = proc.communicate()
  wall = time.perf_counter() - start
  sampler.stop()
  after_ru = resource.getrusage(resource.RUSAGE_CHILDREN)
  after_cpu = psutil.cpu_times()
  ours = ((after_ru.ru_utime - before_ru.ru_utime)
          + (after_ru.ru_stime - before_ru.ru_stime))
  machine = _busy(after_cpu) - _busy(before_cpu)
  record = {"name": spec["name"], "n": spec["n"], "rep": spec["rep"],
            "wall_s": wall, "peak_rss_mb": sampler.peak / 2**20,
            "processes": sampler.max_procs, "cpu_s": ours,
            # CPU-seconds others used while we ran: a noise indicator.
            "foreign_cpu_s": max(0.0, machine - ours), "loadavg_1m": load,
            "rc": proc.returncode}
  line = next((l for l in reversed(out.splitlines()) if l.startswith("BENCH_RESULT ")),
              None)
  if proc.returncode != 0 or line is None:
    record["error"] = out[-3000:]
    log(f"  FAILED {spec['name']} n={spec['n']}: rc={proc.returncode}\n{out[-1500:]}")
    return record
  record.update(json.loads(line[len("BENCH_RESULT "):]))
  return record


def machine_info():
  info = {"cores": os.cpu_count(), "python": platform.python_version(),
          "platform": platform.platform(),
          "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)}
  try:
    with open("/proc/cpuinfo") as f:
      info["cpu_model"] = next(l.split(":", 1)[1].strip() for l in f
                               if l.startswith("model name"))
  except (OSError, StopIteration):
    info["cpu_model"] = platform.processor()
  try:
    flags = open("/proc/cpuinfo").read()
    info["simd"] = [f for f in ("avx2", "fma", "avx512f") if f" {f}" in flags]
  except OSError:
    pass
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  for pkg in ("tensorflow-cpu", "tensorflow", "apache-beam", "numpy", "protobuf",
              "google-crc32c"):
    try:
      info[pkg] = metadata.version(pkg)
    except metadata.PackageNotFoundError:
      pass
  return info


# --- output checks -----------------------------------------------------------

def _read_outputs(files, gated, width):
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  spec = {"id": tf.io.FixedLenFeature([], tf.string),
          "b/probs": tf.io.FixedLenFeature([width], tf.float32)}
  if gated:
    spec["b/ran"] = tf.io.FixedLenFeature([], tf.int64)
  ids, probs, ran = [], [], []
  gz = files and files[0].endswith(".gz")
  ds = tf.data.TFRecordDataset(sorted(files), "GZIP" if gz else None).batch(8192).map(
      lambda s: tf.io.parse_example(s, spec))
  for batch in ds.as_numpy_iterator():
    ids.append(np.array([int(i[1:]) for i in batch["id"]]))
    probs.append(batch["b/probs"])
    if gated:
      ran.append(batch["b/ran"])
  return (np.concatenate(ids), np.concatenate(probs),
          np.concatenate(ran) if gated else None)


def verify(spec, ref_path):
  """Compares a run's B outputs per id with B0's (same data, same weights)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  ref = np.load(ref_path)
  n = spec["n"]
  width = ref["probs"].shape[1]
  gated = bool(spec.get("gate"))
  if spec["system"] in ("b0", "tfdata"):
    got = np.load(spec["verify"])
    ids, probs, ran = got["ids"], got["probs"], None
  else:
    pattern = ("predictions/predictions-*.tfrecord*" if spec["system"] == "tfcascade"
               else "part-*.tfrecord")
    ids, probs, ran = _read_outputs(glob.glob(os.path.join(spec["out"], pattern)),
                                    gated, width)
  order = np.argsort(ids)
  ids, probs = ids[order], probs[order]
  result = {"rows": int(len(ids)),
            "ids_complete": bool(len(ids) == n and np.array_equal(ids, np.arange(n)))}
  if not result["ids_complete"]:
    return dict(result, ok=False)
  want = ref["probs"][:n]
  if gated:
    ran = ran[order].astype(bool)
    expected = ref["confidence"][:n] < spec["threshold"]
    result["pass_rate"] = float(ran.mean())
    result["gate_mismatches"] = int((ran != expected).sum())
    result["fill_ok"] = bool((probs[~ran] == 0).all())
    diff = np.abs(probs[ran] - want[ran]).max() if ran.any() else 0.0
  else:
    diff = np.abs(probs - want).max()
  result["max_abs_diff"] = float(diff)
  result["sum_b_probs"] = float(probs.astype(np.float64).sum())
  result["ok"] = bool(diff < 1e-4 and result.get("gate_mismatches", 0) <= 2
                      and result.get("fill_ok", True))
  return result


# --- main --------------------------------------------------------------------

def _write_reports(data, results_md, quick):
  """RESULTS.md, and (full runs) the README's headline block, from `data`."""
  report.write(data, results_md)
  print(f"wrote {results_md}")
  if not quick:
    report.update_readme(data, README)
    print(f"updated the benchmark headline in {README}")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="small sizes, one round (a smoke run, ~5 min)")
  parser.add_argument("--reps", type=int, default=None, help="rounds (default 3; quick 1)")
  parser.add_argument("--sizes", default=None,
                      help="small,big rows (default 100000,400000; quick 20000,80000)")
  parser.add_argument("--workdir", default="/tmp/tfcascade-bench",
                      help="data, models and outputs (not in the repo)")
  parser.add_argument("--only", default=None, help="run configurations whose name contains this")
  parser.add_argument("--budget-min", type=float, default=None,
                      help="start no new round after this many minutes")
  parser.add_argument("--report-only", action="store_true",
                      help="rebuild RESULTS.md from results.json")
  args = parser.parse_args(argv)

  results_json, results_md = RESULTS_JSON, RESULTS_MD
  if args.quick:
    results_json = results_json.replace(".json", "-quick.json")
    results_md = results_md.replace(".md", "-quick.md")
  if args.report_only:
    with open(results_json) as f:
      data = json.load(f)
    _write_reports(data, results_md, args.quick)
    return

  reps = args.reps or (1 if args.quick else 3)
  small, big = ((20000, 80000) if args.quick else (100000, 400000))
  if args.sizes:
    small, big = (int(s) for s in args.sizes.split(","))
  budget = args.budget_min  # None: run every round
  # One folder per size pair, so quick and full runs keep their own data.
  args.workdir = os.path.join(args.workdir, f"{small}_{big}")
  started = time.time()

  def log(msg):
    print(f"[{time.time() - started:6.0f}s] {msg}", flush=True)

  # Data and models are written by a child: the driver stays TF-free while
  # measuring (it imports TF only to check outputs between rounds).
  prep = subprocess.run(
      [sys.executable, "-c",
       "import json,sys; from benchmarks import workloads as w; "
       f"print('MANIFEST', json.dumps(w.prepare({args.workdir!r}, "
       f"[{small // 4}, {small}, {big}])))"],
      cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3"),
      capture_output=True, text=True)
  line = next((l for l in prep.stdout.splitlines() if l.startswith("MANIFEST ")), None)
  if prep.returncode or not line:
    sys.exit(f"preparing data failed:\n{prep.stdout[-2000:]}\n{prep.stderr[-2000:]}")
  manifest = json.loads(line[len("MANIFEST "):])
  log(f"data and models ready in {args.workdir} ({time.time() - started:.0f}s)")

  runs = plan_runs(small, big, args.quick)
  if args.only:
    runs = [r for r in runs if args.only in r["name"]]
  data = {"machine": machine_info(), "manifest": manifest,
          "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
              timespec="seconds"),
          "mode": "quick" if args.quick else "full", "sizes": [small, big],
          "reps_planned": reps, "runs": [], "verify": {}}
  total = len(runs) + (reps - 1) * len([r for r in runs if not r.get("once")])
  done = 0
  for rep in range(reps):
    if rep and budget and (time.time() - started) / 60 > budget:
      log(f"time budget of {budget} min spent: stopping after {rep} rounds")
      break
    order = [r for r in runs if rep == 0 or not r.get("once")]
    random.Random(rep).shuffle(order)
    if rep == 0:  # B0 at the big size first: the reference for every check
      order.sort(key=lambda r: not (r["system"] == "b0" and r["n"] == big))
    for run in order:
      spec = dict({k: v for k, v in run.items() if k != "once"}, rep=rep, workdir=args.workdir,
                  out=os.path.join(args.workdir, "out", run["name"].replace("/", "_")
                                   + f"_{run['n']}"))
      spec.setdefault("beam_args", [])
      if run.get("gate"):
        spec["threshold"] = manifest["thresholds"][run["kind"]][run["gate"]]
      if rep == 0 and run["system"] in ("b0", "tfdata"):
        spec["verify"] = spec["out"] + ".npz"
        os.makedirs(os.path.dirname(spec["verify"]), exist_ok=True)
      record = run_one(spec, timeout=900, log=log)
      record["kind"], record["system"] = run["kind"], run["system"]
      data["runs"].append(record)
      done += 1
      log(f"({done}/{total}) rep {rep} {run['name']:34s} n={run['n']:>7,} "
          f"job {record.get('job_s', float('nan')):7.2f}s  "
          f"rss {record['peak_rss_mb']:6.0f}MB  others {record['foreign_cpu_s']:5.1f}cpu-s")
      if rep == 0 and run["system"] in ("b0", "tfdata", "naive", "tfcascade") \
          and run["n"] and "error" not in record:
        # Every dataset is a prefix of the big one: B0's big run is the reference.
        ref = os.path.join(args.workdir, "out", f"{run['kind']}_b0_{big}.npz")
        try:
          check = verify(spec, ref)
        except Exception as e:  # pylint: disable=broad-except; reported, not fatal
          check = {"ok": False, "error": repr(e)}
        data["verify"][f"{run['name']}@{run['n']}"] = check
        if not check.get("ok"):
          log(f"  OUTPUT CHECK FAILED: {check}")
      data["elapsed_s"] = time.time() - started
      with open(results_json, "w") as f:
        json.dump(data, f, indent=1)
    data["reps_done"] = rep + 1
  data["elapsed_s"] = time.time() - started
  with open(results_json, "w") as f:
    json.dump(data, f, indent=1)
  _write_reports(data, results_md, args.quick)
  print(report.headline(data))


if __name__ == "__main__":
  main()
