"""A function called every N seconds in a daemon thread while a block runs
(the launcher's heartbeat and its progress line)."""

from __future__ import annotations

import threading
from typing import Callable


class Periodic:
  """`with Periodic(10, fn, "name"):` calls fn() every 10 s until the block
  ends (not at the start, not after the end)."""

  def __init__(self, every_s: float, fn: Callable[[], None], name: str):
    self._every_s = every_s
    self._fn = fn
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._loop, daemon=True, name=name)

  def _loop(self):
    while not self._stop.wait(self._every_s):
      self._fn()

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
