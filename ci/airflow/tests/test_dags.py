"""The example DAGs under real Airflow: they import, and their schedule, params
and settings do what docs/scheduling.md says. No job runs here."""

import copy

import pytest

from conftest import at

DAG_IDS = {"tfcascade_nightly", "tfcascade_nightly_local"}


def test_dag_folder_imports_without_errors(dagbag):
  assert dagbag.import_errors == {}
  assert DAG_IDS <= set(dagbag.dags)
  for dag_id in DAG_IDS:
    dag = dagbag.dags[dag_id]
    assert [t.task_id for t in dag.topological_sort()] == ["plan", "wait_for_input", "score",
                                                           "report"]
    assert dag.max_active_runs == 1
    assert dag.get_task("score").retries == 2      # exit 1 is retried
    assert dag.get_task("report").retries == 2     # but not a drift (AirflowFailException)
    assert dag.get_task("plan").retries == 0       # a settings error is not
    assert dag.get_task("wait_for_input").mode == "reschedule"


@pytest.mark.parametrize("dag_id", sorted(DAG_IDS))
def test_the_0215_run_scores_the_day_before(dagbag, dag_id):
  """CronDataIntervalTimetable: the run starting 2025-06-11 02:15 has logical
  date 2025-06-10 02:15 (the day it scores). A plain cron string would not."""
  from airflow.sdk import CronTriggerTimetable
  from airflow.serialization.encoders import coerce_to_core_timetable
  from airflow.timetables.base import DataInterval, TimeRestriction
  restriction = TimeRestriction(earliest=at(2025, 1, 1), latest=None, catchup=True)
  last = DataInterval(at(2025, 6, 9, 2, 15), at(2025, 6, 10, 2, 15))

  info = coerce_to_core_timetable(dagbag.dags[dag_id].timetable).next_dagrun_info(
      last_automated_data_interval=last, restriction=restriction)
  assert info.run_after == at(2025, 6, 11, 2, 15)
  assert info.logical_date == at(2025, 6, 10, 2, 15)

  # What the DAG had before (schedule="15 2 * * *"): logical date = run time.
  plain = coerce_to_core_timetable(CronTriggerTimetable("15 2 * * *", timezone="UTC"))
  info = plain.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
  assert info.logical_date == info.run_after


def test_params_are_typed(dagbag):
  """`{"overwrite": "false"}` is refused when the run is created; it cannot
  turn into --overwrite."""
  from airflow.sdk.exceptions import ParamValidationError
  for dag_id in DAG_IDS:
    params = dagbag.dags[dag_id].params
    assert params["overwrite"] is False
    for name, bad in (("overwrite", "false"), ("overwrite", "true"),
                      ("run_date", "25.11.2026"), ("extra_args", "--overwrite")):
      merged = copy.deepcopy(params)
      with pytest.raises(ParamValidationError):
        merged[name] = bad
        merged.validate()
    merged = copy.deepcopy(params)
    merged["overwrite"] = True
    merged["run_date"] = "2025-06-10"
    assert merged.validate()["overwrite"] is True


def test_dag_run_with_string_overwrite_is_refused(dagbag):
  from airflow.sdk.exceptions import ParamValidationError
  dag = copy.deepcopy(dagbag.dags["tfcascade_nightly_local"])
  with pytest.raises(ParamValidationError):
    dag.test(logical_date=at(2025, 6, 1), run_conf={"overwrite": "false"})


def test_plan_refuses_placeholders_missing_settings_and_open_days(tmp_path):
  import airflow_tfcascade as tc
  now = at(2025, 6, 20, 9)
  good = {"tfcascade_bin": "/opt/tfcascade/.venv/bin/tfcascade", "config": "/c.yaml",
          "input_pattern": "/in/{run_date}/*.gz", "output_path": "/out/{run_date}"}
  plan = tc.make_plan("d", good, None, at(2025, 6, 10, 2, 15), now)
  assert plan["run_date"] == "2025-06-10"
  assert plan["output_path"] == "/out/2025-06-10"
  assert plan["success_path"] == "/out/2025-06-10/_SUCCESS"
  assert plan["input_pattern"] == "/in/2025-06-10/*.gz"
  assert "--overwrite" not in plan["command"]

  with pytest.raises(tc.PlanError, match="YOUR_BUCKET"):
    tc.make_plan("d", {**good, "output_path": "gs://YOUR_BUCKET/p/{run_date}"}, None,
                 at(2025, 6, 10), now)
  with pytest.raises(tc.PlanError, match=r"(?s)not set: config.*Airflow Variable 'd'"):
    tc.make_plan("d", {**good, "config": None}, None, at(2025, 6, 10), now)
  with pytest.raises(tc.PlanError, match="absolute"):
    tc.make_plan("d", {**good, "output_path": "out/{run_date}"}, None, at(2025, 6, 10), now)
  with pytest.raises(tc.PlanError, match="has not ended"):
    tc.make_plan("d", good, None, at(2025, 6, 20, 2, 15), now)
  with pytest.raises(tc.PlanError, match="no logical date"):
    tc.make_plan("d", good, None, None, now)
  # The Variable fills what the params leave out; params win.
  plan = tc.make_plan("d", {"run_date": "2025-06-01", "output_path": "/p/{run_date}"},
                      good, None, now)
  assert plan["run_date"] == "2025-06-01" and plan["output_path"] == "/p/2025-06-01"
  with pytest.raises(tc.PlanError, match="project, region, temp_location, image"):
    tc.make_plan("d", good, None, at(2025, 6, 10), now, dataflow=True)


def test_exit_codes(tmp_path):
  from airflow_tfcascade import interpret_exit
  assert interpret_exit(0, complete=True, overwrite=False) == "done"
  assert interpret_exit(0, complete=False, overwrite=False) == "retry"
  assert interpret_exit(2, complete=True, overwrite=False) == "done"
  assert interpret_exit(2, complete=False, overwrite=False) == "refused"
  assert interpret_exit(2, complete=True, overwrite=True) == "refused"
  assert interpret_exit(1, complete=False, overwrite=False) == "retry"
  assert interpret_exit(-9, complete=True, overwrite=False) == "retry"


def test_backfill_creates_one_run_per_date(dagbag):
  """`airflow backfill create --from-date D1 --to-date D2` (as in
  docs/scheduling.md): one run per date D1 .. D2-1 (a run's interval must end
  by --to-date)."""
  import os
  import re
  import subprocess
  import sys
  env = dict(os.environ)
  subprocess.run([sys.executable, "-m", "airflow", "dags", "reserialize"], env=env,
                 check=True, capture_output=True)
  done = subprocess.run(
      [sys.executable, "-m", "airflow", "backfill", "create", "--dag-id",
       "tfcascade_nightly_local", "--from-date", "2025-06-01", "--to-date", "2025-06-04",
       "--dry-run"], env=env, capture_output=True, text=True)
  assert done.returncode == 0, done.stdout + done.stderr
  dates = re.findall(r"\| (\d{4}-\d{2}-\d{2}) 02:15:00\+00:00", done.stdout)
  assert dates == ["2025-06-01", "2025-06-02", "2025-06-03"]
