"""A small stand-in for the Hugging Face Hub on 127.0.0.1, for the `chatcli pull hf:` tests (no hub is reachable here).

It serves what huggingface_hub's model_info(files_metadata=True) and hf_hub_download read, with the headers the client
checks: the repo's commit in X-Repo-Commit, the ETag (the sha256 of an LFS file, the git blob sha1 of a small one),
Content-Length, and byte ranges (206 with Content-Range) for resumed downloads. Errors carry X-Error-Code as the Hub's do
(RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo). Faults a test can ask for, per file: `cut` (the first GET
stops half way, so the client must resume with a Range request) and `lie` (the listing and the ETag give a sha256
that the served bytes do not have).
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from dataclasses import dataclass, field

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

LFS_SUFFIXES = (".safetensors", ".gguf", ".bin")  # the Hub stores these in LFS: an ETag that is a sha256


@dataclass
class HubFile:
    data: bytes
    cut: bool = False  # the first full GET sends half the bytes, then drops the connection
    lie: bool = False  # the advertised sha256 is not the served bytes'
    cut_done: bool = False

    def sha256(self) -> str:
        digest = hashlib.sha256(self.data).hexdigest()
        return hashlib.sha256(b"not " + self.data).hexdigest() if self.lie else digest


@dataclass
class HubRepo:
    files: dict[str, HubFile]
    commit: str
    gated_token: str | None = None  # set: downloads need "Authorization: Bearer TOKEN" (the listing stays public)


def git_blob_sha1(data: bytes) -> str:
    """The id git gives a blob: what the Hub sends as the ETag of a file kept outside LFS."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class HubEmulator:
    repos: dict[str, HubRepo] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range header)
    url: str = ""

    def add(self, repo_id: str, files: dict[str, bytes], gated_token: str | None = None, commit: str | None = None,
            **faults: set[str]) -> HubRepo:
        """Publish REPO_ID with FILES (at COMMIT, default a hash of them); faults: cut={names}, lie={names}."""
        commit = commit or hashlib.sha1(repo_id.encode() + b"".join(sorted(files.values()))).hexdigest()
        hub_files = {name: HubFile(data, cut=name in faults.get("cut", ()), lie=name in faults.get("lie", ()))
                     for name, data in files.items()}
        self.repos[repo_id] = repo = HubRepo(hub_files, commit, gated_token)
        return repo

    def app(self) -> FastAPI:
        app = FastAPI()

        def error(status: int, code: str, message: str) -> Response:
            return JSONResponse({"error": message}, status_code=status, headers={"X-Error-Code": code, "X-Error-Message": message})

        def find(org: str, name: str, revision: str) -> HubRepo | Response:
            repo = self.repos.get(f"{org}/{name}")
            if repo is None:
                return error(404, "RepoNotFound", "Repository not found")
            if revision not in ("main", repo.commit):
                return error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return repo

        @app.get("/api/models/{org}/{name}/revision/{revision}")
        def info(org: str, name: str, revision: str, request: Request):
            self.requests.append(("GET", request.url.path, None))
            repo = find(org, name, revision)
            if isinstance(repo, Response):
                return repo
            siblings = []
            for path, f in repo.files.items():
                sib = {"rfilename": path, "size": len(f.data), "blobId": git_blob_sha1(f.data)}
                if path.endswith(LFS_SUFFIXES):
                    sib["lfs"] = {"size": len(f.data), "sha256": f.sha256(), "pointerSize": 134}
                siblings.append(sib)
            return {"id": f"{org}/{name}", "sha": repo.commit, "siblings": siblings, "private": False,
                    "gated": "manual" if repo.gated_token else False}

        @app.api_route("/{org}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
        def resolve(org: str, name: str, revision: str, path: str, request: Request):
            rng = request.headers.get("range")
            self.requests.append((request.method, request.url.path, rng))
            repo = find(org, name, revision)
            if isinstance(repo, Response):
                return repo
            if repo.gated_token and request.headers.get("authorization") != f"Bearer {repo.gated_token}":
                return error(401, "GatedRepo", f"Access to model {org}/{name} is restricted. You must have access to it "
                             "and be authenticated to access it. Please log in.")
            f = repo.files.get(path)
            if f is None:
                return error(404, "EntryNotFound", f"{path} does not exist on main")
            etag = f.sha256() if path.endswith(LFS_SUFFIXES) else git_blob_sha1(f.data)
            headers = {"ETag": f'"{etag}"', "X-Repo-Commit": repo.commit, "Accept-Ranges": "bytes"}
            size = len(f.data)
            if request.method == "HEAD":
                return Response(status_code=200, headers={**headers, "Content-Length": str(size)})
            start = 0
            if rng and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[6:-1])
            body = f.data[start:]
            if f.lie:
                body = bytes([body[0] ^ 0xFF]) + body[1:] if start == 0 else body
            if start:
                headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
            headers["Content-Length"] = str(len(body))
            if f.cut and not f.cut_done and start == 0:
                f.cut_done = True

                def half():
                    yield body[: len(body) // 2]
                    raise ConnectionAbortedError("the emulator drops the connection half way")

                return StreamingResponse(half(), status_code=200, headers=headers)
            return Response(body, status_code=206 if start else 200, headers=headers)

        return app

    def start(self) -> HubEmulator:
        """Serve on a free port of 127.0.0.1 in a daemon thread; self.url is the HF_ENDPOINT to use."""
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self._server = uvicorn.Server(uvicorn.Config(self.app(), log_level="critical", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:  # uvicorn sets it once the socket is listening
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the hub emulator did not start")
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
