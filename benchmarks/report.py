"""results.json -> RESULTS.md: medians, fits, ratios and targets.

Times are `job_s`: everything a run does beyond `import tensorflow` in its
process (imports, graph, restore, read, score, write). With two sizes per
configuration, time = fixed + n * per_row is solved from the medians, which
separates steady-state throughput (1 / per_row) from fixed start-up cost.
The narrative (profiles, causes, fixes) lives in benchmarks/analysis.md and is
appended verbatim, so the report can be rebuilt from the json at any time.
"""

from __future__ import annotations

import os
import statistics
from collections import defaultdict

ANALYSIS_MD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "analysis.md")

SYSTEM_ROWS = [
    ("b0", "B0 physical limit (numpy, one session, no IO)"),
    ("tfdata", "tf.data: TFRecordDataset -> parse_example -> A -> B"),
    ("naive", "naive Beam: ReadFromTFRecord -> Python parse -> 2x RunInference -> WriteToTFRecord"),
    ("tfcascade", "tfcascade, DirectRunner in-process"),
    ("tfcascade-mp2", "tfcascade, multi_processing, 2 workers"),
]


def _med(values):
  values = [v for v in values if v is not None]
  return statistics.median(values) if values else None


class Table:
  """Medians per (configuration name, n) over the successful runs."""

  def __init__(self, runs):
    self.by = defaultdict(list)
    for r in runs:
      if "error" not in r and r.get("job_s") is not None:
        self.by[(r["name"], r["n"])].append(r)

  def runs(self, name, n):
    return self.by.get((name, n), [])

  def med(self, name, n, key="job_s"):
    return _med([r.get(key) for r in self.runs(name, n)])

  def least(self, name, n, key="job_s"):
    values = [r.get(key) for r in self.runs(name, n) if r.get(key) is not None]
    return min(values) if values else None

  def spread(self, name, n):
    times = [r["job_s"] for r in self.runs(name, n)]
    return (min(times), max(times)) if times else (None, None)

  def fit(self, name, small, big, key="job_s", agg="med"):
    """(fixed, per_row) from the two sizes' median (or least) `key`, or Nones."""
    get = self.med if agg == "med" else self.least
    t_small, t_big = get(name, small, key), get(name, big, key)
    if t_small is None or t_big is None or big == small:
      return None, None
    per_row = (t_big - t_small) / (big - small)
    return t_small - small * per_row, per_row


def _fmt(v, spec=",.0f", none="–"):
  return none if v is None else format(v, spec)


def _by_rep(runs):
  out = defaultdict(list)
  for r in runs:
    out[r["rep"]].append(r["foreign_cpu_s"])
  return out


def _flops(f):
  return f"{f / 1e6:.2f} MFLOP" if f >= 1e5 else f"{f / 1e3:.2f} kFLOP"


def _ratio(a, b):
  return None if a is None or b is None or b == 0 else a / b


