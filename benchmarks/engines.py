"""Issue 11's engine benchmark: `.venv/bin/python -m benchmarks.engines [--quick]`.

The same `tfcascade run` job, on the same data and the same config file, on
four engines/runners, each run as its own `python -m pipeline run` process:

  direct         Beam DirectRunner (one process, in-memory runner);
  direct-mp2     Beam DirectRunner, --direct_running_mode=multi_processing
                 --direct_num_workers=2 (two worker processes);
  spark-local2   --engine spark --master local[2] (Spark embedded in the
                 launcher: driver JVM + one Python worker per task slot);
  spark-cluster  --engine spark --master spark://127.0.0.1:PORT, a standalone
                 cluster of a master and two 1-core workers on this machine,
                 started by ci/spark/cluster.sh (own state dir, free ports)
                 before the first round and stopped at the end, also on error.

Data, models and the job config come from the issue-5 benchmark's generator
(benchmarks.workloads.prepare, benchmarks.systems.tfcascade_config): the
"heavy" and "light" model pairs, N deterministic records in 4 TFRecord shards.
Rounds are interleaved: every round runs every system once per workload, the
system order rotated by one each round. Per run: end-to-end wall seconds
(process start to exit), rows/s = N / wall, `wall_seconds` of
run_summary.json (from the run's start after preflight to publish), the CPU
seconds of the launcher's process tree (not the cluster's executors) and how
busy the machine was. Every run's output must have `_SUCCESS` and
`records_written == N`, and its prediction records (sorted serialized bytes of
every predictions-* file) must equal the DirectRunner's of the same round:
anything else stops the benchmark with an error.

Spark runs also write Spark's event log (uncompressed JSON, a few KB), from
which the report reads where a Spark run's seconds go (driver start, executor
registration, first-wave vs later tasks, shutdown).

Writes benchmarks/engines.json (raw runs, medians, environment) and
benchmarks/ENGINES.md (tables regenerated; its hand-written `## Analysis`
section is kept); `--report-only` rebuilds both from engines.json. `--quick`
writes them under the work dir instead, so a smoke run never replaces the
real results.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from importlib import metadata

import psutil

from benchmarks.run import DIRECT, MP2, _busy, machine_info

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CLUSTER_SH = os.path.join(ROOT, "ci", "spark", "cluster.sh")
RESULTS_JSON = os.path.join(HERE, "engines.json")
RESULTS_MD = os.path.join(HERE, "ENGINES.md")
KINDS = ("heavy", "light")
REFERENCE = "direct"
# What the brief and docs/spark.md ask of every Spark driver on this machine.
SPARK_CONF = ["spark.driver.host=127.0.0.1", "spark.driver.bindAddress=127.0.0.1",
              "spark.ui.enabled=false"]

# Recorded per Spark run, not tuning: uncompressed, one file per app.
EVENT_LOG_CONF = ["spark.eventLog.enabled=true", "spark.eventLog.dir=file://{dir}",
                  "spark.eventLog.compress=false", "spark.eventLog.rolling.enabled=false"]

SYSTEMS = {  # name -> (description, extra `tfcascade run` arguments)
    "direct": ("Beam DirectRunner (in-memory, one process)", DIRECT),
    "direct-mp2": ("Beam DirectRunner, multi_processing, 2 worker processes", MP2),
    "spark-local2": ("Spark `local[2]` (driver JVM + 2 Python workers, one process tree)",
                     ["--engine", "spark", "--master", "local[2]"]),
    "spark-cluster": ("Spark standalone: master + 2 workers x 1 core on this machine",
                      ["--engine", "spark", "--master", "{master}"]),
}


def _flops(f: float) -> str:
  return f"{f / 1e6:.2f} MFLOP" if f >= 1e5 else f"{f / 1e3:.1f} kFLOP"


def _models(data) -> str:
  """The model pairs this run used, from its manifest."""
  man = data["manifest"]
  return "; ".join(
      f"**{kind}** A {'->'.join(map(str, man['archs'][kind]['a']))}, B "
      f"{'->'.join(map(str, man['archs'][kind]['b']))} "
      f"({_flops(sum(man['flops_per_row'][kind].values()))}/row)"
      for kind in KINDS)


# --- data and config (in a child: the driver never imports TensorFlow) -------

def prepare_child(workdir: str, n: int) -> dict:
  """Writes (or reuses) data + models for n records and one job config per
  workload; returns {"manifest": ..., "configs": {kind: path}}."""
  from benchmarks import systems  # pylint: disable=g-import-not-at-top
  from benchmarks import workloads  # pylint: disable=g-import-not-at-top
  manifest = workloads.prepare(workdir, [n], log=lambda m: print(m, file=sys.stderr))
  configs = {}
  for kind in KINDS:
    # systems writes <out>/job.yaml with output.path <out>/predictions; every
    # run overrides output.path with its own directory (--set).
    spec = {"workdir": workdir, "kind": kind, "n": n, "layout": "sharded",
            "out": os.path.join(workdir, "configs", kind)}
    configs[kind] = systems._write_config(spec)  # pylint: disable=protected-access
  return {"manifest": manifest, "configs": configs}


def prepare(workdir: str, n: int, log) -> dict:
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  code = ("import json; from benchmarks import engines; "
          f"print('PREPARED', json.dumps(engines.prepare_child({workdir!r}, {n})))")
  t = time.time()
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                        capture_output=True, text=True)
  line = next((l for l in proc.stdout.splitlines() if l.startswith("PREPARED ")), None)
  if proc.returncode or not line:
    sys.exit(f"preparing data failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
  log(f"data, models and configs ready in {workdir} ({time.time() - t:.0f}s)")
  return json.loads(line[len("PREPARED "):])


# --- the standalone cluster --------------------------------------------------

def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class Cluster:
  """ci/spark/cluster.sh on its own state dir and free (non-default) ports."""

  def __init__(self, state_dir: str, python: str, log):
    self.log = log
    ports = []
    while len(ports) < 6:  # distinct, and never Spark's or cluster.sh's defaults
      p = _free_port()
      if p not in ports and p not in (4040, 6066, 7077, 8080, 8081, 17077, 17078,
                                      17079, 18180, 18181, 18182):
        ports.append(p)
    master, webui, w1, w2, w1_ui, w2_ui = ports
    shutil.rmtree(state_dir, ignore_errors=True)
    self.env = dict(
        os.environ, TFCASCADE_SPARK_STATE=state_dir,
        TFCASCADE_SPARK_MASTER_PORT=str(master),
        TFCASCADE_SPARK_MASTER_WEBUI_PORT=str(webui),
        TFCASCADE_SPARK_WORKER_PORTS=f"{w1} {w2}",
        TFCASCADE_SPARK_WORKER_WEBUI_PORTS=f"{w1_ui} {w2_ui}",
        TFCASCADE_SPARK_PYTHON=python, TFCASCADE_SPARK_START_TIMEOUT="150")
    self.state_dir = state_dir
    self.url = None
    self.start_s = None

  def _sh(self, cmd, timeout=240):
    return subprocess.run(["bash", CLUSTER_SH, cmd], env=self.env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)

  def start(self) -> str:
    t = time.perf_counter()
    r = self._sh("start")
    self.start_s = time.perf_counter() - t
    if r.returncode:
      self.stop()
      raise RuntimeError(f"ci/spark/cluster.sh start failed (rc {r.returncode}):\n"
                         f"{r.stdout}{r.stderr[-3000:]}")
    self.url = r.stdout.strip().splitlines()[-1]
    self.log(f"standalone cluster {self.url} up in {self.start_s:.1f}s "
             f"(state {self.state_dir})")
    return self.url

  def pids(self):
    """The daemons' pids (master, workers) from cluster.sh's pid files."""
    out = []
    for path in glob.glob(os.path.join(self.state_dir, "pid", "*.pid")):
      try:
        out.append(int(open(path).read().strip()))
      except (OSError, ValueError):
        pass
    return out

  def stop(self):
    try:
      r = self._sh("stop", timeout=120)
      if r.returncode:
        self.log(f"cluster.sh stop: rc {r.returncode}\n{r.stderr[-2000:]}")
      else:
        self.log("standalone cluster stopped")
    except Exception as e:  # pylint: disable=broad-except; report, keep going
      self.log(f"cluster.sh stop failed: {e!r}")


# --- one run -----------------------------------------------------------------

class TreeSampler(threading.Thread):
  """CPU seconds and peak RSS of process trees, sampled every `period` s.

  Roots: the run's launcher process and, for cluster runs, the cluster's
  daemons (whose trees hold the executors and their Python workers). CPU is
  user+sys per process at its last sample, minus what it had used before the
  run (processes that already ran: the daemons); a process's last < period s
  before it exits is missed. Peak RSS is of the launcher's tree only (pages
  shared between processes are counted once per process).
  """

  def __init__(self, pid, others=(), period=0.05):
    super().__init__(daemon=True)
    self._root = psutil.Process(pid)
    self._others = [p for p in (self._proc(q) for q in others) if p is not None]
    self._period = period
    self._halt = threading.Event()
    self._cpu = {}  # (pid, create_time) -> [baseline, last]
    self.peak = 0
    self.max_procs = 0
    self._sample_others(baseline=True)

  @staticmethod
  def _proc(pid):
    try:
      return psutil.Process(pid)
    except psutil.Error:
      return None

  @staticmethod
  def _tree(root):
    try:
      return [root] + root.children(recursive=True)
    except psutil.Error:
      return []

  def _note(self, proc, baseline=False):
    try:
      with proc.oneshot():
        t = proc.cpu_times()
        key = (proc.pid, proc.create_time())
        rss = proc.memory_info().rss
    except psutil.Error:
      return 0
    used = t.user + t.system
    entry = self._cpu.setdefault(key, [used if baseline else 0.0, used])
    entry[1] = used
    return rss

  def _sample_others(self, baseline=False):
    for root in self._others:
      for p in self._tree(root):
        self._note(p, baseline)

  def run(self):
    while not self._halt.is_set():
      procs = self._tree(self._root)
      self.peak = max(self.peak, sum(self._note(p) for p in procs))
      self.max_procs = max(self.max_procs, len(procs))
      self._sample_others()
      self._halt.wait(self._period)

  def stop(self):
    self._halt.set()
    self.join()
    self._sample_others()

  @property
  def cpu_s(self):
    return sum(last - base for base, last in self._cpu.values())


def spark_events(events_dir):
  """Timestamps (epoch s) and task times from a Spark event log (JSON lines,
  uncompressed, not rolled), or {} when there is none."""
  files = [p for p in glob.glob(os.path.join(events_dir, "*")) if os.path.isfile(p)]
  if not files:
    return {}
  out = {"tasks": []}
  executors = set()
  with open(max(files, key=os.path.getsize), errors="replace") as f:
    for line in f:
      try:
        e = json.loads(line)
      except ValueError:
        continue
      kind = e.get("Event", "")
      if kind.endswith("SparkListenerApplicationStart"):
        out["app_start"] = e["Timestamp"] / 1000
      elif kind.endswith("SparkListenerExecutorAdded"):
        executors.add(e.get("Executor ID"))
        out.setdefault("first_executor_added", e["Timestamp"] / 1000)
        out["last_executor_added"] = e["Timestamp"] / 1000
      elif kind.endswith("SparkListenerJobStart"):
        out["job_start"] = e["Submission Time"] / 1000
      elif kind.endswith("SparkListenerJobEnd"):
        out["job_end"] = e["Completion Time"] / 1000
      elif kind.endswith("SparkListenerApplicationEnd"):
        out["app_end"] = e["Timestamp"] / 1000
      elif kind.endswith("SparkListenerTaskEnd"):
        info, metrics = e.get("Task Info", {}), e.get("Task Metrics") or {}
        out["tasks"].append({
            "executor": info.get("Executor ID"),
            "launch": info.get("Launch Time", 0) / 1000,
            "finish": info.get("Finish Time", 0) / 1000,
            "run_s": metrics.get("Executor Run Time", 0) / 1000,
            "deserialize_s": metrics.get("Executor Deserialize Time", 0) / 1000,
            "ok": info.get("Failed") is False and not info.get("Killed")})
  out["executors"] = len(executors)
  return out


def spark_breakdown(ev, t_start, t_end, rows):
  """Where a Spark run's seconds went, from its event log (see ENGINES.md)."""
  if not ev or "app_start" not in ev or "job_start" not in ev or not ev["tasks"]:
    return None
  tasks = sorted(ev["tasks"], key=lambda t: t["launch"])
  first_launch = tasks[0]["launch"]
  # Tasks launched within 0.5 s of the first: the first wave, one per slot;
  # each starts a Python worker (imports TF, opens a CascadeSession).
  first_wave = [t for t in tasks if t["launch"] - first_launch < 0.5]
  later = [t for t in tasks if t not in first_wave]
  return {
      # Python + imports + preflight in the launcher, then the driver JVM and
      # the SparkContext.
      "to_spark_context_s": round(ev["app_start"] - t_start, 2),
      # Executors registering (standalone: new executor JVMs per app).
      "spark_context_to_job_s": round(ev["job_start"] - ev["app_start"], 2),
      "job_start_to_first_task_s": round(first_launch - ev["job_start"], 2),
      "job_s": round(ev["job_end"] - ev["job_start"], 2),
      "after_job_s": round(t_end - ev["job_end"], 2),  # spark.stop, publish, exit
      "tasks": len(tasks), "executors": ev["executors"],
      "first_wave_task_s": round(statistics.median(t["finish"] - t["launch"]
                                                   for t in first_wave), 2),
      "later_task_s": (round(statistics.median(t["finish"] - t["launch"] for t in later), 2)
                       if later else None),
      "task_busy_s": round(sum(t["finish"] - t["launch"] for t in tasks), 2),
      "failed_tasks": sum(1 for t in tasks if not t["ok"]),
      # A later task reuses its slot's Python worker and session: its rows/s
      # is the engine's steady rate per slot (the read ranges are equal).
      "later_task_rows_per_s": (round(rows / len(tasks) / statistics.median(
          t["finish"] - t["launch"] for t in later)) if later else None),
  }


