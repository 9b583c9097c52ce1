"""Paths as users name them (issue 20): spaces, brackets and non-ASCII
letters in the input folder, the model folder and the output path.

Beam's FileSystems.match (and delete, on local disk and GCS) read `[...]`,
`*` and `?` as a glob; TensorFlow reads a checkpoint prefix as a glob. Each
folder below has DECOYS beside it -- folders a glob reading of its name
matches (`in v é` for `in [v2] é`) -- holding files that must never be read,
deleted or listed, so a path read as a glob fails the test.

End to end: the CLI on the DirectRunner in-process and in multi_processing
mode, and Spark local mode (a subprocess, as users run it), each checked per
record against the oracle; a rerun with --overwrite replaces the old files.
A model folder with `[...]` is refused with one clear error (TF cannot read
it); `*`, `?`, spaces and non-ASCII are read, and read exactly.
"""

import os
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import tensorflow as tf
from apache_beam.io.filesystem import FileSystem
from apache_beam.io.filesystems import FileSystems

from tfcascade.pipeline.cli import main
from tfcascade.transforms import paths
from tfcascade.transforms.engine import CascadeError
from tfcascade.transforms.engine.checkpoints import read_checkpoint
from tfcascade.transforms.publishing import output_layout as layout
from tests import tiny_models as tm
from tests.jobs import check_against_oracle, make_job, summary_of

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 300


def _touch(path, data=b"x"):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data)
  return str(path)


def _paths(found):
  return sorted(m.path if hasattr(m, "path") else m for m in found)


# --- the helpers, one glob character at a time ------------------------------

@pytest.mark.parametrize("name,decoys", [
    ("a[b]c", ["abc", "a]c"]),      # a class; `]` alone is literal
    ("a*c", ["abc", "aXYc"]),
    ("a?c", ["abc", "aXc"]),
    ("a[!x]c", ["aYc", "a!c"]),     # a negated class
    ("[v2] é ü", ["v é ü", "2 é ü"]),
])
def test_literal_pattern_matches_only_itself_without_warnings(tmp_path, name, decoys):
  for n in [name] + decoys:
    _touch(tmp_path / n / "f")
  target = str(tmp_path / name / "f")
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # re's "Possible nested set" included
    found = FileSystems.match([paths.literal_pattern(target)])[0].metadata_list
    regex = FileSystem.translate_pattern(paths.literal_pattern(target))
  assert _paths(found) == [target]
  for n in decoys:
    assert not re.match(regex, str(tmp_path / n / "f"))


def test_exists_is_literal(tmp_path):
  """FileSystems.exists does not glob (local disk): no escaping there."""
  _touch(tmp_path / "x v" / "f")
  assert not FileSystems.exists(str(tmp_path / "x [v]"))  # a glob would match `x v`
  _touch(tmp_path / "x [v]" / "f")
  assert FileSystems.exists(str(tmp_path / "x [v]"))
  assert FileSystems.exists(str(tmp_path / "x [v]" / "f"))


@pytest.fixture
def out_tree(tmp_path):
  """`out [v2] é` with an output's files, and decoys its name matches as a glob."""
  out = tmp_path / "out [v2] é"
  for root in (out, tmp_path / "out v é", tmp_path / "out 2 é"):
    for rel in ("predictions-00000-of-00002.tfrecord", "predictions-00001-of-00002.tfrecord",
                "run_summary.json", "dead_letter/dead_letter-00000-of-00001.jsonl",
                "_staging/run-1/RUN.json", "_staging/run-1/files/predictions-ab.tfrecord"):
      _touch(root / rel)
  return tmp_path, out


@pytest.mark.parametrize("relative", [False, True])
def test_matches_under_lists_the_literal_folder_only(out_tree, monkeypatch, relative):
  tmp_path, out = out_tree
  if relative:  # Beam's own match of an escaped relative path finds nothing
    monkeypatch.chdir(tmp_path)
    out = out.relative_to(tmp_path)
  d = str(out)
  assert layout.matches_under(d, "predictions-*") == [
      os.path.join(d, "predictions-00000-of-00002.tfrecord"),
      os.path.join(d, "predictions-00001-of-00002.tfrecord")]
  assert layout.matches_under(d, "dead_letter/*") == [
      os.path.join(d, "dead_letter", "dead_letter-00000-of-00001.jsonl")]
  assert layout.matches_under(d, "run_summary.json") == [os.path.join(d, "run_summary.json")]
  assert layout.matches_under(d, "missing.json") == []
  assert len(layout.matches_under(d, "**")) == 6
  assert layout.matches_under(os.path.join(d, "_staging"), "*") == []  # files directly in it
  assert layout.matches_under(os.path.join(d, "nope [x]"), "*") == []
  # A folder without glob characters goes to Beam's match, as before.
  plain = str(tmp_path / "out v é") if not relative else "out v é"
  assert len(layout.matches_under(plain, "predictions-*")) == 2


