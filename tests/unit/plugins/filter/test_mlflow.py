"""The collection's filters: what they render must parse back to exactly what went in."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.mlstack.mlflow.plugins.filter.mlflow import (
    FilterModule,
    dockerconfigjson,
    mlflow_db_uri,
    mlflow_egress_rules,
    mlflow_object_refs,
    mlflow_resource_problems,
    mlflow_route_problems,
    mlflow_secret_key_problems,
    mlflow_service_hosts,
    mlflow_service_ref,
    sealed_secret,
)
from ansible_collections.mlstack.mlflow.plugins.module_utils._sealing import (
    NAMESPACE_WIDE_ANNOTATION,
    unseal_value,
)

try:
    from sqlalchemy.engine import make_url
except ImportError:  # the controller venv does not need SQLAlchemy; urllib is the fallback
    make_url = None

NASTY = [
    "plain",
    "p@ss",
    "a:b",
    "a/b",
    "100%",
    "%25",
    "frag#ment",
    "q?x=1&y=2",
    "it's",
    'say "hi"',
    "semi;colon",
    "with space",
    "plus+sign",
    "back\\slash",
    "[brackets]",
    "päss wörd ✓ 🔑",
    "@:/%#?'\"; all together",
]


def parse_db_uri(uri: str) -> dict:
    """Decode a URI as SQLAlchemy does when it can, else with urllib."""
    if make_url is not None:
        url = make_url(uri)
        return {
            "driver": url.drivername,
            "user": url.username,
            "password": url.password,
            "host": url.host,
            "port": url.port,
            "database": url.database,
            "query": {k: v if isinstance(v, str) else list(v) for k, v in url.query.items()},
        }
    parts = urlsplit(uri)
    return {
        "driver": parts.scheme,
        "user": unquote(parts.username) if parts.username is not None else None,
        "password": unquote(parts.password) if parts.password is not None else None,
        "host": parts.hostname,
        "port": parts.port,
        "database": unquote(parts.path[1:]),
        "query": {k: v[0] if len(v) == 1 else v for k, v in parse_qs(parts.query).items()},
    }


# --- mlflow_db_uri --------------------------------------------------------------------------------


@pytest.mark.parametrize("secret", NASTY)
def test_db_uri_round_trips_passwords(secret):
    uri = mlflow_db_uri("mlflow", secret, "db.example.com", 5432, "mlflow")
    parsed = parse_db_uri(uri)
    assert parsed["password"] == secret
    assert parsed["user"] == "mlflow"
    assert parsed["host"] == "db.example.com"
    assert parsed["port"] == 5432
    assert parsed["database"] == "mlflow"
    # Nothing that could end the userinfo early is left raw.
    userinfo = uri.split("://", 1)[1].rsplit("@", 1)[0]
    for char in "@/#? '\";":
        assert char not in userinfo
    assert userinfo.count(":") == 1


@pytest.mark.parametrize("user", NASTY)
def test_db_uri_round_trips_users(user):
    parsed = parse_db_uri(mlflow_db_uri(user, "pw", "localhost", "5432", "mlflow"))
    assert (parsed["user"], parsed["password"]) == (user, "pw")


@pytest.mark.parametrize("database", ["mlflow", "mlflow_auth", "my db", "a/b", "odd?#name", "dätenbank"])
def test_db_uri_round_trips_database(database):
    assert parse_db_uri(mlflow_db_uri("u", "p", "h", 5432, database))["database"] == database


def test_db_uri_default_driver_is_psycopg2():
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which the image does not ship.
    assert mlflow_db_uri("u", "p", "h", 5432, "d") == "postgresql+psycopg2://u:p@h:5432/d"


def test_db_uri_custom_driver():
    assert mlflow_db_uri("u", "p", "h", 3306, "d", driver="mysql+pymysql").startswith("mysql+pymysql://")


def test_db_uri_without_password():
    assert mlflow_db_uri("u", None, "h", 5432, "d") == "postgresql+psycopg2://u@h:5432/d"
    assert mlflow_db_uri("u", "", "h", 5432, "d") == "postgresql+psycopg2://u@h:5432/d"
    assert parse_db_uri(mlflow_db_uri("u", None, "h", 5432, "d"))["password"] is None


@pytest.mark.parametrize("host", ["::1", "[::1]", "fd00:10:96::a"])
def test_db_uri_brackets_ipv6(host):
    uri = mlflow_db_uri("u", "p:w", host, 5432, "d")
    bare = host.strip("[]")
    assert f"@[{bare}]:5432/" in uri
    parsed = parse_db_uri(uri)
    assert (parsed["host"], parsed["port"], parsed["password"]) == (bare, 5432, "p:w")


@pytest.mark.parametrize("host", ["10.0.0.5", "postgres.db.svc.cluster.local", "localhost", "pg_primary"])
def test_db_uri_plain_hosts(host):
    assert parse_db_uri(mlflow_db_uri("u", "p", host, 5432, "d"))["host"] == host


def test_db_uri_params():
    uri = mlflow_db_uri("u", "p", "h", 5432, "d", params={"sslmode": "require", "application_name": "ml flow&x"})
    assert uri.endswith("?sslmode=require&application_name=ml+flow%26x")
    assert parse_db_uri(uri)["query"] == {"sslmode": "require", "application_name": "ml flow&x"}


@pytest.mark.parametrize("port", [0, 65536, -1, "abc", "", None, True, 5432.5, "54 32"])
def test_db_uri_rejects_bad_ports(port):
    with pytest.raises(AnsibleFilterError, match="port"):
        mlflow_db_uri("u", "p", "h", port, "d")


@pytest.mark.parametrize("port", [1, 65535, "5432", " 5432 "])
def test_db_uri_accepts_ports(port):
    assert parse_db_uri(mlflow_db_uri("u", "p", "h", port, "d"))["port"] == int(str(port).strip())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", "p", "h", 5432, "d"), "user"),
        ((None, "p", "h", 5432, "d"), "user"),
        (("u", "p", "", 5432, "d"), "host"),
        (("u", "p", "h/x", 5432, "d"), "host"),
        (("u", "p", "user@h", 5432, "d"), "host"),
        (("u", "p", "[not-ipv6]", 5432, "d"), "host"),
        (("u", "p", "h", 5432, ""), "database"),
        (("u", ["p"], "h", 5432, "d"), "password"),
    ],
)
def test_db_uri_rejects_bad_input(args, message):
    with pytest.raises(AnsibleFilterError, match=message):
        mlflow_db_uri(*args)


@pytest.mark.parametrize("driver", ["", "postgresql://", "postgresql+", "1pg", "pg sql"])
def test_db_uri_rejects_bad_driver(driver):
    with pytest.raises(AnsibleFilterError, match="driver"):
        mlflow_db_uri("u", "p", "h", 5432, "d", driver=driver)


def test_db_uri_rejects_bad_params():
    with pytest.raises(AnsibleFilterError, match="params"):
        mlflow_db_uri("u", "p", "h", 5432, "d", params={"sslmode": None})
    with pytest.raises(AnsibleFilterError, match="params"):
        mlflow_db_uri("u", "p", "h", 5432, "d", params=["sslmode=require"])  # type: ignore[arg-type]


# --- dockerconfigjson -----------------------------------------------------------------------------


@pytest.mark.parametrize("password", ["token", "@:/%#?'\"; ✓"])
def test_dockerconfigjson_structure(password):
    rendered = dockerconfigjson("harbor.example.com", "robot$mlflow", password)
    config = json.loads(rendered)
    assert list(config) == ["auths"]
    entry = config["auths"]["harbor.example.com"]
    assert entry["username"] == "robot$mlflow"
    assert entry["password"] == password
    assert base64.b64decode(entry["auth"], validate=True).decode() == f"robot$mlflow:{password}"
    assert "email" not in entry


def test_dockerconfigjson_is_compact_and_sorted():
    rendered = dockerconfigjson("r.example", "u", "p")
    assert rendered == '{"auths":{"r.example":{"auth":"dTpw","password":"p","username":"u"}}}'
    assert rendered == dockerconfigjson("r.example", "u", "p")


@pytest.mark.parametrize(
    ("registry", "server"),
    [
        ("https://harbor.example.com", "harbor.example.com"),
        ("http://localhost:5000/", "localhost:5000"),
        ("HTTPS://Harbor.Example.com:8443", "Harbor.Example.com:8443"),
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        ("registry.example.com/project", "registry.example.com/project"),
    ],
)
def test_dockerconfigjson_strips_scheme(registry, server):
    assert list(json.loads(dockerconfigjson(registry, "u", "p"))["auths"]) == [server]


def test_dockerconfigjson_email():
    entry = json.loads(dockerconfigjson("r", "u", "p", email="ops@example.com"))["auths"]["r"]
    assert entry["email"] == "ops@example.com"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", "u", "p"), "registry"),
        (("https://", "u", "p"), "registry"),
        (("bad host", "u", "p"), "registry"),
        (("r", "", "p"), "username"),
        (("r", "a:b", "p"), "username"),
        (("r", "u", ""), "password"),
        (("r", "u", None), "password"),
    ],
)
def test_dockerconfigjson_rejects_bad_input(args, message):
    with pytest.raises(AnsibleFilterError, match=message):
        dockerconfigjson(*args)


# --- sealed_secret --------------------------------------------------------------------------------


def test_sealed_secret_filter_round_trip(rsa_private_key, cert_pem):
    data = {"password": "@:/%#?'\"; ✓", "username": "mlflow"}
    manifest = sealed_secret(data, cert_pem, "mlflow", "mlflow-db", labels={"app": "mlflow"})
    assert manifest["kind"] == "SealedSecret"
    assert manifest["metadata"]["labels"] == {"app": "mlflow"}
    assert manifest["spec"]["template"]["type"] == "Opaque"
    opened = {
        k: unseal_value(rsa_private_key, v, b"mlflow/mlflow-db").decode()
        for k, v in manifest["spec"]["encryptedData"].items()
    }
    assert opened == data


def test_sealed_secret_filter_namespace_wide_dockerconfig(rsa_private_key, cert_pem):
    config = dockerconfigjson("harbor.example.com", "robot$mlflow", "t0k:en")
    manifest = sealed_secret(
        {".dockerconfigjson": config},
        cert_pem,
        "mlflow",
        "harbor-pull",
        scope="namespace-wide",
        secret_type="kubernetes.io/dockerconfigjson",  # noqa: S106 - a Secret type
    )
    assert manifest["metadata"]["annotations"] == {NAMESPACE_WIDE_ANNOTATION: "true"}
    assert manifest["spec"]["template"]["type"] == "kubernetes.io/dockerconfigjson"
    blob = manifest["spec"]["encryptedData"][".dockerconfigjson"]
    assert unseal_value(rsa_private_key, blob, b"mlflow").decode() == config


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cert_pem": "garbage"}, "PEM"),
        ({"data": {}}, "empty"),
        ({"data": "x"}, "dict"),
        ({"data": {"k": None}}, "string"),
        ({"scope": "global"}, "scope"),
        ({"namespace": ""}, "namespace"),
        ({"labels": ["x"]}, "labels"),
    ],
)
def test_sealed_secret_filter_errors(cert_pem, kwargs, message):
    args = {"data": {"k": "v"}, "cert_pem": cert_pem, "namespace": "mlflow", "name": "s", **kwargs}
    with pytest.raises(AnsibleFilterError, match=message):
        sealed_secret(**args)


# --- mlflow_service_hosts -------------------------------------------------------------------------

NODES = [
    {
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": "10.89.0.1"},
                {"type": "InternalIP", "address": "fd00::1"},
                {"type": "Hostname", "address": "node-a"},
            ]
        }
    },
    {"status": {"addresses": [{"type": "ExternalIP", "address": "203.0.113.7"}]}},
]


def service(kind: str, port: int = 5000, node_port: int | None = 31234, ingress: list | None = None) -> dict:
    ports = {"name": "http", "port": port, **({"nodePort": node_port} if node_port else {})}
    return {"spec": {"type": kind, "ports": [ports]}, "status": {"loadBalancer": {"ingress": ingress or []}}}


def test_service_hosts_of_a_cluster_ip_service_are_none():
    assert mlflow_service_hosts(service("ClusterIP", node_port=None), NODES) == []


def test_service_hosts_of_a_node_port_are_every_node_address_with_the_port():
    assert mlflow_service_hosts(service("NodePort"), NODES) == [
        "10.89.0.1:31234",
        "203.0.113.7:31234",
        "[fd00::1]:31234",
    ]


def test_service_hosts_of_a_load_balancer_add_its_addresses_with_the_service_port():
    lb = service("LoadBalancer", ingress=[{"ip": "10.89.0.200"}, {"hostname": "lb.example.com"}])
    hosts = mlflow_service_hosts(lb, NODES)
    # Only port 80 is implied by a bare host; the load balancer's node ports are not the way in.
    assert hosts == ["10.89.0.200:5000", "lb.example.com:5000"]


def test_service_hosts_of_a_load_balancer_on_port_80_include_the_bare_address():
    lb = service("LoadBalancer", port=80, node_port=None, ingress=[{"ip": "10.89.0.200"}])
    assert mlflow_service_hosts(lb, []) == ["10.89.0.200", "10.89.0.200:80"]


def test_service_hosts_of_a_load_balancer_without_an_address_yet_are_none():
    assert mlflow_service_hosts(service("LoadBalancer"), NODES) == []


def test_service_hosts_refuse_a_non_dict():
    with pytest.raises(AnsibleFilterError, match="Service"):
        mlflow_service_hosts("mlflow")


# --- mlflow_resource_problems ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "resources",
    [
        None,
        {},
        {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
        {"requests": {"cpu": 1, "memory": "1e9"}, "limits": {"cpu": 1.5, "memory": "1G"}},
        {"limits": {"cpu": "1500m", "ephemeral-storage": "1Ei", "nvidia.com/gpu": 1}},
        {"requests": {"cpu": "1500m"}, "limits": {"cpu": "1.5"}},
        {"requests": {"memory": ".5Gi"}, "claims": [{"name": "gpu"}]},
    ],
)
def test_resources_the_api_server_accepts_have_no_problem(resources):
    assert mlflow_resource_problems(resources, "mlflow_resources") == []


@pytest.mark.parametrize(
    ("resources", "problem"),
    [
        ("1Gi", "mlflow_resources must be a mapping with requests and limits, got str"),
        ({"cpu": "1"}, "mlflow_resources: unknown key 'cpu' (only requests, limits and claims)"),
        ({"limits": "2"}, "mlflow_resources: limits must be a mapping of resource names to quantities"),
        ({"limits": {"cpu": "two"}}, "mlflow_resources: limits.cpu 'two' is not a Kubernetes quantity"),
        ({"limits": {"memory": "1Gb"}}, "mlflow_resources: limits.memory '1Gb' is not a Kubernetes quantity"),
        ({"limits": {"memory": "-1Gi"}}, "mlflow_resources: limits.memory '-1Gi' is not a Kubernetes quantity"),
        ({"limits": {"memory": "1Gi\n"}}, "mlflow_resources: limits.memory '1Gi\\n' is not a Kubernetes quantity"),
        ({"limits": {"cpu": True}}, "mlflow_resources: limits.cpu True is not a Kubernetes quantity"),
        ({"requests": {"bad name": "1"}}, "mlflow_resources: requests names 'bad name', which is not a resource name"),
        ({"claims": ["gpu"]}, "mlflow_resources: claims must be a list of {name: ...} entries"),
        (
            {"requests": {"memory": "4Gi"}, "limits": {"memory": "1Gi"}},
            "mlflow_resources: requests.memory 4Gi is more than limits.memory 1Gi",
        ),
        ({"requests": {"cpu": "2001m"}, "limits": {"cpu": 2}}, "mlflow_resources: requests.cpu 2001m is more than"),
    ],
)
def test_resources_the_api_server_refuses_are_named(resources, problem):
    problems = mlflow_resource_problems(resources, "mlflow_resources")
    assert len(problems) == 1
    assert problems[0].startswith(problem)


# --- mlflow_route_problems ------------------------------------------------------------------------


def route(*conditions: tuple[str, str]) -> dict:
    parent_ref = {"name": "mlstack", "namespace": "traefik", "sectionName": "websecure"}
    return {
        "status": {
            "parents": [
                {
                    "parentRef": parent_ref,
                    "conditions": [
                        {"type": kind, "status": status, "reason": "R", "message": "m"} for kind, status in conditions
                    ],
                }
            ]
        }
    }


def test_route_accepted_with_resolved_refs_has_no_problem():
    assert mlflow_route_problems(route(("Accepted", "True"), ("ResolvedRefs", "True"))) == []


def test_route_problems_name_the_parent_and_the_failing_condition():
    problems = mlflow_route_problems(route(("Accepted", "False"), ("ResolvedRefs", "True")))
    assert problems == ["traefik/mlstack/websecure: Accepted=False (R) m"]


def test_route_problems_of_a_route_no_gateway_reported_on():
    assert mlflow_route_problems({"spec": {}}) == ["no parent Gateway has reported on the HTTPRoute yet"]
    assert mlflow_route_problems({}) == ["the HTTPRoute does not exist"]
    assert mlflow_route_problems(route(("Accepted", "True"))) == [
        "traefik/mlstack/websecure: no ResolvedRefs condition yet"
    ]


# --- plugin entry point ---------------------------------------------------------------------------


def test_filter_module_exposes_filters():
    filters = FilterModule().filters()
    assert set(filters) == {
        "mlflow_db_uri",
        "dockerconfigjson",
        "sealed_secret",
        "maintenance_result",
        "image_version",
        "mlflow_service_hosts",
        "mlflow_route_problems",
        "mlflow_resource_problems",
        "mlflow_service_ref",
        "mlflow_egress_rules",
        "mlflow_object_refs",
        "mlflow_secret_key_problems",
    }
    assert all(callable(f) for f in filters.values())


# --- mlflow_service_ref, mlflow_egress_rules -------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "ref"),
    [
        ("postgresql-official.postgres.svc.cluster.local", {"name": "postgresql-official", "namespace": "postgres"}),
        ("seaweedfs-s3.seaweedfs.svc", {"name": "seaweedfs-s3", "namespace": "seaweedfs"}),
        ("db.data", {"name": "db", "namespace": "data"}),
        ("db.data.svc.example.internal.", {"name": "db", "namespace": "data"}),
        ("10.89.0.1", {}),
        ("auth.example.com", {}),
        ("localhost", {}),
        ("db.data\n", {}),
    ],
)
def test_service_ref_reads_cluster_dns_names(host: str, ref: dict[str, str]) -> None:
    assert mlflow_service_ref(host) == ref


def _service(name: str, namespace: str, port: int, target: int | str, selector: dict[str, str] | None = None) -> dict:
    spec = {"ports": [{"name": "tcp", "port": port, "targetPort": target}]}
    if selector:
        spec["selector"] = selector
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


def _slice(service: str, namespace: str, port: int, addresses: list[str], pod: bool) -> dict:
    endpoints = [
        {"addresses": [address], **({"targetRef": {"kind": "Pod", "name": f"p{i}"}} if pod else {})}
        for i, address in enumerate(addresses)
    ]
    return {
        "metadata": {"namespace": namespace, "labels": {"kubernetes.io/service-name": service}},
        "ports": [{"name": "tcp", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    }


def test_egress_to_a_selectorless_service_names_its_endpoint_addresses_and_ports() -> None:
    """The local stack: Service port 5432 in front of PostgreSQL on the node's 35432."""
    services = [_service("pg", "postgres", 5432, 35432)]
    slices = [_slice("pg", "postgres", 35432, ["10.89.0.1"], pod=False)]
    rules = mlflow_egress_rules([{"host": "pg.postgres.svc.cluster.local", "port": 5432}], services, slices)
    assert rules == [{"to": [{"ipBlock": {"cidr": "10.89.0.1/32"}}], "ports": [{"port": 35432, "protocol": "TCP"}]}]


