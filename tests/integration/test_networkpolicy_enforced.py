"""NetworkPolicies are enforced on the local stack's node (the ``kube-router`` component), as on a user's cluster.

Real pods of the stack's tools image in namespaces ``kr-a`` and ``kr-b``: a server (``python3 -m
http.server``) in kr-a, a client in each namespace, probing TCP connections by pod IP with
``kubectl exec``. Without a controller every probe connects, so each test below fails without
kube-router: it waits for a connection to be refused (kube-router REJECTs, so the client sees
"connection refused"; a DROP would show as a timeout, also counted as blocked) and only then checks
what must still get through:

- an ingress policy admitting only namespace kr-a: kr-b's client is blocked, kr-a's still connects,
  and so does the host (kube-router admits traffic from the pod's own node, src-type LOCAL: Traefik,
  kube-proxy's NodePort and LoadBalancer DNAT for the host, the kubelet's probes);
- an egress policy allowing only DNS: the client still resolves cluster names (CoreDNS on the node
  IP) but cannot reach the server's port; adding a rule for the port opens it, and a port with no
  rule (S3 listening on the node IP) stays closed.

Each test removes its policies; the namespaces are deleted at the end.
"""

from __future__ import annotations

import socket
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import Kubectl, restricted_container, unavailable, wait_for

NS_A = "kr-a"
NS_B = "kr-b"
PORT = 8080
SYNC_TIMEOUT = 90.0  # a policy change is a full kube-router sync, triggered by the watch event

PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print("open")
except ConnectionRefusedError:
    print("refused")
except TimeoutError:
    print("timeout")
"""
RESOLVE = "import socket; print(socket.gethostbyname('kubernetes.default.svc.cluster.local'))"


def namespace_manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
    }


def tools_pod(name: str, namespace: str, image: str, labels: dict[str, str], command: list[str]) -> dict[str, Any]:
    container = restricted_container(name, image, command)
    container["imagePullPolicy"] = "Never"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "containers": [container],
        },
    }


def policy(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def delete_namespaces(kubectl: Kubectl) -> None:
    kubectl.run("delete", "namespace", NS_A, NS_B, "--ignore-not-found", "--wait=true", "--timeout=120s", check=False)


@pytest.fixture(scope="module")
def pods(kubectl: Kubectl, stack_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The server's and both clients' pod IPs, by name; namespaces deleted afterwards."""
    image = stack_env.get("MLSTACK_TOOLS_IMAGE")
    if not image:
        unavailable("stack.env lacks MLSTACK_TOOLS_IMAGE: is the images component up?")
    delete_namespaces(kubectl)  # what an interrupted run left
    kubectl.apply(namespace_manifest(NS_A), namespace_manifest(NS_B))
    sleeper = ["sleep", "3600"]
    kubectl.apply(
        tools_pod("server", NS_A, image, {"app": "server"}, ["python3", "-m", "http.server", str(PORT)]),
        tools_pod("client", NS_A, image, {"role": "client"}, sleeper),
        tools_pod("client", NS_B, image, {"role": "client"}, sleeper),
    )
    try:
        for namespace, name in ((NS_A, "server"), (NS_A, "client"), (NS_B, "client")):
            kubectl.run("-n", namespace, "wait", "--for=condition=Ready", f"pod/{name}", "--timeout=120s")
        ips = {
            "server": kubectl.get("pod", "server", NS_A)["status"]["podIP"],
            "client-a": kubectl.get("pod", "client", NS_A)["status"]["podIP"],
            "client-b": kubectl.get("pod", "client", NS_B)["status"]["podIP"],
        }
        wait_for("the server to listen", lambda: probe(kubectl, NS_A, ips["server"]) == "open", timeout=60)
        yield ips
    finally:
        delete_namespaces(kubectl)


