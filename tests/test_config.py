"""Config loading: validation errors name the key path; overrides; paths."""

import datetime
import os
import textwrap

import pytest

from tfcascade.pipeline.config import ConfigError, load_config

BASE = textwrap.dedent("""\
    input:
      pattern: data/*.tfrecord
      features:
        x: {dtype: float32, shape: [4]}
    stages:
      - name: a
        checkpoint: models/a
        meta_graph: models/a/model.meta
        inputs: {"input:0": features.x}
        outputs: {y: "y:0"}
      - name: b
        builder: "mypkg.models:build_b"
        checkpoint: gs://bucket/models/b
        inputs: {x: a.y}
        outputs: {z: z}
        run_if: "a.y > 0.5"
    output:
      path: out/{run_date}
    """)


def _write(tmp_path, text=BASE, name="job.yaml"):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def _error(tmp_path, text=BASE, overrides=()):
  with pytest.raises(ConfigError) as info:
    load_config(_write(tmp_path, text), overrides)
  return str(info.value)


def test_valid_config_resolves_paths_relative_to_the_file(tmp_path):
  config = load_config(_write(tmp_path), ["run_date=2026-11-25"])
  assert config.input_patterns == [str(tmp_path / "data/*.tfrecord")]
  assert config.output_path == str(tmp_path / "out/2026-11-25")
  assert config.run_date == datetime.date(2026, 11, 25)
  spec = config.cascade_spec()
  assert [s.name for s in spec.stages] == ["a", "b"]
  assert spec.stages[0].checkpoint == str(tmp_path / "models/a")
  assert spec.stages[1].checkpoint == "gs://bucket/models/b"  # URLs untouched
  assert spec.stages[1].source.source_type == "builder"
  assert spec.stages[0].scope == "a"
  assert spec.features[0].shape == (4,)


def test_set_overrides_by_index_and_stage_name(tmp_path):
  config = load_config(_write(tmp_path), [
      "run_date=2026-01-02", "batch_size=64", "stages.b.run_if=a.y <= 0.1",
      "stages.0.scope=first", "output.passthrough=[id, label]",
      "output.path=relative/out"])
  assert config.batch_size == 64
  assert config.stages[1].run_if == "a.y <= 0.1"
  assert config.stages[0].scope == "first"
  assert config.output.passthrough == ("id", "label")
  assert config.output_path == os.path.join(os.getcwd(), "relative/out")


@pytest.mark.parametrize("override,expected", [
    ("bogus=1", "bogus: unknown key"),
    ("stages.a.bogus=1", "stages.0.bogus: unknown key"),
    ("batch_size=zero", "batch_size: Input should be a valid integer"),
    ("batch_size=0", "batch_size: Input should be greater than 0"),
    ("batch_bytes=0", "batch_bytes: Input should be greater than 0"),
    ("batch_bytes=-1", "batch_bytes: Input should be greater than 0"),
    ("batch_bytes=1.5", "batch_bytes: Input should be a valid integer"),
    ("batch_bytes=32MB", "batch_bytes: Input should be a valid integer"),
    ("input.compression=zstd", "input.compression: Input should be 'auto', 'none' or 'gzip'"),
    ("input.features.x.dtype=float64", "input.features.x.dtype"),
    ("stages.a.meta_graph=", "stages.0: give exactly one of meta_graph, builder, saved_model"),
    ("stages.b.builder=not a ref", "stages.1.builder"),
    ("run_date=yesterday", "run_date"),
])
def test_errors_name_the_key_path(tmp_path, override, expected):
  message = _error(tmp_path, overrides=["run_date=2026-11-25", override])
  assert expected in message
  assert "job.yaml" in message


def test_batch_bytes_defaults_to_the_measured_cap_and_can_be_set(tmp_path):
  from tfcascade.transforms.formats.tfrecord_framing import DEFAULT_BATCH_BYTES  # pylint: disable=g-import-not-at-top
  config = load_config(_write(tmp_path), ["run_date=2026-11-25"])
  assert config.batch_bytes == DEFAULT_BATCH_BYTES == 8 << 20
  config = load_config(_write(tmp_path), ["run_date=2026-11-25", "batch_bytes=1048576"])
  assert config.batch_bytes == 1 << 20 and config.batch_size == 1024


def test_run_date_template_needs_a_date(tmp_path):
  assert "uses {run_date}: set run_date" in _error(tmp_path)


def test_one_stage_is_not_a_cascade(tmp_path):
  text = BASE.split("  - name: b")[0] + "output:\n  path: out\n"
  assert "stages: List should have at least 2 items" in _error(tmp_path, text)


def test_missing_file_and_bad_yaml(tmp_path):
  with pytest.raises(ConfigError, match="cannot read config"):
    load_config(str(tmp_path / "missing.yaml"))
  assert "not valid YAML" in _error(tmp_path, "input: [unclosed\n")
  assert "must be a YAML mapping" in _error(tmp_path, "- a\n- b\n")


def test_bad_set_syntax(tmp_path):
  assert "expected dotted.key=value" in _error(tmp_path, overrides=["batch_size"])
  assert "no item 'zzz'" in _error(tmp_path, overrides=["stages.zzz.run_if=x"])


@pytest.mark.parametrize("name", ["local.yaml", "flink.yaml", "dataflow.yaml"])
def test_shipped_configs_validate(name):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  config = load_config(os.path.join(root, "configs", name), ["run_date=2026-11-25"])
  assert [s.name for s in config.stages] == ["a", "b"]
  assert config.cascade_spec().stages[1].run_if == "a.confidence < 0.9"


def test_thread_pools_are_sized_per_worker_process():
  """Thread counts left at 0 give each worker process its share of the
  cores; the process count comes from the runner's options."""
  from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=g-import-not-at-top
  from tfcascade.pipeline import beam_job as job  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.engine.spec import SessionSpec  # pylint: disable=g-import-not-at-top
  assert SessionSpec().threads(8) == (8, 8)
  assert SessionSpec(processes_per_host=2).threads(8) == (4, 4)
  assert SessionSpec(processes_per_host=0).threads(8) == (1, 1)  # one per core
  assert SessionSpec(processes_per_host=16).threads(8) == (1, 1)
  assert SessionSpec(intra_op_threads=3, processes_per_host=2).threads(8) == (3, 4)
  for flags, processes in [
      ([], 1),
      (["--direct_running_mode=multi_processing", "--direct_num_workers=2"], 2),
      (["--direct_running_mode=multi_processing", "--direct_num_workers=0"], 0),
      (["--direct_running_mode=multi_threading", "--direct_num_workers=4"], 1),
      (["--runner=DataflowRunner"], 0),
      (["--runner=DataflowRunner", "--experiments=no_use_multiple_sdk_containers"], 1)]:
    assert job.processes_per_host(PipelineOptions(flags)) == processes, flags
