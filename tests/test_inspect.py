"""`tfcascade inspect` on every model source (issue 14, part 2) and on the
outputs of real runs (issue 21).

A SavedModel (Keras 3 export, TF1 export), a `.meta` file, a checkpoint
directory or prefix (and one whose .data file is cut short), TFRecord files,
and paths that are none of these. The `stages:` entry `inspect` prints for a
model is pasted into a config (in another directory, with --relative-to)
and must validate as is. Outputs of the demo job: accuracy from TFRecord and
JSONL predictions against the demo's own numbers, a 0-row output, a --label
that is no int64 feature, a failed run and a killed one shown with why.
"""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf
import yaml

from tfcascade.pipeline import inspection
from tfcascade.pipeline.cli import main
from tfcascade.pipeline.inspection import EXPECTED
from tfcascade.pipeline.inspection.output_dir_info import cascade_report
from tests import tiny_models as tm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  root = tmp_path_factory.mktemp("inspect")
  keras = tm.save_keras_models(str(root / "keras"))
  pixels = np.random.default_rng(0).normal(size=(20, 64)).astype("float32")
  data = str(root / "data.tfrecord")
  with tf.io.TFRecordWriter(data) as w:
    for e in tm.make_examples(pixels):
      w.write(e)
  return {"root": root, "keras_a": keras["a"], "keras_b": keras["b"],
          "linear": tm.save_linear(str(root / "models" / "a"), seed=1),
          "tf1": tm.save_tf1_saved_model(str(root / "tf1_export"), seed=2),
          "data": data}


def _inspect(path, capsys, *flags):
  code = main(["inspect", str(path), *flags])
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def _stage_entry(out: str) -> dict:
  """The `stages:` entry inspect printed, parsed as YAML."""
  lines = out.splitlines()
  start = next(i for i, l in enumerate(lines) if l.strip().startswith("stages: entry"))
  body = []
  for line in lines[start + 1:]:
    if body and not line.startswith("    "):
      break
    body.append(line)
  entries = yaml.safe_load(textwrap.dedent("\n".join(body)))
  assert isinstance(entries, list) and len(entries) == 1, body
  return entries[0]


def test_keras_export(models, capsys):
  code, out, _ = _inspect(models["keras_a"], capsys)
  assert code == 0, out
  assert f"SavedModel {models['keras_a']}" in out
  assert "tags ['serve']" in out
  assert "signature 'serving_default'" in out and "signature 'serve'" in out
  # Each key with dtype, shape and tensor name.
  assert any(l.split()[:3] == ["pixels", "float32", "[-1,"] and
             l.split()[-1] == "serving_default_pixels:0" for l in out.splitlines()), out
  assert any(l.split()[:2] == ["output_0", "float32"] and "[-1, 10]" in l
             for l in out.splitlines()), out
  assert any(l.split()[:2] == ["output_1", "float32"] and "[-1]" in l
             for l in out.splitlines()), out
  assert ("reads 4 of the 8 variables its saver restores (the other 4 are "
          "byte-identical copies of those)") in out
  assert "object-based, restored by the SavedModel's own saver" in out
  entry = _stage_entry(out)
  assert entry == {"name": "keras_a", "saved_model": models["keras_a"],
                   "inputs": {"pixels": "features.pixels"},
                   "outputs": {"output_0": "output_0", "output_1": "output_1"}}


def test_saved_model_pb_file_means_its_directory(models, capsys):
  code, out, _ = _inspect(os.path.join(models["keras_b"], "saved_model.pb"), capsys)
  assert code == 0
  assert f"SavedModel {models['keras_b']}" in out
  entry = _stage_entry(out)
  assert entry["inputs"] == {"a_probs": "features.a_probs", "pixels": "features.pixels"}


def test_pasted_stage_entries_validate(models, capsys, tmp_path):
  """The entries inspect prints for both Keras exports, pasted into a config
  (only the wiring of B's first input edited), validate as they are."""
  _, out_a, _ = _inspect(models["keras_a"], capsys)
  _, out_b, _ = _inspect(models["keras_b"], capsys)
  a, b = _stage_entry(out_a), _stage_entry(out_b)
  a["name"], b["name"] = "a", "b"
  b["inputs"]["a_probs"] = "a.output_0"
  config = {"input": {"pattern": models["data"],
                      "features": {"pixels": {"dtype": "float32", "shape": [64]}}},
            "stages": [a, b], "output": {"path": str(tmp_path / "out")}}
  path = tmp_path / "pasted.yaml"
  path.write_text(yaml.safe_dump(config))
  assert main(["validate", "--config", str(path), "--sample", "3"]) == 0
  assert "config OK" in capsys.readouterr().out


