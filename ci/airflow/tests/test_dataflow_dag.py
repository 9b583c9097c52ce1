"""examples/airflow_dag.py (Dataflow) under real Airflow, with Google's
services faked: no credentials or network here. Faked, and only these:
the Dataflow REST API (jobs list/update, behind DataflowHook.get_conn), GCS
(GCSHook.exists/list, over a local folder) and the launcher (a stand-in for
`tfcascade run --runner=DataflowRunner`: it records its arguments and "runs
the job" by writing `_SUCCESS`). The task logic, Airflow's scheduling,
retries and params are real; the same task runs the real job in
test_local_dag.py."""

import copy
import glob
import os
import sys
from pathlib import Path

import pytest

from conftest import at, calls, run_dag

DAG_ID = "tfcascade_nightly"
ACTIVE = {"JOB_STATE_NOT_STARTED", "JOB_STATE_QUEUED", "JOB_STATE_PENDING",
          "JOB_STATE_RUNNING", "JOB_STATE_CANCELLING", "JOB_STATE_DRAINING"}


class _Request:
  def __init__(self, fn):
    self._fn = fn

  def execute(self, num_retries=0):
    return self._fn()


class FakeDataflow:
  """The `dataflow v1b3` discovery resource, in memory: projects().locations()
  .jobs() .list(filter=ACTIVE) (one job per page), .list_next, .update."""

  def __init__(self):
    self.jobs_ = []
    self.list_calls = 0
    self.cancelled = []
    self.on_list = None          # called with the list call's number

  def add(self, name, state, project="test-project", location="us-central1"):
    job = {"id": f"2025-06-{len(self.jobs_):02d}_job", "name": name, "currentState": state,
           "projectId": project, "location": location}
    self.jobs_.append(job)
    return job

  def projects(self):
    return self

  def locations(self):
    return self

  def jobs(self):
    return self

  def _page(self, project, location, page):
    found = [dict(j) for j in self.jobs_ if j["projectId"] == project
             and j["location"] == location and j["currentState"] in ACTIVE]
    response = {"jobs": found[page:page + 1]} if found[page:page + 1] else {}
    if page + 1 < len(found):
      response["nextPageToken"] = str(page + 1)
    return response

  def list(self, projectId, location, filter=None):  # pylint: disable=redefined-builtin
    assert filter == "ACTIVE"
    self.list_calls += 1
    if self.on_list:
      self.on_list(self.list_calls)
    request = _Request(lambda: self._page(projectId, location, 0))
    request.args = (projectId, location)
    return request

  def list_next(self, previous_request, previous_response):
    token = previous_response.get("nextPageToken")
    if token is None:
      return None
    project, location = previous_request.args
    request = _Request(lambda: self._page(project, location, int(token)))
    request.args = previous_request.args
    return request

  def update(self, projectId, location, jobId, body):
    def cancel():
      for job in self.jobs_:
        if job["id"] == jobId and job["projectId"] == projectId and job["location"] == location:
          assert body == {"requestedState": "JOB_STATE_CANCELLED"}
          job["currentState"] = "JOB_STATE_CANCELLED"
          self.cancelled.append(jobId)
          return job
      raise KeyError(jobId)
    return _Request(cancel)


@pytest.fixture
def gcs(tmp_path, monkeypatch):
  """gs://BUCKET/NAME is tmp_path/gcs/BUCKET/NAME."""
  from airflow.providers.google.cloud.hooks.gcs import GCSHook
  root = tmp_path / "gcs"

  def exists(self, bucket_name, object_name, retry=None):
    return (root / bucket_name / object_name).is_file()

  def list_(self, bucket_name, versions=None, max_results=None, prefix=None, delimiter=None,
            match_glob=None, user_project=None):
    base = root / bucket_name
    names = sorted(os.path.relpath(p, base) for p in glob.glob(str(base / match_glob))
                   if os.path.isfile(p))
    return names[:max_results] if max_results else names

  monkeypatch.setattr(GCSHook, "exists", exists)
  monkeypatch.setattr(GCSHook, "list", list_)
  return root


@pytest.fixture(autouse=True)
def gcp_connection(monkeypatch):
  """The connection the DAG's checks use (docs/scheduling.md), from env."""
  monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", "google-cloud-platform://")


@pytest.fixture
def dataflow(monkeypatch):
  from airflow.providers.google.cloud.hooks.dataflow import DataflowHook
  fake = FakeDataflow()
  monkeypatch.setattr(DataflowHook, "get_conn", lambda self: fake)
  return fake


