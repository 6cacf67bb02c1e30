"""Test doubles for the Hub: a jobs HTTP server on 127.0.0.1 and an in-memory dataset repo.

FakeJobsServer answers the HF Jobs routes huggingface_hub calls (`run_job`, `inspect_job`,
`fetch_job_logs`, `cancel_job`, `whoami`) in the reply shapes its JobInfo / SSE parser
read (huggingface_hub/_jobs_api.py, hf_api.py), and records every request, so tests
assert on the exact HTTP body the library sends. FakeRepoStore stands in for the HfApi
storage calls hub_storage.py makes (create_repo, create_commit with adds and deletes,
list_repo_tree, snapshot_download), with huggingface_hub's own pattern filter, so
allow/ignore patterns behave as on the Hub, and the Hub's 404s for missing repos / paths.
"""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from huggingface_hub.utils import filter_repo_objects

USER = "alice"
# GET /api/jobs/hardware, in the Hub's JSON shape (JobHardwareInfo): a fixed table for the cost tests.
HARDWARE = [
    {"name": "cpu-basic", "prettyName": "CPU Basic", "cpu": "2 vCPU", "ram": "16 GB", "accelerator": None, "unitCostMicroUSD": 167, "unitCostUSD": 0.000167, "unitLabel": "minute"},
    {"name": "a10g-small", "prettyName": "Nvidia A10G - small", "cpu": "4 vCPU", "ram": "15 GB",
     "accelerator": {"type": "gpu", "model": "A10G", "quantity": "1", "vram": "24 GB", "manufacturer": "Nvidia"},
     "unitCostMicroUSD": 20000, "unitCostUSD": 0.02, "unitLabel": "minute"},  # $1.20/h: differs from the offline table on purpose
    {"name": "a100-large", "prettyName": "Nvidia A100 - large", "cpu": "12 vCPU", "ram": "142 GB",
     "accelerator": {"type": "gpu", "model": "A100", "quantity": "1", "vram": "80 GB", "manufacturer": "Nvidia"},
     "unitCostMicroUSD": 50000, "unitCostUSD": 0.05, "unitLabel": "minute"},  # $3.00/h
]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Commit:
    repo: str
    message: str
    added: list[str]
    deleted: list[str]  # paths as given to CommitOperationDelete (folders end with "/")


@dataclass
class TreeEntry:
    path: str  # like RepoFile / RepoFolder.path: the full path in the repo


@dataclass
class FakeJob:
    id: str
    namespace: str
    spec: dict[str, Any]
    stage: str = "SCHEDULING"
    message: str | None = None
    logs: list[str] = field(default_factory=list)


class FakeJobsServer:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.jobs: dict[str, FakeJob] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeJobsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def posts(self, suffix: str = "") -> list[Request]:
        return [r for r in self.requests if r.method == "POST" and r.path.endswith(suffix)]

    def job_info(self, job: FakeJob) -> dict[str, Any]:
        s = job.spec
        return {
            "id": job.id,
            "createdAt": "2026-11-02T10:00:00.000Z",
            "dockerImage": s.get("dockerImage"),
            "command": s.get("command"),
            "arguments": s.get("arguments", []),
            "environment": s.get("environment", {}),
            "secrets": dict.fromkeys(s.get("secrets", {})),  # names only; values are never echoed
            "flavor": s.get("flavor"),
            "labels": s.get("labels"),
            "status": {"stage": job.stage, "message": job.message},
            "owner": {"id": "5e9ecfc04957053f60648a3e", "name": job.namespace, "type": "user"},
        }

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def _record(self) -> Request:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                req = Request(self.command, self.path.split("?")[0], {k.lower(): v for k, v in self.headers.items()}, body)
                with fake._lock:
                    fake.requests.append(req)
                return req

            def _json(self, code: int, data: Any) -> None:
                blob = json.dumps(data).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(blob)))
                self.end_headers()
                self.wfile.write(blob)

            def _authorized(self, req: Request) -> bool:
                if not req.headers.get("authorization", "").startswith("Bearer "):
                    self._json(401, {"error": "Invalid credentials in Authorization header"})
                    return False
                return True

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                req = self._record()
                if not self._authorized(req):
                    return
                parts = req.path.strip("/").split("/")
                if req.path == "/api/whoami-v2":
                    return self._json(200, {"type": "user", "name": USER, "fullname": "Alice", "orgs": []})
                if req.path == "/api/jobs/hardware":
                    return self._json(200, HARDWARE)
                if parts[:2] == ["api", "jobs"] and len(parts) == 4 and parts[3] in fake.jobs:
                    return self._json(200, fake.job_info(fake.jobs[parts[3]]))
                if parts[:2] == ["api", "jobs"] and len(parts) == 5 and parts[4] == "logs" and parts[3] in fake.jobs:
                    return self._sse(fake.jobs[parts[3]])
                self._json(404, {"error": f"no route {req.path}"})

            def do_POST(self) -> None:  # noqa: N802
                req = self._record()
                if not self._authorized(req):
                    return
                parts = req.path.strip("/").split("/")
                if parts[:2] == ["api", "jobs"] and len(parts) == 3:
                    job = FakeJob(id=f"6900000000000000000000{len(fake.jobs):02d}", namespace=parts[2], spec=req.body)
                    fake.jobs[job.id] = job
                    return self._json(200, fake.job_info(job))
                if parts[:2] == ["api", "jobs"] and len(parts) == 5 and parts[4] == "cancel" and parts[3] in fake.jobs:
                    fake.jobs[parts[3]].stage = "CANCELED"
                    return self._json(200, {})
                self._json(404, {"error": f"no route {req.path}"})

            def _sse(self, job: FakeJob) -> None:
                # The real stream: one `data: {"timestamp", "data"}` event per line, a
                # "===== Job started" banner first (the library drops it).
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")  # send_response added Date (GMT)
                self.end_headers()
                lines = [f"===== Job started at {datetime.now(timezone.utc).isoformat()} =====", *job.logs]
                for i, line in enumerate(lines):
                    event = {"timestamp": f"2026-11-02T10:00:{i:02d}.000Z", "data": line}
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()

        return Handler


