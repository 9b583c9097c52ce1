"""The 8x8 digits data set, split once and augmented to any size.

Uses the copy of the UCI digits that ships inside scikit-learn, so nothing is
downloaded. Models are trained on the train split only; the scoring data set
is made from the held-out split only, so the accuracies the demo reports are
honest.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
# Imported at module level on purpose: `tfcascade demo` reports a missing
# scikit-learn by catching the ImportError of importing the demo package.
from sklearn.datasets import load_digits

NUM_PIXELS = 64
NUM_CLASSES = 10
HELD_OUT_FRACTION = 0.3
# Fixed, and independent of any caller's seed: every seed must see the same
# split, or a "held-out" image could have been trained on.
_SPLIT_SEED = 20_170_907

# Augmentation strength, tuned so the cascade is worth having: shifts hurt a
# linear model far more than an MLP. Measured with the demo models: A ~87%,
# B ~96%, cascade ~95% with B on ~35% of rows. Shifting every image instead
# drops A to ~56% and sends B ~90% of rows.
MAX_SHIFT = 1
SHIFT_PROB = 0.15
NOISE_STD = 0.1
INTENSITY_JITTER = 0.2


class Split(NamedTuple):
  """Train (70%) and held-out (30%) parts; pixels float32 in [0, 1], labels int64."""
  train_pixels: np.ndarray
  train_labels: np.ndarray
  held_out_pixels: np.ndarray
  held_out_labels: np.ndarray


@functools.lru_cache(maxsize=1)
def load_split() -> Split:
  """Loads the 1797 digits and splits them, stratified, train / held-out.

  Returns:
    A Split whose arrays are read-only (they are cached and shared).
  """
  bunch = load_digits()
  pixels = (bunch.data / 16.0).astype(np.float32)
  labels = bunch.target.astype(np.int64)
  rng = np.random.default_rng(_SPLIT_SEED)
  held = np.zeros(len(labels), dtype=bool)
  # Stratified so every class is represented in both halves in proportion.
  for cls in range(NUM_CLASSES):
    idx = rng.permutation(np.flatnonzero(labels == cls))
    held[idx[:int(round(len(idx) * HELD_OUT_FRACTION))]] = True
  arrays = [pixels[~held], labels[~held], pixels[held], labels[held]]
  for a in arrays:
    a.setflags(write=False)
  return Split(*arrays)


def augment(pixels: np.ndarray,
            labels: np.ndarray,
            n: int,
            seed: int,
            *,
            max_shift: int = MAX_SHIFT,
            shift_prob: float = SHIFT_PROB,
            noise_std: float = NOISE_STD,
            intensity_jitter: float = INTENSITY_JITTER
           ) -> tuple[np.ndarray, np.ndarray]:
  """Draws n augmented images (with replacement) from a base set.

  Each output is a base image, with probability shift_prob shifted by up to
  max_shift pixels on each axis (zero fill), scaled by a random factor in
  [1 - jitter, 1 + jitter], plus gaussian noise, clipped to [0, 1].

  Args:
    pixels: float array [m, 64], values in [0, 1].
    labels: int array [m].
    n: number of images to draw.
    seed: seeds the draw; the same arguments always give the same output.
    max_shift: largest shift, in pixels, along each axis.
    shift_prob: share of images that get a (possibly zero) random shift.
    noise_std: standard deviation of the additive gaussian noise.
    intensity_jitter: half-width of the multiplicative intensity factor.

  Returns:
    (pixels float32 [n, 64], labels int64 [n]).
  """
  rng = np.random.default_rng(seed)
  src = rng.integers(0, len(labels), size=n)
  side = int(round(np.sqrt(NUM_PIXELS)))
  pad = max_shift
  padded = np.pad(
      np.asarray(pixels, np.float32).reshape(-1, side, side),
      ((0, 0), (pad, pad), (pad, pad)))
  moved = rng.random(n) < shift_prob
  dy = rng.integers(-max_shift, max_shift + 1, size=n) * moved
  dx = rng.integers(-max_shift, max_shift + 1, size=n) * moved
  # out[r, c] = in[r - dy, c - dx]; one fancy-index gather does all n shifts.
  grid = np.arange(side)
  rows = grid[None, :] + pad - dy[:, None]
  cols = grid[None, :] + pad - dx[:, None]
  out = padded[src[:, None, None], rows[:, :, None], cols[:, None, :]]
  out = out.reshape(n, NUM_PIXELS)
  scale = rng.uniform(1.0 - intensity_jitter, 1.0 + intensity_jitter,
                      size=(n, 1)).astype(np.float32)
  noise = rng.standard_normal((n, NUM_PIXELS), dtype=np.float32)
  out = out * scale + np.float32(noise_std) * noise
  np.clip(out, 0.0, 1.0, out=out)
  return (out.astype(np.float32, copy=False),
          np.asarray(labels, np.int64)[src])
