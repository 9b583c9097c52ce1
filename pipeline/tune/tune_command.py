"""The `tfcascade tune` command: flags to a config, `tune()`, then tune.json,
tune.png and the printed report; every refusal one line and REFUSED."""

from __future__ import annotations

import importlib.util
import os
import sys

from tfcascade.pipeline import exit_codes
from tfcascade.pipeline.config import ConfigError, load_config
from tfcascade.pipeline.writable_dir import dir_problem
from tfcascade.pipeline.tune.sweep_report import format_report, write
from tfcascade.pipeline.tune.tune_error import TuneError
from tfcascade.pipeline.tune.tune_result import tune
from tfcascade.transforms.engine.spec import CascadeError


def command(args) -> int:
  """`tfcascade tune`: returns the exit code."""
  from tfcascade.pipeline.input_files import PreflightError  # pylint: disable=g-import-not-at-top
  overrides = list(args.overrides)
  if args.input:
    overrides.append(f"input.pattern={args.input}")
  try:
    if args.sample < 1:
      raise TuneError("--sample must be at least 1")
    if args.target_accuracy is not None and not 0 < args.target_accuracy <= 1:
      raise TuneError("--target-accuracy is an accuracy between 0 and 1 (e.g. 0.97)")
    problem = dir_problem(args.out, "--out")
    if problem:
      raise TuneError(problem)
    if importlib.util.find_spec("matplotlib") is None:
      raise TuneError("tune draws tune.png with matplotlib: pip install -c "
                      "constraints.txt -e '.[plot]'")
    config = load_config(args.config, overrides)
    from tfcascade.pipeline.device_policy import device_problem  # pylint: disable=g-import-not-at-top
    problem = device_problem(config)
    if problem:
      raise TuneError(problem)
    result = tune(config, args.label, sample=args.sample,
                  target_accuracy=args.target_accuracy, predictions=args.prediction)
  except (ConfigError, TuneError, CascadeError, PreflightError) as e:
    print(f"tfcascade: error: {e}", file=sys.stderr)
    return exit_codes.REFUSED
  result["config"] = os.path.abspath(args.config)
  result["overrides"] = overrides
  try:
    write(result, args.out)
  except OSError as e:  # checked before the work; a disk can still fill up
    print(f"tfcascade: error: cannot write the results under {args.out}: "
          f"{e.strerror or e}: {e.filename or args.out}", file=sys.stderr)
    return exit_codes.FAILED
  print(format_report(result, args.out))
  return exit_codes.OK
