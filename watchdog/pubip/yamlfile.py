"""Reading a YAML settings file: the text and its parse, with an error that names the file. Shared by the
watchdog's configuration, the listener's settings and the operator's cli.yml; each checks its own keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import PubipError

ABSENT = object()  # load's `missing` when a file that is not there is an error


def load(path: str, error: type[PubipError] = PubipError, what: str = "", missing: Any = ABSENT,
         round_trip: bool = False) -> Any:
    """The document in PATH (None when empty); MISSING when there is no such file, if given. ROUND_TRIP keeps
    line numbers for messages. ERROR names the file (WHAT, e.g. "the watchdog configuration ", before it)."""
    from ruamel.yaml import YAML, YAMLError

    try:
        text = Path(path).read_text()
    except FileNotFoundError as exc:
        if missing is not ABSENT:
            return missing
        raise error(f"cannot read {what}{path}: {exc.strerror}") from None
    except OSError as exc:
        raise error(f"cannot read {what}{path}: {exc.strerror}") from None
    try:
        return YAML(typ="rt" if round_trip else "safe").load(text)
    except YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from None
