"""The INSTALLED wheel, as a user gets it: one import package, `tfcascade`.

Builds the wheel from setup.py, installs it (not editable) into a venv outside
the repository (the worker venv of tests/runners/harness.py: the wheel and its
declared deps, pinned by constraints.txt; cached under ~/.cache/tfcascade), and
from a working directory holding the user's OWN `pipeline.py` and `transforms/`
package runs `tfcascade validate`, `tfcascade run` and the RunInference
example. Before the layout moved under `tfcascade.`, both names were installed
top-level and a user's `pipeline.py` shadowed ours (or ours shadowed theirs).

The user's modules are traps: importing one leaves a marker file and raises,
and the working directory is on PYTHONPATH (a common habit), so any
`import pipeline` / `import transforms` in the product, the console script
included, fails the command or leaves the marker.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.jobs import summary_of
from tests.runners import harness

pytestmark = pytest.mark.slow

REPO = harness.REPO
RECORDS = 500
TRAP = "user's {name} was imported"
PUBLIC_API = ["CascadeError", "CascadeModelHandler", "CascadeResult", "CascadeSession",
              "CascadeSpec", "ConfigError", "JobConfig", "PreflightError",
              "handler_from_config", "load_config", "run", "validate"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
  return harness.build_wheel(REPO, tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def venv(worker_python) -> Path:
  """The venv's root. The same build as tests/portable/ (conftest's
  `worker_python`): a rebuilt wheel, force-reinstalled on every session."""
  root = Path(worker_python).parent.parent
  assert REPO not in root.parents and root != REPO, root
  return root


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
  """A user's project: their own pipeline.py and transforms/, a small demo
  (models + data, built here with the repo's code: the demo needs the `demo`
  extra), the shipped demo config pointed at it, and a copy of the example
  (a user's script next to their modules: its folder is sys.path[0])."""
  from tfcascade.pipeline.demo.build import build_demo  # pylint: disable=g-import-not-at-top
  work = tmp_path_factory.mktemp("user-project")
  _trap(work / "pipeline.py", "pipeline.py")
  (work / "transforms").mkdir()
  _trap(work / "transforms" / "__init__.py", "transforms/__init__.py")
  demo = build_demo(str(work / "demo"), records=RECORDS, shards=2, seed=0, steps=300)
  (work / "demo.json").write_text(json.dumps(demo))
  config = (REPO / "configs" / "local.yaml").read_text()
  assert config.count("../demo/") == 5 and "../out/predictions" in config, config
  config = config.replace("../demo/", "demo/").replace("../out/predictions", "out/predictions")
  (work / "job.yaml").write_text(config)
  shutil.copy(REPO / "examples" / "run_inference.py", work / "run_inference.py")
  return work


def _trap(path: Path, name: str):
  path.write_text(
      "# The user's own module: tfcascade must never import it.\n"
      "open(__file__ + '.imported', 'w').close()\n"
      f"raise ImportError({TRAP.format(name=name)!r})\n")


def _sprung(work: Path) -> list[str]:
  return sorted(glob.glob(str(work / "**" / "*.imported"), recursive=True))


def _env(venv: Path, pythonpath: Path | None) -> dict:
  """The venv's binaries first; nothing of the dev venv or the repo."""
  env = {k: v for k, v in os.environ.items()
         if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
  env["VIRTUAL_ENV"] = str(venv)
  env["PATH"] = str(venv / "bin") + os.pathsep + env.get("PATH", "")
  if pythonpath:
    env["PYTHONPATH"] = str(pythonpath)
  return env


def _run(venv: Path, cwd: Path, *args, timeout=300, check=True, pythonpath=None):
  r = subprocess.run([str(a) for a in args], cwd=cwd, env=_env(venv, pythonpath),
                     capture_output=True, text=True, timeout=timeout,
                     stdin=subprocess.DEVNULL)
  if check:
    assert r.returncode == 0, "exit %d: %s\n--- output tail ---\n%s" % (
        r.returncode, " ".join(map(str, args)), (r.stdout + r.stderr)[-6000:])
  return r


def _user_run(venv: Path, work: Path, *args, timeout=300):
  """A command from the user's project, its folder on PYTHONPATH; fails when
  any of the user's modules was imported."""
  r = _run(venv, work, *args, timeout=timeout, pythonpath=work)
  assert "was imported" not in r.stdout + r.stderr, r.stdout + r.stderr
  assert not _sprung(work), _sprung(work)
  return r


# ------------------------------------------------------------------ the wheel


def test_wheel_installs_one_top_level_package(wheel):
  names = zipfile.ZipFile(wheel).namelist()
  top = {n.split("/", 1)[0] for n in names}
  assert top == {"tfcascade", "tfcascade-0.1.0.dist-info"}, sorted(top)
  assert {"tfcascade/__init__.py", "tfcascade/__main__.py",
          "tfcascade/pipeline/cli.py", "tfcascade/pipeline/demo/build.py",
          "tfcascade/transforms/engine/__init__.py",
          "tfcascade/transforms/beam/cascade_handler.py"} <= set(names)
  # Every package of the repo's two folders is in, under tfcascade/.
  for folder in ("pipeline", "transforms"):
    for init in (REPO / folder).rglob("__init__.py"):
      assert f"tfcascade/{init.relative_to(REPO).as_posix()}" in names, init
  dist = zipfile.ZipFile(wheel)
  assert dist.read("tfcascade-0.1.0.dist-info/top_level.txt").decode().split() == [
      "tfcascade"]
  entry_points = dist.read("tfcascade-0.1.0.dist-info/entry_points.txt").decode()
  assert "tfcascade = tfcascade.pipeline.cli:main" in entry_points


# ------------------------------------------------------------ the installed venv


def test_installed_not_editable_public_api_nothing_top_level(venv, tmp_path):
  neutral = tmp_path / "neutral"
  neutral.mkdir()
  py = venv / "bin" / "python"
  r = _run(venv, neutral, py, "-c",
           "import json, tfcascade, tfcascade.pipeline, tfcascade.transforms;"
           "print(json.dumps([sorted(tfcascade.__all__), tfcascade.__file__,"
           " tfcascade.pipeline.__file__, tfcascade.transforms.__file__]))")
  api, *files = json.loads(r.stdout.splitlines()[-1])
  assert api == PUBLIC_API
  for f in files:  # the copy in the venv's site-packages, not the repo
    assert f.startswith(str(venv)) and "site-packages" in f, f
  # A name of the public API resolves in the installed package.
  r = _run(venv, neutral, py, "-c",
           "import tfcascade; print(tfcascade.CascadeResult._fields)")
  assert "rows_run" in r.stdout
  for name in ("pipeline", "transforms"):
    r = _run(venv, neutral, py, "-c", f"import {name}", check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"ModuleNotFoundError: No module named '{name}'" in r.stderr, r.stderr


def test_the_users_modules_are_armed(venv, workdir):
  """The traps work: `import pipeline` from the user's project imports theirs
  (so the checks below would catch ours importing it)."""
  for name, trap in (("pipeline", "pipeline.py"), ("transforms", "transforms/__init__.py")):
    r = _run(venv, workdir, venv / "bin" / "python", "-c", f"import {name}",
             check=False, pythonpath=workdir)
    assert r.returncode == 1 and TRAP.format(name=trap) in r.stderr, r.stderr
    assert _sprung(workdir)
    for marker in _sprung(workdir):
      os.remove(marker)


def test_validate_from_the_users_project(venv, workdir):
  for command in ([venv / "bin" / "tfcascade"], [venv / "bin" / "python", "-m", "tfcascade"]):
    r = _user_run(venv, workdir, *command, "validate", "--config", "job.yaml")
    assert "config OK" in r.stdout, r.stdout
    assert "stage a [" in r.stdout and "stage b [" in r.stdout, r.stdout
    assert f"{workdir}/demo/models/b/model.meta" in r.stdout, r.stdout


def test_run_from_the_users_project(venv, workdir):
  _user_run(venv, workdir, venv / "bin" / "tfcascade", "run", "--config", "job.yaml",
            "--runner=DirectRunner")
  out = workdir / "out" / "predictions"
  assert (out / "_SUCCESS").is_file()
  summary = summary_of(out)
  assert summary["records_read"] == RECORDS == summary["records_written"], summary
  assert summary["accounted"], summary


def test_run_inference_example_from_the_users_project(venv, workdir):
  out = workdir / "ri"
  r = _user_run(venv, workdir, venv / "bin" / "python", "run_inference.py",
                "--config", "job.yaml", "--out", out)
  assert "cascade" in r.stdout, r.stdout
  got = json.loads((out / "summary.json").read_text())
  demo = json.loads((workdir / "demo.json").read_text())
  assert got["rows"] == RECORDS
  for key in ("cascade_accuracy", "a_accuracy", "b_share"):
    assert got[key] == pytest.approx(demo[key], abs=1e-9), key
  rows = [json.loads(line) for f in sorted(out.glob("predictions-*.jsonl"))
          for line in f.read_text().splitlines()]
  assert len(rows) == RECORDS and len({r["id"] for r in rows}) == RECORDS
  assert not any(f.read_text().strip() for f in out.glob("failed-*.txt"))


def test_the_repo_example_still_runs_from_the_repo(workdir, tmp_path):
  """examples/run_inference.py as documented (repo checkout, dev install)."""
  out = tmp_path / "ri"
  r = subprocess.run(
      [sys.executable, "examples/run_inference.py", "--config", str(workdir / "job.yaml"),
       "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300,
      stdin=subprocess.DEVNULL)
  assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
  assert json.loads((out / "summary.json").read_text())["rows"] == RECORDS
