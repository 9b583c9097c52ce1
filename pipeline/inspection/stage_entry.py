"""Text for the ready-to-paste `stages:` entry and for tensors: a stage name
from a model path, YAML flow mappings, feature and output name guesses, and
a TensorProto dtype or shape as words.
"""

from __future__ import annotations

import json
import os
import re
from typing import Dict, Optional


def dtype_name(enum: int) -> str:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    return tf.as_dtype(enum).name
  except TypeError:
    return f"dtype#{enum}"


def shape_text(shape_proto) -> str:
  if shape_proto.unknown_rank:
    return "unknown"
  return str([d.size for d in shape_proto.dim])


def stage_name(path: str) -> str:
  """A stage name from a model path: its directory name, made a valid name."""
  parts = [p for p in os.path.normpath(path).split(os.sep) if p and p != "."]
  name = parts[-1] if parts else "model"
  if name.isdigit() and len(parts) > 1:  # export/<version>/
    name = parts[-2]
  name = re.sub(r"\W", "_", name)
  return name if re.match(r"^[A-Za-z_]", name) else f"m_{name}"


def _yaml_key(key: str) -> str:
  return key if re.fullmatch(r"[A-Za-z_][\w.]*", key) else json.dumps(key)


def flow(mapping: Dict[str, str]) -> str:
  return "{" + ", ".join(f"{_yaml_key(k)}: {_yaml_key(v)}" for k, v in mapping.items()) + "}"


def feature_guess(key: str) -> str:
  return "features." + re.sub(r"\W", "_", key.split(":")[0].split("/")[-1])


def output_name(key: str) -> str:
  name = re.sub(r"\W", "_", key.split(":")[0].split("/")[-1])
  return name if re.match(r"^[A-Za-z_]", name) else f"out_{name}"


def paste_path(path: str, relative_to: Optional[str]) -> str:
  """`path` as a config kept in the directory `relative_to` names it (a
  config's paths are relative to its own directory); as given when
  `relative_to` is None, and for URLs, which are never relative."""
  if not _rebased(path, relative_to):
    return path
  return os.path.relpath(os.path.abspath(path), os.path.abspath(relative_to))


def paths_hint(path: str, relative_to: Optional[str]) -> str:
  """A YAML comment for the entry: what its paths are relative to."""
  if _rebased(path, relative_to):
    return (f"# paths relative to {relative_to}: paste into a config kept there "
            f"(a config's paths are relative to the config file)")
  if "://" in path or os.path.isabs(path):
    return "# absolute paths: paste-ready in a config kept anywhere"
  return ("# paths relative to the current directory; --relative-to configs/ "
          "for a config in configs/")


def _rebased(path: str, relative_to: Optional[str]) -> bool:
  return relative_to is not None and "://" not in path and "://" not in relative_to
