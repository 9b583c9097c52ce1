"""Spark master URLs, checked before Spark's JVM starts.

Spark itself takes ~20 s (a JVM start) to say a master URL is malformed, in
a Java stack trace; and over a minute of registration retries (3 x 20 s,
fixed in Spark's StandaloneAppClient) to give up on a standalone master that
is down. So the launcher refuses a URL Spark cannot parse (`problem`: the
user must fix it) and tries a TCP connection to a standalone master first
(`unreachable`: a cluster that is down or restarting; a retry may cure it).

Standard library only: the CLI checks `--master` before it loads anything.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import urllib.parse
from typing import List, Optional, Tuple

ACCEPTED = ("local, local[N], local[*], local[N,F], spark://HOST:PORT[,HOST:PORT...], "
            "yarn or k8s://[https://]HOST:PORT")
CONNECT_TIMEOUT_S = 5.0

# SparkContext's local masters (local-cluster[...] is Spark's own test mode).
_LOCAL = re.compile(r"local(\[(\d+|\*)(\s*,\s*\d+)?\])?"
                    r"|local-cluster\[\s*\d+\s*,\s*\d+\s*,\s*\d+\s*\]")


def problem(master: Optional[str]) -> Optional[str]:
  """Why Spark cannot use `master`, in one line naming it, or None. None
  (no --master) is the default, local[*]."""
  if master is None:
    return None
  if master == "yarn":
    return _yarn_problem()
  why = (_local_problem(master) if master.startswith("local") else
         _standalone_problem(master) if master.startswith("spark://") else
         None if re.fullmatch(r"k8s://\S+", master) else "not a Spark master URL")
  return f"--master {master!r}: {why}; expected {ACCEPTED}" if why else None


def _local_problem(master: str) -> Optional[str]:
  if not _LOCAL.fullmatch(master):
    return "not a Spark master URL"
  if re.fullmatch(r"local\[0+(\s*,.*)?\]", master):
    return "local mode needs at least one thread"
  return None


def _standalone_problem(master: str) -> Optional[str]:
  try:
    standalone_addresses(master)
  except ValueError as e:
    return str(e)
  return None


def _yarn_problem() -> Optional[str]:
  if os.environ.get("HADOOP_CONF_DIR") or os.environ.get("YARN_CONF_DIR"):
    return None
  return ("--master yarn: set HADOOP_CONF_DIR or YARN_CONF_DIR to the directory of "
          "the cluster's Hadoop configuration (Spark finds YARN through it)")


def standalone_addresses(master: str) -> List[Tuple[str, int]]:
  """(host, port) of each master of a spark://H1:P1[,H2:P2...] URL (more
  than one: standby masters); [] for other kinds of master.

  Raises:
    ValueError: an address is not HOST:PORT, as Spark would refuse it.
  """
  if not master.startswith("spark://"):
    return []
  addresses = []
  for part in master[len("spark://"):].split(","):
    url = urllib.parse.urlsplit("spark://" + part)
    try:
      port = url.port
    except ValueError:
      port = None
    if not url.hostname or port is None or url.path or url.query or url.fragment or (
        url.username is not None):
      raise ValueError(f"{part!r} is not HOST:PORT")
    addresses.append((url.hostname, port))
  return addresses


def unreachable(master: str, timeout_s: float = CONNECT_TIMEOUT_S) -> Optional[str]:
  """For a standalone master: None when one of its addresses accepts a TCP
  connection within `timeout_s`, else each address with its OS error, in
  one line. None for masters of other kinds (not checked)."""
  errors = []
  for host, port in standalone_addresses(master):
    try:
      with socket.create_connection((host, port), timeout=timeout_s):
        return None
    except OSError as e:
      errors.append(f"{host}:{port}: {_os_error(e, timeout_s)}")
  return "; ".join(errors) or None


def _os_error(error: OSError, timeout_s: float) -> str:
  if isinstance(error, socket.timeout):
    return f"no answer within {timeout_s:g} s"
  code = errno.errorcode.get(error.errno or 0)  # None for a name lookup's error
  text = error.strerror or str(error) or type(error).__name__
  return f"{text} ({code})" if code else text
