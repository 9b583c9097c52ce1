"""Long runs you can trust (issue 20), through the CLI on the DirectRunner
in-process, DirectRunner multi_processing and Spark local:

- a run killed at about 60% leaves its committed units; the rerun adopts them
  (records_resumed > 0) and the output is exact against the oracle;
- killed, then a model changed: nothing is reused; killed, then one input
  file changed: only that file's units are scored again;
- killed during publish: the next run finishes the publish and exits 0;
- models pinned at launch: a checkpoint rewritten in place after planning
  fails the run naming the stage, file and both fingerprints; a NEW
  checkpoint written into the model directory after planning is not used
  (the run restores the planned one, the summary names it);
- an input file changed after planning fails the run naming it;
- progress lines with an ETA reach the user from every engine.
"""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from tests import tiny_models as tm
from tests.jobs import ENGINES, check_against_oracle, make_job, summary_of
from tfcascade.pipeline import run_plan
from tfcascade.pipeline.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARDS = 24
RECORDS = 7200


@pytest.fixture(scope="module")
def job(tmp_path_factory):
  """The tiny real job, its records in SHARDS gzip files (SHARDS units)."""
  made = make_job(tmp_path_factory.mktemp("longruns"), n_records=RECORDS)
  data = made["root"] / "data"
  for path in glob.glob(str(data / "*")):
    os.remove(path)
  for shard in range(SHARDS):
    with tf.io.TFRecordWriter(str(data / f"part-{shard:02d}.tfrecord.gz"), "GZIP") as w:
      for record in made["examples"][shard::SHARDS]:
        w.write(record)
  return made


def _env():
  return dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable,
              PYSPARK_DRIVER_PYTHON=sys.executable, TFCASCADE_PROGRESS_S="0.5")


def _cmd(job, out, engine, *extra):
  return ([sys.executable, "-m", "tfcascade", "run", "--config", job["config"],
           "--set", f"output.path={out}", "--set", "batch_size=100"]
          + list(extra) + ENGINES[engine])


def _run(job, out, engine, *extra):
  return subprocess.run(_cmd(job, out, engine, *extra), cwd=REPO, env=_env(),
                        capture_output=True, text=True, timeout=600)


def _committed(out):
  return glob.glob(str(out / "_staging" / "*" / "units" / "*.json"))