def test_egress_to_a_service_of_pods_names_their_namespace_and_selector() -> None:
    services = [_service("s3", "store", 8333, "http", selector={"app": "s3"})]
    slices = [_slice("s3", "store", 8333, ["10.244.0.7", "10.244.0.8"], pod=True)]
    rules = mlflow_egress_rules([{"host": "s3.store", "port": "8333"}], services, slices)
    assert rules == [
        {
            "to": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "store"}},
                    "podSelector": {"matchLabels": {"app": "s3"}},
                }
            ],
            "ports": [{"port": 8333, "protocol": "TCP"}],
        }
    ]


def test_egress_to_an_address_or_an_outside_name() -> None:
    rules = mlflow_egress_rules(
        [{"host": "10.89.0.1", "port": 38180}, {"host": "auth.example.com", "port": 443}, {"host": "::1", "port": 5432}]
    )
    assert rules == [
        {"to": [{"ipBlock": {"cidr": "10.89.0.1/32"}}], "ports": [{"port": 38180, "protocol": "TCP"}]},
        {"ports": [{"port": 443, "protocol": "TCP"}]},
        {"to": [{"ipBlock": {"cidr": "::1/128"}}], "ports": [{"port": 5432, "protocol": "TCP"}]},
    ]


def test_egress_to_a_missing_or_empty_service_falls_back_to_its_port() -> None:
    """A Service not found (or without endpoints yet) cannot be narrowed: its port on any address."""
    target = [{"host": "pg.postgres.svc", "port": 5432}]
    assert mlflow_egress_rules(target) == [{"ports": [{"port": 5432, "protocol": "TCP"}]}]
    services = [_service("pg", "postgres", 5432, "pg")]
    assert mlflow_egress_rules(target, services, []) == [{"ports": [{"port": 5432, "protocol": "TCP"}]}]
    other_port = [{"host": "pg.postgres.svc", "port": 6432}]
    assert mlflow_egress_rules(other_port, services, []) == [{"ports": [{"port": 6432, "protocol": "TCP"}]}]


