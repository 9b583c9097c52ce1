"""Job config: YAML -> validated, frozen objects (launcher side only).

Config says *what* (inputs, models, outputs); Beam flags say *where*. Paths in
the file are relative to the file; paths given with --set are relative to the
current directory. Nothing in a config is evaluated as code: `run_if` is parsed
by a small grammar, and `builder: module:function` is the only code a config
can name.
"""

from __future__ import annotations

import datetime
import math
import os
import posixpath
from typing import Dict, List, Literal, Optional, Sequence, Tuple, Union

import pydantic
import yaml

from tfcascade.transforms.writing.encoders import ENCODERS
from tfcascade.transforms.writing.parquet_writer import PARQUET_CODECS
from tfcascade.transforms.engine.spec import (COMBINE_OPS, DEVICES, FEATURE_DTYPES,
                                              SOURCE_TYPES, CascadeSpec, CombineSpec,
                                              FeatureSpec, ModelSource, SessionSpec,
                                              StageSpec, combine_stage)
from tfcascade.transforms.formats.tfrecord_framing import (COMPRESSIONS, DEFAULT_BATCH_BYTES,
                                                      DEFAULT_MAX_RECORD_BYTES)


class ConfigError(ValueError):
  """The config is invalid; the message names the file and the key path."""


class _Loader(yaml.SafeLoader):
  """YAML without implicit dates: `run_date: 2026-02-30` stays a string that
  the schema rejects naming the key, instead of PyYAML's bare ValueError."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def _parse_yaml(text: str):
  return yaml.load(text, Loader=_Loader)  # safe: a SafeLoader subclass


class _Model(pydantic.BaseModel):
  model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class Feature(_Model):
  dtype: Literal[FEATURE_DTYPES]
  shape: Tuple[pydantic.NonNegativeInt, ...] = ()
  default: Optional[Union[float, int, str, List[Union[float, int, str]]]] = None


class Input(_Model):
  pattern: Union[str, List[str]]
  compression: Literal[COMPRESSIONS] = "auto"
  on_corrupt: Literal["fail", "quarantine"] = "fail"
  max_record_bytes: pydantic.PositiveInt = DEFAULT_MAX_RECORD_BYTES
  # Uncompressed files larger than this are read by several workers in byte
  # ranges (record boundaries from a tfrecord2idx `.idx` file or a scan).
  split_bytes: pydantic.PositiveInt = 256 << 20
  # Read local files inside TensorFlow where nothing needs a record's bytes
  # (scoring.unit_batches); false: every record through the Python reader.
  read_in_graph: bool = True
  features: Dict[str, Feature]

  @property
  def patterns(self) -> List[str]:
    return [self.pattern] if isinstance(self.pattern, str) else list(self.pattern)


class Combine(_Model):
  """A combine stage's `combine:` (engine.combine): no model, no checkpoint."""
  op: Literal[COMBINE_OPS]
  inputs: List[str] = pydantic.Field(min_length=2)
  weights: Optional[List[float]] = None

  @pydantic.model_validator(mode="after")
  def _weights_fit(self):
    for ref in self.inputs:
      head, _, tail = ref.partition(".")
      if not head or not tail:
        raise ValueError(f"input {ref!r}: expected <stage>.<output>")
    if self.op != "weighted_mean":
      if self.weights is not None:
        raise ValueError(f"weights are for op weighted_mean, not {self.op}")
      return self
    if self.weights is None or len(self.weights) != len(self.inputs):
      raise ValueError(f"op weighted_mean needs one weight per input: "
                       f"{len(self.inputs)} inputs, weights {self.weights}")
    if not all(w >= 0 and math.isfinite(w) for w in self.weights) or not sum(self.weights):
      raise ValueError(f"weights {self.weights} must be >= 0, not all 0")
    return self

  def spec(self) -> CombineSpec:
    return CombineSpec(self.op, tuple(self.inputs), tuple(self.weights or ()))


