"""A real Hugging Face-compatible Hub on 127.0.0.1 (a threaded http.server) serving repositories
held in memory: the model-info API with siblings and hashes, resolve URLs with X-Repo-Commit, ETag
and Range support, and on cue the failures a real Hub and network produce (401, 403, 404, a
connection cut mid-file, a file whose bytes do not match its listed hash)."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

_INFO = re.compile(r"^/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


def folder_files(folder) -> dict[str, bytes]:
    """A folder's files as a repository's contents."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str
    revisions: set[str]
    lfs: set[str]
    gated: bool = False


@dataclass
class Request:
    method: str
    path: str
    range: str | None


@dataclass
class FakeHub:
    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    cuts: dict[str, list[int]] = field(default_factory=dict)
    """file name -> byte counts: each GET of it stops after the next count (then cuts no more)."""
    corrupt: set[str] = field(default_factory=set)
    """File names served with one byte flipped."""
    missing_status: int = 401
    """What a missing repository gets: 401 for an anonymous caller, 404 for a logged-in one."""

    def add_repo(
        self, repo: str, files: dict[str, bytes], *, revision: str = "main", gated: bool = False
    ) -> str:
        """Serve `files` as `repo` at `revision`; big or binary files go through "LFS" (sha256 ETag)."""
        digest = hashlib.sha1(repo.encode() + revision.encode())
        for name in sorted(files):
            digest.update(name.encode() + files[name])
        commit = digest.hexdigest()
        lfs = {n for n, d in files.items() if len(d) > 1024 or not n.endswith((".json", ".txt", ".jinja", ".md"))}
        self.repos[repo] = Repo(dict(files), commit, {revision, commit}, lfs, gated)
        return commit

    def downloads_of(self, name: str) -> list[Request]:
        return [r for r in self.requests if r.method == "GET" and "/resolve/" in r.path and r.path.endswith("/" + name)]

    # --- the server -------------------------------------------------------------------------------

    def start(self) -> str:
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                hub._handle(self, "GET")

            def do_HEAD(self) -> None:  # noqa: N802
                hub._handle(self, "HEAD")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handle(self, handler: http.server.BaseHTTPRequestHandler, method: str) -> None:
        path = unquote(urlsplit(handler.path).path)
        self.requests.append(Request(method, path, handler.headers.get("Range")))
        if match := _INFO.match(path):
            self._info(handler, match.group(1), match.group(2) or "main")
        elif match := _RESOLVE.match(path):
            self._resolve(handler, method, *match.groups())
        else:
            self._error(handler, 404, "EntryNotFound", "no such route")

    def _repo(self, handler, repo_id: str, revision: str) -> Repo | None:
        repo = self.repos.get(repo_id)
        if repo is None:  # the Hub says the same for missing and private repositories
            self._error(handler, self.missing_status, "RepoNotFound", "Repository not found")
            return None
        if repo.gated:
            self._error(handler, 403, "GatedRepo", "Access to this model is restricted")
            return None
        if revision not in repo.revisions:
            self._error(handler, 404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return None
        return repo

    def _info(self, handler, repo_id: str, revision: str) -> None:
        repo = self._repo(handler, repo_id, revision)
        if repo is None:
            return
        siblings = []
        for name, data in sorted(repo.files.items()):
            sibling = {"rfilename": name, "size": len(data), "blobId": git_blob_id(data)}
            if name in repo.lfs:
                sibling["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            siblings.append(sibling)
        body = json.dumps({"id": repo_id, "modelId": repo_id, "sha": repo.commit, "siblings": siblings}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _resolve(self, handler, method: str, repo_id: str, revision: str, name: str) -> None:
        repo = self._repo(handler, repo_id, revision)
        if repo is None:
            return
        if name not in repo.files:
            self._error(handler, 404, "EntryNotFound", f"{name} does not exist")
            return
        data = repo.files[name]
        etag = hashlib.sha256(data).hexdigest() if name in repo.lfs else git_blob_id(data)
        if name in self.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        requested = handler.headers.get("Range")
        if requested and (m := re.match(r"bytes=(\d+)-$", requested)):
            start = int(m.group(1))
        body = data[start:]
        handler.send_response(206 if start else 200)
        handler.send_header("X-Repo-Commit", repo.commit)
        handler.send_header("ETag", f'"{etag}"')
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("Content-Length", str(len(body)))
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.end_headers()
        if method == "HEAD":
            return
        cut = self.cuts.get(name)
        if method == "GET" and cut:
            handler.wfile.write(body[: cut.pop(0)])
            handler.wfile.flush()
            handler.close_connection = True
            return
        handler.wfile.write(body)

    def _error(self, handler, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("X-Error-Code", code)
        handler.send_header("X-Error-Message", message)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