def summarize(data):
  """Derived numbers for the report and results.json consumers."""
  small, big = data["sizes"]
  t = Table(data["runs"])
  out = {"kinds": {}}
  for kind in ("heavy", "light"):
    rows = {}
    for system, _ in SYSTEM_ROWS:
      name = f"{kind}/{system}"
      # Naive Beam runs at small/4 and small (see run.plan_runs); its big-size
      # time is extrapolated from that fit.
      lo, hi = (small // 4, small) if system == "naive" else (small, big)
      fixed, per_row = t.fit(name, lo, hi)
      t_big = t.med(name, big)
      _, per_row_min = t.fit(name, lo, hi, agg="min")
      _, cpu_per_row = t.fit(name, lo, hi, key="cpu_s")
      extrapolated = t_big is None and per_row is not None
      if extrapolated:
        t_big = fixed + big * per_row
      rows[system] = {
          "sizes": [lo, hi], "extrapolated": extrapolated,
          "t_small": t.med(name, lo), "t_big": t_big,
          "spread_big": t.spread(name, hi),
          "e2e_rate": big / t_big if t_big else None,
          "steady_rate": 1 / per_row if per_row and per_row > 0 else None,
          # Least-disturbed runs, and CPU time (user+sys of the tree), which
          # other people's load inflates far less than wall time.
          "steady_rate_min": 1 / per_row_min if per_row_min and per_row_min > 0 else None,
          "cpu_us_per_row_steady": cpu_per_row * 1e6 if cpu_per_row and cpu_per_row > 0 else None,
          "fixed_s": fixed, "rss_mb": t.med(name, hi, "peak_rss_mb"),
          "cpu_s": t.med(name, hi, "cpu_s"),
          "foreign_cpu_s": t.med(name, hi, "foreign_cpu_s"),
          "n_runs": len(t.runs(name, hi)),
      }
    for system, row in rows.items():
      row["cpu_per_row_us"] = (None if row["cpu_s"] is None
                               else row["cpu_s"] / row["sizes"][1] * 1e6)
      for base in ("b0", "naive"):
        row[f"steady_x_{base}"] = _ratio(row["steady_rate"], rows[base]["steady_rate"])
        row[f"min_x_{base}"] = _ratio(row["steady_rate_min"], rows[base]["steady_rate_min"])
        row[f"cpu_x_{base}"] = _ratio(rows[base]["cpu_us_per_row_steady"],
                                      row["cpu_us_per_row_steady"])
        row[f"e2e_x_{base}"] = _ratio(row["e2e_rate"], rows[base]["e2e_rate"])
    out["kinds"][kind] = rows
  # Gates (heavy): ungated = heavy/tfcascade.
  gates = {}
  base_fixed, base_per_row = t.fit("heavy/tfcascade", small, big)
  base_big = t.med("heavy/tfcascade", big)
  _, base_per_row_min = t.fit("heavy/tfcascade", small, big, agg="min")
  base_big_min = t.least("heavy/tfcascade", big)
  for gate in ("100", "50", "10"):
    name = f"heavy/tfcascade-gate{gate}"
    fixed, per_row = t.fit(name, small, big)
    _, per_row_min = t.fit(name, small, big, agg="min")
    t_big = t.med(name, big)
    gates[gate] = {
        "t_big": t_big, "fixed_s": fixed,
        "pass_rate": _med([r.get("rows_run_b", 0) / r["n"] for r in t.runs(name, big)]),
        "e2e_speedup": _ratio(base_big, t_big),
        # A non-positive slope means noise swamped the fit: no number.
        "steady_speedup": (_ratio(base_per_row, per_row)
                           if per_row and per_row > 0 and base_per_row
                           and base_per_row > 0 else None),
        "e2e_speedup_min": _ratio(base_big_min, t.least(name, big)),
        "steady_speedup_min": (_ratio(base_per_row_min, per_row_min)
                               if per_row_min and per_row_min > 0 else None),
    }
  out["gates"] = gates
  # Start-up.
  startup = {k: t.med("heavy/startup", 0, k) for k in
             ("job_s", "imports_s", "preflight_s", "session_s", "first_batch_s",
              "tf_import_s")}
  startup["one_batch_job_s"] = t.med("heavy/tfcascade-1batch", 0)
  startup["fit_fixed_s"] = base_fixed
  startup["fit_fixed_light_s"] = out["kinds"]["light"]["tfcascade"]["fixed_s"]
  out["startup"] = startup
  # Memory: 1 vs 4 threads in one process.
  mem1 = t.med("light/tfcascade-mt1", big, "peak_rss_mb")
  mem4 = t.med("light/tfcascade-mt4", big, "peak_rss_mb")
  out["memory"] = {"mt1_mb": mem1, "mt4_mb": mem4, "ratio": _ratio(mem4, mem1),
                   "inproc_mb": out["kinds"]["light"]["tfcascade"]["rss_mb"],
                   "mt1_s": t.med("light/tfcascade-mt1", big),
                   "mt4_s": t.med("light/tfcascade-mt4", big)}
  roof = [r.get("gflops", {}) for r in t.runs("roofline", 0)]
  out["roofline"] = {k: _med([g.get(k) for g in roof])
                     for k in ("matmul_2048", "b_layer_1024")}
  single = "heavy/tfcascade-mp2-singlefile"
  out["single_file"] = {"t_big": t.med(single, big),
                        "e2e_rate": big / t.med(single, big) if t.med(single, big) else None,
                        "rss_mb": t.med(single, big, "peak_rss_mb")}
  return out


def _targets(s):
  """(target, measured text, met?) rows, judged on steady-state medians."""
  rows = []
  h, l = s["kinds"]["heavy"], s["kinds"]["light"]

  def ratio_row(label, value, goal, e2e, least=None):
    met = value is not None and value >= goal
    if least is not None and met != (least >= goal):
      met = None  # medians and least-disturbed runs disagree: noise decides
    text = f"{_fmt(value, '.2f')}x (end-to-end at the big size: {_fmt(e2e, '.2f')}x"
    text += f"; least-disturbed runs: {_fmt(least, '.2f')}x)" if least else ")"
    if value is not None and not met:
      text += f"; short by {100 * (1 - value / goal):.0f}%"
    rows.append((label, text, met))

  ratio_row("heavy: tfcascade >= 0.85 x B0", h["tfcascade"]["steady_x_b0"], 0.85,
            h["tfcascade"]["e2e_x_b0"], h["tfcascade"]["min_x_b0"])
  ratio_row("heavy: tfcascade >= 1.3 x naive Beam", h["tfcascade"]["steady_x_naive"],
            1.3, h["tfcascade"]["e2e_x_naive"], h["tfcascade"]["min_x_naive"])
  ratio_row("light: tfcascade >= 0.6 x B0", l["tfcascade"]["steady_x_b0"], 0.6,
            l["tfcascade"]["e2e_x_b0"], l["tfcascade"]["min_x_b0"])
  ratio_row("light: tfcascade >= 3 x naive Beam", l["tfcascade"]["steady_x_naive"], 3,
            l["tfcascade"]["e2e_x_naive"], l["tfcascade"]["min_x_naive"])
  g10 = s["gates"]["10"]
  ratio_row("gated at 10% pass >= 4 x ungated", g10["steady_speedup"], 4,
            g10["e2e_speedup"], g10["steady_speedup_min"])
  g100 = s["gates"]["100"]

  def over(x):
    return None if x is None else 1 / x - 1

  rows.append(("gate overhead at 100% pass <= 5%",
               f"{_fmt(over(g100['steady_speedup']), '+.1%')} per row (end-to-end: "
               f"{_fmt(over(g100['e2e_speedup']), '+.1%')}; least-disturbed runs: "
               f"{_fmt(over(g100['steady_speedup_min']), '+.1%')} per row, "
               f"{_fmt(over(g100['e2e_speedup_min']), '+.1%')} end-to-end)",
               _agree(over(g100["steady_speedup"]), over(g100["steady_speedup_min"]))))
  st = s["startup"]
  rows.append(("start-up <= 3 s beyond importing TF",
               f"engine (imports + preflight + restore + 1st batch): "
               f"{_fmt(st['job_s'], '.2f')} s; whole job on one batch: "
               f"{_fmt(st['one_batch_job_s'], '.2f')} s; fit intercept: "
               f"{_fmt(st['fit_fixed_s'], '.2f')} s",
               st["one_batch_job_s"] is not None and st["one_batch_job_s"] <= 3))
  m = s["memory"]
  rows.append(("peak RSS, 4 threads within 15% of 1 thread",
               f"{_fmt(m['mt1_mb'])} MB vs {_fmt(m['mt4_mb'])} MB "
               f"({_fmt(None if m['ratio'] is None else m['ratio'] - 1, '+.1%')})",
               m["ratio"] is not None and m["ratio"] <= 1.15))
  return rows


def _agree(median_over, least_over, limit=0.05):
  """Met only when the medians and the least-disturbed runs both say so."""
  met = median_over is not None and median_over <= limit
  if least_over is not None and met != (least_over <= limit):
    return None
  return met


def _verdict(met):
  return {True: "yes", False: "**no**", None: "**unclear** (medians and "
          "least-disturbed runs disagree: noise)"}[met]


def headline(data) -> str:
  s = summarize(data)
  lines = ["", "Targets (medians):"]
  for label, text, met in _targets(s):
    lines.append(f"  [{ {True: 'MET ', False: 'MISS', None: '??? '}[met]}] {label}: {text}")
  return "\n".join(lines)


def _header(data):
  runs = data["runs"]
  return [
      "# tfcascade benchmark results (issue 5)", "",
      f"Generated by `.venv/bin/python -m benchmarks.run"
      f"{' --quick' if data['mode'] == 'quick' else ''}` on {data['date_utc']} "
      f"({data['mode']} mode, {data.get('reps_done', '?')} of "
      f"{data['reps_planned']} interleaved rounds, {len(runs)} runs, "
      f"{data.get('elapsed_s', 0) / 60:.1f} min). Raw numbers: `results.json`.", "",
  ]


def _machine_section(data):
  m, runs = data["machine"], data["runs"]
  return [
      "## Machine", "",
      f"- {m['cores']} cores, {m.get('cpu_model')} ({', '.join(m.get('simd', []))}), "
      f"{m['memory_gb']} GiB RAM; {m['platform']}",
      f"- Python {m['python']}, tensorflow-cpu {m.get('tensorflow-cpu', m.get('tensorflow'))}, "
      f"apache-beam {m.get('apache-beam')}, numpy {m.get('numpy')}, "
      f"protobuf {m.get('protobuf')}, google-crc32c {m.get('google-crc32c')}",
      "- **Shared and noisy**: other developers' tests ran on the same 2 cores. "
      "Each run records the CPU-seconds *others* used while it ran; per round "
      "(median / max): " + ", ".join(
          f"round {rep + 1} {_fmt(_med(v), '.1f')} / {_fmt(max(v), '.1f')}"
          for rep, v in sorted(_by_rep(runs).items())) + " cpu-s per run, "
      f"median 1-min load average at run start "
      f"{_fmt(_med([r['loadavg_1m'] for r in runs]), '.1f')}. Rounds are "
      f"interleaved (every configuration once per round, shuffled) and medians "
      f"are reported, so the noise hits all systems alike, but absolute rates "
      f"are lower than on an idle machine and single ratios carry ~10-20% noise.",
      "",
  ]


def _workload_section(data):
  man = data["manifest"]
  small, big = data["sizes"]
  lines = [
      "## Workload", "",
      f"- Deterministic synthetic TFRecords (uncompressed): `tf.train.Example` with "
      f"`id` (bytes) and `x` (float[64]), {man['bytes_per_record']:.0f} bytes/record; "
      f"{small:,} and {big:,} records, sharded into 4 files (plus one "
      f"{big:,}-record single file). The small set is a prefix of the big one.",
      "- Models: real checkpoints + `.meta`, each saved from its own graph, "
      "clashing variable names (`dense/kernel`, ...).",
  ]
  for kind in ("heavy", "light"):
    f = man["flops_per_row"][kind]
    arch = man["archs"][kind]
    lines.append(
        f"  - **{kind}**: A {'->'.join(map(str, arch['a']))} "
        f"({_flops(f['a'])}/row), B {'->'.join(map(str, arch['b']))} "
        f"({_flops(f['b'])}/row); A->B total {_flops(f['a'] + f['b'])}/row.")
  th = man["thresholds"]["heavy"]
  lines += [
      f"- Gate: B `run_if: a.confidence < t`, t from A's confidence quantiles on "
      f"the data: 100% (t=1.5), 50% (t={th['50']:.4f}), 10% (t={th['10']:.4f}).",
      f"- Time = `job_s`: everything beyond `import tensorflow` in a fresh process "
      f"(imports, graph, restore, read, score, write). Steady-state rows/s and "
      f"fixed cost come from time = fixed + n x per_row solved on the medians at "
      f"{small:,} and {big:,} rows. B0 and tf.data write nothing; naive Beam and "
      f"tfcascade write every row's outputs as TFRecords.",
      "- Peak RSS: sum over the run's process tree, sampled every 50 ms "
      "(multi-process runs double-count shared library pages).", "",
  ]
  return lines


def _system_row(label, r, big):
  lo, hi = r["spread_big"]
  sizes = ("/".join(f"{n // 1000}k" if n >= 1000 else str(n) for n in r["sizes"])
           if r["t_small"] is not None else f"{big // 1000}k only")
  e2e = _fmt(r["e2e_rate"]) + (" (extrapolated)" if r["extrapolated"] else "")
  return (
      f"| {label} | {sizes} | {_fmt(r['steady_rate'])} | {e2e} | "
      f"{_fmt(r['fixed_s'], '.2f')} | {_fmt(r['steady_x_b0'], '.2f')} / "
      f"{_fmt(r['e2e_x_b0'], '.2f')} | {_fmt(r['steady_x_naive'], '.2f')} / "
      f"{_fmt(r['e2e_x_naive'], '.2f')} | {_fmt(r['steady_rate_min'])} "
      f"({_fmt(r['min_x_b0'], '.2f')}) | {_fmt(r['cpu_us_per_row_steady'], '.1f')} "
      f"({_fmt(r['cpu_x_b0'], '.2f')}) | {_fmt(r['rss_mb'])} | "
      f"{_fmt(lo, '.1f')}-{_fmt(hi, '.1f')} |")


def _kind_section(data, s, kind):
  """One model kind's table: every system, steady and end-to-end."""
  big = data["sizes"][1]
  rows = s["kinds"][kind]
  f = data["manifest"]["flops_per_row"][kind]
  roof = s["roofline"]
  b0 = rows["b0"]["steady_rate"]
  lines = [f"## {kind.capitalize()} models", "",
           f"| system | sizes fitted | rows/s steady | rows/s end-to-end "
           f"@{big // 1000}k | fixed s | x B0 (steady / e2e) | x naive "
           f"(steady / e2e) | steady rows/s, least-disturbed runs (x B0) | "
           f"CPU us/row steady (B0's / this) | peak RSS MB | time min-max s |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  lines += [_system_row(label, rows[system], big) for system, label in SYSTEM_ROWS]
  lines += ["", "Steady = the per-row slope of time = fixed + n x per_row "
            "through the two sizes' medians (least-disturbed: through the "
            "fastest run of each size). CPU = user+sys of the process tree, "
            "fitted the same way; it is much less sensitive to other people's "
            "load than wall time. Peak RSS and the min-max spread of times are "
            "at the larger fitted size."]
  if b0:
    lines += ["", f"B0 reaches {b0 * (f['a'] + f['b']) / 1e9:.2f} GFLOP/s "
              f"({_flops(f['a'] + f['b'])}/row); roofline in the same "
              f"session config: {_fmt(roof['matmul_2048'], '.1f')} GFLOP/s "
              f"(2048^3 matmul), {_fmt(roof['b_layer_1024'], '.1f')} GFLOP/s "
              f"(1024x1024x1024, B's layer shape)."]
  lines.append("")
  return lines


def _gates_section(s):
  lines = ["## Gated cascade (heavy, tfcascade in-process)", "",
           "| B runs on | measured pass rate | time @big s (median) | speed-up vs "
           "ungated, medians (steady / e2e) | least-disturbed runs (steady / e2e) |",
           "|---|---:|---:|---:|---:|"]
  for gate in ("100", "50", "10"):
    r = s["gates"][gate]
    lines.append(f"| {gate}% | {_fmt(r['pass_rate'], '.1%')} | {_fmt(r['t_big'], '.1f')} | "
                 f"{_fmt(r['steady_speedup'], '.2f')} / {_fmt(r['e2e_speedup'], '.2f')} | "
                 f"{_fmt(r['steady_speedup_min'], '.2f')} / "
                 f"{_fmt(r['e2e_speedup_min'], '.2f')} |")
  return lines


def _startup_section(s):
  st = s["startup"]
  return [
      "", "## Start-up (beyond `import tensorflow`)", "",
      f"- `import tensorflow` itself: median {_fmt(st['tf_import_s'], '.2f')} s on this machine.",
      f"- tfcascade pieces (median): imports (Beam, pipeline, engine) "
      f"{_fmt(st['imports_s'], '.2f')} s, config + preflight (builds the graph once "
      f"on the launcher) {_fmt(st['preflight_s'], '.2f')} s, CascadeSession "
      f"(graph + 2 restores + callable) {_fmt(st['session_s'], '.2f')} s, first batch "
      f"{_fmt(st['first_batch_s'], '.2f')} s; total {_fmt(st['job_s'], '.2f')} s.",
      f"- Whole job (`pipeline.job.run`, DirectRunner) on one 1024-record batch: "
      f"{_fmt(st['one_batch_job_s'], '.2f')} s. Fit intercept of the "
      f"heavy/light job: {_fmt(st['fit_fixed_s'], '.2f')} / "
      f"{_fmt(st['fit_fixed_light_s'], '.2f')} s.",
  ]


def _memory_section(data, s):
  big = data["sizes"][1]
  mem, sf = s["memory"], s["single_file"]
  lines = [
      "", "## Memory: one process, 1 vs 4 threads (light, "
      f"{big:,} rows)", "",
      f"- `--direct_running_mode=multi_threading --direct_num_workers=1`: "
      f"{_fmt(mem['mt1_mb'])} MB peak RSS ({_fmt(mem['mt1_s'], '.1f')} s); "
      f"`--direct_num_workers=4`: {_fmt(mem['mt4_mb'])} MB "
      f"({_fmt(mem['mt4_s'], '.1f')} s); ratio "
      f"{_fmt(mem['ratio'], '.2f')}. Default in-process mode: {_fmt(mem['inproc_mb'])} MB.",
  ]
  if sf["t_big"]:
    lines += [f"- One {big:,}-record file, split into byte ranges "
              f"(`split_bytes` 8 MiB), multi_processing x2 (heavy): "
              f"{_fmt(sf['e2e_rate'])} rows/s end-to-end, {_fmt(sf['rss_mb'])} MB."]
  return lines


def _targets_section(s):
  lines = ["", "## Targets (medians)", "", "| target | measured | met |", "|---|---|---|"]
  for label, text, met in _targets(s):
    lines.append(f"| {label} | {text} | {_verdict(met)} |")
  return lines


def _agreement_section(data):
  lines = ["", "## Output agreement", "",
           "B's probabilities per id compared with B0's (same data, same weights); "
           "gated runs: gate decisions vs `A.confidence < t` and fill value on "
           "rows B skipped.", "",
           "| run | rows | all ids once | max abs diff vs B0 | pass rate | gate mismatches | ok |",
           "|---|---:|---|---:|---:|---:|---|"]
  for key, v in sorted(data.get("verify", {}).items()):
    lines.append(f"| {key} | {_fmt(v.get('rows'))} | {v.get('ids_complete')} | "
                 f"{_fmt(v.get('max_abs_diff'), '.2e')} | {_fmt(v.get('pass_rate'), '.1%')} | "
                 f"{_fmt(v.get('gate_mismatches'))} | {'yes' if v.get('ok') else '**no**'} |")
  failed = [r for r in data["runs"] if "error" in r]
  if failed:
    lines += ["", f"**{len(failed)} runs failed**: " +
              ", ".join(f"{r['name']}@{r['n']} rep {r['rep']}" for r in failed)]
  return lines


def _analysis_section(data):
  # The narrative discusses the full run; a quick smoke run gets none.
  if data.get("mode") == "full" and os.path.exists(ANALYSIS_MD):
    with open(ANALYSIS_MD) as f:
      return ["", f.read().rstrip()]
  return []


def write(data, path):
  """Writes RESULTS.md for `data` (results.json's content) to `path`; adds the
  derived numbers to `data` under "summary"."""
  s = summarize(data)
  data["summary"] = s
  lines = (_header(data) + _machine_section(data) + _workload_section(data)
           + _kind_section(data, s, "heavy") + _kind_section(data, s, "light")
           + _gates_section(s) + _startup_section(s) + _memory_section(data, s)
           + _targets_section(s) + _agreement_section(data) + _analysis_section(data))
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
