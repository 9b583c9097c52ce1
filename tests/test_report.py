"""`tfcascade report` on real runs of the demo job (DirectRunner, and Spark
local for the engine-agnostic histograms): the histograms the job recorded
against the demo's numpy oracle, no drift between two samples of the same
data, drift flagged for `tfcascade demo --shift`, one-line refusals, and
the page opened in a real headless Chromium.

Chromium: Debian's `chromium` (ci/report/install_chromium.sh, run by
.ci/run); TFCASCADE_CHROMIUM names another binary. Without one the browser
tests skip, saying so, except under TFCASCADE_REQUIRE_CHROMIUM=1 (CI), where
they fail.
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfcascade.pipeline.cli import main
from tfcascade.transforms.scoring import output_histograms as oh

RECORDS = 2000
SHIFT = 0.3


def _run(demo, out, *sets):
  args = ["run", "--config", str(demo / "config.yaml"), "--set", f"output.path={out}",
          "--runner=DirectRunner"]
  for s in sets:
    args += ["--set", s]
  assert main(args) == 0
  return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Outputs of the demo job: `base` (all records), `half` (one of two
  files: the same distribution), `shifted` (demo --shift SHIFT)."""
  from tfcascade.pipeline.demo.build import build_demo  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("report")
  demo = root / "demo"
  build_demo(str(demo), records=RECORDS, shards=2, seed=0, steps=300)
  base = _run(demo, root / "base")
  half = _run(demo, root / "half", f"input.pattern={demo}/data/part-00000-*")
  # `tfcascade demo --shift` checks its range before any work...
  assert main(["demo", "--out", str(demo), "--records", str(RECORDS), "--shift", "1.5"]) == 2
  # ... and, in range, keeps the models and rewrites the data.
  rebuilt = build_demo(str(demo), records=RECORDS, shards=2, seed=0, steps=300, shift=SHIFT)
  assert rebuilt["rebuilt"] == "data" and rebuilt["shift"] == SHIFT
  shifted = _run(demo, root / "shifted")
  return {"demo": demo, "base": base, "half": half, "shifted": shifted, "root": root}


def _summary(out):
  with open(out / "run_summary.json") as f:
    return json.load(f)


def _report(capsys, *argv):
  capsys.readouterr()
  code = main(["report", *map(str, argv)])
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def test_recorded_histograms_match_the_numpy_oracle(runs):
  from tfcascade.pipeline.demo.build import numpy_scores  # pylint: disable=g-import-not-at-top
  from tfcascade.pipeline.demo.dataset import demo_records  # pylint: disable=g-import-not-at-top
  demo = runs["demo"]
  _, pixels, _ = demo_records(RECORDS, 0)
  oracle = numpy_scores(tf.train.latest_checkpoint(f"{demo}/models/a"),
                        tf.train.latest_checkpoint(f"{demo}/models/b"), pixels)
  h = _summary(runs["base"])["histograms"]
  assert h["edges"] == oh.EDGES.tolist() and h["units_missing"] == 0
  confidence = oracle["a_confidence"].astype(np.float64)
  want = np.bincount(np.searchsorted(oh.EDGES, confidence, side="right"),
                     minlength=len(oh.EDGES) + 1)
  got = np.zeros_like(want)
  for i, n in h["floats"]["a/confidence"]["bins"].items():
    got[int(i)] = n
  # float32 TF vs numpy may differ in the last bit: only a value within 1e-5
  # of an edge may land in the next bin.
  near_edge = int((np.abs(confidence[:, None] - oh.EDGES[None, :]) < 1e-5).any(axis=1).sum())
  assert np.abs(got - want).sum() <= 2 * near_edge
  assert h["floats"]["a/confidence"]["rows"] == RECORDS
  assert h["classes"]["a/prediction"] == {
      str(k): int(n) for k, n in enumerate(np.bincount(oracle["a_prediction"])) if n}
  # b's class counts: only the rows its gate passed (rows at the threshold may flip).
  at_threshold = int((np.abs(oracle["a_confidence"] - 0.9) < 1e-5).sum())
  b_want = np.bincount(oracle["b_prediction"][oracle["b_ran"]], minlength=10)
  b_got = np.array([h["classes"]["b/prediction"].get(str(k), 0) for k in range(10)])
  assert np.abs(b_got - b_want).sum() <= 2 * at_threshold
  assert b_got.sum() == _summary(runs["base"])["stages"]["b"]["rows_run"]


