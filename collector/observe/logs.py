"""Logging of the ``collector`` commands: one handler on the root logger, text or JSON lines on stderr.

- ``text`` (the default): ``2026-12-02 10:00:00,123 INFO deliver-depict[4242] worker.jobs: ...``.
- ``json``: one object per line, ``{"time", "level", "logger", "message", "process", "process_name"}``
  (and ``"exception"`` with the traceback when there is one).
- The ``dev`` profile (``collector dev``) is for a person at a terminal: the time and
  the message of one line per delivery job and per refused request, and every warning
  and error; nothing else.

Everywhere: httpx's and httpcore's line per request and RQ's lines per job are left
out (the worker logs one line per job itself), warnings are kept, colour codes are
stripped, and a ``user:password@`` in a URL is masked. The spawned delivery
processes read the same settings from the environment (:func:`setup_from_environment`).

Much of what is logged comes from strangers: a request's path (``%0a`` decodes to
a line break), a header, a key. A message could then write a line that looks like
a record of its own. So every control character of a message is escaped
(a line break as the two characters backslash and ``n``, others as a
backslash, ``x`` and two hex digits), as are the Unicode line and paragraph
separators, and a traceback follows its record indented (its other control
characters escaped too): no line it writes starts where a record starts. JSON lines are JSON-escaped
anyway; their messages are escaped the same way, for whatever prints them later.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from typing import Any

FORMATS = ("text", "json")
FORMAT_ENV = "COLLECTOR_LOG_FORMAT"
PROFILE_ENV = "_COLLECTOR_LOG_PROFILE"  # set by the parent for the processes it spawns

PROD, DEV = "prod", "dev"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(processName)s[%(process)d] %(name)s: %(message)s"
DEV_FORMAT = "%(asctime)s %(message)s"
DEV_WARNING_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DEV_DATE_FORMAT = "%H:%M:%S"

# Loggers whose INFO lines `collector dev` shows: one line per delivery job, one per refused request.
DEV_INFO_LOGGERS = ("worker.jobs", "collector.access")
# Loggers that say one line per HTTP request at INFO.
CHATTY_LOGGERS = ("httpx", "httpcore")
# RQ's INFO lines for each job (dequeued, done, result kept, retry scheduled): the worker says one line per job.
RQ_PER_JOB_MESSAGES = frozenset(
    {
        "Worker %s: %s: %s (%s)",
        "Worker %s: %s: %s",
        "Successfully completed %s job in %ss on worker %s",
        "Successfully completed job %s in %ss on worker %s",
        "Worker %s: job %s result discarded immediately",
        "Worker %s: job %s result is kept for %s seconds",
        "Worker %s: job %s result will never expire, clean up result key manually",
        "Job %s: scheduled for retry at %s, %s remaining",  # the job's own line says when it is retried
        "Job %s: enqueued for retry, %s remaining",
    }
)

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_URL_CREDENTIALS = re.compile(r"(?<=://)[^\s/@]*:[^\s/@]*@")
_CONTROLS = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPED = str.maketrans({code: _NAMED_ESCAPES.get(chr(code), f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}") for code in _CONTROLS})
_ESCAPED_BUT_LINE_BREAKS = str.maketrans({code: escape for code, escape in _ESCAPED.items() if code != ord("\n")})
TRACEBACK_INDENT = "    "


def clean(text: str) -> str:
    """``text`` without colour codes and with the password of any URL in it masked."""
    return _URL_CREDENTIALS.sub("***@", _ANSI.sub("", text))


def escaped(text: str) -> str:
    """``text`` on one line: every control character (line breaks included) written as an escape."""
    return text.translate(_ESCAPED)


def indented(text: str) -> str:
    """A traceback as it follows its record: each line indented, control characters but line breaks escaped."""
    return "\n".join(TRACEBACK_INDENT + line for line in text.translate(_ESCAPED_BUT_LINE_BREAKS).split("\n"))


def redacted_url(url: str) -> str:
    """A URL as it may be shown: ``redis://***@host:6379/0`` for ``redis://user:secret@host:6379/0``."""
    return _URL_CREDENTIALS.sub("***@", url)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (so a test's captured stderr never goes stale)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class TextFormatter(logging.Formatter):
    """One line per record, its message escaped; a traceback indented below it."""

    def format(self, record: logging.LogRecord) -> str:
        return clean(super().format(record))

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = escaped(clean(record.message))
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:  # noqa: N802
        return indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return indented(stack_info)


class DevFormatter(TextFormatter):
    """Time and message for the INFO lines a person wants to see; level and logger for warnings and errors."""

    def __init__(self) -> None:
        super().__init__(DEV_FORMAT, DEV_DATE_FORMAT)
        self._warning = TextFormatter(DEV_WARNING_FORMAT, DEV_DATE_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING:
            return self._warning.format(record)
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per record. Only these fields: a record's ``extra`` (RQ puts job arguments there) is left out."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": escaped(clean(record.getMessage())),
            "process": record.process,
            "process_name": record.processName,
        }
        if record.exc_info:
            entry["exception"] = clean(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = clean(record.exc_text)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _Chatter(logging.Filter):
    """Drops per-request and per-job INFO lines; in the dev profile, every INFO line but the wanted ones."""

    def __init__(self, profile: str):
        super().__init__()
        self.profile = profile

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        if self.profile == DEV:
            return record.name in DEV_INFO_LOGGERS
        if record.name.split(".")[0] in CHATTY_LOGGERS:
            return False
        return not (record.name.startswith("rq.") and record.msg in RQ_PER_JOB_MESSAGES)


def _formatter(log_format: str, profile: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    if profile == DEV:
        return DevFormatter()
    return TextFormatter(TEXT_FORMAT)


def default_format() -> str:
    """``$COLLECTOR_LOG_FORMAT`` when it names a format, else ``text``."""
    value = os.environ.get(FORMAT_ENV, "").strip().lower()
    return value if value in FORMATS else "text"


def setup(log_format: str = "text", profile: str = PROD, export: bool = False) -> None:
    """Send every log record of this process to stderr in ``log_format``; ``export`` passes the choice
    on to the processes this one spawns (through the environment)."""
    if log_format not in FORMATS:
        raise ValueError(f"unknown log format {log_format!r}; use one of {', '.join(FORMATS)}")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_collector", False):
            root.removeHandler(handler)
    handler = _StderrHandler()
    handler._collector = True  # type: ignore[attr-defined]
    handler.setFormatter(_formatter(log_format, profile))
    handler.addFilter(_Chatter(profile))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    if export:
        os.environ[FORMAT_ENV] = log_format
        os.environ[PROFILE_ENV] = profile


def setup_from_environment() -> None:
    """In a spawned process: the format and profile its parent chose."""
    profile = os.environ.get(PROFILE_ENV, PROD)
    setup(default_format(), profile if profile in (PROD, DEV) else PROD)


def gunicorn_logger_class() -> type:
    """Gunicorn's logger, its own lines sent through this module's handler (same format) instead of its own."""
    from gunicorn import glogging

    class GunicornLogger(glogging.Logger):
        def setup(self, cfg: Any) -> None:
            super().setup(cfg)
            for handler in list(self.error_log.handlers):
                if getattr(handler, "_gunicorn", False):
                    self.error_log.removeHandler(handler)
            self.error_log.propagate = True

    return GunicornLogger
