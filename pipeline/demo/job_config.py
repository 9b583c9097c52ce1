"""`<demo>/config.yaml`: the demo job for a demo wherever it was written.

configs/local.yaml (the annotated one) reads `./demo` of a repository
checkout; this config reads the demo next to it and works from any directory,
also with an installed tfcascade. It says what configs/local.yaml says (a test
keeps them equal but for the paths), built from the demo's own names.
"""

from __future__ import annotations

import os

import yaml

from tfcascade.pipeline.demo import dataset
from tfcascade.pipeline.demo import models
from tfcascade.pipeline.demo.demo_dir import CONFIG


def job_config(name: str, stages: dict) -> dict:
  """The demo job's config for a demo directory called `name`.

  Args:
    name: the demo directory's name. The job writes ../<name>-predictions:
      next to the demo, not in it (a rebuild replaces the demo whole).
    stages: train_demo_models' entries for "a" and "b" (their tensor names).
  """
  a, b = stages["a"], stages["b"]
  return {
      "input": {"pattern": "data/part-*.tfrecord.gz", "compression": "auto",
                "on_corrupt": "fail", "features": dataset.FEATURES},
      "stages": [
          _stage("a", {a["inputs"]["input"]: "features.pixels"}, a["outputs"]),
          _stage("b", {b["inputs"]["input"]: "a.logits",
                       b["inputs"]["pixels"]: "features.pixels"},
                 {"probs": b["outputs"]["probs"],
                  "prediction": b["outputs"]["prediction"]},
                 run_if=f"a.confidence < {models.CONFIDENCE_THRESHOLD:g}",
                 fill_value=0)],
      "output": {"path": f"../{name}-predictions", "format": "tfrecord",
                 "passthrough": ["id", "label"]},
      "batch_size": 1024,
  }


def _stage(name: str, inputs: dict, outputs: dict, **gate) -> dict:
  model_dir = f"models/{name}"
  return {"name": name, "checkpoint": model_dir,
          "meta_graph": f"{model_dir}/{models.META_GRAPH}",
          "inputs": inputs, "outputs": outputs, **gate}


def write_job_config(demo_dir: str, name: str, stages: dict) -> str:
  """Writes `<demo_dir>/config.yaml` (see job_config); returns its path."""
  path = os.path.join(demo_dir, CONFIG)
  with open(path, "w") as f:
    f.write("# The demo job on this demo (written by `tfcascade demo`). Paths are "
            "relative to this file.\n# tfcascade validate --config THIS_FILE, then "
            "tfcascade run --config THIS_FILE\n")
    yaml.safe_dump(job_config(name, stages), f, sort_keys=False)
  return path
