"""Unit tests of the local stack's node, network, control plane and PKI (no processes, no network)."""

from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

from mlstack_local import kube, network, node, platform  # noqa: E402
from mlstack_local.config import NODE_IP, POD_SUBNET, SERVICE_CIDR  # noqa: E402
from mlstack_local.pki import Pki  # noqa: E402


def test_egress_rule_drops_everything_from_the_bridge_subnet_to_elsewhere() -> None:
    rule = network.egress_rule()
    assert rule[0] == "FORWARD"
    assert rule[rule.index("-s") + 1] == POD_SUBNET
    negated = rule.index("!")
    assert rule[negated + 1 : negated + 3] == ["-d", POD_SUBNET]
    assert rule[-2:] == ["-j", "DROP"]


def test_node_ip_is_the_first_address_of_the_pod_subnet() -> None:
    subnet = ipaddress.ip_network(POD_SUBNET)
    assert ipaddress.ip_address(NODE_IP) == next(subnet.hosts())
    assert subnet.is_private and not subnet.overlaps(ipaddress.ip_network(SERVICE_CIDR))


def test_sysctls_are_restored_only_where_they_differ(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    values = {"a.b": tmp_path / "a_b", "c.d": tmp_path / "c_d"}
    values["a.b"].write_text("1\n")
    values["c.d"].write_text("0\n")
    monkeypatch.setattr(network, "sysctl_path", lambda key: values[key])
    assert network.read_sysctls(("a.b", "c.d")) == {"a.b": "1", "c.d": "0"}
    values["a.b"].write_text("7\n")
    assert network.restore_sysctls({"a.b": "1", "c.d": "0"}) == ["a.b"]
    assert values["a.b"].read_text().strip() == "1"


def test_the_stack_ports_are_reserved_after_what_the_machine_already_reserves() -> None:
    ports = network.stack_ports()
    assert 35432 in ports and 38333 in ports and 38180 in ports and 443 not in ports
    assert network.reserved_ports_value("", [35432, 38333]) == "35432,38333"
    assert network.reserved_ports_value("8080,9000-9002\n", [35432]) == "8080,9000-9002,35432"
    assert network.reserved_ports("8080,9000-9002,35432\n") == {8080, 9000, 9001, 9002, 35432}
    assert network.reserved_ports("\n") == set()
    # What `up` records and `down` restores includes the reservation.
    assert network.RESERVED_PORTS in network.SYSCTLS


def test_a_stack_port_held_by_another_socket_is_named_with_its_holder() -> None:
    ss = "\n".join(
        [
            "LISTEN     0 128 0.0.0.0:2024      0.0.0.0:*",
            'CLOSE-WAIT 1 0   127.0.0.1:35432   127.0.0.1:36443 users:(("python3",pid=41,fd=7))',
            "TIME-WAIT  0 0   127.0.0.1:38333   127.0.0.1:36443",
            "ESTAB      0 0   192.168.1.5:38180 192.168.1.9:443",
            "LISTEN     0 128 10.89.0.1:38180   0.0.0.0:*",
            "LISTEN     0 128 [::]:38290        [::]:*",
        ]
    )
    holders = network.port_holders(ss, [35432, 38333, 38180, 38290, 2024 + 1])
    assert holders == [
        'port 35432: CLOSE-WAIT 127.0.0.1:35432 -> 127.0.0.1:36443 (users:(("python3",pid=41,fd=7)))',
        "port 38180: LISTEN 10.89.0.1:38180 -> 0.0.0.0:* (no process visible)",
        "port 38290: LISTEN [::]:38290 -> [::]:* (no process visible)",
    ]


def test_the_kubelet_authenticates_and_authorizes_callers(tmp_path: Path) -> None:
    config = node.kubelet_config(tmp_path, tmp_path / "c.sock", tmp_path / "pki")
    assert config["authentication"] == {
        "anonymous": {"enabled": False},
        "webhook": {"enabled": True},
        "x509": {"clientCAFile": str(tmp_path / "pki" / "ca.crt")},
    }
    assert config["authorization"] == {"mode": "Webhook"}
    assert config["readOnlyPort"] == 0
    assert config["address"] == NODE_IP and config["healthzBindAddress"] == "127.0.0.1"
    assert config["clusterDNS"] == [NODE_IP]
    assert config["failCgroupV1"] is False and config["cgroupDriver"] == "cgroupfs"
    # Nothing of the kubelet's own under the system's default paths.
    for key in ("podLogsDir", "volumePluginDir"):
        assert str(config[key]).startswith(str(tmp_path))


def test_containerd_keeps_to_its_own_directories(tmp_path: Path) -> None:
    text = node.containerd_config(tmp_path, Path("/run/mlstack-x/containerd.sock"))
    assert 'address = "/run/mlstack-x/containerd.sock"' in text
    assert f'root = "{tmp_path}/containerd/root"' in text
    assert "restrict_oom_score_adj = true" in text
    assert "netns_mounts_under_state_dir = true" in text
    assert '"io.containerd.internal.v1.opt"' in text  # disabled: it would write /opt/containerd
    assert 'bin_dir = "/usr/lib/cni"' in text
    assert 'sandbox_image = "localhost/mlstack/pause:3.10"' in text


def test_registry_hosts_allow_pull_over_plain_http_only() -> None:
    hosts = node.registry_hosts_toml("127.0.0.1:35000")
    assert 'server = "http://127.0.0.1:35000"' in hosts
    assert '"push"' not in hosts


def test_cni_bridge_is_the_node_bridge_and_leaves_room_for_load_balancers(tmp_path: Path) -> None:
    config = json.loads(node.cni_conflist(tmp_path))
    bridge = config["plugins"][0]
    assert bridge["bridge"] == "mlstack0" and bridge["isGateway"] and not bridge["ipMasq"]
    (ipam_range,) = bridge["ipam"]["ranges"][0]
    assert ipam_range["gateway"] == NODE_IP
    assert ipaddress.ip_address(ipam_range["rangeEnd"]) < ipaddress.ip_address("10.89.0.200")
    assert bridge["ipam"]["dataDir"].startswith(str(tmp_path))


def test_kube_proxy_serves_node_ports_on_the_node_ip_only_and_changes_no_sysctl(tmp_path: Path) -> None:
    config = node.kube_proxy_config(tmp_path / "kubeconfig")
    assert config["nodePortAddresses"] == [POD_SUBNET]
    assert all(value in (0, "0s") for value in config["conntrack"].values())
    assert config["healthzBindAddress"].startswith("127.0.0.1:")


def test_coredns_has_no_forwarder(tmp_path: Path) -> None:
    text = node.corefile(Path("/state/coredns.kubeconfig"))
    assert f"bind {NODE_IP}" in text
    assert "forward" not in text
    assert "plugin/forward" not in node.COREDNS_MAIN
    assert "kubernetes cluster.local" in text


def test_mounts_under_finds_only_our_prefixes(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "1 0 0:1 / / rw - ext4 /dev/vda rw\n"
        "2 1 0:2 / /work/x/.local/node/a rw - tmpfs tmpfs rw\n"
        "3 2 0:3 / /work/x/.local/node/a/b rw - overlay overlay rw\n"
        "4 1 0:4 / /work/x/.local/nodeother rw - tmpfs tmpfs rw\n"
    )
    found = node.mounts_under([Path("/work/x/.local/node")], mountinfo)
    assert found == ["/work/x/.local/node/a/b", "/work/x/.local/node/a"]


def test_cluster_objects_grant_coredns_read_only() -> None:
    objects = node.cluster_objects()
    role = next(o for o in objects if o["kind"] == "ClusterRole" and o["metadata"]["name"] == "mlstack:coredns")
    assert {verb for rule in role["rules"] for verb in rule["verbs"]} == {"list", "watch"}
    storage = next(o for o in objects if o["kind"] == "StorageClass")
    assert storage["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"


def test_host_services_map_default_names_to_the_node_ip() -> None:
    service, slice_ = platform.host_service_manifests("postgres", "postgresql-official", "postgresql", 5432, 35432)
    assert "selector" not in service["spec"]
    assert service["spec"]["ports"][0]["port"] == 5432
    assert slice_["metadata"]["labels"]["kubernetes.io/service-name"] == "postgresql-official"
    assert slice_["endpoints"][0]["addresses"] == [NODE_IP]
    assert slice_["ports"] == [{"name": "postgresql", "port": 35432, "protocol": "TCP"}]


def test_apiserver_listens_on_and_advertises_the_node_ip(tmp_path: Path) -> None:
    args = kube.apiserver_args(Pki(tmp_path))
    assert f"--bind-address={NODE_IP}" in args and f"--advertise-address={NODE_IP}" in args
    assert "--anonymous-auth=false" in args
    assert "--authorization-mode=Node,RBAC" in args
    assert kube.first_service_ip() == "10.96.0.1"


def test_pki_issues_each_identity_once_with_the_right_usages(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    cert_path, key_path = pki.issue(kube.CERTS["kubelet"])
    assert oct(key_path.stat().st_mode & 0o777) == "0o600"
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:mlstack-node"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:nodes"
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    first = cert_path.read_bytes()
    pki.issue(kube.CERTS["kubelet"])
    assert cert_path.read_bytes() == first, "an identity is kept across restarts"
    server = x509.load_pem_x509_certificate(pki.issue(kube.CERTS["apiserver"])[0].read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address(NODE_IP) in sans.get_values_for_type(x509.IPAddress)
    assert "kubernetes.default.svc.cluster.local" in sans.get_values_for_type(x509.DNSName)
    config = json.loads(pki.kubeconfig(kube.CERTS["admin"], kube.server_url()))
    assert config["clusters"][0]["cluster"]["server"] == f"https://{NODE_IP}:36443"


def test_a_stale_ready_status_does_not_count() -> None:
    ready = {
        "status": {"conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-12-01T08:00:00Z"}]}
    }
    assert node.node_ready(ready)
    assert not node.node_ready(ready, since=1796112001.0)  # one second after that heartbeat
    assert node.node_ready(ready, since=1796112000.0)
    not_ready = {
        "status": {"conditions": [{"type": "Ready", "status": "False", "lastHeartbeatTime": "2026-12-01T08:00:00Z"}]}
    }
    assert not node.node_ready(not_ready)


def test_kube_chains_reads_declared_chains_only() -> None:
    saved = "*filter\n:INPUT ACCEPT [0:0]\n:KUBE-FIREWALL - [0:0]\n-A INPUT -j KUBE-FIREWALL\nCOMMIT\n"
    assert node.kube_chains(saved) == ["KUBE-FIREWALL"]


def test_the_tracking_uri_is_the_services_cluster_ip() -> None:
    from mlstack_local.endpoint import service_url

    service = {"metadata": {"name": "mlflow"}, "spec": {"clusterIP": "10.96.0.20", "ports": [{"port": 5000}]}}
    assert service_url(service) == "http://10.96.0.20:5000"
