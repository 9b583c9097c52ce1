"""The pool the DirectRunner reaches the default run's worker processes
through (pipeline.local_workers starts them): Beam's worker-pool protocol
(`BeamFnExternalWorkerPool.StartWorker`, an EXTERNAL environment) on
loopback, handing each request of the runner to the next loaded process.

A worker that dies (a crash, the OOM killer) is noticed by a watchdog, which
interrupts the launcher's wait: the run fails with WorkerLostError (exit 1)
instead of waiting for a worker that will never answer.
"""

from __future__ import annotations

import _thread
import concurrent.futures
import logging
import subprocess
import threading
from typing import List, Optional

import grpc
from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.transforms import environments

from tfcascade.pipeline import local_workers

_LOG = logging.getLogger("tfcascade")
_LOSS_NOTICE_S = 2.0  # how long a runner thread's error waits for the watchdog


class WorkerLostError(RuntimeError):
  """A worker process of this run ended while the job was running."""


class WarmWorkers:
  """`count` warm worker processes (those local_workers.prestart started, or
  new) and the worker-pool endpoint the runner asks for workers. A context
  manager: leaving it ends every process."""

  def __init__(self, count: int):
    self._lock = threading.Lock()
    self._closing = False
    self.lost: Optional[str] = None
    self._lost_event = threading.Event()
    self._previous_excepthook = threading.excepthook
    self._procs: List[subprocess.Popen] = local_workers.processes(count)
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
    threading.excepthook = self._excepthook
    for handler in logging.getLogger().handlers:
      handler.addFilter(self._not_after_a_loss)
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
    self._lost_event.set()
    _thread.interrupt_main()

  # The runner's threads fail on a lost worker's broken streams, often just
  # before the watchdog hears of the loss; the launcher's one line
  # (WorkerLostError) says why, so their errors wait briefly for the watchdog
  # and are shown only when no worker was lost.

  def _excepthook(self, args) -> None:
    if self._lost_event.wait(_LOSS_NOTICE_S):
      _LOG.debug("after a lost worker, in thread %s", args.thread and args.thread.name,
                 exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
    else:
      self._previous_excepthook(args)

  def _not_after_a_loss(self, record: logging.LogRecord) -> bool:
    return not (record.name.startswith("apache_beam") and record.levelno >= logging.ERROR
                and self._lost_event.wait(_LOSS_NOTICE_S))

  def close(self, kill: bool = False) -> None:
    """Ends every process: those never handed out at once (EOF), the rest
    when the runner has closed their control stream, or now if `kill` (the
    run failed or was interrupted: nobody will close it)."""
    with self._lock:
      self._closing = True
    threading.excepthook = self._previous_excepthook
    for handler in logging.getLogger().handlers:
      handler.removeFilter(self._not_after_a_loss)
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
