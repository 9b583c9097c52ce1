"""How `tfcascade run --runner=PrismRunner` finds Beam's Prism binary, and its
one-line refusals (exit 2) when it cannot; no Prism binary needed. The runs
on Prism are in tests/portable/test_portable_runner.py."""

import os
import subprocess
import sys

import pytest

from tfcascade.pipeline import prism_runner
from tfcascade.pipeline.cli import main
from tests.jobs import write_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def no_prism(tmp_path, monkeypatch):
  """No $TFCASCADE_PRISM, no `prism` on PATH, an empty cache."""
  monkeypatch.delenv(prism_runner.ENV, raising=False)
  monkeypatch.setenv("TFCASCADE_CACHE", str(tmp_path / "cache"))
  monkeypatch.setenv("PATH", os.pathsep.join(
      d for d in os.environ["PATH"].split(os.pathsep)
      if not os.access(os.path.join(d, "prism"), os.X_OK)))
  return tmp_path


def _executable(path, body="#!/bin/sh\n"):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(body)
  path.chmod(0o755)
  return str(path)


def test_none_found_is_one_line_and_exit_2(no_prism):
  config = write_config(no_prism / "job.yaml")
  proc = subprocess.run(
      [sys.executable, "-m", "tfcascade", "run", "--config", config, "--runner=PrismRunner"],
      capture_output=True, text=True, cwd=ROOT, timeout=300, env=dict(os.environ))
  assert proc.returncode == 2, proc.stderr
  assert proc.stdout == ""  # refused before the config is even read
  lines = proc.stderr.splitlines()
  assert len(lines) == 1, proc.stderr
  (line,) = lines
  assert line.startswith("tfcascade: error: --runner=PrismRunner: no Prism binary found")
  assert prism_runner.install_command() in line and prism_runner.BUILD_SCRIPT in line
  assert "@v" + prism_runner.beam_version() in line


@pytest.mark.parametrize("flag, env, says", [
    ("--prism_location={missing}", {}, "--prism_location={missing}: no such file"),
    ("--prism_location={plain}", {}, "--prism_location={plain}: not executable"),
    ("", {prism_runner.ENV: "{missing}"}, "$TFCASCADE_PRISM={missing}: no such file"),
])
def test_a_named_binary_that_cannot_run_is_refused(no_prism, monkeypatch, capsys,
                                                   flag, env, says):
  names = {"missing": no_prism / "nowhere" / "prism", "plain": no_prism / "prism.txt"}
  (no_prism / "prism.txt").write_text("not a program")
  _executable(no_prism / "cache" / "prism" / prism_runner.beam_version() / "prism")
  for key, value in env.items():  # a wrong setting never falls back to the cache
    monkeypatch.setenv(key, value.format(**names))
  config = write_config(no_prism / "job.yaml")
  argv = ["run", "--config", config, "--runner=PrismRunner"] + (
      [flag.format(**names)] if flag else [])
  assert main(argv) == 2
  err = capsys.readouterr().err.splitlines()
  assert len(err) == 1 and says.format(**names) in err[0], err


def test_lookup_order(no_prism, monkeypatch):
  cached = _executable(no_prism / "cache" / "prism" / prism_runner.beam_version() / "prism")
  assert prism_runner.with_location(["--runner=PrismRunner"]) == [
      "--runner=PrismRunner", f"--prism_location={cached}"]
  on_path = _executable(no_prism / "bin" / "prism")
  monkeypatch.setenv("PATH", f"{no_prism / 'bin'}{os.pathsep}{os.environ['PATH']}")
  assert prism_runner.locate(["--runner", "prism"]) == on_path
  named = _executable(no_prism / "named-prism")
  monkeypatch.setenv(prism_runner.ENV, named)
  full_name = "apache_beam.runners.portability.prism_runner.PrismRunner"
  assert prism_runner.locate([f"--runner={full_name}"]) == named
  # --prism_location is Beam's to use as given; other runners need no Prism.
  given = ["--runner=PrismRunner", f"--prism_location={cached}"]
  assert prism_runner.with_location(given) == given
  url = ["--runner=PrismRunner", "--prism_location=https://github.com/apache/beam/"
         "releases/tag/v2.77.0"]
  assert prism_runner.with_location(url) == url
  assert prism_runner.with_location(["--runner=DirectRunner"]) == ["--runner=DirectRunner"]
  assert prism_runner.with_location([]) == []
