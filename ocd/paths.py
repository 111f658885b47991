"""Resolving user-supplied file names inside one folder, refusing anything that escapes it."""
from __future__ import annotations

import os

from .errors import OCDInputError


def resolve_inside(root: str, name: str, input_name: str = "file") -> str:
    """Return the real path of ``name`` inside ``root``.

    Refuses absolute names, ``..`` components and symlinks whose target lies outside
    ``root``: a shared workflow must not read arbitrary files of the machine it runs on.
    """
    if not name or not name.strip():
        raise OCDInputError(input_name, "no file name given")
    if os.path.isabs(name) or (os.path.splitdrive(name)[0] != ""):
        raise OCDInputError(input_name, f"'{name}' is an absolute path; give a name inside {root}")
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise OCDInputError(input_name, f"'{name}' leaves the folder {root} ('..' is not allowed)")
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, name))
    if os.path.commonpath([real_root, real]) != real_root:
        raise OCDInputError(
            input_name, f"'{name}' resolves to {real}, outside the folder {root} (a symlink out?)"
        )
    if not os.path.isfile(real):
        raise OCDInputError(input_name, f"no file '{name}' in {root}")
    return real
