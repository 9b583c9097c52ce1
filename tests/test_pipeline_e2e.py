"""End to end: the CLI on real TFRecords and checkpoints, checked per record
against an oracle (each model alone, in its own session)."""

import json
import os

import numpy as np
import pytest

from tfcascade.pipeline.cli import main
from tests.jobs import N_RECORDS, check_against_oracle, make_job, summary_of


@pytest.fixture(scope="module")
def job(tmp_path_factory):
  return make_job(tmp_path_factory.mktemp("job"))



def test_cli_run_matches_oracle_per_record(job):
  out = job["root"] / "out"
  assert main(["run", "--config", job["config"], "--runner=DirectRunner"]) == 0
  check_against_oracle(out, job["oracle"])
  summary = summary_of(out)
  assert summary["records_read"] == N_RECORDS == summary["records_written"]
  assert summary["records_dead_lettered"] == 0 and summary["accounted"]
  ran = sum(v["b/ran"] for v in job["oracle"].values())
  assert summary["stages"]["b"] == {**summary["stages"]["b"], "rows_in": N_RECORDS,
                                     "rows_run": ran}
  assert summary["stages"]["a"]["fingerprint"].startswith("sha256:")
  assert summary["metrics"]["sessions_opened"] == 1
  assert os.path.exists(out / "_SUCCESS")
  # A complete output is refused without --overwrite.
  assert main(["run", "--config", job["config"], "--runner=DirectRunner"]) == 2


@pytest.mark.parametrize("mode,workers,sessions", [
    ("multi_processing", 2, 2), ("multi_threading", 4, 1)])
def test_direct_running_modes(job, mode, workers, sessions):
  out = job["root"] / f"out_{mode}"
  code = main(["run", "--config", job["config"], "--set", f"output.path={out}",
               "--runner=DirectRunner", f"--direct_running_mode={mode}",
               f"--direct_num_workers={workers}"])
  assert code == 0
  check_against_oracle(out, job["oracle"])
  assert summary_of(out)["metrics"]["sessions_opened"] == sessions


def test_jsonl_output(job):
  out = job["root"] / "out_jsonl"
  assert main(["run", "--config", job["config"], "--set", f"output.path={out}",
               "--set", "output.format=jsonl", "--runner=DirectRunner"]) == 0
  rows = []
  for name in sorted(os.listdir(out)):
    if name.startswith("predictions-"):
      with open(out / name) as f:
        rows += [json.loads(line) for line in f]
  assert len(rows) == N_RECORDS
  for row in rows:
    want = job["oracle"][row["id"][0].encode()]
    np.testing.assert_allclose(row["a/logits"], want["a/logits"], atol=1e-5)
    assert row["b/ran"] == [want["b/ran"]]
