"""Mask secrets in text that leaves the process: a failed Job's logs quoted in an error, Slack, events.

:func:`redact` replaces, in this order:

1. every exact value the caller knows to be secret (the Slack bot token, the webhook secret, the
   registry password, a database password...), and its percent-encoded form;
2. private key blocks (``-----BEGIN ... PRIVATE KEY-----`` to its END line, or to the end of the
   text when the tail cut it off; base64 lines just before an END whose BEGIN was cut off);
3. ``Authorization:`` / ``Proxy-Authorization:`` header values (the scheme stays), and a
   ``Bearer <token>`` anywhere;
4. the password of a URL's user information (``scheme://user:***@host``);
5. tokens of known shapes: Slack (``xox[abposr]-``, ``xapp-``, hooks.slack.com webhook URLs),
   GitHub (``ghp_``, ``gho_``, ``ghu_``, ``ghs_``, ``ghr_``, ``github_pat_``), AWS access key ids
   (``AKIA``/``ASIA``), Google API keys (``AIza``) and JWTs;
6. the value of a ``key=value`` / ``key: value`` pair whose key names a secret (``password``,
   ``passwd``, ``secret``, ``token``, ``api_key``, ``access_key``, ``credentials``...), quoted or not.

What is masked becomes ``***`` (a token keeps its identifying prefix: ``xoxb-***``, ``ghp_***``)
so a reader still sees what kind of secret was there. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote

MASK = "***"
# shorter "secrets" would mask ordinary words and numbers all over the text
MIN_VALUE_LENGTH = 4

_PRIVATE_KEY = re.compile(
    r"-----BEGIN (?P<kind>[A-Z0-9 ]*?)PRIVATE KEY( BLOCK)?-----"
    r"(?:.*?-----END [A-Z0-9 ]*?PRIVATE KEY( BLOCK)?-----|.*\Z)",
    re.DOTALL,
)
# the tail of a key block whose BEGIN line was cut off (a log tail starts mid-key)
_PRIVATE_KEY_TAIL = re.compile(
    r"(?:^[ \t]*[A-Za-z0-9+/=]{16,}[ \t]*\r?\n)+[ \t]*-----END [A-Z0-9 ]*?PRIVATE KEY( BLOCK)?-----",
    re.MULTILINE,
)
_AUTH_HEADER = re.compile(
    r"(?P<key>\b(?:proxy-)?authorization\b[\"']?\s*[:=]\s*[\"']?)"
    r"(?:(?P<scheme>bearer|basic|token|digest|negotiate|bot|apikey)\s+)?"
    r"(?P<value>[^\s\"',;]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<scheme>\bbearer\s+)(?P<value>[A-Za-z0-9._~+/-]{12,}=*)", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/?#@\s]*:)(?P<value>[^@\s]+)@", re.IGNORECASE)
# each keeps its "prefix" group, so that a reader still sees what kind of token was there
_TOKENS = [
    re.compile(r"(?P<prefix>https://hooks\.slack\.com/(?:services|workflows|triggers)/)[A-Za-z0-9/_-]+"),
    re.compile(r"\b(?P<prefix>xox[abposr]-)[A-Za-z0-9-]+"),
    re.compile(r"\b(?P<prefix>xapp-)[A-Za-z0-9-]+"),
    re.compile(r"\b(?P<prefix>github_pat_)[A-Za-z0-9_]{20,}"),
    re.compile(r"\b(?P<prefix>gh[pousr]_)[A-Za-z0-9]{20,}"),
    re.compile(r"\b(?P<prefix>AKIA|ASIA)[A-Z0-9]{16}\b"),
    re.compile(r"\b(?P<prefix>AIza)[A-Za-z0-9_-]{35}"),
    re.compile(r"\b(?P<prefix>eyJ)[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
]
_SECRET_KEY = (
    r"[A-Za-z0-9_.-]*?"
    r"(?:password|passwd|passphrase|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key"
    r"|credentials?|client[_-]?secret)"
    r"[A-Za-z0-9_.-]*"
)
_PAIR = re.compile(
    rf"(?P<key>(?<![A-Za-z0-9_.-]){_SECRET_KEY}[\"']?\s*(?:=|:(?!//))\s*)"
    r"(?P<value>\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\\\n]|\\.)*'|[^\s,;&\"'}\]]+)",
    re.IGNORECASE,
)


def _mask_value(value: str) -> str:
    """``***``, keeping the quotes of a quoted value."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return f"{value[0]}{MASK}{value[0]}"
    return MASK


def _mask_header(m: re.Match[str]) -> str:
    """``Authorization: <scheme> ***``: the scheme stays, the credential goes."""
    if m["value"] == MASK:
        return m[0]
    return m["key"] + (f"{m['scheme']} " if m["scheme"] else "") + MASK


def _known_values(values: Iterable[str | None]) -> list[str]:
    """The caller's values worth masking (and their percent-encoded forms), longest first."""
    out: set[str] = set()
    for value in values:
        if not value or len(value.strip()) < MIN_VALUE_LENGTH:
            continue
        out.add(value)
        out.add(value.strip())
        out.add(quote(value, safe=""))
    return sorted(out, key=len, reverse=True)


def redact(text: str, values: Iterable[str | None] = ()) -> str:
    """``text`` with secrets masked: the exact ``values`` given (None and short ones are skipped)
    and every secret of a known shape (see the module's docstring)."""
    for value in _known_values(values):
        text = text.replace(value, MASK)
    text = _PRIVATE_KEY.sub(lambda m: f"-----BEGIN {m['kind']}PRIVATE KEY----- {MASK}", text)
    text = _PRIVATE_KEY_TAIL.sub(f"{MASK} -----END PRIVATE KEY-----", text)
    text = _AUTH_HEADER.sub(_mask_header, text)
    text = _BEARER.sub(lambda m: m["scheme"] + MASK, text)
    text = _URL_USERINFO.sub(lambda m: f"{m['head']}{MASK}@", text)
    for pattern in _TOKENS:
        text = pattern.sub(lambda m: m["prefix"] + MASK, text)
    text = _PAIR.sub(lambda m: m["key"] + _mask_value(m["value"]), text)
    return text
