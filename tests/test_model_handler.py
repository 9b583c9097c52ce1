"""CascadeModelHandler inside a Beam pipeline (RunInference on the
DirectRunner), checked against each model run alone in its own session."""

from __future__ import annotations

import glob
import importlib.util
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import apache_beam as beam
from apache_beam.ml.inference.base import (KeyedModelHandler, PredictionResult,
                                           RunInference)
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from tfcascade.pipeline.demo import build
from tfcascade.pipeline.handler_config import handler_from_config
from tests.jobs import make_job
from tfcascade.transforms.engine import CascadeError
from tfcascade.transforms.beam.cascade_handler import (DEFAULT_MAX_BATCH_BYTES,
                                                      CascadeModelHandler)
from tfcascade.transforms.formats.tfrecord_framing import DEFAULT_BATCH_BYTES

N = 120
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def job(tmp_path_factory):
  return make_job(tmp_path_factory.mktemp("handler"), n_records=N)


def _pipeline(*flags):
  # Pinned: Beam's default runner would try to download Prism.
  return BeamTestPipeline(options=PipelineOptions(["--runner=DirectRunner", *flags]))


def _check_row(inference, want):
  np.testing.assert_allclose(inference["a/logits"], want["a/logits"], atol=1e-5)
  np.testing.assert_allclose(inference["a/confidence"], want["a/confidence"], atol=1e-5)
  assert int(inference["b/ran"]) == want["b/ran"]
  if want["b/ran"]:
    np.testing.assert_allclose(inference["b/probs"], want["b/probs"], atol=1e-5)
  else:
    assert not inference["b/probs"].any()  # fill_value 0


def _matches_oracle(oracle, examples):
  by_record = dict(zip(examples, oracle.values()))

  def check(results):
    results = list(results)
    assert len(results) == len(examples)
    assert {r.example for r in results} == set(examples)
    for r in results:
      assert isinstance(r, PredictionResult)
      assert set(r.inference) >= {"a/logits", "a/confidence", "b/probs", "b/ran"}
      _check_row(r.inference, by_record[r.example])
  return check


def test_run_inference_matches_each_model_alone(job):
  handler = handler_from_config(job["config"], max_batch_size=50)
  oracle = {rid: job["oracle"][rid] for rid in job["ids"]}
  p = _pipeline()
  results = (p | beam.Create(job["examples"], reshuffle=False)
             | RunInference(handler))
  assert_that(results, _matches_oracle(oracle, job["examples"]))
  result = p.run()
  result.wait_until_finish()
  metrics = result.metrics().query(beam.metrics.MetricsFilter().with_namespace("tfcascade"))
  counters = {c.key.metric.name: c.committed for c in metrics["counters"]}
  ran = sum(v["b/ran"] for v in job["oracle"].values())
  assert counters["num_inferences"] == N
  assert counters["a_rows_run"] == N and counters["b_rows_in"] == N
  assert counters["b_rows_run"] == ran and 0 < ran < N
  distributions = {d.key.metric.name for d in metrics["distributions"]}
  assert {"inference_batch_latency_micro_secs", "load_model_latency_milli_secs",
          "inference_request_batch_size"} <= distributions


def test_keyed_variant_keeps_keys(job):
  handler = KeyedModelHandler(handler_from_config(job["config"]))
  p = _pipeline()
  keyed = list(zip(job["ids"], job["examples"]))
  results = (p | beam.Create(keyed) | RunInference(handler)
             | beam.MapTuple(lambda key, r: (key, r.inference["passthrough/id"], r)))

  def check(rows):
    rows = list(rows)
    assert sorted(k for k, _, _ in rows) == sorted(job["ids"])
    for key, rid, r in rows:
      assert rid == key  # the id parsed in-graph from the record itself
      _check_row(r.inference, job["oracle"][key])
  assert_that(results, check)
  p.run().wait_until_finish()


def test_one_session_per_process(job, monkeypatch):
  """Many threads, one process: the cascade is loaded once."""
  loads = []
  original = CascadeModelHandler.load_model

  def counting(self):
    loads.append(1)
    return original(self)
  monkeypatch.setattr(CascadeModelHandler, "load_model", counting)
  handler = handler_from_config(job["config"], max_batch_size=10)
  p = _pipeline("--direct_num_workers=4", "--direct_running_mode=multi_threading")
  counts = (p | beam.Create(job["examples"]) | beam.Reshuffle()
            | RunInference(handler) | beam.combiners.Count.Globally())
  assert_that(counts, equal_to([N]))
  p.run().wait_until_finish()
  assert len(loads) == 1


def test_with_exception_handling_routes_the_failing_batch(job):
  """A record that does not parse fails its batch; with_exception_handling()
  sends that batch to failed_inferences and the pipeline goes on."""
  handler = handler_from_config(job["config"], min_batch_size=1, max_batch_size=1)
  good = job["examples"][:20]
  p = _pipeline()
  main, other = (p | beam.Create(good + [b"not an example"])
                 | RunInference(handler).with_exception_handling())
  assert_that(main | "CountGood" >> beam.combiners.Count.Globally(), equal_to([20]),
              label="good")
  # (batch, (exception class, repr, traceback lines)), as Beam's
  # with_exception_handling emits failures: the repr carries TF's reason.
  failed = other.failed_inferences | beam.MapTuple(
      lambda batch, error: (list(batch), error[0].__name__, error[1]))
  assert_that(failed, equal_to([([b"not an example"], "InvalidArgumentError",
                                 "InvalidArgumentError(\"Could not parse example input, "
                                 "value: 'not an example'\")")]),
              label="failed")
  p.run().wait_until_finish()


