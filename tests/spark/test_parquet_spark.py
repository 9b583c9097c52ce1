"""`output.format: parquet` on `--engine spark` (issue 23): the job written
by Spark local mode as TFRecord and as Parquet, the Parquet read back by
Spark itself (`spark.read.parquet` on the published files' glob), every
value equal to the TFRecord output's, which is checked against the oracle.

The runs go through the CLI in a subprocess (one SparkContext per process);
the reading SparkSession is the embedded local one."""

import subprocess
import sys

import pytest

from tests.jobs import check_against_oracle, make_job, read_predictions_independently, summary_of
from tests.spark.test_spark_engine import REPO, assert_quiet, cli_env
from tests.test_parquet_output import assert_same_rows

pytestmark = pytest.mark.spark
MASTER = "local[2]"
# What Spark makes of each column (transforms/writing/parquet_columns.py).
SPARK_TYPES = {"id": "binary", "pixels": "array<float>", "a/logits": "array<float>",
               "a/confidence": "float", "b/probs": "array<float>", "b/ran": "boolean"}


@pytest.fixture(scope="module")
def job(tmp_path_factory):
  return make_job(tmp_path_factory.mktemp("sparkparquet"))


def _spark_run(job, out, env, output_format):
  cmd = [sys.executable, "-m", "tfcascade", "run", "--config", job["config"],
         "--set", f"output.path={out}", "--set", f"output.format={output_format}",
         "--set", "output.passthrough=[id, pixels]", "--engine", "spark", "--master", MASTER,
         "--spark-conf", "spark.driver.host=127.0.0.1",
         "--spark-conf", "spark.driver.bindAddress=127.0.0.1",
         "--spark-conf", "spark.ui.enabled=false"]
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                        errors="replace", timeout=900)


def test_spark_reads_the_parquet_spark_wrote_with_the_tfrecord_values(
    job, tmp_path, spark_env, spark_local_session):
  env = cli_env(spark_env)
  outs = {fmt: tmp_path / fmt for fmt in ("tfrecord", "parquet")}
  for fmt, out in outs.items():
    result = _spark_run(job, out, env, fmt)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_quiet(result.stderr)
    assert (out / "_SUCCESS").exists()
  check_against_oracle(outs["tfrecord"], job["oracle"])
  summary = summary_of(outs["parquet"])
  assert summary["runner"] == f"Spark ({MASTER})" and summary["output_format"] == "parquet"
  assert summary["records_read"] == summary["records_written"] == len(job["oracle"])
  frame = spark_local_session.read.parquet(str(outs["parquet"] / "predictions-*.parquet"))
  assert dict(frame.dtypes) == SPARK_TYPES
  rows = [row.asDict() for row in frame.collect()]
  assert len(rows) == len(job["oracle"])
  assert_same_rows(rows, read_predictions_independently(outs["tfrecord"]))
  # Spark SQL on the column names as written.
  ran = frame.where("`b/ran`").count()
  assert ran == summary["stages"]["b"]["rows_run"] > 0
