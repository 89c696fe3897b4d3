"""k8s_secret: plain, sealed and existing Secrets, check mode, a diff without values, and its errors.

The pure functions are tested directly. The module itself runs as Ansible runs it (a real AnsibleModule,
a real kubeconfig loaded by the kubernetes client); only the two API classes it calls, ``CoreV1Api`` and
``CustomObjectsApi``, are replaced by :class:`InMemoryCluster`, an in-memory store of Secrets and
SealedSecrets. For the sealed backend the store also plays the sealed-secrets controller: it unseals what
the module sealed with the private key of the test certificate (real RSA-OAEP + AES-GCM, as the
controller does), and, like the controller, it leaves a Secret alone that it does not own and that is not
annotated ``sealedsecrets.bitnami.com/managed: "true"``.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from ansible_collections.mlstack.mlflow.plugins.module_utils._sealing import (
    CLUSTER_WIDE_ANNOTATION,
    NAMESPACE_WIDE_ANNOTATION,
    unseal_value,
)
from ansible_collections.mlstack.mlflow.plugins.modules import k8s_secret
from kubernetes import client
from kubernetes.client.rest import ApiException

VALUE = "s3cr3t-V@lue:/with#odd chars"  # distinctive, so a leak is found in any output
OTHER = "another-s3cr3t-V@lue"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# --- pure functions ---------------------------------------------------------------------------------


def test_encode_base64s_every_value_as_text():
    assert k8s_secret.encode({"a": "é", "port": 5432, "empty": ""}) == {"a": "w6k=", "port": "NTQzMg==", "empty": ""}


@pytest.mark.parametrize(
    ("current", "desired", "expected"),
    [
        (None, {"a": "1"}, ["a"]),
        ({"a": "1"}, {"a": "1"}, []),
        ({"a": "1"}, {"a": "2"}, ["a"]),
        ({"a": "1", "b": "2"}, {"a": "1"}, ["b"]),
        ({"b": "2"}, {"c": "3", "a": "1"}, ["a", "b", "c"]),
    ],
)
def test_changed_keys(current, desired, expected):
    assert k8s_secret.changed_keys(current, desired) == expected


def test_masked_names_keys_never_values():
    assert k8s_secret.masked({"b", "a"}, ["b"]) == {"a": "<hidden>", "b": "<changed>"}
    assert k8s_secret.masked(set()) == {}


def test_metadata_differs_only_on_wanted_entries():
    obj = client.V1Secret(metadata=client.V1ObjectMeta(labels={"app": "mlflow", "x": "1"}, annotations=None))
    assert not k8s_secret.metadata_differs(obj, {"app": "mlflow"}, {})
    assert k8s_secret.metadata_differs(obj, {"app": "other"}, {})
    assert k8s_secret.metadata_differs(obj, {}, {"note": "n"})


# --- an in-memory API server (and sealed-secrets controller) ------------------------------------------


def not_found(what: str) -> ApiException:
    return ApiException(status=404, reason=f"Not Found: {what}")


class InMemoryCluster:
    """The calls k8s_secret makes on CoreV1Api and CustomObjectsApi, on dicts; every write is logged."""

    def __init__(self, private_key: Any = None) -> None:
        self.secrets: dict[tuple[str, str], client.V1Secret] = {}
        self.sealed: dict[tuple[str, str], dict] = {}
        self.writes: list[str] = []
        self.private_key = private_key
        self.unseal_error = ""  # set: the controller reports it on the SealedSecret instead of unsealing
        self.version = 0

    def _next_version(self) -> str:
        self.version += 1
        return str(self.version)

    # CoreV1Api
    def read_namespaced_secret(self, name: str, namespace: str) -> client.V1Secret:
        if (namespace, name) not in self.secrets:
            raise not_found(f"secret {namespace}/{name}")
        return copy.deepcopy(self.secrets[(namespace, name)])

    def create_namespaced_secret(self, namespace: str, body: client.V1Secret) -> None:
        self.writes.append(f"create secret {body.metadata.name}")
        if (namespace, body.metadata.name) in self.secrets:
            raise ApiException(status=409, reason="AlreadyExists")
        self._store_secret(namespace, copy.deepcopy(body))

    def replace_namespaced_secret(self, name: str, namespace: str, body: client.V1Secret) -> None:
        self.writes.append(f"replace secret {name}")
        stored = self.read_namespaced_secret(name, namespace)
        if body.metadata.resource_version != stored.metadata.resource_version:
            raise ApiException(status=409, reason="Conflict")
        if body.type != stored.type:
            raise ApiException(status=422, reason="Invalid: type is immutable")
        self._store_secret(namespace, copy.deepcopy(body))

    def patch_namespaced_secret(self, name: str, namespace: str, patch: dict) -> None:
        self.writes.append(f"patch secret {name}")
        stored = self.secrets[(namespace, name)]
        stored.metadata.annotations = patch["metadata"]["annotations"]
        stored.metadata.resource_version = self._next_version()

    def delete_namespaced_secret(self, name: str, namespace: str) -> None:
        self.writes.append(f"delete secret {name}")
        if self.secrets.pop((namespace, name), None) is None:
            raise not_found(f"secret {namespace}/{name}")

    def _store_secret(self, namespace: str, body: client.V1Secret) -> None:
        body.metadata.namespace = namespace
        body.metadata.resource_version = self._next_version()
        self.secrets[(namespace, body.metadata.name)] = body

    # CustomObjectsApi (bitnami.com/v1alpha1 sealedsecrets only)
    def get_namespaced_custom_object(self, group, version, namespace, plural, name) -> dict:
        assert (group, version, plural) == ("bitnami.com", "v1alpha1", "sealedsecrets")
        if (namespace, name) not in self.sealed:
            raise not_found(f"sealedsecret {namespace}/{name}")
        return copy.deepcopy(self.sealed[(namespace, name)])

    def create_namespaced_custom_object(self, group, version, namespace, plural, body) -> None:
        self.writes.append(f"create sealedsecret {body['metadata']['name']}")
        assert (namespace, body["metadata"]["name"]) not in self.sealed
        self._store_sealed(namespace, copy.deepcopy(body))

    def replace_namespaced_custom_object(self, group, version, namespace, plural, name, body) -> None:
        self.writes.append(f"replace sealedsecret {name}")
        if body["metadata"].get("resourceVersion") != self.sealed[(namespace, name)]["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        self._store_sealed(namespace, copy.deepcopy(body))

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name) -> None:
        self.writes.append(f"delete sealedsecret {name}")
        del self.sealed[(namespace, name)]

    def _store_sealed(self, namespace: str, body: dict) -> None:
        body["metadata"]["resourceVersion"] = self._next_version()
        self.sealed[(namespace, body["metadata"]["name"])] = body
        if self.unseal_error:
            body["status"] = {"conditions": [{"type": "Synced", "status": "False", "message": self.unseal_error}]}
        else:
            self._controller(namespace, body)

    def _controller(self, namespace: str, sealed: dict) -> None:
        """What the sealed-secrets controller does with a new SealedSecret, in one step."""
        meta = sealed["metadata"]
        annotations = meta.get("annotations") or {}
        if annotations.get(CLUSTER_WIDE_ANNOTATION) == "true":
            label = b""
        elif annotations.get(NAMESPACE_WIDE_ANNOTATION) == "true":
            label = namespace.encode()
        else:
            label = f"{namespace}/{meta['name']}".encode()
        existing = self.secrets.get((namespace, meta["name"]))
        if existing is not None:
            owned = any(ref.kind == "SealedSecret" for ref in existing.metadata.owner_references or [])
            managed = (existing.metadata.annotations or {}).get("sealedsecrets.bitnami.com/managed") == "true"
            if not (owned or managed):
                sealed["status"] = {"conditions": [{"message": "Resource already exists and is not managed"}]}
                return
        template = sealed["spec"]["template"]
        data = {
            key: base64.b64encode(unseal_value(self.private_key, blob, label)).decode()
            for key, blob in sealed["spec"]["encryptedData"].items()
        }
        self._store_secret(
            namespace,
            client.V1Secret(
                metadata=client.V1ObjectMeta(
                    name=meta["name"],
                    labels=template["metadata"].get("labels"),
                    annotations=template["metadata"].get("annotations"),
                    owner_references=[
                        client.V1OwnerReference(
                            api_version="bitnami.com/v1alpha1", kind="SealedSecret", name=meta["name"], uid="uid-1"
                        )
                    ],
                ),
                type=template["type"],
                data=data,
            ),
        )

    def values(self, namespace: str, name: str) -> dict[str, str]:
        secret = self.secrets[(namespace, name)]
        return {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}


@pytest.fixture
def kubeconfig(tmp_path) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: test\n"
        "clusters: [{name: test, cluster: {server: 'https://127.0.0.1:6443'}}]\n"
        "users: [{name: test, user: {token: not-a-real-token}}]\n"
        "contexts: [{name: test, context: {cluster: test, user: test}}]\n"
    )
    return str(path)


@pytest.fixture
def cluster(monkeypatch, rsa_private_key) -> InMemoryCluster:
    fake = InMemoryCluster(rsa_private_key)
    monkeypatch.setattr(k8s_secret.client, "CoreV1Api", lambda api_client: fake)
    monkeypatch.setattr(k8s_secret.client, "CustomObjectsApi", lambda api_client: fake)
    return fake


@pytest.fixture
def secret(run_module, kubeconfig, cluster):
    """``secret(check_mode=..., diff=..., **args)``: run k8s_secret for mlflow/mlflow-db."""

    def run(check_mode: bool = False, diff: bool = True, **args: Any) -> dict[str, Any]:
        params = {"name": "mlflow-db", "namespace": "mlflow", "kubeconfig": kubeconfig, **args}
        return run_module(k8s_secret.main, params, check_mode=check_mode, diff=diff)

    return run


def assert_no_value_in(result: dict[str, Any], *values: str) -> None:
    for value in values:
        assert value not in result["_stdout"]
        assert b64(value) not in result["_stdout"]


# --- plain ----------------------------------------------------------------------------------------


def test_plain_creates_then_changes_nothing(secret, cluster):
    first = secret(data={"password": VALUE, "user": "mlflow"}, labels={"app": "mlflow"})
    assert first.get("failed") is not True, first
    assert first["changed"] is True
    assert first["keys"] == first["changed_keys"] == ["password", "user"]
    assert cluster.values("mlflow", "mlflow-db") == {"password": VALUE, "user": "mlflow"}
    assert cluster.secrets[("mlflow", "mlflow-db")].metadata.labels == {"app": "mlflow"}
    assert cluster.secrets[("mlflow", "mlflow-db")].type == "Opaque"
    assert first["diff"] == {
        "before": {},
        "after": {"data": {"password": "<changed>", "user": "<changed>"}, "type": "Opaque"},
    }
    assert_no_value_in(first, VALUE)

    writes = len(cluster.writes)
    again = secret(data={"password": VALUE, "user": "mlflow"}, labels={"app": "mlflow"})
    assert again["changed"] is False
    assert again["changed_keys"] == []
    assert len(cluster.writes) == writes


def test_plain_check_mode_reports_and_writes_nothing(secret, cluster):
    result = secret(check_mode=True, data={"password": VALUE})
    assert result["changed"] is True
    assert result["changed_keys"] == ["password"]
    assert cluster.writes == []
    assert cluster.secrets == {}


def test_plain_existing_secret_changed_value_keeps_foreign_metadata(secret, cluster):
    secret(data={"password": VALUE, "user": "mlflow"})
    stored = cluster.secrets[("mlflow", "mlflow-db")]
    stored.metadata.labels = {"team": "ml"}
    stored.metadata.annotations = {"owner": "someone"}

    preview = secret(check_mode=True, data={"password": OTHER, "user": "mlflow"})
    assert preview["changed"] is True
    assert preview["changed_keys"] == ["password"]
    assert cluster.values("mlflow", "mlflow-db")["password"] == VALUE  # check mode changed nothing

    result = secret(data={"password": OTHER, "user": "mlflow"}, labels={"app": "mlflow"})
    assert result["changed_keys"] == ["password"]
    assert result["diff"]["before"] == {"data": {"password": "<hidden>", "user": "<hidden>"}}
    assert result["diff"]["after"]["data"] == {"password": "<changed>", "user": "<hidden>"}
    assert_no_value_in(result, VALUE, OTHER)
    assert cluster.values("mlflow", "mlflow-db") == {"password": OTHER, "user": "mlflow"}
    meta = cluster.secrets[("mlflow", "mlflow-db")].metadata
    assert meta.labels == {"team": "ml", "app": "mlflow"}
    assert meta.annotations == {"owner": "someone"}


def test_plain_existing_secret_removed_key(secret, cluster):
    secret(data={"password": VALUE, "old": "x"})
    result = secret(data={"password": VALUE})
    assert result["changed"] is True
    assert result["changed_keys"] == ["old"]
    assert result["keys"] == ["password"]
    assert cluster.values("mlflow", "mlflow-db") == {"password": VALUE}


def test_plain_existing_secret_metadata_only_change(secret, cluster):
    secret(data={"password": VALUE})
    result = secret(data={"password": VALUE}, annotations={"note": "rotated"})
    assert result["changed"] is True
    assert result["changed_keys"] == []
    assert cluster.secrets[("mlflow", "mlflow-db")].metadata.annotations == {"note": "rotated"}


def test_plain_type_change_replaces_the_secret(secret, cluster):
    secret(data={"password": VALUE})
    result = secret(data={"password": VALUE}, type="kubernetes.io/basic-auth")
    assert result["changed"] is True
    assert cluster.writes[-2:] == ["delete secret mlflow-db", "create secret mlflow-db"]
    assert cluster.secrets[("mlflow", "mlflow-db")].type == "kubernetes.io/basic-auth"


def test_diff_is_left_out_without_diff_mode(secret):
    result = secret(diff=False, data={"password": VALUE})
    assert "diff" not in result
    assert_no_value_in(result, VALUE)


# --- sealed ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["strict", "namespace-wide", "cluster-wide"])
def test_sealed_creates_a_sealed_secret_the_controller_unseals(secret, cluster, cert_pem, scope):
    result = secret(backend="sealed", sealing_cert=cert_pem, sealing_scope=scope, data={"password": VALUE})
    assert result.get("failed") is not True, result
    assert result["changed"] is True
    assert result["changed_keys"] == ["password"]
    manifest = cluster.sealed[("mlflow", "mlflow-db")]
    assert manifest["kind"] == "SealedSecret"
    assert VALUE not in str(manifest) and b64(VALUE) not in str(manifest)
    assert cluster.values("mlflow", "mlflow-db") == {"password": VALUE}
    assert_no_value_in(result, VALUE)

    writes = len(cluster.writes)
    again = secret(backend="sealed", sealing_cert=cert_pem, sealing_scope=scope, data={"password": VALUE})
    assert again["changed"] is False
    assert len(cluster.writes) == writes  # no re-seal: the unsealed Secret already holds the value


def test_sealed_changed_value_is_resealed(secret, cluster, cert_pem):
    secret(backend="sealed", sealing_cert=cert_pem, data={"password": VALUE, "user": "mlflow"})
    result = secret(backend="sealed", sealing_cert=cert_pem, data={"password": OTHER, "user": "mlflow"})
    assert result["changed_keys"] == ["password"]
    assert cluster.writes[-1] == "replace sealedsecret mlflow-db"
    assert cluster.values("mlflow", "mlflow-db") == {"password": OTHER, "user": "mlflow"}
    assert_no_value_in(result, VALUE, OTHER)


def test_sealed_check_mode_writes_nothing(secret, cluster, cert_pem):
    result = secret(check_mode=True, backend="sealed", sealing_cert=cert_pem, data={"password": VALUE})
    assert result["changed"] is True
    assert cluster.writes == []
    assert cluster.sealed == {} and cluster.secrets == {}


def test_sealed_takes_over_an_existing_plain_secret(secret, cluster, cert_pem):
    secret(data={"password": VALUE})
    result = secret(backend="sealed", sealing_cert=cert_pem, data={"password": VALUE})
    # Same values, but not owned by a SealedSecret yet: it is sealed, and marked so the controller may replace it.
    assert result["changed"] is True
    assert result["changed_keys"] == []
    assert cluster.writes[-2:] == ["patch secret mlflow-db", "create sealedsecret mlflow-db"]
    owners = cluster.secrets[("mlflow", "mlflow-db")].metadata.owner_references
    assert [(ref.kind, ref.name) for ref in owners] == [("SealedSecret", "mlflow-db")]


def test_sealed_fails_when_the_controller_does_not_unseal(secret, cluster, cert_pem):
    cluster.unseal_error = "no key could decrypt secret (password)"
    result = secret(backend="sealed", sealing_cert=cert_pem, wait_timeout=0, data={"password": VALUE})
    assert result["failed"] is True
    assert result["msg"].startswith("the sealed-secrets controller did not unseal mlflow/mlflow-db within 0s")
    assert "no key could decrypt secret (password)" in result["msg"]
    assert_no_value_in(result, VALUE)


# --- absent ---------------------------------------------------------------------------------------


def test_absent_deletes_secret_and_sealed_secret(secret, cluster, cert_pem):
    secret(backend="sealed", sealing_cert=cert_pem, data={"password": VALUE})
    preview = secret(check_mode=True, state="absent")
    assert preview["changed"] is True
    assert ("mlflow", "mlflow-db") in cluster.secrets and ("mlflow", "mlflow-db") in cluster.sealed

    result = secret(state="absent")
    assert result["changed"] is True
    assert result["changed_keys"] == ["password"]
    assert cluster.secrets == {} and cluster.sealed == {}
    assert secret(state="absent")["changed"] is False


# --- errors ---------------------------------------------------------------------------------------


def test_sealed_without_certificate_is_refused(secret, cluster):
    result = secret(backend="sealed", data={"password": VALUE})
    assert result["failed"] is True
    assert result["msg"] == "sealing_cert is required with backend=sealed"
    assert cluster.writes == []


def test_sealed_with_an_unusable_certificate_is_refused(secret, cluster, cert_factory, rsa_private_key):
    import datetime

    expired = cert_factory(rsa_private_key, datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1))
    for cert, why in (("not a pem", "expected a PEM"), (expired.decode(), "expired")):
        result = secret(backend="sealed", sealing_cert=cert, data={"password": VALUE})
        assert result["failed"] is True
        assert result["msg"].startswith("sealing_cert is not a usable certificate or public key: ")
        assert why in result["msg"]
    assert cluster.writes == []


def test_sealed_with_an_invalid_key_names_the_key(secret, cluster, cert_pem):
    result = secret(backend="sealed", sealing_cert=cert_pem, data={"pass/word": VALUE})
    assert result["failed"] is True
    assert result["msg"] == (
        "cannot seal Secret mlflow/mlflow-db: "
        "invalid Secret data key 'pass/word': letters, digits, '-', '_' and '.' only"
    )
    assert "Traceback" not in result["_stdout"]
    assert_no_value_in(result, VALUE)
    assert cluster.writes == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"backend": "vault"}, "value of backend must be one of: plain, sealed, got: vault"),
        ({"sealing_scope": "global"}, "value of sealing_scope must be one of: strict, namespace-wide, cluster-wide"),
        ({"state": "gone"}, "value of state must be one of: present, absent"),
        ({"wait_timeout": "soon"}, "wait_timeout"),
    ],
)
def test_bad_arguments_are_refused(secret, cluster, args, message):
    result = secret(data={"password": VALUE}, **args)
    assert result["failed"] is True
    assert message in result["msg"]
    assert_no_value_in(result, VALUE)
    assert cluster.writes == []


def test_missing_required_arguments_are_named(run_module, kubeconfig, cluster):
    result = run_module(k8s_secret.main, {"name": "mlflow-db", "kubeconfig": kubeconfig, "data": {"k": VALUE}})
    assert result["failed"] is True
    assert result["msg"] == "missing required arguments: namespace"
    assert_no_value_in(result, VALUE)
    assert cluster.writes == []


def test_api_errors_name_the_secret_not_its_values(secret, cluster, monkeypatch):
    def forbidden(name, namespace):
        raise ApiException(status=403, reason="Forbidden")

    monkeypatch.setattr(cluster, "read_namespaced_secret", forbidden)
    result = secret(data={"password": VALUE})
    assert result["failed"] is True
    assert result["msg"] == "Kubernetes API error 403 Forbidden for Secret mlflow/mlflow-db"
    assert_no_value_in(result, VALUE)


# --- several Secrets in one run ----------------------------------------------------------------------


def test_secrets_writes_each_then_changes_nothing_with_a_diff_per_secret(run_module, kubeconfig, cluster):
    def run(check_mode: bool = False, **values: str) -> dict[str, Any]:
        params = {
            "namespace": "mlflow",
            "kubeconfig": kubeconfig,
            "labels": {"app": "mlflow"},
            "secrets": [
                {"name": "mlflow-db", "data": {"password": values.get("db", VALUE)}},
                {
                    "name": "mlflow-tls",
                    "type": "kubernetes.io/tls",
                    "data": {"tls.crt": "certificate-text", "tls.key": OTHER},
                },
            ],
        }
        return run_module(k8s_secret.main, params, check_mode=check_mode, diff=True)

    first = run()
    assert first.get("failed") is not True, first
    assert first["changed"] is True
    assert first["secrets"]["mlflow-db"]["changed_keys"] == ["password"]
    assert first["secrets"]["mlflow-tls"]["keys"] == ["tls.crt", "tls.key"]
    assert cluster.secrets[("mlflow", "mlflow-tls")].type == "kubernetes.io/tls"
    assert cluster.secrets[("mlflow", "mlflow-tls")].metadata.labels == {"app": "mlflow"}
    assert cluster.values("mlflow", "mlflow-db") == {"password": VALUE}
    assert [d["before_header"] for d in first["diff"]] == ["Secret mlflow/mlflow-db", "Secret mlflow/mlflow-tls"]
    assert_no_value_in(first, VALUE, OTHER)

    writes = len(cluster.writes)
    again = run()
    assert again["changed"] is False
    assert len(cluster.writes) == writes

    # One changed value: the run and that Secret change, in check mode nothing is written.
    checked = run(check_mode=True, db="new-" + VALUE)
    assert checked["changed"] is True
    assert checked["secrets"]["mlflow-db"]["changed"] is True
    assert checked["secrets"]["mlflow-tls"]["changed"] is False
    assert len(cluster.writes) == writes
    assert_no_value_in(checked, VALUE, "new-" + VALUE, OTHER)


def test_secrets_and_name_exclude_each_other_and_one_is_needed(run_module, kubeconfig, cluster):
    both = run_module(
        k8s_secret.main,
        {
            "namespace": "mlflow",
            "kubeconfig": kubeconfig,
            "name": "a",
            "secrets": [{"name": "b", "data": {"k": VALUE}}],
        },
    )
    assert both["failed"] is True
    assert "mutually exclusive: name|secrets" in both["msg"]
    neither = run_module(k8s_secret.main, {"namespace": "mlflow", "kubeconfig": kubeconfig})
    assert neither["failed"] is True
    assert "one of the following is required: name, secrets" in neither["msg"]
    assert cluster.writes == []


def test_an_api_error_in_secrets_names_that_secret(run_module, kubeconfig, cluster, monkeypatch):
    real = cluster.read_namespaced_secret

    def forbidden(name, namespace):
        if name == "second":
            raise ApiException(status=403, reason="Forbidden")
        return real(name, namespace)

    monkeypatch.setattr(cluster, "read_namespaced_secret", forbidden)
    secrets = [{"name": "first", "data": {"k": VALUE}}, {"name": "second", "data": {"k": OTHER}}]
    result = run_module(k8s_secret.main, {"namespace": "mlflow", "kubeconfig": kubeconfig, "secrets": secrets})
    assert result["failed"] is True
    assert result["msg"] == "Kubernetes API error 403 Forbidden for Secret mlflow/second"
    assert_no_value_in(result, VALUE, OTHER)
