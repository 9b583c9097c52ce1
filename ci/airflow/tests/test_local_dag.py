"""examples/airflow_local_dag.py under real Airflow, running the REAL demo job
(the project's `tfcascade` CLI, DirectRunner) through dag.test()."""

import copy
import fcntl
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import at, calls, demo_stage_args, run_dag, write_cli

DAG_ID = "tfcascade_nightly_local"
CONFIG = str(Path(__file__).resolve().parents[3] / "configs" / "local.yaml")


@pytest.fixture
def dag(dagbag):
  return dagbag.dags[DAG_ID]


def settings(cli, demo, out_root, input_pattern=None, **more):
  """The run's conf: configs/local.yaml on this demo, output per date."""
  return {"tfcascade_bin": str(cli), "config": CONFIG,
          "input_pattern": input_pattern or f"{demo}/data/part-*.tfrecord.gz",
          "output_path": f"{out_root}/{{run_date}}",
          "extra_args": demo_stage_args(demo), **more}


def outputs(folder: Path):
  return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} if folder.exists() else {}


def test_nightly_run_scores_its_date_then_reruns_are_no_ops(dag, demo, tfcascade, tmp_path,
                                                            monkeypatch):
  cli = write_cli(tmp_path / "tfcascade", tfcascade)
  out = tmp_path / "predictions"
  conf = settings(cli, demo, out)
  # The scheduled run firing 2025-06-11 02:15 (test_dags: its logical date).
  run = run_dag(dag, at(2025, 6, 10, 2, 15), conf)

  assert run.state == "success", run.states
  assert run.states == {"plan": "success", "wait_for_input": "success", "score": "success",
                        "report": "success"}
  assert run.tries["score"] == 1
  assert run.xcom("score") == {"run_date": "2025-06-10", "ran": True, "exit_code": 0}
  day = out / "2025-06-10"
  # The report beside the output; 2025-06-09 was not scored: no comparison.
  assert sorted(p.name for p in out.iterdir()) == ["2025-06-10", "2025-06-10.report.html"]
  assert run.xcom("report") == {"run_date": "2025-06-10", "compared_with": None,
                                "report": f"{day}.report.html"}
  assert calls(cli, "report") == [f"report {day} --out {day}.report.html"]
  assert (day / "_SUCCESS").exists()
  summary = json.loads((day / "run_summary.json").read_text())
  assert summary["records_read"] == 2000
  assert summary["records_read"] == summary["records_written"] + summary["records_dead_lettered"]
  assert len(calls(cli)) == 1 and "run_date=2025-06-10" in calls(cli)[0]
  before = outputs(day)

  # The same date again (a cleared task, a re-triggered run): success, nothing run.
  run = run_dag(dag, at(2025, 6, 10, 2, 15), conf)
  assert run.state == "success" and run.states["score"] == "success"
  assert run.xcom("score") == {"run_date": "2025-06-10", "ran": False, "exit_code": None}
  assert len(calls(cli)) == 1 and outputs(day) == before

  # A manual trigger without a logical date: no crash; it names the date in
  # its conf, here from the Airflow Variable (env form) instead of the conf.
  variable = {k: v for k, v in conf.items()}
  monkeypatch.setenv("AIRFLOW_VAR_" + DAG_ID.upper(), json.dumps(variable))
  run = run_dag(dag, None, {"run_date": "2025-06-10"})
  assert run.state == "success", run.states
  assert run.xcom("plan")["output_path"] == str(day)
  assert run.xcom("score")["ran"] is False and len(calls(cli)) == 1

  # Recompute on purpose: overwrite=true runs the job again.
  run = run_dag(dag, at(2025, 6, 10, 2, 15), {**conf, "overwrite": True})
  assert run.state == "success"
  assert run.xcom("score") == {"run_date": "2025-06-10", "ran": True, "exit_code": 0}
  assert len(calls(cli)) == 2 and "--overwrite" in calls(cli)[1].split()
  assert (day / "_SUCCESS").stat().st_mtime_ns > before["_SUCCESS"]