class Stage(_Model):
  name: str = pydantic.Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
  combine: Optional[Combine] = None
  checkpoint: Optional[str] = None
  # One field per entry of SOURCE_TYPES, holding that source's ref; give one.
  meta_graph: Optional[str] = None
  builder: Optional[str] = pydantic.Field(default=None, pattern=r"^[\w.]+:\w+$")
  saved_model: Optional[str] = None
  tags: Tuple[str, ...] = ("serve",)
  signature: str = "serving_default"
  scope: Optional[str] = None
  inputs: Dict[str, str] = {}
  outputs: Dict[str, str] = {}
  run_if: Optional[str] = None
  fill_value: float = 0.0

  @property
  def source_types(self) -> List[str]:
    """The source types given (a valid stage has exactly one)."""
    return [t for t in SOURCE_TYPES if getattr(self, t)]

  @pydantic.model_validator(mode="after")
  def _one_source(self):
    given = self.source_types
    if self.combine is not None:
      extra = given + [k for k in ("checkpoint", "scope", "inputs", "outputs")
                       if getattr(self, k)]
      if extra:
        raise ValueError(f"a combine stage has no model: drop {', '.join(extra)} "
                         f"(its inputs are combine.inputs, its outputs probs and "
                         f"prediction)")
      return self
    if len(given) != 1:
      raise ValueError(f"give exactly one of {', '.join(SOURCE_TYPES)}, or combine "
                       f"(got {given or 'none'})")
    if not self.saved_model and not self.checkpoint:
      raise ValueError("checkpoint is required (a prefix or a directory)")
    if not self.inputs or not self.outputs:
      raise ValueError("inputs and outputs must each name at least one tensor")
    return self


class Output(_Model):
  path: str
  format: Literal[tuple(ENCODERS)] = "tfrecord"
  # tfrecord, jsonl: the whole file gzipped or not; parquet: its codec
  # (column chunks compressed inside the file), snappy when not given.
  compression: Literal[PARQUET_CODECS] = "none"
  passthrough: Tuple[str, ...] = ()
  num_shards: pydantic.NonNegativeInt = 0  # 0: the runner decides
  # The final answer's outputs (`final/<output>`, `final/stage`): true: the
  # default ones (engine.final_answer); false or []: none; a list: these.
  final: Union[bool, List[str]] = True

  @property
  def final_outputs(self) -> Optional[Tuple[str, ...]]:
    """CascadeSpec.final: None for the default, () for none."""
    if self.final is True:
      return None
    return tuple(self.final or ())

  @pydantic.model_validator(mode="before")
  @classmethod
  def _parquet_default_codec(cls, data):
    # Snappy: what Spark and pyarrow write by default, cheap to decode. A
    # default of "none" would have changed every existing config's run_key.
    if isinstance(data, dict) and data.get("format") == "parquet" and \
        data.get("compression") is None:
      return {**data, "compression": "snappy"}
    return data

  @pydantic.model_validator(mode="after")
  def _codec_fits_format(self):
    if self.format != "parquet" and self.compression not in ("none", "gzip"):
      raise ValueError(f"compression {self.compression!r} is a Parquet codec; format "
                       f"{self.format} takes none or gzip")
    return self


class Session(_Model):
  # 0: this worker process's share of the machine's cores.
  intra_op_threads: pydantic.NonNegativeInt = 0
  inter_op_threads: pydantic.NonNegativeInt = 0
  device: Literal[DEVICES] = "cpu"
  # Worker processes per machine, each with its own session; null: from the
  # runner's options (DirectRunner multi_processing: direct_num_workers;
  # Dataflow: one per vCPU; otherwise 1). 0: one per core.
  processes_per_host: Optional[pydantic.NonNegativeInt] = None


class DeadLetter(_Model):
  # Rows whose float outputs hold NaN/Inf are dead-lettered, not written.
  non_finite_outputs: bool = True
  # The largest share of records read that may be dead-lettered in a run
  # that still publishes: a handful of bad records in a big run pass, a run
  # that rejects everything (an upstream schema change) fails. 1 accepts any.
  max_fraction: float = pydantic.Field(default=0.01, ge=0.0, le=1.0)


