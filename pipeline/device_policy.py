"""Whether the launcher checks `session.device` itself (launcher side).

A GPU job is often launched from a machine without a GPU (a laptop, the
Dataflow Flex Template launcher) for workers that have one: the launcher
checks the device only when the workers run on its own machine; otherwise
each worker checks before it opens its session (transforms/gpu_check.py).
"""

from __future__ import annotations

from typing import Optional, Sequence

# Beam runners whose workers are threads or processes of this machine.
LOCAL_RUNNERS = ("directrunner", "prismrunner", "switchingdirectrunner",
                 "bundlebaseddirectrunner")


def workers_are_local(engine: str = "beam", master: Optional[str] = None,
                      beam_args: Sequence[str] = ()) -> bool:
  """True when the job's workers would run on this machine."""
  if engine == "spark":
    return (master or "local[*]").startswith("local")
  from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions  # pylint: disable=g-import-not-at-top
  runner = PipelineOptions(list(beam_args)).view_as(StandardOptions).runner
  if runner is None:
    return True  # the CLI's default: the DirectRunner
  name = str(runner).rsplit(".", 1)[-1].lower()
  return name in LOCAL_RUNNERS or name + "runner" in LOCAL_RUNNERS


def device_problem(config, local: bool = True) -> Optional[str]:
  """Why the config's session cannot run here, or None (also None when the
  workers are elsewhere: they check themselves)."""
  if config.session.device != "gpu" or not local:
    return None
  from tfcascade.transforms.gpu_check import gpu_problem  # pylint: disable=g-import-not-at-top
  return gpu_problem()
