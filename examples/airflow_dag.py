"""Nightly tfcascade on Dataflow, scheduled by Airflow (an example to copy).

Every night at 02:15 UTC it scores the day before into that date's folder:

  plan --> wait_for_input (GCS) --> score (`tfcascade run --runner=DataflowRunner`,
                                           waits for the job and its exit code)
       --> report (`tfcascade report --compare <the day before>` on the Airflow
           worker, the HTML beside the date's output on GCS; drift fails it)

- The task runs the tfcascade launcher on the Airflow worker and waits for its
  exit code, the same task as examples/airflow_local_dag.py (which CI runs on
  the real demo job under Airflow 3.3.2): 0 done, 2 refused (no retry) unless
  the date is complete, 1 retried. The launcher waits for the Dataflow job;
  the job itself checks the counts and writes `_SUCCESS` as its last step.
- One job per date: the job name is fixed per date (tfcascade-YYYYMMDD); each
  attempt first waits while a job of that name is still active (an earlier
  attempt's, e.g. its worker lost), then skips the run if `_SUCCESS` is there.
  Killing the task (timeout, "mark failed") cancels the job.
- The checks (GCS, Dataflow jobs) use the Airflow connection
  `google_cloud_default`; the launcher itself uses the worker's Google
  credentials (Application Default Credentials).

Settings (Airflow Variable `tfcascade_nightly`, a JSON object; or the same keys
in a run's conf):

  {"tfcascade_bin": "/opt/tfcascade/.venv/bin/tfcascade",
   "config": "gs://BUCKET/tfcascade/dataflow.yaml",
   "input_pattern": "gs://BUCKET/in/{run_date}/part-*.tfrecord.gz",
   "output_path": "gs://BUCKET/tfcascade/predictions/{run_date}",
   "project": "PROJECT", "region": "us-central1",
   "temp_location": "gs://BUCKET/tmp",
   "image": "us-central1-docker.pkg.dev/PROJECT/tfcascade/tfcascade:0.1.0"}

Needs apache-airflow-providers-google and -apache-beam (the Google provider's
DataflowHook imports it) on the Airflow side (ci/airflow/requirements.txt has
the tested versions), and on the worker tfcascade installed with
`pip install -c constraints.txt .` (the image's pins).
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG, CronDataIntervalTimetable, Param, task
from airflow.providers.standard.operators.python import PythonOperator
# Imported here so a missing Google provider is an import error Airflow shows
# for this file, not a failure at 02:15.
from airflow.providers.google.cloud.hooks.dataflow import DataflowHook  # noqa: F401
from airflow.providers.google.cloud.hooks.gcs import GCSHook  # noqa: F401

from airflow_tfcascade import (GCP_CONN_ID, TfcascadeReportOperator, TfcascadeRunOperator,
                               input_ready, plan_task)

DAG_ID = "tfcascade_nightly"
# Dataflow flags besides the required settings; the run's extra_args replace them.
DEFAULT_EXTRA_ARGS = ["--machine_type=n1-standard-4",   # configs/dataflow.yaml assumes 4 vCPUs
                      "--max_num_workers=20"]


def setting_param(description: str) -> Param:
  return Param(None, type=["null", "string"], description=description)


with DAG(
    dag_id=DAG_ID,
    # Data intervals: the 02:15 run on the 26th has logical date the 25th, the
    # date it scores (see examples/airflow_local_dag.py).
    schedule=CronDataIntervalTimetable("15 2 * * *", timezone="UTC"),
    start_date=datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    max_active_runs=1,
    params={
        "run_date": Param(None, type=["null", "string"], pattern=r"^\d{4}-\d{2}-\d{2}$",
                          description="YYYY-MM-DD to score; default: the run's logical date"),
        "overwrite": Param(False, type="boolean",
                           description="recompute a date that is already complete"),
        "extra_args": Param(DEFAULT_EXTRA_ARGS, type="array", items={"type": "string"},
                            description="more `tfcascade run` / Beam flags"),
        **{name: setting_param(f"overrides the Variable's {name}") for name in (
            "tfcascade_bin", "config", "input_pattern", "output_path",
            "project", "region", "temp_location", "image")},
    },
    default_args={"retries": 2, "retry_delay": datetime.timedelta(minutes=10)},
    tags=["tfcascade"],
) as dag:
  plan = PythonOperator(task_id="plan", python_callable=plan_task(DAG_ID, dataflow=True),
                        retries=0)

  @task.sensor(task_id="wait_for_input", mode="reschedule", poke_interval=300,
               timeout=6 * 3600, retries=0)
  def wait_for_input(plan):
    return input_ready(plan, GCP_CONN_ID)

  score = TfcascadeRunOperator(
      task_id="score",
      plan=plan.output,
      dataflow=True,
      gcp_conn_id=GCP_CONN_ID,
      poll_interval_s=60,
      execution_timeout=datetime.timedelta(hours=8),
  )
  # The date's report beside its output, compared with the day before's; a
  # flagged drift fails this task without retry (airflow_tfcascade.py).
  report = TfcascadeReportOperator(
      task_id="report",
      plan=plan.output,
      gcp_conn_id=GCP_CONN_ID,
      execution_timeout=datetime.timedelta(minutes=30),
  )
  wait_for_input(plan.output) >> score >> report
