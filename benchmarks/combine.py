"""What a combine stage costs per row, side by side in one run (issue 24).

`.venv/bin/python -m benchmarks.combine [--n 100000] [--rounds 9]` writes
benchmarks/combine.json and benchmarks/COMBINE.md.

The light pair (benchmarks.workloads: A 64-512-64, B 64-512-16 gated at the
median of A's confidence) plus B's model a second time as stage b2, on every
row: the base. The same with a combine stage `ens: mean(b.probs, b2.probs)`:
gate-aware (b's skipped rows are left out of the mean), and, the stages now
having a `prediction`, with the final answer's columns (final/prediction,
final/probs, final/stage) too; and with `output.final: false`, the stage
alone. Every session lives in this process, one thread each, on the same
records in memory; each round runs every batch through each session, one
right after the other (the order rotating), and an arm's cost is the median
of its paired differences with the base per row, over every batch of every
round: a shared machine's drift between two whole passes is far larger than
the stage. Two levels: the session call alone (CascadeSession.run: what the
stage adds in-graph), and the job's ChunkScorer (the session call plus
encoding the extra output columns as TFRecord).
"""

from __future__ import annotations

import argparse
import copy
import glob
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks import workloads  # noqa: E402  (imports TF)
from benchmarks.common import HERE, machine_info, md_table  # noqa: E402
from tfcascade.pipeline.config import JobConfig  # noqa: E402
from tfcascade.transforms.engine import CascadeSession  # noqa: E402
from tfcascade.transforms.formats import tfrecord_framing as framing  # noqa: E402
from tfcascade.transforms.reading.record_ranges import RecordChunk  # noqa: E402
from tfcascade.transforms.scoring.chunk_scorer import ChunkScorer  # noqa: E402

KIND = "light"
COMBINE = {"name": "ens", "combine": {"op": "mean", "inputs": ["b.probs", "b2.probs"]}}
LIMIT_US = 0.2  # issue 24: a combine stage costs at most this per row


# The arms, each against "base": the combine stage with the final answer's
# columns it brings by default, and with output.final off (the stage alone).
ARMS = ("base", "combine", "combine, final off")


def configs(workdir: str, n: int, threshold: float):
  """Arm -> its job config on the n-row data. One thread per session: the
  cost is CPU time, and a shared machine's other load has less to preempt."""
  base = workloads.job_config({"workdir": workdir, "kind": KIND, "n": n, "gate": True,
                               "threshold": threshold, "out": "/tmp/tfcascade-combine"})
  base["session"] = {"intra_op_threads": 1, "inter_op_threads": 1}
  second = copy.deepcopy(base["stages"][1])
  second.update(name="b2", scope="b2")
  del second["run_if"]
  base["stages"].append(second)
  combined = copy.deepcopy(base)
  combined["stages"].append(COMBINE)
  alone = copy.deepcopy(combined)
  alone["output"]["final"] = False
  return {name: JobConfig.model_validate(c)
          for name, c in zip(ARMS, (base, combined, alone))}


def timed(fn):
  """(wall, process CPU) seconds of fn()."""
  wall, cpu = time.perf_counter(), time.process_time()
  fn()
  return time.perf_counter() - wall, time.process_time() - cpu


def measure(workdir: str, n: int, rounds: int) -> dict:
  manifest = workloads.prepare(workdir, [n])
  threshold = manifest["thresholds"][KIND]["50"]
  by_arm = configs(workdir, n, threshold)
  config = by_arm["base"]
  files = sorted(glob.glob(config.input_patterns[0]))
  chunks = [RecordChunk(f, c) for f in files for c in framing.read_record_chunks(
      f, compression="none", chunk_size=config.batch_size)]
  batches = [[r for _, r in c.records] for c in chunks]
  arms = {}
  for name, arm_config in by_arm.items():
    session = CascadeSession(arm_config.cascade_spec())
    scorer = ChunkScorer(session, arm_config.output.format, arm_config.output.passthrough,
                         arm_config.dead_letter.non_finite_outputs)
    arms[name] = {"session": session, "scorer": scorer}
  levels = {
      "session": lambda arm, i: arm["session"].run(batches[i]),
      "scorer": lambda arm, i: arm["scorer"].score(chunks[i]),
  }
  # level -> arm -> (wall, cpu) of each batch call, in the same order in every arm
  seconds = {level: {name: [] for name in arms} for level in levels}
  for arm in arms.values():  # warm up: first calls allocate
    for run in levels.values():
      for i in range(len(batches)):
        run(arm, i)
  turn = 0
  for _ in range(rounds):
    for level, run in levels.items():
      for i in range(len(batches)):
        turn += 1
        order = list(arms)[turn % len(arms):] + list(arms)[:turn % len(arms)]
        for name in order:
          seconds[level][name].append(timed(lambda: run(arms[name], i)))
  outputs = {name: sorted(arm["session"].run(batches[0]).outputs)
             for name, arm in arms.items()}
  for arm in arms.values():
    arm["session"].close()
  result = {"kind": KIND, "rows": sum(len(b) for b in batches), "rounds": rounds,
            "batch_size": config.batch_size, "threads": 1,
            "b_gate": f"a.confidence < {threshold:.6g} (half the rows)",
            "combine": COMBINE, "outputs": outputs, "limit_us_per_row": LIMIT_US,
            "levels": {}, "machine": machine_info()}
  sizes = [len(b) for b in batches] * rounds
  for level, times in seconds.items():
    result["levels"][level] = {
        clock: _costs({name: [t[k] / size * 1e6 for t, size in zip(calls, sizes)]
                       for name, calls in times.items()})
        for k, clock in enumerate(("wall", "cpu"))}
  return result


