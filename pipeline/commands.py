"""What each `tfcascade` subcommand does (argument parsing is in cli.py)."""

from __future__ import annotations

import importlib.util
import logging
import sys

from tfcascade.pipeline import exit_codes
from tfcascade.pipeline.config import ConfigError, load_config
from tfcascade.pipeline.summary_text import format_summary
from tfcascade.pipeline.writable_dir import dir_problem
from tfcascade.pipeline import failure_cause, run_start
from tfcascade.transforms.publishing import output_layout as layout

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
  problem = problem or dir_problem(config.output_path, "output.path")
  if problem:
    return None, None, problem
  _print_plan(config, pre)
  return config, pre, None


def _print_plan(config, pre) -> None:
  print(f"inputs: {len(pre.files)} file(s), "
        f"{sum(f.size for f in pre.files):,} bytes")
  for f in pre.files[:5]:
    print(f"  {f.path} ({f.compression}, {f.size:,} bytes)")
  if len(pre.files) > 5:
    print(f"  ... and {len(pre.files) - 5} more")
  for p in pre.plan:
    gate = f", runs if {p.gate}" if p.gate else ""
    print(f"stage {p.name} [scope {p.scope}{gate}]: {p.source}")
    if p.checkpoint:  # a combine stage has none (its restore_text says so)
      print(f"  checkpoint {p.checkpoint} ({p.fingerprint[:19]}..., "
            f"global_step {p.global_step})")
    print(f"  {p.restore_text()}")
    print(f"  inputs {p.inputs} -> outputs {sorted(p.outputs)}")
  print(f"output: {config.output_path} ({config.output.format}, "
        f"passthrough {list(config.output.passthrough)})")
  for warning in pre.warnings:
    print(f"warning: {warning}")


def _preflight(config):
  from tfcascade.pipeline.input_files import PreflightError  # pylint: disable=g-import-not-at-top
  from tfcascade.pipeline.run_plan import preflight  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.engine import CascadeError  # pylint: disable=g-import-not-at-top
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
  problem = _flags_problem(args, beam_args)
  if problem:
    return _refused(problem)
  config, pre, problem = _load_and_check(args)
  if problem:
    return _refused(problem)
  problem = _device_problem(config, args, beam_args)
  if problem:
    return _refused(problem)
  try:
    summary = _run_engine(args, beam_args, config, pre)
  except (run_start.OutputExistsError, run_start.RunInProgressError, _Refused) as e:
    return _refused(str(e))
  except run_start.AlreadyComplete as e:
    print(f"{e}; {config.output_path} is complete, nothing left to run")
    print(format_summary(e.summary))
    return exit_codes.OK
  except Exception as e:  # the pipeline failed on a worker; name it plainly
    _LOG.debug("run failed", exc_info=True)  # the traceback with --verbose
    cause, code = failure_cause.of(e)
    print(f"tfcascade: run FAILED: {cause}", file=sys.stderr)
    return code
  if summary is None:
    print(f"job submitted without waiting (template or dry run); its last step "
          f"checks the counts and writes {layout.SUCCESS} under "
          f"{config.output_path} when it completes")
    return exit_codes.OK
  print(format_summary(summary))
  return exit_codes.OK


def _flags_problem(args, beam_args):
  """Why the flags cannot run on the chosen engine, before the config is read."""
  if args.engine == "beam":
    if args.master or args.spark_conf:
      return "--master and --spark-conf need --engine spark"
    from tfcascade.pipeline import beam_flags, prism_runner  # pylint: disable=g-import-not-at-top
    from tfcascade.pipeline.config import key_paths  # pylint: disable=g-import-not-at-top
    return (beam_flags.problem(beam_args, args.own_flags, key_paths())
            or prism_runner.problem(beam_args))
  if beam_args:
    return (f"unrecognized arguments with --engine spark: "
            f"{' '.join(beam_args)} (Beam flags need --engine beam)")
  if importlib.util.find_spec("pyspark") is None:
    return ("--engine spark needs pyspark: pip install -c constraints.txt "
            "-e '.[spark]'")
  from tfcascade.transforms.spark import master_url  # pylint: disable=g-import-not-at-top
  return master_url.problem(args.master)


class _Refused(Exception):
  """The engine's options cannot run; nothing was started."""