def test_manual_run_without_a_date_fails_clearly_without_retry(dag, demo, tfcascade, tmp_path):
  cli = write_cli(tmp_path / "tfcascade", tfcascade)
  run = run_dag(dag, None, settings(cli, demo, tmp_path / "out"))
  assert run.state == "failed"
  assert run.states["plan"] == "failed" and run.tries["plan"] == 1
  assert run.states["score"] == "upstream_failed"
  assert "no logical date and no run_date param" in run.log
  assert calls(cli) == []


def test_unset_settings_fail_clearly_without_retry(dag, tmp_path):
  run = run_dag(dag, at(2025, 6, 2), {"output_path": "gs://YOUR_BUCKET/p/{run_date}"})
  assert run.states["plan"] == "failed" and run.tries["plan"] == 1
  assert "not set: tfcascade_bin, config, input_pattern" in run.log
  assert "airflow variables set tfcascade_nightly_local" in run.log


def test_retry_after_a_completed_publish_succeeds_without_rerunning(dag, demo, tfcascade,
                                                                    tmp_path):
  """Attempt 1 publishes the date, then its process is killed (SIGKILL):
  Airflow retries, and the retry finds _SUCCESS instead of failing on exit 2."""
  cli = write_cli(tmp_path / "tfcascade", tfcascade, mode="die_after_publish")
  out = tmp_path / "predictions"
  run = run_dag(dag, at(2025, 6, 3, 2, 15), settings(cli, demo, out))
  assert run.state == "success", run.states
  assert run.states["score"] == "success" and run.tries["score"] == 2
  assert run.xcom("score") == {"run_date": "2025-06-03", "ran": False, "exit_code": None}
  assert len(calls(cli)) == 1
  assert (out / "2025-06-03" / "_SUCCESS").exists()


def test_exit_2_for_a_date_completed_meanwhile_is_success(dag, demo, tfcascade, tmp_path):
  """Another run completes the date between the check and the launch: the
  CLI refuses (exit 2, "already holds a complete run"); _SUCCESS is there, so
  the task succeeds."""
  cli = write_cli(tmp_path / "tfcascade", tfcascade, mode="completed_meanwhile")
  out = tmp_path / "predictions"
  run = run_dag(dag, at(2025, 6, 4, 2, 15), settings(cli, demo, out))
  assert run.state == "success", run.states
  assert run.tries["score"] == 1
  assert run.xcom("score") == {"run_date": "2025-06-04", "ran": True, "exit_code": 2}
  assert (out / "2025-06-04" / "_SUCCESS").exists()


def test_no_input_fails_without_retry(dag, demo, tfcascade, tmp_path):
  """No input for the date: wait_for_input times out and fails the run (no
  retries); the job is never launched."""
  cli = write_cli(tmp_path / "tfcascade", tfcascade)
  conf = settings(cli, demo, tmp_path / "out", input_pattern=f"{tmp_path}/in/{{run_date}}/*.gz")
  run = run_dag(dag, at(2025, 6, 5, 2, 15), conf)
  assert run.state == "failed"
  assert run.states["wait_for_input"] == "failed" and run.tries["wait_for_input"] == 1
  assert run.states["score"] == "upstream_failed"
  assert calls(cli) == []
  assert f"nothing matches {tmp_path}/in/2025-06-05/*.gz" in run.log


def test_refused_run_fails_without_retry(dag, demo, tfcascade, tmp_path):
  """The CLI refuses (exit 2, no _SUCCESS): its input pattern matches
  nothing (the input vanished after the wait). Failed at once, not retried."""
  cli = write_cli(tmp_path / "tfcascade", tfcascade)
  conf = settings(cli, demo, tmp_path / "out")
  conf["extra_args"] = conf["extra_args"] + [f"--set=input.pattern={tmp_path}/gone/*.gz"]
  run = run_dag(dag, at(2025, 6, 6, 2, 15), conf)
  assert run.state == "failed"
  assert run.states["score"] == "failed" and run.tries["score"] == 1
  assert len(calls(cli)) == 1
  assert "tfcascade refused the run (exit 2), not retrying" in run.log
  assert "input.pattern matches no file" in run.log
  assert not (tmp_path / "out" / "2025-06-06" / "_SUCCESS").exists()