def test_sharing_options_and_batching():
  spec = object()
  handler = CascadeModelHandler(spec, min_batch_size=8, max_batch_size=64,
                                max_batch_bytes=None)
  assert not handler.share_model_across_processes() and handler.model_copies() == 1
  assert handler.batch_elements_kwargs() == {"min_batch_size": 8, "max_batch_size": 64}
  big = CascadeModelHandler.from_spec(spec, large_model=True)
  assert big.share_model_across_processes() and big.model_copies() == 1
  two = CascadeModelHandler.from_spec(spec, model_copies=2)
  assert two.share_model_across_processes() and two.model_copies() == 2
  with pytest.raises(ValueError, match="no inference_args"):
    handler.validate_inference_args({"x": 1})


def test_byte_cap_kwargs_and_what_cannot_be_combined_with_it():
  spec = object()
  assert DEFAULT_MAX_BATCH_BYTES == DEFAULT_BATCH_BYTES  # the CLI job's batch_bytes
  kwargs = CascadeModelHandler(spec).batch_elements_kwargs()
  target = 1024 * DEFAULT_BATCH_BYTES
  assert kwargs["min_batch_size"] == kwargs["max_batch_size"] == target
  weigh = kwargs["element_size_fn"]
  assert weigh(b"x" * 10) == DEFAULT_BATCH_BYTES  # count-bound: 1024 fit
  assert weigh(b"x" * (DEFAULT_BATCH_BYTES // 512)) == target // 512  # byte-bound
  assert weigh(b"x" * (DEFAULT_BATCH_BYTES + 1)) == target  # alone
  assert weigh(("key", b"x" * 10)) == DEFAULT_BATCH_BYTES  # KeyedModelHandler's pairs
  same = CascadeModelHandler(spec, min_batch_size=64, max_batch_size=64, max_batch_bytes=640)
  assert same.batch_elements_kwargs()["max_batch_size"] == 64 * 640
  for bad, match in [({"max_batch_duration_secs": 1.0}, "stateful batching"),
                     ({"max_batch_size": None}, "needs max_batch_size"),
                     ({"min_batch_size": 8}, "adaptive batch size"),
                     ({"max_batch_bytes": 0}, "must be >= 1")]:
    with pytest.raises(ValueError, match=match):
      CascadeModelHandler(spec, **bad)
  # Each of those is fine counting elements only, as Beam batches.
  assert CascadeModelHandler(spec, max_batch_duration_secs=1.0, max_batch_bytes=None
                             ).batch_elements_kwargs() == {
                                 "max_batch_size": 1024, "max_batch_duration_secs": 1.0}


@pytest.mark.parametrize("keyed", [False, True])
def test_beams_batch_elements_keeps_both_caps(keyed):
  """The kwargs through Beam's own BatchElements: no batch over 4 records or
  over 1000 bytes, a record over 1000 bytes alone, no empty batch, nothing
  lost; uniform records fill batches to the binding cap."""
  rng = np.random.default_rng(3)
  sizes = [int(n) for n in rng.integers(0, 600, 200)] + [1500, 5000, 1000, 999]
  records = [b"%05d" % i + b"x" * n for i, n in enumerate(sizes)]
  handler = CascadeModelHandler(object(), max_batch_size=4, max_batch_bytes=1000)
  elements = [(r[:5], r) for r in records] if keyed else records

  def summary(batch):
    raw = [e[1] if keyed else e for e in batch]
    return [len(r) for r in raw], [r[:5] for r in raw]

  def check(batches):
    batches = list(batches)
    assert sorted(k for _, keys in batches for k in keys) == sorted(r[:5] for r in records)
    for lengths, _ in batches:
      assert 1 <= len(lengths) <= 4
      assert sum(lengths) <= 1000 or len(lengths) == 1
      if any(n > 1000 for n in lengths):
        assert len(lengths) == 1
  p = _pipeline()
  batches = (p | beam.Create(elements, reshuffle=False)
             | beam.BatchElements(**handler.batch_elements_kwargs()) | beam.Map(summary))
  assert_that(batches, check)
  # One bundle each (Create without reshuffle): 200-byte records, 4 a batch
  # by count (5 would fit in 1000 bytes); 300-byte ones, 3 by bytes.
  for width, per_batch in [(200, 4), (300, 3)]:
    uniform = [b"%05d" % i + b"u" * (width - 5) for i in range(12)]
    got = (p | f"Create{width}" >> beam.Create(uniform, reshuffle=False)
           | f"Batch{width}" >> beam.BatchElements(**handler.batch_elements_kwargs())
           | f"Len{width}" >> beam.Map(len))
    assert_that(got, equal_to([per_batch] * (12 // per_batch)), label=f"uniform{width}")
  p.run().wait_until_finish()


def test_run_inference_with_a_byte_cap_matches_each_model_alone(job):
  """A cap of 7 records' bytes: RunInference's batches hold at most 7
  records (Beam's own inference_request_batch_size), results unchanged."""
  widest = max(len(e) for e in job["examples"])
  handler = handler_from_config(job["config"], max_batch_bytes=7 * widest)
  oracle = {rid: job["oracle"][rid] for rid in job["ids"]}
  p = _pipeline()
  results = (p | beam.Create(job["examples"], reshuffle=False) | RunInference(handler))
  assert_that(results, _matches_oracle(oracle, job["examples"]))
  result = p.run()
  result.wait_until_finish()
  metrics = result.metrics().query(beam.metrics.MetricsFilter().with_namespace("tfcascade"))
  sizes = next(d.committed for d in metrics["distributions"]
               if d.key.metric.name == "inference_request_batch_size")
  assert sizes.sum == N and sizes.max <= 7 and sizes.count >= N // 7


def test_from_config_checks_the_cascade_first(job, tmp_path):
  with pytest.raises(CascadeError, match="nope"):
    handler_from_config(job["config"], ["stages.b.outputs.probs=nope:0"])


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
  out = tmp_path_factory.mktemp("example") / "demo"
  return out, build.build_demo(str(out), records=600, shards=2, seed=0, steps=300)


def _example():
  spec = importlib.util.spec_from_file_location(
      "run_inference_example", os.path.join(ROOT, "examples", "run_inference.py"))
  example = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(example)
  return example


def test_the_example_scores_the_demo_like_demo_json(demo, tmp_path, capsys):
  """examples/run_inference.py on the demo: its accuracy and B's share equal
  demo.json's (numpy on the saved weights, independent of the engine)."""
  demo, summary = demo
  sets = [f"input.pattern={demo}/data/part-*.tfrecord.gz"]
  for stage in ("a", "b"):
    sets += [f"stages.{stage}.checkpoint={demo}/models/{stage}",
             f"stages.{stage}.meta_graph={demo}/models/{stage}/model.meta"]
  argv = ["--config", os.path.join(ROOT, "configs", "local.yaml"), "--out",
          str(tmp_path / "out")]
  for s in sets:
    argv += ["--set", s]
  got = _example().run(argv)
  assert got["rows"] == 600 and got["failed"] == 0
  assert got["cascade_accuracy"] == pytest.approx(summary["cascade_accuracy"], abs=1e-9)
  assert got["a_accuracy"] == pytest.approx(summary["a_accuracy"], abs=1e-9)
  assert got["b_share"] == pytest.approx(summary["b_share"], abs=1e-9)
  lines = [json.loads(line) for f in glob.glob(str(tmp_path / "out/predictions-*.jsonl"))
           for line in open(f)]
  assert len(lines) == 600 and {"id", "label", "answer", "b_ran"} <= set(lines[0])
  assert "cascade" in capsys.readouterr().out


def test_the_examples_failed_records_say_why_and_tf_stays_quiet(demo, tmp_path):
  """A record that does not parse, the example run as a user runs it: its
  batch in failed-*.txt with TF's reason (no node lines), no accuracy made up
  from no rows, and none of TF's C++ lines on stderr."""
  demo, _ = demo
  bad = tmp_path / "bad.tfrecord"
  with tf.io.TFRecordWriter(str(bad)) as writer:
    writer.write(b"not an example")
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, "examples", "run_inference.py"), "--config",
       str(demo / "config.yaml"), "--out", "out", "--set", f"input.pattern={bad}"],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr
  assert proc.stderr == ""
  assert proc.stdout.startswith("no record scored; 1 record(s) failed") and "%" not in proc.stdout
  failed = [line for f in glob.glob(str(tmp_path / "out/failed-*.txt")) for line in open(f)]
  assert failed == ["1 record(s): InvalidArgumentError(\"Could not parse example input, "
                    "value: 'not an example'\")\n"]
  with open(tmp_path / "out" / "summary.json") as f:
    assert json.load(f) == {"rows": 0, "failed": 1, "a_accuracy": None,
                            "cascade_accuracy": None, "b_share": None}


@pytest.mark.parametrize("flags, says", [
    (["--config", "nope.yaml"], "cannot read config nope.yaml"),
    (["--config", "{demo}/config.yaml", "--set", "stages.b.checkpoint=nope"],
     "stage 'b': no checkpoint at"),
    (["--config", "{demo}/config.yaml", "--set", "input.pattern=nothing-*"],
     "matches no files"),
])
def test_the_examples_own_errors_are_one_line_and_exit_2(demo, tmp_path, capfd,
                                                         monkeypatch, flags, says):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")  # main() would set it for good
  root = logging.getLogger()
  monkeypatch.setattr(root, "filters", list(root.filters))  # main() adds one
  argv = [f.format(demo=demo[0]) for f in flags] + ["--out", "out"]
  assert _example().main(argv) == 2
  err = capfd.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("run_inference.py: error: ") and says in err[0]
