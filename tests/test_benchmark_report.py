"""The benchmark's published numbers agree with the run they come from.

README's headline block, RESULTS.md and ENGINES.md are generated from
benchmarks/results.json and engines.json (tables, plus one paragraph a person
wrote, included verbatim); these tests rebuild them from the committed json
and compare, so a hand edit or a stale report fails here.
"""

import json
import os

from benchmarks import engines, report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")


def _json(name="results.json"):
  with open(os.path.join(BENCH, name)) as f:
    return json.load(f)


def _committed(name):
  with open(os.path.join(BENCH, name)) as f:
    return f.read()


def test_readme_headline_is_the_one_generated_from_results_json():
  with open(os.path.join(ROOT, "README.md")) as f:
    readme = f.read()
  assert report.readme_headline(_json()) in readme


def test_results_md_is_the_one_generated_from_results_json(tmp_path):
  rebuilt = tmp_path / "RESULTS.md"
  report.write(_json(), str(rebuilt))
  assert rebuilt.read_text() == _committed("RESULTS.md")
  assert report.READING in rebuilt.read_text()


def test_engines_md_is_the_one_generated_from_engines_json(tmp_path):
  rebuilt = tmp_path / "ENGINES.md"
  engines.write_report(_json("engines.json"), str(rebuilt))
  assert rebuilt.read_text() == _committed("ENGINES.md")
  assert engines.ANALYSIS in rebuilt.read_text()


def test_every_target_is_judged_with_a_number():
  """Each issue-12 target row carries a measured value (a target whose data
  is missing would read '–' and never be met)."""
  rows = report._targets(report.summarize(_json()))  # pylint: disable=protected-access
  labels = [label for label, _, _ in rows]
  for wanted in ("0.95 x B0", "0.8 x T0", "3.5 x ungated", "0.9 x one process",
                 "CPU outside the models", "memory (heavy)", "its own steady rate"):
    assert any(wanted in label for label in labels), wanted
  for label, text, _ in rows:
    assert not text.startswith("–"), (label, text)
