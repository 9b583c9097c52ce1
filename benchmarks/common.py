"""What both drivers (benchmarks.run, benchmarks.engines) and their reports
share. TF-free: a driver must not import TensorFlow while it measures."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from importlib import metadata

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DIRECT = ["--runner=DirectRunner"]
MP2 = DIRECT + ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def child_env(**extra) -> dict:
  return dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3", **extra)


def tagged_json(text: str, tag: str):
  """The JSON of the last line `TAG {json}` in `text`, or None."""
  line = next((l for l in reversed(text.splitlines()) if l.startswith(tag + " ")), None)
  return None if line is None else json.loads(line[len(tag) + 1:])


def in_child(code: str, tag: str):
  """Runs Python `code` (which prints `TAG {json}`) in a child process, so
  the driver stays TF-free; returns that json or exits with the child's output."""
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=child_env(),
                        capture_output=True, text=True)
  found = tagged_json(proc.stdout, tag)
  if proc.returncode or found is None:
    sys.exit(f"preparing data failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
  return found


def logger(started: float):
  return lambda msg: print(f"[{time.time() - started:6.0f}s] {msg}", flush=True)


class TreeSampler(threading.Thread):
  """Peak RSS of a process tree and CPU seconds of it (and of `others`'
  trees: a cluster's daemons), sampled every `period` s.

  CPU is user+sys per process at its last sample minus what it had used
  before (processes that already ran); a process's last < period s is missed.
  Peak RSS is of the root's tree only; pages shared between processes count
  once per process (exact for one process).
  """

  def __init__(self, pid, others=(), period=0.05):
    super().__init__(daemon=True)
    self._root = psutil.Process(pid)
    self._others = [p for p in map(self._proc, others) if p is not None]
    self._period = period
    self._halt = threading.Event()
    self._cpu = {}  # (pid, create_time) -> [baseline, last]
    self.peak = self.max_procs = 0
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
        t, key, rss = proc.cpu_times(), (proc.pid, proc.create_time()), proc.memory_info().rss
    except psutil.Error:
      return 0
    entry = self._cpu.setdefault(key, [t.user + t.system if baseline else 0.0, 0.0])
    entry[1] = t.user + t.system
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


def busy(t) -> float:
  """Busy CPU seconds in a psutil.cpu_times() of the whole machine."""
  return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)


def kill_tree(proc):
  """SIGKILL to a process and every process below it (JVMs, workers)."""
  try:
    procs = psutil.Process(proc.pid).children(recursive=True)
  except psutil.Error:
    procs = []
  for p in [proc] + procs:
    try:
      p.kill()
    except (psutil.Error, OSError):
      pass


def run_measured(cmd, log_path, timeout, env=None, others=()) -> dict:
  """Runs `cmd` (output to log_path) while sampling its process tree; a
  timeout, Ctrl-C or SIGTERM takes the whole tree down (then re-raised, but
  for the timeout). Returns rc, wall_s, t_start/t_end (epoch), the sampler
  (peak RSS, CPU), machine_cpu_s (busy CPU of the whole machine meanwhile),
  loadavg_1m (at the start) and the output."""
  before = psutil.cpu_times()
  load = os.getloadavg()[0]
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, "w") as log:
    t_start, start = time.time(), time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env or child_env(), stdout=log,
                            stderr=subprocess.STDOUT)
    sampler = TreeSampler(proc.pid, others)
    sampler.start()
    try:
      rc = proc.wait(timeout=timeout)
    except BaseException:
      kill_tree(proc)
      rc = proc.wait()
      if not isinstance(sys.exc_info()[1], subprocess.TimeoutExpired):
        raise
    wall, t_end = time.perf_counter() - start, time.time()
    sampler.stop()
  with open(log_path, errors="replace") as f:
    output = f.read()
  return {"rc": rc, "wall_s": wall, "t_start": t_start, "t_end": t_end, "sampler": sampler,
          "machine_cpu_s": busy(psutil.cpu_times()) - busy(before), "loadavg_1m": load,
          "output": output}


def machine_info(packages=()) -> dict:
  info = {"cores": os.cpu_count(), "python": platform.python_version(),
          "platform": platform.platform(),
          "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)}
  try:
    cpuinfo = open("/proc/cpuinfo").read()
    info["cpu_model"] = next(l.split(":", 1)[1].strip() for l in cpuinfo.splitlines()
                             if l.startswith("model name"))
    info["simd"] = [f for f in ("avx2", "fma", "avx512f") if f" {f}" in cpuinfo]
  except (OSError, StopIteration):
    info["cpu_model"] = platform.processor()
  for pkg in ("tensorflow-cpu", "tensorflow", "apache-beam", "numpy", "protobuf",
              "google-crc32c") + tuple(packages):
    try:
      info[pkg] = metadata.version(pkg)
    except metadata.PackageNotFoundError:
      pass
  return info


# --- report helpers ----------------------------------------------------------

def median(values):
  values = [v for v in values if v is not None]
  return statistics.median(values) if values else None


def fmt(v, spec=",.0f") -> str:
  return "–" if v is None else format(v, spec)


def flops(f) -> str:
  return f"{f / 1e6:.2f} MFLOP" if f >= 1e5 else f"{f / 1e3:.2f} kFLOP"


def md_table(header, rows, left=1) -> list:
  """Markdown table lines; the first `left` columns left-aligned."""
  return (["| " + " | ".join(header) + " |",
           "|" + "---|" * left + "---:|" * (len(header) - left)]
          + ["| " + " | ".join(map(str, row)) + " |" for row in rows])
