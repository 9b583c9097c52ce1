"""Byte formats, engine-agnostic: TFRecord framing (read and write), the
tf.train.Example codec, and the dead-letter schema."""
