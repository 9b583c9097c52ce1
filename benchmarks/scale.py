"""Issue 22's scale benchmark: `.venv/bin/python -m benchmarks.scale [--quick]`.

The demo's job (its light pair, gate `a.confidence < 0.9`, gzip input) at two
sizes, 1,000,000 and 3,000,000 records in shards of 125,000 (8 and 24 gzip
files, so 8 and 24 units), on every engine of this machine (SYSTEMS), each
run a fresh `python -m tfcascade run` process measured as benchmarks.engines
measures it (engines.run_one: wall, CPU, RSS, Spark's event log; the output
complete), and its rows checked against the in-process DirectRunner's of the
same round and size: identical records, or (sessions with other thread
counts sum in another order) floats within float32 rounding and everything
else exact (benchmarks.output_agreement); in later rounds, records identical
to the system's own first round. Rounds interleave sizes and rotate the system order.

Per system: end to end = rows/s of the whole process at the big size;
steady = the per-row slope through the two sizes, (big - small) rows over
the difference of their median wall times, which cancels every fixed cost
(start-up, session restore, exit) that does not grow with the input.

Writes benchmarks/scale.json, the same under results.json's "scale", and
regenerates RESULTS.md's "Scale" section and the README's scale line from it
(benchmarks.report); `--report-only` redoes that from scale.json. `--quick`: 20,000 and
60,000 records, one round, results under the work dir only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

from benchmarks import report
from benchmarks.common import HERE, ROOT, child_env, logger, median, tagged_json
from benchmarks.engines import Cluster, SYSTEMS as ENGINE_SYSTEMS, run_one, versions

RESULTS_JSON = os.path.join(HERE, "scale.json")
SIZES = (1_000_000, 3_000_000)
QUICK_SIZES = (20_000, 60_000)
RECORDS_PER_SHARD = 125_000
KIND = "demo"  # the demo's light pair
REFERENCE = "direct"  # one process, in the launcher
SYSTEMS = ("direct", "default", "direct-mp2", "prism", "spark-local2", "spark-cluster")


def prepare(workdir: str, n: int, log) -> str:
  """The demo's data for n records (reused when already there); its config."""
  out = os.path.join(workdir, f"demo-{n}")
  config = os.path.join(out, "config.yaml")
  shards = max(1, n // RECORDS_PER_SHARD) if n >= RECORDS_PER_SHARD else 2
  if not os.path.exists(os.path.join(out, "demo.json")):
    log(f"building the demo's data: {n:,} records in {shards} shards -> {out}")
    subprocess.run([sys.executable, "-m", "tfcascade", "demo", "--out", out,
                    "--records", str(n), "--shards", str(shards)],
                   cwd=ROOT, env=child_env(), check=True, capture_output=True)
  return config


def agree(run: dict, reference: dict) -> dict:
  """Whether `run`'s rows are the reference's: the same records byte for
  byte, or else (a session with other thread counts) floats within float32
  rounding and the rest exact (benchmarks.output_agreement, in a child)."""
  if run["prediction_sha256"] == reference["prediction_sha256"]:
    return {"agree": True, "identical_records": True}
  out_dir, ref_dir = run["out_dir"], reference["out_dir"]
  proc = subprocess.run([sys.executable, "-m", "benchmarks.output_agreement", out_dir, ref_dir],
                        cwd=ROOT, env=child_env(), capture_output=True, text=True)
  found = tagged_json(proc.stdout, "AGREEMENT")
  if found is None:
    raise RuntimeError(f"comparing {out_dir} with {ref_dir} failed:\n{proc.stderr[-3000:]}")
  return dict(found, identical_records=False)


def summarize(runs, sizes, systems) -> dict:
  """Medians per system and size; steady and end-to-end rates and ratios."""
  small, big = sizes
  out = {}
  for system in systems:
    walls = {n: median([r["wall_s"] for r in runs
                        if r["system"] == system and r["n"] == n]) for n in sizes}
    if None in walls.values():
      continue
    cpu = median([r["cpu_s"] for r in runs if r["system"] == system and r["n"] == big])
    slope_s = walls[big] - walls[small]
    m = out[system] = {
        "wall_s_small": walls[small], "wall_s_big": walls[big], "cpu_s_big": cpu,
        "e2e_rows_per_s": round(big / walls[big], 1),
        "steady_rows_per_s": round((big - small) / slope_s, 1) if slope_s > 0 else None,
        "runs": sum(1 for r in runs if r["system"] == system)}
    sparks = [r["spark"] for r in runs
              if r["system"] == system and r["n"] == big and r.get("spark")]
    if sparks:
      m["spark_later_task_rows_per_s"] = median([s.get("later_task_rows_per_s")
                                                 for s in sparks])
      m["spark_first_wave_task_s"] = median([s.get("first_wave_task_s") for s in sparks])
      m["spark_to_first_task_s"] = median([
          s["to_spark_context_s"] + s["spark_context_to_job_s"] + s["job_start_to_first_task_s"]
          for s in sparks])
  ref = out.get(REFERENCE)
  for m in out.values() if ref else ():
    m["x_direct_e2e"] = round(m["e2e_rows_per_s"] / ref["e2e_rows_per_s"], 3)
    if m["steady_rows_per_s"] and ref["steady_rows_per_s"]:
      m["x_direct_steady"] = round(m["steady_rows_per_s"] / ref["steady_rows_per_s"], 3)
    if m.get("spark_later_task_rows_per_s") and ref["steady_rows_per_s"]:
      m["spark_slot_x_direct_steady"] = round(
          m["spark_later_task_rows_per_s"] / ref["steady_rows_per_s"], 3)
  return out


def publish(data: dict) -> None:
  """scale.json with its medians; the same under results.json's "scale", and
  RESULTS.md and the README's headline block regenerated from it."""
  data["medians"] = summarize(data["runs"], data["sizes"], data["systems"])
  with open(RESULTS_JSON, "w") as f:
    json.dump(data, f, indent=1)
  with open(report_json := os.path.join(HERE, "results.json")) as f:
    results = json.load(f)
  results["scale"] = data
  with open(report_json, "w") as f:
    json.dump(results, f, indent=1)
  report.write(results, os.path.join(HERE, "RESULTS.md"))
  report.update_readme(results, os.path.join(ROOT, "README.md"))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=None, help="default 3; --quick 1")
  parser.add_argument("--systems", default=",".join(SYSTEMS),
                      help=f"comma-separated subset of {','.join(SYSTEMS)}")
  parser.add_argument("--quick", action="store_true",
                      help=f"smoke run: {QUICK_SIZES} records, 1 round, results under "
                           f"the work dir (never replaces benchmarks/scale.json)")
  parser.add_argument("--workdir", default="/tmp/tfcascade-bench-scale",
                      help="data, outputs and the cluster's state (not in the repo)")
  parser.add_argument("--timeout", type=float, default=900, help="seconds per run")
  parser.add_argument("--results", default=None,
                      help="write this run's json (with medians) here instead of publishing "
                           "it into scale.json, RESULTS.md and the README (a subset of systems)")
  parser.add_argument("--report-only", action="store_true",
                      help="recompute the medians of scale.json's runs and rebuild RESULTS.md "
                           "and the README's scale line from them")
  args = parser.parse_args(argv)
  if args.report_only:
    with open(RESULTS_JSON) as f:
      publish(json.load(f))
    return
  sizes = QUICK_SIZES if args.quick else SIZES
  rounds = args.rounds or (1 if args.quick else 3)
  systems = [s.strip() for s in args.systems.split(",") if s.strip()]
  if set(systems) - set(SYSTEMS) or REFERENCE not in systems:
    parser.error(f"--systems: only {','.join(SYSTEMS)}, with {REFERENCE!r} (the reference)")
  results_json = args.results or (os.path.join(args.workdir, "scale-quick.json")
                                  if args.quick else RESULTS_JSON)
  started = time.time()
  log = logger(started)
  os.makedirs(args.workdir, exist_ok=True)
  configs = {n: prepare(args.workdir, n, log) for n in sizes}
  data = {"command": " ".join(["python -m benchmarks.scale"] + list(
              sys.argv[1:] if argv is None else argv)),
          "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
              timespec="seconds"),
          "sizes": list(sizes), "records_per_shard": RECORDS_PER_SHARD,
          "rounds_planned": rounds, "systems": systems, "machine": versions(),
          "what": {s: ENGINE_SYSTEMS[s][0] for s in systems}, "runs": []}
  cluster = None
  try:
    master = None
    if "spark-cluster" in systems:
      cluster = Cluster(os.path.join(args.workdir, "spark-cluster"),
                        os.path.join(ROOT, ".venv", "bin", "python"), log)
      master = cluster.start()
    for rnd in range(rounds):
      order = systems[rnd % len(systems):] + systems[:rnd % len(systems)]
      for n in (sizes if rnd % 2 == 0 else sizes[::-1]):
        mine = []
        for system in order:
          out_dir = os.path.join(args.workdir, "out", str(n), system)
          record = run_one(system, KIND, configs[n], out_dir, n, master, log, args.timeout,
                           cluster.pids() if cluster and system == "spark-cluster" else ())
          record.update(round=rnd, out_dir=out_dir)
          mine.append(record)
          log(f"round {rnd} {n:>9,} {system:13s} {record['wall_s']:6.1f}s "
              f"{record['rows_per_s']:9,.0f} rows/s  cpu {record['cpu_s']:6.1f}s  "
              f"others {record['others_cpu_s']:5.1f}s  load {record['loadavg_1m_at_start']:.2f}")
        reference = next(r for r in mine if r["system"] == REFERENCE)
        for r in mine:
          first = next((f for f in data["runs"] if f["system"] == r["system"]
                        and f["n"] == n and f["round"] == 0), None)
          if first and first["prediction_sha256"] == r["prediction_sha256"]:
            r["agreement"] = {"agree": True, "same_records_as_round": 0}  # deterministic
          else:
            r["agreement"] = agree(r, reference)
        bad = [r["system"] for r in mine if not r["agreement"]["agree"]]
        if bad:
          raise RuntimeError(f"round {rnd}, {n:,} records: the rows of {bad} differ from "
                             f"the in-process DirectRunner's: "
                             f"{[r['agreement'] for r in mine if r['system'] in bad]}")
        data["runs"] += mine
      data["rounds_done"] = rnd + 1
      with open(os.path.join(args.workdir, "scale-partial.json"), "w") as f:
        json.dump(data, f, indent=1)
  finally:
    if cluster is not None:
      cluster.stop()
  data["elapsed_s"] = round(time.time() - started, 1)
  data["loadavg_1m"] = [r["loadavg_1m_at_start"] for r in data["runs"]]
  data["others_cpu_s_median"] = statistics.median(r["others_cpu_s"] for r in data["runs"])
  if args.quick or args.results:
    data["medians"] = summarize(data["runs"], data["sizes"], data["systems"])
    with open(results_json, "w") as f:
      json.dump(data, f, indent=1)
  else:
    publish(data)
  log(f"wrote {results_json}")
  for system, m in data["medians"].items():
    log(f"{system:13s} e2e {m['e2e_rows_per_s']:9,.0f} rows/s (x{m.get('x_direct_e2e')}), "
        f"steady {m['steady_rows_per_s'] or 0:9,.0f} rows/s (x{m.get('x_direct_steady')})")


if __name__ == "__main__":
  main()
