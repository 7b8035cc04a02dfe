"""Secret files (node secrets, AWX and webhook tokens), read only when nobody else can read them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import PubipError


class SecretError(PubipError):
    """A secret file is missing, empty, or readable by others; the message names it."""


def read_secret(path: str, what: str) -> str:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise SecretError(f"{what} file {path}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError(f"{what} file {path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); "
                          f"chmod 600 it")
    value = Path(path).read_text().strip()
    if not value:
        raise SecretError(f"{what} file {path} is empty")
    return value
