"""One benchmark run in a fresh process: `python -m benchmarks.systems SPEC_JSON`.

A fresh process per run measures start-up, peak RSS (sampled from outside by
benchmarks.run) and TF's thread pools from scratch. The last stdout line is
`BENCH_RESULT {json}`: tf_import_s (`import tensorflow`), job_s (everything
after it: imports, graph, restore, read, score, write) and each system's own
pieces. Systems: b0 (pre-parsed numpy, one session, A -> B in-graph: the
physical limit), roofline (matmul GFLOP/s, same session config), tfdata (T0:
TFRecordDataset -> parse_example -> A -> B, writes nothing), naive (Beam's
documented two-RunInference cascade), tfcascade (beam_job.run on
workloads.job_config), startup (tfcascade's start-up pieces, and the RSS a
second CascadeSession adds) and breakdown (benchmarks.breakdown).
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import glob  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

T_TF = time.perf_counter()

import numpy as np  # noqa: E402

from benchmarks import workloads as w  # noqa: E402

tf1 = tf.compat.v1
BATCH = w.BATCH


def _session_config(spec):
  """The ConfigProto tfcascade's engine opens its session with for this run's
  job config (no `session:` key: TF picks the thread counts, GPUs hidden).
  Imported from the engine, so the baselines cannot drift from it; built
  before a system starts its clock."""
  from tfcascade.pipeline.config import JobConfig  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.engine.cascade import session_config  # pylint: disable=g-import-not-at-top
  return session_config(JobConfig.model_validate(w.job_config(spec)).cascade_spec())


def _pair_session(x, spec, config):
  """A -> B on `x` in one graph, each under its own scope (classic recipe),
  restored from their own checkpoints: (session, confidence, probs)."""
  with tf1.variable_scope("a"):
    logits, confidence, va = w.build_a(x, spec["kind"])
  with tf1.variable_scope("b"):
    probs, vb = w.build_b(logits, spec["kind"])
  sess = tf1.Session(graph=x.graph, config=config)
  w.restore_pair(sess, spec["kind"], spec["workdir"], {"a": ("a", va), "b": ("b", vb)})
  return sess, confidence, probs


def _save_verify(spec, ids, outs, probs_at, confidence_at):
  """B's outputs per id (and A's confidence) for benchmarks.run's checks."""
  if spec.get("verify"):
    np.savez(spec["verify"], ids=ids, probs=np.concatenate([o[probs_at] for o in outs]),
             confidence=np.concatenate([o[confidence_at] for o in outs]))


def run_b0(spec):
  x = np.load(w.data_paths(spec["workdir"], spec["n"])["npy"])
  config = _session_config(spec)
  start = time.perf_counter()  # the numpy load is "no IO": not timed
  graph = tf.Graph()
  with graph.as_default():
    ph = tf1.placeholder(tf.float32, [None, w.FEATURE_DIM])
    sess, confidence, probs = _pair_session(ph, spec, config)
    graph.finalize()
  from tensorflow.core.protobuf import config_pb2  # pylint: disable=g-import-not-at-top
  options = config_pb2.CallableOptions()
  options.feed.append(ph.name)
  options.fetch.extend([probs.name, confidence.name])
  call = sess._make_callable_from_options(options)  # pylint: disable=protected-access
  ready = time.perf_counter()
  outs = [call(x[0:BATCH])]
  first = time.perf_counter()
  for i in range(BATCH, len(x), BATCH):
    outs.append(call(x[i:i + BATCH]))
  end = time.perf_counter()
  _save_verify(spec, np.arange(len(x)), outs, 0, 1)
  return {"job_s": end - start, "setup_s": ready - start,
          "first_batch_s": first - ready, "loop_s": end - first}


