"""The local stack's oauth2-proxy image: build command, tag, cache key (no network, no build)."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

from mlstack_local import oauth2_proxy  # noqa: E402
from mlstack_local.config import REPO_ROOT, Paths  # noqa: E402


def test_the_binary_comes_from_the_go_module_proxy_with_its_version_stamped() -> None:
    argv = oauth2_proxy.install_argv("v7.15.6")
    assert argv[:2] == ["go", "install"]
    assert argv[-1] == "github.com/oauth2-proxy/oauth2-proxy/v7@v7.15.6"
    assert "-X github.com/oauth2-proxy/oauth2-proxy/v7/pkg/version.VERSION=v7.15.6" in argv[argv.index("-ldflags") + 1]


def test_the_binary_is_cached_by_version(tmp_path: Path) -> None:
    paths = Paths(state=tmp_path / "state", cache=tmp_path / "cache")
    assert oauth2_proxy.binary_dir(paths, "v7.15.6") == paths.bin / "oauth2-proxy-v7.15.6"


def test_the_key_covers_the_containerfile_the_binary_and_the_base() -> None:
    key = oauth2_proxy.image_key(b"FROM x", "digest", "base:1")
    assert key == oauth2_proxy.image_key(b"FROM x", "digest", "base:1")
    assert key != oauth2_proxy.image_key(b"FROM y", "digest", "base:1")
    assert key != oauth2_proxy.image_key(b"FROM x", "other", "base:1")
    assert key != oauth2_proxy.image_key(b"FROM x", "digest", "base:2")
    assert key != oauth2_proxy.image_key(b"FROM x", "digest", "base:1", version="v7.15.7")


def test_the_tag_is_the_collections_default_image() -> None:
    defaults = yaml.safe_load((REPO_ROOT / "roles" / "oauth2_proxy" / "defaults" / "main.yml").read_text())
    expected = defaults["mlflow_oauth2_proxy_image"].replace("{{ harbor_registry }}", "127.0.0.1:35000")
    assert oauth2_proxy.image_ref("127.0.0.1:35000", "{{ harbor_project }}") == expected


def test_the_containerfile_runs_as_a_numeric_non_root_user_on_the_given_base() -> None:
    text = oauth2_proxy.CONTAINERFILE.read_text()
    assert "ARG BASE_IMAGE=" in text and "FROM ${BASE_IMAGE}" in text
    assert "USER 65532:65532" in text