def test_tf1_saved_model(models, capsys):
  code, out, _ = _inspect(models["tf1"], capsys)
  assert code == 0
  assert "name-based (TF1), restored by name" in out
  entry = _stage_entry(out)
  assert entry["inputs"] == {"pixels": "features.pixels"}
  assert entry["outputs"] == {"confidence": "confidence", "logits": "logits"}


def test_checkpoint_directory_with_its_meta_graph(models, capsys):
  code, out, _ = _inspect(models["linear"], capsys)
  assert code == 0
  assert "checkpoint " in out and "fingerprint sha256:" in out and "global_step 7" in out
  assert "dense/kernel" in out and "[64, 10]" in out
  # The directory's model.meta is described too: inputs, outputs, an entry.
  assert "candidate inputs (placeholders):" in out
  assert any(l.split()[:3] == ["input:0", "float32", "[-1,"] for l in out.splitlines())
  outputs = [l.split()[0] for l in out.split("likely outputs")[1].splitlines()[1:]
             if l.startswith("    ") and ":0" in l.split()[0]]
  assert outputs == ["logits:0", "confidence:0"], out
  entry = _stage_entry(out)
  assert entry == {"name": "a", "meta_graph": os.path.join(models["linear"], "model.meta"),
                   "checkpoint": models["linear"], "inputs": {"input:0": "features.input"},
                   "outputs": {"logits": "logits:0", "confidence": "confidence:0"}}


def test_meta_file_and_checkpoint_prefix_and_index_file(models, capsys):
  code, out, _ = _inspect(os.path.join(models["linear"], "model.meta"), capsys)
  assert code == 0 and out.startswith("meta graph ")
  prefix = tf.train.latest_checkpoint(models["linear"])
  for path in (prefix, prefix + ".index"):
    code, out, _ = _inspect(path, capsys)
    assert code == 0 and out.startswith(f"checkpoint {prefix}"), out


def test_tfrecord_file(models, capsys):
  code, out, _ = _inspect(models["data"], capsys)
  assert code == 0
  assert "1 file(s), 20 records" in out
  assert "pixels: {dtype: float32, shape: [64]}" in out


@pytest.mark.parametrize("make,found", [
    (lambda d: d / "nothing-here", "no such file or directory"),
    (lambda d: _write(d / "picture.png", b"\x89PNG\r\n\x1a\n" + bytes(64)),
     "is not a TFRecord file (length CRC mismatch at its first record; it looks "
     "like a PNG image)"),
    (lambda d: _write(d / "model.keras", b"PK\x03\x04" + bytes(64)),
     "a zip archive (a Keras .keras file? export it with model.export(DIR)"),
    (lambda d: _write(d / "notes.txt", b"hello world\n" * 4),
     "it looks like a text file (starting 'hello world')"),
    (lambda d: _write(d / "junk" / "a.png", b"\x89PNG") and d / "junk",
     "a directory holding a.png"),
    (lambda d: _write(d / "text.meta", b"hello world\n"),
     "is not a MetaGraphDef (.meta file)"),
])
def test_a_path_that_is_none_of_these_is_one_line(tmp_path, capsys, make, found):
  path = make(tmp_path)
  code, out, err = _inspect(path, capsys)
  assert code == 2 and out == ""
  lines = err.strip().splitlines()
  assert len(lines) == 1, err
  assert str(path) in lines[0] and found in lines[0], lines[0]
  if "MetaGraphDef" not in found:
    assert EXPECTED in lines[0]


def _write(path, data):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data)
  return path


@pytest.mark.parametrize("make,found", [
    (lambda d: _write(d / "out" / "run_summary.json", b"{not json") and d / "out",
     "run_summary.json is not JSON"),
    (lambda d: _write(d / "out" / "run_summary.json", b'{"a": 1}') and d / "out",
     "run_summary.json is not a tfcascade run summary"),
    (lambda d: _write(d / "out" / "predictions-00000-of-00001.jsonl", b"{not json\n")
     and d / "out", "predictions-00000-of-00001.jsonl line 1: not a JSON object"),
])
def test_a_damaged_output_is_one_line(tmp_path, capsys, make, found):
  path = make(tmp_path)
  code, out, err = _inspect(path, capsys)
  assert code == 2 and out == ""
  lines = err.strip().splitlines()
  assert len(lines) == 1 and str(path) in lines[0] and found in lines[0], err


