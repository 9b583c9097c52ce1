"""What the tfcascade Airflow DAGs share: settings, the date, the command,
and the task that runs `tfcascade run` and acts on its exit code.

Used by examples/airflow_local_dag.py (DirectRunner, or any runner through
`extra_args`) and examples/airflow_dag.py (Dataflow). Copy this file into the
DAG folder beside them (the DAG folder is on Airflow's import path).

Written for Airflow 3 (`airflow.sdk`); tested with Airflow 3.3.2,
apache-airflow-providers-google 22.8.0 and -apache-beam 6.3.1 (ci/airflow/).
Airflow 2 is not supported. The plain functions (settings, date, command)
import without Airflow, so the project's own tests check the commands
against the CLI.

Per DAG run (one date):

  plan --> wait_for_input --> score --> report
  - plan: the date to score and every path, from the run's params and the
    Airflow Variable named like the DAG (JSON); a missing setting, a leftover
    placeholder (YOUR_...), a relative path or a date that has not ended fails
    here, without retries, with a message saying what to set.
  - wait_for_input: waits (reschedule mode) until input_pattern matches a file;
    a date that is already complete needs no input and passes at once.
  - score: per attempt, so retries re-check everything: waits while an
    earlier attempt still runs (local: a lock the `tfcascade` process holds
    too; Dataflow: an active job with the date's job name), then
    `_SUCCESS` present and no overwrite -> succeeds without running;
    otherwise runs `tfcascade run` and waits for its exit code:
      0 -> success (and `_SUCCESS` must be there);
      2 -> `_SUCCESS` there (completed meanwhile) -> success; otherwise a
           refusal (config, no input, ...) -> failed, NO retry;
      1 or killed -> failed, Airflow retries.
  - report: `tfcascade report <output> --out <output>.report.html`, with
    `--compare <the day before's output> --fail-on-drift` when that output
    is complete (docs/report.md): the HTML is kept beside the date's output.
    A flagged drift (exit 1 with a `tfcascade: drift:` line) fails the task
    WITHOUT retry, so nothing downstream reads a drifted date before someone
    looked; a refused report (exit 2) likewise; anything else is retried.
"""

from __future__ import annotations

import collections
import datetime
import fcntl
import glob
import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import tempfile
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

SUCCESS = "_SUCCESS"
EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2
GCP_CONN_ID = "google_cloud_default"

# Settings every DAG needs, and what the Dataflow one needs besides. Each comes
# from the run's params (when not null) or the Airflow Variable named like the
# DAG, a JSON object (also settable as env AIRFLOW_VAR_<DAG_ID upper-cased>).
COMMON_SETTINGS = {
    "tfcascade_bin": "the tfcascade command on the Airflow worker, e.g. "
                     "/opt/tfcascade/.venv/bin/tfcascade",
    "config": "the job's YAML config (a path on the worker or gs://...)",
    "input_pattern": "the date's input files, {run_date} filled in, e.g. "
                     "/data/in/{run_date}/part-*.tfrecord.gz",
    "output_path": "the date's output folder, e.g. /data/predictions/{run_date}",
}
DATAFLOW_SETTINGS = {
    "project": "the GCP project the Dataflow job runs in",
    "region": "the Dataflow region, e.g. us-central1",
    "temp_location": "gs://... for Dataflow's temporary files",
    "image": "the workers' container image (dataflow/Dockerfile), "
             "REGION-docker.pkg.dev/PROJECT/tfcascade/tfcascade:TAG",
}
_LOG = logging.getLogger("airflow.task.tfcascade")
PLACEHOLDER = re.compile(r"YOUR_[A-Z_]+")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class PlanError(ValueError):
  """The run cannot be planned (setting, date); retrying will not help."""


