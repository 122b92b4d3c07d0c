"""Reading ``/collect``'s body: its size, strict JSON, and text that can be sent on.

A body is refused, never truncated or half-read:

- larger than ``MAX_BODY_BYTES``, with or without ``Content-Length``
  (a chunked body is read up to one byte past the limit, then refused): 413;
- not UTF-8, not JSON, nested deeper than Python's parser goes, with
  ``NaN``/``Infinity``, a number that is not finite as a double (``1e400``)
  or an integer literal of more than :data:`MAX_INTEGER_DIGITS` digits: 400.
  The vendors' JSON has no such values, and none of them is a real event.

A JSON string may still hold a lone UTF-16 surrogate (``"\\ud800"``): a
browser makes one when it cuts a string inside an emoji. Such a string
cannot be encoded as UTF-8, so no vendor could be sent it;
:func:`lone_surrogate_errors` names the fields that hold one, and the event
is refused with 422 like any other invalid event.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

from flask import Request
from werkzeug.exceptions import RequestEntityTooLarge

from collector.errors import BadRequest

MAX_INTEGER_DIGITS = 100
LONE_SURROGATE = "must be valid Unicode text: it holds a lone UTF-16 surrogate (a string cut inside an emoji?)"
LONE_SURROGATE_IN_KEY = "this key " + LONE_SURROGATE
_READ_CHUNK = 16 * 1024
# A surrogate can only enter through a \\uD800-\\uDFFF escape: raw surrogate bytes are invalid UTF-8.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# orjson reads an integer past 64 bits as a float, and nests without limit: a body with 19 digits
# in a row, or with so many brackets that it could nest deeper than Python's parser goes, takes the strict path.
_DIGITS_AS_ZEROS = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))  # every digit "0", the rest " "
_NINETEEN_DIGITS = b"0" * 19
_FAST_PATH_MAX_BRACKETS = 500


def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or 413 when it is longer than ``limit`` bytes, however it was framed."""
    length = request.content_length
    if length is not None:
        if length > limit:
            raise RequestEntityTooLarge()
        return request.get_data(cache=False)
    if "wsgi.input_terminated" not in request.environ:
        return b""  # no length and no server-side framing: nothing can be read safely
    return _read_at_most(request.environ["wsgi.input"], limit)


def _read_at_most(stream: Any, limit: int) -> bytes:
    """Read a stream the server has framed (chunked) to its end, refusing it past ``limit`` bytes.

    Werkzeug's own limited stream stops at the limit and returns what it
    read, so a long chunked body would be cut and parsed; this reads one
    byte further to know.
    """
    body = bytearray()
    while len(body) <= limit:
        chunk = stream.read(min(_READ_CHUNK, limit + 1 - len(body)))
        if not chunk:
            return bytes(body)
        body += chunk
    raise RequestEntityTooLarge()


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:24]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    if len(text) > MAX_INTEGER_DIGITS:
        raise ValueError(f"a number has {len(text)} digits; at most {MAX_INTEGER_DIGITS} are accepted")
    return int(text)


def parse_json(raw: bytes) -> Any:
    """The body as JSON, strictly; ``BadRequest`` (400) with the reason otherwise.

    A plain body (no surrogate escape, no integer that could pass 64 bits,
    no nesting that could pass Python's parser) is read by orjson, which
    refuses everything :func:`parse_json_strictly` refuses (NaN,
    infinities, invalid UTF-8) in a third of its time; a body orjson
    refuses is read again strictly, for the reason.
    """
    if not raw:
        raise BadRequest("the body is empty; send a JSON object with 'site' and 'events'")
    if _plain(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return parse_json_strictly(raw)


def parse_json_strictly(raw: bytes) -> Any:
    """Python's own reader, with every value a vendor could not take refused (see the module's docstring)."""
    try:
        text = raw.decode("utf-8")  # strictly: json.loads would let UTF-8-encoded surrogates through
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8 text") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except json.JSONDecodeError as error:
        raise BadRequest(f"the body is not JSON: {error}") from None
    except RecursionError:
        raise BadRequest("the body is nested too deeply") from None
    except ValueError as error:
        raise BadRequest(f"the body is not acceptable JSON: {error}") from None


def _plain(raw: bytes) -> bool:
    return (
        raw.count(b"[") + raw.count(b"{") <= _FAST_PATH_MAX_BRACKETS
        and not may_hold_lone_surrogates(raw)
        and _NINETEEN_DIGITS not in raw.translate(_DIGITS_AS_ZEROS)  # a tenth of a regular expression's time
    )


def may_hold_lone_surrogates(raw: bytes) -> bool:
    """False when no string of the body can hold a surrogate: the common case, checked in microseconds."""
    return b"\\u" in raw and _SURROGATE_ESCAPE.search(raw) is not None


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(key: str) -> str:
    """A key that holds a surrogate, named so that the error message itself is valid text."""
    return key.encode("utf-8", "backslashreplace").decode("utf-8")


def lone_surrogate_errors(value: Any) -> Any:
    """Marshmallow-shaped errors naming every string (or key) in ``value`` that holds a lone surrogate; None if none."""
    if isinstance(value, str):
        return None if _is_text(value) else [LONE_SURROGATE]
    if isinstance(value, dict):
        errors: dict[Any, Any] = {}
        for key, item in value.items():
            if not _is_text(key):
                errors[_printable(key)] = [LONE_SURROGATE_IN_KEY]
                continue
            found = lone_surrogate_errors(item)
            if found is not None:
                errors[key] = found
        return errors or None
    if isinstance(value, list):
        indexed = {index: lone_surrogate_errors(item) for index, item in enumerate(value)}
        return {index: found for index, found in indexed.items() if found is not None} or None
    return None
