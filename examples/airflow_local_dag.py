"""Nightly tfcascade on the Airflow worker itself (DirectRunner), an example to copy.

Every night at 02:15 UTC it scores the day before into that date's folder:

  plan --> wait_for_input --> score (`tfcascade run`, waits for its exit code)
       --> report (`tfcascade report --compare <the day before>`; drift fails it)

What each step does, and what each exit code does, is in airflow_tfcascade.py
(copy it beside this file) and docs/scheduling.md. Tested under Airflow 3.3.2
by ci/airflow/test.sh, which runs this DAG on the real demo job.

Settings (Airflow Variable `tfcascade_nightly_local`, a JSON object; or the
same keys in a run's conf):

  {"tfcascade_bin": "/opt/tfcascade/.venv/bin/tfcascade",
   "config": "/opt/tfcascade/configs/nightly.yaml",
   "input_pattern": "/data/in/{run_date}/part-*.tfrecord.gz",
   "output_path": "/data/predictions/{run_date}"}

Other runners: put their flags in the `extra_args` param, e.g.
["--direct_running_mode=multi_processing", "--direct_num_workers=4"].
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG, CronDataIntervalTimetable, Param, task
from airflow.providers.standard.operators.python import PythonOperator

from airflow_tfcascade import (TfcascadeReportOperator, TfcascadeRunOperator, input_ready,
                               plan_task)

DAG_ID = "tfcascade_nightly_local"


def setting_param(description: str) -> Param:
  return Param(None, type=["null", "string"], description=description)


with DAG(
    dag_id=DAG_ID,
    # Data intervals: the run at 02:15 on the 26th covers [25th 02:15, 26th 02:15)
    # and its logical date is the 25th, the date it scores. (A plain cron string
    # would be a CronTriggerTimetable on Airflow 3: logical date = the 26th.)
    schedule=CronDataIntervalTimetable("15 2 * * *", timezone="UTC"),
    start_date=datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,          # backfill with `airflow backfill create` (docs/scheduling.md)
    max_active_runs=1,
    params={
        "run_date": Param(None, type=["null", "string"], pattern=r"^\d{4}-\d{2}-\d{2}$",
                          description="YYYY-MM-DD to score; default: the run's logical date"),
        "overwrite": Param(False, type="boolean",
                           description="recompute a date that is already complete"),
        "extra_args": Param([], type="array", items={"type": "string"},
                            description="more `tfcascade run` / Beam flags"),
        "tfcascade_bin": setting_param("overrides the Variable's tfcascade_bin"),
        "config": setting_param("overrides the Variable's config"),
        "input_pattern": setting_param("overrides the Variable's input_pattern"),
        "output_path": setting_param("overrides the Variable's output_path"),
    },
    default_args={"retries": 2, "retry_delay": datetime.timedelta(minutes=10)},
    tags=["tfcascade"],
) as dag:
  plan = PythonOperator(task_id="plan", python_callable=plan_task(DAG_ID, dataflow=False),
                        retries=0)

  @task.sensor(task_id="wait_for_input", mode="reschedule", poke_interval=300,
               timeout=6 * 3600, retries=0)
  def wait_for_input(plan):
    return input_ready(plan)

  score = TfcascadeRunOperator(
      task_id="score",
      plan=plan.output,
      execution_timeout=datetime.timedelta(hours=6),
  )
  # The date's report beside its output, compared with the day before's; a
  # flagged drift fails this task without retry (airflow_tfcascade.py).
  report = TfcascadeReportOperator(
      task_id="report",
      plan=plan.output,
      execution_timeout=datetime.timedelta(minutes=30),
  )
  wait_for_input(plan.output) >> score >> report