def run_roofline(spec):
  """Big-matmul GFLOP/s in the same session config; also B's layer shape."""
  results = {}
  config = _session_config(spec)
  graph = tf.Graph()
  with graph.as_default():
    shapes = {"matmul_2048": (2048, 2048, 2048), "b_layer_1024": (BATCH, 1024, 1024)}
    ops = {}
    for name, (m, k, n) in shapes.items():
      a = tf.Variable(tf.random.normal([m, k], seed=1))
      b = tf.Variable(tf.random.normal([k, n], seed=2))
      # Reducing to a scalar keeps the output copy out of the measurement.
      ops[name] = tf.reduce_sum(tf.matmul(a, b))
    with tf1.Session(graph=graph, config=config) as sess:
      sess.run(tf1.global_variables_initializer())
      for name, op in ops.items():
        m, k, n = shapes[name]
        reps = 5 if m == 2048 else 40
        sess.run(op)
        times = []
        for _ in range(reps):
          t = time.perf_counter()
          sess.run(op)
          times.append(time.perf_counter() - t)
        results[name] = 2.0 * m * k * n / float(np.median(times)) / 1e9
  return {"job_s": time.perf_counter() - T_TF, "gflops": results}


def run_tfdata(spec):
  config = _session_config(spec)
  start = time.perf_counter()
  files = sorted(glob.glob(w.data_paths(spec["workdir"], spec["n"])[spec["layout"]]))
  graph = tf.Graph()
  with graph.as_default():
    ds = (tf.data.TFRecordDataset(
              files, "GZIP" if spec["layout"] == "gzip" else None)
          .batch(BATCH)
          .map(lambda s: tf.io.parse_example(s, {
              "id": tf.io.FixedLenFeature([], tf.string),
              "x": tf.io.FixedLenFeature([w.FEATURE_DIM], tf.float32)}),
               num_parallel_calls=tf.data.AUTOTUNE)
          .prefetch(tf.data.AUTOTUNE))
    batch = tf1.data.make_one_shot_iterator(ds).get_next()
    sess, confidence, probs = _pair_session(batch["x"], spec, config)
    fetch = [batch["id"], probs, confidence]
  ready = time.perf_counter()
  outs = []
  while True:
    try:
      outs.append(sess.run(fetch))
    except tf.errors.OutOfRangeError:
      break
  end = time.perf_counter()
  _save_verify(spec, np.array([int(i[1:]) for o in outs for i in o[0]]), outs, 1, 2)
  return {"job_s": end - start, "setup_s": ready - start, "loop_s": end - ready,
          "rows": int(sum(len(o[0]) for o in outs))}


def run_naive(spec):
  """The pattern Beam documents for several models: one RunInference per
  model, each ModelHandler loading its own checkpoint into its own session."""
  config = _session_config(spec)
  start = time.perf_counter()
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  from apache_beam.ml.inference.base import (  # pylint: disable=g-import-not-at-top
      KeyedModelHandler, ModelHandler, PredictionResult, RunInference)
  from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=g-import-not-at-top

  class CheckpointHandler(ModelHandler):
    """A TF1 meta graph + checkpoint, fed a dict of numpy arrays per row."""

    def __init__(self, directory, feeds, fetches, session_config):
      self._dir, self._feeds, self._fetches = directory, feeds, fetches
      self._config = session_config

    def load_model(self):
      return w.load_model(self._dir, self._config)

    def run_inference(self, batch, model, inference_args=None):
      feed = {tensor: np.stack([row[key] for row in batch])
              for key, tensor in self._feeds.items()}
      out = model.run(self._fetches, feed)
      return [PredictionResult(row, {k: v[i] for k, v in out.items()})
              for i, row in enumerate(batch)]

    def batch_elements_kwargs(self):
      return {"min_batch_size": BATCH, "max_batch_size": BATCH}

  kind, workdir = spec["kind"], spec["workdir"]
  handler_a = KeyedModelHandler(CheckpointHandler(
      w.model_dir(workdir, kind, "a"), {"x": "input:0"},
      {"logits": "logits:0", "confidence": "confidence:0"}, config))
  handler_b = KeyedModelHandler(CheckpointHandler(
      w.model_dir(workdir, kind, "b"), {"logits": "input:0"},
      {"probs": "probs:0"}, config))

  def parse(record):
    f = tf.train.Example.FromString(record).features.feature
    return f["id"].bytes_list.value[0], {
        "x": np.asarray(f["x"].float_list.value, dtype=np.float32)}

  def to_b(item):
    key, result = item
    return key, {"logits": result.inference["logits"]}

  def encode(item):
    key, result = item
    return tf.train.Example(features=tf.train.Features(feature={
        "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[key])),
        "b/probs": tf.train.Feature(float_list=tf.train.FloatList(
            value=result.inference["probs"])),
    })).SerializeToString()

  out_dir = spec["out"]
  shutil.rmtree(out_dir, ignore_errors=True)
  os.makedirs(out_dir, exist_ok=True)
  pattern = w.data_paths(workdir, spec["n"])[spec["layout"]]
  options = PipelineOptions(spec["beam_args"])
  with beam.Pipeline(options=options) as p:
    _ = (p
         | "Read" >> beam.io.ReadFromTFRecord(pattern)
         | "Parse" >> beam.Map(parse)
         | "A" >> RunInference(handler_a)
         | "ToB" >> beam.Map(to_b)
         | "B" >> RunInference(handler_b)
         | "Encode" >> beam.Map(encode)
         | "Write" >> beam.io.WriteToTFRecord(os.path.join(out_dir, "part"),
                                              file_name_suffix=".tfrecord"))
  return {"job_s": time.perf_counter() - start}