def _costs(per_row) -> dict:
  """Medians per row of each arm's batch calls, and each arm's cost: the
  median (and quartiles) of its paired differences with the base."""
  out = {"us_per_row": {name: statistics.median(v) for name, v in per_row.items()}}
  for name in ARMS[1:]:
    diffs = [c - b for b, c in zip(per_row["base"], per_row[name])]
    quartiles = statistics.quantiles(diffs, n=4)
    out[name] = {"cost_us_per_row": statistics.median(diffs),
                 "quartiles": [quartiles[0], quartiles[2]], "pairs": len(diffs)}
  return out


def report(result: dict) -> str:
  rows = []
  for level, clocks in result["levels"].items():
    for clock in ("cpu", "wall"):
      v = clocks[clock]
      for name in ARMS[1:]:
        rows.append([level, clock, name, f"{v['us_per_row']['base']:.3f}",
                     f"{v['us_per_row'][name]:.3f}", f"**{v[name]['cost_us_per_row']:.3f}**",
                     " .. ".join(f"{q:.3f}" for q in v[name]["quartiles"]), v[name]["pairs"]])
  m = result["machine"]
  combine = result["combine"]["combine"]
  lines = [
      "# A combine stage's cost per row (issue 24)", "",
      "`.venv/bin/python -m benchmarks.combine` (writes benchmarks/combine.json and this "
      "file; its docstring has the method).", "",
      f"The light pair with B gated ({result['b_gate']}) and B's model again as stage b2 "
      f"(every row); with `ens: {combine['op']}({', '.join(combine['inputs'])})` added "
      f"(gate-aware: b's skipped rows left out), which by default also brings the final "
      f"answer's columns (final/prediction, final/probs, final/stage), and with "
      f"`output.final: false` (the stage alone). {result['rows']:,} rows in batches of "
      f"{result['batch_size']}, one session thread, {result['rounds']} rounds; every "
      f"batch runs through each session one right after the other (the order "
      f"rotating); cost = the median of the paired differences with the base, per row "
      f"(quartiles beside it). CPU: the process's CPU time, TF's threads included.", "",
      *md_table(["level", "clock", "arm", "base us/row", "arm us/row", "cost us/row",
                 "cost quartiles", "pairs"], rows, left=3), "",
      f"Limit: {result['limit_us_per_row']} us/row for the stage in-graph: the session "
      f"level. The scorer level adds encoding the extra output columns into every "
      f"TFRecord Example (ens/probs, ens/prediction; and final/* by default).", "",
      f"Machine: {m.get('cpu_model')}, {m['cores']} cores, TensorFlow "
      f"{m.get('tensorflow-cpu') or m.get('tensorflow')}; shared with other work while "
      f"measured: single pairs vary (the quartiles), and CPU time per op grows when "
      f"other processes crowd the cores (a run beside a test suite on this 2-core "
      f"machine measured 0.35 us/row at the session level): measure on a quiet one.",
  ]
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=100000)
  parser.add_argument("--rounds", type=int, default=9)
  parser.add_argument("--workdir", default=None,
                      help="data and models (default /tmp/tfcascade-bench/combine_<n>)")
  args = parser.parse_args()
  workdir = args.workdir or f"/tmp/tfcascade-bench/combine_{args.n}"
  result = measure(workdir, args.n, args.rounds)
  with open(os.path.join(HERE, "combine.json"), "w") as f:
    json.dump(result, f, indent=1)
    f.write("\n")
  text = report(result)
  with open(os.path.join(HERE, "COMBINE.md"), "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  main()
