"""`output.format: parquet` (issue 23, part 1), on the Beam engines.

The same job is written as TFRecord and as Parquet, and every value of
every row of the Parquet output, read back with pyarrow, pandas and DuckDB,
equals the TFRecord output's (read with the independent `tfrecord`
package; that output is checked against the oracle). The job's stages
cover the column types: float32 lists and scalars (a, b), and a builder
stage c with int64, int32 lists, float64, bool, float16, bytes and a [2, 3]
output, gated, with a fill value; passthrough features of every declared
dtype and a [2, 3] shape; two bad records dead-lettered. Then:
output.num_shards merging into full row groups, a killed run resumed,
--overwrite, a run with no rows, `inspect` accuracy, the config's checks,
the writer's row groups and a full disk.

Spark (`spark.read.parquet`) is in tests/spark/test_parquet_spark.py.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from tests import tiny_models as tm
from tests.jobs import (ENGINES, check_against_oracle, make_job,
                        read_predictions_independently, summary_of)
from tests.test_disk_full import small_disk
from tfcascade.pipeline.cli import main
from tfcascade.pipeline.config import ConfigError, load_config
from tfcascade.transforms.writing import parquet_writer
from tfcascade.transforms.writing.parquet_columns import encode_parquet
from tfcascade.transforms.writing.parquet_writer import ParquetShardWriter
from tfcascade.transforms.writing.shard_writer import OutputWriteError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARDS, PER_SHARD = 4, 150
RECORDS = SHARDS * PER_SHARD
CLASS_NAMES = [f"class-{i}".encode() for i in range(10)]
FLOAT_LIST = pa.list_(pa.field("element", pa.float32(), nullable=False), 10)
# Every column of the job's Parquet output, in order, with its exact type.
SCHEMA = [
    ("id", pa.binary()), ("label", pa.int64()),
    ("pixels", pa.list_(pa.field("element", pa.float32(), nullable=False), 64)),
    ("patch", pa.list_(pa.field("element", pa.float32(), nullable=False), 6)),
    ("a/logits", FLOAT_LIST), ("a/confidence", pa.float32()),
    ("b/probs", FLOAT_LIST), ("b/ran", pa.bool_()),
    ("c/prediction", pa.int64()),
    ("c/top2", pa.list_(pa.field("element", pa.int32(), nullable=False), 2)),
    ("c/score64", pa.float64()), ("c/positive", pa.bool_()),
    ("c/grid", pa.list_(pa.field("element", pa.float32(), nullable=False), 6)),
    ("c/half", pa.list_(pa.field("element", pa.float32(), nullable=False), 2)),
    ("c/name", pa.binary()), ("c/ran", pa.bool_()),
    # The final answer: c is the only stage with a `prediction`.
    ("final/prediction", pa.int64()), ("final/stage", pa.int64()),
]
DUCKDB_TYPES = {"id": "BLOB", "label": "BIGINT", "pixels": "FLOAT[]", "patch": "FLOAT[]",
                "a/logits": "FLOAT[]", "a/confidence": "FLOAT", "b/probs": "FLOAT[]",
                "b/ran": "BOOLEAN", "c/prediction": "BIGINT", "c/top2": "INTEGER[]",
                "c/score64": "DOUBLE", "c/positive": "BOOLEAN", "c/grid": "FLOAT[]",
                "c/half": "FLOAT[]", "c/name": "BLOB", "c/ran": "BOOLEAN",
                "final/prediction": "BIGINT", "final/stage": "BIGINT"}
PANDAS_SCALAR_DTYPES = {"id": "object", "label": "int64", "a/confidence": "float32",
                        "b/ran": "bool", "c/prediction": "int64", "c/score64": "float64",
                        "c/positive": "bool", "c/name": "object", "c/ran": "bool",
                        "final/prediction": "int64", "final/stage": "int64"}


def typed_outputs(inputs):
  """Stage c's builder: tiny_models.linear_builder's logits as outputs of
  many dtypes and shapes (its checkpoint: tiny_models.save_builder_checkpoint)."""
  logits = tm.linear_builder(inputs)["logits"]
  prediction = tf.argmax(logits, axis=1)
  return {"prediction": prediction,
          "top2": tf.math.top_k(logits, 2).indices,
          "score64": tf.cast(tf.reduce_max(tf.nn.softmax(logits), axis=1), tf.float64),
          "positive": logits[:, 0] > 0,
          "grid": tf.reshape(logits[:, :6], [-1, 2, 3]),
          "half": tf.cast(logits[:, :2], tf.float16),
          "name": tf.gather(tf.constant(CLASS_NAMES), prediction)}


def _examples(n, seed=0):
  rng = np.random.default_rng(seed)
  pixels = rng.normal(size=(n, 64)).astype("float32")
  labels = rng.integers(0, 10, n)
  patches = rng.normal(size=(n, 6)).astype("float32")
  out = []
  for i in range(n):
    feature = {
        "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"rec-{i:05d}".encode()])),
        "pixels": tf.train.Feature(float_list=tf.train.FloatList(value=pixels[i])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[labels[i]])),
        "patch": tf.train.Feature(float_list=tf.train.FloatList(value=patches[i]))}
    out.append(tf.train.Example(features=tf.train.Features(feature=feature))
               .SerializeToString())
  return out


CONFIG = """\
input:
  pattern: data/part-*.tfrecord.gz
  features:
    id: {dtype: string}
    pixels: {dtype: float32, shape: [64]}
    label: {dtype: int64}
    patch: {dtype: float32, shape: [2, 3]}