def resolve_settings(dag_id: str, params: Mapping[str, Any],
                     variable: Optional[Mapping[str, Any]],
                     required: Mapping[str, str]) -> Dict[str, str]:
  """Each required setting from the params (when set) or the Variable."""
  variable = variable or {}
  settings, missing = {}, []
  for name in required:
    value = params.get(name)
    if value in (None, ""):
      value = variable.get(name)
    if value in (None, ""):
      missing.append(name)
      continue
    settings[name] = value
  if missing:
    lines = "\n".join(f"  {n}: {required[n]}" for n in missing)
    raise PlanError(
        f"{dag_id}: not set: {', '.join(missing)}.\n{lines}\n"
        f"Set them in the Airflow Variable {dag_id!r} (a JSON object, e.g. "
        f"`airflow variables set {dag_id} '{{\"{missing[0]}\": \"...\"}}'`, or env "
        f"AIRFLOW_VAR_{dag_id.upper()}), or pass them in the run's conf.")
  for name, value in settings.items():
    if not isinstance(value, str):
      raise PlanError(f"setting {name!r} must be a string, got {value!r}")
    if PLACEHOLDER.search(value):
      raise PlanError(f"setting {name}={value!r} still holds the placeholder "
                      f"{PLACEHOLDER.search(value).group(0)}: set the real value")
  for name in ("tfcascade_bin", "input_pattern", "output_path"):
    value = settings.get(name)
    if value and not (value.startswith("gs://") or os.path.isabs(value)):
      raise PlanError(f"setting {name}={value!r} must be an absolute path or gs://...")
  return settings


def run_date(param: Optional[str], logical_date: Optional[datetime.datetime],
             now: datetime.datetime) -> str:
  """The date a run scores, YYYY-MM-DD.

  The `run_date` param when given; else the run's logical date (with the
  DAGs' CronDataIntervalTimetable, the start of the day the run covers: the
  02:15 run on the 26th has logical date the 25th). A run without a logical
  date (a manual trigger without one) must name the date. A date that has
  not ended yet (in UTC) is refused: its input may still be growing.
  """
  if param:
    if not DATE.match(param):
      raise PlanError(f"run_date={param!r}: expected YYYY-MM-DD")
    try:
      day = datetime.date.fromisoformat(param)
    except ValueError as e:
      raise PlanError(f"run_date={param!r}: {e}") from e
  elif logical_date is not None:
    day = logical_date.astimezone(datetime.timezone.utc).date()
  else:
    raise PlanError(
        "this run has no logical date and no run_date param: trigger it with a "
        "logical date (`airflow dags trigger DAG_ID -l 2026-11-25T00:00:00+00:00`) "
        "or with conf {\"run_date\": \"2026-11-25\"}")
  today = now.astimezone(datetime.timezone.utc).date()
  if day >= today:
    raise PlanError(f"run_date {day} has not ended yet (now {now.isoformat()}): its "
                    f"input may be incomplete; score it after midnight UTC")
  return day.isoformat()


def job_name(date: str) -> str:
  """The Dataflow job name of a date: one active job per date."""
  return "tfcascade-" + date.replace("-", "")


def _yaml_string(value: str) -> str:
  """A `--set` value the CLI's YAML parsing reads back as this string."""
  return json.dumps(value)


def build_command(settings: Mapping[str, str], date: str, overwrite: bool,
                  extra_args: Sequence[str] = (), dataflow: bool = False) -> List[str]:
  """`tfcascade run` for one date; Beam flags last."""
  command = [settings["tfcascade_bin"], "run", "--config", settings["config"],
             "--set", f"run_date={date}",
             "--set", f"input.pattern={_yaml_string(fill(settings['input_pattern'], date))}",
             "--set", f"output.path={_yaml_string(fill(settings['output_path'], date))}"]
  if overwrite:
    command.append("--overwrite")
  if dataflow:
    command += ["--runner=DataflowRunner", f"--project={settings['project']}",
                f"--region={settings['region']}", f"--job_name={job_name(date)}",
                f"--temp_location={settings['temp_location']}",
                f"--sdk_container_image={settings['image']}"]
  return command + list(extra_args)


def fill(path: str, date: str) -> str:
  return path.replace("{run_date}", date)


def report_path(output_path: str) -> str:
  """Where a date's report goes: beside its output folder (the CLI's default)."""
  return output_path + ".report.html"