def _run_engine(args, beam_args, config, pre):
  """Runs the job on the chosen engine (_Refused before any data is read)."""
  from tfcascade.pipeline import beam_job  # pylint: disable=g-import-not-at-top
  if args.engine == "beam":
    return beam_job.run(config, beam_args, overwrite=args.overwrite, pre=pre,
                        resume=args.resume)
  from tfcascade.pipeline import spark_job  # pylint: disable=g-import-not-at-top
  try:
    spark_job.check_config(config)
    conf = spark_job.parse_conf(args.spark_conf)
  except spark_job.SparkSetupError as e:
    raise _Refused(str(e)) from e
  return spark_job.run(config, overwrite=args.overwrite,
                       master=args.master or spark_job.DEFAULT_MASTER,
                       spark_conf=conf, pre=pre, resume=args.resume)


def _device_problem(config, args=None, beam_args=()):
  """`session.device: gpu` where TF sees no GPU, checked here when the
  workers run on this machine (remote workers check themselves)."""
  from tfcascade.pipeline import device_policy  # pylint: disable=g-import-not-at-top
  local = args is None or device_policy.workers_are_local(
      args.engine, args.master, beam_args)
  return device_policy.device_problem(config, local)


def validate(args, _) -> int:
  """`tfcascade validate`: every fail-fast check plus a sample scored."""
  config, pre, problem = _load_and_check(args)
  if problem:
    return _refused(problem)
  problem = _device_problem(config)
  if problem:
    return _refused(problem)
  try:  # what `run` would refuse about the output directory
    run_start.check_output(config.output_path, args.overwrite)
  except (run_start.OutputExistsError, run_start.RunInProgressError) as e:
    return _refused(str(e))
  if args.sample > 0:
    problem = _score_sample(config, pre, args.sample)
    if problem:
      return _refused(problem)
  print("config OK")
  return exit_codes.OK


def _score_sample(config, pre, n):
  """Scores the first n records of the first non-empty input file."""
  from tfcascade.pipeline.inspection import read_records  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.formats import tfrecord_framing as framing  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.engine import CascadeSession  # pylint: disable=g-import-not-at-top
  path, compression = next(((f.path, f.compression) for f in pre.files if f.size),
                           (None, None))
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
      result = session.run(records)
    except tf.errors.InvalidArgumentError as e:
      return (f"sample records of {path} do not parse with input.features: "
              f"{e.message.splitlines()[0]}")
  print(f"sample: scored {len(records)} records of {path} in "
        f"{session.load_seconds:.2f} s load; outputs "
        + ", ".join([f"passthrough/{k}{list(v.shape)}" for k, v in result.passthrough.items()]
                    + [f"{k}{list(v.shape)}" for k, v in result.outputs.items()]))
  return None


def inspect(args, _) -> int:
  """`tfcascade inspect`: a checkpoint, TFRecord files, or an output dir."""
  from tfcascade.pipeline import inspection  # pylint: disable=g-import-not-at-top
  try:
    print(inspection.describe(args.path, label=args.label, relative_to=args.relative_to))
  except inspection.InspectError as e:
    return _refused(str(e))
  return exit_codes.OK


def tune(args, _) -> int:
  """`tfcascade tune`: sweeps each gate's threshold on a labelled sample."""
  from tfcascade.pipeline import tune as tune_lib  # pylint: disable=g-import-not-at-top
  return tune_lib.command(args)


def demo(args, _) -> int:
  """`tfcascade demo`: trains the demo models and writes the demo data."""
  from tfcascade.pipeline.demo.demo_dir import DemoError, check_numbers  # pylint: disable=g-import-not-at-top; no TensorFlow
  try:
    check_numbers(args.records, args.shards, args.seed)
  except DemoError as e:
    return _refused(str(e))
  problem = dir_problem(args.out, "--out")
  if problem:
    return _refused(problem)
  try:
    from tfcascade.pipeline.demo.build import build_demo  # pylint: disable=g-import-not-at-top
    from tfcascade.pipeline.demo.report import demo_lines  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    return _refused(f"the demo needs scikit-learn (pip install '.[demo]'): {e}")
  try:
    report = build_demo(args.out, records=args.records, shards=args.shards, seed=args.seed,
                        shift=args.shift)
  except DemoError as e:  # an --out holding files the demo did not write
    return _refused(str(e))
  except OSError as e:  # a path under --out that cannot be written
    return _refused(f"cannot write the demo under {args.out}: "
                    f"{e.strerror or e}: {e.filename or args.out}")
  print(demo_lines(report, args.out))
  return exit_codes.OK
