"""The real tfcascade job on a PortableRunner whose SDK workers come from an
EXTERNAL worker pool holding ONLY the wheel built from setup.py and its
declared dependencies (what Dataflow and Flink workers get): same records and
counts as the DirectRunner, checked against the oracle."""

import sys

import pytest

from tests.flink import harness
from tests.jobs import check_against_oracle, make_job, summary_of

pytestmark = pytest.mark.flink


def test_real_job_on_portable_runner_with_external_workers(worker_python, tmp_path):
  job = make_job(tmp_path / "job", n_records=900)
  out = tmp_path / "portable"
  base = [sys.executable, "-m", "pipeline", "run", "--config", job["config"]]
  with harness.PythonJobService(log_dir=tmp_path) as endpoint, \
      harness.WorkerPool(worker_python, log_dir=tmp_path) as pool:
    harness.run_job(base + ["--set", f"output.path={out}"] + harness.flink_args(
        "portable_external", job_endpoint=endpoint, worker_pool=pool),
        timeout=400, cwd=str(harness.REPO))
  direct = tmp_path / "direct"
  harness.run_job(base + ["--set", f"output.path={direct}", "--runner=DirectRunner"],
                  timeout=300, cwd=str(harness.REPO))
  portable_rows = check_against_oracle(out, job["oracle"])
  direct_rows = check_against_oracle(direct, job["oracle"])
  key = lambda rows: sorted(repr(sorted(r.items())) for r in rows)
  assert key(portable_rows) == key(direct_rows)
  summary = summary_of(out)
  assert summary["records_read"] == 900 == summary["records_written"]
  assert summary["accounted"] and (out / "_SUCCESS").exists()
