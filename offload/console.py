"""What a person reads of a ``dagster job execute`` run on the console: the steps' own log lines (INFO and
above, without the timestamp, logger and run-id columns) and any error with its traceback, but not
Dagster's DEBUG event lines nor its Python warnings about superseded or beta APIs. Nothing is lost: every
event stays in the run's event log (``offload dev`` shows it), and the demo keeps the raw output in a file.
"""

from __future__ import annotations

import re

# "2026-12-04 16:37:14 +0000 - dagster - INFO - video_pipeline - <run id> - [pid - ]step - message"
_DAGSTER_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} - dagster - (?P<level>[A-Z]+) - \S+ - "
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12} - (?:\d+ - )?(?P<rest>.*)$"
)
# "/path/to/module.py:911: SupersessionWarning: ..." (then the indented source line warnings print)
_WARNING_LINE = re.compile(r"^\S+\.py:\d+: \w*Warning: ")
_SHOWN_LEVELS = {"INFO", "WARNING", "ERROR", "CRITICAL"}


class ConsoleFilter:
    """Feed it the run's output line by line; it answers the line to show, or None. A line that starts no
    record (a traceback's, a warning's source line) follows the fate of the record it continues."""

    def __init__(self) -> None:
        self._showing = True

    def line(self, raw: str) -> str | None:
        text = raw.rstrip("\n")
        record = _DAGSTER_LINE.match(text)
        if record:
            self._showing = record["level"] in _SHOWN_LEVELS
            return f"  {record['rest']}" if self._showing else None
        if _WARNING_LINE.match(text):
            self._showing = False
            return None
        if text[:1].isspace() or not text:
            return text if self._showing else None
        self._showing = True  # anything else is not Dagster's: show it (and what continues it)
        return text