def prediction_digest(out_dir: str):
  """(records, sha256 of the sorted serialized prediction records): equal
  digests mean the same set (multiset) of records, whatever the files."""
  from tfcascade.transforms.formats import tfrecord_framing  # TF-free reader, pylint: disable=g-import-not-at-top
  records = []
  for path in glob.glob(os.path.join(out_dir, "predictions-*")):
    for chunk in tfrecord_framing.read_record_chunks(path, compression="auto",
                                                     chunk_size=8192):
      records.extend(r for _, r in chunk)
  records.sort()
  h = hashlib.sha256()
  for r in records:
    h.update(len(r).to_bytes(8, "little"))
    h.update(r)
  return len(records), h.hexdigest()


def _read_json(path):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def _kill_tree(proc):
  """SIGKILL to a run's launcher and every process below it (JVM, workers)."""
  try:
    procs = psutil.Process(proc.pid).children(recursive=True)
  except psutil.Error:
    procs = []
  for p in [proc] + procs:
    try:
      p.kill()
    except (psutil.Error, OSError):
      pass


def run_one(system, kind, config, out_dir, n, master, log, timeout, cluster_pids=()):
  """Runs one `tfcascade run` process; returns its measurements (raises
  RuntimeError when the run failed or its output is incomplete)."""
  python = os.path.join(ROOT, ".venv", "bin", "python")
  extra = [a.format(master=master) for a in SYSTEMS[system][1]]
  cmd = [python, "-m", "pipeline", "run", "--config", config,
         "--set", f"output.path={out_dir}", "--overwrite"] + extra
  events_dir = out_dir.rstrip("/") + ".events"
  if system.startswith("spark"):
    for item in SPARK_CONF:
      cmd += ["--spark-conf", item]
    # Spark's event log (a few KB of JSON): where the seconds went.
    shutil.rmtree(events_dir, ignore_errors=True)
    os.makedirs(events_dir)
    for item in EVENT_LOG_CONF:
      cmd += ["--spark-conf", item.format(dir=events_dir)]
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3",
             SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=python,
             PYSPARK_DRIVER_PYTHON=python)
  log_path = out_dir.rstrip("/") + ".log"
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  before_cpu = psutil.cpu_times()
  load = os.getloadavg()[0]
  with open(log_path, "w") as log_file:
    t_start = time.time()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log_file,
                            stderr=subprocess.STDOUT)
    sampler = TreeSampler(proc.pid, cluster_pids if system == "spark-cluster" else ())
    sampler.start()
    try:
      rc = proc.wait(timeout=timeout)
    except BaseException:  # timeout, Ctrl-C, SIGTERM: take our run's tree down
      _kill_tree(proc)
      rc = proc.wait()
      if not isinstance(sys.exc_info()[1], subprocess.TimeoutExpired):
        raise
    wall = time.perf_counter() - start
    t_end = time.time()
    sampler.stop()
  machine = _busy(psutil.cpu_times()) - _busy(before_cpu)
  ours = sampler.cpu_s
  record = {"system": system, "kind": kind, "n": n, "wall_s": round(wall, 3),
            "rows_per_s": round(n / wall, 1), "rc": rc,
            "cpu_s": round(ours, 2),
            "machine_busy_cpu_s": round(machine, 2),
            "others_cpu_s": round(max(0.0, machine - ours), 2),
            "machine_busy_frac": round(machine / wall / (os.cpu_count() or 1), 3),
            "peak_rss_mb_launcher_tree": round(sampler.peak / 2**20),
            "processes_launcher_tree": sampler.max_procs,
            "loadavg_1m_at_start": load, "log": log_path}
  with open(log_path, errors="replace") as f:
    text = f.read()
  if rc != 0:
    raise RuntimeError(f"{system}/{kind}: `{' '.join(cmd)}` exited {rc} after "
                       f"{wall:.1f}s; log {log_path}:\n{text[-3000:]}")
  problems = []
  if not os.path.exists(os.path.join(out_dir, "_SUCCESS")):
    problems.append("no _SUCCESS")
  try:
    with open(os.path.join(out_dir, "run_summary.json")) as f:
      summary = json.load(f)
  except (OSError, ValueError) as e:
    summary = {}
    problems.append(f"no readable run_summary.json: {e!r}")
  if summary and (summary.get("records_read"), summary.get("records_written")) != (n, n):
    problems.append(f"records_read/written {summary.get('records_read')}/"
                    f"{summary.get('records_written')} != {n}")
  rows, digest = prediction_digest(out_dir)
  if rows != n:
    problems.append(f"{rows} prediction records in predictions-* != {n}")
  if problems:
    raise RuntimeError(f"{system}/{kind}: output {out_dir} is not complete: "
                       f"{'; '.join(problems)}; log {log_path}")
  record.update(summary_wall_s=summary["wall_seconds"],
                launcher_outside_run_s=round(wall - summary["wall_seconds"], 3),
                runner=summary.get("runner"), prediction_rows=rows,
                prediction_sha256=digest,
                metrics=_read_json(os.path.join(out_dir, "run_metrics.json")))
  if system.startswith("spark"):
    record["spark"] = spark_breakdown(spark_events(events_dir), t_start, t_end, n)
    if record["spark"] is None:
      log(f"  note: no usable Spark event log in {events_dir}")
  return record