def report_command(plan: Mapping[str, Any], compare: bool) -> List[str]:
  """`tfcascade report` of the plan's output; with `compare`, against the
  day before's output, failing on drift."""
  command = [plan["tfcascade_bin"], "report", plan["output_path"],
             "--out", report_path(plan["output_path"])]
  if compare:
    command += ["--compare", plan["previous_output_path"], "--fail-on-drift"]
  return command


def interpret_report_exit(rc: int, tail: Sequence[str]) -> str:
  """What `tfcascade report`'s exit means: 'done', 'drift', 'refused' or
  'retry' (1 without a drift line is an unexpected error)."""
  if rc == EXIT_OK:
    return "done"
  if rc == EXIT_FAILED and any(line.startswith("tfcascade: drift:") for line in tail):
    return "drift"
  return "refused" if rc == EXIT_REFUSED else "retry"


def last_error_line(tail: Sequence[str]) -> str:
  """The CLI's one-line error (`tfcascade: ...`), else its last line."""
  return next((l for l in reversed(tail) if l.startswith("tfcascade:")),
              tail[-1] if tail else "")


def make_plan(dag_id: str, params: Mapping[str, Any], variable: Optional[Mapping[str, Any]],
              logical_date: Optional[datetime.datetime], now: datetime.datetime,
              dataflow: bool = False) -> Dict[str, Any]:
  """Everything a run of one date needs, as plain JSON (the `plan` XCom)."""
  required = dict(COMMON_SETTINGS, **(DATAFLOW_SETTINGS if dataflow else {}))
  settings = resolve_settings(dag_id, params, variable, required)
  date = run_date(params.get("run_date"), logical_date, now)
  overwrite = params.get("overwrite", False)
  if not isinstance(overwrite, bool):
    raise PlanError(f"overwrite={overwrite!r}: expected true or false (a JSON boolean)")
  extra_args = params.get("extra_args") or []
  if not isinstance(extra_args, list) or not all(isinstance(a, str) for a in extra_args):
    raise PlanError(f"extra_args={extra_args!r}: expected a list of strings")
  output_path = fill(settings["output_path"], date).rstrip("/")
  previous_date = (datetime.date.fromisoformat(date) - datetime.timedelta(days=1)).isoformat()
  previous_output = fill(settings["output_path"], previous_date).rstrip("/")
  plan = {
      "run_date": date,
      "overwrite": overwrite,
      "input_pattern": fill(settings["input_pattern"], date),
      "output_path": output_path,
      "success_path": f"{output_path}/{SUCCESS}",
      "command": build_command(settings, date, overwrite, extra_args, dataflow),
      "tfcascade_bin": settings["tfcascade_bin"],
      "previous_output_path": previous_output,
      "previous_success_path": f"{previous_output}/{SUCCESS}",
      "report_path": report_path(output_path),
  }
  if dataflow:
    plan.update(job_name=job_name(date), project=settings["project"],
                region=settings["region"])
  return plan


# --- storage: a local path or gs:// ------------------------------------------

def _split_gs(path: str):
  bucket, _, name = path[len("gs://"):].partition("/")
  return bucket, name


def exists(path: str, gcp_conn_id: str = GCP_CONN_ID) -> bool:
  if path.startswith("gs://"):
    from airflow.providers.google.cloud.hooks.gcs import GCSHook  # pylint: disable=g-import-not-at-top
    return GCSHook(gcp_conn_id=gcp_conn_id).exists(*_split_gs(path))
  return os.path.exists(path)


def matches(pattern: str, gcp_conn_id: str = GCP_CONN_ID) -> List[str]:
  """Files matching an input pattern (a glob)."""
  if pattern.startswith("gs://"):
    from airflow.providers.google.cloud.hooks.gcs import GCSHook  # pylint: disable=g-import-not-at-top
    bucket, name = _split_gs(pattern)
    names = GCSHook(gcp_conn_id=gcp_conn_id).list(bucket, match_glob=name, max_results=10)
    return [f"gs://{bucket}/{n}" for n in names]
  return sorted(p for p in glob.glob(pattern) if os.path.isfile(p))


