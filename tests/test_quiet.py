"""Quiet by default: no TensorFlow C++ start-up lines unless --verbose or the
user's own TF_CPP_MIN_LOG_LEVEL; `demo` prints a few human lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tfcascade.pipeline.cli import main
from tfcascade.transforms.tf_import import without_info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHATTER = ("absl::InitializeLog", "oneDNN custom operations", "cpu_feature_guard",
           "mlir_graph_optimization_pass", "cudart_stub")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
  out = tmp_path_factory.mktemp("quietdemo") / "demo"
  assert main(["demo", "--out", str(out), "--records", "300", "--shards", "1"]) == 0
  return out


def _commands():
  """`python -m tfcascade` and the console script next to this interpreter."""
  found = [[sys.executable, "-m", "tfcascade"]]
  script = os.path.join(os.path.dirname(sys.executable), "tfcascade")
  if os.path.exists(script):
    found.append([script])
  return found


def _stderr(cmd, *args, env=None):
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"} | (env or {})
  proc = subprocess.run(cmd + list(args), cwd=ROOT, capture_output=True, text=True,
                        env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stderr


@pytest.mark.parametrize("cmd", _commands(), ids=lambda c: os.path.basename(c[-1]))
def test_no_tensorflow_start_up_lines_by_default(demo, cmd):
  # validate opens a session and runs it: MLIR's line comes then, if at all.
  config = os.path.join(ROOT, "configs", "local.yaml")
  sets = [f"input.pattern={demo}/data/part-*.tfrecord.gz",
          f"output.path={demo}-quiet-out"]  # not the checkout's out/: validate checks it
  for stage in ("a", "b"):
    sets += [f"stages.{stage}.checkpoint={demo}/models/{stage}",
             f"stages.{stage}.meta_graph={demo}/models/{stage}/model.meta"]
  args = ["validate", "--config", config, "--sample", "20"]
  for s in sets:
    args += ["--set", s]
  err = _stderr(cmd, *args)
  assert not [c for c in CHATTER if c in err], err


def test_verbose_or_the_users_level_shows_them(demo):
  # absl's line comes on every machine (oneDNN's only on CPUs where TF turns
  # its custom operations on, which not every x86 machine here has).
  cmd = _commands()[0]
  assert "absl::InitializeLog" in _stderr(cmd, "--verbose", "inspect", f"{demo}/models/a")
  assert "absl::InitializeLog" in _stderr(cmd, "inspect", f"{demo}/models/a",
                                          env={"TF_CPP_MIN_LOG_LEVEL": "0"})


def test_errors_and_warnings_captured_at_import_are_kept():
  text = "\n".join([
      "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
      "I0000 00:00:1796035093.032538    7710 port.cc:153] oneDNN custom operations are on.",
      "2026-11-30 10:00:00.123456: I tensorflow/core/platform/cpu_feature_guard.cc:210] "
      "This TensorFlow binary is optimized",
      "To enable the following instructions: AVX2, in other operations, rebuild.",
      "E0000 00:00:1796035201.023136    8394 cuda_platform.cc:52] failed call to cuInit",
      "/x/y.py:3: FutureWarning: something old",
      "  warnings.warn(message)",
  ])
  assert without_info(text).splitlines() == [
      "E0000 00:00:1796035201.023136    8394 cuda_platform.cc:52] failed call to cuInit",
      "/x/y.py:3: FutureWarning: something old", "  warnings.warn(message)"]


def test_demo_prints_a_few_lines_and_writes_its_json(tmp_path, capsys):
  out = tmp_path / "d"
  assert main(["demo", "--out", str(out), "--records", "200", "--shards", "1"]) == 0
  printed = capsys.readouterr().out.strip().splitlines()
  assert len(printed) <= 5
  assert "a alone" in printed[1] and "b alone" in printed[1] and "cascade" in printed[1]
  assert "of rows" in printed[1]
  with open(out / "demo.json") as f:
    report = json.load(f)
  assert f"{report['cascade_accuracy']:.2%}" in printed[1]
  assert str(out / "demo.json") in "\n".join(printed)
