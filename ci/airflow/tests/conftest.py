"""Real Airflow (ci/airflow/constraints.txt) around the example DAGs.

Runs in the Airflow venv (ci/airflow/test.sh), never in the project's: the
DAGs call the project's CLI by path, $TFCASCADE_BIN or <repo>/.venv/bin/tfcascade.
Each session gets a fresh AIRFLOW_HOME with a migrated SQLite metadata DB and
DAGS_FOLDER=examples/ (the dags-folder bundle, as a deployment would have it).
"""

import atexit
import copy
import datetime
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"
TFCASCADE = os.environ.get("TFCASCADE_BIN") or str(REPO / ".venv" / "bin" / "tfcascade")
UTC = datetime.timezone.utc

# Before anything imports airflow: a throw-away home and metadata DB.
_HOME = tempfile.mkdtemp(prefix="tfcascade-airflow-home-")
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
os.environ.update({
    "AIRFLOW_HOME": _HOME,
    "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLES),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME}/airflow.db",
})
for _key in [k for k in os.environ if k.startswith("AIRFLOW_VAR_") or k.startswith("AIRFLOW_CONN_")]:
  del os.environ[_key]
_migrate = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"],
                          capture_output=True, text=True)
if _migrate.returncode:
  raise RuntimeError(f"airflow db migrate failed:\n{_migrate.stdout}\n{_migrate.stderr}")
sys.path.insert(0, str(EXAMPLES))   # airflow_tfcascade, as the bundle path provides it


class _LogTap:
  """Every log event of the tasks (message, and the exception a task failed
  with), so tests can assert what an operator would read in the task log."""

  def __init__(self):
    self.lines = []
    self.installed = False

  def __call__(self, logger, method, event_dict):
    line = str(event_dict.get("event", ""))
    positional = event_dict.get("positional_args")
    if positional:
      try:
        line = line % tuple(positional)
      except (TypeError, ValueError):
        pass
    if event_dict.get("exc_info"):
      error = sys.exc_info()[1]
      if error is not None:
        line += f" {type(error).__name__}: {error}"
    self.lines.append(line)
    return event_dict

  def install(self):
    if not self.installed:
      import structlog
      structlog.configure(processors=[self] + list(structlog.get_config()["processors"]))
      tap = self

      class Handler(logging.Handler):   # stdlib loggers (the example's own)
        def emit(self, record):
          tap.lines.append(record.getMessage())

      logging.getLogger("airflow.task.tfcascade").addHandler(Handler())
      self.installed = True


LOG_TAP = _LogTap()


def at(y, m, d, hh=0, mm=0):
  return datetime.datetime(y, m, d, hh, mm, tzinfo=UTC)


@pytest.fixture(scope="session")
def dagbag(tmp_path_factory):
  """The DAG folder parsed the way Airflow 3's DAG processor parses it."""
  from airflow.dag_processing.dagbag import BundleDagBag
  bag = BundleDagBag(dag_folder=str(EXAMPLES), bundle_path=str(EXAMPLES),
                     bundle_name="dags-folder")
  # Test pacing only (seconds instead of minutes/hours); retries and rules as shipped.
  for dag in bag.dags.values():
    for t in dag.tasks:
      t.retry_delay = datetime.timedelta(seconds=1)
    sensor = dag.get_task("wait_for_input")
    sensor.poke_interval, sensor.timeout = 1, 6
    dag.get_task("score").poll_interval_s = 0.5
    dag.get_task("score").lock_dir = str(tmp_path_factory.mktemp("locks"))
  return bag


@pytest.fixture(scope="session")
def tfcascade():
  if not os.access(TFCASCADE, os.X_OK):
    pytest.fail(f"the project's CLI is not at {TFCASCADE}: set up the project venv "
                f"(README) or set TFCASCADE_BIN")
  return TFCASCADE


@pytest.fixture(scope="session")
def demo(tmp_path_factory, tfcascade):
  """The real demo job's data and models (2,000 records, 2 shards)."""
  out = tmp_path_factory.mktemp("demo") / "demo"
  done = subprocess.run([tfcascade, "demo", "--out", str(out), "--records", "2000",
                         "--shards", "2"], capture_output=True, text=True)
  assert done.returncode == 0, done.stdout + done.stderr
  return out


