"""The exit-code contract, walked command by command (issues 14 and 21).

0: complete. 1: failed in a way running again can cure. 2: refused — the
user must fix something (config, flags, paths, data, models). Whatever the
mistake, one `tfcascade:` line names the culprit: no traceback, no Java stack
trace, no `internal error`.

Every command is run as a user runs it — `python -m tfcascade ...` in a
subprocess — against each kind of bad input: a missing path, a directory
where a file is expected (and the reverse), an empty or non-YAML config, an
unreadable file, files of the wrong kind (a PNG, a text file) given as
config, checkpoint, meta graph, SavedModel, TFRecord input or output
directory, mistyped flags and values, a truncated checkpoint, an output that
is already complete.

The cases run in parallel once per module (each subprocess imports
TensorFlow); each case is its own test for reporting.
"""

import concurrent.futures
import dataclasses
import glob
import os
import shutil
import stat
import subprocess
import sys
from typing import List, Tuple

import pytest
import tensorflow as tf

from tfcascade.pipeline.cli import main
from tests.jobs import make_job

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "run_inference.py")
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01"
       b"\x08\x02\x00\x00\x00\x90wS\xde" + bytes(range(256)) * 4)
TEXT = "this is a plain text file,\nnot a model and not a TFRecord\n"


@dataclasses.dataclass
class Case:
  """One command line; `culprit` must appear in the error line."""
  id: str
  argv: List[str]
  culprit: str
  codes: Tuple[int, ...] = (2,)
  needs_unreadable: bool = False
  program: Tuple[str, ...] = ("-m", "tfcascade")  # after `python`
  prefix: str = "tfcascade:"  # how its error lines start


@dataclasses.dataclass
class Result:
  rc: int
  stdout: str
  stderr: str


def _make_files(root):
  """The bad inputs, by name."""
  f = {}
  f["missing"] = str(root / "does-not-exist")
  f["png"] = str(root / "picture.png")
  with open(f["png"], "wb") as out:
    out.write(PNG)
  f["text"] = str(root / "notes.txt")
  with open(f["text"], "w") as out:
    out.write(TEXT)
  f["empty"] = str(root / "empty.yaml")
  open(f["empty"], "w").close()
  f["not_yaml"] = str(root / "broken.yaml")
  with open(f["not_yaml"], "w") as out:
    out.write("input: [unclosed\n  stages: {: :\n")
  f["yaml_list"] = str(root / "list.yaml")
  with open(f["yaml_list"], "w") as out:
    out.write("- input\n- stages\n")
  f["empty_dir"] = str(root / "empty_dir")
  os.makedirs(f["empty_dir"])
  f["junk_dir"] = str(root / "junk_dir")
  os.makedirs(f["junk_dir"])
  shutil.copy(f["png"], os.path.join(f["junk_dir"], "picture.png"))
  # A SavedModel directory whose saved_model.pb is a PNG.
  f["bad_saved_model"] = str(root / "bad_saved_model")
  os.makedirs(f["bad_saved_model"])
  shutil.copy(f["png"], os.path.join(f["bad_saved_model"], "saved_model.pb"))
  # A checkpoint prefix whose .index is a PNG.
  f["bad_ckpt"] = str(root / "bad_ckpt" / "model.ckpt")
  os.makedirs(os.path.dirname(f["bad_ckpt"]))
  shutil.copy(f["png"], f["bad_ckpt"] + ".index")
  shutil.copy(f["png"], f["bad_ckpt"] + ".data-00000-of-00001")
  # A .meta that is text; a .meta that is empty.
  f["text_meta"] = str(root / "text.meta")
  with open(f["text_meta"], "w") as out:
    out.write(TEXT)
  f["empty_meta"] = str(root / "empty.meta")
  open(f["empty_meta"], "w").close()
  # Unreadable (chmod 000); root reads it anyway, see _unreadable_blocks.
  f["unreadable"] = str(root / "unreadable.yaml")
  with open(f["unreadable"], "w") as out:
    out.write("input: {}\n")
  os.chmod(f["unreadable"], 0)
  f["unreadable_dir"] = str(root / "unreadable_dir")
  os.makedirs(f["unreadable_dir"])
  os.chmod(f["unreadable_dir"], 0)
  return f