def test_a_truncated_checkpoint_is_one_line_naming_its_data_file(tmp_path, capsys):
  model = tm.save_linear(str(tmp_path / "a"), seed=1)
  prefix = tf.train.latest_checkpoint(model)
  data = glob.glob(prefix + ".data-*")[0]
  with open(data, "r+b") as f:
    f.truncate(100)
  for path in (model, prefix, data):
    code, out, err = _inspect(path, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1, err
    assert data in lines[0] and "truncated" in lines[0], lines[0]


def test_relative_to_makes_the_entry_paste_ready_for_a_config_elsewhere(models, tmp_path):
  """Printed relative to configs/, the entries (a .meta and a SavedModel)
  pasted into configs/job.yaml validate; printed as given, the hint says
  where the paths are from."""
  configs = tmp_path / "configs"
  configs.mkdir()
  text = inspection.describe(models["linear"], relative_to=str(configs))
  a = _stage_entry(text)
  assert a["checkpoint"] == os.path.relpath(models["linear"], configs)
  assert a["meta_graph"] == os.path.join(a["checkpoint"], "model.meta")
  assert f"# paths relative to {configs}: paste into a config kept there" in text
  b = _stage_entry(inspection.describe(models["tf1"], relative_to=str(configs)))
  assert b["saved_model"] == os.path.relpath(models["tf1"], configs)
  a["inputs"] = {"input:0": "features.pixels"}
  a["name"], b["name"] = "a", "b"
  config = {"input": {"pattern": os.path.relpath(models["data"], configs),
                      "features": {"pixels": {"dtype": "float32", "shape": [64]}}},
            "stages": [a, b], "output": {"path": "out"}}
  (configs / "job.yaml").write_text(yaml.safe_dump(config))
  assert main(["validate", "--config", str(configs / "job.yaml"), "--sample", "3"]) == 0
  # A config file names its directory; as given, the hint says how to rebase.
  assert _stage_entry(inspection.describe(
      models["linear"], relative_to=str(configs / "job.yaml")))["checkpoint"] == a["checkpoint"]
  assert "# absolute paths: paste-ready in a config kept anywhere" in inspection.describe(
      models["linear"])
  assert ("# paths relative to the current directory; --relative-to configs/ for a "
          "config in configs/") in inspection.describe(os.path.relpath(models["linear"]))
  with pytest.raises(inspection.InspectError, match="--relative-to .*nowhere: no such"):
    inspection.describe(models["linear"], relative_to=str(tmp_path / "nowhere"))


# --- outputs of the demo job (issue 21) -------------------------------------------

DEMO_RECORDS, DEMO_SHARDS = 600, 6


def _run_demo_job(demo, out, pattern=None, *sets):
  """`tfcascade run` of configs/local.yaml on the demo in `demo`."""
  args = ["run", "--config", os.path.join(ROOT, "configs/local.yaml"),
          f"--set=input.pattern={pattern or demo / 'data' / 'part-*.tfrecord.gz'}",
          f"--set=output.path={out}", *[f"--set={s}" for s in sets], "--runner=DirectRunner"]
  for stage in ("a", "b"):
    args += [f"--set=stages.{stage}.checkpoint={demo / 'models' / stage}",
             f"--set=stages.{stage}.meta_graph={demo / 'models' / stage / 'model.meta'}"]
  return main(args)


def _bad_records(path):
  """3 Examples whose pixels are 3 floats, not 64, and 1 record that is no Example."""
  with tf.io.TFRecordWriter(str(path), "GZIP") as w:
    for e in tm.make_examples(np.ones((3, 3), dtype="float32")):
      w.write(e)
    w.write(b"not an example at all")


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
  """The demo job's outputs: TFRecord, gzip JSONL, 0 rows, and a failed run
  (3 + 1 bad records, dead_letter.max_fraction 0)."""
  from tfcascade.pipeline.demo.build import build_demo  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("demo_runs")
  demo = root / "demo"
  report = build_demo(str(demo), records=DEMO_RECORDS, shards=DEMO_SHARDS, seed=0, steps=300)
  runs = {"root": root, "demo": demo, "report": report}
  assert _run_demo_job(demo, root / "tfrecord") == 0
  assert _run_demo_job(demo, root / "jsonl", None, "output.format=jsonl",
                       "output.compression=gzip") == 0
  with tf.io.TFRecordWriter(str(root / "empty.tfrecord.gz"), "GZIP"):
    pass
  assert _run_demo_job(demo, root / "empty", root / "empty.tfrecord.gz") == 0
  mixed = root / "mixed"
  mixed.mkdir()
  shutil.copy(sorted(glob.glob(str(demo / "data" / "*")))[0], mixed / "part-0.tfrecord.gz")
  _bad_records(mixed / "part-bad.tfrecord.gz")
  assert _run_demo_job(demo, root / "failed", mixed / "*.tfrecord.gz",
                       "dead_letter.max_fraction=0") != 0  # too many dead letters
  return runs


def _read_json(path):
  with open(path) as f:
    return json.load(f)


def _accuracy_block(out: str):
  return out[out.index("accuracy against"):]


def test_accuracy_of_tfrecord_and_jsonl_outputs_is_the_demos(demo_runs, capsys):
  report = demo_runs["report"]
  code, out, _ = _inspect(demo_runs["root"] / "tfrecord", capsys)
  assert code == 0
  assert f"accuracy against 'label' on {DEMO_RECORDS:,} rows:" in out
  assert (f"  a alone: {report['a_accuracy']:.4f}; cascade: "
          f"{report['cascade_accuracy']:.4f}") in out, out
  code, jsonl, _ = _inspect(demo_runs["root"] / "jsonl", capsys, "--label", "label")
  assert code == 0
  assert _accuracy_block(jsonl) == _accuracy_block(out)
  # Without run_summary.json the stages come from the columns: `final/*` is
  # the cascade's answer, not a stage.
  bare = demo_runs["root"] / "tfrecord_without_summary"
  shutil.copytree(demo_runs["root"] / "tfrecord", bare)
  os.remove(bare / "run_summary.json")
  code, without, _ = _inspect(bare, capsys)
  assert code == 0 and "stage final" not in without
  assert _accuracy_block(without) == _accuracy_block(out)


def test_the_cascade_accuracy_is_the_outputs_own_final_answer():
  rows = {"label": np.array([0, 1, 2, 3]), "a/prediction": np.array([0, 1, 0, 0]),
          "b/prediction": np.array([0, 0, 2, 3]), "b/ran": np.array([0, 0, 1, 1])}
  assert cascade_report(rows, ["a", "b"], "label")["cascade_accuracy"] == 1.0
  # Where the output holds final/prediction, that is the answer counted.
  final = {**rows, "final/prediction": np.array([0, 1, 2, 0])}
  assert cascade_report(final, ["a", "b"], "label")["cascade_accuracy"] == 0.75


@pytest.mark.parametrize("output", ["tfrecord", "jsonl"])
def test_a_label_that_is_no_int64_feature_is_one_line(demo_runs, capsys, output):
  path = demo_runs["root"] / output
  for label, found in [("id", "feature 'id' of the output {} is string, not int64"),
                       ("a/confidence", "feature 'a/confidence' of the output {} is "
                                        "float32, not int64"),
                       ("nope", "the output {} has no feature 'nope'")]:
    code, out, err = _inspect(path, capsys, "--label", label)
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1, err
    assert lines[0].startswith(f"tfcascade: error: --label {label}: ")
    assert found.format(path) in lines[0], lines[0]
    assert lines[0].endswith("int64 passthrough features: label"), lines[0]


def test_a_zero_row_output_says_so(demo_runs, capsys):
  for label in ("label", "id"):
    code, out, _ = _inspect(demo_runs["root"] / "empty", capsys, "--label", label)
    assert code == 0
    assert "records read 0, written 0" in out and "complete (_SUCCESS present)" in out
    assert out.strip().endswith("0 prediction rows: no accuracy to compute"), out
    assert "passthrough" not in out


def test_a_failed_run_is_shown_with_its_reason_counts_and_dead_letters(demo_runs, capsys):
  out_dir = demo_runs["root"] / "failed"
  run_dir, = glob.glob(str(out_dir / "_staging" / "*"))
  summary = _read_json(os.path.join(run_dir, "run_summary.json"))
  assert summary["records_dead_lettered"] == 4
  bad = str(demo_runs["root"] / "mixed" / "part-bad.tfrecord.gz")
  code, out, err = _inspect(out_dir, capsys)
  assert code == 0, err
  lines = out.splitlines()
  assert lines[0].startswith(f"nothing published in {out_dir}")
  assert lines[1] == f"1 run(s) under {out_dir}/_staging (staged, not published):"
  assert lines[2] == (f"run {os.path.basename(run_dir)} ({run_dir}): FAILED; "
                      f"nothing published"), lines[2]
  assert lines[3] == f"  reason: {summary['failed']}"
  assert lines[4].startswith(
      f"  records read {summary['records_read']:,}, written "
      f"{summary['records_written']:,}, dead-lettered 4 (all accounted for)")
  reasons = out[out.index("top dead-letter reasons"):].splitlines()
  assert reasons[0].endswith(f"(dead-letter entries: {run_dir}/files/dead_letter-*.jsonl):")
  assert reasons[1].startswith("      3 x record does not parse: ")
  assert reasons[1].endswith(f"output shape: [64]  (e.g. record 0 of {bad})"), reasons[1]
  assert reasons[2].startswith("      1 x record does not parse: Could not parse example")
  assert reasons[2].endswith(f"(e.g. record 3 of {bad})"), reasons[2]
  # The run's own directory, its marker and the _staging folder: the same run.
  section = "\n".join(lines[2:])
  for path in (run_dir, os.path.join(run_dir, "RUN.json"), out_dir / "_staging"):
    code, again, _ = _inspect(path, capsys)
    assert code == 0 and again.strip().endswith(section.strip()), again


@pytest.mark.slow
def test_a_run_in_progress_then_killed_is_shown_with_its_committed_units(
    demo_runs, tmp_path, capsys):
  """A real run, paused once it committed a unit (of 30), then SIGKILLed."""
  data = tmp_path / "data"
  data.mkdir()
  records = [r for path in sorted(glob.glob(str(demo_runs["demo"] / "data" / "*")))
             for r in tf.data.TFRecordDataset(path, "GZIP").as_numpy_iterator()]
  for shard in range(30):
    with tf.io.TFRecordWriter(str(data / f"part-{shard:02d}.tfrecord.gz"), "GZIP") as w:
      for record in records[shard::30]:
        w.write(record)
  out = tmp_path / "out"
  demo = demo_runs["demo"]
  cmd = [sys.executable, "-m", "tfcascade", "run", "--config",
         os.path.join(ROOT, "configs/local.yaml"), f"--set=input.pattern={data}/*.gz",
         f"--set=output.path={out}", "--set=batch_size=10", "--runner=DirectRunner"]
  for stage in ("a", "b"):
    cmd += [f"--set=stages.{stage}.checkpoint={demo / 'models' / stage}",
            f"--set=stages.{stage}.meta_graph={demo / 'models' / stage / 'model.meta'}"]
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True)
  try:
    deadline = time.time() + 300
    while not glob.glob(str(out / "_staging" / "*" / "units" / "*.json")):
      assert proc.poll() is None and time.time() < deadline, "no unit committed"
      time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGSTOP)
    run_dir, = glob.glob(str(out / "_staging" / "*"))
    commits = glob.glob(os.path.join(run_dir, "units", "*.json"))
    read = sum(_read_json(path)["counts"]["records_read"] for path in commits)
    assert not (out / "_SUCCESS").exists() and 0 < len(commits) < 30
    code, paused, _ = _inspect(out, capsys)
    assert code == 0
    assert "): IN PROGRESS (started " in paused and f"(pid {proc.pid})" in paused, paused
    assert (f"  {len(commits)} unit(s) committed so far: records read {read:,}, "
            f"written {read:,}, dead-lettered 0") in paused, paused
  finally:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
  code, dead, _ = _inspect(out, capsys)
  assert code == 0
  assert (f"({run_dir}): DEAD (its process {proc.pid} on this host is gone); "
          f"nothing published") in dead, dead
  assert f"  {len(commits)} unit(s) committed before it stopped: records read {read:,}" in dead
  assert "(a rerun of the same job and inputs reuses them" in dead
