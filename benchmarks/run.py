"""The benchmark: `.venv/bin/python -m benchmarks.run [--quick]`.

Builds deterministic TFRecords and three model pairs (benchmarks.workloads),
then runs every configuration (benchmarks.systems) in its own fresh process,
in interleaved rounds (every configuration once per round, shuffled), so a
noisy neighbour hurts all systems alike; samples each run's process-tree RSS
and notes how busy the rest of the machine was. Outputs are checked against
B0's; then the output writers side by side (benchmarks.writers). Writes
benchmarks/results.json (every run), benchmarks/RESULTS.md
(benchmarks.report) and the README's headline block; `--report-only`
rebuilds the reports from the json. `--quick` is a smoke run: every
configuration once on a few thousand records, results under the work dir.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import random
import resource
import sys
import time

from benchmarks import common, report
from benchmarks.common import DIRECT, MP2, ROOT

RESULTS_JSON = os.path.join(common.HERE, "results.json")
RESULTS_MD = os.path.join(common.HERE, "RESULTS.md")
README = os.path.join(ROOT, "README.md")
KINDS = ("heavy", "light", "ultralight")


def mt(n):
  return DIRECT + ["--direct_running_mode=multi_threading", f"--direct_num_workers={n}"]


def plan_runs(small: int, big: int):
  """Every configuration of one round (list of dicts; `once`: first round only).

  Naive Beam runs at small/4 and small rows: its cost is almost all per-row,
  so the fit on smaller sizes gives the same steady-state rate (its big-size
  time is extrapolated from the fit, and marked so in the report).
  """
  runs = []

  def add(name, system, kind, n, **extra):
    runs.append(dict(name=name, system=system, kind=kind, n=n, **extra))

  for kind in KINDS:
    for n in (small, big):
      add(f"{kind}/b0", "b0", kind, n)
      add(f"{kind}/tfdata", "tfdata", kind, n, layout="sharded")
      add(f"{kind}/tfcascade", "tfcascade", kind, n, layout="sharded", beam_args=DIRECT)
      if kind != "ultralight":  # every shipped config reads (and writes) gzip
        add(f"{kind}/tfdata-gzip", "tfdata", kind, n, layout="gzip")
        add(f"{kind}/tfcascade-gzip", "tfcascade", kind, n, layout="gzip", beam_args=DIRECT)
      if kind == "light":  # gzip input against T0 on the same files, nothing else
        add(f"{kind}/tfcascade-gzipin", "tfcascade", kind, n, layout="gzip",
            output_compression="none", beam_args=DIRECT)
        # what reading inside TF gains: the same job with the Python reader only
        add(f"{kind}/tfcascade-pyread", "tfcascade", kind, n, layout="sharded",
            read_in_graph=False, beam_args=DIRECT)
    if kind != "ultralight":
      for n in (small // 4, small):
        add(f"{kind}/naive", "naive", kind, n, layout="sharded", beam_args=DIRECT)
    add(f"{kind}/breakdown", "breakdown", kind, small, layout="sharded")
  # Two worker processes, each importing TF and restoring its own session;
  # two sizes, so a steady rate without those fixed costs can be fitted.
  for n in (small, big):
    add("heavy/tfcascade-mp2", "tfcascade", "heavy", n, layout="sharded", beam_args=MP2)
  # Gated heavy cascades; the ungated one is heavy/tfcascade above.
  for gate, sizes in (("100", (small, big)), ("10", (small, big)), ("50", (big,))):
    for n in sizes:
      add(f"heavy/tfcascade-gate{gate}", "tfcascade", "heavy", n,
          layout="sharded", gate=gate, beam_args=DIRECT)
  # Memory: one process, 1 vs 4 threads (one session either way); the
  # start-up run opens a second session as the control.
  for threads in (1, 4):
    add(f"heavy/tfcascade-mt{threads}", "tfcascade", "heavy", big, layout="sharded",
        beam_args=mt(threads))
  add("heavy/startup", "startup", "heavy", 0)
  add("heavy/tfcascade-1batch", "tfcascade", "heavy", 0, beam_args=DIRECT)
  add("roofline", "roofline", "heavy", 0, once=True)
  # One big file, split into byte ranges for two worker processes.
  add("heavy/tfcascade-mp2-singlefile", "tfcascade", "heavy", big,
      layout="single", beam_args=MP2, split_bytes=8 << 20, once=True)
  return runs


def run_one(spec, timeout, log):
  """Runs one configuration in a fresh process; returns its measurements."""
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  run = common.run_measured([sys.executable, "-m", "benchmarks.systems", json.dumps(spec)],
                            spec["out"] + ".log", timeout)
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  ours = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  record = {"name": spec["name"], "n": spec["n"], "rep": spec["rep"],
            "wall_s": run["wall_s"], "peak_rss_mb": run["sampler"].peak / 2**20,
            "processes": run["sampler"].max_procs, "cpu_s": ours,
            # CPU-seconds others used while we ran: a noise indicator.
            "foreign_cpu_s": max(0.0, run["machine_cpu_s"] - ours),
            "loadavg_1m": run["loadavg_1m"], "rc": run["rc"]}
  result = common.tagged_json(run["output"], "BENCH_RESULT")
  if run["rc"] != 0 or result is None:
    record["error"] = run["output"][-3000:]
    log(f"  FAILED {spec['name']} n={spec['n']}: rc={run['rc']}\n{run['output'][-1500:]}")
  else:
    record.update(result)
  return record


# --- output checks -----------------------------------------------------------

def _read_outputs(files, gated, width):
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  spec = {"id": tf.io.FixedLenFeature([], tf.string),
          "b/probs": tf.io.FixedLenFeature([width], tf.float32)}
  if gated:
    spec["b/ran"] = tf.io.FixedLenFeature([], tf.int64)
  ids, probs, ran = [], [], []
  gz = files and files[0].endswith(".gz")
  ds = tf.data.TFRecordDataset(sorted(files), "GZIP" if gz else None).batch(8192).map(
      lambda s: tf.io.parse_example(s, spec))
  for batch in ds.as_numpy_iterator():
    ids.append(np.array([int(i[1:]) for i in batch["id"]]))
    probs.append(batch["b/probs"])
    if gated:
      ran.append(batch["b/ran"])
  return (np.concatenate(ids), np.concatenate(probs),
          np.concatenate(ran) if gated else None)


def verify(spec, ref_path):
  """Compares a run's B outputs per id with B0's (same data, same weights);
  gated runs: gate decisions against A's confidence, and the fill value."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  ref = np.load(ref_path)
  n = spec["n"]
  width = ref["probs"].shape[1]
  gated = bool(spec.get("gate"))
  if spec["system"] in ("b0", "tfdata"):
    got = np.load(spec["verify"])
    ids, probs, ran = got["ids"], got["probs"], None
  else:
    pattern = ("predictions/predictions-*.tfrecord*" if spec["system"] == "tfcascade"
               else "part-*.tfrecord")
    ids, probs, ran = _read_outputs(glob.glob(os.path.join(spec["out"], pattern)),
                                    gated, width)
  order = np.argsort(ids)
  ids, probs = ids[order], probs[order]
  result = {"rows": int(len(ids)),
            "ids_complete": bool(len(ids) == n and np.array_equal(ids, np.arange(n)))}
  if not result["ids_complete"]:
    return dict(result, ok=False)
  want = ref["probs"][:n]
  if gated:
    ran = ran[order].astype(bool)
    expected = ref["confidence"][:n] < spec["threshold"]
    result["pass_rate"] = float(ran.mean())
    result["gate_mismatches"] = int((ran != expected).sum())
    result["fill_ok"] = bool((probs[~ran] == 0).all())
    diff = np.abs(probs[ran] - want[ran]).max() if ran.any() else 0.0
  else:
    diff = np.abs(probs - want).max()
  result["max_abs_diff"] = float(diff)
  result["sum_b_probs"] = float(probs.astype(np.float64).sum())
  result["ok"] = bool(diff < 1e-4 and result.get("gate_mismatches", 0) <= 2
                      and result.get("fill_ok", True))
  return result


