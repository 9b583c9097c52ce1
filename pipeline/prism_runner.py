"""Finds Beam's Prism runner (a Go binary) for `--runner=PrismRunner`.

Beam's PrismRunner, given no `--prism_location`, downloads a release binary
from GitHub on first use: offline that fails deep inside the run. Here the
binary is found before anything runs, in this order:

  1. `--prism_location=PATH` (a URL or a remote path is left to Beam);
  2. the file named by $TFCASCADE_PRISM;
  3. `prism` on PATH;
  4. the cache, $TFCASCADE_CACHE/prism/<beam version>/prism (default
     ~/.cache/tfcascade/...), where ci/prism/build.sh puts it;

and handed to Beam as `--prism_location`; none found: a one-line refusal
saying how to build it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import List, Optional, Sequence

ENV = "TFCASCADE_PRISM"
BUILD_SCRIPT = "ci/prism/build.sh"


class PrismNotFound(ValueError):
  """--runner=PrismRunner and no usable Prism binary; nothing was started."""


def beam_version() -> str:
  from apache_beam.version import __version__  # pylint: disable=g-import-not-at-top
  return __version__


def install_command(version: Optional[str] = None) -> str:
  """The `go install` line that builds the Prism of this Beam version."""
  return ("go install github.com/apache/beam/sdks/v2/go/cmd/prism@v"
          f"{version or beam_version()}")


def cached_binary(version: Optional[str] = None) -> Path:
  """Where ci/prism/build.sh leaves the binary (the cache of ci/flink/ too)."""
  root = os.environ.get("TFCASCADE_CACHE") or Path.home() / ".cache" / "tfcascade"
  return Path(root) / "prism" / (version or beam_version()) / "prism"


def is_prism(runner: Optional[str]) -> bool:
  """True for the names Beam resolves to its PrismRunner."""
  return str(runner or "").rsplit(".", 1)[-1].lower() in ("prism", "prismrunner")


def _options(beam_args: Sequence[str]):
  from apache_beam.options.pipeline_options import (  # pylint: disable=g-import-not-at-top
      PipelineOptions, PrismRunnerOptions, StandardOptions)
  options = PipelineOptions(list(beam_args))
  return (options.view_as(StandardOptions).runner,
          options.view_as(PrismRunnerOptions).prism_location)


def _executable_problem(path: str, named_by: str) -> Optional[str]:
  if not os.path.isfile(path):
    return f"{named_by}={path}: no such file"
  if not os.access(path, os.X_OK):
    return f"{named_by}={path}: not executable"
  return None


def _how_to_get() -> str:
  return (f"build it: `GOBIN=DIR {install_command()}`, then pass "
          f"--prism_location=DIR/prism (or run {BUILD_SCRIPT} in a checkout)")


def locate(beam_args: Sequence[str]) -> Optional[str]:
  """The Prism binary for these flags: None when the runner is not Prism or
  `--prism_location` is given (Beam takes it as it is).

  Raises:
    PrismNotFound: Prism is the runner and no usable binary is found.
  """
  runner, location = _options(beam_args)
  if not is_prism(runner):
    return None
  if location:
    if "://" in location:
      return None  # a release URL or a remote file: Beam fetches it
    why = _executable_problem(location, "--prism_location")
    if why:
      raise PrismNotFound(f"{why}; {_how_to_get()}")
    return None
  named = os.environ.get(ENV)
  if named:  # set but wrong: say so, never fall back past it
    why = _executable_problem(named, f"${ENV}")
    if why:
      raise PrismNotFound(f"{why}; {_how_to_get()}")
    return named
  cached = str(cached_binary())
  found = shutil.which("prism") or (
      None if _executable_problem(cached, "cache") else cached)
  if found:
    return found
  raise PrismNotFound(
      f"--runner={runner}: no Prism binary found (looked for --prism_location, "
      f"${ENV}, `prism` on PATH, {cached}); {_how_to_get()}")


def problem(beam_args: Sequence[str]) -> Optional[str]:
  """Why these flags cannot run on Prism here, or None."""
  try:
    locate(beam_args)
  except PrismNotFound as e:
    return str(e)
  return None


def with_location(beam_args: Sequence[str]) -> List[str]:
  """beam_args, plus `--prism_location` when Prism runs and was found here
  (raises PrismNotFound as `locate` does)."""
  found = locate(beam_args)
  return list(beam_args) + ([f"--prism_location={found}"] if found else [])
