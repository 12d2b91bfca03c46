"""Hide secrets in RPC URLs before they reach a report, a log line, a history row or an error message.

Node providers put API keys in three places: userinfo (`https://user:key@host`), the query string
(`?apikey=...`) and a path segment (`/v2/<key>`, `/v3/<32 hex>`, `/<token>/`). `redact_url` keeps
what a reader needs to tell endpoints apart (scheme, host, port, ordinary path words) and replaces the
rest with `***`. It never raises: something that is not a URL comes back unchanged unless it carries
a key-looking token.
"""
from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit, urlunsplit

MASK = "***"

# A path segment is treated as a key when it is long and mixes letters with digits (provider keys),
# or is a long run of hex / base64url (Infura's 32-hex project id, JWT-ish tokens). Ordinary words
# such as "mainnet", "rpc", "eth" or "v2" never match: they are short or have no digits.
_KEYLIKE_MIN_LEN = 16
_KEY_CHARS = re.compile(r"^[A-Za-z0-9_\-.=~]+$")
_HEX_RUN = re.compile(r"^(0x)?[0-9a-fA-F]{24,}$")


def _looks_like_key(segment: str) -> bool:
    if not segment:
        return False
    if _HEX_RUN.match(segment):
        return True
    if len(segment) < _KEYLIKE_MIN_LEN or not _KEY_CHARS.match(segment):
        return False
    has_digit = any(c.isdigit() for c in segment)
    has_alpha = any(c.isalpha() for c in segment)
    return (has_digit and has_alpha) or len(segment) >= 32


def _redact_query(query: str) -> str:
    # Keep parameter names (they tell the reader which knob was set), hide every value.
    parts = []
    for item in query.split("&"):
        if not item:
            continue
        name, sep, _ = item.partition("=")
        parts.append(f"{name}={MASK}" if sep else MASK)
    return "&".join(parts)


def redact_url(url: str | None) -> str | None:
    """Return `url` with userinfo, query values, fragments and key-like path segments replaced by `***`.

    >>> redact_url("https://eth-mainnet.g.alchemy.com/v2/AbC123dEf456GhI789jkL")
    'https://eth-mainnet.g.alchemy.com/v2/***'
    >>> redact_url("https://user:pw@node.example:8545/rpc?key=s3cret")
    'https://***@node.example:8545/rpc?key=***'
    """
    if url is None:
        return None
    text = str(url)
    try:
        parts = urlsplit(text)
    except ValueError:
        return MASK
    if not parts.scheme or not parts.netloc:
        # Not a network URL (an IPC path, a bare name): only hide key-looking path pieces.
        return "/".join(MASK if _looks_like_key(seg) else seg for seg in text.split("/"))
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal needs its brackets back
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port is None else f"{host}:{port}"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        netloc = f"{MASK}@{netloc}"
    path = "/".join(MASK if _looks_like_key(seg) else seg for seg in parts.path.split("/"))
    query = _redact_query(parts.query) if parts.query else ""
    fragment = MASK if parts.fragment else ""
    return urlunsplit(SplitResult(parts.scheme, netloc, path, query, fragment))


def scrub(text: str, *urls: str | None) -> str:
    """Replace every occurrence of each raw `url` in `text` by its redacted form.

    Client libraries quote the full endpoint in exception messages; run those through this before
    printing them or storing them.
    """
    out = str(text)
    for url in urls:
        if not url:
            continue
        url = str(url)
        red = redact_url(url) or MASK
        out = out.replace(url, red)
        # HTTP clients (requests/urllib3) quote only the path and query in connection errors, so the
        # key-bearing tail is scrubbed on its own as well.
        parts, red_parts = urlsplit(url), urlsplit(red)
        tail = parts.path + (f"?{parts.query}" if parts.query else "")
        if len(tail) > 1:
            out = out.replace(tail, red_parts.path + (f"?{red_parts.query}" if red_parts.query else ""))
    return out
