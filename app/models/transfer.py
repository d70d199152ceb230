"""Resumable, hash-checked downloads of single files over HTTP: a partial file survives a cut or
a Ctrl+C and the next attempt continues it with a Range request."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.errors import AppError

CHUNK = 1 << 20
PARTIAL_SUFFIX = ".part"
RETRIES = 3
"""A connection cut mid-file is retried (from where it stopped) this many times per file."""

Progress = Callable[[int], None]
"""Called with the number of bytes just written."""


@dataclass(frozen=True)
class Expected:
    """What a file must be: its size, and its sha256 (Git LFS files) or Git blob id (small files)."""

    size: int | None = None
    sha256: str | None = None
    git_blob_id: str | None = None


class TransferError(AppError):
    """A download failed; the message names the file and what to do."""


class HashMismatch(TransferError):
    """A file arrived whole but is not the file the repository lists; it has been deleted."""


def download(
    url: str,
    dest: Path,
    expected: Expected,
    *,
    headers: Mapping[str, str] | None = None,
    on_bytes: Progress | None = None,
    timeout: float = 30.0,
) -> Path:
    """Fetch `url` into `dest` (via dest + ".part", continued if present) and check it against
    `expected`. A file already at `dest` is checked, not downloaded again."""
    report = on_bytes or (lambda n: None)
    if dest.is_file():
        report(dest.stat().st_size)
        try:
            _verify(dest, expected, dest.name)
        except HashMismatch:
            dest.unlink(missing_ok=True)
            raise
        return dest
    partial = dest.with_name(dest.name + PARTIAL_SUFFIX)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if partial.is_file():
        report(partial.stat().st_size)
    attempts = 0
    while True:
        try:
            _fetch_into(url, partial, expected.size, dict(headers or {}), report, timeout)
            break
        except (httpx.TransportError, _Incomplete) as cut:
            attempts += 1
            if attempts > RETRIES:
                raise TransferError(
                    f"the download of {dest.name} broke off ({cut}); run the same command again to continue it."
                ) from None
    try:
        _verify(partial, expected, dest.name)
    except HashMismatch:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(dest)
    return dest


class _Incomplete(Exception):
    """The server closed the body before the promised length."""


def _fetch_into(
    url: str, partial: Path, size: int | None, headers: dict[str, str], report: Progress, timeout: float
) -> None:
    have = partial.stat().st_size if partial.is_file() else 0
    if size is not None and have == size:
        return
    if size is not None and have > size:  # not this file's beginning: start again
        partial.unlink()
        have = 0
    headers["Accept-Encoding"] = "identity"  # byte ranges must count the file's own bytes
    if have:
        headers["Range"] = f"bytes={have}-"
    with httpx.stream("GET", url, headers=headers, follow_redirects=True, timeout=timeout) as response:
        if response.status_code == 416 and have:  # asked past the end: the partial file is stale
            partial.unlink()
            raise _Incomplete("the partial file did not match the server's")
        if response.status_code >= 400:
            raise TransferError(f"the server answered {response.status_code} for {url}.")
        if have and response.status_code != 206:  # the server ignored the Range: start over
            report(-have)
            have = 0
        with partial.open("ab" if have else "wb") as out:
            for chunk in response.iter_raw():  # as they arrive: a cut must not lose a buffered chunk
                out.write(chunk)
                report(len(chunk))
    if size is not None and partial.stat().st_size < size:
        raise _Incomplete(f"{partial.stat().st_size} of {size} bytes arrived")


def _verify(path: Path, expected: Expected, name: str) -> None:
    actual_size = path.stat().st_size
    if expected.size is not None and actual_size != expected.size:
        raise HashMismatch(
            f"{name} is {actual_size} bytes but the repository lists {expected.size}; it was deleted. "
            "Run the same command again to download it afresh."
        )
    if expected.sha256:
        digest = file_sha256(path)
        wanted = expected.sha256.lower()
    elif expected.git_blob_id:
        digest = git_blob_id(path)
        wanted = expected.git_blob_id.lower()
    else:
        return
    if digest != wanted:
        raise HashMismatch(
            f"{name} failed its hash check (expected {wanted[:12]}…, got {digest[:12]}…); it was deleted. "
            "Run the same command again to download it afresh; if it fails again the repository's copy is damaged."
        )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def git_blob_id(path: Path) -> str:
    """The id Git gives the file's contents (sha1 of "blob <size>\\0" + bytes): what the Hub
    lists for files kept outside Git LFS."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()
