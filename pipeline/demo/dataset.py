"""Writes the demo scoring data set: augmented held-out digits as TFRecords.

Each record is a `tf.train.Example` with `id` (bytes, b"rec-000000123"),
`pixels` (float_list[64], in [0, 1]) and `label` (int64). Records are split
over shards in contiguous id ranges, so record i of the whole set is a known
(shard, index-in-file) pair.

`shift` > 0 writes the same records as an upstream change would hand them
over (`tfcascade demo --shift S`, for trying `tfcascade report --compare`):
see `shifted`.
"""

from __future__ import annotations

import os
from typing import List, Tuple

import numpy as np
import tensorflow as tf

from tfcascade.pipeline.demo import digits

# Keeps the scoring draw a different stream from any training draw.
_DATA_DRAW = 3_000
# ... and the shift's noise another one.
_SHIFT_DRAW = 4_000
# Each record's features, as a job config declares them.
FEATURES = {"id": {"dtype": "string"},
            "pixels": {"dtype": "float32", "shape": [digits.NUM_PIXELS]},
            "label": {"dtype": "int64"}}


def shard_path(out_dir: str, shard: int, shards: int) -> str:
  """The file name of one shard, e.g. part-00000-of-00008.tfrecord.gz."""
  return os.path.join(out_dir,
                      f"part-{shard:05d}-of-{shards:05d}.tfrecord.gz")


def shifted(pixels: np.ndarray, shift: float, seed: int) -> np.ndarray:
  """`pixels` washed out by `shift` (0..1): the contrast lowered toward
  mid-grey by that share, plus gaussian noise of standard deviation
  shift / 4, clipped to [0, 1]; 0 leaves them as they are. Like a camera or
  upstream encoder change: the models grow unsure (A's confidence falls, so
  B runs on more rows) and their class mix moves."""
  if not shift:
    return pixels
  rng = np.random.default_rng(seed + _SHIFT_DRAW)
  washed = (1.0 - shift) * pixels + shift * 0.5
  noisy = washed + rng.normal(0.0, shift / 4, size=pixels.shape)
  return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def demo_records(records: int, seed: int = 0, shift: float = 0.0
                ) -> Tuple[List[bytes], np.ndarray, np.ndarray]:
  """The demo data set in memory, exactly as write_demo_dataset writes it.

  Args:
    records: number of records.
    seed: seeds the augmentation.
    shift: washes the pixels out (`shifted`); 0: the usual data.

  Returns:
    (ids, pixels float32 [records, 64], labels int64 [records]).
  """
  split = digits.load_split()
  pixels, labels = digits.augment(split.held_out_pixels,
                                  split.held_out_labels, records,
                                  seed + _DATA_DRAW)
  ids = [b"rec-%09d" % i for i in range(records)]
  return ids, shifted(pixels, shift, seed), labels


def _shard_bounds(records: int, shards: int) -> List[Tuple[int, int]]:
  edges = np.linspace(0, records, shards + 1).round().astype(int)
  return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


def write_demo_dataset(out_dir: str, records: int = 200_000, shards: int = 8,
                       seed: int = 0, shift: float = 0.0) -> dict:
  """Writes `records` Examples over `shards` GZIP TFRecord files.

  Args:
    out_dir: directory to write: created if missing, else it must be empty
      (old shards next to the new ones would be read as part of the set).
    records: number of records in total.
    shards: number of files.
    seed: seeds the augmentation; same arguments, same bytes.
    shift: washes the pixels out (`shifted`); 0: the usual data.

  Returns:
    {"records", "shards", "files", "records_per_file", "bytes", "seed",
    "shift"}.

  Raises:
    ValueError: records < 1, shards outside 1..records, or out_dir not empty.
  """
  if not 1 <= shards <= records:
    raise ValueError(f"need records >= 1 and shards in 1..records, got {records}, "
                     f"{shards}")
  os.makedirs(out_dir, exist_ok=True)
  if os.listdir(out_dir):
    raise ValueError(f"{out_dir} is not empty")
  ids, pixels, labels = demo_records(records, seed, shift)
  # One reused message, refilled per record: building a fresh Example tree
  # per record costs several times more than refilling three fields.
  example = tf.train.Example()
  feature = example.features.feature
  id_list = feature["id"].bytes_list.value
  pixel_list = feature["pixels"].float_list.value
  label_list = feature["label"].int64_list.value
  id_list.append(b"")
  label_list.append(0)
  pixel_rows = pixels.tolist()  # Python floats once, not per element.
  label_values = labels.tolist()
  # Level 1: noisy float pixels barely compress, and zlib's default level
  # (6) spent ~3.5x longer for files only ~5% smaller. Readers don't care.
  options = tf.io.TFRecordOptions(compression_type="GZIP",
                                  compression_level=1)
  files, counts = [], []
  for shard, (lo, hi) in enumerate(_shard_bounds(records, shards)):
    path = shard_path(out_dir, shard, shards)
    with tf.io.TFRecordWriter(path, options) as writer:
      for i in range(lo, hi):
        id_list[0] = ids[i]
        label_list[0] = label_values[i]
        pixel_list[:] = pixel_rows[i]
        # deterministic=True sorts the feature map; otherwise its order
        # varies between processes and the same seed gives different bytes.
        writer.write(example.SerializeToString(deterministic=True))
    files.append(path)
    counts.append(hi - lo)
  return {
      "records": records,
      "shards": shards,
      "files": files,
      "records_per_file": counts,
      "bytes": sum(os.path.getsize(f) for f in files),
      "seed": seed,
      "shift": shift,
  }
