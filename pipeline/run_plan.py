"""Planning a run (launcher side, any engine): everything that can fail
without data fails here, before any worker starts — the config, the input
files (matched and pinned: size, modification time), the checkpoints (every
variable's shape and dtype), the wiring and gates — and the models are
pinned (engine.pinning). The plan is what both the Beam job and the Spark job
run, and what makes two runs "the same" for resuming (`run_key`).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import time
from typing import Dict, List

from tfcascade.pipeline.config import JobConfig
from tfcascade.pipeline.input_files import match_inputs
from tfcascade.transforms.engine import CascadeSpec, build_cascade_graph, pin_models
from tfcascade.transforms.reading.record_ranges import InputFile
from tfcascade.transforms.writing.parquet_writer import PARQUET_SUFFIX


@dataclasses.dataclass
class Preflight:
  """What the launcher found and pinned.

  Attributes:
    files: every input file, matched and pinned.
    plan: per-stage StagePlans (resolved checkpoint, fingerprint, restore).
    warnings: for the user, printed with the plan.
    spec: the engine's spec with every model pinned (what workers run).
    run_key: what makes two runs of this output the same job (see run_key).
  """
  files: List[InputFile]
  plan: list
  warnings: List[str]
  spec: CascadeSpec
  run_key: Dict[str, str]


def preflight(config: JobConfig) -> Preflight:
  """Checks inputs, checkpoints, variables and wiring without reading data."""
  files = match_inputs(config)
  spec = config.cascade_spec()
  cascade = build_cascade_graph(spec)
  pinned = pin_models(spec, cascade.plan)
  known = set(config.input.features)
  warnings = [unused_warning(p) for p in cascade.plan if p.unused]
  undeclared = [n for n in config.output.passthrough if n not in known]
  if undeclared:
    warnings.append(f"output.passthrough {undeclared} are not declared under "
                    f"input.features; they are copied when present")
  return Preflight(files, cascade.plan, warnings, pinned, run_key(config, pinned))


def run_key(config: JobConfig, pinned: CascadeSpec) -> Dict[str, str]:
  """What makes two runs of an output the same job: the config as loaded
  (after --set) and the pinned models' fingerprints. Input files are pinned
  per unit of work instead (a changed file invalidates its own units only).
  """
  def digest(obj) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
  # How records are read does not change what a run writes.
  return {"config": digest(config.model_dump(mode="json",
                                             exclude={"input": {"read_in_graph"}})),
          "models": digest([[s.name, s.checkpoint, [list(f) for f in s.fingerprints]]
                            for s in pinned.stages])}


def unused_warning(plan, limit: int = 10) -> str:
  """The warning for checkpoint variables the fetched outputs do not read
  (restored or not); byte-identical copies of read ones are not listed."""
  names = ", ".join(plan.unused[:limit]) + (
      f", ... ({len(plan.unused) - limit} more)" if len(plan.unused) > limit else "")
  restored = sum(1 for n in plan.unused if n in plan.restored)
  how = (f"{restored} of them restored by {plan.restored_by} anyway"
         if restored else "not restored")
  return (f"stage '{plan.name}': checkpoint {plan.checkpoint} holds "
          f"{len(plan.unused)} variable{'' if len(plan.unused) == 1 else 's'} "
          f"that outputs {sorted(plan.outputs)} do not read ({how}): {names}")


def predictions_suffix(config: JobConfig) -> str:
  if config.output.format == "parquet":  # compressed inside: output.compression is its codec
    return PARQUET_SUFFIX
  suffix = ".tfrecord" if config.output.format == "tfrecord" else ".jsonl"
  return suffix + (".gz" if config.output.compression == "gzip" else "")


def run_info(config: JobConfig, pre: Preflight, runner: str, run_id: str) -> dict:
  """What the summary says about the run besides counts (picklable)."""
  pinned = {s.name: dict(s.fingerprints) for s in pre.spec.stages}
  return {
      "run_id": run_id,
      "run_key": pre.run_key,
      "num_shards": config.output.num_shards,
      "runner": runner,
      "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "start_epoch": time.time(),
      "output_format": config.output.format,
      "predictions_suffix": predictions_suffix(config),
      "max_dead_letter_fraction": config.dead_letter.max_fraction,
      "run_date": config.run_date.isoformat() if config.run_date else None,
      # Each stage's position in the config's stages: the number the final
      # answer's `final/stage` column holds for it (engine.final_answer).
      "stages": [{"name": p.name, "position": position, "gate": p.gate or None,
                  "source": p.source,
                  "checkpoint": p.checkpoint, "fingerprint": p.fingerprint,
                  "global_step": p.global_step,
                  "variables_restored": p.variables_restored,
                  "restored_by": p.restored_by,
                  "variables_read": len(p.read),
                  "restore": p.restore_text(),
                  "model_files": pinned.get(p.name, {})}
                 for position, p in enumerate(pre.plan)],
  }