def probe(kubectl: Kubectl, namespace: str, host: str, port: int = PORT) -> str:
    """ "open", "refused" or "timeout": a TCP connection from the client pod of ``namespace``."""
    result = kubectl.run("-n", namespace, "exec", "client", "--", "python3", "-c", PROBE, host, str(port), check=False)
    return result.stdout.strip() or f"exec failed: {result.stderr.strip()}"


def blocked(kubectl: Kubectl, namespace: str, host: str, port: int = PORT) -> str | None:
    outcome = probe(kubectl, namespace, host, port)
    return outcome if outcome in ("refused", "timeout") else None


def from_the_host(host: str, port: int = PORT) -> str:
    try:
        socket.create_connection((host, port), timeout=3).close()
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    return "open"


def test_an_ingress_policy_admits_only_its_namespace_and_the_node(kubectl: Kubectl, pods: dict[str, str]) -> None:
    server = pods["server"]
    assert probe(kubectl, NS_B, server) == "open", "without a policy another namespace reaches the server"
    only_kr_a = policy(
        "only-kr-a",
        NS_A,
        {
            "podSelector": {"matchLabels": {"app": "server"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NS_A}}}],
                    "ports": [{"protocol": "TCP", "port": PORT}],
                }
            ],
        },
    )
    kubectl.apply(only_kr_a)
    try:
        outcome = wait_for("kr-b's client to be blocked", lambda: blocked(kubectl, NS_B, server), SYNC_TIMEOUT)
        assert outcome in ("refused", "timeout")
        assert probe(kubectl, NS_A, server) == "open", "the namespace the policy admits still gets through"
        assert from_the_host(server) == "open", "the node (host processes on 10.89.0.1) still reaches the pod"
        assert blocked(kubectl, NS_B, server), "still blocked: the node's admission opened nothing for kr-b"
    finally:
        kubectl.run("-n", NS_A, "delete", "networkpolicy", "only-kr-a", "--ignore-not-found", check=False)
    wait_for("kr-b's client to get through again", lambda: probe(kubectl, NS_B, server) == "open", SYNC_TIMEOUT)


def test_an_egress_policy_allowing_only_dns_blocks_the_port_until_a_rule_opens_it(
    kubectl: Kubectl, pods: dict[str, str], stack_env: dict[str, str]
) -> None:
    server = pods["server"]
    s3 = urllib.parse.urlsplit(stack_env["S3_ENDPOINT_URL"])
    s3_host, s3_port = s3.hostname or "", s3.port or 80
    assert probe(kubectl, NS_A, server) == "open"
    assert probe(kubectl, NS_A, s3_host, s3_port) == "open", "without a policy the client reaches S3 on the node"
    dns = {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": {"role": "client"}},
        "policyTypes": ["Egress"],
        "egress": [dns],
    }
    kubectl.apply(policy("client-egress", NS_A, spec))
    try:
        outcome = wait_for(
            "the DNS-only egress to block the port", lambda: blocked(kubectl, NS_A, server), SYNC_TIMEOUT
        )
        assert outcome in ("refused", "timeout")
        resolved = kubectl.run("-n", NS_A, "exec", "client", "--", "python3", "-c", RESOLVE)
        assert resolved.stdout.strip() == "10.96.0.1", "DNS (CoreDNS on the node IP) is what the policy allows"
        assert probe(kubectl, NS_B, server) == "open", "the policy selects kr-a's client only"

        spec["egress"] = [dns, {"ports": [{"protocol": "TCP", "port": PORT}]}]
        kubectl.apply(policy("client-egress", NS_A, spec))
        wait_for("a port rule to open the egress", lambda: probe(kubectl, NS_A, server) == "open", SYNC_TIMEOUT)
        # A port with no rule stays closed, though something listens there: S3 on the node IP.
        assert blocked(kubectl, NS_A, s3_host, s3_port), f"{s3_host}:{s3_port} has no rule"
    finally:
        kubectl.run("-n", NS_A, "delete", "networkpolicy", "client-egress", "--ignore-not-found", check=False)
