"""CLI commands: validate, inspect, help, run_date templates, the console script."""

import os
import subprocess
import sys

import pytest

from tfcascade.pipeline.cli import main
from tests.jobs import make_job, summary_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def job(tmp_path_factory):
  return make_job(tmp_path_factory.mktemp("clijob"), n_records=300)


def test_validate_prints_the_plan_and_scores_a_sample(job, capsys):
  assert main(["validate", "--config", job["config"], "--sample", "5"]) == 0
  out = capsys.readouterr().out
  assert "inputs: 3 file(s)" in out
  assert "stage b [scope b, runs if a.confidence < 0.99]" in out
  assert "sha256:" in out and "2 variables restored" in out
  assert "sample: scored 5 records" in out and "b/probs[5, 10]" in out
  assert "config OK" in out


def test_inspect_checkpoint(job, capsys):
  assert main(["inspect", str(job["root"] / "models/b")]) == 0
  out = capsys.readouterr().out
  assert "dense/kernel" in out and "[74, 16]" in out and "float32" in out
  assert "fingerprint sha256:" in out


def test_inspect_tfrecords_infers_schema(job, capsys):
  assert main(["inspect", str(job["root"] / "data/part-*.tfrecord.gz")]) == 0
  out = capsys.readouterr().out
  assert "3 file(s), 300 records" in out
  assert "pixels: {dtype: float32, shape: [64]}" in out
  assert "id: {dtype: string, shape: []}" in out


def test_run_date_template_and_inspect_output(job, capsys):
  out_dir = job["root"] / "daily"
  assert main(["run", "--config", job["config"], "--set",
               f"output.path={out_dir}/{{run_date}}", "--set", "run_date=2026-11-25",
               "--runner=DirectRunner"]) == 0
  day = out_dir / "2026-11-25"
  assert summary_of(day)["run_date"] == "2026-11-25"
  capsys.readouterr()
  assert main(["inspect", str(day)]) == 0
  out = capsys.readouterr().out
  assert "records read 300, written 300, dead-lettered 0 (all accounted for)" in out
  assert "complete (_SUCCESS present)" in out


def test_inspect_unknown_path_is_refused(tmp_path, capsys):
  assert main(["inspect", str(tmp_path / "nothing-*")]) == 2
  err = capsys.readouterr().err
  assert "nothing-*: no file matches; expected a SavedModel directory" in err


def test_console_script_help():
  result = subprocess.run([sys.executable, "-m", "tfcascade", "--help"], cwd=ROOT,
                          capture_output=True, text=True, check=True)
  for command in ("run", "validate", "inspect", "demo"):
    assert command in result.stdout
  result = subprocess.run([sys.executable, "-m", "tfcascade", "run", "--help"], cwd=ROOT,
                          capture_output=True, text=True, check=True)
  text = " ".join(result.stdout.split())  # argparse wraps the description
  assert "--overwrite" in text and "Beam pipeline options" in text


def test_unknown_flag_outside_run_is_an_error(job):
  with pytest.raises(SystemExit):
    main(["validate", "--config", job["config"], "--runner=DirectRunner"])