# A training job next door re-exports the model's graph (same graph, a new
# file) right after the CLI planned the run, on every attempt.
_RETRAINED = """\
import sys
import tensorflow as tf
from tfcascade.pipeline import cli, run_plan
planned = run_plan.preflight
def planned_then_reexported(config):
  pre = planned(config)
  meta = tf.compat.v1.MetaGraphDef()
  with open({meta!r}, "rb") as f:
    meta.ParseFromString(f.read())
  meta.meta_info_def.meta_graph_version += "+"
  with open({meta!r}, "wb") as f:
    f.write(meta.SerializeToString())
  return pre
run_plan.preflight = planned_then_reexported
sys.exit(cli.main(sys.argv[1:]))
"""


def write_cli(path: Path, real: str, mode: str = "plain", meta: str = "") -> Path:
  """A stand-in for the CLI that records each call (one line in `<path>.calls`)
  and runs the real CLI. Modes:
    plain: just the real CLI;
    die_after_publish: first call runs the real job to completion, then the
      process is killed (SIGKILL): an attempt lost after its publish;
    completed_meanwhile: another run completes the date first, so this call
      meets "already holds a complete run" (exit 2);
    model_retrained: the `.meta` file `meta` is rewritten right after the
      CLI planned, so its workers refuse the changed model (exit 1).
  """
  calls = Path(str(path) + ".calls")
  # Not `<path>.py`: a script named tfcascade.py would shadow the package.
  hook = path.with_name("model_retrained_hook.py")
  if mode == "model_retrained":
    hook.write_text(_RETRAINED.format(meta=meta))
  body = {
      "plain": f'exec "{real}" "$@"',
      "die_after_publish": (f'"{real}" "$@"; rc=$?\n'
                            f'if [ "$(wc -l < "{calls}")" -eq 1 ]; then kill -9 $$; fi\n'
                            f'exit $rc'),
      "completed_meanwhile": f'"{real}" "$@" > /dev/null 2>&1\nexec "{real}" "$@"',
      "model_retrained": f'exec "{Path(real).parent / "python"}" "{hook}" "$@"',
  }[mode]
  path.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$*" >> "{calls}"\n{body}\n')
  path.chmod(0o755)
  return path


def calls(cli: Path, command: str = "run"):
  """The stand-in's recorded calls of one CLI command (`run`, `report`)."""
  f = Path(str(cli) + ".calls")
  lines = f.read_text().splitlines() if f.exists() else []
  return [line for line in lines if line.split(" ", 1)[0] == command]


def demo_stage_args(demo: Path):
  """configs/local.yaml's models are ../demo/...: point them at this demo."""
  return [f"--set=stages.{s}.{key}={demo}/models/{s}{suffix}"
          for s in ("a", "b") for key, suffix in (("checkpoint", ""), ("meta_graph", "/model.meta"))]


class Run:
  """A finished dag.test() run: task states, tries and return values."""

  def __init__(self, dag, dag_run):
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select
    self.dag_run = dag_run
    self.state = str(dag_run.state)
    with create_session() as session:
      tis = session.scalars(select(TaskInstance).where(
          TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == dag_run.run_id)).all()
      self.tis = {ti.task_id: ti for ti in tis}
      self.states = {ti.task_id: str(ti.state) for ti in tis}
      self.tries = {ti.task_id: ti.try_number for ti in tis}
      self.ends = {ti.task_id: ti.end_date for ti in tis}
      self.starts = {ti.task_id: ti.start_date for ti in tis}
    self._dag_id = dag.dag_id

  def xcom(self, task_id):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    with create_session() as session:
      row = session.scalars(XComModel.get_many(
          run_id=self.dag_run.run_id, key="return_value", task_ids=task_id,
          dag_ids=self._dag_id)).first()
      return None if row is None else XComModel.deserialize_value(row)


def run_dag(dag, logical_date, conf):
  """dag.test(): one DAG run, tasks in this process, retries after retry_delay.
  logical_date=None: a run without a logical date (a manual trigger).

  Runs a copy of the DAG: in one process, dag.test() writes the run's conf
  into the tasks' Param objects, which would leak into the next run (a real
  deployment runs every task in a fresh process)."""
  dag = copy.deepcopy(dag)
  for task in dag.tasks:   # (a DAG's deepcopy shares its tasks' Param objects)
    task.params = copy.deepcopy(task.params)
  LOG_TAP.install()
  LOG_TAP.lines.clear()
  run = Run(dag, dag.test(logical_date=logical_date, run_conf=conf))
  run.log = "\n".join(LOG_TAP.lines)
  return run
