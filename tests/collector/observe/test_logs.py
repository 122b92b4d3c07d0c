"""What strangers put in a request cannot write a log line of its own (collector/observe/logs.py)."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Callable

import pytest

from collector.observe.logs import TEXT_FORMAT, TRACEBACK_INDENT, DevFormatter, JsonFormatter, TextFormatter

FORGED = "2026-12-04 10:00:00,000 INFO MainProcess[1] worker.jobs: forged"
FORMATTERS: dict[str, Callable[[], logging.Formatter]] = {
    "text": lambda: TextFormatter(TEXT_FORMAT),
    "dev": DevFormatter,
    "json": JsonFormatter,
}


def logged_by(formatter: logging.Formatter, act: Callable[[], object]) -> list[str]:
    """The lines the root logger writes through ``formatter`` while ``act`` runs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        act()
    finally:
        root.removeHandler(handler)
    return stream.getvalue().splitlines()


@pytest.mark.parametrize("name", FORMATTERS)
def test_line_breaks_in_a_request_path_are_escaped_in_the_refusals_line(client, name):
    """``%0a``, ``%0d`` and U+2028 in a path are written as escapes: the refusal stays one line, nothing forged starts one."""
    path = "/sites/x%0a" + FORGED.replace(" ", "%20") + "%0d%e2%80%a8%1b[31m/settings.json"
    lines = logged_by(FORMATTERS[name](), lambda: client.get(path))
    refusals = [line for line in lines if "refused with 400" in line]
    assert len(refusals) == 1 and len(lines) == 1, lines
    text = json.loads(refusals[0])["message"] if name == "json" else refusals[0]
    assert "x\\n2026-12-04" in text and "\\r\\u2028" in text and "\n" not in text and "\x1b" not in text


def test_a_traceback_follows_its_record_indented_so_no_line_of_it_passes_for_a_record():
    try:
        raise ValueError("bad input\n" + FORGED)
    except ValueError:
        record = logging.LogRecord("collector", logging.ERROR, __file__, 1, "Exception on %s", ("/a\nb",), sys.exc_info())
    first, *rest = TextFormatter(TEXT_FORMAT).format(record).splitlines()
    assert first.endswith("Exception on /a\\nb")
    assert rest and all(line.startswith(TRACEBACK_INDENT) for line in rest), rest
    assert any(line.strip() == FORGED for line in rest)