def fake_launcher(path: Path, gcs_root: Path, exit_code: int = 0, drift: bool = False) -> Path:
  """Stands in for `tfcascade run --runner=DataflowRunner ...`: records its
  arguments; exit 0 after "the job" wrote `_SUCCESS` at output.path. And for
  `tfcascade report`: records its arguments in `<path>.reports` and writes
  the --out file; with `drift`, says a drift row is flagged (exit 1) as the
  real CLI does (test_local_dag.py runs the real one)."""
  path.write_text(f"""#!{sys.executable}
import json, os, sys
if sys.argv[1] == "report":
  with open({str(path) + '.reports'!r}, "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
  out = sys.argv[sys.argv.index("--out") + 1]
  bucket, _, name = out[len("gs://"):].partition("/")
  with open(os.path.join({str(gcs_root)!r}, bucket, name), "w") as f:
    f.write("<html></html>")
  if {drift}:
    print("tfcascade: drift: gate pass share b: 87.2% vs 59.2% (+28.0 points)", file=sys.stderr)
    sys.exit(1)
  sys.exit(0)
with open({str(path) + '.calls'!r}, "a") as f:
  f.write(" ".join(sys.argv[1:]) + "\\n")
if {exit_code}:
  print("tfcascade: error: the config was refused", file=sys.stderr)
  sys.exit({exit_code})
out = next(json.loads(a.split("=", 1)[1]) for a in sys.argv if a.startswith("output.path="))
bucket, _, name = out[len("gs://"):].partition("/")
folder = os.path.join({str(gcs_root)!r}, bucket, name)
os.makedirs(folder, exist_ok=True)
open(os.path.join(folder, "_SUCCESS"), "w").close()
""")
  path.chmod(0o755)
  return path


def conf_for(cli):
  return {"tfcascade_bin": str(cli), "config": "gs://bkt/tfcascade/dataflow.yaml",
          "input_pattern": "gs://bkt/in/{run_date}/part-*.tfrecord.gz",
          "output_path": "gs://bkt/predictions/{run_date}",
          "project": "test-project", "region": "us-central1",
          "temp_location": "gs://bkt/tmp",
          "image": "us-central1-docker.pkg.dev/test-project/tfcascade/tfcascade:test"}


def put(gcs, path):
  f = gcs / path[len("gs://"):]
  f.parent.mkdir(parents=True, exist_ok=True)
  f.write_bytes(b"x")


@pytest.fixture
def dag(dagbag):
  return dagbag.dags[DAG_ID]


def test_launches_the_dates_named_job_and_waits_for_its_exit_code(dag, gcs, dataflow, tmp_path):
  cli = fake_launcher(tmp_path / "tfcascade", gcs)
  put(gcs, "gs://bkt/in/2025-06-10/part-00000.tfrecord.gz")
  run = run_dag(dag, at(2025, 6, 10, 2, 15), conf_for(cli))

  assert run.state == "success", run.states
  assert run.xcom("score") == {"run_date": "2025-06-10", "ran": True, "exit_code": 0}
  assert dataflow.list_calls == 1          # checked for an active job first
  (line,) = calls(cli)
  args = line.split()
  assert args[:3] == ["run", "--config", "gs://bkt/tfcascade/dataflow.yaml"]
  assert "run_date=2025-06-10" in args and "--overwrite" not in args
  assert 'output.path="gs://bkt/predictions/2025-06-10"' in args
  for flag in ("--runner=DataflowRunner", "--project=test-project", "--region=us-central1",
               "--job_name=tfcascade-20250610", "--temp_location=gs://bkt/tmp",
               "--sdk_container_image=us-central1-docker.pkg.dev/test-project/tfcascade/tfcascade:test",
               "--machine_type=n1-standard-4", "--max_num_workers=20"):
    assert flag in args
  assert (gcs / "bkt/predictions/2025-06-10/_SUCCESS").exists()
  # The report, beside the output on GCS; the day before is not complete:
  # no comparison.
  assert run.states["report"] == "success"
  assert reports(cli) == ["report gs://bkt/predictions/2025-06-10 "
                          "--out gs://bkt/predictions/2025-06-10.report.html"]
  assert (gcs / "bkt/predictions/2025-06-10.report.html").exists()


def reports(cli):
  f = Path(str(cli) + ".reports")
  return f.read_text().splitlines() if f.exists() else []


def test_drift_against_the_day_before_fails_the_report_without_retry(dag, gcs, dataflow,
                                                                     tmp_path):
  cli = fake_launcher(tmp_path / "tfcascade", gcs, drift=True)
  put(gcs, "gs://bkt/in/2025-06-15/part-00000.tfrecord.gz")
  put(gcs, "gs://bkt/predictions/2025-06-14/_SUCCESS")   # yesterday: complete
  run = run_dag(dag, at(2025, 6, 15, 2, 15), conf_for(cli))
  assert run.state == "failed"
  assert run.states["score"] == "success"
  assert run.states["report"] == "failed" and run.tries["report"] == 1
  assert reports(cli) == ["report gs://bkt/predictions/2025-06-15 --out "
                          "gs://bkt/predictions/2025-06-15.report.html --compare "
                          "gs://bkt/predictions/2025-06-14 --fail-on-drift"]
  assert "drift against gs://bkt/predictions/2025-06-14, not retrying" in run.log
  assert "tfcascade: drift: gate pass share b" in run.log


