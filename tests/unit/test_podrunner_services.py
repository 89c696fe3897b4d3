"""Service planning (addresses, ports, endpoints) and a real proxied connection over loopback."""

from __future__ import annotations

import http.server
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

from mlstack_local.podrunner.common import read_json  # noqa: E402
from mlstack_local.podrunner.ipam import POD_PREFIX, POD_RANGE, SERVICE_PREFIX, SERVICE_RANGE, AddressPool  # noqa: E402
from mlstack_local.podrunner.services import PodEndpoint, ServiceProxy, plan  # noqa: E402


def service(name: str, port: int, target: int | str, namespace: str = "ns1") -> dict:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": port, "targetPort": target}]},
    }


def endpoint(ip: str, ready: bool = True, app: str = "web", namespace: str = "ns1") -> PodEndpoint:
    return PodEndpoint(namespace, {"app": app, "pod-template-hash": "x"}, ip, ready, {"http": 8080})


def test_plan_selects_ready_matching_pods() -> None:
    pool = AddressPool(None, SERVICE_PREFIX, SERVICE_RANGE)
    services = [
        service("web", 80, "http"),
        service("api", 5000, 5001),
        {"metadata": {"name": "ext", "namespace": "ns1"}, "spec": {"type": "ExternalName", "selector": {"a": "b"}}},
        {"metadata": {"name": "manual", "namespace": "ns1"}, "spec": {"ports": [{"port": 1}]}},
    ]
    endpoints = [
        endpoint("127.0.1.3"),
        endpoint("127.0.1.2"),
        endpoint("127.0.1.4", ready=False),
        endpoint("127.0.1.5", namespace="other"),
        endpoint("127.0.1.6", app="api"),
    ]
    listeners, published = plan(services, endpoints, pool)
    assert published == {
        "ns1/web": {"address": "127.0.2.1", "ports": {"http": 80}},
        "ns1/api": {"address": "127.0.2.2", "ports": {"http": 5000}},
    }
    assert listeners[("127.0.2.1", 80)] == [("127.0.1.2", 8080), ("127.0.1.3", 8080)]
    assert listeners[("127.0.2.2", 5000)] == [("127.0.1.6", 5001)]
    listeners, published = plan(services[1:], endpoints, pool)  # web deleted: its address is freed
    assert list(published) == ["ns1/api"]
    assert pool.allocate("ns1/new") == "127.0.2.1"


def test_pod_pool_persists(tmp_path: Path) -> None:
    pool = AddressPool(tmp_path / "ips.json", POD_PREFIX, POD_RANGE)
    assert pool.allocate("a") == "127.0.1.2"
    assert pool.allocate("b") == "127.0.1.3"
    pool.release("a")
    again = AddressPool(tmp_path / "ips.json", POD_PREFIX, POD_RANGE)
    assert again.get("b") == "127.0.1.3"
    assert again.allocate("c") == "127.0.1.2"


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = f"hello from {self.server.server_address[0]}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_proxy_round_robin_and_stable_address(tmp_path: Path) -> None:
    servers = []
    for ip in ("127.0.1.200", "127.0.1.201"):
        httpd = http.server.ThreadingHTTPServer((ip, 0), Hello)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
    port = servers[0].server_address[1]
    servers[1].shutdown()
    servers[1].server_close()
    servers[1] = http.server.ThreadingHTTPServer(("127.0.1.201", port), Hello)
    threading.Thread(target=servers[1].serve_forever, daemon=True).start()
    (tmp_path / "services.json").write_text('{"ns1/web": {"address": "127.0.2.77", "ports": {}}}')
    proxy = ServiceProxy(tmp_path)
    proxy.start()
    try:
        proxy.set_services([service("web", 18080, port)])
        proxy.set_endpoints([endpoint("127.0.1.200"), endpoint("127.0.1.201")])
        assert read_json(tmp_path / "services.json", {})["ns1/web"] == {
            "address": "127.0.2.77",
            "ports": {"http": 18080},
        }
        seen = set()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(seen) < 2:
            try:
                with urllib.request.urlopen("http://127.0.2.77:18080/", timeout=2) as response:  # noqa: S310
                    seen.add(response.read().decode())
            except OSError:
                time.sleep(0.1)
        assert seen == {"hello from 127.0.1.200", "hello from 127.0.1.201"}
    finally:
        proxy.stop()
        for httpd in servers:
            httpd.shutdown()
