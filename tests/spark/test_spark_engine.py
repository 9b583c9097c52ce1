"""`tfcascade run --engine spark`: the same job as the Beam one, on embedded
Spark and on the real 2-worker standalone cluster; a lost executor that
Spark retries, after which every record is still published exactly once;
and (issue 21) a master that cannot work said in one line with the right exit
code, no TF start-up lines or Java traces without --verbose, and Ctrl-C.

The Spark runs go through the CLI in a subprocess (one SparkContext per
process; this is also how users run it)."""

import glob
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
import tensorflow as tf

from tfcascade.pipeline.cli import main
from tests.jobs import check_against_oracle, make_job, summary_of
from tests import tiny_models as tm

pytestmark = pytest.mark.spark
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Records that do not parse, a damaged file under quarantine: the dead-letter
# and quarantine paths must agree too.
JOB_OVERRIDES = ["--set", "input.on_corrupt=quarantine",
                 "--set", "dead_letter.max_fraction=0.05"]
# What a Spark run must not print without --verbose: TF's start-up lines (its
# Python workers), Spark's log4j records and notices, Java stack traces.
NOISE = ("oneDNN", "cpu_feature_guard", "This TensorFlow binary", "absl::InitializeLog",
         "cudart_stub", " WARN ", "log4j", "\tat ", "Traceback", "Exception while sending")


def assert_quiet(stderr):
  assert not [n for n in NOISE if n in stderr], stderr[-3000:]


def cli_env(spark_env):
  """The CLI's environment: Spark's, and no TF_CPP_MIN_LOG_LEVEL (which an
  in-process `main` set here, and which would say the user chose TF's log)."""
  env = dict(os.environ, **spark_env)
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  return env


@pytest.fixture(scope="module")
def job(tmp_path_factory):
  made = make_job(tmp_path_factory.mktemp("sparkjob"), n_records=1500)
  data = made["root"] / "data"
  with tf.io.TFRecordWriter(str(data / "part-3.tfrecord.gz"), "GZIP") as w:
    w.write(made["examples"][0][:-3])  # truncated proto: does not parse
    w.write(b"not an Example")
    w.write(tm.make_examples(tf.zeros([1, 64]).numpy(), [b"zero"])[0])
  framed = open(str(data / "part-0.tfrecord.gz"), "rb").read()
  with gzip.open(data / "part-4.tfrecord.gz", "wb") as f:  # damaged after 2 records
    raw = gzip.decompress(framed)
    cut = 2 * 16 + sum(len(e) for e in made["examples"][0:6:3])  # shard 0 = examples[0::3]
    f.write(raw[:cut] + b"\xff" * 40)
  return made


def _spark_cli(job, out, master, env, *extra):
  cmd = [sys.executable, "-m", "tfcascade", "run", "--config", job["config"],
         "--set", f"output.path={out}", *JOB_OVERRIDES, "--engine", "spark",
         "--master", master, "--spark-conf", "spark.driver.host=127.0.0.1",
         "--spark-conf", "spark.driver.bindAddress=127.0.0.1",
         "--spark-conf", "spark.ui.enabled=false", *extra]
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, errors="replace",
                        timeout=900)


def _contents(out):
  """Everything a consumer reads, in a form that ignores file boundaries."""
  # A multiset of rows: the damaged part-4 repeats part-0's first records,
  # so an id is not a key (and its two copies, scored in batches of other
  # sizes, may differ in the last bits).
  rows = []
  for path in glob.glob(str(out / "predictions-*")):
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
      feature = tf.train.Example.FromString(record).features.feature
      rows.append(repr(sorted((name, list(getattr(f, f.WhichOneof("kind")).value))
                              for name, f in feature.items())))
  rows.sort()
  dead = sorted(json.dumps(json.loads(line), sort_keys=True)
                for path in glob.glob(str(out / "dead_letter" / "*.jsonl"))
                for line in open(path))
  summary = summary_of(out)
  counts = {k: summary[k] for k in ("records_read", "records_written",
                                    "records_dead_lettered", "files_quarantined",
                                    "dead_letter_reasons", "accounted")}
  counts["stages"] = {s: (v["rows_in"], v["rows_run"]) for s, v in summary["stages"].items()}
  return rows, dead, counts


