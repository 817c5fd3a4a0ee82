"""Where the server may send a request whose address a user chose: one rule for LLM `base_url`s
now (and MCP servers and webhooks when they come).

Why: a workflow names its own `base_url`, and the server POSTs there from where it stands on the
network. Without a rule a request can make the server call its own API (`base_url:
"http://127.0.0.1:8081/api/messages/delete?"`), another service beside it, or a cloud metadata
address, and read the answer back in an error message.

The rule (`OutboundPolicy.check`), applied before anything of the request is stored:
- `http` or `https`; no `user:password@` (a key in a URL is stored and shown with the URL), no
  query or fragment, no `.` or `..` path segment, no space, backslash or control character, and
  a host of plain ASCII letters, digits, `-`, `_` and `.` (or an IP literal);
- the URL continues one of the allowed prefixes: `llm.allowed_base_urls`, by default only the
  server's own LLM endpoint (`OPENAI_BASE_URL`, else `https://api.openai.com/v1`), which is
  always allowed; with the default list and `auth.mode: none` (one person's machine, whose user
  can reach its loopback anyway) also any local host: 127.0.0.0/8, ::1, `localhost`, 0.0.0.0;
- never this server's own address (its `port` on a local host or on its `host`), whatever the
  list says: the server does not call itself.

A prefix matches when scheme, host and port are the same (a missing port is the scheme's
default) and the URL's path is the prefix's path or continues it after a `/`:
`https://llm.example.com/v1` allows `https://llm.example.com/v1/chat`, never
`https://llm.example.com/v1x` nor `https://llm.example.com.evil.net/v1`.

Host names are matched as written and not resolved. Resolving at check time protects nothing (a
name may resolve elsewhere when the connection is made: DNS rebinding), and refusing private
addresses would forbid the usual reason to list a host (an in-house endpoint); the list is the
operator's, so an allowed name is trusted as the operator wrote it. Redirects are never followed
(the shared HTTP client in `endpoints.py`), so an allowed host cannot pass a call on to another.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from ..settings import Settings

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_\-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_\-]*[a-z0-9_])?)*\.?")


class OutboundRefused(ValueError):
    """The address may not be called; the message says why, without repeating any secret."""


@dataclass(frozen=True)
class Target:
    """An address, parsed and normalised (scheme and host in lower case, the port filled in)."""

    scheme: str
    host: str
    port: int
    path: str

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


def parse(url: str) -> Target:
    """Parse an address, or refuse one that is not a plain http(s) URL (see the module's rule)."""
    if not url:
        raise OutboundRefused("is empty")
    if any(ch.isspace() or ch == "\\" or unicodedata.category(ch).startswith("C") for ch in url):
        raise OutboundRefused("must not contain spaces, backslashes or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise OutboundRefused("is not a valid URL (bad host or port)") from exc
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise OutboundRefused("must start with http:// or https://")
    if "@" in parts.netloc:
        raise OutboundRefused(
            "must not carry credentials (user:password@): store the key with POST /api/credentials "
            'and name it in the config_list entry as "credential"'
        )
    if "?" in url or "#" in url:
        raise OutboundRefused("must not have a query (?) or a fragment (#)")
    host = (parts.hostname or "").lower()
    if not host:
        raise OutboundRefused("has no host")
    if not _is_ip(host) and not _HOST_NAME.fullmatch(host):
        raise OutboundRefused("has a host that is not a plain name or IP address (write names in ASCII)")
    if any(seg in (".", "..") for seg in unquote(parts.path).split("/")):
        raise OutboundRefused("must not contain '.' or '..' path segments")
    return Target(scheme, host.rstrip("."), port or _DEFAULT_PORTS[scheme], parts.path)


@dataclass(frozen=True)
class _Prefix:
    target: Target
    text: str

    def covers(self, t: Target) -> bool:
        mine = self.target
        if (t.scheme, t.host, t.port) != (mine.scheme, mine.host, mine.port):
            return False
        path = mine.path.rstrip("/")
        return not path or t.path == path or t.path.startswith(path + "/")


def check_prefix(prefix: str) -> str:
    """A setting's prefix, checked like any address (the settings validate their list with it)."""
    try:
        parse(prefix)
    except OutboundRefused as exc:
        raise ValueError(f"'{prefix}' {exc}") from exc
    return prefix


def check_listed(url: str, prefixes: Iterable[str], setting: str) -> Target:
    """`url` parsed, if it continues one of `prefixes` (matched as `llm.allowed_base_urls` are);
    else `OutboundRefused` naming the setting that lists them. No prefix: nothing is allowed."""
    target = parse(url)
    listed = list(prefixes)
    for text in listed:
        try:
            if _Prefix(parse(text), text).covers(target):
                return target
        except OutboundRefused:
            continue
    allowed = f"allowed: URLs that start with {' or '.join(listed)}" if listed else "none is allowed"
    raise OutboundRefused(f"is not allowed on this server ({allowed}; the operator lists them in {setting})")


def is_local_host(host: str) -> bool:
    """Loopback (127.0.0.0/8, ::1, also IPv4-mapped), `localhost` and its sub-names, and the
    unspecified address (0.0.0.0 and :: reach this machine on Linux)."""
    host = host.lower().rstrip(".").strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class OutboundPolicy:
    """Which addresses a user's request may make this server call."""

    # The server's own LLM endpoint: always allowed, never named in messages (it may be internal).
    server_endpoint: str
    # The operator's list (`llm.allowed_base_urls`); None means the default.
    listed: tuple[str, ...] | None
    allow_local: bool
    own_host: str
    own_port: int

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboundPolicy:
        from ..auth.settings import AuthMode

        listed = settings.llm.allowed_base_urls
        return cls(
            server_endpoint=settings.openai_base_url or OPENAI_DEFAULT_BASE_URL,
            listed=None if listed is None else tuple(listed),
            allow_local=listed is None and settings.auth.mode is AuthMode.NONE,
            own_host=settings.host.lower().strip("[]"),
            own_port=settings.port,
        )

    def _prefixes(self) -> Iterable[_Prefix]:
        for text in (self.server_endpoint, *(self.listed or ())):
            try:
                yield _Prefix(parse(text), text)
            except OutboundRefused:
                continue  # a bad server endpoint is the operator's to fix; it allows nothing

    def check(self, url: str) -> Target:
        """The parsed target, or `OutboundRefused` saying why this address may not be called."""
        target = parse(url)
        if target.port == self.own_port and (is_local_host(target.host) or target.host == self.own_host):
            raise OutboundRefused(f"points at this server itself ({target.authority}): not an LLM endpoint")
        if any(p.covers(target) for p in self._prefixes()):
            return target
        if self.allow_local and is_local_host(target.host):
            return target
        return self._refuse(target)

    def _refuse(self, target: Target) -> Target:
        options = "leave base_url out to use the server's endpoint"
        if self.listed:
            options += f", or use one that starts with {' or '.join(self.listed)}"
        local = (
            " (local addresses are allowed only with auth.mode none)"
            if self.listed is None and not self.allow_local and is_local_host(target.host)
            else ""
        )
        raise OutboundRefused(
            f"host {target.authority} is not an allowed endpoint on this server{local}: {options} "
            "(the operator lists endpoints in llm.allowed_base_urls)"
        )
