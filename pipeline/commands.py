"""What each `tfcascade` subcommand does (argument parsing is in cli.py)."""

from __future__ import annotations

import json
import logging
import sys

from pipeline import exit_codes
from pipeline.config import ConfigError, load_config
from pipeline.summary_text import format_summary
from transforms import output_layout as layout
from transforms import publish

_LOG = logging.getLogger("tfcascade")


def _refused(message: str) -> int:
  print(f"tfcascade: error: {message}", file=sys.stderr)
  return exit_codes.REFUSED


def _load_and_check(args):
  """Loads the config and runs every check that needs no data; prints the plan.

  Returns:
    (config, preflight, None), or (None, None, problem) when refused.
  """
  try:
    config = load_config(args.config, args.overrides)
  except ConfigError as e:
    return None, None, str(e)
  pre, problem = _preflight(config)
  if problem:
    return None, None, problem
  _print_plan(config, pre)
  return config, pre, None


def _print_plan(config, pre) -> None:
  print(f"inputs: {len(pre.files)} file(s), "
        f"{sum(size for _, _, size in pre.files):,} bytes")
  for path, compression, size in pre.files[:5]:
    print(f"  {path} ({compression}, {size:,} bytes)")
  if len(pre.files) > 5:
    print(f"  ... and {len(pre.files) - 5} more")
  for p in pre.plan:
    gate = f", runs if {p.gate}" if p.gate else ""
    print(f"stage {p.name} [scope {p.scope}{gate}]: {p.source}")
    print(f"  checkpoint {p.checkpoint} ({p.fingerprint[:19]}..., "
          f"global_step {p.global_step}), {len(p.restored)} variables restored")
    print(f"  inputs {p.inputs} -> outputs {sorted(p.outputs)}")
  print(f"output: {config.output_path} ({config.output.format}, "
        f"passthrough {list(config.output.passthrough)})")
  for warning in pre.warnings:
    print(f"warning: {warning}")


def _preflight(config):
  from pipeline.job import PreflightError, preflight  # pylint: disable=g-import-not-at-top
  from transforms.engine import CascadeError  # pylint: disable=g-import-not-at-top
  try:
    return preflight(config), None
  except (PreflightError, CascadeError) as e:
    return None, str(e)
  except Exception as e:  # pylint: disable=broad-except; say what failed, plainly
    _LOG.debug("preflight failed", exc_info=True)
    return None, (f"checking the config failed unexpectedly: "
                  f"{type(e).__name__}: {e}")


def run(args, beam_args) -> int:
  """`tfcascade run`: checks everything, runs, publishes, prints the summary."""
  from pipeline import job  # pylint: disable=g-import-not-at-top
  config, pre, problem = _load_and_check(args)
  if problem:
    return _refused(problem)
  try:
    summary = job.run(config, beam_args, overwrite=args.overwrite, pre=pre)
  except (publish.OutputExistsError, publish.RunInProgressError) as e:
    return _refused(str(e))
  except Exception as e:  # the pipeline failed on a worker; name it plainly
    print(f"tfcascade: run FAILED: {_root_cause(e)}", file=sys.stderr)
    return exit_codes.FAILED
  if summary is None:
    print(f"job submitted without waiting (template or dry run); its last step "
          f"checks the counts and writes {layout.SUCCESS} under "
          f"{config.output_path} when it completes")
    return exit_codes.OK
  print(format_summary(summary))
  return exit_codes.OK


def _root_cause(error: BaseException) -> str:
  """Beam wraps worker errors several times; our own error's line says most."""
  from transforms.read import CorruptInputError  # pylint: disable=g-import-not-at-top
  from transforms.scoring import StageFailedError  # pylint: disable=g-import-not-at-top
  # Errors a worker raises on purpose: their message names the culprit.
  ours = (CorruptInputError, StageFailedError, publish.AccountingError,
          publish.RejectionError, publish.ConcurrentRunError)
  text = str(error)
  markers = [f"{cls.__name__}: " for cls in ours]
  found = [text.rindex(marker) for marker in markers if marker in text]
  if found:
    return text[max(found):].splitlines()[0]
  lines = [l for l in text.strip().splitlines() if l.strip()]
  return lines[-1] if lines else repr(error)


def validate(args, _) -> int:
  """`tfcascade validate`: every fail-fast check plus a sample scored."""
  config, pre, problem = _load_and_check(args)
  if problem:
    return _refused(problem)
  if args.sample > 0:
    problem = _score_sample(config, pre, args.sample)
    if problem:
      return _refused(problem)
  print("config OK")
  return exit_codes.OK


def _score_sample(config, pre, n):
  """Scores the first n records of the first non-empty input file."""
  from pipeline.inspection import read_records  # pylint: disable=g-import-not-at-top
  from transforms import tfrecord_framing as framing  # pylint: disable=g-import-not-at-top
  from transforms.engine import CascadeSession  # pylint: disable=g-import-not-at-top
  path, compression, _ = next(((p, c, s) for p, c, s in pre.files if s), (None, None, 0))
  if path is None:
    return None
  try:
    records = list(read_records(path, compression=compression, limit=n,
                                max_record_bytes=config.input.max_record_bytes))
  except framing.CorruptRecordError as e:
    return str(e)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with CascadeSession(config.cascade_spec()) as session:
    try:
      out = session.run(records)
    except tf.errors.InvalidArgumentError as e:
      return (f"sample records of {path} do not parse with input.features: "
              f"{e.message.splitlines()[0]}")
  print(f"sample: scored {len(records)} records of {path} in "
        f"{session.load_seconds:.2f} s load; outputs "
        + ", ".join(f"{k}{list(v.shape)}" for k, v in out.items() if "/rows_run" not in k))
  return None


def inspect(args, _) -> int:
  """`tfcascade inspect`: a checkpoint, TFRecord files, or an output dir."""
  from pipeline import inspection  # pylint: disable=g-import-not-at-top
  try:
    print(inspection.describe(args.path, label=args.label))
  except inspection.InspectError as e:
    return _refused(str(e))
  return exit_codes.OK


def demo(args, _) -> int:
  """`tfcascade demo`: trains the demo models and writes the demo data."""
  try:
    from pipeline.demo.build import build_demo  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    return _refused(f"the demo needs scikit-learn (pip install '.[demo]'): {e}")
  report = build_demo(args.out, records=args.records, shards=args.shards, seed=args.seed)
  print(json.dumps(report, indent=2, default=str))
  return exit_codes.OK
