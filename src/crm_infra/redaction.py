"""Keeping secrets out of what crm-infra shows: messages, reprs, reports and raised exceptions.

Every module that shows a URL, a driver's message or an exception uses these functions:

- :func:`redact` masks known secrets (the configured passwords and tokens), the password of any
  ``scheme://user:password@`` URL and the value of ``password=...``-style settings;
- :func:`redact_address` and :func:`redact_url` make one URL safe to show (an address loses
  its whole user-info; a connection URL keeps its user name and loses its password and
  secret-looking query values);
- :func:`password_of` finds the password in a connection URL or ``key=value`` string, so that
  it can be masked as a known secret;
- :func:`one_line` and :func:`short_error` turn a driver's multi-line message or an exception
  into one readable line, for messages and health reports;
- :func:`sanitized_copy` and :func:`raise_sanitized` keep a driver's exception, and whatever it
  holds (a connection with its password, a request with its token header), out of the chain of
  the error raised in its place.

The adapters keep secrets out of their messages in the first place; the masking here is a
second line of defence for text that comes from a driver or a server.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NoReturn, TypeVar, overload
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

__all__ = [
    "MASK",
    "one_line",
    "password_of",
    "raise_sanitized",
    "redact",
    "redact_address",
    "redact_url",
    "sanitized_copy",
    "short_error",
]

MASK = "***"
"""What replaces a secret."""

MAX_ERROR_CHARS = 300

_E = TypeVar("_E", bound=BaseException)

# scheme://user:password@ in any text; the password goes, the user name stays for diagnosis.
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]*@")
# A setting whose name says it is secret: password=..., secret_id=..., api_key=..., and the
# quoted-key forms of JSON and of Python reprs ('password': '...', "client_token": "...").
_SENSITIVE_NAME = r"[\w.-]*(?:password|passwd|token|secret|api[_-]?key|authorization)[\w.-]*"
_QUOTED = r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\""
_NAME_EQUALS = re.compile(rf"(?i)(?<![\w.-])({_SENSITIVE_NAME}\s*=\s*)({_QUOTED}|\S+)")
_QUOTED_NAME_COLON = re.compile(rf"(?i)((['\"]){_SENSITIVE_NAME}\2\s*:\s*)({_QUOTED}|[^\s,}}\]]+)")
# Query parameters of a connection URL whose value is shown as *** by redact_url.
_SECRET_QUERY_WORDS = ("pass", "secret", "token", "auth", "key")
_BULLET = re.compile(r"^[*\-•]\s+")


def _known(secrets: Iterable[str | None]) -> list[str]:
    """Return each secret and its percent-encoded forms, longest first."""
    forms: set[str] = set()
    for secret in secrets:
        if secret:
            forms.update({secret, quote(secret, safe=""), quote(secret)})
    return sorted(forms, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Return ``text`` with secrets masked by ``***``.

    Masked: every one of ``secrets`` (also percent-encoded), the password of any
    ``scheme://user:password@`` URL, and the value of any ``name=value`` or ``'name': value``
    whose name says it is secret (``password``, ``token``, ``secret_id``, ``api_key``...).

    Args:
        text: what is about to be shown.
        secrets: values known to be secret (None and empty ones are skipped).
    """
    for secret in _known(secrets):
        text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(rf"\g<head>{MASK}@", text)
    text = _NAME_EQUALS.sub(rf"\g<1>{MASK}", text)
    return _QUOTED_NAME_COLON.sub(rf"\g<1>{MASK}", text)


@overload
def redact_address(address: str) -> str: ...


@overload
def redact_address(address: None) -> None: ...


def redact_address(address: str | None) -> str | None:
    """Return ``address`` with any user-info (``user:password@``) replaced by ``***@``.

    Unlike :func:`redact`, the whole user-info goes: an address may carry a bare token there.

    Args:
        address: a URL such as ``VAULT_ADDR``, or None.

    Returns:
        The address safe to show, or None when ``address`` was None.
    """
    if address is None:
        return None
    scheme, sep, rest = address.partition("://")
    if not sep:
        return redact(address)
    authority, slash, tail = rest.partition("/")
    if "@" in authority:
        authority = f"{MASK}@" + authority.rpartition("@")[2]
    return redact(f"{scheme}{sep}{authority}{slash}{tail}")