def interpret_exit(rc: int, complete: bool, overwrite: bool) -> str:
  """What an exit code means for the task: 'done', 'refused' or 'retry'.

  complete: `_SUCCESS` is present after the process ended.
  """
  if rc == EXIT_OK:
    return "done" if complete else "retry"   # exit 0 without _SUCCESS: not complete
  if rc == EXIT_REFUSED:
    # Without --overwrite, "already holds a complete run" means another run (or
    # an earlier attempt) completed the date. With --overwrite an old
    # _SUCCESS does not mean this recompute happened.
    return "done" if complete and not overwrite else "refused"
  return "retry"  # 1: the run failed; negative: killed by a signal


def lock_file(lock_dir: str, output_path: str) -> str:
  """The lock a local run of one output folder holds (and its process inherits)."""
  key = hashlib.sha1(output_path.encode()).hexdigest()[:16]
  return os.path.join(lock_dir, f"tfcascade-{key}.lock")


# --- Dataflow: active jobs of the date's name ----------------------------------

def active_dataflow_jobs(service, project: str, region: str, name: str) -> List[dict]:
  """Jobs named exactly `name` that are still active (queued, running,
  cancelling, draining). service: a `dataflow v1b3` discovery resource."""
  jobs_api = service.projects().locations().jobs()
  request = jobs_api.list(projectId=project, location=region, filter="ACTIVE")
  found = []
  while request is not None:
    response = request.execute(num_retries=3)
    found += [j for j in response.get("jobs", []) if j.get("name") == name]
    request = jobs_api.list_next(previous_request=request, previous_response=response)
  return found


def cancel_dataflow_jobs(service, project: str, region: str, jobs: Sequence[dict]) -> None:
  jobs_api = service.projects().locations().jobs()
  for job in jobs:
    jobs_api.update(projectId=project, location=region, jobId=job["id"],
                    body={"requestedState": "JOB_STATE_CANCELLED"}).execute(num_retries=3)


try:
  import airflow.sdk  # pylint: disable=unused-import
except ImportError:  # the project's tests: the plain functions above suffice
  airflow = None