def test_spark_output_equals_the_direct_runners(job, tmp_path, spark_env, spark_cluster):
  beam_out = tmp_path / "beam"
  assert main(["run", "--config", job["config"], "--set", f"output.path={beam_out}",
               *JOB_OVERRIDES, "--runner=DirectRunner"]) == 0
  expected = _contents(beam_out)
  assert expected[2]["records_dead_lettered"] == 2 and expected[2]["files_quarantined"]
  assert len(expected[0]) == expected[2]["records_written"] == 1503  # 1501 ids, 2 twice
  env = cli_env(spark_env)
  for master in ("local[2]", spark_cluster):
    # A plain folder name here; paths with brackets: tests/test_paths_as_named.py.
    out = tmp_path / "".join(c if c.isalnum() else "_" for c in master)
    result = _spark_cli(job, out, master, env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_quiet(result.stderr)
    assert (out / "_SUCCESS").exists()
    assert _contents(out) == expected, master  # every record, every feature
    summary = summary_of(out)
    assert summary["runner"] == f"Spark ({master})"
    # One session per Python worker: at most one per task, fewer with reuse.
    assert 1 <= summary["metrics"]["sessions_opened"] <= summary["metrics"]["tasks"]


@pytest.fixture(scope="module")
def big_job(tmp_path_factory):
  """12 uncompressed shards: 12 tasks, long enough to lose an executor."""
  made = make_job(tmp_path_factory.mktemp("sparkbig"), n_records=12000)
  for shard in range(12):
    with tf.io.TFRecordWriter(str(made["root"] / "data" / f"u-{shard:02d}.tfrecord")) as w:
      for record in made["examples"][shard::12]:
        w.write(record)
  return made


def _executors():
  return [p for p in psutil.process_iter(["cmdline"])
          if "org.apache.spark.executor.CoarseGrainedExecutorBackend"
          in " ".join(p.info["cmdline"] or [])]


def test_a_lost_executor_is_retried_and_every_record_published_once(
    big_job, tmp_path, spark_env, spark_cluster):
  out = tmp_path / "out"
  cmd = [sys.executable, "-m", "tfcascade", "run", "--config", big_job["config"],
         "--set", f"output.path={out}",
         "--set", f"input.pattern={big_job['root']}/data/u-*.tfrecord",
         "--set", "batch_size=50", "--engine", "spark", "--master", spark_cluster,
         "--spark-conf", "spark.driver.host=127.0.0.1",
         "--spark-conf", "spark.driver.bindAddress=127.0.0.1",
         "--spark-conf", "spark.ui.enabled=false",
         "--spark-conf", "spark.task.maxFailures=4",
         "--verbose"]  # Spark's own report of the lost executor, on stderr
  proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, **spark_env),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          errors="replace")
  deadline = time.time() + 300
  staged = []
  while time.time() < deadline and proc.poll() is None and not staged:
    staged = [p for p in glob.glob(str(out / "_staging" / "*" / "files" / "predictions-*"))
              if os.path.exists(p) and os.path.getsize(p) > 0]
    time.sleep(0.05)
  assert staged and proc.poll() is None, "no task was caught writing"
  executors = _executors()
  assert len(executors) == 2, executors  # both busy: 12 tasks on 2 executors
  executors[0].send_signal(signal.SIGKILL)  # the JVM; its Python workers go with it
  stdout, stderr = proc.communicate(timeout=600)
  assert proc.returncode == 0, stderr[-3000:]
  assert "lost" in stderr.lower(), "Spark reported no lost task or executor"
  check_against_oracle(out, big_job["oracle"])  # every record exactly once
  summary = summary_of(out)
  assert (summary["records_read"], summary["records_written"]) == (12000, 12000)
  assert not (out / "_staging").exists()  # the lost attempt's files went too
  assert "records read 12,000, written 12,000" in stdout


def test_a_master_spark_cannot_parse_is_refused_in_one_line(job, tmp_path, spark_env, capfd):
  del spark_env  # pyspark installed: the master is what is refused
  out = tmp_path / "out"
  assert main(["run", "--config", job["config"], "--set", f"output.path={out}",
               "--engine", "spark", "--master", "bogus"]) == 2
  err = capfd.readouterr().err
  assert err.splitlines() == [
      "tfcascade: error: --master 'bogus': not a Spark master URL; expected local, local[N], "
      "local[*], local[N,F], spark://HOST:PORT[,HOST:PORT...], yarn or k8s://[https://]HOST:PORT"]
  assert not out.exists()


def test_an_unreachable_master_fails_in_seconds_in_one_line(job, tmp_path, spark_env, capfd):
  del spark_env
  with socket.socket() as s:  # a port nothing listens on
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  out = tmp_path / "out"
  start = time.monotonic()
  assert main(["run", "--config", job["config"], "--set", f"output.path={out}",
               "--engine", "spark", "--master", f"spark://127.0.0.1:{port}"]) == 1
  # Spark itself retries registering for a minute (3 x 20 s), then fails.
  assert time.monotonic() - start < 50
  err = [l for l in capfd.readouterr().err.splitlines() if " INFO " not in l]
  assert err == [f"tfcascade: run FAILED: the Spark master spark://127.0.0.1:{port} does not "
                 f"answer (127.0.0.1:{port}: Connection refused (ECONNREFUSED)); nothing was "
                 f"started, retry once the cluster is up"]
  assert not out.exists()  # nothing staged: a retry starts clean


def test_ctrl_c_ends_a_spark_run_which_a_rerun_resumes(big_job, tmp_path, spark_env):
  out = tmp_path / "out"
  # 6 shards, one task each on one core, a row per batch (~1 s a task):
  # Ctrl-C once the first committed lands while the others still run.
  cmd = [sys.executable, "-m", "tfcascade", "run", "--config", big_job["config"],
         "--set", f"output.path={out}", "--set", "batch_size=1",
         "--set", f"input.pattern={big_job['root']}/data/u-0[0-5].tfrecord",
         "--engine", "spark", "--master", "local[1]", "--spark-conf", "spark.ui.enabled=false"]
  env = cli_env(spark_env)
  # Its own process group, as a shell's foreground job: Ctrl-C reaches the
  # launcher, Spark's JVM and its Python workers alike.
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, errors="replace",
                          start_new_session=True)
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None and not glob.glob(
      str(out / "_staging" / "*" / "units" / "*.json")):
    time.sleep(0.05)
  assert proc.poll() is None, ("the run ended before a unit committed",
                               proc.communicate()[1][-3000:])
  os.killpg(proc.pid, signal.SIGINT)
  _, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 130, stderr[-3000:]
  assert stderr.splitlines()[-1] == "tfcascade: interrupted", stderr[-3000:]
  assert_quiet(stderr)
  rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                         errors="replace", timeout=600)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert "resuming run " in rerun.stdout, rerun.stdout
  assert_quiet(rerun.stderr)
  ids = big_job["ids"]
  check_against_oracle(out, {ids[i]: big_job["oracle"][ids[i]]  # shard k: examples[k::12]
                             for i in range(len(ids)) if i % 12 < 6})
