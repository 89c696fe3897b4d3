"""Path mapping and bind-address rewriting: the stand-ins for mount and network namespaces."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

from mlstack_local.podrunner.expansion import expand, mapping_for  # noqa: E402
from mlstack_local.podrunner.rewrite import Mount, PathMapper, bind_to_pod_ip, rewrite  # noqa: E402

MAPPER = PathMapper(
    [
        Mount("/data", Path("/host/data")),
        Mount("/data/sub", Path("/host/sub")),
        Mount("/etc/mlflow/", Path("/host/cfg")),
    ]
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/data", "/host/data"),
        ("/data/", "/host/data/"),
        ("/data/x.db", "/host/data/x.db"),
        ("/data/sub/y", "/host/sub/y"),  # the longest mount path wins
        ("/data/subx", "/host/data/subx"),  # ...but only at a path boundary
        ("/database", "/database"),
        ("/etc/mlflow", "/host/cfg"),  # a trailing slash on mountPath does not matter
        ("--config=/etc/mlflow/a.ini", "--config=/host/cfg/a.ini"),
        ("cat /etc/mlflow/a.ini > /data/out; echo '/data'", "cat /host/cfg/a.ini > /host/data/out; echo '/host/data'"),
        ("http://example/data/x", "http://example/data/x"),
        ("relative/data", "relative/data"),
        ("PATH=/bin:/data/bin", "PATH=/bin:/host/data/bin"),
        ("sqlite:////data/mlflow.db", "sqlite:////host/data/mlflow.db"),
        ("file:///data/artifacts", "file:///host/data/artifacts"),
        ("s3://bucket/data/x", "s3://bucket/data/x"),
    ],
)
def test_path_mapping(text: str, expected: str) -> None:
    assert MAPPER.map(text) == expected


def test_host_dir_only_for_covered_paths() -> None:
    assert MAPPER.host_dir("/data/sub") == "/host/sub"
    assert MAPPER.host_dir("/tmp") is None
    assert PathMapper([]).map("/anything") == "/anything"
    assert PathMapper([Mount("/", Path("/x"))]).map("/etc") == "/etc"  # "/" cannot be emulated


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0.0", "127.0.1.7"),
        ("--host=0.0.0.0", "--host=127.0.1.7"),
        ("0.0.0.0:8080", "127.0.1.7:8080"),
        ("--bind 0.0.0.0:5000 --workers 2", "--bind 127.0.1.7:5000 --workers 2"),
        ("::", "127.0.1.7"),
        ("[::]:80", "127.0.1.7:80"),
        ("0.0.0.0/0", "0.0.0.0/0"),  # a CIDR is not a bind address
        ("10.0.0.0", "10.0.0.0"),
        ("a::b", "a::b"),
    ],
)
def test_bind_rewrite(text: str, expected: str) -> None:
    assert bind_to_pod_ip(text, "127.0.1.7") == expected


def test_rewrite_applies_both() -> None:
    assert rewrite("--root=/data --host=0.0.0.0", MAPPER, "127.0.1.9") == "--root=/host/data --host=127.0.1.9"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "alpha"),
        ("x-$(A)-$(B)", "x-alpha-beta"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("$$", "$"),
        ("$(A", "$(A"),
        ("cost $5", "cost $5"),
        ("trailing $", "trailing $"),
        ("$(A)$(A)", "alphaalpha"),
    ],
)
def test_expansion_matches_kubelet(text: str, expected: str) -> None:
    assert expand(text, mapping_for({"A": "alpha"}, {"B": "beta"})) == expected
