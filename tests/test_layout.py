"""The package layout holds, for every Python package of the repository:

- one installed namespace: the repository's `pipeline/` and `transforms/`
  folders are `tfcascade.pipeline` / `tfcascade.transforms`, and no code
  imports a top-level `pipeline` or `transforms` (a user's own would win);
- no module name repeats across the installed tree (`__init__` aside);
- workers never import the launcher; the reader never imports the publisher;
  the engine-agnostic steps never import the Beam or Spark adapters;
- the import graph of our own modules (module-level and function-level
  imports alike, benchmarks, dataflow and examples included) has no cycle.
"""

import ast
import collections
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Repository folder -> the import name its modules have.
INSTALLED = {"tfcascade": "tfcascade", "pipeline": "tfcascade.pipeline",
             "transforms": "tfcascade.transforms"}
TOOLS = ("benchmarks", "dataflow")  # imported by their repository path
EXAMPLES = "examples"  # Airflow puts this folder on sys.path: top-level names
WORKER_MODULES = [
    "tfcascade.transforms", "tfcascade.transforms.engine",
    "tfcascade.transforms.reading.record_ranges", "tfcascade.transforms.unit_runner",
    "tfcascade.transforms.beam.score_units",
    "tfcascade.transforms.beam.cascade_handler", "tfcascade.transforms.spark.partition_task",
    "tfcascade.transforms.publishing.finalize", "tfcascade.transforms.writing.encoders"]
# The steps of the data flow that any engine uses; adapters build on them.
ENGINE_AGNOSTIC = ["tfcascade.transforms." + p for p in (
    "accounting", "formats", "reading", "scoring", "writing", "publishing", "engine",
    "unit_runner", "paths")]


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(ROOT).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  if parts[0] in INSTALLED:
    parts[0:1] = INSTALLED[parts[0]].split(".")
  elif parts[0] == EXAMPLES:
    parts.pop(0)
  return ".".join(parts)


def _our_modules():
  folders = list(INSTALLED) + list(TOOLS) + [EXAMPLES]
  return {_module_name(p): p for folder in folders for p in (ROOT / folder).rglob("*.py")}


def _imported_names(path: pathlib.Path):
  """Every dotted name `path` imports anywhere in its body (absolute imports)."""
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      yield node.module
      yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _imports(path: pathlib.Path, modules) -> set:
  """Our modules `path` imports anywhere in its body."""
  return {n for n in _imported_names(path) if n in modules}


def import_graph():
  modules = _our_modules()
  return {name: _imports(path, modules) for name, path in modules.items()}


def find_cycle(graph):
  """A list of modules forming a cycle, or None."""
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == "open":
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        cycle = visit(nxt)
        if cycle:
          return cycle
    state[node] = "done"
    stack.pop()
    return None

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node)
      if cycle:
        return cycle
  return None


def _offenders(importer_prefixes, imported_prefixes):
  return {name: sorted(d for d in deps if d.startswith(tuple(imported_prefixes)))
          for name, deps in import_graph().items()
          if name.startswith(tuple(importer_prefixes))
          and any(d.startswith(tuple(imported_prefixes)) for d in deps)}


def test_import_graph_is_a_dag():
  graph = import_graph()
  for expected in ("tfcascade.pipeline.cli", "tfcascade.transforms.publishing.finalize",
                   "benchmarks.run", "dataflow.main", "airflow_tfcascade"):
    assert expected in graph
  cycle = find_cycle(graph)
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle():
  # The check above can fail: a planted cycle is found.
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_nothing_imports_a_top_level_pipeline_or_transforms():
  """Every file of the repository, tests included: only `tfcascade.*`."""
  offenders = {}
  for path in ROOT.rglob("*.py"):
    if any(part.startswith(".") or part in ("build", "dist") for part in path.parts):
      continue
    bad = sorted(n for n in _imported_names(path) if n.split(".")[0] in ("pipeline", "transforms"))
    if bad:
      offenders[str(path.relative_to(ROOT))] = bad
  assert not offenders


def test_no_module_name_repeats_in_the_installed_tree():
  names = collections.Counter(p.name for folder in INSTALLED
                              for p in (ROOT / folder).rglob("*.py"))
  assert {n: c for n, c in names.items() if c > 1 and n not in ("__init__.py", "__main__.py")} == {}


def test_worker_modules_never_import_the_launcher():
  assert not _offenders(["tfcascade.transforms"], ["tfcascade.pipeline"])


def test_the_reader_never_imports_the_publisher():
  assert not _offenders(["tfcascade.transforms.reading"], ["tfcascade.transforms.publishing"])


def test_engine_agnostic_steps_never_import_an_adapter():
  assert not _offenders(ENGINE_AGNOSTIC, ["tfcascade.transforms.beam",
                                          "tfcascade.transforms.spark"])


def test_layout_checks_can_fail():
  # The offender finder reports a planted dependency (the real graph has none).
  assert _offenders(["tfcascade.pipeline.beam_job"], ["tfcascade.transforms.beam"])


def test_importing_the_worker_side_loads_no_launcher_module():
  """In a fresh interpreter: no launcher module and not its config library
  (pydantic). (yaml is left out: Beam itself imports it.)"""
  code = (f"import importlib, json, sys\n"
          f"for m in {WORKER_MODULES!r}: importlib.import_module(m)\n"
          f"print(json.dumps(sorted(m for m in sys.modules if m.startswith("
          f"('tfcascade.pipeline', 'pydantic')))))\n")
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                        capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