@pytest.mark.spark
def test_spark_records_the_same_histograms_as_beam(runs, tmp_path):
  """The histograms come from the unit path both engines share."""
  from tests.jobs import ENGINES  # pylint: disable=g-import-not-at-top
  out = tmp_path / "spark"
  done = subprocess.run(
      [sys.executable, "-m", "tfcascade", "run", "--config", str(runs["demo"] / "config.yaml"),
       "--set", f"output.path={out}",
       "--set", f"input.pattern={runs['demo']}/data/part-00000-*", *ENGINES["spark"]],
      capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  # The same file on the DirectRunner (the demo's data is the shifted one now).
  beam = _run(runs["demo"], tmp_path / "beam", f"input.pattern={runs['demo']}/data/part-00000-*")
  assert _summary(out)["histograms"] == _summary(beam)["histograms"]


def test_same_data_no_drift_and_the_page_is_self_contained(runs, capsys, tmp_path):
  page = tmp_path / "same.html"
  code, out, err = _report(capsys, runs["half"], "--compare", runs["base"], "--out", page,
                           "--fail-on-drift")
  assert code == 0, err
  assert "0 drift row(s) flagged" in out
  text = page.read_text()
  assert "no drift flagged" in text and "FLAGGED" not in text
  # Self-contained: nothing fetched from anywhere, no script.
  assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
  assert "<script" not in text and "<link" not in text
  summary = _summary(runs["half"])
  charts = 1 + len(summary["histograms"]["floats"]) + len(summary["histograms"]["classes"])
  assert text.count("<svg") == charts
  assert {"a/confidence", "a/prediction", "b/prediction"} <= (
      set(summary["histograms"]["floats"]) | set(summary["histograms"]["classes"]))
  for fingerprint in (s["fingerprint"] for s in summary["stages"].values()):
    assert fingerprint in text


def test_shifted_input_flags_drift_and_fails(runs, capsys):
  code, out, err = _report(capsys, runs["shifted"], "--compare", runs["base"],
                           "--fail-on-drift")
  page = str(runs["shifted"]) + ".report.html"  # the default: beside the output
  assert code == 1
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("tfcascade: drift: gate pass share b: ")
  assert page in lines[0] and os.path.exists(page)
  text = open(page).read()
  assert "DRIFT:" in text and "FLAGGED" in text
  base, shifted = _summary(runs["base"]), _summary(runs["shifted"])
  share = lambda s: s["stages"]["b"]["rows_run"] / s["stages"]["b"]["rows_in"]
  assert share(shifted) - share(base) > 0.10  # what the flag says: b runs far more
  # Without --fail-on-drift the same report exits 0 (the flag is in the page).
  assert _report(capsys, runs["shifted"], "--compare", runs["base"])[0] == 0


def _one_line_refusal(capsys, argv, culprit):
  code, _, err = _report(capsys, *argv)
  lines = err.strip().splitlines()
  assert code == 2 and len(lines) == 1, err
  assert lines[0].startswith("tfcascade: error: ") and culprit in lines[0], lines[0]


def test_bad_outputs_are_refused_in_one_line(runs, capsys, tmp_path, monkeypatch):
  _one_line_refusal(capsys, [tmp_path / "nothing"], "no such output directory")
  (tmp_path / "plain").mkdir()
  _one_line_refusal(capsys, [tmp_path / "plain"], "not a tfcascade output")
  incomplete = tmp_path / "incomplete"
  shutil.copytree(runs["base"], incomplete)
  os.remove(incomplete / "_SUCCESS")
  _one_line_refusal(capsys, [incomplete], "not complete (no _SUCCESS)")
  older = tmp_path / "older"
  shutil.copytree(runs["base"], older)
  summary = _summary(older)
  del summary["histograms"]
  (older / "run_summary.json").write_text(json.dumps(summary))
  _one_line_refusal(capsys, [runs["base"], "--compare", older], "older tfcascade")
  _one_line_refusal(capsys, [runs["base"], "--fail-on-drift"], "--fail-on-drift needs")
  (tmp_path / "a-file").write_text("")
  _one_line_refusal(capsys, [runs["base"], "--out", tmp_path / "a-file" / "r.html"],
                    f"--out {tmp_path / 'a-file' / 'r.html'}: cannot write")
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "matplotlib" else real(name, *a))
  _one_line_refusal(capsys, [runs["base"]], "matplotlib")