def test_failed_run_is_retried(dag, demo, tfcascade, tmp_path):
  """Exit 1 (a model re-exported by a training job after the run was planned:
  running again can succeed): Airflow retries, every attempt runs the job
  again; here every attempt meets a new export, so the date stays incomplete."""
  models = tmp_path / "models"
  shutil.copytree(demo / "models", models)
  cli = write_cli(tmp_path / "tfcascade", tfcascade, mode="model_retrained",
                  meta=str(models / "a" / "model.meta"))
  conf = settings(cli, demo, tmp_path / "out")
  conf["extra_args"] = conf["extra_args"] + [
      f"--set=stages.a.checkpoint={models}/a", f"--set=stages.a.meta_graph={models}/a/model.meta"]
  run = run_dag(dag, at(2025, 6, 7, 2, 15), conf)
  assert run.state == "failed"
  assert run.states["score"] == "failed" and run.tries["score"] == 3   # 1 + retries=2
  assert len(calls(cli)) == 3
  assert "tfcascade run failed (exit 1)" in run.log
  assert "ModelChangedError" in run.log and f"{models}/a/model.meta" in run.log
  assert not (tmp_path / "out" / "2025-06-07" / "_SUCCESS").exists()


def test_corrupt_input_fails_without_retry(dag, demo, tfcascade, tmp_path):
  """Exit 2 after reading (a truncated input file, on_corrupt: fail): the data
  must be fixed, so the task fails at once, not retried."""
  bad = tmp_path / "in"
  bad.mkdir()
  good, damaged = sorted((demo / "data").glob("part-*"))
  (bad / good.name).write_bytes(good.read_bytes())
  (bad / damaged.name).write_bytes(damaged.read_bytes()[:50_000])
  cli = write_cli(tmp_path / "tfcascade", tfcascade)
  conf = settings(cli, demo, tmp_path / "out", input_pattern=f"{bad}/part-*.tfrecord.gz")
  run = run_dag(dag, at(2025, 6, 18, 2, 15), conf)
  assert run.state == "failed"
  assert run.states["score"] == "failed" and run.tries["score"] == 1
  assert "tfcascade refused the run (exit 2), not retrying" in run.log
  assert str(bad / damaged.name) in run.log
  assert not (tmp_path / "out" / "2025-06-18" / "_SUCCESS").exists()


