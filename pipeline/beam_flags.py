"""Checks the flags `tfcascade run` hands to Beam, before anything runs.

Beam drops a flag it cannot parse with a warning ("Discarding unparseable
args") and runs on: `--ovewrite` would run without `--overwrite`, and
`--batch_size=5` would run with the config's batch size. Here every flag must
be one of Beam's pipeline options (or ours), and the runner must exist; a
mistake is one line naming the flag and the closest known one.
"""

from __future__ import annotations

import difflib
from typing import Iterable, List, Mapping, Optional, Sequence


def problem(flags: Sequence[str], own_flags: Iterable[str],
            config_keys: Mapping[str, List[str]]) -> Optional[str]:
  """Why `flags` cannot go to Beam, or None.

  Args:
    flags: what `tfcascade run` did not parse itself.
    own_flags: tfcascade's own flags for `run` (`--overwrite`, ...), for the
      suggestion.
    config_keys: each config key's name -> its dotted paths: `--batch_size=5`
      is a config key given as a flag (`--set batch_size=5`).
  """
  parser = _beam_parser()
  known, unknown = parser.parse_known_args(list(flags))
  for arg in unknown:
    if arg == "--":
      break
    if not arg.startswith("-"):
      continue  # the value of an unknown flag, named with it already
    return _unknown_flag(arg, parser, list(own_flags), config_keys)
  return _runner_problem(known.runner)


def _beam_parser():
  """Beam's own parser of every pipeline option it defines."""
  # Runner options (Flink, Prism, Dataflow, ...) are defined in this module.
  from apache_beam.options import pipeline_options  # pylint: disable=g-import-not-at-top
  parser = pipeline_options._BeamArgumentParser(allow_abbrev=False)  # pylint: disable=protected-access
  seen = set()
  for cls in pipeline_options.PipelineOptions.__subclasses__():
    if cls.__name__ not in seen:  # a class imported twice would clash
      seen.add(cls.__name__)
      cls._add_argparse_args(parser)  # pylint: disable=protected-access
  return parser


def _unknown_flag(arg: str, parser, own_flags, config_keys) -> str:
  name, _, value = arg.partition("=")
  bare = name.lstrip("-").replace("-", "_")
  if bare in config_keys:
    sets = " or ".join(f"--set {path}={value or '...'}" for path in config_keys[bare])
    return f"unknown flag {name}: config keys are set with --set: {sets}"
  if not name.startswith("--"):
    return f"unknown flag {name}: flags start with --"
  known = own_flags + [s for a in parser._actions for s in a.option_strings  # pylint: disable=protected-access
                       if s.startswith("--")]
  close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
  hint = f"; did you mean {close[0]}?" if close else (
      " (not a tfcascade flag nor a Beam pipeline option; "
      "tfcascade run --help lists ours)")
  return f"unknown flag {name}{hint}"


def _runner_problem(runner: Optional[str]) -> Optional[str]:
  """Why Beam cannot create `runner`, or None (None: the default runner)."""
  if not runner:
    return None
  from apache_beam.options.pipeline_options import StandardOptions  # pylint: disable=g-import-not-at-top
  from apache_beam.runners.runner import create_runner  # pylint: disable=g-import-not-at-top
  try:
    create_runner(runner)
  except (ValueError, ImportError, AttributeError) as e:
    known = {n.lower(): n for n in StandardOptions.KNOWN_RUNNER_NAMES}
    close = difflib.get_close_matches(runner.lower(), known, n=1, cutoff=0.75)
    hint = (f"; did you mean {known[close[0]]}?" if close
            else f" (known: {', '.join(known.values())})")
    reason = "" if isinstance(e, ValueError) else f": {type(e).__name__}: {e}"
    return f"--runner={runner}: no such Beam runner{reason}{hint}"
  return None
