"""A tiny, self-contained Beam job that stands in for `python -m tfcascade run`
while proving the runner harness (tests/runners/harness.py) on a
PortableRunner and on Flink.

Run as a script (not imported): its functions then live in `__main__` and
cloudpickle ships them by value, so a worker that has only apache-beam (or only
the project's wheel) installed can run them.

  python tests/runners/toy_pipeline.py --input IN.txt --output OUT_PREFIX [beam args]

Writes
  OUT_PREFIX-records-*   one line per input line, "<key>\t<value*value>"
  OUT_PREFIX-totals-*    one line per key after a GroupByKey-style combine,
                         "<key>\t<sum>\t<count>" (exercises the shuffle)
  OUT_PREFIX-where-*     one line per distinct worker environment that ran the
                         Map: "<sys.prefix>\t<transforms package location>" so
                         a test can tell WHERE user code really ran.
"""
import argparse
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions


def parse(line):
  key, value = line.split(",")
  return key, int(value)


def where(_):
  # Which interpreter/venv runs this worker, and which copy of the project's
  # `transforms` package it would import (none when the worker lacks it).
  try:
    from tfcascade import transforms  # pylint: disable=g-import-not-at-top
    loc = getattr(transforms, "__file__", None) or list(transforms.__path__)[0]
  except ImportError:
    loc = "-"
  return "%s\t%s" % (sys.prefix, loc)


def run(argv=None):
  parser = argparse.ArgumentParser()
  parser.add_argument("--input", required=True)
  parser.add_argument("--output", required=True)
  known, beam_args = parser.parse_known_args(argv)
  with beam.Pipeline(options=PipelineOptions(beam_args)) as p:
    kvs = p | "Read" >> beam.io.ReadFromText(known.input) | beam.Map(parse)
    _ = (
        kvs
        | "Square" >> beam.MapTuple(lambda k, v: "%s\t%d" % (k, v * v))
        | "WriteRecords" >> beam.io.WriteToText(known.output + "-records"))
    _ = (
        kvs
        | beam.GroupByKey()
        | beam.MapTuple(lambda k, vs: "%s\t%d\t%d" % (k, sum(vs), len(list(vs))))
        | "WriteTotals" >> beam.io.WriteToText(known.output + "-totals"))
    _ = (
        kvs
        | "Where" >> beam.Map(where)
        | beam.Distinct()
        | "WriteWhere" >> beam.io.WriteToText(known.output + "-where"))


if __name__ == "__main__":
  run()