if airflow is not None:
  from airflow.sdk import BaseOperator, Variable
  from airflow.sdk.exceptions import AirflowException, AirflowFailException

  def _require_connection(conn_id: str) -> None:
    from airflow.sdk import BaseHook  # pylint: disable=g-import-not-at-top
    try:
      BaseHook.get_connection(conn_id)
    except Exception as e:  # AirflowNotFoundException, by version
      raise AirflowFailException(
          f"the Airflow connection {conn_id!r} is missing: create it (type Google Cloud; "
          f"empty keyfile fields = the worker's Application Default Credentials), e.g. "
          f"`airflow connections add {conn_id} --conn-type google_cloud_platform`: {e}") from e

  def plan_task(dag_id: str, dataflow: bool, gcp_conn_id: str = GCP_CONN_ID):
    """The callable of the `plan` task."""
    def plan(**context) -> Dict[str, Any]:
      try:
        variable = Variable.get(dag_id, default=None, deserialize_json=True)
      except (ValueError, TypeError) as e:
        raise AirflowFailException(
            f"Airflow Variable {dag_id!r} is not a JSON object: {e}") from e
      if variable is not None and not isinstance(variable, dict):
        raise AirflowFailException(f"Airflow Variable {dag_id!r} must be a JSON object")
      try:
        result = make_plan(dag_id, context["params"], variable,
                           context.get("logical_date"),
                           datetime.datetime.now(datetime.timezone.utc), dataflow)
      except PlanError as e:
        raise AirflowFailException(str(e)) from e
      if dataflow:
        _require_connection(gcp_conn_id)
      for key, value in result.items():
        _LOG.info("plan: %s = %s", key, value)
      return result
    plan.__name__ = "plan"
    return plan

  def input_ready(plan: Dict[str, Any], gcp_conn_id: str = GCP_CONN_ID) -> bool:
    """The `wait_for_input` poke: True once the input exists (or no input is
    needed: the date is already complete and not to be recomputed)."""
    if not plan["overwrite"] and exists(plan["success_path"], gcp_conn_id):
      _LOG.info("%s is already complete (%s); no input needed", plan["output_path"], SUCCESS)
      return True
    found = matches(plan["input_pattern"], gcp_conn_id)
    if found:
      _LOG.info("input for %s: %s%s", plan["run_date"], ", ".join(found[:3]),
                " ..." if len(found) > 3 else "")
      return True
    _LOG.info("no input for %s yet: nothing matches %s", plan["run_date"], plan["input_pattern"])
    return False

  class TfcascadeRunOperator(BaseOperator):
    """Runs a plan's `tfcascade run` and acts on its exit code (see the top)."""

    template_fields = ("plan",)
    ui_color = "#d5e8d4"

    def __init__(self, *, plan, dataflow: bool = False, gcp_conn_id: str = GCP_CONN_ID,
                 poll_interval_s: float = 30.0, lock_dir: Optional[str] = None,
                 kill_grace_s: float = 60.0, **kwargs):
      super().__init__(**kwargs)
      self.plan = plan
      self.dataflow = dataflow
      self.gcp_conn_id = gcp_conn_id
      self.poll_interval_s = poll_interval_s
      self.lock_dir = lock_dir or os.path.join(tempfile.gettempdir(), "tfcascade-locks")
      self.kill_grace_s = kill_grace_s
      self._process: Optional[subprocess.Popen] = None
      self._lock_fd: Optional[int] = None

    # -- the steps ---------------------------------------------------------------
    def execute(self, context) -> Dict[str, Any]:
      plan = self.plan
      self._acquire_lock(plan)
      try:
        if self.dataflow:
          self._wait_for_active_job(plan)
        if not plan["overwrite"] and self._complete(plan):
          self.log.info("%s already holds a complete run (%s): not running "
                        "(trigger with overwrite=true to recompute)",
                        plan["output_path"], SUCCESS)
          return {"run_date": plan["run_date"], "ran": False, "exit_code": None}
        rc, tail = self._run(plan["command"])
        verdict = interpret_exit(rc, self._complete(plan), plan["overwrite"])
        last = last_error_line(tail)
        if verdict == "done":
          if rc == EXIT_REFUSED:
            self.log.info("exit 2 but %s is complete: another run completed it", plan["output_path"])
          return {"run_date": plan["run_date"], "ran": True, "exit_code": rc}
        if verdict == "refused":
          raise AirflowFailException(
              f"tfcascade refused the run (exit 2), not retrying: {last}\n"
              f"Fix the cause (config, input, settings), then clear this task.")
        if rc == EXIT_OK:
          raise AirflowException(f"tfcascade exited 0 but {plan['success_path']} is "
                                 f"missing: the run is not complete; retrying")
        what = f"exit {rc}" if rc >= 0 else f"killed by signal {-rc}"
        raise AirflowException(f"tfcascade run failed ({what}): {last}")
      finally:
        self._release_lock()

    def _complete(self, plan) -> bool:
      return exists(plan["success_path"], self.gcp_conn_id)

    def _run(self, command: List[str]):
      self.log.info("running: %s", " ".join(command))
      tail = collections.deque(maxlen=40)
      pass_fds = (self._lock_fd,) if self._lock_fd is not None else ()
      # Its own process group, so on_kill stops the whole job (Beam's workers).
      self._process = subprocess.Popen(
          command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
          errors="replace", start_new_session=True, pass_fds=pass_fds)
      for line in self._process.stdout:
        line = line.rstrip("\n")
        tail.append(line)
        self.log.info("%s", line)
      rc = self._process.wait()
      self._process = None
      self.log.info("tfcascade exited %d", rc)
      return rc, list(tail)

    # -- one run per date at a time ----------------------------------------------
    def _acquire_lock(self, plan) -> None:
      """A lock per output folder on this machine, inherited by the
      `tfcascade` process, so a retry waits while an earlier attempt's process
      lives on (its task process lost) instead of running beside it."""
      os.makedirs(self.lock_dir, exist_ok=True)
      path = lock_file(self.lock_dir, plan["output_path"])
      fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
      waited = False
      while True:
        try:
          fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
          break
        except BlockingIOError:
          if not waited:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            self.log.warning("another run of %s is still going (%s, lock %s); waiting "
                             "for it before deciding", plan["output_path"], holder, path)
            waited = True
          time.sleep(self.poll_interval_s)
      os.ftruncate(fd, 0)
      os.pwrite(fd, f"pid {os.getpid()} {plan['run_date']}\n".encode(), 0)
      self._lock_fd = fd

    def _release_lock(self) -> None:
      if self._lock_fd is not None:
        os.close(self._lock_fd)
        self._lock_fd = None

    def _dataflow_service(self):
      from airflow.providers.google.cloud.hooks.dataflow import DataflowHook  # pylint: disable=g-import-not-at-top
      return DataflowHook(gcp_conn_id=self.gcp_conn_id).get_conn()

    def _wait_for_active_job(self, plan) -> None:
      """Dataflow: a job of this date's name still active (an earlier
      attempt's, its worker lost) is waited for; then `_SUCCESS` decides."""
      service = self._dataflow_service()
      while True:
        jobs = active_dataflow_jobs(service, plan["project"], plan["region"], plan["job_name"])
        if not jobs:
          return
        self.log.warning(
            "Dataflow job %s is still active (%s): waiting for it to end before "
            "deciding whether to run", plan["job_name"],
            ", ".join(f"{j.get('id')} {j.get('currentState')}" for j in jobs))
        time.sleep(self.poll_interval_s)

    def on_kill(self) -> None:
      process = self._process
      if process is not None and process.poll() is None:
        self.log.info("stopping tfcascade (process group %d)", process.pid)
        try:
          os.killpg(process.pid, signal.SIGTERM)
          process.wait(timeout=self.kill_grace_s)
        except subprocess.TimeoutExpired:
          os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
          pass
      if self.dataflow and isinstance(self.plan, dict):
        plan = self.plan
        service = self._dataflow_service()
        jobs = active_dataflow_jobs(service, plan["project"], plan["region"], plan["job_name"])
        self.log.info("cancelling Dataflow job(s) %s", [j.get("id") for j in jobs])
        cancel_dataflow_jobs(service, plan["project"], plan["region"], jobs)

  class TfcascadeReportOperator(BaseOperator):
    """Writes the date's report beside its output, compared with the day
    before's when that is complete; a flagged drift fails without retry."""

    template_fields = ("plan",)
    ui_color = "#fff2cc"

    def __init__(self, *, plan, gcp_conn_id: str = GCP_CONN_ID, **kwargs):
      super().__init__(**kwargs)
      self.plan = plan
      self.gcp_conn_id = gcp_conn_id

    def execute(self, context) -> Dict[str, Any]:
      plan = self.plan
      compare = exists(plan["previous_success_path"], self.gcp_conn_id)
      if not compare:
        self.log.info("%s is not a complete output: reporting without a comparison",
                      plan["previous_output_path"])
      command = report_command(plan, compare)
      self.log.info("running: %s", " ".join(command))
      done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", check=False)
      tail = done.stdout.splitlines()
      for line in tail:
        self.log.info("%s", line)
      verdict = interpret_report_exit(done.returncode, tail)
      if verdict == "drift":
        raise AirflowFailException(
            f"drift against {plan['previous_output_path']}, not retrying: "
            f"{last_error_line(tail)}\nLook at {plan['report_path']}; clear this task "
            f"once the date may be used.")
      if verdict == "refused":
        raise AirflowFailException(f"tfcascade refused the report (exit 2), not retrying: "
                                   f"{last_error_line(tail)}")
      if verdict == "retry":
        raise AirflowException(f"tfcascade report failed (exit {done.returncode}): "
                               f"{last_error_line(tail)}")
      return {"run_date": plan["run_date"], "report": plan["report_path"],
              "compared_with": plan["previous_output_path"] if compare else None}
