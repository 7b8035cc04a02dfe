"""Logging for the watchdog and the listener: to a file, to a terminal, or to journald under systemd
(JOURNAL_STREAM set): there each line is the message alone behind its syslog priority prefix - journald adds
the time and the unit, and `journalctl -p warning` shows warnings and worse. Shared by both sides."""

from __future__ import annotations

import logging
import os
import sys

PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{PRIORITY.get(record.levelno, 6)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines() or [""])


def handler(program: str, log_file: str | None) -> logging.Handler:
    if log_file:
        out: logging.Handler = logging.FileHandler(log_file)
    elif os.environ.get("JOURNAL_STREAM"):
        out = logging.StreamHandler(sys.stderr)
        out.setFormatter(JournalFormatter("%(message)s"))
        return out
    else:
        out = logging.StreamHandler()
    out.setFormatter(logging.Formatter(f"%(asctime)s {program}[%(process)d]: %(levelname)s %(message)s"))
    return out