class JobConfig(_Model):
  input: Input
  stages: List[Stage] = pydantic.Field(min_length=2)
  output: Output
  batch_size: pydantic.PositiveInt = 1024
  # A batch also ends before a record that would take its serialized bytes
  # past this (a larger record is a batch alone): wide records (images,
  # embeddings) at batch_size would hold GBs per batch in flight.
  batch_bytes: pydantic.PositiveInt = DEFAULT_BATCH_BYTES
  session: Session = Session()
  dead_letter: DeadLetter = DeadLetter()
  run_date: Optional[datetime.date] = None

  @pydantic.model_validator(mode="after")
  def _parquet_passthrough_declared(self):
    # A Parquet column's type and shape are the feature's declaration, and
    # every row has a value: passthrough features parsed in-graph, required.
    if self.output.format != "parquet":
      return self
    for name in self.output.passthrough:
      feature = self.input.features.get(name)
      if feature is None:
        raise ValueError(f"output.passthrough {name!r}: format parquet writes declared "
                         f"features only (the column's type is the declaration's): "
                         f"declare it under input.features")
      if feature.default is not None:
        raise ValueError(f"output.passthrough {name!r}: format parquet writes required "
                         f"features only (a record without it would get the default "
                         f"written as if it were data): drop its default, or use "
                         f"format tfrecord or jsonl, which copy it only where present")
    return self

  @pydantic.model_validator(mode="after")
  def _templates(self):
    templated = [p for p in self.input.patterns + [self.output.path]
                 if "{run_date}" in p]
    if templated and self.run_date is None:
      raise ValueError(f"{templated[0]!r} uses {{run_date}}: set run_date "
                       f"(e.g. --set run_date=2026-11-25)")
    return self

  def cascade_spec(self) -> CascadeSpec:
    """The engine's view of this config."""
    features = tuple(FeatureSpec(name, f.dtype, tuple(f.shape), f.default)
                     for name, f in self.input.features.items())
    stages = []
    for s in self.stages:
      if s.combine is not None:
        stages.append(combine_stage(s.name, s.combine.spec(), s.run_if, s.fill_value))
        continue
      source_type = s.source_types[0]
      stages.append(StageSpec(
          name=s.name,
          source=ModelSource(source_type, getattr(s, source_type), tuple(s.tags),
                             s.signature),
          checkpoint=s.checkpoint or "", scope=s.scope or s.name,
          inputs=dict(s.inputs), outputs=dict(s.outputs), run_if=s.run_if,
          fill_value=s.fill_value))
    session = SessionSpec(self.session.intra_op_threads,
                          self.session.inter_op_threads, self.session.device,
                          self.session.processes_per_host
                          if self.session.processes_per_host is not None else 1)
    # Required declared features pass through from the in-graph parse: same
    # values, no Python re-parse. Optional ones (a default would be invented
    # for records lacking them) and undeclared ones are copied raw.
    parsed = tuple(n for n in self.output.passthrough
                   if n in self.input.features and self.input.features[n].default is None)
    return CascadeSpec(features, tuple(stages), session, parsed, self.output.final_outputs)

  @property
  def input_patterns(self) -> List[str]:
    return [_render(p, self.run_date) for p in self.input.patterns]

  @property
  def output_path(self) -> str:
    return _render(self.output.path, self.run_date)


def _render(path: str, run_date) -> str:
  return path.replace("{run_date}", run_date.isoformat()) if run_date else path


# --- loading ----------------------------------------------------------------

_PATH_KEYS = {("input", "pattern"), ("output", "path"), ("stages", "*", "checkpoint"),
              ("stages", "*", "meta_graph"), ("stages", "*", "saved_model")}


def _is_path_key(keys: Sequence) -> bool:
  generic = tuple("*" if isinstance(k, int) else k for k in keys)
  return generic in _PATH_KEYS or generic[:-1] in {("input", "pattern")}


def _absolute(value, base: str):
  if isinstance(value, list):
    return [_absolute(v, base) for v in value]
  if not isinstance(value, str) or not value or "://" in value or os.path.isabs(value):
    return value
  if "://" in base:  # a config read from gs:// etc.: resolve against its URL
    return posixpath.join(base, value)
  return os.path.normpath(os.path.join(base, value))


def _resolve_paths(node, base: str, keys=()):
  if _is_path_key(keys):
    return _absolute(node, base)
  if isinstance(node, dict):
    return {k: _resolve_paths(v, base, keys + (k,)) for k, v in node.items()}
  if isinstance(node, list):
    return [_resolve_paths(v, base, keys + (i,)) for i, v in enumerate(node)]
  return node