class FakeRepoStore:
    """In-memory Hub storage: {repo_id: directory}. Duck-types the HfApi calls hub_storage.py uses."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.repos: dict[str, Path] = {}
        self.commits: list[Commit] = []

    def create_repo(self, repo_id: str, repo_type: str | None = None, private: bool | None = None, exist_ok: bool = False):
        assert repo_type == "dataset" and private is True, (repo_type, private)
        self.repos.setdefault(repo_id, self.root / repo_id.replace("/", "__"))
        self.repos[repo_id].mkdir(parents=True, exist_ok=True)

    def create_commit(self, repo_id: str, repo_type: str, operations, commit_message: str):
        from huggingface_hub import CommitOperationDelete

        if repo_id not in self.repos:
            raise _not_found(repo_id)
        root = self.repos[repo_id]
        deletes = [op for op in operations if isinstance(op, CommitOperationDelete)]
        adds = [op for op in operations if not isinstance(op, CommitOperationDelete)]
        for op in deletes:  # the Hub refuses the whole commit when a path to delete is missing
            if not (root / op.path_in_repo).exists():
                raise _not_found(repo_id, op.path_in_repo)
        for op in deletes:
            target = root / op.path_in_repo
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()
        for op in adds:
            dest = root / op.path_in_repo
            dest.parent.mkdir(parents=True, exist_ok=True)
            src = op.path_or_fileobj
            if isinstance(src, bytes):
                dest.write_bytes(src)
            else:
                shutil.copyfile(src, dest)
        self.commits.append(Commit(repo_id, commit_message, [op.path_in_repo for op in adds], [op.path_in_repo for op in deletes]))

    def file_exists(self, repo_id: str, filename: str, *, repo_type: str | None = None) -> bool:
        return repo_id in self.repos and (self.repos[repo_id] / filename).is_file()

    def upload_file(self, *, path_or_fileobj, path_in_repo: str, repo_id: str, repo_type: str | None = None, commit_message: str = ""):
        from huggingface_hub import CommitOperationAdd

        self.create_commit(repo_id, repo_type, [CommitOperationAdd(path_in_repo=path_in_repo, path_or_fileobj=path_or_fileobj)], commit_message)

    def list_repo_tree(self, repo_id: str, path_in_repo: str | None = None, *, repo_type: str | None = None, recursive: bool = False):
        if repo_id not in self.repos:
            raise _not_found(repo_id)
        folder = self.repos[repo_id] / (path_in_repo or "")
        if not folder.is_dir():
            raise _not_found(repo_id, path_in_repo)
        children = folder.rglob("*") if recursive else folder.iterdir()
        return [TreeEntry(p.relative_to(self.repos[repo_id]).as_posix()) for p in sorted(children)]

    def files(self, repo_id: str) -> list[str]:
        root = self.repos[repo_id]
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    def snapshot_download(self, repo_id: str, repo_type: str, allow_patterns=None, ignore_patterns=None, local_dir=None):
        if repo_id not in self.repos:
            raise _not_found(repo_id)
        for rel in filter_repo_objects(self.files(repo_id), allow_patterns=allow_patterns, ignore_patterns=ignore_patterns):
            dest = Path(local_dir) / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.repos[repo_id] / rel, dest)
        return str(local_dir)


def _not_found(repo_id: str, path: str | None = None) -> Exception:
    import httpx2
    from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError

    url = f"https://huggingface.co/api/datasets/{repo_id}" + (f"/tree/main/{path}" if path else "")
    response = httpx2.Response(404, request=httpx2.Request("GET", url))
    if path:
        return RemoteEntryNotFoundError(f"404 Client Error: Entry Not Found for url: {url}", response=response)
    return RepositoryNotFoundError(f"404 Client Error: Repository Not Found for url: {url}", response=response)
