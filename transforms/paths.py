"""Paths as users name them, on any Beam FileSystem.

Beam's `FileSystems.match` reads `[...]`, `*` and `?` in a path as a glob,
and so do `FileSystems.delete` on local disk and on GCS (they delete what
`match` finds): a folder named `out [v2]` matches nothing there, or a
neighbour (`out v`, `out 2`). `exists`, `open`, `create`, `rename` and
`metadata` take a path literally. So every call that names one literal path,
or a glob under a literal folder, goes through this module:

  file_metadata(path)            one file, literally (no listing)
  match_under(directory, glob)   files under a literal folder that match a glob
  delete_literal(path)           one file or folder, literally
  match_input(pattern)           input.pattern, read as docs/reference.md says
  literal_pattern(path)          a match pattern that matches only `path`
"""

from __future__ import annotations

import os
import re
import shutil
from typing import List, Optional

from apache_beam.io.filesystem import BeamIOError, FileMetadata, FileSystem
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.localfilesystem import LocalFileSystem

_GLOB_CHARS = "[*?"  # what Beam's match reads as a glob (a lone `]` is literal)

# `[` as a class that holds every character but `[`: Beam's pattern syntax has
# no escape, and `[[]` works but makes Python's re warn ("Possible nested set").
_OPEN_BRACKET = "[!\x00-Z\\-\U0010ffff]"
_ESCAPES = {"[": _OPEN_BRACKET, "*": "[*]", "?": "[?]"}

# File systems whose `delete` deletes what `match` finds (Beam 2.77: local
# disk and GCS); S3, Azure and HDFS delete the path they are given.
_DELETE_MATCHES = ("gs",)


def has_glob_chars(path: str) -> bool:
  return any(c in path for c in _GLOB_CHARS)


def literal_pattern(path: str) -> str:
  """`path` as a FileSystems.match pattern that matches only itself.

  Only for a path that must go through `match` (GCS's delete does): listing
  starts at the first escaped character, so on a file system with folders
  it walks the folder above it -- `match_under` lists the folder itself.
  """
  return "".join(_ESCAPES.get(c, c) for c in path)


def file_metadata(path: str) -> Optional[FileMetadata]:
  """One file's metadata (size, modified), or None when it does not exist;
  the path is literal, and nothing is listed."""
  if not FileSystems.exists(path):
    return None
  try:
    return FileSystems.get_filesystem(path).metadata(path)
  except BeamIOError:  # gone since `exists`
    return None


def match_under(directory: str, pattern: str) -> List[FileMetadata]:
  """Files under the folder `directory` (a literal path) whose path relative
  to it matches the glob `pattern` (Beam's syntax: `*` within one folder,
  `**` across folders); [] when none does.

  A folder without glob characters is matched by Beam as it always is. One
  with them is listed here, from the folder itself: escaping it for `match`
  would make Beam list from the folder ABOVE it (where the first escaped
  character is), which on local disk walks that whole tree.
  """
  if pattern.endswith("/"):
    pattern += "*"  # as Beam's match does
  full = FileSystems.join(directory, pattern)
  if not has_glob_chars(directory):
    return FileSystems.match([full])[0].metadata_list
  head = re.match(r"[^[*?]*", pattern).group(0)
  if head == pattern:  # no glob at all: one literal path
    found = file_metadata(full)
    return [found] if found else []
  fs = FileSystems.get_filesystem(directory)
  if fs.has_dirs():  # list the deepest literal folder, as Beam's match does
    location = FileSystems.join(directory, head.rsplit("/", 1)[0]) if "/" in head else directory
  else:  # object stores list by prefix
    location = FileSystems.join(directory, head)
  base = FileSystems.join(directory, "")
  wanted = re.compile(FileSystem.translate_pattern(pattern)).match
  try:
    listed = list(fs._list(location))  # pylint: disable=protected-access; Beam's listing primitive
  except BeamIOError:
    raise
  except Exception as e:  # pylint: disable=broad-except; wrapped as Beam's match wraps it
    raise BeamIOError("Match operation failed", {full: e}) from e
  return [m for m in listed
          if m.path.startswith(base) and wanted(m.path[len(base):])]


def delete_literal(path: str) -> None:
  """Deletes the file or folder (with its contents) `path` names -- never
  anything a glob reading of it would match.

  Raises:
    BeamIOError: as FileSystems.delete does.
  """
  if not has_glob_chars(path):
    FileSystems.delete([path])
    return
  fs = FileSystems.get_filesystem(path)
  if isinstance(fs, LocalFileSystem):  # what its delete does to what match finds
    try:
      if os.path.isdir(path):
        shutil.rmtree(path)
      else:
        os.remove(path)
    except OSError as e:
      raise BeamIOError("Delete operation failed", {path: e}) from e
  elif fs.scheme() in _DELETE_MATCHES:
    FileSystems.delete([literal_pattern(path)])
  else:
    FileSystems.delete([path])


def match_input(pattern: str) -> List[FileMetadata]:
  """The files `input.pattern` names. A pattern is Beam's glob, except that
  a path that exists as written is read as written:

  1. no `[`, `*` or `?`: Beam's match, as always;
  2. the whole pattern names an existing file: that file;
  3. else the longest leading part of whole folders that has glob characters
     and exists as written (`in [v2]` of `in [v2]/part-*.gz`) is that folder,
     and the rest is a glob under it;
  4. else all of it is a glob.

  A literal folder wins over what its name would match as a glob.
  """
  if not has_glob_chars(pattern):
    return FileSystems.match([pattern])[0].metadata_list
  found = file_metadata(pattern)
  if found is not None:
    return [found]
  cut = pattern.rfind("/")
  while cut > 0:
    lead = pattern[:cut]
    if has_glob_chars(lead) and _is_folder(lead):
      return match_under(lead, pattern[cut + 1:])
    cut = pattern.rfind("/", 0, cut)
  return FileSystems.match([pattern])[0].metadata_list


def _is_folder(path: str) -> bool:
  """A folder on local disk or HDFS; on an object store, a prefix with
  objects under it."""
  fs = FileSystems.get_filesystem(path)
  if fs.has_dirs():
    return FileSystems.exists(path)
  listed = fs._list(FileSystems.join(path, ""))  # pylint: disable=protected-access
  return next(iter(listed), None) is not None
