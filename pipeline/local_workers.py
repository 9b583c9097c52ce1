"""Every core of this machine by default: warm worker processes for Beam.

`tfcascade run` with no runner flags scores on the DirectRunner's FnApiRunner
with one worker process per core (os.sched_getaffinity), unless the input is
too small to pay for them, and says what it chose. Beam's own
`--direct_running_mode=multi_processing` starts each worker only when its
first bundle comes, and the worker then imports Beam's harness and
TensorFlow and restores the models before it scores a row: ~9 s on a 2-core
machine, most of the time it could save at 3M light rows
(docs/performance.md). Here the workers are started as soon as the launcher
knows it wants them and load everything while the launcher finishes its
preflight; the runner then reaches them as an EXTERNAL environment (Beam's
worker-pool protocol, `BeamFnExternalWorkerPool.StartWorker`) served by the
small pool below, which hands each request to the next loaded process.

A worker that dies (a crash, the OOM killer) is noticed by a watchdog, which
interrupts the launcher's wait: the run fails with WorkerLostError (exit 1)
instead of waiting for a worker that will never answer.
"""

from __future__ import annotations

import _thread
import concurrent.futures
import dataclasses
import logging
import os
import subprocess
import sys
import threading
from typing import List, Optional, Sequence

import grpc
from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.transforms import environments

_LOG = logging.getLogger("tfcascade")

# Below this much input (compressed bytes on disk), one process: extra
# processes cost ~1-3 s each to load on a 2-core machine, which only a few
# hundred thousand light rows repay (docs/performance.md, measured).
MIN_INPUT_BYTES = 64 << 20
_WORKER_MODULE = "tfcascade.transforms.beam.warm_worker"
_READY_TIMEOUT_S = 300.0


class WorkerLostError(RuntimeError):
  """A worker process of this run ended while the job was running."""


@dataclasses.dataclass(frozen=True)
class Choice:
  """How many worker processes the default run uses, and why (one line)."""
  workers: int
  why: str


