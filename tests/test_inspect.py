"""`tfcascade inspect` on every model source (issue 14, part 2).

A SavedModel (Keras 3 export, TF1 export), a `.meta` file, a checkpoint
directory or prefix, TFRecord files, and paths that are none of these. The
`stages:` entry `inspect` prints for a model is pasted into a config and
must validate as is.
"""

import os
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import yaml

from tfcascade.pipeline.cli import main
from tfcascade.pipeline.inspection import EXPECTED
from tests import tiny_models as tm


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


def _inspect(path, capsys):
  code = main(["inspect", str(path)])
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
