"""Reading TFRecord files inside the cascade's session.

TF's C++ reader frames the records, checks both CRCs of each and inflates
gzip; its batches go straight into the in-graph parse, so no record becomes
Python bytes and none is fed back into TF (docs/design.md, fact 13). The
cascade's input is a `placeholder_with_default` over these batches: a call
that feeds serialized records (the Python path, bad-record isolation, the
RunInference handler) prunes the reader away.

One graph serves several threads at once (the DirectRunner's
multi_threading mode), so the reader has `SLOTS` iterators, each initialised
for one range at a time; the batch op reads whichever iterator a call names
by its string handle.

A range's end (a byte range of a big uncompressed file) is kept in-graph:
each call is given the framed bytes left in the range (`budget`) and keeps
the batch's records that fit, so no record of the next range is scored.
"""

from __future__ import annotations

import dataclasses
from typing import List

import numpy as np
import tensorflow as tf

# Each record is framed by its length (8 bytes) and two CRCs (4 each).
FRAME_BYTES = 16
# Iterators per session: the threads that may read in-graph at once.
SLOTS = 4
# A whole file has no end but its own.
NO_END = np.iinfo(np.int64).max
# TF's read buffer per iterator (its default is 256 KiB).
_BUFFER_BYTES = 1 << 20


def _options() -> tf.data.Options:
  # tf.data's graph rewrites serialize the dataset, and TFRecordDatasetV2
  # serializes without its byte_offsets (TF 2.21: "3 inputs specified of 4").
  options = tf.data.Options()
  options.experimental_optimization.apply_default_optimizations = False
  options.autotune.enabled = False
  return options


_OPTIONS = _options()


@dataclasses.dataclass
class ReaderGraph:
  """The reader's ops in the cascade graph.

  Attributes:
    path, compression, byte_offset, skip, batch_size: fed when a slot is
      initialised: the file, "" or "GZIP", where to start (uncompressed), how
      many records to pass over first, records per batch.
    initializers: per slot, the op that (re)starts its iterator.
    slot_handles: per slot, the string-handle tensor naming its iterator.
    handle: fed per call: which slot's iterator to read.
    budget: fed per call: framed bytes left in the range.
    batch: the records of one call that the cascade scores.
    kept: how many (int64).
    consumed: their framed bytes.
    returned: records the iterator returned (more than `batch` holds once
      the range ends inside the batch).
    largest: the longest record of `batch`, in bytes.
  """
  path: tf.Tensor
  compression: tf.Tensor
  byte_offset: tf.Tensor
  skip: tf.Tensor
  batch_size: tf.Tensor
  initializers: List[tf.Operation]
  slot_handles: List[tf.Tensor]
  handle: tf.Tensor
  budget: tf.Tensor
  batch: tf.Tensor
  kept: tf.Tensor
  consumed: tf.Tensor
  returned: tf.Tensor
  largest: tf.Tensor

  def feeds(self, path: str, compression: str, byte_offset: int, skip: int,
            batch_size: int) -> dict:
    """The feed of a slot's initializer for one range."""
    return {self.path: path, self.compression: "GZIP" if compression == "gzip" else "",
            self.byte_offset: byte_offset, self.skip: skip, self.batch_size: batch_size}


def build_reader() -> ReaderGraph:
  """Adds the reader to the default graph (under the caller's name scope)."""
  path = tf.compat.v1.placeholder(tf.string, [], name="path")
  compression = tf.compat.v1.placeholder(tf.string, [], name="compression")
  byte_offset = tf.compat.v1.placeholder(tf.int64, [], name="byte_offset")
  skip = tf.compat.v1.placeholder(tf.int64, [], name="skip")
  batch_size = tf.compat.v1.placeholder(tf.int64, [], name="batch_size")
  # The public TFRecordDataset has no start offset; the op it wraps does.
  variant = tf.raw_ops.TFRecordDatasetV2(
      filenames=tf.reshape(path, [1]), compression_type=compression,
      buffer_size=tf.constant(_BUFFER_BYTES, tf.int64),
      byte_offsets=tf.reshape(byte_offset, [1]))
  records = tf.data.experimental.from_variant(variant, tf.TensorSpec([], tf.string))
  # prefetch: the next batch is read and inflated while this one is scored.
  dataset = records.skip(skip).batch(batch_size).prefetch(1).with_options(_OPTIONS)
  iterators = [tf.compat.v1.data.make_initializable_iterator(dataset)
               for _ in range(SLOTS)]
  handle = tf.compat.v1.placeholder(tf.string, [], name="handle")
  reading = tf.compat.v1.data.Iterator.from_string_handle(
      handle, tf.compat.v1.data.get_output_types(dataset),
      tf.compat.v1.data.get_output_shapes(dataset))
  returned_records = reading.get_next()
  budget = tf.compat.v1.placeholder(tf.int64, [], name="budget")
  framed = tf.strings.length(returned_records, unit="BYTE") + FRAME_BYTES
  fits = tf.math.cumsum(tf.cast(framed, tf.int64)) <= budget
  kept = tf.reduce_sum(tf.cast(fits, tf.int32))  # a prefix: the sums only grow
  batch = returned_records[:kept]
  lengths = tf.cast(framed[:kept], tf.int64)
  return ReaderGraph(
      path, compression, byte_offset, skip, batch_size,
      [it.initializer for it in iterators], [it.string_handle() for it in iterators],
      handle, budget, batch, tf.cast(kept, tf.int64), tf.reduce_sum(lengths),
      tf.size(returned_records, out_type=tf.int64),
      tf.reduce_max(tf.concat([lengths - FRAME_BYTES, [0]], 0)))
