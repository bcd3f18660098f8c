"""URLs as the sidecar shows them: credentials never leave the process in a body, log or status.

>>> redact_url("http://user:secret@vllm:8000/v1")
'http://***@vllm:8000/v1'
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, unquote, urlsplit

# scheme://userinfo@ anywhere in a text: an exception message can quote a whole URL.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s]*@")


def redact_url(text: str) -> str:
    """``text`` (a URL, or a message quoting URLs) with each ``user:password@`` shown as ``***@``."""
    return _USERINFO.sub(r"\g<scheme>***@", text)


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` without ``user:password@``, and the percent-decoded pair when there was one."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    bare = SplitResult(parts.scheme, netloc, parts.path, parts.query, parts.fragment).geturl()
    return bare, (unquote(parts.username or ""), unquote(parts.password or ""))