def test_egress_rules_are_unique_and_refuse_bad_targets() -> None:
    twice = [{"host": "10.0.0.1", "port": 1}, {"host": "10.0.0.1", "port": 1}]
    assert len(mlflow_egress_rules(twice)) == 1
    with pytest.raises(AnsibleFilterError, match="needs a host and a port"):
        mlflow_egress_rules([{"host": "x"}])
    with pytest.raises(AnsibleFilterError):
        mlflow_egress_rules([{"host": "x", "port": 70000}])


def test_object_refs_carry_kind_and_name_only() -> None:
    secret = {"metadata": {"name": "mlflow-db"}, "data": {"DB_PASSWORD": "c2VjcmV0"}}
    results = [
        {"item": {"api_version": "v1", "kind": "Secret"}, "resources": [secret]},
        {"item": {"api_version": "v1", "kind": "ConfigMap"}, "resources": []},
        {"item": {"api_version": "v1", "kind": "Service"}, "skipped": True},
    ]
    assert mlflow_object_refs(results) == [{"api_version": "v1", "kind": "Secret", "name": "mlflow-db"}]
    with pytest.raises(AnsibleFilterError):
        mlflow_object_refs({"results": []})


# --- mlflow_secret_key_problems -------------------------------------------------------------------


def test_secret_key_problems_name_missing_secrets_and_keys_and_never_a_value() -> None:
    results = {
        "secret/mlflow-db": {"resources": [{"data": {"password": "c2VjcmV0", "MLFLOW_BACKEND_STORE_URI": "eA=="}}]},
        "secret/mlflow-session": {"api_found": True, "resources": []},
        "secret/mlflow-s3": {"resources": [{"data": {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}}]},
        "secret/mlflow-empty": {"resources": [{"metadata": {"name": "mlflow-empty"}}]},
        "other": {"resources": [{"data": {"y": "eQ=="}}]},
    }
    required = {
        "mlflow-db": ["password", "MLFLOW_BACKEND_STORE_URI", "MLFLOW_AUTH_DB_URI", "host"],
        "mlflow-session": ["SECRET_KEY"],
        "mlflow-s3": ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"],
        "mlflow-empty": ["x"],
        "mlflow-unread": ["y"],
    }
    problems = mlflow_secret_key_problems(results, required, "ns")
    assert problems == [
        "ns/mlflow-db lacks the key(s) MLFLOW_AUTH_DB_URI, host",
        "ns/mlflow-session does not exist",
        "ns/mlflow-empty lacks the key(s) x",
        "ns/mlflow-unread does not exist",
    ]
    assert "c2VjcmV0" not in " ".join(problems)
    assert mlflow_secret_key_problems(results, {"mlflow-s3": ["AWS_ACCESS_KEY_ID"]}, "ns") == []
    assert mlflow_secret_key_problems({"s-other": results["other"]}, {"other": ["y"]}, "ns", prefix="s-") == []
