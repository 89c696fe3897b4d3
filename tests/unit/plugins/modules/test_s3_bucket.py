"""s3_bucket without an S3 store: arguments, prefixes, the marker, check mode and the error messages.

The module runs in-process with a real boto3 client (built by its own ``make_client``); botocore's Stubber
answers that client's requests with S3 response shapes and checks each request's parameters. An
unexpected request fails the test (the Stubber raises, the module reports it).
"""

from __future__ import annotations

import socket

import pytest
from ansible_collections.mlstack.mlflow.plugins.module_utils._s3 import make_client
from ansible_collections.mlstack.mlflow.plugins.modules import s3_bucket
from botocore.stub import Stubber

SECRET_KEY = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
BASE = {
    "name": "mlflow",
    "endpoint_url": "https://s3.example.com",
    "access_key": "AKIAIOSFODNN7EXAMPLE",
    "secret_key": SECRET_KEY,
}
MARKER = s3_bucket.MARKER


@pytest.fixture
def stubbed(monkeypatch):
    """The Stubber of the client the module will use."""
    client = make_client({**BASE, "region": "us-east-1", "validate_certs": True, "ca_bundle": None})
    stubber = Stubber(client)
    monkeypatch.setattr(s3_bucket, "make_client", lambda params: client)
    with stubber:
        yield stubber
        stubber.assert_no_pending_responses()


@pytest.fixture
def bucket(run_module):
    def run(check_mode: bool = False, **args):
        result = run_module(s3_bucket.main, {**BASE, **args}, check_mode=check_mode)
        assert SECRET_KEY not in result["_stdout"]
        return {key: value for key, value in result.items() if key not in ("invocation", "_stdout")}

    return run


def exists(stubber: Stubber, present: bool = True) -> None:
    if present:
        stubber.add_response("head_bucket", {}, {"Bucket": "mlflow"})
    else:
        stubber.add_client_error("head_bucket", "404", "Not Found", 404, expected_params={"Bucket": "mlflow"})


def listing(stubber: Stubber, keys: list[str], **params) -> None:
    contents = [{"Key": key, "Size": 1} for key in keys]
    stubber.add_response(
        "list_objects_v2",
        {"Contents": contents, "KeyCount": len(keys), "IsTruncated": False},
        {"Bucket": "mlflow", **params},
    )


def marker(stubber: Stubber, present: bool) -> None:
    if present:
        stubber.add_response("head_object", {"ContentLength": 1}, {"Bucket": "mlflow", "Key": MARKER})
    else:
        stubber.add_client_error(
            "head_object", "404", "Not Found", 404, expected_params={"Bucket": "mlflow", "Key": MARKER}
        )


def deleted(stubber: Stubber, keys: list[str]) -> None:
    stubber.add_response(
        "delete_objects",
        {"Deleted": [{"Key": key} for key in keys]},
        {"Bucket": "mlflow", "Delete": {"Objects": [{"Key": key} for key in keys], "Quiet": True}},
    )


# --- present ----------------------------------------------------------------------------------------


def created(stubber: Stubber) -> None:
    stubber.add_response("create_bucket", {}, {"Bucket": "mlflow"})
    stubber.add_response(
        "put_object", {}, {"Bucket": "mlflow", "Key": MARKER, "Body": b"created by the mlstack.mlflow collection\n"}
    )


def test_present_creates_a_marked_bucket(bucket, stubbed):
    exists(stubbed, False)
    created(stubbed)
    assert bucket() == {"changed": True, "existed": False}


def test_present_leaves_an_existing_bucket_unmarked(bucket, stubbed):
    exists(stubbed)
    assert bucket() == {"changed": False, "existed": True}


def test_present_check_mode_creates_nothing(bucket, stubbed):
    exists(stubbed, False)
    assert bucket(check_mode=True) == {"changed": True, "existed": False}


# --- absent -----------------------------------------------------------------------------------------


def test_absent_missing_bucket_is_no_change(bucket, stubbed):
    exists(stubbed, False)
    assert bucket(state="absent") == {"changed": False, "existed": False, "deleted_objects": 0, "bucket_deleted": False}


def test_absent_purge_deletes_objects_then_the_bucket(bucket, stubbed):
    exists(stubbed)
    listing(stubbed, ["a/1", "b/2", MARKER], Prefix="")
    deleted(stubbed, ["a/1", "b/2", MARKER])
    stubbed.add_response("delete_bucket", {}, {"Bucket": "mlflow"})
    assert bucket(state="absent", purge=True) == {
        "changed": True,
        "existed": True,
        "deleted_objects": 3,
        "bucket_deleted": True,
    }


def test_absent_check_mode_deletes_nothing(bucket, stubbed):
    exists(stubbed)
    assert bucket(state="absent", purge=True, check_mode=True)["bucket_deleted"] is True


# --- prefixes and the marker --------------------------------------------------------------------------