def test_retry_waits_while_the_previous_attempts_job_runs(dag, gcs, dataflow, tmp_path):
  """A job named for the date is still running (its attempt's worker was
  lost): the new attempt waits, the job finishes and publishes, and the
  attempt succeeds without launching a second job. Jobs of other names
  (another date) are not waited for."""
  cli = fake_launcher(tmp_path / "tfcascade", gcs)
  put(gcs, "gs://bkt/in/2025-06-11/part-00000.tfrecord.gz")
  dataflow.add("tfcascade-20250612", "JOB_STATE_RUNNING")
  previous = dataflow.add("tfcascade-20250611", "JOB_STATE_RUNNING")
  dataflow.add("tfcascade-20250611", "JOB_STATE_RUNNING", location="europe-west1")

  def finish_on_third_look(n):
    if n == 3:
      previous["currentState"] = "JOB_STATE_DONE"
      put(gcs, "gs://bkt/predictions/2025-06-11/_SUCCESS")
  dataflow.on_list = finish_on_third_look

  run = run_dag(dag, at(2025, 6, 11, 2, 15), conf_for(cli))
  assert run.state == "success", run.states
  assert dataflow.list_calls == 3
  assert "Dataflow job tfcascade-20250611 is still active" in run.log
  assert run.xcom("score") == {"run_date": "2025-06-11", "ran": False, "exit_code": None}
  assert calls(cli) == []


def test_after_the_previous_job_failed_the_retry_launches(dag, gcs, dataflow, tmp_path):
  cli = fake_launcher(tmp_path / "tfcascade", gcs)
  put(gcs, "gs://bkt/in/2025-06-12/part-00000.tfrecord.gz")
  previous = dataflow.add("tfcascade-20250612", "JOB_STATE_RUNNING")
  dataflow.on_list = lambda n: previous.update(currentState="JOB_STATE_FAILED") if n == 2 else None

  run = run_dag(dag, at(2025, 6, 12, 2, 15), conf_for(cli))
  assert run.state == "success", run.states
  assert run.xcom("score") == {"run_date": "2025-06-12", "ran": True, "exit_code": 0}
  assert len(calls(cli)) == 1


def test_refused_launch_fails_without_retry(dag, gcs, dataflow, tmp_path):
  cli = fake_launcher(tmp_path / "tfcascade", gcs, exit_code=2)
  put(gcs, "gs://bkt/in/2025-06-13/part-00000.tfrecord.gz")
  run = run_dag(dag, at(2025, 6, 13, 2, 15), conf_for(cli))
  assert run.state == "failed"
  assert run.states["score"] == "failed" and run.tries["score"] == 1
  assert "tfcascade: error: the config was refused" in run.log
  assert len(calls(cli)) == 1


def test_placeholders_fail_the_plan(dag, gcs, dataflow, tmp_path):
  conf = {**conf_for(tmp_path / "tfcascade"), "output_path": "gs://YOUR_BUCKET/p/{run_date}"}
  run = run_dag(dag, at(2025, 6, 14, 2, 15), conf)
  assert run.states["plan"] == "failed" and run.tries["plan"] == 1
  assert "still holds the placeholder YOUR_BUCKET" in run.log
  assert dataflow.list_calls == 0


def test_killing_the_task_cancels_the_dates_job(dag, dataflow):
  import airflow_tfcascade as tc
  ours = dataflow.add("tfcascade-20250615", "JOB_STATE_RUNNING")
  other = dataflow.add("tfcascade-20250616", "JOB_STATE_RUNNING")
  score = copy.deepcopy(dag.get_task("score"))
  score.plan = tc.make_plan(DAG_ID, conf_for("/bin/true"), None, at(2025, 6, 15, 2, 15),
                            at(2025, 6, 20), dataflow=True)
  score.on_kill()
  assert dataflow.cancelled == [ours["id"]]
  assert ours["currentState"] == "JOB_STATE_CANCELLED"
  assert other["currentState"] == "JOB_STATE_RUNNING"


def test_missing_gcp_connection_fails_the_plan(dag, gcs, dataflow, tmp_path, monkeypatch):
  monkeypatch.delenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT")
  run = run_dag(dag, at(2025, 6, 17, 2, 15), conf_for(tmp_path / "tfcascade"))
  assert run.states["plan"] == "failed" and run.tries["plan"] == 1
  assert "the Airflow connection 'google_cloud_default' is missing" in run.log
