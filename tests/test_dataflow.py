"""Dataflow readiness, offline: the real job graph through DataflowRunner's
dry run, the Flex Template (metadata, launcher mapping, Dockerfile), the
Dataflow config, and the Airflow example's commands. No credentials, no
network: nothing here reaches Google Cloud."""

import importlib.util
import json
import os
import py_compile
import re
import sys
from unittest import mock

import apache_beam as beam
import pytest
import yaml
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_runner_api_pb2

from tfcascade.pipeline import cli
from tfcascade.pipeline import beam_job as job
from tfcascade.pipeline import run_plan
from tfcascade.transforms.engine import build_cascade_graph, pin_models
from tfcascade.transforms.reading.record_ranges import InputFile
from tfcascade.pipeline.config import ConfigError, load_config
from tfcascade.transforms.publishing.run_registry import RunStaging
from tests import tiny_models as tm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATAFLOW_YAML = os.path.join(ROOT, "configs", "dataflow.yaml")
IMAGE = "us-central1-docker.pkg.dev/test-project/tfcascade/tfcascade:test"


def _load_module(name, relpath):
  """Imports a script by path, the way the launcher / Airflow runs it."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, relpath))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


launcher = _load_module("tfcascade_flex_main", "dataflow/main.py")


def _metadata():
  with open(os.path.join(ROOT, "dataflow", "metadata.json")) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  root = tmp_path_factory.mktemp("dataflow_models")
  tm.save_linear(str(root / "a"), seed=1)
  tm.save_two_input(str(root / "b"), seed=2)
  return root


def _local_models(root):
  """--set overrides: the demo stages' models -> tiny real local ones with the
  same tensor names (the demo's `prediction` outputs are not in them)."""
  return [f"stages.a.checkpoint={root}/a", f"stages.a.meta_graph={root}/a/model.meta",
          f"stages.b.checkpoint={root}/b", f"stages.b.meta_graph={root}/b/model.meta",
          'stages.a.outputs={logits: "logits:0", confidence: "confidence:0"}',
          'stages.b.outputs={probs: "probs:0"}']


# --- (a) the real job graph, as DataflowRunner would submit it ---------------

def test_dataflow_dry_run_builds_the_real_job_graph(models):
  config = load_config(DATAFLOW_YAML, _local_models(models) + ["run_date=2026-11-25"])
  assert config.output_path == "gs://YOUR_BUCKET/tfcascade/predictions/2026-11-25"
  options = PipelineOptions([
      "--runner=DataflowRunner", "--job_name=tfcascade-20261125",
      "--project=test-project", "--region=us-central1",
      "--temp_location=gs://bucket/tmp", "--no_auth", "--dry_run=True",
      "--sdk_location=container", f"--sdk_container_image={IMAGE}",
      "--number_of_worker_harness_threads=4"])
  p = beam.Pipeline(options=options)
  spec = config.cascade_spec()
  plan = build_cascade_graph(spec).plan
  pinned = pin_models(spec, plan)
  pre = run_plan.Preflight([InputFile("gs://bucket/in/part-0.tfrecord.gz", "gzip", 1000, 1.0)],
                           plan, [], pinned, run_plan.run_key(config, pinned))
  run = RunStaging("gs://bucket/out", "20261125T021500000000Z-0a1b2c3d")
  job.build_pipeline(p, config, pre, run,
                     info=run_plan.run_info(config, pre, "DataflowRunner", run.run_id))
  result = p.run()

  # Runner v2 submits the portable graph; the legacy `steps` list stays empty.
  submitted = result.job
  assert submitted.proto.name == "tfcascade-20261125"
  assert submitted.proto.type_.name == "JOB_TYPE_BATCH"  # no unbounded PCollections
  labels = {t.unique_name for t in submitted.proto_pipeline.components.transforms.values()}
  for step in ("ScoreInputs", "ScoreInputs/PlanUnits", "ScoreInputs/ScoreUnits",
               "ResumedUnits", "SumCounts", "PublishOutput"):
    assert step in labels, f"{step} missing from the Dataflow job graph"
  # Every environment is our image: launcher and workers run the same versions.
  images = {beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image
            for env in submitted.proto_pipeline.components.environments.values()}
  assert images == {IMAGE}
  # Workers refuse a graph built by another Beam or Python minor version; the
  # Dockerfile's base image must be exactly what this launcher declares.
  base_image = re.search(r"^FROM (apache/beam_python\S+)$", _dockerfile(), re.M).group(1)
  for env in submitted.proto_pipeline.components.environments.values():
    assert f"beam:version:sdk_base:{base_image}" in env.capabilities
  assert submitted.options.get_all_options()["number_of_worker_harness_threads"] == 4


# --- (b) Flex Template: metadata.json <-> dataflow/main.py -------------------

def test_metadata_has_what_flex_templates_require():
  from google.cloud.dataflow_v1beta3.types import TemplateMetadata
  with open(os.path.join(ROOT, "dataflow", "metadata.json")) as f:
    text = f.read()
  # The service's own message type: unknown fields or enum values fail here.
  parsed = TemplateMetadata.from_json(text, ignore_unknown_fields=False)
  assert parsed.name and parsed.parameters
  for param in _metadata()["parameters"]:
    assert param["name"] and param["label"] and param["helpText"], param
    assert re.fullmatch(r"[a-z][a-z0-9_]*", param["name"])
    for regex in param.get("regexes", []):
      re.compile(regex)
  required = [p["name"] for p in _metadata()["parameters"] if not p.get("isOptional")]
  assert required == ["config"]


def test_metadata_lists_exactly_the_launcher_parameters():
  assert [p["name"] for p in _metadata()["parameters"]] == list(launcher.PARAMETERS)
  # None may shadow a Beam pipeline option: both arrive as --name=value.
  beam_names = set(PipelineOptions([]).get_all_options(retain_unknown_options=False))
  assert not set(launcher.PARAMETERS) & beam_names


# One valid example per parameter and what it must become on the CLI.
EXAMPLES = {
    "config": ("gs://bucket/job/dataflow.yaml", []),
    "run_date": ("2026-11-25", ["--set", "run_date=2026-11-25"]),
    "input_pattern": ("gs://bucket/in/{run_date}/part-*.tfrecord.gz",
                      ["--set", "input.pattern=gs://bucket/in/{run_date}/part-*.tfrecord.gz"]),
    "output_path": ("gs://bucket/predictions/{run_date}",
                    ["--set", "output.path=gs://bucket/predictions/{run_date}"]),
    "overwrite": ("true", ["--overwrite"]),
    "batch_size": ("512", ["--set", "batch_size=512"]),
    "overrides": ("stages.b.run_if=a.confidence < 0.8;output.num_shards=64",
                  ["--set", "stages.b.run_if=a.confidence < 0.8",
                   "--set", "output.num_shards=64"]),
}


def test_every_parameter_maps_onto_the_cli():
  assert set(EXAMPLES) == set(launcher.PARAMETERS)
  regexes = {p["name"]: p.get("regexes", []) for p in _metadata()["parameters"]}
  beam_flags = ["--runner=DataflowRunner", "--project", "p", "--region=r"]
  for name, (value, expected) in EXAMPLES.items():
    for regex in regexes[name]:
      assert re.fullmatch(regex, value), (name, value, regex)
    argv = [f"--config={EXAMPLES['config'][0]}", f"--{name}={value}"] + beam_flags
    args = launcher.template_to_cli_args(argv, env={})
    assert args[:3] == ["run", "--config", EXAMPLES["config"][0]]
    assert args[3:len(args) - len(beam_flags)] == expected, name
    assert args[len(args) - len(beam_flags):] == beam_flags  # Beam's, untouched
    parsed, extra = cli._parser().parse_known_args(args)
    assert parsed.command == "run" and extra == beam_flags


def test_all_parameters_together_and_the_worker_image():
  argv = [f"--{name}={value}" for name, (value, _) in EXAMPLES.items()]
  argv += ["--runner=DataflowRunner", "--setup_file=/template/setup.py"]
  args = launcher.template_to_cli_args(argv, env={launcher.WORKER_IMAGE_ENV: IMAGE})
  parsed, extra = cli._parser().parse_known_args(args)
  assert parsed.overwrite and parsed.config == EXAMPLES["config"][0]
  assert parsed.overrides == ["run_date=2026-11-25",
                              "input.pattern=gs://bucket/in/{run_date}/part-*.tfrecord.gz",
                              "output.path=gs://bucket/predictions/{run_date}",
                              "batch_size=512", "stages.b.run_if=a.confidence < 0.8",
                              "output.num_shards=64"]
  assert extra == ["--runner=DataflowRunner", "--setup_file=/template/setup.py",
                   f"--sdk_container_image={IMAGE}"]
  # A bare flag (how Airflow passes a Python True) means true.
  assert launcher.template_to_cli_args(["--config=c.yaml", "--overwrite"], env={}) == \
      ["run", "--config", "c.yaml", "--overwrite"]
  # A launch naming its own worker image keeps it.
  args = launcher.template_to_cli_args(
      argv + ["--sdk_container_image=other:1"], env={launcher.WORKER_IMAGE_ENV: IMAGE})
  assert [a for a in args if "sdk_container_image" in a] == ["--sdk_container_image=other:1"]


def test_mapped_overrides_load_into_the_config(models):
  args = launcher.template_to_cli_args(
      ["--config=" + DATAFLOW_YAML, "--run_date=2026-11-25",
       "--output_path=gs://other/out/{run_date}", "--batch_size=256",
       "--input_pattern=*.tfrecord.gz",  # YAML would read a bare *x as an alias
       "--overrides=stages.b.run_if=a.confidence < 0.5"], env={})
  parsed, _ = cli._parser().parse_known_args(args)
  config = load_config(parsed.config, parsed.overrides)
  assert config.output_path == "gs://other/out/2026-11-25"
  assert config.batch_size == 256 and config.stages[1].run_if == "a.confidence < 0.5"
  assert config.input.pattern.endswith("*.tfrecord.gz")


@pytest.mark.parametrize("argv, problem", [
    ([], "--config is required"),
    (["--config=gs://b/c.yaml", "--overwrite=maybe"], "expected true or false"),
    (["--config=gs://b/c.yaml", "--batch_size=0"], "positive integer"),
    (["--config=gs://b/c.yaml", "--overrides=no_equals_sign"], "expected key=value"),
])
def test_bad_parameters_exit_2_naming_them(argv, problem, capsys):
  assert launcher.main(argv) == 2
  assert problem in capsys.readouterr().err


def test_launcher_passes_the_cli_exit_code_through():
  with mock.patch.object(cli, "main", return_value=1) as cli_main:
    assert launcher.main(["--config=gs://b/c.yaml", "--run_date=2026-11-25"]) == 1
  assert cli_main.call_args.args[0][:5] == ["run", "--config", "gs://b/c.yaml",
                                            "--set", "run_date=2026-11-25"]


def test_detached_submission_publishes_nothing(models, tmp_path):
  """--template_location only writes the job graph; the job's own last step
  publishes later, so nothing may look complete now."""
  out = tmp_path / "out"
  staging = tmp_path / "staging"
  staging.mkdir()
  overrides = _local_models(models) + [f"output.path={out}", "run_date=2026-11-25"]
  with mock.patch("apache_beam.options.pipeline_options.GoogleCloudOptions.validate",
                  lambda *a: []), \
       mock.patch.object(run_plan, "match_inputs",
                         return_value=[InputFile("gs://bucket/in/part-0.tfrecord.gz", "gzip",
                                                 1000, 1.0)]):
    cli.main(["run", "--config", DATAFLOW_YAML]
             + [a for o in overrides for a in ("--set", o)]
             + ["--runner=DataflowRunner", "--project=p", "--region=us-central1",
                f"--temp_location={staging}", f"--staging_location={staging}",
                "--no_auth", "--sdk_location=container", f"--sdk_container_image={IMAGE}",
                f"--template_location={staging}/job_object"])
  assert (staging / "job_object").exists()  # the graph was written, not run
  assert not (out / "_SUCCESS").exists()
  assert not (out / "run_summary.json").exists()


# --- (c) configs/dataflow.yaml -----------------------------------------------

def _without_paths(node, keys=()):
  if isinstance(node, dict):
    return {k: _without_paths(v, keys + (k,)) for k, v in node.items()
            if k not in ("pattern", "path", "checkpoint", "meta_graph", "session")}
  if isinstance(node, list):
    return [_without_paths(v, keys) for v in node]
  return node


def test_dataflow_config_validates_and_is_the_demo_job_on_gcs():
  with pytest.raises(ConfigError, match="run_date"):
    load_config(DATAFLOW_YAML)  # one output folder per date
  config = load_config(DATAFLOW_YAML, ["run_date=2026-11-25"])
  paths = config.input_patterns + [config.output_path] + [
      p for s in config.stages for p in (s.checkpoint, s.meta_graph)]
  assert all(p.startswith("gs://YOUR_BUCKET/") for p in paths), paths
  assert config.session.intra_op_threads >= 1 and config.session.inter_op_threads >= 1
  with open(DATAFLOW_YAML) as f:
    dataflow = yaml.safe_load(f)
  with open(os.path.join(ROOT, "configs", "local.yaml")) as f:
    local = yaml.safe_load(f)
  assert _without_paths(dataflow) == _without_paths(local)


# --- (d) the image ------------------------------------------------------------

def _dockerfile():
  with open(os.path.join(ROOT, "dataflow", "Dockerfile")) as f:
    return f.read()


def test_dockerfile_copies_files_that_exist():
  text = re.sub(r"\\\n\s*", " ", _dockerfile())  # join continued lines
  copies = [line.split()[1:] for line in text.splitlines() if line.startswith("COPY ")]
  sources = [s for c in copies if not c[0].startswith("--from") for s in c[:-1]]
  for needed in ("constraints.txt", "setup.py", "dataflow/main.py"):
    assert needed in sources
  for source in sources:
    assert os.path.exists(os.path.join(ROOT, source)), source
  assert "pip install" in text and "-c constraints.txt ." in text
  assert "/opt/google/dataflow/python_template_launcher" in text
  env = dict(re.findall(r"^ENV (\w+)=(\S+)", text, re.M))
  assert env["FLEX_TEMPLATE_PYTHON_PY_FILE"] == "${WORKDIR}/dataflow/main.py"
  assert env["FLEX_TEMPLATE_PYTHON_SETUP_FILE"] == "${WORKDIR}/setup.py"
  assert env[launcher.WORKER_IMAGE_ENV] == "${IMAGE}"


def test_image_versions_match_the_tested_ones():
  text = _dockerfile()
  with open(os.path.join(ROOT, "constraints.txt")) as f:
    pins = dict(l.strip().split("==") for l in f if "==" in l and not l.startswith("#"))
  python, beam_version = re.search(
      r"^FROM apache/beam_python(\d+\.\d+)_sdk:(\S+)$", text, re.M).groups()
  assert beam_version == pins["apache-beam"] == beam.__version__
  assert python == "%d.%d" % sys.version_info[:2]
  with open(os.path.join(ROOT, "dataflow", "cloudbuild.yaml")) as f:
    build = yaml.safe_load(f)
  assert "dataflow/Dockerfile" in build["steps"][0]["args"]


# --- scheduled runs: the Airflow example --------------------------------------

def test_airflow_dag_compiles_and_builds_cli_commands(tmp_path):
  """The Airflow examples' commands are valid `tfcascade run` command lines
  (ci/airflow/test.sh runs the DAGs themselves under Airflow)."""
  for name in ("airflow_dag.py", "airflow_local_dag.py", "airflow_tfcascade.py"):
    py_compile.compile(os.path.join(ROOT, "examples", name),
                       cfile=str(tmp_path / f"{name}c"), doraise=True)
  tc = _load_module("tfcascade_airflow_common", "examples/airflow_tfcascade.py")
  settings = {"tfcascade_bin": "/opt/tfcascade/.venv/bin/tfcascade",
              "config": "gs://bkt/tfcascade/dataflow.yaml",
              "input_pattern": "gs://bkt/in/{run_date}/*.tfrecord.gz",
              "output_path": "gs://bkt/predictions/{run_date}",
              "project": "test-project", "region": "us-central1",
              "temp_location": "gs://bkt/tmp", "image": IMAGE}
  logical = tc.datetime.datetime(2026, 11, 25, 2, 15, tzinfo=tc.datetime.timezone.utc)
  now = tc.datetime.datetime(2026, 11, 26, 2, 15, tzinfo=tc.datetime.timezone.utc)

  for dataflow in (False, True):
    plan = tc.make_plan("d", {**settings, "extra_args": ["--max_num_workers=20"]}, None,
                        logical, now, dataflow=dataflow)
    command = plan["command"]
    assert command[0] == settings["tfcascade_bin"]
    parsed, beam_flags = cli._parser().parse_known_args(command[1:])
    assert parsed.command == "run" and not parsed.overwrite
    assert parsed.config == settings["config"]
    config = load_config(DATAFLOW_YAML, overrides=parsed.overrides)
    assert config.output_path == plan["output_path"] == "gs://bkt/predictions/2026-11-25"
    assert config.input_patterns == ["gs://bkt/in/2026-11-25/*.tfrecord.gz"]
    options = PipelineOptions(beam_flags).get_all_options()
    assert options["max_num_workers"] == 20
    if dataflow:
      assert options["runner"] == "DataflowRunner" and options["job_name"] == "tfcascade-20261125"
      assert options["project"] == "test-project" and options["region"] == "us-central1"
      assert options["sdk_container_image"] == IMAGE
    else:
      assert options["runner"] is None    # the CLI's default, the DirectRunner

  plan = tc.make_plan("d", {**settings, "overwrite": True}, None, logical, now)
  assert cli._parser().parse_known_args(plan["command"][1:])[0].overwrite
  with pytest.raises(tc.PlanError, match="YOUR_BUCKET"):
    tc.make_plan("d", {**settings, "output_path": "gs://YOUR_BUCKET/p"}, None, logical, now)