def cores() -> int:
  """The cores this process may run on (a container's or taskset's share)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


def requested(beam_args: Sequence[str]) -> Optional[int]:
  """--direct_num_workers=N when given (0: one per core), else None."""
  found = None
  for i, arg in enumerate(beam_args):
    if arg.startswith("--direct_num_workers="):
      found = arg.split("=", 1)[1]
    elif arg == "--direct_num_workers" and i + 1 < len(beam_args):
      found = beam_args[i + 1]
  return None if found is None else int(found)


def ours_to_choose(beam_args: Sequence[str]) -> bool:
  """True unless the flags pick a runner, Beam's own running mode or an
  environment (then Beam starts the workers, as it is told)."""
  names = ("--runner", "--direct_running_mode", "--environment_type")
  return not any(a == n or a.startswith(n + "=") for a in beam_args for n in names)


def choose(input_bytes: int, units: int, wanted: Optional[int] = None,
           available: Optional[int] = None) -> Choice:
  """`wanted` worker processes (--direct_num_workers; 0: one per core), or by
  default one per core unless the input is small; never more than units."""
  available = available or cores()
  size = f"{input_bytes / 2**20:,.0f} MiB of input in {units:,} unit(s)"
  if wanted is not None:
    workers = min(wanted or available, max(units, 1))
    why = f"--direct_num_workers={wanted}; {size}"
  elif available < 2:
    workers, why = 1, f"1 core; {size}"
  elif input_bytes < MIN_INPUT_BYTES:
    workers, why = 1, (f"{size}: under {MIN_INPUT_BYTES >> 20} MiB, too little to pay "
                       f"for {available} worker start-ups")
  else:
    workers, why = min(available, units), f"one per core of {available}; {size}"
  if workers <= 1:
    return Choice(1, f"in-process ({why})")
  return Choice(workers, f"with {workers} worker processes ({why})")


class WarmWorkers:
  """`count` warm worker processes and the worker-pool endpoint the runner
  asks for workers. A context manager: leaving it ends every process."""

  def __init__(self, count: int):
    self._lock = threading.Lock()
    self._closing = False
    self.lost: Optional[str] = None
    self._procs: List[subprocess.Popen] = [
        subprocess.Popen([sys.executable, "-m", _WORKER_MODULE], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
        for _ in range(count)]
    self._idle = list(self._procs)
    self._server = grpc.server(concurrent.futures.ThreadPoolExecutor(2))
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(
        _PoolServicer(self), self._server)
    port = self._server.add_insecure_port("127.0.0.1:0")  # loopback only
    self._server.start()
    self.endpoint = f"127.0.0.1:{port}"
    self._watchdog = threading.Thread(target=self._watch, daemon=True,
                                      name="tfcascade-worker-watchdog")

  def __enter__(self) -> "WarmWorkers":
    self._watchdog.start()
    return self

  def __exit__(self, exc_type, *_) -> None:
    self.close(kill=exc_type is not None)

  def hand_out(self, control_url: str, worker_id: str) -> str:
    """Gives the next loaded process the runner's request; '' or an error."""
    with self._lock:
      if not self._idle:
        return f"no idle worker process left (all {len(self._procs)} in use)"
      proc = self._idle.pop(0)
    if proc.stdout.readline().strip() != "ready":  # blocks until it has loaded
      return f"worker process {proc.pid} failed to start (exit code {proc.wait()})"
    proc.stdin.write(f"{control_url} {worker_id}\n")
    proc.stdin.flush()
    return ""

  def _watch(self) -> None:
    """Interrupts the launcher's wait when a worker dies mid-run."""
    for proc in self._procs:
      threading.Thread(target=self._await, args=(proc,), daemon=True).start()

  def _await(self, proc: subprocess.Popen) -> None:
    code = proc.wait()
    with self._lock:
      if self._closing or code == 0 or self.lost:
        return
      self.lost = (f"worker process {proc.pid} ended with exit code {code} while the "
                   f"job was running" + (" (killed: out of memory?)" if code == -9 else ""))
    # The runner's threads now fail on the broken streams; the launcher's
    # one line (WorkerLostError) says why, so theirs are not shown.
    logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
    threading.excepthook = _unshown
    _thread.interrupt_main()

  def close(self, kill: bool = False) -> None:
    """Ends every process: those never handed out at once (EOF), the rest
    when the runner has closed their control stream, or now if `kill` (the
    run failed or was interrupted: nobody will close it)."""
    with self._lock:
      self._closing = True
    self._server.stop(0)
    for proc in self._procs:
      if kill:
        proc.kill()
      try:
        proc.stdin.close()
      except OSError:
        pass
    for proc in self._procs:
      try:
        proc.wait(timeout=30)
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
      proc.stdout.close()


def _unshown(args) -> None:
  _LOG.debug("after a lost worker, in thread %s", args.thread and args.thread.name,
             exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


class _PoolServicer(beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolServicer):
  """Beam's worker-pool service, handing requests to WarmWorkers."""

  def __init__(self, workers: WarmWorkers):
    self._workers = workers

  def StartWorker(self, request, context):  # pylint: disable=invalid-name
    error = self._workers.hand_out(request.control_endpoint.url, request.worker_id)
    return beam_fn_api_pb2.StartWorkerResponse(error=error)

  def StopWorker(self, request, context):  # pylint: disable=invalid-name
    return beam_fn_api_pb2.StopWorkerResponse()


def _not_the_mode_warning(record: logging.LogRecord) -> bool:
  # FnApiRunner warns that several workers want direct_running_mode
  # multi_processing: that mode would replace our environment with its own.
  return "direct_running_mode should be" not in record.getMessage()


def runner(workers: WarmWorkers) -> FnApiRunner:
  """The DirectRunner's FnApiRunner, its workers reached through `workers`."""
  fn_runner_log = logging.getLogger(FnApiRunner.__module__)
  if _not_the_mode_warning not in fn_runner_log.filters:
    fn_runner_log.addFilter(_not_the_mode_warning)
  return FnApiRunner(default_environment=environments.ExternalEnvironment(workers.endpoint))
