"""ClickHouse DSNs: the default, how one may be shown (password masked), and the form
clickhouse-connect gets (chdb directories made absolute). No ClickHouse import, so the
worker's settings can validate a DSN without loading the engine."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DEFAULT_DSN = "chdb://./.shadowlens/ch"
DEFAULT_DATABASE = "shadowlens"
_MEMORY = {"memory", ":memory:"}


def redact_dsn(dsn: str) -> str:
    """The DSN as it may be shown: ``http://user:secret@host:8123`` ->
    ``http://user:***@host:8123``; whatever precedes an ``@`` that does not parse as
    user:password is masked whole. Errors and logs show DSNs only through this."""
    try:
        parts = urlsplit(dsn)
        if parts.password is not None:
            host = parts.hostname or ""
            if parts.port:
                host = f"{host}:{parts.port}"
            return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    except ValueError:  # e.g. a port that is not a number
        pass
    if "@" not in dsn:
        return dsn
    scheme, sep, rest = dsn.partition("://")
    tail = (rest if sep else dsn).rsplit("@", 1)[1]
    return f"{scheme}://***@{tail}" if sep else f"***@{tail}"


def resolve_dsn(dsn: str) -> str:
    """The DSN clickhouse-connect should get: chdb directories made absolute (and created).

    ``chdb://./rel/dir`` and ``chdb://rel/dir`` -> ``chdb:///abs/rel/dir`` (relative to the
    working directory), ``chdb:///abs/dir`` and ``http(s)://...`` unchanged. Anything else,
    including in-memory chdb (its data would vanish with the process), is a ValueError.
    """
    if not isinstance(dsn, str) or not dsn.strip():
        raise ValueError("empty ClickHouse DSN: expected chdb://<dir> or http(s)://host:port")
    dsn = dsn.strip()
    scheme, sep, rest = dsn.partition("://")
    scheme = scheme.lower()
    if sep and scheme in ("http", "https"):
        if not urlsplit(dsn).hostname:
            raise ValueError(f"ClickHouse DSN {redact_dsn(dsn)!r} names no host")
        return dsn
    if not sep or scheme != "chdb":
        raise ValueError(
            f"unsupported ClickHouse DSN {redact_dsn(dsn)!r}: expected chdb://./relative/dir, "
            "chdb:///absolute/dir or http(s)://host:port"
        )
    if not rest or rest in _MEMORY or rest.split("/", 1)[0] in _MEMORY:
        raise ValueError(
            f"ClickHouse DSN {redact_dsn(dsn)!r} names no data directory (in-memory chdb loses "
            "every row at exit): use chdb://./relative/dir or chdb:///absolute/dir"
        )
    if "?" in rest or "#" in rest:
        raise ValueError(
            f"chdb DSN {redact_dsn(dsn)!r}: the data directory may not contain '?' or '#'"
        )
    path = Path(rest).expanduser()  # "/abs" stays absolute, "./rel" and "rel" are relative
    path = path if path.is_absolute() else Path.cwd() / path
    path = Path(os.path.normpath(path))
    if path.exists() and not path.is_dir():
        raise ValueError(f"chdb DSN {redact_dsn(dsn)!r}: {path} exists and is not a directory")
    path.mkdir(parents=True, exist_ok=True)
    return f"chdb://{path}"