def apply_override(raw: dict, assignment: str) -> Tuple[Tuple, object]:
  """Applies one `dotted.key=value` to the raw config dict, in place.

  List items are addressed by index or, for stages, by name
  (`stages.b.run_if=...`). The value is parsed as YAML (numbers, lists, ...);
  an empty value sets null.

  Returns:
    The resolved key path and the parsed value.
  """
  key, sep, text = assignment.partition("=")
  if not sep or not key:
    raise ConfigError(f"--set {assignment!r}: expected dotted.key=value")
  try:
    value = _parse_yaml(text) if text else None  # `key=` unsets a key
  except yaml.YAMLError as e:
    raise ConfigError(f"--set {assignment}: the value is not valid YAML "
                      f"({getattr(e, 'problem', None) or type(e).__name__}); quote "
                      f"it for a string, e.g. --set '{key}=\"{text}\"'") from None
  node, path = raw, []
  parts = key.split(".")
  for i, part in enumerate(parts):
    last = i == len(parts) - 1
    if isinstance(node, list):
      index = (int(part) if part.isdigit() else
               next((j for j, item in enumerate(node)
                     if isinstance(item, dict) and item.get("name") == part), None))
      if index is None or index >= len(node):
        raise ConfigError(f"--set {key}: no item {part!r} in {'.'.join(map(str, path))}")
      part = index
    elif not isinstance(node, dict):
      raise ConfigError(f"--set {key}: {'.'.join(map(str, path))} is not a mapping")
    path.append(part)
    if last:
      node[part] = value
    else:
      if isinstance(node, dict) and part not in node:
        node[part] = {}
      node = node[part]
  return tuple(path), value


def _format_errors(source: str, error: pydantic.ValidationError,
                   overridden: Sequence[Tuple]) -> str:
  """One line for one error; a line per key path for several."""
  lines = []
  for err in error.errors():
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
      message = "unknown key"
    if any(tuple(err["loc"][:len(keys)]) == keys for keys in overridden):
      message += " (from --set)"
    lines.append(f"{where}: {message}")
  if len(lines) == 1:
    return f"invalid config {source}: {lines[0]}"
  return f"invalid config {source}:\n  " + "\n  ".join(lines)


def load_config(path: str, overrides: Sequence[str] = ()) -> JobConfig:
  """Loads, overrides, path-resolves and validates a YAML job config.

  Args:
    path: the YAML file.
    overrides: `dotted.key=value` strings from --set.

  Raises:
    ConfigError: naming the file and every bad key path.
  """
  try:
    raw = _parse_yaml(_read_text(path))
  except (OSError, IOError) as e:
    raise ConfigError(f"cannot read config {path}: {getattr(e, 'strerror', None) or e}") from e
  except UnicodeDecodeError as e:  # a binary file (an image, a checkpoint, ...)
    raise ConfigError(f"config {path} is not a text file (byte {e.start} is not "
                      f"UTF-8): expected a YAML job config") from None
  except yaml.YAMLError as e:
    where = getattr(e, "problem_mark", None)
    at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    raise ConfigError(f"config {path} is not valid YAML{at}: {problem}") from None
  if raw is None:
    raise ConfigError(f"config {path} is empty: expected a YAML job config "
                      f"(input:, stages:, output:)")
  if not isinstance(raw, dict):
    raise ConfigError(f"config {path} must be a YAML mapping (input:, stages:, "
                      f"output:), not a {type(raw).__name__}")
  base = posixpath.dirname(path) if "://" in path else os.path.dirname(os.path.abspath(path))
  raw = _resolve_paths(raw, base)
  overridden = []
  for assignment in overrides:
    keys, value = apply_override(raw, assignment)
    overridden.append(keys)
    if _is_path_key(keys):  # --set paths are relative to where the user is
      _assign(raw, keys, _absolute(value, os.getcwd()))
  try:
    return JobConfig.model_validate(raw)
  except pydantic.ValidationError as e:
    raise ConfigError(_format_errors(path, e, overridden)) from None


def key_paths() -> Dict[str, List[str]]:
  """Each config key's name -> its dotted paths (`max_fraction` ->
  [`dead_letter.max_fraction`]), to suggest `--set` for a key given as a flag."""
  paths: Dict[str, List[str]] = {}

  def walk(model, prefix):
    for name, field in model.model_fields.items():
      paths.setdefault(name, []).append(prefix + name)
      if isinstance(field.annotation, type) and issubclass(field.annotation, _Model):
        walk(field.annotation, f"{prefix}{name}.")

  walk(JobConfig, "")
  return paths


def _read_text(path: str) -> str:
  """Reads a local file, or any Beam FileSystems URL (gs://...) for templates."""
  if "://" not in path:
    with open(path) as f:
      return f.read()
  from apache_beam.io.filesystems import FileSystems  # pylint: disable=g-import-not-at-top
  try:
    with FileSystems.open(path) as f:
      return f.read().decode("utf-8")
  except Exception as e:  # BeamIOError and friends
    raise OSError(str(e)) from e


def _assign(raw, keys, value):
  node = raw
  for k in keys[:-1]:
    node = node[k]
  node[keys[-1]] = value
