"""Flex Template launcher entry: template parameters -> `tfcascade run`.

The Dataflow Flex Template launcher runs this file (FLEX_TEMPLATE_PYTHON_PY_FILE)
as `python main.py --config=gs://... --run_date=2026-11-25 ... [Beam flags]`,
every template parameter as `--name=value`, followed by the pipeline options
it adds itself (--runner, --project, --region, --temp_location, --job_name,
--setup_file, ...). This maps our parameters onto the CLI and leaves the rest
to Beam, so a template launch runs exactly what `tfcascade run` runs.

The same file serves Airflow's BeamRunPythonPipelineOperator, which also
passes options as `--name=value` (examples/airflow_dag.py).

The record check and `_SUCCESS` are the pipeline's own last step, so a launch
that returns before the job has run (the Flex launcher's --template_location)
still ends with a complete, checked output when the job finishes.

Every parameter here must be listed in dataflow/metadata.json (and the other
way round); tests/test_dataflow.py checks both directions.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import List, Mapping, Optional, Sequence

import yaml

# name -> help; the metadata.json helpText says the same for the console.
PARAMETERS = {
    "config": "job config YAML (gs://... or a path inside the image)",
    "run_date": "YYYY-MM-DD; fills {run_date} in the config's paths",
    "input_pattern": "replaces input.pattern (a glob, e.g. gs://bucket/in/*.tfrecord.gz)",
    "output_path": "replaces output.path (may contain {run_date})",
    "overwrite": "true: replace a complete output already at the output path",
    "batch_size": "replaces batch_size (records per session call)",
    "overrides": "more config overrides, 'key=value' separated by ';' "
                 "(e.g. stages.b.run_if=a.confidence < 0.8;output.num_shards=64)",
}

# Baked into the image by dataflow/Dockerfile: workers get the launcher's image
# (same pinned versions) unless --sdk_container_image says otherwise.
WORKER_IMAGE_ENV = "TFCASCADE_WORKER_IMAGE"


class TemplateArgsError(ValueError):
  """A template parameter is malformed; the message names it."""


def _parser() -> argparse.ArgumentParser:
  # allow_abbrev=False: a Beam flag must never be taken for a prefix of ours.
  parser = argparse.ArgumentParser(
      prog="dataflow/main.py", allow_abbrev=False,
      description="tfcascade Flex Template launcher; unknown flags go to Beam.")
  for name, text in PARAMETERS.items():
    if name == "overwrite":  # a bare --overwrite (a Python True option) means true
      parser.add_argument(f"--{name}", nargs="?", const="true", default=None, help=text)
    else:
      parser.add_argument(f"--{name}", default=None, help=text)
  return parser


def _bool(name: str, text: str) -> bool:
  value = text.strip().lower()
  if value in ("true", "1", "yes"):
    return True
  if value in ("false", "0", "no", ""):
    return False
  raise TemplateArgsError(f"--{name}={text!r}: expected true or false")


def _as_yaml_string(text: str) -> str:
  """`--set` parses values as YAML; quote a path only where YAML would not
  read it back as the same string (a glob starting with `*`, `[`, `{`, ...)."""
  try:
    if yaml.safe_load(text) == text:
      return text
  except yaml.YAMLError:
    pass
  return json.dumps(text)  # a JSON string is a YAML double-quoted scalar


def _has_flag(args: Sequence[str], flag: str) -> bool:
  return any(a == flag or a.startswith(flag + "=") for a in args)


def template_to_cli_args(argv: Sequence[str],
                         env: Optional[Mapping[str, str]] = None) -> List[str]:
  """Maps template parameters and Beam flags to `tfcascade` CLI arguments.

  `tfcascade run` arguments first, then the Beam flags, untouched and in order.

  Args:
    argv: what the launcher passes: `--name=value` template parameters, then
      Beam pipeline flags in any order.
    env: environment (default os.environ); WORKER_IMAGE_ENV, when set and no
      --sdk_container_image is given, becomes the workers' image.

  Returns:
    `["run", "--config", ..., "--set", "k=v", ..., ("--overwrite",)] + beam`.

  Raises:
    TemplateArgsError: a parameter is missing or malformed.
  """
  cli, beam_args = _split(argv, env)
  return cli + beam_args


def _split(argv, env=None):
  """(`tfcascade run` arguments, Beam flags) for template_to_cli_args."""
  env = os.environ if env is None else env
  known, beam_args = _parser().parse_known_args(list(argv))
  if not known.config:
    raise TemplateArgsError("--config is required (the job's YAML, e.g. gs://bucket/job.yaml)")
  sets = []
  if known.run_date:
    sets.append(f"run_date={known.run_date}")
  if known.input_pattern:
    sets.append(f"input.pattern={_as_yaml_string(known.input_pattern)}")
  if known.output_path:
    sets.append(f"output.path={_as_yaml_string(known.output_path)}")
  if known.batch_size:
    if not known.batch_size.strip().isdigit() or int(known.batch_size) < 1:
      raise TemplateArgsError(f"--batch_size={known.batch_size!r}: expected a positive integer")
    sets.append(f"batch_size={int(known.batch_size)}")
  for item in (known.overrides or "").split(";"):
    item = item.strip()
    if not item:
      continue
    if "=" not in item or item.startswith("="):
      raise TemplateArgsError(f"--overrides item {item!r}: expected key=value")
    sets.append(item)

  cli = ["run", "--config", known.config]
  for assignment in sets:
    cli += ["--set", assignment]
  if known.overwrite is not None and _bool("overwrite", known.overwrite):
    cli.append("--overwrite")
  image = env.get(WORKER_IMAGE_ENV)
  if image and not _has_flag(beam_args, "--sdk_container_image"):
    beam_args.append(f"--sdk_container_image={image}")
  return cli, beam_args


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs `tfcascade run` for a template launch; returns its exit code."""
  argv = list(sys.argv[1:] if argv is None else argv)
  try:
    cli_args, beam_args = _split(argv)
  except TemplateArgsError as e:
    print(f"tfcascade: error: {e}", file=sys.stderr)
    return 2
  # The CLI quiets Beam's INFO logs; keep the submission's "Created job with
  # id: [...]" and console URL lines, which Airflow's Beam/Dataflow operators
  # read to follow (and on kill, cancel) the job.
  logging.getLogger("apache_beam.runners.dataflow.internal.apiclient").setLevel(logging.INFO)
  from tfcascade.pipeline import cli  # pylint: disable=g-import-not-at-top; keeps errors above fast
  return cli.main(cli_args + beam_args)


if __name__ == "__main__":
  sys.exit(main())