stages:
  - name: a
    checkpoint: models/a
    meta_graph: models/a/model.meta
    inputs: {"input:0": features.pixels}
    outputs: {logits: "logits:0", confidence: "confidence:0"}
  - name: b
    checkpoint: models/b
    meta_graph: models/b/model.meta
    inputs: {"input:0": a.logits, "pixels:0": features.pixels}
    outputs: {probs: "probs:0"}
    run_if: "a.confidence < 0.99"
  - name: c
    checkpoint: models/c
    builder: "tests.test_parquet_output:typed_outputs"
    inputs: {pixels: features.pixels}
    outputs: {prediction: prediction, top2: top2, score64: score64, positive: positive,
              grid: grid, half: half, name: name}
    run_if: "a.confidence < 0.95"
    fill_value: -1
output:
  path: out
  passthrough: [id, label, pixels, patch]
batch_size: 64
dead_letter: {max_fraction: 0.05}
"""


@pytest.fixture(scope="module")
def job(tmp_path_factory):
  """The typed job, written as TFRecord and as Parquet by the in-process
  DirectRunner (its builder stage is imported from this module)."""
  root = tmp_path_factory.mktemp("parquet")
  tm.save_linear(str(root / "models/a"), seed=1)
  tm.save_two_input(str(root / "models/b"), seed=2)
  tm.save_builder_checkpoint(str(root / "models/c"))
  examples = _examples(RECORDS)
  os.makedirs(root / "data")
  for shard in range(SHARDS):
    with tf.io.TFRecordWriter(str(root / f"data/part-{shard}.tfrecord.gz"), "GZIP") as w:
      for e in examples[shard::SHARDS]:
        w.write(e)
  with tf.io.TFRecordWriter(str(root / "data/part-bad.tfrecord.gz"), "GZIP") as w:
    w.write(b"not an Example")
    w.write(examples[0][:-3])  # cut short: does not parse
  config = root / "job.yaml"
  config.write_text(CONFIG)
  made = {"root": root, "config": str(config)}
  for fmt in ("tfrecord", "parquet"):
    assert _run(made, root / fmt, f"output.format={fmt}") == 0
  return made


def _run(job, out, *sets, flags=()):
  return main(["run", "--config", job["config"], f"--set=output.path={out}",
               *[f"--set={s}" for s in sets], "--runner=DirectRunner", *flags])


def _parquet_files(out):
  return sorted(glob.glob(glob.escape(str(out)) + "/predictions-*.parquet"))


def _plain(value):
  """A Parquet value as the TFRecord reader gives it: a flat list of ints,
  float32s or text (bool -> int, float64/float16 -> float32, bytes -> text)."""
  values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
  out = []
  for v in values:
    if isinstance(v, (bytes, bytearray)):
      out.append(bytes(v).decode())
    elif isinstance(v, (bool, np.bool_)):
      out.append(int(v))
    elif isinstance(v, (float, np.floating)):
      out.append(float(np.float32(v)))
    else:
      out.append(int(v))
  return out


def assert_same_rows(parquet_rows, tfrecord_rows, exact=True):
  """Every Parquet row (column -> value) equals the TFRecord row of its id,
  each id once, no column missing on either side."""
  by_id = {row["id"]: row for row in tfrecord_rows}
  seen = set()
  for row in parquet_rows:
    rid = _plain(row["id"])[0]
    assert rid not in seen, rid
    seen.add(rid)
    want = by_id[rid]
    assert set(row) == set(want), (sorted(row), sorted(want))
    for name, value in row.items():
      if name == "id":
        continue
      got, wanted = _plain(value), want[name]
      wanted = [wanted] if isinstance(wanted, str) else list(wanted)  # one bytes value: text
      if exact or not isinstance(got[0], float):
        assert got == wanted, (rid, name, got, wanted)
      else:
        np.testing.assert_allclose(got, wanted, rtol=1e-4, atol=1e-5, err_msg=name)
  assert seen == set(by_id)


def _pyarrow_rows(out):
  return pa.concat_tables([pq.read_table(f) for f in _parquet_files(out)]).to_pylist()


def _pandas_rows(out):
  frame = pd.concat([pd.read_parquet(f) for f in _parquet_files(out)])
  return frame.to_dict("records")


def _duckdb_rows(out):
  relation = duckdb.sql(f"SELECT * FROM '{out}/predictions-*.parquet'")
  return [dict(zip(relation.columns, row)) for row in relation.fetchall()]


# --- the same job, as TFRecord and as Parquet ---------------------------------------

@pytest.mark.parametrize("reader", [_pyarrow_rows, _pandas_rows, _duckdb_rows],
                         ids=["pyarrow", "pandas", "duckdb"])
def test_every_value_equals_the_tfrecord_outputs(job, reader):
  tfrecord = read_predictions_independently(job["root"] / "tfrecord")
  rows = reader(job["root"] / "parquet")
  assert len(rows) == RECORDS
  assert_same_rows(rows, tfrecord)


def test_the_tfrecord_output_compared_with_is_right(job):
  """The reference is itself right: stages a and b against each model alone."""
  examples = _examples(RECORDS)
  pixels = np.array([tf.train.Example.FromString(e).features.feature["pixels"].float_list.value
                     for e in examples], dtype="float32")
  ids = [f"rec-{i:05d}".encode() for i in range(RECORDS)]
  a = tm.oracle_meta_graph(str(job["root"] / "models/a"), {"input:0": pixels},
                           {"logits": "logits:0", "confidence": "confidence:0"})
  b = tm.oracle_meta_graph(str(job["root"] / "models/b"),
                           {"input:0": a["logits"], "pixels:0": pixels}, "probs:0")
  oracle = {ids[i]: {"a/logits": a["logits"][i], "a/confidence": a["confidence"][i],
                     "b/probs": b[i], "b/ran": int(a["confidence"][i] < 0.99)}
            for i in range(RECORDS)}
  check_against_oracle(job["root"] / "tfrecord", oracle)


def test_every_column_has_its_type_in_pyarrow_duckdb_and_pandas(job):
  out = job["root"] / "parquet"
  for path in _parquet_files(out):
    schema = pq.read_schema(path)
    assert [(f.name, f.type) for f in schema] == SCHEMA, schema
    assert not any(f.nullable for f in schema)
    assert json.loads(schema.field("patch").metadata[b"shape"]) == [2, 3]
    assert json.loads(schema.field("c/grid").metadata[b"shape"]) == [2, 3]
    assert schema.field("a/logits").metadata is None  # rank 1: the list says it all
  described = duckdb.sql(f"DESCRIBE SELECT * FROM '{out}/predictions-*.parquet'").fetchall()
  assert {name: kind for name, kind, *_ in described} == DUCKDB_TYPES
  frame = pd.read_parquet(_parquet_files(out)[0])
  assert {k: str(frame[k].dtype) for k in PANDAS_SCALAR_DTYPES} == PANDAS_SCALAR_DTYPES
  assert frame["a/logits"].iloc[0].dtype == np.float32 and len(frame["a/logits"].iloc[0]) == 10


def test_a_gated_stage_has_a_bool_ran_column_and_its_fill_values(job):
  rows = _pyarrow_rows(job["root"] / "parquet")
  ran = [r for r in rows if r["c/ran"]]
  skipped = [r for r in rows if not r["c/ran"]]
  assert ran and skipped
  for row in rows:
    assert row["c/ran"] == (row["a/confidence"] < 0.95)
    assert row["b/ran"] == (row["a/confidence"] < 0.99)
  for row in skipped:  # fill_value -1 in each output's own type
    assert row["c/prediction"] == -1 and row["c/top2"] == [-1, -1]
    assert row["c/score64"] == -1.0 and row["c/grid"] == [-1.0] * 6
    assert row["c/half"] == [-1.0, -1.0] and row["c/name"] == b""
    assert row["c/positive"] is True  # bool(-1)
  for row in ran:  # the model's own values, which agree with each other
    assert row["c/top2"][0] == row["c/prediction"] != row["c/top2"][1]
    assert row["c/name"] == CLASS_NAMES[row["c/prediction"]]
    assert row["c/positive"] == (row["c/grid"][0] > 0)
    assert row["c/half"] == [float(np.float16(v)) for v in row["c/grid"][:2]]
    assert 0.1 <= row["c/score64"] <= 1.0
  for row in (r for r in rows if not r["b/ran"]):
    assert row["b/probs"] == [0.0] * 10
  for row in rows:  # the final answer: c's (stage 2) where it ran, else none (-1)
    assert row["final/stage"] == (2 if row["c/ran"] else -1)
    assert row["final/prediction"] == row["c/prediction"]


def test_accounting_and_dead_letters_are_the_same_as_tfrecords(job):
  parquet, tfrecord = summary_of(job["root"] / "parquet"), summary_of(job["root"] / "tfrecord")
  assert parquet["output_format"] == "parquet"
  assert parquet["records_read"] == RECORDS + 2
  assert parquet["records_written"] == RECORDS
  assert parquet["records_dead_lettered"] == 2 and parquet["accounted"]
  for key in ("records_read", "records_written", "records_dead_lettered",
              "dead_letter_reasons", "stages"):
    assert parquet[key] == tfrecord[key], key
  assert (job["root"] / "parquet" / "_SUCCESS").exists()
  dead = glob.glob(str(job["root"] / "parquet" / "dead_letter" / "dead_letter-*.jsonl"))
  assert sum(1 for path in dead for _ in open(path)) == 2
  # One file per unit (4 shards; the bad file's unit wrote no rows), snappy.
  files = _parquet_files(job["root"] / "parquet")
  assert len(files) == SHARDS
  for path in files:
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 1 and meta.num_rows == PER_SHARD
    assert meta.row_group(0).column(0).compression == "SNAPPY"


def test_inspect_reports_the_same_accuracy_as_for_tfrecord(job, capsys):
  blocks = []
  for fmt in ("tfrecord", "parquet"):
    assert main(["inspect", str(job["root"] / fmt)]) == 0
    out = capsys.readouterr().out
    blocks.append(out[out.index("accuracy against 'label'"):])
  assert blocks[0] == blocks[1]
  assert f"on {RECORDS:,} rows" in blocks[1] and "stage c: ran on" in blocks[1]
  assert main(["inspect", str(job["root"] / "parquet"), "--label", "id"]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("tfcascade: error: --label id: feature 'id' of the output ")
  assert "is string, not int64" in err and "\n" not in err


# --- merging, overwriting, no rows ------------------------------------------------------

def test_num_shards_merges_units_into_full_row_groups_with_their_codec(job, tmp_path):
  out = tmp_path / "merged"
  assert _run(job, out, "output.format=parquet", "output.num_shards=2",
              "output.compression=zstd") == 0
  files = _parquet_files(out)
  assert [os.path.basename(f) for f in files] == [
      "predictions-00000-of-00002.parquet", "predictions-00001-of-00002.parquet"]
  for path in files:
    meta = pq.ParquetFile(path).metadata
    # Two units' rows in one row group: re-gathered, not copied group by group.
    assert meta.num_row_groups == 1 and meta.num_rows == 2 * PER_SHARD
    assert meta.row_group(0).column(0).compression == "ZSTD"
  assert summary_of(out)["records_written"] == RECORDS
  assert_same_rows(_pyarrow_rows(out), read_predictions_independently(job["root"] / "tfrecord"))


def test_overwrite_replaces_every_file_of_the_previous_output(job, tmp_path):
  out = tmp_path / "out"
  assert _run(job, out, "output.format=tfrecord") == 0
  assert _run(job, out, "output.format=parquet") == 2  # complete: refused
  assert glob.glob(str(out / "predictions-*.tfrecord"))
  assert _run(job, out, "output.format=parquet", "output.num_shards=1",
              flags=["--overwrite"]) == 0
  assert sorted(os.listdir(out)) == ["_SUCCESS", "dead_letter",
                                     "predictions-00000-of-00001.parquet",
                                     "run_metrics.json", "run_summary.json"]
  assert len(_pyarrow_rows(out)) == RECORDS


def test_a_run_with_no_rows_publishes_no_parquet_file(job, tmp_path):
  empty = tmp_path / "empty.tfrecord.gz"
  with tf.io.TFRecordWriter(str(empty), "GZIP"):
    pass
  out = tmp_path / "out"
  assert _run(job, out, "output.format=parquet", f"input.pattern={empty}") == 0
  assert (out / "_SUCCESS").exists() and not _parquet_files(out)
  assert summary_of(out)["records_written"] == 0


# --- a killed run resumes (multi_processing) -----------------------------------------------

KILL_UNITS, KILL_RECORDS = 24, 7200


@pytest.fixture(scope="module")
def long_job(tmp_path_factory):
  """tests/jobs.py's job, its records in ONE uncompressed file read as
  KILL_UNITS byte ranges (units), and its TFRecord output from one
  uninterrupted run, checked against the oracle."""
  made = make_job(tmp_path_factory.mktemp("parquet-resume"), n_records=KILL_RECORDS)
  one_file = made["root"] / "all.tfrecord"
  with tf.io.TFRecordWriter(str(one_file)) as w:
    for record in made["examples"]:
      w.write(record)
  made["sets"] = [f"input.pattern={one_file}", "batch_size=100",
                  f"input.split_bytes={os.path.getsize(one_file) // KILL_UNITS + 1}"]
  made["reference"] = made["root"] / "reference"
  assert _run(made, made["reference"], *made["sets"]) == 0
  check_against_oracle(made["reference"], made["oracle"])
  return made


def _cli(job, out, engine):
  sets = [f"--set={s}" for s in job["sets"] + ["output.format=parquet"]]
  return ([sys.executable, "-m", "tfcascade", "run", "--config", job["config"],
           f"--set=output.path={out}", *sets] + ENGINES[engine])


@pytest.mark.slow
def test_a_killed_run_resumes_into_an_exact_parquet_output(long_job, tmp_path):
  out = tmp_path / "out"
  committed = lambda: glob.glob(str(out / "_staging" / "*" / "units" / "*.json"))  # noqa: E731
  proc = subprocess.Popen(_cli(long_job, out, "multi_processing"), cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None and \
      len(committed()) < 0.6 * KILL_UNITS:
    time.sleep(0.01)
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()
  done = len(committed())
  assert not (out / "_SUCCESS").exists(), "the run finished before it could be killed"
  assert 0 < done < KILL_UNITS
  result = subprocess.run(_cli(long_job, out, "multi_processing"), cwd=REPO,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "resuming run" in result.stdout, result.stdout
  summary = summary_of(out)
  # The committed units' records (a range holds KILL_RECORDS / KILL_UNITS, +-1).
  assert abs(summary["records_resumed"] - done * KILL_RECORDS // KILL_UNITS) <= done
  assert summary["records_read"] == summary["records_written"] == KILL_RECORDS
  assert len(_parquet_files(out)) == KILL_UNITS and not (out / "_staging").exists()
  # Every record once; the reference ran in another process layout, so
  # floats may differ in the last bits (as against the oracle).
  assert_same_rows(_pyarrow_rows(out), read_predictions_independently(long_job["reference"]),
                   exact=False)


# --- the config ------------------------------------------------------------------------------

def _config(job, *sets):
  return load_config(job["config"], [f"output.{s}" for s in sets])


def test_parquet_compresses_with_snappy_unless_told(job):
  assert _config(job, "format=parquet").output.compression == "snappy"
  for codec in parquet_writer.PARQUET_CODECS:
    assert _config(job, "format=parquet", f"compression={codec}").output.compression == codec
  assert _config(job).output.compression == "none"  # tfrecord: as before


@pytest.mark.parametrize("sets, message", [
    (["compression=zstd"], "output: compression 'zstd' is a Parquet codec; format "
                           "tfrecord takes none or gzip"),
    (["format=parquet", "passthrough=[id, extra]"],
     "output.passthrough 'extra': format parquet writes declared features only"),
])
def test_what_parquet_cannot_write_is_refused_naming_the_key(job, sets, message):
  with pytest.raises(ConfigError) as raised:
    _config(job, *sets)
  assert message in str(raised.value)


def test_an_optional_passthrough_feature_is_refused_with_parquet(tmp_path, capsys):
  config = tmp_path / "job.yaml"
  config.write_text(CONFIG.replace("label: {dtype: int64}", "label: {dtype: int64, default: 0}"))
  assert main(["validate", "--config", str(config), "--set=output.format=parquet"]) == 2
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and err.startswith("tfcascade: error: ")
  assert "output.passthrough 'label': format parquet writes required features only" in err


# --- the writer ------------------------------------------------------------------------------

def _columns(rows, start=0, width=10):
  return {"id": np.array([f"r{i}".encode() for i in range(start, start + rows)], dtype=object),
          "a/logits": np.full((rows, width), start, dtype=np.float32)}


def _write(writer, columns):
  """What a unit does with a scored batch: encode it, hand it to the writer."""
  records, batch = encode_parquet(columns, len(columns["id"]), None)
  writer.write(batch, records)


def test_row_groups_hold_row_group_rows_or_row_group_bytes(tmp_path, monkeypatch):
  monkeypatch.setattr(parquet_writer, "ROW_GROUP_ROWS", 1000)
  writer = ParquetShardWriter(str(tmp_path), "predictions", "snappy")
  for i in range(10):
    _write(writer, _columns(300, 300 * i))
  written = writer.close()
  assert written.records == 3000
  meta = pq.ParquetFile(written.path).metadata
  assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1000] * 3
  assert pq.read_table(written.path).column("id").to_pylist() == [
      f"r{i}".encode() for i in range(3000)]
  # Wide rows: the byte cap ends a row group first (here after 3 batches).
  one_batch = encode_parquet(_columns(300), 300, None)[1].nbytes
  monkeypatch.setattr(parquet_writer, "ROW_GROUP_BYTES", int(2.5 * one_batch))
  writer = ParquetShardWriter(str(tmp_path), "predictions", "none")
  for i in range(10):
    _write(writer, _columns(300, 300 * i))
  meta = pq.ParquetFile(writer.close().path).metadata
  assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [900] * 3 + [300]


def test_a_batch_of_another_shape_is_refused_naming_the_column(tmp_path):
  writer = ParquetShardWriter(str(tmp_path), "predictions", "snappy")
  _write(writer, _columns(5))
  with pytest.raises(ValueError, match=r"column 'a/logits' is fixed_size_list<element: float not "
                                       r"null>\[11\] here, .*\[10\] before; .* format tfrecord "
                                       r"or jsonl"):
    _write(writer, _columns(1, width=11))


def test_a_full_disk_names_the_parquet_file_and_frees_its_bytes(tmp_path):
  with small_disk(tmp_path / "disk", "256k") as disk:
    writer = ParquetShardWriter(str(disk / "files"), "predictions", "none")
    noise = np.random.default_rng(0).random((4096, 64), dtype=np.float32)  # 1 MiB
    with pytest.raises(OutputWriteError) as raised:
      for _ in range(4):
        _write(writer, {"id": np.array([b"r"] * 4096, dtype=object), "a/logits": noise})
      writer.close()
    message = str(raised.value)
    assert "\n" not in message and f"the staged output file {writer.path} failed: " in message
    assert "No space left on device (ENOSPC)" in message
    assert not os.path.exists(writer.path)
    assert writer.close() is None
