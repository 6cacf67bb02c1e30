"""A small fake Kubernetes API server for the backend's tests (no cluster runs here).

It answers the real paths with the real JSON shapes (Job, Pod, PodList, Status) for the
calls trainyard makes, records every request, and runs the fetch pod's shell script
against a local directory standing in for the PVC, so the whole round trip is real
except the scheduler.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

JOBS = re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs(?:/([^/]+))?(/status)?$")
PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?(/log)?$")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_obj(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}


class FakeK8s:
    def __init__(self, volumes: dict[str, Path] | None = None):
        self.jobs: dict[tuple[str, str], dict] = {}
        self.pods: dict[tuple[str, str], dict] = {}
        self.logs: dict[tuple[str, str], str] = {}
        self.requests: list[tuple[str, str, dict, dict | None]] = []  # method, path, query, body
        self.volumes = volumes or {}  # PVC name -> local dir (for fetch pods)
        self.conflict_once: set[str] = set()
        self.forbidden: set[str] = set()  # namespaces where RBAC says no
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeK8s:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- test controls (what the job controller / kubelet would do)
    def set_job_status(self, ns: str, name: str, **status) -> None:
        self.jobs[(ns, name)]["status"] = status

    def add_pod(self, ns: str, job: str, name: str, phase: str = "Running", log: str = "", waiting: tuple[str, str] | None = None, created: str | None = None) -> None:
        state = {"waiting": {"reason": waiting[0], "message": waiting[1]}} if waiting else ({"running": {"startedAt": _now()}} if phase == "Running" else {"terminated": {"exitCode": 0 if phase == "Succeeded" else 1, "startedAt": _now(), "finishedAt": _now()}})
        self.pods[(ns, name)] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "creationTimestamp": created or _now(), "labels": {"batch.kubernetes.io/job-name": job, "job-name": job}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "train", "image": "img"}]},
            "status": {"phase": phase, "containerStatuses": [{"name": "train", "image": "img", "imageID": "", "ready": phase == "Running", "restartCount": 0, "state": state}]},
        }
        self.logs[(ns, name)] = log

    def calls(self, method: str, pattern: str = "") -> list[tuple[str, str, dict, dict | None]]:
        return [r for r in self.requests if r[0] == method and re.search(pattern, r[1])]

    # -- the API
    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, code: int, obj: dict | str, content_type: str = "application/json") -> None:
                data = (json.dumps(obj) if isinstance(obj, dict) else obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n)) if n else None
                fake.requests.append((method, url.path, query, body))
                ns = url.path.split("/namespaces/")[-1].split("/")[0] if "/namespaces/" in url.path else ""
                if ns in fake.forbidden:
                    return self._send(403, status_obj(403, "Forbidden", f'jobs.batch is forbidden: User "alice" cannot {method.lower()} resource "jobs" in API group "batch" in the namespace "{ns}"'))
                if m := JOBS.match(url.path):
                    return self._jobs(method, m.group(1), m.group(2), body)
                if m := PODS.match(url.path):
                    return self._pods(method, m.group(1), m.group(2), bool(m.group(3)), query, body)
                self._send(404, status_obj(404, "NotFound", f"no route {url.path}"))

            def _jobs(self, method: str, ns: str, name: str | None, body: dict | None) -> None:
                if method == "POST":
                    name = body["metadata"]["name"]
                    if (ns, name) in fake.jobs or name in fake.conflict_once:
                        fake.conflict_once.discard(name)
                        return self._send(409, status_obj(409, "AlreadyExists", f'jobs.batch "{name}" already exists'))
                    job = copy.deepcopy(body)
                    job["metadata"].update(namespace=ns, uid=f"uid-{name}", creationTimestamp=_now(), resourceVersion="1")
                    job["status"] = {}
                    fake.jobs[(ns, name)] = job
                    return self._send(201, job)
                if (ns, name) not in fake.jobs:
                    return self._send(404, status_obj(404, "NotFound", f'jobs.batch "{name}" not found'))
                if method == "GET":
                    return self._send(200, fake.jobs[(ns, name)])
                if method == "DELETE":
                    del fake.jobs[(ns, name)]
                    return self._send(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": {"name": name, "group": "batch", "kind": "jobs", "uid": f"uid-{name}"}})
                self._send(405, status_obj(405, "MethodNotAllowed", method))

            def _pods(self, method: str, ns: str, name: str | None, log: bool, query: dict, body: dict | None) -> None:
                if name is None and method == "GET":
                    sel = dict(kv.split("=", 1) for kv in query.get("labelSelector", "").split(",") if kv)
                    items = [p for (pns, _), p in fake.pods.items() if pns == ns and all(p["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
                    return self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items})
                if name is None and method == "POST":
                    return self._create_pod(ns, body)
                if (ns, name) not in fake.pods:
                    return self._send(404, status_obj(404, "NotFound", f'pods "{name}" not found'))
                if log:
                    text = fake.logs.get((ns, name), "")
                    if query.get("follow") == "true":  # chunked, cut mid-line: the client must reassemble
                        self.send_response(200)
                        self.send_header("Content-Type", "text/plain")
                        self.send_header("Transfer-Encoding", "chunked")
                        self.end_headers()
                        half = len(text) // 2 + 1
                        for part in (text[:half], text[half:]):
                            data = part.encode()
                            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                        self.wfile.write(b"0\r\n\r\n")
                        return None
                    return self._send(200, text, "text/plain")
                if method == "GET":
                    return self._send(200, fake.pods[(ns, name)])
                if method == "DELETE":
                    return self._send(200, fake.pods.pop((ns, name)))
                self._send(405, status_obj(405, "MethodNotAllowed", method))

            def _create_pod(self, ns: str, body: dict) -> None:
                """A fetch pod runs at once: its script over the local stand-in volume."""
                name = body["metadata"]["name"]
                pod = copy.deepcopy(body)
                pod["metadata"].update(namespace=ns, uid=f"uid-{name}", creationTimestamp=_now())
                c = pod["spec"]["containers"][0]
                claim = pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
                env = {e["name"]: e["value"] for e in c.get("env", [])}
                root = fake.volumes.get(claim)
                if root is None:
                    phase, out = "Failed", f"sh: cd: can't cd to {env['TRAINYARD_FETCH_ROOT']}\n"
                else:
                    env["TRAINYARD_FETCH_ROOT"] = str(root)
                    proc = subprocess.run(c["command"], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True)
                    phase, out = ("Succeeded" if proc.returncode == 0 else "Failed"), proc.stdout + proc.stderr
                pod["status"] = {"phase": phase}
                fake.pods[(ns, name)] = pod
                fake.logs[(ns, name)] = out
                self._send(201, pod)

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_DELETE(self) -> None:
                self._route("DELETE")

        return Handler


def api_client(url: str):
    from kubernetes import client

    cfg = client.Configuration(host=url)
    return client.ApiClient(cfg)