def test_delete_and_modified_are_literal(out_tree):
  tmp_path, out = out_tree
  def decoys():
    return {os.path.join(d, f): os.path.getmtime(os.path.join(d, f))
            for name in ("out v é", "out 2 é") for d, _, files in os.walk(tmp_path / name)
            for f in files}
  before = decoys()
  summary = str(out / "run_summary.json")
  assert layout.modified_seconds(summary) == pytest.approx(os.path.getmtime(summary))
  assert layout.modified_seconds(str(out / "gone.json")) == 0.0
  layout.delete_tree(str(out / "_staging" / "run-1"))
  layout.delete_paths([str(out / "predictions-00000-of-00002.tfrecord"),
                       str(out / "dead_letter"), str(out / "never-there")])
  assert sorted(os.listdir(out)) == ["_staging", "predictions-00001-of-00002.tfrecord",
                                     "run_summary.json"]
  assert os.listdir(out / "_staging") == []
  paths.delete_literal(str(out))
  assert not out.exists()
  assert decoys() == before and len(before) == 2 * 6  # untouched


def test_input_pattern_rule(tmp_path):
  """docs/reference.md, input.pattern: a leading folder that exists as written
  is that folder; the rest is a glob."""
  d = tmp_path
  mine = [_touch(d / "in [v2]" / f"part-{i}.gz") for i in range(3)]
  for decoy in ("in v", "in 2"):
    _touch(d / decoy / "part-9.gz")
  nested = _touch(d / "in [v2]" / "sub [x]" / "part-5.gz")
  _touch(d / "in [v2]" / "sub x" / "part-6.gz")
  match = lambda p: _paths(paths.match_input(str(d / p)))
  assert match("in [v2]/part-*.gz") == mine                        # rule 3
  assert match("in [v2]/part-[01].gz") == mine[:2]                 # a glob after the folder
  assert match("in [v2]/sub [x]/*.gz") == [nested]                 # the longest literal folder
  assert match("in [v2]/sub [xy]/*.gz") == [str(d / "in [v2]/sub x/part-6.gz")]
  assert match("in [v2]/**.gz") == sorted(mine + [nested, str(d / "in [v2]/sub x/part-6.gz")])
  assert match("in [v2]/part-7.gz") == []
  assert match("in [v2]") == [str(d / "in [v2]")]                  # rule 2 (a folder: as Beam does)
  literal_file = _touch(d / "files" / "part [1].gz")
  _touch(d / "files" / "part 1.gz")
  assert match("files/part [1].gz") == [literal_file]              # rule 2
  decoys = [str(d / "in 2/part-9.gz"), str(d / "in v/part-9.gz")]
  assert match("in [2v]/part-*.gz") == decoys                      # rule 4: no such folder
  assert match("in */part-9.gz") == decoys


# --- what TensorFlow can read ------------------------------------------------

def _kernel(prefix):
  return tf.train.load_checkpoint(prefix).get_tensor("dense/kernel")


@pytest.mark.parametrize("name,decoy", [
    ("m*x", "mAx"), ("m?x", "mBx"), ("é ü", None), ("x[]y", None), ("a*", "a")])
def test_tf_reads_these_prefixes_exactly(tmp_path, name, decoy):
  """`*`, `?`, spaces, non-ASCII (and a `[` that opens no class) are read,
  and the checkpoint read is the literal one, not a decoy the glob matches."""
  tm.save_linear(str(tmp_path / "reference"), seed=1)
  tm.save_linear(str(tmp_path / name), seed=1)
  if decoy:
    tm.save_linear(str(tmp_path / decoy), seed=5)
  os.remove(tmp_path / name / "checkpoint")  # the directory's only *.index: listed, not globbed
  info = read_checkpoint(str(tmp_path / name), "s")
  assert info.prefix == str(tmp_path / name / "model.ckpt-7")
  reference = str(tmp_path / "reference" / "model.ckpt-7")
  np.testing.assert_array_equal(_kernel(info.prefix), _kernel(reference))
  if decoy:
    assert not np.array_equal(_kernel(reference), _kernel(str(tmp_path / decoy / "model.ckpt-7")))

  def logits(prefix):  # Saver.restore: the RestoreV2 op, as the engine restores
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
      saver = tf.compat.v1.train.import_meta_graph(str(tmp_path / "reference" / "model.meta"))
      saver.restore(sess, prefix)
      return sess.run("logits:0", {"input:0": np.ones((2, 64), "float32")})
  np.testing.assert_array_equal(logits(info.prefix), logits(reference))


