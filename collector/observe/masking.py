"""What the console masks before it shows a string that came from a page: e-mail addresses and secret-looking URL parameters.

The live tail shows each event's page URL and props, and the refusals
panel the reasons a request was refused. A page's URL can carry what must
not be shown to whoever reads the console: a password-reset link
(``/reset?email=jane@example.com&token=...``), an OAuth ``code``, a
session id. So, by default, in every string shown:

- an e-mail address (:data:`~collector.config.defaults.EMAIL_PATTERN`, also with
  its ``@`` percent-encoded) becomes ``***``;
- in a URL, the value of every query or fragment parameter whose name
  looks secret or personal (:data:`~collector.config.defaults.SECRET_PARAMETER_PATTERN`:
  ``token``, ``email``, ``code``, ``session``, ``key``, ...) becomes ``***``,
  the name kept so the owner still sees which page it was.

The personal fields of a Commerce Account (``email``, ``phoneNumber``,
names, ...) are masked already when the tail is written
(``live_tail.masked``). This runs when the console reads the tail, so
``/collect`` pays nothing for it.
"""

from __future__ import annotations

import re
from typing import Any

from collector.config import defaults

MASK = "***"
_EMAIL = re.compile(defaults.EMAIL_PATTERN)
_SECRET_NAME = re.compile(defaults.SECRET_PARAMETER_PATTERN, re.IGNORECASE)
_PARAMETER = re.compile(r"(?<=[?&#;])([^=&#;?]+)=([^&#;]*)")


def _masked_parameter(match: re.Match[str]) -> str:
    name = match.group(1)
    return f"{name}={MASK}" if _SECRET_NAME.search(name) and match.group(2) else match.group(0)


def masked_text(text: str) -> str:
    """``text`` with e-mail addresses and the values of secret-looking URL parameters as ``***``."""
    if "=" in text and ("?" in text or "#" in text):
        text = _PARAMETER.sub(_masked_parameter, text)
    if "@" in text or "%40" in text:
        text = _EMAIL.sub(MASK, text)
    return text


def masked_strings(value: Any) -> Any:
    """``value`` (JSON) with :func:`masked_text` applied to every string in it; keys are kept."""
    if isinstance(value, str):
        return masked_text(value)
    if isinstance(value, dict):
        return {key: masked_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [masked_strings(item) for item in value]
    return value