def _kill_at(job, out, engine, share=0.6):
  """Starts the run and SIGKILLs its whole process group once `share` of the
  units are committed; returns how many were."""
  proc = subprocess.Popen(_cmd(job, out, engine), cwd=REPO, env=_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
  deadline = time.time() + 300
  done = 0
  while time.time() < deadline and proc.poll() is None:
    done = len(_committed(out))
    if done >= share * SHARDS:
      break
    time.sleep(0.01)
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()
  assert not (out / "_SUCCESS").exists(), "the run finished before it could be killed"
  assert 0 < done < SHARDS, done
  return len(_committed(out))


@pytest.mark.slow
@pytest.mark.parametrize("engine", list(ENGINES))
def test_a_killed_run_resumes_with_an_exact_output(job, tmp_path, engine):
  out = tmp_path / "out"
  committed = _kill_at(job, out, engine)
  result = _run(job, out, engine)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "resuming run" in result.stdout, result.stdout
  summary = summary_of(out)
  assert summary["records_read"] == summary["records_written"] == RECORDS
  # Every committed unit was reused (one shard each), and only those.
  assert summary["records_resumed"] == committed * (RECORDS // SHARDS)
  check_against_oracle(out, job["oracle"])  # every record once, exact
  assert not (out / "_staging").exists()
  assert "progress:" in result.stderr and "ETA" in result.stderr, result.stderr[-2000:]


@pytest.mark.slow
def test_no_resume_starts_fresh(job, tmp_path):
  out = tmp_path / "out"
  _kill_at(job, out, "direct")
  result = _run(job, out, "direct", "--no-resume")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "resuming" not in result.stdout
  assert summary_of(out)["records_resumed"] == 0
  check_against_oracle(out, job["oracle"])


@pytest.mark.slow
def test_after_a_model_change_nothing_is_reused(job, tmp_path):
  out = tmp_path / "out"
  _kill_at(job, out, "direct")
  # The same weights under a new checkpoint prefix: the models' pin differs.
  models = tmp_path / "models_b"
  shutil.copytree(job["root"] / "models" / "b", models)
  result = _run(job, out, "direct", "--set", f"stages.b.checkpoint={models}",
                "--set", f"stages.b.meta_graph={models}/model.meta")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "not resuming run" in result.stdout and "model" in result.stdout, result.stdout
  assert summary_of(out)["records_resumed"] == 0
  check_against_oracle(out, job["oracle"])


@pytest.mark.slow
def test_after_an_input_change_that_files_units_are_scored_again(job, tmp_path):
  root = tmp_path / "job"
  shutil.copytree(job["root"], root)
  config = str(root / "job.yaml")
  local = dict(job, config=config)
  out = tmp_path / "out"
  _kill_at(local, out, "direct")
  units = [json.load(open(p)) for p in _committed(out)]
  changed = units[0]["range"][0]  # a file whose unit was committed
  os.utime(changed, (time.time() + 5, time.time() + 5))  # same bytes, new mtime
  result = _run(local, out, "direct")
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"input file {changed} changed" in result.stdout, result.stdout
  summary = summary_of(out)
  assert summary["records_resumed"] == (len(units) - 1) * (RECORDS // SHARDS)
  check_against_oracle(out, job["oracle"])


@pytest.mark.slow
def test_a_run_killed_during_publish_is_finished_by_the_next(job, tmp_path, monkeypatch):
  """The publish dies after writing its journal, before moving a file: the
  next run of the same job finishes that publish and exits 0."""
  from tfcascade.transforms.publishing import finalize  # pylint: disable=import-outside-toplevel

  def die(run, journal):
    raise RuntimeError("killed while publishing")

  out = tmp_path / "out"
  monkeypatch.setattr(finalize, "apply_journal", die)
  assert main(["run", "--config", job["config"], "--set", f"output.path={out}",
               "--set", "batch_size=100", "--runner=DirectRunner"]) == 1
  monkeypatch.undo()
  assert len(glob.glob(str(out / "_staging" / "*" / "PUBLISH.json"))) == 1
  assert not (out / "_SUCCESS").exists()
  result = _run(job, out, "direct")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "its interrupted publish was finished" in result.stdout, result.stdout
  check_against_oracle(out, job["oracle"])


def _spark_env(monkeypatch):
  """What an in-process Spark driver needs (loopback, this venv's Python)."""
  for key, value in _env().items():
    if key.startswith(("SPARK", "PYSPARK")):
      monkeypatch.setenv(key, value)


def _rewrite_after_planning(monkeypatch, change):
  """Runs `change()` right after the launcher planned (and pinned) the run,
  as a training job writing next door would."""
  original = run_plan.preflight

  def planned_then_changed(config):
    pre = original(config)
    change()
    return pre

  monkeypatch.setattr(run_plan, "preflight", planned_then_changed)


@pytest.mark.parametrize("engine", ["direct", "multi_processing", "spark"])
def test_a_checkpoint_rewritten_in_place_fails_the_run(job, tmp_path, monkeypatch,
                                                       capsys, engine):
  root = tmp_path / "job"
  shutil.copytree(job["root"], root)
  other = tmp_path / "other"
  tm.save_linear(str(other), seed=99)  # same prefix name: model.ckpt-7

  def overwrite():
    for path in glob.glob(str(other / "model.ckpt-7.*")):
      shutil.copy(path, root / "models" / "a" / os.path.basename(path))

  _rewrite_after_planning(monkeypatch, overwrite)
  _spark_env(monkeypatch)
  out = tmp_path / "out"
  assert main(["run", "--config", str(root / "job.yaml"), "--set", f"output.path={out}"]
              + ENGINES[engine]) == 1
  err = capsys.readouterr().err
  line = [l for l in err.splitlines() if "run FAILED" in l][0]
  assert "stage 'a': model file" in line and "model.ckpt-7.index changed" in line, line
  assert line.count("sha256:") == 2
  assert not (out / "_SUCCESS").exists()


@pytest.mark.parametrize("engine", list(ENGINES))
def test_a_new_checkpoint_in_the_directory_is_not_used(job, tmp_path, monkeypatch, engine):
  """The config names the directory; a newer checkpoint lands there after
  planning: every worker restores the planned one."""
  root = tmp_path / "job"
  shutil.copytree(job["root"], root)
  newer = tmp_path / "newer"
  tm.save_linear(str(newer), seed=99, global_step=8)

  def training_writes_a_new_checkpoint():
    for path in glob.glob(str(newer / "model.ckpt-8.*")):
      shutil.copy(path, root / "models" / "a")
    shutil.copy(newer / "checkpoint", root / "models" / "a" / "checkpoint")

  _rewrite_after_planning(monkeypatch, training_writes_a_new_checkpoint)
  _spark_env(monkeypatch)
  out = tmp_path / "out"
  assert main(["run", "--config", str(root / "job.yaml"), "--set", f"output.path={out}"]
              + ENGINES[engine]) == 0
  check_against_oracle(out, job["oracle"])  # the old model's values
  stage = summary_of(out)["stages"]["a"]
  assert stage["checkpoint"].endswith("model.ckpt-7")
  assert list(stage["model_files"]) == [stage["checkpoint"] + ".index",
                                        str(root / "models" / "a" / "model.meta")]


@pytest.mark.parametrize("engine", list(ENGINES))
def test_an_input_file_changed_after_planning_fails_the_run(job, tmp_path, monkeypatch,
                                                            capsys, engine):
  root = tmp_path / "job"
  shutil.copytree(job["root"], root)
  victim = root / "data" / "part-05.tfrecord.gz"

  def append():
    with open(victim, "ab") as f:
      f.write(open(root / "data" / "part-06.tfrecord.gz", "rb").read())

  _rewrite_after_planning(monkeypatch, append)
  _spark_env(monkeypatch)
  out = tmp_path / "out"
  assert main(["run", "--config", str(root / "job.yaml"), "--set", f"output.path={out}"]
              + ENGINES[engine]) == 1
  line = [l for l in capsys.readouterr().err.splitlines() if "run FAILED" in l][0]
  assert f"input file {victim} changed after the launcher planned the run" in line, line
  assert not (out / "_SUCCESS").exists()