def test_retry_waits_for_a_previous_attempt_still_running(dag, demo, tfcascade, tmp_path):
  """An earlier attempt's `tfcascade` process outlived its task (it holds the
  date's lock): the new attempt waits for it, then finds the date complete
  and does not run a second job beside it."""
  import airflow_tfcascade as tc
  cli = write_cli(tmp_path / "tfcascade", tfcascade)
  out = tmp_path / "predictions"
  conf = settings(cli, demo, out)
  plan = tc.make_plan(DAG_ID, conf, None, at(2025, 6, 8, 2, 15), at(2025, 6, 20))
  lock = tc.lock_file(dag.get_task("score").lock_dir, plan["output_path"])
  os.makedirs(os.path.dirname(lock), exist_ok=True)
  fd = os.open(lock, os.O_RDWR | os.O_CREAT)
  fcntl.flock(fd, fcntl.LOCK_EX)
  # (It starts its job 10 s late, so the new attempt surely meets it running.)
  orphan = subprocess.Popen(["bash", "-c", 'sleep 10; exec "$@"', "orphan", *plan["command"]],
                            pass_fds=(fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  os.close(fd)   # now only the orphan holds the lock, as after a lost worker
  ended = {}
  threading.Thread(target=lambda: ended.update(rc=orphan.wait(), at=time.time()),
                   daemon=True).start()

  run = run_dag(dag, at(2025, 6, 8, 2, 15), conf)
  assert ended["rc"] == 0
  assert run.state == "success", run.states
  assert run.starts["score"].timestamp() < ended["at"] <= run.ends["score"].timestamp()
  assert run.xcom("score") == {"run_date": "2025-06-08", "ran": False, "exit_code": None}
  assert len(calls(cli)) == 1      # the orphan's run only
  assert (out / "2025-06-08" / "_SUCCESS").exists()


def test_killing_the_task_stops_the_whole_job(dag, tmp_path):
  """on_kill (task timeout, "mark failed"): the job's process group gets
  SIGTERM, and the attempt ends as a retryable failure."""
  import airflow_tfcascade as tc
  from airflow.sdk.exceptions import AirflowException, AirflowFailException
  score = copy.deepcopy(dag.get_task("score"))
  score.plan = tc.make_plan(DAG_ID, settings("/bin/true", tmp_path, tmp_path / "out"), None,
                            at(2025, 6, 9, 2, 15), at(2025, 6, 20))
  child = tmp_path / "child.pid"
  score.plan["command"] = ["bash", "-c", f"sleep 300 & echo $! > {child}; wait"]
  outcome = {}

  def execute():
    try:
      score.execute(context={})
    except AirflowException as e:
      outcome["error"] = e
  thread = threading.Thread(target=execute)
  thread.start()
  deadline = time.time() + 30
  while not child.exists() or not child.read_text().strip():
    assert time.time() < deadline
    time.sleep(0.1)
  score.on_kill()
  thread.join(30)
  error = outcome["error"]
  assert not isinstance(error, AirflowFailException)         # retried
  assert "killed by signal 15" in str(error)
  assert _ends(int(child.read_text()))                         # the job's own child too


def _ends(pid, within_s=10.0):
  """The process has exited (gone, or a zombie nobody reaped yet)."""
  deadline = time.time() + within_s
  while time.time() < deadline:
    try:
      with open(f"/proc/{pid}/stat") as f:
        if f.read().rsplit(")", 1)[1].split()[0] == "Z":
          return True
    except FileNotFoundError:
      return True
    time.sleep(0.1)
  return False


def test_report_compares_with_the_day_before_and_drift_fails_without_retry(
    dag, demo, tfcascade, tmp_path):
  """The real CLI end to end: day 1 scored, day 2 the same data (compared,
  no drift), day 3 washed-out data (`tfcascade demo --shift`): the report
  flags drift, the task fails at once (no retry) and the HTML stays beside
  the output for whoever looks."""
  shifted = tmp_path / "shifted"
  shutil.copytree(demo, shifted)   # same models and seed: only the data is rewritten
  done = subprocess.run([tfcascade, "demo", "--out", str(shifted), "--records", "2000",
                         "--shards", "2", "--shift", "0.3"], capture_output=True, text=True)
  assert done.returncode == 0 and "data rewritten" in done.stdout, done.stdout + done.stderr
  inputs = tmp_path / "in"
  for day, source in (("2025-06-21", demo), ("2025-06-22", demo), ("2025-06-23", shifted)):
    shutil.copytree(source / "data", inputs / day)
  cli = write_cli(tmp_path / "tfcascade", tfcascade)
  out = tmp_path / "predictions"
  conf = settings(cli, demo, out, input_pattern=f"{inputs}/{{run_date}}/part-*.tfrecord.gz")

  first = run_dag(dag, at(2025, 6, 21, 2, 15), conf)
  assert first.state == "success", first.states
  assert first.xcom("report")["compared_with"] is None
  second = run_dag(dag, at(2025, 6, 22, 2, 15), conf)
  assert second.state == "success", second.states
  assert second.xcom("report")["compared_with"] == str(out / "2025-06-21")
  assert "0 drift row(s) flagged" in second.log

  third = run_dag(dag, at(2025, 6, 23, 2, 15), conf)
  assert third.state == "failed"
  assert third.states["score"] == "success" and (out / "2025-06-23" / "_SUCCESS").exists()
  assert third.states["report"] == "failed" and third.tries["report"] == 1   # no retry
  assert f"drift against {out / '2025-06-22'}, not retrying" in third.log
  assert "tfcascade: drift: gate pass share b" in third.log
  page = (out / "2025-06-23.report.html").read_text()
  assert "DRIFT:" in page and str(out / "2025-06-22") in page
