"""The one error `tfcascade tune` refuses with (exit code REFUSED).

Its own module so that every part of tune (predictions, sampling, the
result, the command) can raise it without importing the others.
"""


class TuneError(ValueError):
  """tune cannot run as asked; the message says why and what to do."""