def test_prefixes_are_normalised_and_the_marked_bucket_goes(bucket, stubbed):
    exists(stubbed)
    listing(stubbed, ["runs/1", "runs/2"], Prefix="runs/")
    deleted(stubbed, ["runs/1", "runs/2"])
    listing(stubbed, ["backups/x/manifest.json"], Prefix="backups/x/")
    deleted(stubbed, ["backups/x/manifest.json"])
    marker(stubbed, True)
    listing(stubbed, [MARKER], MaxKeys=1000)
    deleted(stubbed, [MARKER])
    stubbed.add_response("delete_bucket", {}, {"Bucket": "mlflow"})
    # "/runs/" and "runs" name the same prefix, "backups/x" gets its slash, "/" and "" name nothing.
    result = bucket(state="absent", prefixes=["/runs/", "backups/x", "/", ""])
    assert result == {
        "changed": True,
        "existed": True,
        "deleted_objects": 3,
        "bucket_deleted": True,
        "kept_because": "",
    }


def test_prefix_is_not_a_key_prefix_match(bucket, stubbed):
    """``runs`` deletes under ``runs/`` only: ``runs-old/x`` is someone else's, so the bucket stays."""
    exists(stubbed)
    listing(stubbed, [], Prefix="runs/")
    marker(stubbed, True)
    listing(stubbed, [MARKER, "runs-old/x"], MaxKeys=1000)
    result = bucket(state="absent", prefixes=["runs"])
    assert result == {
        "changed": False,
        "existed": True,
        "deleted_objects": 0,
        "bucket_deleted": False,
        "kept_because": "it holds other objects, such as 'runs-old/x'",
    }


def test_an_unmarked_bucket_stays(bucket, stubbed):
    exists(stubbed)
    listing(stubbed, ["runs/1"], Prefix="runs/")
    deleted(stubbed, ["runs/1"])
    marker(stubbed, False)
    listing(stubbed, [], MaxKeys=1000)
    result = bucket(state="absent", prefixes=["runs"])
    assert result["bucket_deleted"] is False
    assert result["changed"] is True
    assert result["deleted_objects"] == 1
    assert result["kept_because"] == "the collection did not create it (no marker object)"


def test_prefixes_check_mode_counts_and_deletes_nothing(bucket, stubbed):
    exists(stubbed)
    listing(stubbed, ["runs/1", "runs/2"], Prefix="runs/")
    marker(stubbed, True)
    listing(stubbed, [MARKER, "runs/1", "runs/2"], MaxKeys=1000)
    result = bucket(state="absent", prefixes=["runs"], check_mode=True)
    assert result == {
        "changed": True,
        "existed": True,
        "deleted_objects": 2,
        "bucket_deleted": True,
        "kept_because": "",
    }


def test_prefixes_on_a_missing_bucket(bucket, stubbed):
    exists(stubbed, False)
    assert bucket(state="absent", prefixes=["runs"])["changed"] is False


# --- errors -----------------------------------------------------------------------------------------


def test_s3_refusal_names_bucket_and_endpoint(bucket, stubbed):
    stubbed.add_client_error("head_bucket", "403", "Forbidden", 403)
    result = bucket()
    assert result["failed"] is True
    assert result["msg"] == "S3 refused the request for bucket 'mlflow' at https://s3.example.com: 403 Forbidden"


def test_a_non_empty_bucket_is_not_deleted_without_purge(bucket, stubbed):
    exists(stubbed)
    stubbed.add_client_error("delete_bucket", "BucketNotEmpty", "The bucket you tried to delete is not empty", 409)
    result = bucket(state="absent")
    assert result["failed"] is True
    assert result["msg"] == (
        "S3 refused the request for bucket 'mlflow' at https://s3.example.com: "
        "BucketNotEmpty The bucket you tried to delete is not empty"
    )


def test_unexpected_errors_on_the_marker_surface(bucket, stubbed):
    exists(stubbed)
    listing(stubbed, [], Prefix="runs/")
    stubbed.add_client_error("head_object", "AccessDenied", "Access Denied", 403)
    result = bucket(state="absent", prefixes=["runs"])
    assert result["failed"] is True
    assert "for bucket 'mlflow'" in result["msg"] and "AccessDenied" in result["msg"]


def test_unreachable_endpoint_names_bucket_and_endpoint(bucket):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the module connects
    endpoint = f"http://127.0.0.1:{port}"
    result = bucket(endpoint_url=endpoint)
    assert result["failed"] is True
    assert result["msg"].startswith(f"S3 request for bucket 'mlflow' at {endpoint} failed: Could not connect")


@pytest.mark.parametrize("endpoint", ["s3.example.com", "ftp://s3.example.com", "https://"])
def test_endpoint_must_be_an_http_url(bucket, endpoint):
    result = bucket(endpoint_url=endpoint)
    assert result["failed"] is True
    assert result["msg"] == f"endpoint_url {endpoint!r} is not an http(s) URL such as https://s3.example.com"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"state": "gone"}, "value of state must be one of: present, absent, got: gone"),
        ({"purge": "maybe"}, "purge"),
        ({"secret_key": None, "name": "mlflow"}, None),
    ],
)
def test_bad_arguments_are_refused(run_module, args, message):
    params = {**BASE, **args}
    if message is None:  # a required argument left out
        params.pop("secret_key")
        message = "missing required arguments: secret_key"
    result = run_module(s3_bucket.main, params)
    assert result["failed"] is True
    assert message in result["msg"]
    assert SECRET_KEY not in result["_stdout"]
