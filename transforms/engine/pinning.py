"""Models pinned at launch: the exact files each stage restores, and their
fingerprints, checked by every worker before it scores.

A stage whose config names a checkpoint DIRECTORY would otherwise restore
"the latest checkpoint" as each worker finds it when it starts: a training
job writing a new checkpoint next door while a run starts gives an output
scored by the new model under a summary naming the old one, or (workers
starting at different times) a mix of both. So the launcher resolves every
source to files (a checkpoint prefix's `.index`, the `.meta` file, a
SavedModel's `saved_model.pb` and `variables/variables.index`) and pins
their SHA-256 into the spec the workers receive; a worker restores exactly
those files and checks the fingerprints before and after restoring. The
`.index` holds a CRC32C of every tensor, which TensorFlow checks when it
reads the tensor from the `.data` files, so pinning the index pins the
weights too. A builder's graph is code: it is pinned by the installed
package, not here.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import List

import tensorflow as tf

from tfcascade.transforms.engine.spec import CascadeSpec, StageSpec

_BLOCK = 1 << 20


class ModelChangedError(RuntimeError):
  """A pinned model file is not the one the launcher planned with."""


def fingerprint_file(path: str) -> str:
  """"sha256:<hex>" of a file's bytes (any TF file system path)."""
  digest = hashlib.sha256()
  with tf.io.gfile.GFile(path, "rb") as f:
    while True:
      block = f.read(_BLOCK)
      if not block:
        return f"sha256:{digest.hexdigest()}"
      digest.update(block)


def model_files(stage: StageSpec, checkpoint_prefix: str) -> List[str]:
  """The files that make a stage's model (checkpoint_prefix: resolved, or "")."""
  files = [checkpoint_prefix + ".index"] if checkpoint_prefix else []
  source = stage.source
  if source.source_type == "meta_graph":
    files.append(source.ref)
  elif source.source_type == "saved_model":
    root = source.ref.rstrip("/")
    graph = f"{root}/saved_model.pb"
    files.append(graph if tf.io.gfile.exists(graph) else f"{root}/saved_model.pbtxt")
    variables = f"{root}/variables/variables.index"
    if tf.io.gfile.exists(variables):
      files.append(variables)
  return files


def pin_models(spec: CascadeSpec, plan) -> CascadeSpec:
  """`spec` with each stage's checkpoint resolved to the prefix the launcher
  planned with (`plan`: build_cascade_graph's StagePlans) and its files'
  fingerprints pinned."""
  prefixes = {p.name: p.checkpoint for p in plan}
  stages = []
  for stage in spec.stages:
    prefix = prefixes.get(stage.name) or ""
    files = model_files(stage, prefix)
    stages.append(dataclasses.replace(
        stage, checkpoint=prefix or stage.checkpoint,
        fingerprints=tuple((f, fingerprint_file(f)) for f in files)))
  return dataclasses.replace(spec, stages=tuple(stages))


def verify_pins(spec: CascadeSpec, when: str) -> None:
  """Raises ModelChangedError naming the stage, the file and both
  fingerprints when a pinned file differs (or is gone)."""
  for stage in spec.stages:
    for path, planned in stage.fingerprints:
      try:
        found = fingerprint_file(path)
      except (tf.errors.OpError, OSError) as e:
        found = f"unreadable ({type(e).__name__})"
      if found != planned:
        raise ModelChangedError(
            f"stage '{stage.name}': model file {path} changed {when}: planned "
            f"{planned}, found {found}; nothing of this run is published (it would "
            f"mix models). Rerun to pin the model as it is now")
