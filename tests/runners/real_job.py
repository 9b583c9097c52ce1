"""The real tfcascade job (`python -m tfcascade run`) on another runner, checked
against the oracle and against the same job on the DirectRunner. Shared by
tests/portable/ (Beam's Python job service and Prism) and tests/flink/."""

import sys

from tests.jobs import check_against_oracle, make_job, summary_of
from tests.runners import harness

N_RECORDS = 900


def prepare(root, n_records=N_RECORDS) -> dict:
  """A small job (models, data, config, oracle) under root."""
  job = make_job(root, n_records=n_records)
  job["n_records"] = n_records
  return job


def run(job, out, runner_args, timeout=400, env=None):
  """Runs the job's config to `out` with the given Beam runner args."""
  harness.run_job(
      [sys.executable, "-m", "tfcascade", "run", "--config", job["config"],
       "--set", f"output.path={out}"] + list(runner_args),
      timeout=timeout, cwd=str(harness.REPO), env=env)


def check_same_as_direct(job, out, direct_out):
  """`out` holds the same records as a DirectRunner run to `direct_out`, both
  match the oracle, and the run's summary accounts for every record."""
  run(job, direct_out, ["--runner=DirectRunner"], timeout=300)
  rows = check_against_oracle(out, job["oracle"])
  direct_rows = check_against_oracle(direct_out, job["oracle"])
  key = lambda rows: sorted(repr(sorted(r.items())) for r in rows)
  assert key(rows) == key(direct_rows)
  summary = summary_of(out)
  n = job["n_records"]
  assert summary["records_read"] == n == summary["records_written"]
  assert summary["accounted"] and (out / "_SUCCESS").exists()