@pytest.mark.parametrize("name", ["m [v1]", "m-[!a]", "m\\x", "a[b/c]d"])
def test_tf_cannot_read_these_one_clear_error(tmp_path, name):
  tm.save_linear(str(tmp_path / name), seed=1)
  prefix = str(tmp_path / name / "model.ckpt-7")
  with pytest.raises(tf.errors.NotFoundError):  # TF itself, so the check is needed
    tf.train.load_checkpoint(prefix)
  for given in (str(tmp_path / name), prefix, prefix + ".index"):
    with pytest.raises(CascadeError) as e:
      read_checkpoint(given, "a")
    message = str(e.value)
    assert message.startswith(f"stage 'a': TensorFlow cannot read the checkpoint {prefix}: ")
    assert "Rename the folder" in message and "\n" not in message
  # The way out the message gives: a path without them.
  os.symlink(tmp_path / name, tmp_path / "link")
  for given in (tmp_path / "link", tmp_path / "link" / "model.ckpt-7"):
    assert read_checkpoint(str(given), "a").prefix == str(tmp_path / "link" / "model.ckpt-7")


# --- end to end --------------------------------------------------------------

IN, MODELS, OUT = "in [v2] é", "modèles ü", "out [v2] é"


@pytest.fixture(scope="module")
def odd_job(tmp_path_factory):
  """make_job's job, moved into oddly named folders, with decoys: a damaged
  file in each input folder a glob reading of `in [v2] é` matches, and an
  output in each output folder a glob reading of `out [v2] é` matches."""
  made = make_job(tmp_path_factory.mktemp("odd"), n_records=N)
  root = made["root"]
  os.rename(root / "data", root / IN)
  os.rename(root / "models", root / MODELS)
  for decoy in ("in v é", "in 2 é"):
    _touch(root / decoy / "part-9.tfrecord.gz", b"not a TFRecord file at all")
  for decoy in ("out v é", "out 2 é"):
    _touch(root / decoy / "preds" / "predictions-00000-of-00001.tfrecord", b"decoy")
    _touch(root / decoy / "preds" / "_SUCCESS", b"")
  with open(made["config"]) as f:
    text = f.read()
  text = (text.replace("data/part-*", f"{IN}/part-*").replace("models/", f"{MODELS}/")
          .replace("path: out", f"path: {OUT}/preds"))
  with open(made["config"], "w") as f:
    f.write(text)
  return made


def _decoys_untouched(root):
  for decoy in ("out v é", "out 2 é"):
    with open(root / decoy / "preds" / "predictions-00000-of-00001.tfrecord", "rb") as f:
      assert f.read() == b"decoy"


def _check(out, job, shards=None):
  assert (out / "_SUCCESS").exists()
  assert not (out / "_staging").exists()  # deleted under the bracketed path
  names = sorted(os.listdir(out))
  preds = [n for n in names if n.startswith("predictions-")]
  if shards:
    assert preds == [f"predictions-{i:05d}-of-{shards:05d}.tfrecord" for i in range(shards)]
  check_against_oracle(out, job["oracle"])  # every record once (jobs.py escapes the path)
  summary = summary_of(out)
  assert summary["records_read"] == N == summary["records_written"]
  assert summary["records_dead_lettered"] == 0 and not summary.get("files_quarantined")
  assert summary["accounted"]
  _decoys_untouched(job["root"])
  return summary