def run_tfcascade(spec):
  path = w.write_job_config(spec)  # before the clock: the user's file exists
  start = time.perf_counter()
  from tfcascade.pipeline.config import load_config  # pylint: disable=g-import-not-at-top
  from tfcascade.pipeline.beam_job import run  # pylint: disable=g-import-not-at-top
  summary = run(load_config(path), spec["beam_args"], overwrite=True)
  end = time.perf_counter()
  return {"job_s": end - start, "records_read": summary["records_read"],
          "records_written": summary["records_written"],
          "rows_run_b": summary["stages"]["b"]["rows_run"],
          "sessions_opened": summary.get("metrics", {}).get("sessions_opened")}


def run_startup(spec):
  """tfcascade's start-up beyond `import tensorflow`, piece by piece."""
  import psutil  # pylint: disable=g-import-not-at-top; not timed
  path = w.write_job_config(spec)
  t = [time.perf_counter()]
  import apache_beam  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  from tfcascade.pipeline.config import load_config  # pylint: disable=g-import-not-at-top
  from tfcascade.pipeline import run_plan  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.formats import tfrecord_framing as framing  # pylint: disable=g-import-not-at-top
  from tfcascade.transforms.engine import CascadeSession  # pylint: disable=g-import-not-at-top
  t.append(time.perf_counter())
  config = load_config(path)
  run_plan.preflight(config)  # the launcher's checks (builds the graph once)
  t.append(time.perf_counter())
  session = CascadeSession(config.cascade_spec())
  t.append(time.perf_counter())
  files = sorted(glob.glob(config.input_patterns[0]))
  chunk = next(framing.read_record_chunks(files[0], compression="none",
                                          chunk_size=BATCH))
  session.run([r for _, r in chunk])
  t.append(time.perf_counter())
  # The memory control: what a second copy of the models costs in RSS, so the
  # 1-vs-4-threads comparison can show it would have seen one.
  rss_one = psutil.Process().memory_info().rss
  second = CascadeSession(config.cascade_spec())
  second.run([r for _, r in chunk])
  second_session_mb = (psutil.Process().memory_info().rss - rss_one) / 2**20
  second.close()
  session.close()
  return {"job_s": t[-1] - t[0], "imports_s": t[1] - t[0],
          "preflight_s": t[2] - t[1], "session_s": t[3] - t[2],
          "first_batch_s": t[4] - t[3], "second_session_mb": second_session_mb}


def run_breakdown(spec):
  """CPU per piece of the hot path (benchmarks.breakdown), no Beam runner."""
  from benchmarks import breakdown  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  result = breakdown.measure(spec["workdir"], spec["kind"], spec["n"])
  return {"job_s": time.perf_counter() - start, "breakdown": result}


SYSTEMS = {"b0": run_b0, "roofline": run_roofline, "tfdata": run_tfdata,
           "naive": run_naive, "tfcascade": run_tfcascade, "startup": run_startup,
           "breakdown": run_breakdown}


def main():
  spec = json.loads(sys.argv[1])
  result = SYSTEMS[spec["system"]](spec)
  result["tf_import_s"] = T_TF - T0
  result["total_s"] = time.perf_counter() - T0
  sys.stdout.write("\nBENCH_RESULT " + json.dumps(result) + "\n")
  sys.stdout.flush()


if __name__ == "__main__":
  main()
