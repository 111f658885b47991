"""Resolving user-supplied file names inside one folder, refusing anything that escapes it,
and names no file should have (control characters) before any file function sees them."""
from __future__ import annotations

import os
import unicodedata

from .errors import OCDInputError


def check_file_name(name: str, input_name: str = "file") -> str:
    """Refuse a file name (or save prefix) that holds a control character (NUL, newline, escape,
    DEL: Unicode's Cc, ``\\x00``-``\\x1f`` and ``\\x7f``-``\\x9f``) or that this system cannot
    encode as a file name (a lone surrogate), naming the input, before any file function sees
    it: they fail on NUL ("embedded null byte") and on surrogates, and would write the other
    control characters into file names."""
    if not isinstance(name, str):
        return name  # the type is the caller's check (a combo's options, a text input)
    for i, ch in enumerate(name):
        if unicodedata.category(ch) == "Cc":
            raise OCDInputError(input_name, f"{ascii(name)[:80]} holds a control character ({ascii(ch)} at "
                                f"position {i}); file names may not: choose the file again or retype the name")
    try:
        os.fsencode(name)  # a name read from a folder round-trips (surrogateescape); other surrogates do not
    except (UnicodeError, ValueError) as e:
        raise OCDInputError(input_name, f"{ascii(name)[:80]} is not a file name this system can write ({e}): "
                            "choose the file again or retype the name") from None
    return name


def resolve_inside(root: str, name: str, input_name: str = "file") -> str:
    """Return the real path of ``name`` inside ``root``.

    Refuses absolute names, ``..`` components and symlinks whose target lies outside
    ``root``: a shared workflow must not read arbitrary files of the machine it runs on.
    """
    if not name or not name.strip():
        raise OCDInputError(input_name, "no file name given")
    check_file_name(name, input_name)
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


def check_prefix_inside(root: str, prefix: str, input_name: str = "filename_prefix") -> str:
    """Refuse a save prefix (``sub/folder/name``) that is empty or would leave ``root``; creates
    nothing (ComfyUI's own path helper makes the folder, so it cannot serve as a check)."""
    if not isinstance(prefix, str) or not prefix.strip():
        raise OCDInputError(input_name, "is empty: give a file name prefix such as 'OCD/video'")
    check_file_name(prefix, input_name)
    if os.path.isabs(prefix) or os.path.splitdrive(prefix)[0] != "":
        raise OCDInputError(input_name, f"'{prefix}' is an absolute path; give a prefix inside {root}")
    real_root = os.path.abspath(root)
    folder = os.path.abspath(os.path.join(real_root, os.path.dirname(os.path.normpath(prefix))))
    if os.path.commonpath([real_root, folder]) != real_root:
        raise OCDInputError(input_name, f"'{prefix}' leaves the folder {root}")
    return prefix
