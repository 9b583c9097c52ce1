"""Fixtures shared by the runner tests: tests/portable/ (PortableRunner with
an EXTERNAL worker pool) and tests/flink/ (Flink). The harness behind them is
tests/runners/harness.py. Session-scoped and built only when a test asks.
Also the hypothesis profile (below)."""

import os

import hypothesis
import pytest

from tests.runners import harness

# CI (.ci/run sets HYPOTHESIS_PROFILE=ci) replays the same generated examples
# every run, so landing never hinges on a lucky draw and a failure there
# reproduces; elsewhere every run explores new examples.
hypothesis.settings.register_profile("ci", derandomize=True)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def worker_python():
  """Interpreter of the worker venv: the project's wheel + declared deps."""
  return harness.make_worker_venv(harness.REPO)


@pytest.fixture(scope="session")
def toy_input(tmp_path_factory):
  path = tmp_path_factory.mktemp("toy") / "input.txt"
  with open(path, "w") as f:
    for i in range(2000):
      f.write("k%d,%d\n" % (i % 37, i))
  return path


@pytest.fixture(scope="session")
def toy_reference(toy_input, tmp_path_factory):
  """Outputs of the toy job on the in-process FnApiRunner: the oracle."""
  out = tmp_path_factory.mktemp("toy-ref") / "out"
  harness.run_job(harness.toy_cmd(toy_input, out) + harness.reference_args())
  return harness.toy_outputs(out)