# --- report ------------------------------------------------------------------

def _median(values):
  values = [v for v in values if v is not None]
  return statistics.median(values) if values else None


def summarize(runs, n, kinds, systems):
  """Medians per (kind, system) and ratios vs the DirectRunner."""
  out = {}
  for kind in kinds:
    out[kind] = {}
    for system in systems:
      mine = [r for r in runs if r["kind"] == kind and r["system"] == system]
      if not mine:
        continue
      med = lambda key, rs=mine: _median([r.get(key) for r in rs])  # noqa: E731
      m = out[kind][system] = {
          "runs": len(mine),
          "wall_s": med("wall_s"),
          "wall_s_min": min(r["wall_s"] for r in mine),
          "wall_s_max": max(r["wall_s"] for r in mine),
          "summary_wall_s": med("summary_wall_s"),
          "launcher_outside_run_s": med("launcher_outside_run_s"),
          "cpu_s": med("cpu_s"),
          "others_cpu_s": med("others_cpu_s"),
          "machine_busy_cpu_s": med("machine_busy_cpu_s"),
          "peak_rss_mb_launcher_tree": med("peak_rss_mb_launcher_tree"),
      }
      m["rows_per_s"] = round(n / m["wall_s"], 1)
      sparks = [r["spark"] for r in mine if r.get("spark")]
      if sparks:
        m["spark"] = {key: _median([sp.get(key) for sp in sparks])
                      for key in SPARK_KEYS}
    ref = out[kind].get(REFERENCE)
    for system, m in out[kind].items():
      if not ref:
        continue
      # Ratio of rows/s (= inverse ratio of median wall times).
      m["x_direct_rows_per_s"] = round(ref["wall_s"] / m["wall_s"], 3)
      # The same, paired within each round (both ran minutes apart at most).
      paired = []
      for rnd in sorted({r["round"] for r in runs}):
        mine = {r["system"]: r for r in runs if r["kind"] == kind and r["round"] == rnd}
        if system in mine and REFERENCE in mine:
          paired.append(mine[REFERENCE]["wall_s"] / mine[system]["wall_s"])
      m["x_direct_per_round"] = [round(x, 3) for x in paired]
      m["x_direct_paired_median"] = round(statistics.median(paired), 3) if paired else None
      m["x_direct_cpu"] = round(m["cpu_s"] / ref["cpu_s"], 2)
  return out


