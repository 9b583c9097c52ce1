"""What `tfcascade demo` prints: a few lines; the rest is in demo.json."""

from __future__ import annotations

import os
import shlex

import yaml

from tfcascade.pipeline.demo import job_config

# What build_demo's "rebuilt" did, for the first line.
_REBUILT = {
    "models and data": "demo written to {out}: models a, b and c trained (seed {seed})",
    "data": ("demo written to {out}: models a, b and c kept (same seed, steps and demo "
             "version), data rewritten"),
    "nothing": ("demo in {out} is up to date (same records, shards, seed and demo "
                "version): nothing rebuilt"),
}
# configs/local.yaml reads ./demo from a repository checkout.
_LOCAL_CONFIG = os.path.join("configs", "local.yaml")


def demo_lines(report: dict, out: str) -> str:
  """The lines for build_demo's `report` of the demo in `out`."""
  files = report["data"]["files"]
  shift = (f"; data washed out by --shift {report['shift']:g}"
           if report.get("shift") else "")
  return "\n".join([
      _REBUILT[report["rebuilt"]].format(out=out, seed=report["seed"])
      + f"; {report['records']:,} records in {len(files)} file(s) "
        f"({report['data']['pattern']}){shift}",
      f"  accuracy on those records: a alone {report['a_accuracy']:.2%}, b alone "
      f"{report['b_accuracy']:.2%}, cascade {report['cascade_accuracy']:.2%} "
      f"(b runs where a.confidence < {report['confidence_threshold']:g}: "
      f"{report['b_share']:.1%} of rows)",
      f"  details: {os.path.join(out, 'demo.json')}",
      f"  next: {next_step(out)}"])


def next_step(out: str) -> str:
  """The command to run next, true for a demo in `out` from here."""
  if os.path.isfile(_LOCAL_CONFIG) and os.path.realpath(out) == os.path.realpath("demo"):
    return (f"tfcascade validate --config {_LOCAL_CONFIG} (it reads ./demo, writes "
            f"./out/predictions; README: 'The demo')")
  config = shlex.quote(os.path.join(out, job_config.CONFIG))
  return (f"tfcascade validate --config {config}, then tfcascade run --config {config} "
          f"(it writes {shlex.quote(_output_of(out))})")


def _output_of(out: str) -> str:
  """The output path the demo's config names, from here."""
  with open(os.path.join(out, job_config.CONFIG)) as f:
    path = yaml.safe_load(f)["output"]["path"]
  return os.path.normpath(os.path.join(out, path))
