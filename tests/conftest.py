"""Fixtures shared by the runner tests: tests/portable/ (PortableRunner with
an EXTERNAL worker pool) and tests/flink/ (Flink). The harness behind them is
tests/runners/harness.py. Session-scoped and built only when a test asks.
Also the hypothesis profile and TF's log level between tests (below)."""

import os

import hypothesis
import pytest

from tests.runners import harness

# CI (.ci/run sets HYPOTHESIS_PROFILE=ci) replays the same generated examples
# every run, so landing never hinges on a lucky draw and a failure there
# reproduces; elsewhere every run explores new examples.
hypothesis.settings.register_profile("ci", derandomize=True)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


_TF_LOG_LEVEL_AT_START = os.environ.get("TF_CPP_MIN_LOG_LEVEL")


def _restore_tf_log_level():
  if _TF_LOG_LEVEL_AT_START is None:
    os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
  else:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = _TF_LOG_LEVEL_AT_START


@pytest.fixture(autouse=True)
def _tf_log_level_as_at_start():
  """`tfcascade` run in-process (a test, or a module fixture before it) sets
  TF_CPP_MIN_LOG_LEVEL for good, so that its workers inherit it; a test's
  subprocess would then take it for the user's own setting and show TF's
  start-up lines. Each test starts and ends with the session's own value."""
  _restore_tf_log_level()
  yield
  _restore_tf_log_level()


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