SPARK_KEYS = ("to_spark_context_s", "spark_context_to_job_s", "job_start_to_first_task_s",
              "job_s", "first_wave_task_s", "later_task_s", "later_task_rows_per_s",
              "task_busy_s",
              "after_job_s", "tasks", "executors", "failed_tasks")


def _fmt(v, spec=".1f"):
  return "–" if v is None else format(v, spec)


def table(data) -> str:
  lines = [
      "| workload | system | wall s, median (min-max) | rows/s end to end | "
      "x DirectRunner | x DirectRunner, per round | `wall_seconds` (run_summary) | "
      "rest: start-up + preflight + exit | CPU s, ours (x direct) | CPU s, others' | "
      "peak RSS MB |",
      "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for kind, systems in data["medians"].items():
    for system, m in systems.items():
      per_round = " / ".join(f"{x:.2f}" for x in m.get("x_direct_per_round", []))
      lines.append(
          f"| {kind} | {system} | {m['wall_s']:.1f} "
          f"({m['wall_s_min']:.1f}-{m['wall_s_max']:.1f}) | **{m['rows_per_s']:,.0f}** | "
          f"**{_fmt(m.get('x_direct_rows_per_s'), '.2f')}** | {per_round} | "
          f"{m['summary_wall_s']:.1f} | {m['launcher_outside_run_s']:.1f} | "
          f"{m['cpu_s']:.1f} ({_fmt(m.get('x_direct_cpu'), '.1f')}) | "
          f"{m['others_cpu_s']:.1f} | {m['peak_rss_mb_launcher_tree']:,.0f} |")
  return "\n".join(lines)


def spark_table(data) -> str:
  lines = [
      "| workload | system | process start -> SparkContext starts | -> job submitted | "
      "-> first task | job (4 tasks) | first-wave task | later task | "
      "later task rows/s (one slot) | job end -> exit |",
      "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for kind, systems in data["medians"].items():
    for system, m in systems.items():
      sp = m.get("spark")
      if not sp:
        continue
      lines.append(
          f"| {kind} | {system} | {_fmt(sp['to_spark_context_s'])} | "
          f"{_fmt(sp['spark_context_to_job_s'])} | {_fmt(sp['job_start_to_first_task_s'])} | "
          f"{_fmt(sp['job_s'])} | {_fmt(sp['first_wave_task_s'])} | "
          f"{_fmt(sp['later_task_s'])} | {_fmt(sp['later_task_rows_per_s'], ',.0f')} | "
          f"{_fmt(sp['after_job_s'])} |")
  return "\n".join(lines)


def write_report(data, path_md):
  """ENGINES.md: tables and facts, regenerated; the `## Analysis` section
  (written by hand from the numbers) is kept from the previous file."""
  keep = None
  if os.path.exists(path_md):
    text = open(path_md).read()
    marker = "\n## Analysis\n"
    if marker in text:
      keep = text[text.index(marker):]
  m = data["machine"]
  rows = "\n".join(
      f"| `{name}` | {desc} | "
      f"`{' '.join(args).format(master='spark://127.0.0.1:PORT')}`"
      + (" + `--spark-conf` " + ", ".join(f"`{c}`" for c in SPARK_CONF)
         if name.startswith("spark") else "")
      + " |" for name, (desc, args) in SYSTEMS.items() if name in data["systems"])
  head = f"""# Engines side by side: Beam DirectRunner vs Spark (issue 11)

Generated by `.venv/bin/{data['command'].strip()}` on {data['date_utc']}:
{data['rounds_done']} interleaved rounds, {data['records']:,} records per run,
{data['elapsed_s'] / 60:.1f} min in all (cluster start and data included).
Raw numbers, every run: [`{os.path.basename(data['json'])}`]({os.path.basename(data['json'])}).

## What runs

The same job — one config file per workload, written by the issue-5
benchmark's generator (`benchmarks.systems.tfcascade_config`: A -> B ungated,
`batch_size` 1024, TFRecord output with the `id` passthrough) — on the same
data (`benchmarks.workloads.prepare`: {data['records']:,} deterministic
`tf.train.Example`s of 296 bytes in 4 uncompressed TFRecord shards, so 4 read
ranges = 4 Spark tasks), run as `.venv/bin/python -m pipeline run --config JOB
--set output.path=OUT --overwrite ...` in a fresh process per run:

| system | what | extra arguments |
|---|---|---|
{rows}

Spark runs also get `SPARK_LOCAL_IP=127.0.0.1`, `PYSPARK_PYTHON` = the venv's
Python, and an uncompressed Spark event log (`--spark-conf` {", ".join(f"`{c}`" for c in EVENT_LOG_CONF[:1])}, ...;
a few KB per run) from which the breakdown below is read. The standalone
cluster is `ci/spark/cluster.sh start` (a master and 2 workers of 1 core
each; executors of 1 core, 1 GiB) on free loopback ports with its own state
dir, started once before the first round ({_fmt(data.get('cluster_start_s'))} s)
and stopped at the end; every run is a new Spark application, so it starts
new executor JVMs.

Models (`benchmarks.workloads.ARCHS` when this ran): {_models(data)}.

Each round runs every system once per workload, the order of systems rotated
by one per round (and the order of workloads alternated). Timed: process
start to exit (`wall s`); rows/s = records / wall. Checked after every run:
exit 0, `_SUCCESS`, `records_read == records_written == {data['records']:,}`,
and the prediction records (sorted serialized bytes of every `predictions-*`
file) byte-identical to the DirectRunner's of the same round and workload:
{data['equality']}.

## Machine

- {m.get('cores')} cores, {m.get('cpu_model')}, {m.get('memory_gb')} GiB RAM; {m.get('platform')}
- Code: git {m.get('git_head')} plus {m.get('git_uncommitted_paths')} uncommitted paths (the Spark engine is not committed yet; other engineers were editing the tree while this ran)
- Python {m.get('python')}, tensorflow-cpu {m.get('tensorflow-cpu')}, apache-beam {m.get('apache-beam')}, pyspark {m.get('pyspark')}, {m.get('java')}
- **Shared and noisy**: other people's jobs (their own Spark and Airflow tests among them) ran on the same 2 cores. Median 1-min load average at run start {data['noise']['loadavg_median']:.2f}; median CPU-seconds used by others while one of our runs ran: {data['noise']['others_cpu_s_median']:.1f} (machine {100 * data['noise']['machine_busy_frac_median']:.0f}% busy in all, median).

## Results (medians of {data['rounds_done']} runs)

{table(data)}

- `x DirectRunner` = rows/s of the system / rows/s of `direct`, end to end
  (from the medians); per round: the same ratio within each round, rounds in
  order.
- `wall_seconds` is run_summary.json's: from the run's start (after the
  launcher's imports and preflight) to publish; the rest is Python + TF +
  Beam imports and preflight before it, and interpreter exit after.
- CPU s, ours: user+sys of the launcher's process tree (driver JVM and Python
  workers included) and, for `spark-cluster`, of the cluster's master, worker
  and executor processes (sampled every 50 ms). Others': the rest of the
  machine's busy CPU time during the run. Peak RSS: the launcher's tree only
  (for `spark-cluster` the executors are not in it).

## Where a Spark run's seconds go (medians, from Spark's event log)

{spark_table(data)}

Columns (timestamps of the event log against the launcher's start and exit):
launcher start to the `SparkContext` starting (Python, TF and Beam imports,
preflight, `publish.prepare`, then the driver JVM launched by pyspark); to the
job's submission (the SparkContext's set-up; on the standalone cluster it
waits until the app's executor JVMs are launched and registered); to the
first task's launch; the job (submitted to done); the median duration of a
first-wave task (one per task slot: it starts a Python worker, which imports
TF and opens a CascadeSession, then scores its range) and of a later task
(reuses that worker and session), and the later task's rows / duration
(each task reads one of 4 equal shards); job end to process exit
(`spark.stop()`, publish, interpreter exit).
"""
  analysis = keep or "\n## Analysis\n\n(to be written from the numbers above)\n"
  with open(path_md, "w") as f:
    f.write(head + analysis)


# --- main --------------------------------------------------------------------

def _versions():
  info = machine_info()
  try:
    info["git_head"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                      capture_output=True, text=True).stdout.strip()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT,
                            capture_output=True, text=True).stdout.splitlines()
    info["git_uncommitted_paths"] = len(status)
  except OSError:
    pass
  for pkg in ("pyspark", "pydantic"):
    try:
      info[pkg] = metadata.version(pkg)
    except metadata.PackageNotFoundError:
      pass
  try:
    java = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
    info["java"] = (java.stderr or java.stdout).splitlines()[0].strip()
  except (OSError, IndexError, subprocess.SubprocessError):
    info["java"] = None
  return info


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--records", type=int, default=None,
                      help="records per run (default 50000; --quick 5000)")
  parser.add_argument("--rounds", type=int, default=None,
                      help="interleaved rounds (default 3; --quick 1)")
  parser.add_argument("--workload", choices=("heavy", "light", "both"), default=None,
                      help="default both; --quick: heavy")
  parser.add_argument("--systems", default=",".join(SYSTEMS),
                      help=f"comma-separated subset of {','.join(SYSTEMS)}")
  parser.add_argument("--quick", action="store_true",
                      help="smoke run: 5000 records, 1 round, heavy only; results "
                           "under the work dir (never replaces benchmarks/engines.*)")
  parser.add_argument("--workdir", default="/tmp/tfcascade-bench-engines",
                      help="data, models, outputs and the cluster's state (not in the repo)")
  parser.add_argument("--timeout", type=float, default=900, help="seconds per run")
  parser.add_argument("--report-only", action="store_true",
                      help="rebuild ENGINES.md (and the medians) from engines.json")
  args = parser.parse_args(argv)
  if args.report_only:
    with open(RESULTS_JSON) as f:
      data = json.load(f)
    data["medians"] = summarize(data["runs"], data["records"], data["kinds"],
                                data["systems"])
    with open(RESULTS_JSON, "w") as f:
      json.dump(data, f, indent=1)
    write_report(data, RESULTS_MD)
    print(f"wrote {RESULTS_JSON} and {RESULTS_MD}")
    return

  records = args.records or (5000 if args.quick else 50000)
  rounds = args.rounds or (1 if args.quick else 3)
  workload = args.workload or ("heavy" if args.quick else "both")
  kinds = KINDS if workload == "both" else (workload,)
  systems = [s.strip() for s in args.systems.split(",") if s.strip()]
  unknown = set(systems) - set(SYSTEMS)
  if unknown or REFERENCE not in systems:
    parser.error(f"--systems: unknown {sorted(unknown)} or no {REFERENCE!r} (the reference)")
  workdir = os.path.join(args.workdir, str(records))
  results_json, results_md = RESULTS_JSON, RESULTS_MD
  if args.quick:
    results_json = os.path.join(workdir, "engines-quick.json")
    results_md = os.path.join(workdir, "ENGINES-quick.md")
  started = time.time()

  def log(msg):
    print(f"[{time.time() - started:6.0f}s] {msg}", flush=True)

  prepared = prepare(workdir, records, log)
  python = os.path.join(ROOT, ".venv", "bin", "python")
  data = {"command": " ".join(["python -m benchmarks.engines"] + list(
              sys.argv[1:] if argv is None else argv)),
          "json": results_json,
          "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
              timespec="seconds"),
          "records": records, "rounds_planned": rounds, "kinds": list(kinds),
          "systems": systems, "machine": _versions(),
          "manifest": prepared["manifest"], "runs": []}
  cluster = None
  # SIGTERM/SIGHUP end the run through `finally` (the cluster is stopped).
  for sig in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(sig, lambda s, f: sys.exit(f"benchmark stopped by signal {s}"))
  try:
    master = None
    if "spark-cluster" in systems:
      cluster = Cluster(os.path.join(workdir, "spark-cluster"), python, log)
      master = cluster.start()
      data["cluster_start_s"] = round(cluster.start_s, 1)
    total = rounds * len(kinds) * len(systems)
    done = 0
    for rnd in range(rounds):
      order = systems[rnd % len(systems):] + systems[:rnd % len(systems)]
      for kind in (kinds if rnd % 2 == 0 else kinds[::-1]):
        reference = None
        for system in order:
          out_dir = os.path.join(workdir, "out", kind, system)
          record = run_one(system, kind, prepared["configs"][kind], out_dir,
                           records, master, log, args.timeout,
                           cluster.pids() if cluster else ())
          record["round"] = rnd
          data["runs"].append(record)
          done += 1
          log(f"({done}/{total}) round {rnd} {kind:5s} {system:13s} "
              f"{record['wall_s']:6.1f}s  {record['rows_per_s']:8,.0f} rows/s  "
              f"run_summary {record['summary_wall_s']:5.1f}s  "
              f"cpu {record['cpu_s']:5.1f}s  others {record['others_cpu_s']:5.1f}s  "
              f"load {record['loadavg_1m_at_start']:.2f}")
        # Equality: every system's prediction records vs the DirectRunner's.
        mine = [r for r in data["runs"] if r["round"] == rnd and r["kind"] == kind]
        reference = next(r for r in mine if r["system"] == REFERENCE)
        for r in mine:
          r["equal_to_direct"] = r["prediction_sha256"] == reference["prediction_sha256"]
        bad = [r["system"] for r in mine if not r["equal_to_direct"]]
        if bad:
          raise RuntimeError(
              f"round {rnd} {kind}: prediction records of {bad} differ from the "
              f"DirectRunner's (sorted serialized records; outputs under "
              f"{os.path.join(workdir, 'out', kind)})")
      data["rounds_done"] = rnd + 1
      data["elapsed_s"] = time.time() - started
      # Progress goes next to the data: a failed run never replaces results.
      with open(os.path.join(workdir, "engines-partial.json"), "w") as f:
        json.dump(data, f, indent=1)
  finally:
    if cluster is not None:
      cluster.stop()
  data["elapsed_s"] = time.time() - started
  data["medians"] = summarize(data["runs"], records, kinds, systems)
  digests = {r["kind"]: set() for r in data["runs"]}
  for r in data["runs"]:
    digests[r["kind"]].add(r["prediction_sha256"])
  data["equality"] = (
      f"all {len(data['runs'])} runs equal; "
      + "; ".join(f"{kind}: {len(d)} distinct digest(s) over all rounds"
                  for kind, d in digests.items()))
  data["noise"] = {
      "loadavg_median": statistics.median(r["loadavg_1m_at_start"] for r in data["runs"]),
      "others_cpu_s_median": statistics.median(r["others_cpu_s"] for r in data["runs"]),
      "machine_busy_frac_median": statistics.median(
          r["machine_busy_frac"] for r in data["runs"])}
  with open(results_json, "w") as f:
    json.dump(data, f, indent=1)
  write_report(data, results_md)
  log(f"wrote {results_json} and {results_md}")
  print(table(data))


if __name__ == "__main__":
  main()
