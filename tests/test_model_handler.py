"""CascadeModelHandler inside a Beam pipeline (RunInference on the
DirectRunner), checked against each model run alone in its own session."""

from __future__ import annotations

import glob
import importlib.util
import json
import os

import numpy as np
import pytest

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
from tfcascade.transforms.beam.cascade_handler import CascadeModelHandler

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
  # with_exception_handling emits failures.
  failed = other.failed_inferences | beam.MapTuple(
      lambda batch, error: (list(batch), error[0].__name__,
                                 "Could not parse" in "".join(error[2])))
  assert_that(failed, equal_to([([b"not an example"], "InvalidArgumentError", True)]),
              label="failed")
  p.run().wait_until_finish()


def test_sharing_options_and_batching():
  spec = object()
  handler = CascadeModelHandler(spec, min_batch_size=8, max_batch_size=64)
  assert not handler.share_model_across_processes() and handler.model_copies() == 1
  assert handler.batch_elements_kwargs() == {"min_batch_size": 8, "max_batch_size": 64}
  big = CascadeModelHandler.from_spec(spec, large_model=True)
  assert big.share_model_across_processes() and big.model_copies() == 1
  two = CascadeModelHandler.from_spec(spec, model_copies=2)
  assert two.share_model_across_processes() and two.model_copies() == 2
  with pytest.raises(ValueError, match="no inference_args"):
    handler.validate_inference_args({"x": 1})


def test_from_config_checks_the_cascade_first(job, tmp_path):
  with pytest.raises(CascadeError, match="nope"):
    handler_from_config(job["config"], ["stages.b.outputs.probs=nope:0"])


def test_the_example_scores_the_demo_like_demo_json(tmp_path, capsys):
  """examples/run_inference.py on the demo: its accuracy and B's share equal
  demo.json's (numpy on the saved weights, independent of the engine)."""
  demo = tmp_path / "demo"
  summary = build.build_demo(str(demo), records=600, shards=2, seed=0, steps=300)
  spec = importlib.util.spec_from_file_location(
      "run_inference_example", os.path.join(ROOT, "examples", "run_inference.py"))
  example = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(example)
  sets = [f"input.pattern={demo}/data/part-*.tfrecord.gz"]
  for stage in ("a", "b"):
    sets += [f"stages.{stage}.checkpoint={demo}/models/{stage}",
             f"stages.{stage}.meta_graph={demo}/models/{stage}/model.meta"]
  argv = ["--config", os.path.join(ROOT, "configs", "local.yaml"), "--out",
          str(tmp_path / "out")]
  for s in sets:
    argv += ["--set", s]
  got = example.run(argv)
  assert got["rows"] == 600
  assert got["cascade_accuracy"] == pytest.approx(summary["cascade_accuracy"], abs=1e-9)
  assert got["a_accuracy"] == pytest.approx(summary["a_accuracy"], abs=1e-9)
  assert got["b_share"] == pytest.approx(summary["b_share"], abs=1e-9)
  lines = [json.loads(line) for f in glob.glob(str(tmp_path / "out/predictions-*.jsonl"))
           for line in open(f)]
  assert len(lines) == 600 and {"id", "label", "answer", "b_ran"} <= set(lines[0])
  assert "cascade" in capsys.readouterr().out
