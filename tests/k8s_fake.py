"""A small fake Kubernetes API server for the backend's tests (no cluster runs here).

It answers the real paths with the real JSON shapes (Job, Service, Pod, PodList, Status)
for the calls trainyard makes, records every request, and runs the fetch pod's shell
script against a local directory standing in for the PVC, so the whole round trip is real
except the scheduler. Like a namespace labelled pod-security.kubernetes.io/enforce:
restricted, it refuses Jobs and Pods whose pods break the Pod Security Standards
"restricted" profile (`restricted_violations`, written from the published rules).
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
SERVICES = re.compile(r"^/api/v1/namespaces/([^/]+)/services(?:/([^/]+))?$")

# Pod Security Standards, restricted profile (kubernetes.io/docs/concepts/security/pod-security-standards)
ALLOWED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports", "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}


def restricted_violations(pod_spec: dict) -> list[str]:
    """Every way a pod spec (camelCase) breaks the PSS "restricted" profile; [] if none."""
    out = []
    psc = pod_spec.get("securityContext") or {}
    containers = [*pod_spec.get("initContainers", []), *pod_spec.get("containers", []), *pod_spec.get("ephemeralContainers", [])]
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(flag):
            out.append(f"{flag}=true")
    for v in pod_spec.get("volumes", []):
        kinds = set(v) - {"name"}
        if not kinds <= ALLOWED_VOLUME_TYPES:
            out.append(f"volume {v['name']!r} uses {sorted(kinds - ALLOWED_VOLUME_TYPES)}")
    for sysctl in psc.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            out.append(f"unsafe sysctl {sysctl['name']}")
    if (psc.get("seLinuxOptions") or {}).keys() & {"user", "role"}:
        out.append("pod seLinuxOptions user/role set")
    if psc.get("runAsUser") == 0:
        out.append("pod runAsUser=0")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp == "Unconfined":
        out.append("pod seccompProfile Unconfined")
    for c in containers:
        sc, name = c.get("securityContext") or {}, c["name"]
        if sc.get("privileged"):
            out.append(f"container {name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"container {name}: allowPrivilegeEscalation != false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in caps.get("drop", []):
            out.append(f"container {name}: capabilities.drop lacks ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            out.append(f"container {name}: adds capabilities {sorted(set(caps['add']) - {'NET_BIND_SERVICE'})}")
        run_as_non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if run_as_non_root is not True:
            out.append(f"container {name}: runAsNonRoot != true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            out.append(f"container {name}: runAsUser=0")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"container {name}: seccompProfile {seccomp or 'unset'} (needs RuntimeDefault or Localhost)")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            out.append(f"container {name}: hostPort")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"container {name}: procMount {sc['procMount']}")
        if (sc.get("seLinuxOptions") or {}).keys() & {"user", "role"}:
            out.append(f"container {name}: seLinuxOptions user/role set")
        if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
            out.append(f"container {name}: appArmorProfile Unconfined")
    return out


def pod_specs(obj: dict) -> list[dict]:
    """The pod specs inside a manifest (Pod, Job, Deployment, ... ; CronJob's two levels)."""
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind == "Pod":
        return [spec]
    if kind == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    if "template" in spec:
        return [spec["template"]["spec"]]
    return []


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
        self.services: dict[tuple[str, str], dict] = {}
        self.conflict_once: set[str] = set()
        self.forbidden: set[str] = set()  # namespaces where RBAC says no
        self.jobs_until_outage: int | None = None  # after this many Job creates, the API answers 503
        self.services_forbidden = False  # RBAC without services (an old launcher Role)
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
                if m := SERVICES.match(url.path):
                    return self._services(method, m.group(1), m.group(2), body)
                self._send(404, status_obj(404, "NotFound", f"no route {url.path}"))

            def _jobs(self, method: str, ns: str, name: str | None, body: dict | None) -> None:
                if method == "POST":
                    name = body["metadata"]["name"]
                    if fake.jobs_until_outage is not None:
                        if fake.jobs_until_outage <= 0:
                            return self._send(503, status_obj(503, "ServiceUnavailable", "the server is currently unable to handle the request"))
                        fake.jobs_until_outage -= 1
                    if violations := [v for ps in pod_specs(body) for v in restricted_violations(ps)]:
                        return self._send(403, status_obj(403, "Forbidden", f'jobs.batch "{name}" is forbidden: violates PodSecurity "restricted:latest": {"; ".join(violations)}'))
                    if (ns, name) in fake.jobs or name in fake.conflict_once:
                        fake.conflict_once.discard(name)
                        return self._send(409, status_obj(409, "AlreadyExists", f'jobs.batch "{name}" already exists'))
                    job = copy.deepcopy(body)
                    job["metadata"].update(namespace=ns, uid=f"uid-{name}-{len(fake.requests)}", creationTimestamp=_now(), resourceVersion="1")
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

            def _services(self, method: str, ns: str, name: str | None, body: dict | None) -> None:
                if fake.services_forbidden:
                    return self._send(403, status_obj(403, "Forbidden", f'services is forbidden: User "alice" cannot {method.lower()} resource "services" in API group "" in the namespace "{ns}"'))
                if method == "POST":
                    name = body["metadata"]["name"]
                    if (ns, name) in fake.services:
                        return self._send(409, status_obj(409, "AlreadyExists", f'services "{name}" already exists'))
                    svc = copy.deepcopy(body)
                    svc["metadata"].update(namespace=ns, uid=f"uid-svc-{name}", creationTimestamp=_now())
                    fake.services[(ns, name)] = svc
                    return self._send(201, svc)
                if (ns, name) not in fake.services:
                    return self._send(404, status_obj(404, "NotFound", f'services "{name}" not found'))
                if method == "GET":
                    return self._send(200, fake.services[(ns, name)])
                if method == "DELETE":  # a Service's DELETE answers with the deleted object
                    return self._send(200, fake.services.pop((ns, name)))
                self._send(405, status_obj(405, "MethodNotAllowed", method))

            def _create_pod(self, ns: str, body: dict) -> None:
                """A fetch pod runs at once: its script over the local stand-in volume."""
                name = body["metadata"]["name"]
                if violations := restricted_violations(body["spec"]):
                    return self._send(403, status_obj(403, "Forbidden", f'pods "{name}" is forbidden: violates PodSecurity "restricted:latest": {"; ".join(violations)}'))
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
