"""A Beam SDK worker process that loads TensorFlow before it is asked to work.

Started by the launcher (pipeline.local_workers) for the default run on this
machine: one process per core, each importing TensorFlow, Beam's SDK harness
and our engine while the launcher does its own start and preflight. The
launcher's pool then hands each process the control endpoint of the runner's
request for a worker (one line on stdin: `CONTROL_URL WORKER_ID`), and the
process serves it as Beam's own `sdk_worker_main` would, until the runner
ends the job. EOF on stdin (the job needed no worker, or the launcher is
gone) ends it at once.

    python -m tfcascade.transforms.beam.warm_worker
"""

from __future__ import annotations

import importlib
import logging
import signal
import sys

from tfcascade.transforms.tf_import import import_tensorflow

READY = "ready"  # the line this process prints on stdout once loaded


def main() -> int:
  # Ctrl-C reaches the whole process group: the launcher decides, and ends us.
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  import_tensorflow()  # quiet as the launcher is (TF_CPP_MIN_LOG_LEVEL)
  importlib.import_module("tfcascade.transforms.engine.cascade")  # the scoring code, now
  from apache_beam.runners.worker.sdk_worker import SdkHarness  # pylint: disable=g-import-not-at-top
  print(READY, flush=True)
  request = sys.stdin.readline().split()
  if len(request) != 2:
    return 0
  control_url, worker_id = request
  # Errors reach the user's terminal (the launcher's stderr); the progress
  # lines come from the launcher, which sees every worker's unit commits.
  logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                      format="%(asctime)s %(levelname)s worker %(process)d: %(message)s")
  SdkHarness(control_url, worker_id=worker_id).run()
  return 0


if __name__ == "__main__":
  sys.exit(main())