# --- main --------------------------------------------------------------------

def _save(data, path):
  with open(path, "w") as f:
    json.dump(data, f, indent=1)


def _write_reports(data, results_md, quick):
  """RESULTS.md, and (full runs) the README's headline block, from `data`."""
  report.write(data, results_md)
  print(f"wrote {results_md}")
  if not quick:
    report.update_readme(data, README)
    print(f"updated the benchmark headline in {README}")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="smoke run: every configuration once at 4000,16000 rows; "
                           "results-quick.json and RESULTS-quick.md in the work dir")
  parser.add_argument("--reps", type=int, default=None, help="rounds (default 3; quick 1)")
  parser.add_argument("--sizes", default=None,
                      help="small,big rows (default 100000,400000; quick 4000,16000)")
  parser.add_argument("--workdir", default="/tmp/tfcascade-bench",
                      help="data, models and outputs (not in the repo)")
  parser.add_argument("--only", default=None, help="run configurations whose name contains this (results in the work dir, "
                           "like --quick)")
  parser.add_argument("--budget-min", type=float, default=None,
                      help="start no new round after this many minutes")
  parser.add_argument("--report-only", action="store_true",
                      help="rebuild RESULTS.md from results.json")
  args = parser.parse_args(argv)

  small, big = (4000, 16000) if args.quick else (100000, 400000)
  if args.sizes:
    small, big = (int(s) for s in args.sizes.split(","))
  # One folder per size pair, so quick and full runs keep their own data.
  workdir = os.path.join(args.workdir, f"{small}_{big}")
  results_json, results_md = RESULTS_JSON, RESULTS_MD
  if args.quick or args.only:  # a smoke run or a subset never replaces the committed results
    results_json = os.path.join(workdir, "results-quick.json")
    results_md = os.path.join(workdir, "RESULTS-quick.md")
  if args.report_only:
    with open(results_json) as f:
      _write_reports(json.load(f), results_md, args.quick)
    return

  reps = args.reps or (1 if args.quick else 3)
  started = time.time()
  log = common.logger(started)
  # Data and models are written by a child: the driver stays TF-free while
  # measuring (it imports TF only to check outputs between runs).
  manifest = common.in_child(
      "import json; from benchmarks import workloads as w; "
      f"print('MANIFEST', json.dumps(w.prepare({workdir!r}, [{small // 4}, {small}, {big}])))",
      "MANIFEST")
  log(f"data and models ready in {workdir}")

  runs = plan_runs(small, big)
  if args.only:
    runs = [r for r in runs if args.only in r["name"]]
  data = {"machine": common.machine_info(), "manifest": manifest,
          "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
              timespec="seconds"),
          "mode": "quick" if args.quick else "full", "sizes": [small, big],
          "reps_planned": reps, "runs": [], "verify": {}}
  total = len(runs) + (reps - 1) * len([r for r in runs if not r.get("once")])
  for rep in range(reps):
    if rep and args.budget_min and (time.time() - started) / 60 > args.budget_min:
      log(f"time budget of {args.budget_min} min spent: stopping after {rep} rounds")
      break
    order = [r for r in runs if rep == 0 or not r.get("once")]
    random.Random(rep).shuffle(order)
    if rep == 0:  # B0 at the big size first: the reference for every check
      order.sort(key=lambda r: not (r["system"] == "b0" and r["n"] == big))
    for run in order:
      spec = dict({k: v for k, v in run.items() if k != "once"}, rep=rep, workdir=workdir,
                  out=os.path.join(workdir, "out", run["name"].replace("/", "_")
                                   + f"_{run['n']}"))
      spec.setdefault("beam_args", [])
      if run.get("gate"):
        spec["threshold"] = manifest["thresholds"][run["kind"]][run["gate"]]
      if rep == 0 and run["system"] in ("b0", "tfdata"):
        spec["verify"] = spec["out"] + ".npz"
        os.makedirs(os.path.dirname(spec["verify"]), exist_ok=True)
      record = run_one(spec, timeout=900, log=log)
      record["kind"], record["system"] = run["kind"], run["system"]
      data["runs"].append(record)
      log(f"({len(data['runs'])}/{total}) rep {rep} {run['name']:34s} n={run['n']:>7,} "
          f"job {record.get('job_s', float('nan')):7.2f}s  "
          f"rss {record['peak_rss_mb']:6.0f}MB  others {record['foreign_cpu_s']:5.1f}cpu-s")
      if rep == 0 and run["system"] in ("b0", "tfdata", "naive", "tfcascade") \
          and run["n"] and "error" not in record:
        # Every dataset is a prefix of the big one: B0's big run is the reference.
        ref = os.path.join(workdir, "out", f"{run['kind']}_b0_{big}.npz")
        try:
          check = verify(spec, ref)
        except Exception as e:  # pylint: disable=broad-except; reported, not fatal
          check = {"ok": False, "error": repr(e)}
        data["verify"][f"{run['name']}@{run['n']}"] = check
        if not check.get("ok"):
          log(f"  OUTPUT CHECK FAILED: {check}")
      data["elapsed_s"] = time.time() - started
      # progress in the work dir: an interrupted run never replaces results_json
      _save(data, os.path.join(workdir, "results-partial.json"))
    data["reps_done"] = rep + 1
  if not args.only or args.only in "writers":
    # The output writers side by side (benchmarks.writers), TF-free but in a
    # child like the data: the driver measures nothing of its own.
    rows, rounds = (10240, 3) if args.quick else (102400, 7)
    data["writers"] = common.in_child(
        f"import json; from benchmarks import writers; "
        f"print('WRITERS', json.dumps(writers.measure({rows}, {rounds})))", "WRITERS")
    log("output writers measured")
  data["elapsed_s"] = time.time() - started
  _save(data, results_json)
  _write_reports(data, results_md, args.quick or bool(args.only))
  print(report.headline(data))


if __name__ == "__main__":
  main()