# --- the page in a real browser ----------------------------------------------------

def _chromium():
  found = os.environ.get("TFCASCADE_CHROMIUM") or shutil.which("chromium")
  if found:
    return found
  if os.environ.get("TFCASCADE_REQUIRE_CHROMIUM") == "1":
    pytest.fail("TFCASCADE_REQUIRE_CHROMIUM=1 but no chromium: run "
                "ci/report/install_chromium.sh")
  pytest.skip("no chromium on this machine (ci/report/install_chromium.sh installs "
              "Debian's): the report was NOT checked in a browser")


def open_in_chromium(page, screenshot=None, height=2400):
  """Opens `page` in headless Chromium; returns (its DOM after loading, the
  console messages it logged). With `screenshot`, also saves a PNG."""
  base = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
          "--no-first-run", "--enable-logging=stderr", "--v=0",
          f"--window-size=1200,{height}"]
  url = f"file://{os.path.abspath(page)}"
  dom = subprocess.run(base + ["--dump-dom", url], capture_output=True, text=True,
                       timeout=120)
  assert dom.returncode == 0, dom.stderr[-2000:]
  consoles = [l for l in dom.stderr.splitlines() if ":CONSOLE" in l]
  if screenshot:
    shot = subprocess.run(base + [f"--screenshot={screenshot}", url], capture_output=True,
                          text=True, timeout=120)
    assert shot.returncode == 0 and os.path.getsize(screenshot), shot.stderr[-2000:]
    consoles += [l for l in shot.stderr.splitlines() if ":CONSOLE" in l]
  return dom.stdout, consoles


def test_the_browser_check_sees_console_errors(tmp_path):
  """The check below can fail: a page that logs an error is caught."""
  page = tmp_path / "bad.html"
  page.write_text('<!DOCTYPE html><html><body><script>console.error("broken chart")'
                  '</script></body></html>')
  _, consoles = open_in_chromium(page)
  assert any("broken chart" in line for line in consoles)


def test_report_in_headless_chromium(runs, capsys, tmp_path):
  from matplotlib import image  # pylint: disable=g-import-not-at-top
  page = tmp_path / "drift.html"
  assert _report(capsys, runs["shifted"], "--compare", runs["base"], "--out", page)[0] == 0
  png = tmp_path / "report.png"
  dom, consoles = open_in_chromium(page, screenshot=png)
  assert consoles == []
  # Every chart is in the rendered DOM, drawn (paths), with its title.
  h = _summary(runs["shifted"])["histograms"]
  svgs = re.findall(r"<svg.*?</svg>", dom, flags=re.S)
  assert len(svgs) == 1 + len(h["floats"]) + len(h["classes"])
  assert all("<path" in s for s in svgs)
  for title in ("a/confidence", "a/prediction", "b/prediction"):
    assert title in dom
  assert "Drift against the previous run" in dom
  # The screenshot shows this run's blue bars and the previous run's grey.
  pixels = (image.imread(str(png))[..., :3] * 255).round().astype(int)
  def share_of(rgb):
    return (np.abs(pixels - rgb).sum(axis=-1) <= 6).mean()
  assert share_of((31, 119, 180)) > 0.002 and share_of((127, 127, 127)) > 0.002


