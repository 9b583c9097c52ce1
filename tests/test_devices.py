"""`session.device: gpu` fails fast, naming the fix, where TensorFlow sees no
GPU (this CPU machine); remote workers check for themselves."""

from __future__ import annotations

import pytest
import tensorflow as tf

from tfcascade.pipeline.cli import main
from tfcascade.pipeline.device_policy import workers_are_local
from tfcascade.pipeline.handler_config import handler_from_config
from tests.jobs import make_job
from tfcascade.transforms.gpu_check import DeviceError

pytestmark = pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")),
                                reason="this machine has a GPU")
GPU = ["--set", "session.device=gpu"]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
  return make_job(tmp_path_factory.mktemp("gpujob"), n_records=30)


def _says_no_gpu(err):
  assert "session.device is gpu, but" in err
  assert "'.[gpu]'" in err and "session.device: cpu" in err


def test_validate_refuses_gpu_without_a_gpu(job, capsys):
  assert main(["validate", "--config", job["config"], *GPU]) == 2
  _says_no_gpu(capsys.readouterr().err)


def test_run_refuses_before_reading_data(job, capsys, tmp_path):
  out = tmp_path / "out"
  assert main(["run", "--config", job["config"], *GPU, "--set", f"output.path={out}",
               "--runner=DirectRunner"]) == 2
  _says_no_gpu(capsys.readouterr().err)
  assert not out.exists()


def test_cpu_is_unaffected(job, capsys):
  assert main(["validate", "--config", job["config"], "--sample", "2"]) == 0
  assert "config OK" in capsys.readouterr().out


def test_the_handler_checks_in_the_worker_process(job):
  handler = handler_from_config(job["config"], ["session.device=gpu"])
  with pytest.raises(DeviceError, match="session.device is gpu, but"):
    handler.load_model()


@pytest.mark.parametrize("engine, master, beam_args, local", [
    ("beam", None, [], True),
    ("beam", None, ["--runner=DirectRunner"], True),
    ("beam", None, ["--runner", "PrismRunner"], True),
    ("beam", None, ["--runner=DataflowRunner", "--project=p"], False),
    ("beam", None, ["--runner=FlinkRunner"], False),
    ("beam", None, ["--runner=PortableRunner"], False),
    ("spark", None, [], True),
    ("spark", "local[2]", [], True),
    ("spark", "spark://host:7077", [], False),
])
def test_the_launcher_checks_only_when_the_workers_are_here(engine, master, beam_args,
                                                           local):
  assert workers_are_local(engine, master, beam_args) is local
