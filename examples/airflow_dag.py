"""Nightly tfcascade on Dataflow, scheduled by Airflow (an example to copy).

Every night at 02:15 it scores the day before (`{{ ds }}`, the run's logical
date) into its own folder, `gs://YOUR_BUCKET/tfcascade/predictions/<ds>/`:

  skip_if_complete --(no _SUCCESS yet)--> score (Dataflow) --> predictions_ready
          \\---(_SUCCESS already there: score skipped)-------------^  (sensor)

- score: Beam's BeamRunPythonPipelineOperator runs dataflow/main.py, which maps
  `--config/--run_date/--output_path/--overwrite` onto `tfcascade run` (the
  same entry the Flex Template uses). The process waits for the Dataflow job,
  checks every record is accounted for, then writes `_SUCCESS` last.
- Reruns are idempotent: a date whose folder holds `_SUCCESS` is skipped (the
  CLI would refuse it, exit 2, without --overwrite). A killed or failed run
  leaves no `_SUCCESS`; its retry clears the leftovers and starts over.
  To recompute a finished date: `airflow dags trigger tfcascade_nightly
  -e 2026-11-25 -c '{"overwrite": true}'` (Airflow 3: --logical-date), or
  delete its `_SUCCESS` and clear the task.
- One job per date at a time: the Dataflow job name is fixed per date
  (Dataflow refuses a second active job of the same name) and
  max_active_runs=1.
- predictions_ready: waits for `_SUCCESS`; consumers in other DAGs use the
  same sensor (or an Airflow Dataset) rather than the score task's state.

Needs apache-airflow-providers-apache-beam and -google on the Airflow side,
and on the worker a checkout of tfcascade at TFCASCADE_HOME with
`.venv/bin/pip install -c constraints.txt .` (same pins as the image).
Without Airflow this file still imports: the command-building functions are
plain Python (tests/test_dataflow.py checks them against the CLI).
"""

from __future__ import annotations

import datetime
from typing import Dict, List, Union

# --- deployment settings (edit) ------------------------------------------------
PROJECT = "YOUR_PROJECT"
REGION = "us-central1"
BUCKET = "YOUR_BUCKET"
CONFIG = f"gs://{BUCKET}/tfcascade/dataflow.yaml"           # configs/dataflow.yaml, uploaded
OUTPUT_PREFIX = "tfcascade/predictions"                       # one folder per date below it
IMAGE = f"{REGION}-docker.pkg.dev/{PROJECT}/tfcascade/tfcascade:0.1.0"  # dataflow/Dockerfile
TFCASCADE_HOME = "/opt/tfcascade"                             # checkout + .venv on the worker
SCHEDULE = "15 2 * * *"                                       # 02:15 daily; ds = the day before


def output_path(ds: str) -> str:
  """The run's output folder; the DAG names it so the sensor checks the same."""
  return f"gs://{BUCKET}/{OUTPUT_PREFIX}/{ds}"


def template_parameters(ds: str, overwrite: Union[bool, str] = False) -> Dict[str, str]:
  """dataflow/main.py's parameters (the Flex Template's too) for one date."""
  if isinstance(overwrite, bool):
    overwrite = "true" if overwrite else "false"
  return {"config": CONFIG, "run_date": ds, "output_path": output_path(ds),
          "overwrite": overwrite}


def beam_options(ds: str) -> Dict[str, str]:
  """Pipeline options besides runner/project/region/job_name (the operator's
  DataflowConfiguration adds those)."""
  del ds  # the same for every date
  return {
      "temp_location": f"gs://{BUCKET}/tmp",
      "sdk_container_image": IMAGE,        # workers: the same pinned image
      "setup_file": f"{TFCASCADE_HOME}/setup.py",
      "machine_type": "n1-standard-4",     # configs/dataflow.yaml's session threads assume 4 vCPUs
      "max_num_workers": "20",
  }


def job_name(ds: str) -> str:
  return "tfcascade-" + ds.replace("-", "")


def tfcascade_command(ds: str, overwrite: bool = False) -> List[str]:
  """The same run as one `tfcascade` command line (cron, BashOperator, by hand)."""
  command = ["tfcascade", "run", "--config", CONFIG,
             "--set", f"run_date={ds}", "--set", f"output.path={output_path(ds)}"]
  if overwrite:
    command.append("--overwrite")
  command += ["--runner=DataflowRunner", f"--project={PROJECT}", f"--region={REGION}",
              f"--job_name={job_name(ds)}"]
  return command + [f"--{k}={v}" for k, v in beam_options(ds).items()]


def _needs_run(ds, params, **_) -> bool:
  """ShortCircuit: False (skip scoring) when the date is already complete."""
  from airflow.providers.google.cloud.hooks.gcs import GCSHook  # pylint: disable=g-import-not-at-top
  if params.get("overwrite"):
    return True
  return not GCSHook().exists(BUCKET, f"{OUTPUT_PREFIX}/{ds}/_SUCCESS")


try:
  import airflow  # pylint: disable=unused-import
except ImportError:  # no Airflow here (tests, docs): the functions above still work
  airflow = None

if airflow is not None:
  # Past this point a missing provider is an import error Airflow shows, not a
  # silently absent DAG.
  from airflow import DAG
  from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator
  from airflow.providers.google.cloud.operators.dataflow import DataflowConfiguration
  from airflow.providers.google.cloud.sensors.gcs import GCSObjectExistenceSensor
  try:  # Airflow 3: the standard provider
    from airflow.providers.standard.operators.python import ShortCircuitOperator
  except ImportError:  # Airflow 2
    from airflow.operators.python import ShortCircuitOperator

  with DAG(
      dag_id="tfcascade_nightly",
      schedule=SCHEDULE,
      start_date=datetime.datetime(2026, 11, 1),
      catchup=False,          # set True to backfill missed dates, one at a time
      max_active_runs=1,      # one writer per output folder
      params={"overwrite": False},
      default_args={"retries": 2, "retry_delay": datetime.timedelta(minutes=10)},
      tags=["tfcascade"],
  ) as dag:
    skip_if_complete = ShortCircuitOperator(
        task_id="skip_if_complete",
        python_callable=_needs_run,
        # Skip only `score`; the sensor still runs (and finds _SUCCESS).
        ignore_downstream_trigger_rules=False,
    )
    score = BeamRunPythonPipelineOperator(
        task_id="score",
        runner="DataflowRunner",
        py_file=f"{TFCASCADE_HOME}/dataflow/main.py",
        py_interpreter=f"{TFCASCADE_HOME}/.venv/bin/python",
        pipeline_options={
            **template_parameters(
                "{{ ds }}", "{{ 'true' if params.overwrite else 'false' }}"),
            **beam_options("{{ ds }}"),
        },
        dataflow_config=DataflowConfiguration(
            job_name="tfcascade-{{ ds_nodash }}",  # job_name(ds), rendered by Airflow
            append_job_name=False,   # fixed per date: a duplicate active job is refused
            project_id=PROJECT,
            location=REGION,
            wait_until_finished=True,
        ),
        # A killed task cancels its Dataflow job (the job id comes from the log);
        # the cancelled run leaves no _SUCCESS and the retry starts clean.
        execution_timeout=datetime.timedelta(hours=6),
    )
    predictions_ready = GCSObjectExistenceSensor(
        task_id="predictions_ready",
        bucket=BUCKET,
        object=OUTPUT_PREFIX + "/{{ ds }}/_SUCCESS",
        trigger_rule="none_failed",   # also after a skipped (already complete) score
        mode="reschedule",
        poke_interval=300,
        timeout=60 * 60,
    )
    skip_if_complete >> score >> predictions_ready
