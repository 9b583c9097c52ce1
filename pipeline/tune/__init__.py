"""`tfcascade tune`: choose each gate's `run_if` threshold from data.

What it does, in order:

1. reads a sample of records (`--sample N`, spread over the input files: the
   first ceil(N / files) records of each file) from the config's input or
   `--input`;
2. runs EVERY stage on every sampled row, once, in one CascadeSession (the
   config's stages with `run_if` removed), with the label parsed in-graph;
3. measures what each gated stage costs (see `measure_costs`);
4. for each gated stage, sweeps its threshold over the observed values of the
   gate's operand (`a.confidence`, or the measure it takes of a [N, C]
   output: `max(a.probs)`, from engine.gate's MEASURES, the table the graph
   uses too) and, per threshold, emulates the real cascade in numpy: which
   rows the stage runs on, the cascade's answer (the prediction of the last
   stage that ran on the row), its accuracy against the label, and the
   rows/s the measured costs predict; a gate taking max, margin or entropy
   is also swept in the other two, each one's best threshold reported side
   by side;
5. writes DIR/tune.json (one row per threshold) and DIR/tune.png (accuracy vs
   share of rows the stage runs on), prints a short table and the
   recommended threshold with the `--set` line that applies it.

A stage's prediction (the class it answers) is the output named by
`--prediction <stage>.<output>`, else its output named `prediction`, else the
argmax of its output named `probs`, else of `logits`. An output of shape
[N, C] (C > 1) is reduced by argmax; [N] or [N, 1] is taken as class ids.

Modules, one per job (this package only re-exports them):
  stage_predictions  what a stage predicts (the rule above), as class ids;
  sample_runs        reading the sample, the ungated run, timing sessions;
  threshold_sweep    the cascade emulated in numpy, thresholds, the sweep;
  tune_result        `tune()`: all of the above, as the tune.json dict;
  sweep_report       the printed report, tune.json and tune.png;
  tune_command       `tfcascade tune`'s exit code;
  tune_error         TuneError.
"""

from tfcascade.pipeline.tune.tune_error import TuneError
from tfcascade.pipeline.tune.stage_predictions import (
    PREDICTION_OUTPUTS, class_ids, prediction_outputs)
from tfcascade.pipeline.tune.threshold_sweep import (
    ABOVE, BELOW, DEFAULT_POINTS, DEFAULT_TOLERANCE, Cascade, Costs,
    candidate_thresholds, format_number, recommend, short_number, sweep_gate)
from tfcascade.pipeline.tune.sample_runs import (
    DEFAULT_SAMPLE, gated_variant, measure_costs, read_sample, run_ungated,
    str_gate, tune_spec)
from tfcascade.pipeline.tune.tune_result import tune
from tfcascade.pipeline.tune.sweep_report import format_report, plot, write
from tfcascade.pipeline.tune.tune_command import command

__all__ = [
    "ABOVE", "BELOW", "Cascade", "Costs", "DEFAULT_POINTS", "DEFAULT_SAMPLE",
    "DEFAULT_TOLERANCE", "PREDICTION_OUTPUTS", "TuneError", "candidate_thresholds",
    "class_ids", "command", "format_number", "format_report", "gated_variant",
    "measure_costs", "plot", "prediction_outputs", "read_sample", "recommend",
    "run_ungated", "short_number", "str_gate", "sweep_gate", "tune", "tune_spec",
    "write",
]