def _job_files(job, root):
  """Bad inputs made from the job's own models and data."""
  f = {}
  f["bad_date_config"] = str(job["root"] / "bad-date.yaml")
  with open(job["config"]) as good, open(f["bad_date_config"], "w") as out:
    out.write(good.read() + "run_date: 2026-02-30\n")
  f["complete"] = str(root / "complete")
  assert main(["run", "--config", job["config"], f"--set=output.path={f['complete']}"]) == 0
  shutil.copytree(job["root"] / "models" / "b", root / "truncated")
  index, = glob.glob(str(root / "truncated" / "*.index"))  # the copy's own files
  f["truncated_ckpt"] = index[:-len(".index")]
  f["truncated_data"] = f["truncated_ckpt"] + ".data-00000-of-00001"
  with open(f["truncated_data"], "r+b") as data:
    data.truncate(os.path.getsize(f["truncated_data"]) // 2)
  f["not_examples"] = str(root / "not-examples.tfrecord")
  with tf.io.TFRecordWriter(f["not_examples"]) as w:
    for i in range(5):  # valid framing, but no Example inside
      w.write(b"\xff" * (i + 1))
  return f


def _unreadable_blocks(path) -> bool:
  """chmod 000 stops reads, unless we run as root (CI containers often do)."""
  try:
    with open(path, "rb"):
      return False
  except PermissionError:
    return True


def _cases(job_config, f, tmp) -> List[Case]:
  cases = []
  # --- the config file itself: run, validate, tune -------------------------
  config_cases = [
      ("missing", f["missing"]), ("dir", f["empty_dir"]), ("empty", f["empty"]),
      ("not_yaml", f["not_yaml"]), ("yaml_list", f["yaml_list"]),
      ("png", f["png"]), ("text", f["text"]), ("unreadable", f["unreadable"]),
  ]
  # validate walks every case; run and tune share its config loading, so
  # they walk a few (each case is a subprocess importing TensorFlow).
  few = ("missing", "dir", "empty", "png", "unreadable")
  for command in ("validate", "run", "tune"):
    for name, path in config_cases:
      if command != "validate" and name not in few:
        continue
      argv = [command, "--config", path]
      if command == "run":
        argv += [f"--set=output.path={tmp / 'never'}", "--runner=DirectRunner"]
      if command == "tune":
        argv += ["--label", "label", "--out", str(tmp / "tune-out")]
      cases.append(Case(f"{command}-config-{name}", argv, path,
                        needs_unreadable=name == "unreadable"))
  # --- paths inside a good config, set with --set ----------------------------
  path_cases = [
      ("checkpoint-missing", ["stages.a.checkpoint=" + f["missing"]], f["missing"]),
      ("checkpoint-png", ["stages.a.checkpoint=" + f["png"]], f["png"]),
      ("checkpoint-text", ["stages.a.checkpoint=" + f["text"]], f["text"]),
      ("checkpoint-empty-dir", ["stages.a.checkpoint=" + f["empty_dir"]], f["empty_dir"]),
      ("checkpoint-junk-index", ["stages.a.checkpoint=" + f["bad_ckpt"]], f["bad_ckpt"]),
      ("meta-missing", ["stages.a.meta_graph=" + f["missing"]], f["missing"]),
      ("meta-dir", ["stages.a.meta_graph=" + f["empty_dir"]], f["empty_dir"]),
      ("meta-png", ["stages.a.meta_graph=" + f["png"]], f["png"]),
      ("meta-text", ["stages.a.meta_graph=" + f["text_meta"]], f["text_meta"]),
      ("meta-empty", ["stages.a.meta_graph=" + f["empty_meta"]], f["empty_meta"]),
      ("saved-model-missing", ["stages.a.meta_graph=",
                               "stages.a.saved_model=" + f["missing"]], f["missing"]),
      ("saved-model-file", ["stages.a.meta_graph=",
                            "stages.a.saved_model=" + f["png"]], f["png"]),
      ("saved-model-junk-dir", ["stages.a.meta_graph=",
                                "stages.a.saved_model=" + f["junk_dir"]], f["junk_dir"]),
      ("saved-model-png-pb", ["stages.a.meta_graph=",
                              "stages.a.saved_model=" + f["bad_saved_model"]],
       f["bad_saved_model"]),
      ("input-missing", ["input.pattern=" + f["missing"]], f["missing"]),
      ("input-dir", ["input.pattern=" + f["empty_dir"]], f["empty_dir"]),
  ]
  few = ("checkpoint-png", "meta-dir", "meta-text", "saved-model-file",
         "input-missing", "input-dir")
  for command in ("validate", "run"):
    for name, sets, culprit in path_cases:
      if command == "run" and name not in few:
        continue
      argv = [command, "--config", job_config] + [f"--set={s}" for s in sets]
      if command == "run":
        argv += [f"--set=output.path={tmp / ('out-' + name)}", "--runner=DirectRunner"]
      cases.append(Case(f"{command}-{name}", argv, culprit))
  # A PNG as the input data: validate refuses it (its sample is read before
  # anything runs); run reads it on a worker and fails: exit 2 all the same,
  # as running again cannot cure damaged data.
  cases.append(Case("validate-input-png", ["validate", "--config", job_config,
                                           f"--set=input.pattern={f['png']}"], f["png"]))
  cases.append(Case("run-input-png", ["run", "--config", job_config,
                                      f"--set=input.pattern={f['png']}",
                                      f"--set=output.path={tmp / 'out-input-png'}",
                                      "--runner=DirectRunner"], f["png"]))
  cases.append(Case("run-output-is-a-file", ["run", "--config", job_config,
                                             f"--set=output.path={f['png']}",
                                             "--runner=DirectRunner"], f["png"]))
  cases.append(Case("tune-checkpoint-png", [  # skipped where tune does not exist
      "tune", "--config", job_config, "--label", "label", "--out", str(tmp / "t1"),
      f"--set=stages.a.checkpoint={f['png']}"], f["png"]))
  # --- inspect -----------------------------------------------------------------
  for name, path in [("missing", f["missing"]), ("png", f["png"]), ("text", f["text"]),
                     ("empty-dir", f["empty_dir"]), ("junk-dir", f["junk_dir"]),
                     ("text-meta", f["text_meta"]), ("empty-meta", f["empty_meta"]),
                     ("junk-checkpoint", f["bad_ckpt"]),
                     ("junk-saved-model", f["bad_saved_model"]),
                     ("glob-matching-nothing", str(tmp / "nothing-*.tfrecord")),
                     ("unreadable", f["unreadable"]),
                     ("unreadable-dir", f["unreadable_dir"])]:
    cases.append(Case(f"inspect-{name}", ["inspect", path], path,
                      needs_unreadable=name.startswith("unreadable")))
  # --- demo ----------------------------------------------------------------------
  cases.append(Case("demo-out-is-a-file", ["demo", "--out", f["png"], "--records", "10"],
                    f["png"]))
  cases.append(Case("demo-out-under-a-file", ["demo", "--out",
                                              os.path.join(f["png"], "demo"),
                                              "--records", "10"], f["png"]))
  cases.append(Case("demo-out-unwritable", ["demo", "--out",
                                            os.path.join(f["unreadable_dir"], "demo"),
                                            "--records", "10"], f["unreadable_dir"],
                    needs_unreadable=True))
  return cases + _mistake_cases(job_config, f, tmp)


def _mistake_cases(job_config, f, tmp) -> List[Case]:
  """Mistakes in flags and values, damaged models and data, and outputs in
  the way (issue 21)."""
  def run(name, *argv, culprit, codes=(2,)):
    return Case(f"run-{name}", ["run", "--config", job_config,
                                f"--set=output.path={tmp / ('out-' + name)}", *argv],
                culprit, codes)

  def validate(name, *argv, culprit):
    return Case(f"validate-{name}", ["validate", "--config", job_config, *argv], culprit)

  return [
      Case("unknown-command", ["nope"], "invalid choice: 'nope'"),
      Case("validate-unknown-flag", ["validate", "--config", job_config, "--runner=x"],
           "unrecognized arguments: --runner=x"),
      # Beam would drop these with a warning and run without them.
      run("misspelled-flag", "--ovewrite",
          culprit="unknown flag --ovewrite; did you mean --overwrite?"),
      run("config-key-as-flag", "--batch_size=5", culprit="--set batch_size=5"),
      run("unknown-runner", "--runner=NoSuchRunner", culprit="--runner=NoSuchRunner"),
      run("master-without-spark", "--master", "local[2]", culprit="--engine spark"),
      run("beam-flag-with-spark", "--engine", "spark", "--runner=DirectRunner",
          culprit="--runner=DirectRunner"),
      # Spark masters: refused before Java starts, or a cluster not answering.
      run("spark-master-bogus", "--engine", "spark", "--master", "bogus",
          culprit="--master 'bogus': not a Spark master URL"),
      run("spark-master-without-port", "--engine", "spark", "--master", "spark://host",
          culprit="'host' is not HOST:PORT"),
      run("spark-master-not-answering", "--engine", "spark", "--master", "spark://127.0.0.1:1",
          culprit="the Spark master spark://127.0.0.1:1 does not answer", codes=(1,)),
      # Values PyYAML cannot take: a date that does not exist, broken YAML.
      validate("day-out-of-range", "--set", "run_date=2026-02-30", culprit="run_date"),
      validate("month-out-of-range", "--set", "run_date=2026-13-45", culprit="run_date"),
      Case("validate-config-date-out-of-range", ["validate", "--config", f["bad_date_config"]],
           "run_date: Input should be a valid date"),
      run("day-out-of-range", "--set", "run_date=2026-02-30", culprit="run_date"),
      validate("set-not-yaml", "--set", "batch_size=[1", culprit="--set batch_size=[1"),
      run("set-not-yaml", "--set", "batch_size=[1", culprit="--set batch_size=[1"),
      # The output is already complete: validate says what run would.
      Case("validate-complete-output", ["validate", "--config", job_config,
                                        f"--set=output.path={f['complete']}"],
           f"{f['complete']} already holds a complete run"),
      Case("run-complete-output", ["run", "--config", job_config,
                                   f"--set=output.path={f['complete']}"],
           f"{f['complete']} already holds a complete run"),
      # A checkpoint whose .data file was cut short (a copy in progress).
      validate("truncated-checkpoint", f"--set=stages.b.checkpoint={f['truncated_ckpt']}",
               culprit=f"{f['truncated_data']} is truncated"),
      run("truncated-checkpoint", f"--set=stages.b.checkpoint={f['truncated_ckpt']}",
          culprit=f"{f['truncated_data']} is truncated"),
      Case("tune-out-is-a-file", ["tune", "--config", job_config, "--label", "label",
                                  "--out", f["png"]], f"--out {f['png']} is a file"),
      # Records that are not Examples, more than dead_letter.max_fraction: the
      # data must be fixed, running again cannot cure it.
      run("too-many-dead-letters", f"--set=input.pattern={f['not_examples']}",
          "--set=dead_letter.max_fraction=0", culprit="dead_letter.max_fraction"),
      # inspect: a label that is not a class index; a truncated checkpoint.
      Case("inspect-label-not-int64", ["inspect", f["complete"], "--label", "id"],
           "--label id: feature 'id' of the output"),
      Case("inspect-label-missing", ["inspect", f["complete"], "--label", "nope"],
           "has no feature 'nope'"),
      Case("inspect-truncated-checkpoint", ["inspect", f["truncated_ckpt"]],
           f"{f['truncated_data']} is truncated"),
      Case("inspect-relative-to-missing", ["inspect", f["truncated_ckpt"], "--relative-to",
                                           f["missing"]], f"--relative-to {f['missing']}"),
      # Gates: a class-probability output needs a measure; scopes are checked.
      validate("gate-on-a-vector", "--set=stages.b.run_if=a.logits < 0.9",
               culprit='e.g. run_if: "max(a.logits) < 0.9"'),
      run("gate-on-a-vector", "--set=stages.b.run_if=a.logits < 0.9",
          culprit='e.g. run_if: "max(a.logits) < 0.9"'),
      validate("measure-on-a-scalar", "--set=stages.b.run_if=max(a.confidence) < 0.9",
               culprit="one number per row: compare it directly"),
      validate("unknown-measure", "--set=stages.b.run_if=mean(a.logits) < 0.9",
               culprit="unknown measure 'mean' (measures: max, margin, entropy, argmax)"),
      validate("gate-without-comparison", "--set=stages.b.run_if=max(a.logits)",
               culprit="stage 'b': run_if 'max(a.logits)' is not of the form"),
      validate("reserved-scope", "--set=stages.a.scope=tfcascade.engine",
               culprit="stage 'a': scope 'tfcascade.engine' is reserved"),
      validate("scope-taken", "--set=stages.b.scope=A",
               culprit="stage 'b': scope 'A' is already taken"),
      Case("tune-gate-on-a-vector", ["tune", "--config", job_config, "--label", "label",
                                     "--out", str(tmp / "t2"),
                                     "--set=stages.b.run_if=a.logits < 0.9"],
           'e.g. run_if: "max(a.logits) < 0.9"'),
      # demo: numbers that make no dataset; an --out holding other files.
      Case("demo-no-records", ["demo", "--out", str(tmp / "d0"), "--records", "0"],
           "--records must be at least 1"),
      Case("demo-more-shards-than-records", ["demo", "--out", str(tmp / "d1"), "--records",
                                             "3", "--shards", "4"],
           "--shards must be between 1 and --records"),
      Case("demo-negative-seed", ["demo", "--out", str(tmp / "d2"), "--records", "10",
                                  "--seed", "-1"], "--seed must be >= 0"),
      Case("demo-out-holds-other-files", ["demo", "--out", f["junk_dir"], "--records", "10"],
           "no demo.json"),
      # The RunInference example: its own mistakes the same way.
      Case("example-config-missing", ["--config", f["missing"], "--out", str(tmp / "ex")],
           f"cannot read config {f['missing']}", program=(EXAMPLE,),
           prefix="run_inference.py:"),
      Case("example-input-matches-nothing", ["--config", job_config, "--set",
                                             f"input.pattern={tmp / 'nothing-*'}",
                                             "--out", str(tmp / "ex2")],
           "matches no files", program=(EXAMPLE,), prefix="run_inference.py:"),
  ]


def _run(case: Case, cwd: str) -> Result:
  proc = subprocess.run([sys.executable, *case.program] + case.argv, cwd=cwd,
                        capture_output=True, text=True, timeout=600)
  return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  root = tmp_path_factory.mktemp("badpaths")
  job_root = root / "job"
  job_root.mkdir()
  job = make_job(job_root, n_records=30)
  files = _make_files(root)
  files.update(_job_files(job, root))
  unreadable = _unreadable_blocks(files["unreadable"])
  cases = _cases(job["config"], files, root)
  runnable = [c for c in cases if unreadable or not c.needs_unreadable]
  workers = max(2, min(6, (os.cpu_count() or 2) * 2))
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    results = dict(zip([c.id for c in runnable],
                       pool.map(lambda c: _run(c, ROOT), runnable)))
  yield {"cases": {c.id: c for c in cases}, "results": results,
         "unreadable": unreadable}
  os.chmod(files["unreadable"], stat.S_IRUSR | stat.S_IWUSR)
  os.chmod(files["unreadable_dir"], stat.S_IRWXU)


def _case_ids():
  # Built without the files: the ids only (paths do not matter here).
  fake = {k: f"/x/{k}" for k in (
      "missing", "png", "text", "empty", "not_yaml", "yaml_list", "empty_dir",
      "junk_dir", "bad_saved_model", "bad_ckpt", "text_meta", "empty_meta",
      "unreadable", "unreadable_dir", "bad_date_config", "complete", "truncated_ckpt",
      "truncated_data", "not_examples")}

  class _Tmp(str):
    def __truediv__(self, other):
      return f"{self}/{other}"
  return [c.id for c in _cases("/x/job.yaml", fake, _Tmp("/x"))]


def _error_lines(stderr: str, prefix: str = "tfcascade:") -> List[str]:
  return [l for l in stderr.splitlines() if l.startswith(prefix)]


@pytest.mark.parametrize("case_id", _case_ids())
def test_bad_path_gives_one_line_and_no_traceback(world, case_id):
  case = world["cases"][case_id]
  if case.needs_unreadable and not world["unreadable"]:
    pytest.skip("chmod 000 does not stop reads here (running as root): the "
                "unreadable-file case cannot be tested on this machine")
  result = world["results"][case_id]
  command = " ".join(["python", *case.program, *case.argv])
  assert "Traceback" not in result.stderr, f"{command}\n{result.stderr}"
  assert "Traceback" not in result.stdout, f"{command}\n{result.stdout}"
  assert result.rc in case.codes, (
      f"{command}: exit {result.rc}, expected {case.codes}\n{result.stderr[-2000:]}")
  lines = _error_lines(result.stderr, case.prefix)
  assert len(lines) == 1, f"{command}: expected one error line, got:\n{result.stderr[-2000:]}"
  assert case.culprit in lines[0], f"{command}: the error does not name {case.culprit}:\n{lines[0]}"
  assert "internal error" not in lines[0], lines[0]


def test_an_unexpected_error_is_one_line_and_verbose_adds_the_traceback(tmp_path):
  """An internal error (here: a command replaced by one that raises) prints
  one line; --verbose adds the traceback."""
  env = dict(os.environ, PYTHONPATH=ROOT)
  code = ("import sys; from tfcascade.pipeline import cli, commands\n"
          "def broken(args, extra):\n"
          "  raise RuntimeError('an internal bug')\n"
          "commands.inspect = broken\n"
          "sys.exit(cli.main(sys.argv[1:]))\n")
  quiet = subprocess.run([sys.executable, "-c", code, "inspect", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, env=env)
  assert quiet.returncode == 1
  assert "Traceback" not in quiet.stderr, quiet.stderr
  lines = _error_lines(quiet.stderr)
  assert lines == ["tfcascade: internal error: RuntimeError: an internal bug "
                   "(rerun with --verbose for the traceback)"], quiet.stderr
  loud = subprocess.run([sys.executable, "-c", code, "--verbose", "inspect", str(tmp_path)],
                        cwd=ROOT, capture_output=True, text=True, env=env)
  assert loud.returncode == 1
  assert "tfcascade: internal error: RuntimeError: an internal bug" in loud.stderr
  assert "Traceback" in loud.stderr and "an internal bug" in loud.stderr


# --- unreadable files where chmod cannot make them so (root) -------------------

def test_permission_denied_is_one_line_even_when_simulated(tmp_path, monkeypatch, capsys):
  """As root chmod 000 does not stop reads, so the chmod cases above skip;
  here the readers are made to fail as they do for a user without the
  permission (simulated, in-process), and each says so in one line."""
  from tfcascade.pipeline import config as config_lib  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / "locked.yaml")
  open(path, "w").close()

  def denied(p, *args, **kwargs):
    raise PermissionError(13, "Permission denied", p)
  monkeypatch.setattr(config_lib, "_read_text", denied)
  assert main(["validate", "--config", path]) == 2
  assert _error_lines(capsys.readouterr().err) == [
      f"tfcascade: error: cannot read config {path}: Permission denied"]

  class DeniedGFile:
    def __init__(self, p, *args, **kwargs):
      raise tf.errors.PermissionDeniedError(None, None, f"{p}; Permission denied")
  monkeypatch.setattr(tf.io.gfile, "GFile", DeniedGFile)
  data = tmp_path / "data.tfrecord"
  data.write_bytes(b"x" * 32)
  assert main(["inspect", str(data)]) == 2
  lines = _error_lines(capsys.readouterr().err)
  assert len(lines) == 1 and str(data) in lines[0] and "Permission denied" in lines[0], lines


def test_a_reader_that_leaves_early_ends_the_command_quietly(tmp_path):
  """`tfcascade inspect X | head -1`: the pipe closes before the output is
  written; the command stops like a Unix tool on SIGPIPE (141), silently."""
  job = make_job(tmp_path, n_records=30)
  proc = subprocess.Popen(
      [sys.executable, "-m", "tfcascade", "inspect", str(job["root"] / "data" / "*.gz")],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  proc.stdout.close()  # the reader is gone before the first line
  stderr = proc.stderr.read()
  assert proc.wait(timeout=300) == 141, stderr
  for noise in ("internal error", "Traceback", "BrokenPipeError", "Exception ignored"):
    assert noise not in stderr, stderr