@pytest.mark.slow
def test_direct_runner_in_process_and_overwrite(odd_job):
  out = odd_job["root"] / OUT / "preds"
  assert main(["run", "--config", odd_job["config"], "--runner=DirectRunner",
               "--set", "output.num_shards=3"]) == 0
  _check(out, odd_job, shards=3)
  old = {n: os.path.getmtime(out / n) for n in os.listdir(out)}
  # A rerun replaces the output: the old files (the delete path) go, under brackets.
  assert main(["run", "--config", odd_job["config"], "--runner=DirectRunner",
               "--set", "output.num_shards=2"]) == 2  # complete: refused without --overwrite
  assert main(["run", "--config", odd_job["config"], "--runner=DirectRunner",
               "--set", "output.num_shards=2", "--overwrite"]) == 0
  _check(out, odd_job, shards=2)
  assert not (out / "predictions-00002-of-00003.tfrecord").exists()
  for name in ("_SUCCESS", "run_summary.json"):
    assert os.path.getmtime(out / name) >= old[name]


@pytest.mark.slow
def test_direct_runner_multi_processing(odd_job):
  out = odd_job["root"] / OUT / "multi"
  assert main(["run", "--config", odd_job["config"], "--runner=DirectRunner",
               "--set", f"output.path={out}",
               "--direct_running_mode=multi_processing", "--direct_num_workers=2"]) == 0
  assert _check(out, odd_job)["metrics"]["sessions_opened"] == 2


def _spark_env():
  """pyspark's Spark, loopback, this venv's Python for the executors (as
  tests/spark/conftest.py sets up); skips, saying so, without pyspark/Java."""
  required = (os.environ.get("TFCASCADE_REQUIRE_SPARK") == "1" or
              os.environ.get("CI", "").lower() in ("1", "true", "yes"))
  try:
    import pyspark  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    reason = f"pyspark is not installed: {e}"
  else:
    if shutil.which("java") or os.environ.get("JAVA_HOME"):
      return dict(os.environ, SPARK_HOME=os.path.dirname(pyspark.__file__),
                  SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable,
                  PYSPARK_DRIVER_PYTHON=sys.executable)
    reason = "no java on PATH and no JAVA_HOME (Spark 4 needs Java 17)"
  if required:
    pytest.fail(f"Spark is required here but: {reason}", pytrace=False)
  pytest.skip(f"Spark NOT tested: {reason}")


@pytest.mark.slow
@pytest.mark.spark
def test_spark_local(odd_job):
  env = _spark_env()
  out = odd_job["root"] / OUT / "spark local[2]"  # Spark's own glob characters too
  cmd = [sys.executable, "-m", "tfcascade", "run", "--config", odd_job["config"],
         "--set", f"output.path={out}", "--engine", "spark", "--master", "local[2]",
         "--spark-conf", "spark.driver.host=127.0.0.1",
         "--spark-conf", "spark.driver.bindAddress=127.0.0.1",
         "--spark-conf", "spark.ui.enabled=false"]
  result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                          errors="replace", timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  assert _check(out, odd_job)["runner"] == "Spark (local[2])"


@pytest.mark.slow
def test_model_folder_tf_cannot_read_is_refused_in_one_line(odd_job, tmp_path):
  """Brackets in the model folder: exit 2 at validation, one line naming the
  path, no traceback, nothing written."""
  root = odd_job["root"]
  shutil.copytree(root / MODELS, tmp_path / "m [v1]")
  out = tmp_path / "never"
  cmd = [sys.executable, "-m", "tfcascade", "run", "--config", odd_job["config"],
         "--set", f"stages.a.checkpoint={tmp_path}/m [v1]/a",
         "--set", f"output.path={out}", "--runner=DirectRunner"]
  result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr + result.stdout
  lines = [l for l in result.stderr.splitlines() if l.startswith("tfcascade:")]
  assert len(lines) == 1, result.stderr
  assert (f"stage 'a': TensorFlow cannot read the checkpoint {tmp_path}/m [v1]/a/model.ckpt-7"
          in lines[0]) and "Rename the folder" in lines[0]
  assert not out.exists()


def test_a_copied_checkpoint_folder_is_read_where_it_is(tmp_path):
  """Savers write absolute paths into `checkpoint`: a folder copied (or
  reached by a symlink) is read from where it is, not from the original."""
  tm.save_linear(str(tmp_path / "original"), seed=1)
  shutil.copytree(tmp_path / "original", tmp_path / "copié")
  tm.save_linear(str(tmp_path / "original"), seed=5)  # the original moves on
  info = read_checkpoint(str(tmp_path / "copié"), "s")
  assert info.prefix == str(tmp_path / "copié" / "model.ckpt-7")
  assert not np.array_equal(_kernel(info.prefix),
                            _kernel(str(tmp_path / "original" / "model.ckpt-7")))
