"""The package layout holds: workers never import the launcher, and the import
graph of our own modules (module-level and function-level imports alike) has
no cycle."""

import ast
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "transforms")
WORKER_MODULES = ["transforms", "transforms.engine", "transforms.publish",
                  "transforms.read", "transforms.run_cascade", "transforms.write",
                  "transforms.encode"]


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(ROOT).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


def _our_modules():
  return {_module_name(p): p for package in PACKAGES
          for p in (ROOT / package).rglob("*.py")}


def _imports(path: pathlib.Path, modules) -> set:
  """Our modules `path` imports anywhere in its body."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      # `from pkg import mod` imports pkg.mod when that is a module of ours.
      names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules
               else node.module for alias in node.names]
    else:
      continue
    found.update(n for n in names if n in modules)
  return found


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


def test_import_graph_is_a_dag():
  graph = import_graph()
  assert "pipeline.cli" in graph and "transforms.publish" in graph
  cycle = find_cycle(graph)
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle():
  # The check above can fail: a planted cycle is found.
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_worker_modules_never_import_the_launcher_statically():
  offenders = {name: sorted(deps) for name, deps in import_graph().items()
               if name.startswith("transforms")
               and any(d.split(".")[0] == "pipeline" for d in deps)}
  assert not offenders


def test_importing_the_worker_side_loads_no_launcher_module():
  """In a fresh interpreter: no `pipeline` module and not its config library
  (pydantic). (yaml is left out: Beam itself imports it.)"""
  code = (f"import importlib, json, sys\n"
          f"for m in {WORKER_MODULES!r}: importlib.import_module(m)\n"
          f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
          f"('pipeline', 'pydantic'))))\n")
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                        capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
