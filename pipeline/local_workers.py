"""Every core of this machine by default: how many worker processes, and
starting them before the launcher has even imported TensorFlow.

`tfcascade run` with no runner flags scores on the DirectRunner's FnApiRunner
with one worker process per core (os.sched_getaffinity), unless the input is
too small to pay for them, and says what it chose. Beam's own
`--direct_running_mode=multi_processing` starts each worker only when its
first bundle comes, and the worker then imports Beam's harness and
TensorFlow and restores the models before it scores a row: ~9 s on a 2-core
machine, most of what it could save at 3M light rows (docs/performance.md).
Here the CLI calls `prestart` first thing: it reads the config and lists the
input (no TensorFlow needed), and when the run will want workers starts them
(transforms.beam.warm_worker), so that they load while the launcher imports
TF and plans; pipeline.worker_pool then hands them to the runner.

Nothing here imports Beam or TensorFlow: it runs before either is loaded.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from typing import List, Optional, Sequence

from tfcascade.pipeline import quiet

# Below min_input_bytes(cores) of input (compressed bytes on disk), one
# process. Measured on 2 cores (benchmarks.scale, demo job, gzip): worker
# processes cost ~4.3 s more to start than the in-process run and save ~1.3 us
# per row in steady state, so they pay from ~3.2M rows, ~600 MB of gzip
# (docs/performance.md). Each further core adds a process's rows per second
# for the same start-up (the workers start in parallel), so the break-even
# shrinks with the cores; never below MIN_INPUT_BYTES.
BREAK_EVEN_BYTES_2_CORES = 640 << 20
MIN_INPUT_BYTES = 64 << 20
_WORKER_MODULE = "tfcascade.transforms.beam.warm_worker"


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
  names = ("--runner", "--direct_running_mode", "--environment_type",
           "--dry_run", "--template_location")
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
  elif input_bytes < min_input_bytes(available):
    workers, why = 1, (f"{size}: under {min_input_bytes(available) >> 20} MiB, too little "
                       f"to pay for {available} worker start-ups")
  else:
    workers, why = min(available, units), f"one per core of {available}; {size}"
  if workers <= 1:
    return Choice(1, f"in-process ({why})")
  return Choice(workers, f"with {workers} worker processes ({why})")


def min_input_bytes(available: int) -> int:
  """The least input for which the default starts a worker per core."""
  return max(MIN_INPUT_BYTES, BREAK_EVEN_BYTES_2_CORES // max(available - 1, 1))


def units_of(files, split_bytes: int) -> int:
  """How many units the input files make (as ScoreUnits' PlanUnits will
  split them, without reading their indexes): a compressed file is one."""
  return sum(1 if f.compression != "none" else max(1, math.ceil(f.size / split_bytes))
             for f in files)


_PRESTARTED: List[subprocess.Popen] = []


def _start(count: int, env: Optional[dict] = None) -> List[subprocess.Popen]:
  return [subprocess.Popen([sys.executable, "-m", _WORKER_MODULE], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True, env=env)
          for _ in range(count)]


def prestart(config_path: str, overrides: Sequence[str], beam_args: Sequence[str],
             verbose: bool) -> None:
  """Starts the worker processes the run will choose, now (quiet as the CLI
  will be: pipeline.quiet). Anything wrong (the config, the input) is left
  for the launcher's own checks to say."""
  if not ours_to_choose(beam_args):
    return
  # pylint: disable=g-import-not-at-top; TF-free, but only for `run`
  from tfcascade.pipeline.config import load_config
  from tfcascade.pipeline.input_files import match_inputs
  # pylint: enable=g-import-not-at-top
  try:
    config = load_config(config_path, overrides)
    files = match_inputs(config)
    wanted = requested(beam_args)
  except Exception:  # pylint: disable=broad-except; reported by the launcher's checks
    return
  choice = choose(sum(f.size for f in files), units_of(files, config.input.split_bytes),
                  wanted)
  if choice.workers > 1:
    env = dict(os.environ)
    if not verbose:
      env.setdefault("TF_CPP_MIN_LOG_LEVEL", quiet.LEVEL)
    _PRESTARTED.extend(_start(choice.workers, env))


def processes(count: int) -> List[subprocess.Popen]:
  """`count` worker processes: those prestarted first, new ones for the rest;
  prestarted ones beyond `count` (a resumed run needs fewer) are ended."""
  taken = _PRESTARTED[:count]
  del _PRESTARTED[:count]
  end_prestarted()
  return taken + _start(count - len(taken))


def end_prestarted() -> None:
  """Ends the prestarted processes no run took (EOF: each exits once loaded),
  e.g. when the run, resumed, has too little left for them."""
  for proc in _PRESTARTED:
    proc.stdin.close()
  _PRESTARTED.clear()
