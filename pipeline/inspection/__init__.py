"""`tfcascade inspect`: describe any model source, TFRecord files or an output dir.

What `describe` understands, tried in this order:
  - a SavedModel directory (saved_model.pb): tags, signatures with each input
    and output key's dtype, shape and tensor name, its variables, and a
    ready-to-paste `stages:` entry;
  - a `.meta` file: placeholders (candidate inputs), likely outputs, variables
    and a `stages:` entry;
  - a checkpoint prefix or directory: variables, shapes, dtypes, fingerprint
    (and the directory's `.meta` file when it has one);
  - a tfcascade output directory: what is published (summary, top
    dead-letter reasons, completeness, accuracy against an int64 label
    passthrough, TFRecord or JSONL), then each run under its `_staging/`
    that did not publish: in progress, failed or dead and why, its counts
    and top dead-letter reasons (also for `_staging/` or one run's directory);
  - TFRecord file(s), a path or a glob: record counts and the feature schema.
Anything else is one InspectError line saying what was found and what was
expected. The `stages:` entry's paths are as given, or relative to the
config directory `relative_to` (`--relative-to`), as a config there needs them.

Modules, one per kind of path (this package only re-exports them):
  describe_path      `describe`: which kind a path is;
  saved_model_info, meta_graph_info, checkpoint_info, tfrecord_info,
  output_dir_info    each kind (tfrecord_info also has `read_records`);
  staged_runs        the runs under an output's `_staging/`;
  run_report         a run's summary, counts and top dead-letter reasons;
  stage_entry        the `stages:` entry's text;
  inspect_io         InspectError, EXPECTED, filesystem calls.
"""

from tfcascade.pipeline.inspection.inspect_io import EXPECTED, InspectError, what_it_looks_like
from tfcascade.pipeline.inspection.checkpoint_info import describe_checkpoint
from tfcascade.pipeline.inspection.saved_model_info import describe_saved_model
from tfcascade.pipeline.inspection.meta_graph_info import describe_meta_graph
from tfcascade.pipeline.inspection.tfrecord_info import describe_tfrecords, read_records
from tfcascade.pipeline.inspection.output_dir_info import cascade_report, describe_output
from tfcascade.pipeline.inspection.describe_path import describe

__all__ = ["EXPECTED", "InspectError", "cascade_report", "describe", "describe_checkpoint",
           "describe_meta_graph", "describe_output", "describe_saved_model",
           "describe_tfrecords", "read_records", "what_it_looks_like"]