def test_the_airflow_report_command_is_what_the_cli_parses():
  """examples/airflow_tfcascade.py's `report` task (run under real Airflow by
  ci/airflow/test.sh): its command lines and how it reads the exit codes."""
  from tfcascade.pipeline import cli  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "examples", "airflow_tfcascade.py")
  spec = importlib.util.spec_from_file_location("tfcascade_airflow_report", path)
  tc = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tc)
  utc = tc.datetime.timezone.utc
  plan = tc.make_plan("d", {"tfcascade_bin": "/opt/t/bin/tfcascade", "config": "/c.yaml",
                            "input_pattern": "/in/{run_date}/*.gz",
                            "output_path": "gs://b/p/{run_date}/"}, None,
                      tc.datetime.datetime(2026, 3, 1, 2, 15, tzinfo=utc),
                      tc.datetime.datetime(2026, 3, 2, 9, tzinfo=utc))
  assert plan["previous_output_path"] == "gs://b/p/2026-02-28"  # across the month
  for compare in (False, True):
    command = tc.report_command(plan, compare)
    assert command[0] == "/opt/t/bin/tfcascade"
    args = cli._parser().parse_args(command[1:])  # pylint: disable=protected-access
    assert args.command == "report" and args.output == "gs://b/p/2026-03-01"
    assert args.out == "gs://b/p/2026-03-01.report.html" == plan["report_path"]
    assert (args.compare, args.fail_on_drift) == (
        ("gs://b/p/2026-02-28", True) if compare else (None, False))
  drift = ["report written to x", "tfcascade: drift: gate pass share b: ..."]
  assert tc.interpret_report_exit(0, drift[:1]) == "done"
  assert tc.interpret_report_exit(1, drift) == "drift"
  assert tc.interpret_report_exit(1, ["tfcascade: internal error: ..."]) == "retry"
  assert tc.interpret_report_exit(2, ["tfcascade: error: OUTPUT x: ..."]) == "refused"
  assert tc.interpret_report_exit(-9, []) == "retry"


def test_drift_rows_judge_only_what_both_runs_have_enough_of():
  from tfcascade.pipeline.runreport import drift_table as dt  # pylint: disable=g-import-not-at-top

  def summary(share, floats, classes):
    return {"stages": {"a": {"gate": None, "rows_in": 1000, "rows_run": 1000},
                       "b": {"gate": "a.x < 1", "rows_in": 1000, "rows_run": int(share * 1000)}},
            "histograms": {"floats": floats, "classes": classes},
            "dead_letter_fraction": 0.0}

  def floats(bins, non_finite=0):
    return {"rows": sum(bins.values()) + non_finite, "non_finite": non_finite,
            "sum": 1.0, "bins": bins}
  now = summary(0.5, {"a/x": floats({"60": 500, "61": 500}), "b/y": floats({}),
                      "b/few": floats({"60": 150}), "new/z": floats({"1": 9})},
                {"a/c": {"0": 300, "1": 700}})
  then = summary(0.35, {"a/x": floats({"60": 500, "61": 500}), "b/y": floats({"3": 400}),
                        "b/few": floats({"99": 150})},
                 {"a/c": {"0": 500, "1": 500}})
  rows = {r.check: r for r in dt.drift_rows(now, then)}
  assert rows["gate pass share b"].flagged and "+15.0 points" in rows["gate pass share b"].change
  assert "gate pass share a" not in rows  # ungated
  assert rows["PSI a/x"].change == "PSI 0.000" and not rows["PSI a/x"].flagged
  assert rows["PSI b/y"].note == "no rows" and not rows["PSI b/y"].flagged
  assert not rows["PSI b/few"].flagged and "fewer than 200" in rows["PSI b/few"].note
  assert rows["PSI new/z"].note == "only in this run" and not rows["PSI new/z"].flagged
  assert rows["class shares a/c"].flagged
  assert rows["class shares a/c"].change.startswith("class 0 -20.0 points")
  assert not rows["dead-letter share"].flagged
  # PSI by its formula: shares 0.3/0.7 against 0.5/0.5.
  want = (0.3 - 0.5) * np.log(0.3 / 0.5) + (0.7 - 0.5) * np.log(0.7 / 0.5)
  assert abs(dt.psi({"0": 300, "1": 700}, {"0": 500, "1": 500}) - want) < 1e-12
