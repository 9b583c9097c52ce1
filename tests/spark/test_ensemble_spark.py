"""Ensembles (issue 24) on `--engine spark`: the 3-stage gated cascade with
a gate-aware mean of tests/test_ensembles.py, run by Spark local mode through
the CLI (one SparkContext per process), its TFRecord output read in a TF-free
process and checked against the oracle (each model alone, NumPy combining)."""

import subprocess
import sys

import pytest

from tests.jobs import ENGINES, read_predictions_independently
from tests.spark.test_spark_engine import REPO, cli_env
from tests.test_ensembles import (check_ensemble_rows, make_pixels, oracle_outputs,
                                  save_models, write_ensemble_job)

pytestmark = pytest.mark.spark


def test_spark_writes_the_final_answer_and_the_gate_aware_mean(tmp_path, spark_env):
  models, pixels = save_models(tmp_path / "models"), make_pixels()
  config = write_ensemble_job(tmp_path, pixels, models)
  result = subprocess.run(
      [sys.executable, "-m", "tfcascade", "run", "--config", config, *ENGINES["spark"]],
      cwd=REPO, env=cli_env(spark_env), capture_output=True, text=True, errors="replace",
      timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  check_ensemble_rows(read_predictions_independently(tmp_path / "out"),
                      oracle_outputs(models, pixels))