def redact_url(url: str) -> str:
    """Return a connection URL with its password (and secret-looking query values) as ``***``.

    The user name is kept. Used for the reprs and messages of clients built from a URL.

    Args:
        url: e.g. a ``redis://``, ``rediss://`` or ``unix://`` URL.

    Returns:
        The same URL, safe for reprs, logs and error messages (``<unparseable URL>`` when it
        cannot be taken apart).
    """
    try:
        # The user info ends at the LAST '@' of the URL, not where urlsplit ends the netloc: a
        # password that should have been percent-encoded may hold '/', '?' or '#', which would
        # end the netloc early and show the password as path or query. ('@' in a query value
        # then hides more than needed; never less.)
        scheme, _, rest = url.partition("://")
        userinfo, at, rest = rest.rpartition("@")
        shown_user = ""
        if at:
            user, sep, _password = userinfo.partition(":")
            if any(c in user for c in "/?#"):
                user = MASK
            shown_user = f"{user}:{MASK}@" if sep else f"{user}@"
        parts = urlsplit(f"{scheme}://{rest}")
        netloc = shown_user + parts.netloc
        query = urlencode(
            [
                (k, MASK if any(w in k.lower() for w in _SECRET_QUERY_WORDS) else v)
                for k, v in parse_qsl(parts.query, keep_blank_values=True)
            ],
            safe="*",
        )
        # Built by hand: urlunsplit drops the "//" of an empty netloc (unix:///path).
        return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
    except ValueError:
        return "<unparseable URL>"


def password_of(conninfo: str) -> str | None:
    """Return the password in a connection URL or ``key=value`` string, without validating it."""
    if "://" in conninfo:
        try:
            password = urlsplit(conninfo).password
        except ValueError:  # a malformed URL: fall back to the raw userinfo
            match = re.search(r"://[^/@\s:]*:([^@\s]*)@", conninfo)
            password = match.group(1) if match else None
        return unquote(password) if password else None
    match = re.search(r"(?i)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", conninfo)
    if match is None:
        return None
    value = match.group(1)
    return value[1:-1] if value.startswith("'") else value


def one_line(text: str) -> str:
    """Return a driver's (possibly multi-line) message as one line that keeps its structure.

    Lines are joined with ``; `` (after a line ending in ``:``, with a space), list bullets
    are dropped and runs of white space folded: libpq's ``Connection refused\\n\\tIs the server
    running...?`` becomes ``Connection refused; Is the server running...?``, and Vault's
    ``1 error occurred:\\n\\t* permission denied`` becomes ``1 error occurred: permission
    denied``.
    """
    joined = ""
    for raw in text.splitlines():
        line = " ".join(_BULLET.sub("", raw.strip()).split())
        if not line:
            continue
        if not joined:
            joined = line
        elif joined.endswith(":"):
            joined += " " + line
        else:
            joined += "; " + line
    return joined


def _cut(text: str, limit: int | None) -> str:
    if limit is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def short_error(
    exc: BaseException,
    secrets: Iterable[str | None] = (),
    *,
    message: str | None = None,
    limit: int | None = MAX_ERROR_CHARS,
) -> str:
    """Return one readable line for ``exc``: its class and message, redacted and shortened.

    Args:
        exc: the exception to describe.
        secrets: values known to be secret, masked as well as anything shaped like one.
        message: the text to show instead of ``str(exc)``.
        limit: the most characters to return (the end replaced by ``…``); None for no limit.
    """
    text = " ".join((str(exc) if message is None else message).split()) or "(no message)"
    return _cut(redact(f"{type(exc).__name__}: {text}", secrets), limit)


def sanitized_copy(
    exc: _E, secrets: Iterable[str | None] = (), *, message: str | None = None, **keep: object
) -> _E:
    """Return a stand-in for a driver's exception, safe to chain as a ``__cause__``.

    The copy has the class of ``exc`` (so ``isinstance`` checks on the cause still work) and
    its message on one line with secrets masked, and nothing else: no attribute that points to
    a connection, a request or a result, no cause, no context, no traceback.

    Args:
        exc: the driver's exception.
        secrets: values known to be secret, masked in the message.
        message: the text to keep instead of ``str(exc)``.
        keep: keyword arguments for the class's constructor that the caller knows to be
            free of secrets (psycopg's diagnostics without the row values, say).
    """
    text = redact(one_line(str(exc) if message is None else message), secrets)
    cls = type(exc)
    try:
        return cls(text, **keep)
    except Exception:  # noqa: BLE001  # a class whose constructor wants more than a message
        copy = cls.__new__(cls, text)
        copy.args = (text,)
        return copy


def raise_sanitized(error: BaseException, cause: BaseException | None) -> NoReturn:
    """Raise ``error`` from ``cause`` (a :func:`sanitized_copy`, or None), with no ``__context__``.

    Raised inside an ``except`` block, an exception keeps the one being handled as its
    ``__context__`` even with ``from None`` (which only hides it from printed tracebacks),
    and with it everything the driver's exception holds. Calling this instead of ``raise``
    leaves only ``cause`` in the chain.
    """
    try:
        raise error from cause
    except BaseException as raised:
        # A bare re-raise does not chain again: the context stays empty.
        raised.__context__ = None
        raise
