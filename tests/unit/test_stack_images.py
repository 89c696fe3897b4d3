"""The local stack's images component: cache keys, tags, command lines, the registry check (no network)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import stat
import sys
import tarfile
from pathlib import Path

import pytest

# The launcher lives in hack/ (run with PYTHONPATH=hack); make it importable for plain pytest too.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

from mlstack_local import images  # noqa: E402
from mlstack_local.base import Context  # noqa: E402
from mlstack_local.config import PORTS, REPO_ROOT, Paths  # noqa: E402
from mlstack_local.registry import PROJECT, ROBOT_USER  # noqa: E402

HOSTILE_PASSWORD = "a@b:c/d%e#f?g&h=i+j k$x"  # noqa: S105 - a test value
DEFAULT_MLFLOW = images.MLFLOW_VERSIONS[0]


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """A copy of the repository's images/ tree that a test may edit."""
    copy = tmp_path / "images"
    shutil.copytree(REPO_ROOT / "images", copy)
    return copy


def registry_env(host: str = f"127.0.0.1:{PORTS['registry']}") -> dict[str, str]:
    return {
        "REGISTRY_URL": f"http://{host}",
        "REGISTRY_HOST": host,
        "REGISTRY_USER": ROBOT_USER,
        "REGISTRY_PASSWORD": HOSTILE_PASSWORD,
        "REGISTRY_PROJECT": PROJECT,
    }


def keys(specs: images.ImageSet) -> dict[str, str]:
    return {image.name: image.key for image in specs.all()}


# --- cache keys ---------------------------------------------------------------------------------------


def test_content_key_is_stable_and_keeps_parts_apart() -> None:
    assert images.content_key("a", b"b") == images.content_key("a", "b")
    assert re.fullmatch(r"[0-9a-f]{12}", images.content_key("x"))
    assert images.content_key("ab", "c") != images.content_key("a", "bc")


def test_keys_do_not_change_when_nothing_changes(src: Path) -> None:
    assert keys(images.image_specs(src)) == keys(images.image_specs(src))


def test_mlflow_containerfile_change_rebuilds_both_mlflow_images_only(src: Path) -> None:
    before = keys(images.image_specs(src))
    containerfile = src / "mlflow" / "Containerfile"
    containerfile.write_text(containerfile.read_text() + "# a change\n")
    after = keys(images.image_specs(src))
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {f"mlflow-{version}" for version in images.MLFLOW_VERSIONS}


def test_requirements_change_rebuilds_only_that_mlflow_image(src: Path) -> None:
    before = keys(images.image_specs(src))
    requirements = src / "mlflow" / images.requirements_name(DEFAULT_MLFLOW)
    requirements.write_text(requirements.read_text().replace("boto3==", "boto3>="))
    after = keys(images.image_specs(src))
    assert {name for name in before if before[name] != after[name]} == {f"mlflow-{DEFAULT_MLFLOW}"}


def test_other_files_in_the_build_context_do_not_change_keys(src: Path) -> None:
    before = keys(images.image_specs(src))
    (src / "mlflow" / "README.md").write_text("notes\n")
    (src / "tools" / "notes.txt").write_text("notes\n")
    assert keys(images.image_specs(src)) == before


def test_tools_and_pause_recipes_change_only_their_image(src: Path) -> None:
    before = keys(images.image_specs(src))
    (src / "tools" / "Containerfile").write_text((src / "tools" / "Containerfile").read_text() + "# x\n")
    after_tools = keys(images.image_specs(src))
    assert {name for name in before if before[name] != after_tools[name]} == {"tools"}
    (src / "pause" / "pause.c").write_text((src / "pause" / "pause.c").read_text() + "/* x */\n")
    after_pause = keys(images.image_specs(src))
    assert {name for name in after_tools if after_tools[name] != after_pause[name]} == {"pause"}


def test_a_new_base_rebuilds_everything_built_on_it(src: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = keys(images.image_specs(src))
    original = images.base_key
    monkeypatch.setattr(images, "base_key", lambda: original(packages=(*images.BASE_PACKAGES, "less")))
    after = keys(images.image_specs(src))
    assert {name for name in before if before[name] != after[name]} == {name for name in before if name != "pause"}


def test_base_key_follows_the_debootstrap_command_line_not_where_it_runs() -> None:
    assert images.base_key() == images.base_key()
    assert images.base_key(packages=("python3",)) != images.base_key()
    assert images.base_key(suite="forky") != images.base_key()
    argv = images.debootstrap_argv(Path("/x/rootfs"), "http://mirror.example/debian")
    assert argv == [
        "debootstrap",
        "--variant=minbase",
        "--include=python3,python3-venv,python-is-python3,ca-certificates",
        "trixie",
        "/x/rootfs",
        "http://mirror.example/debian",
    ]


def test_keys_of_containerfile_images_cover_their_inputs() -> None:
    assert images.tools_key(b"FROM x", "base:1") != images.tools_key(b"FROM x", "base:2")
    assert images.tools_key(b"FROM x", "base:1") != images.tools_key(b"FROM y", "base:1")
    key = images.mlflow_key("3.17.2", b"C", b"R", "base:1")
    assert key == images.mlflow_key("3.17.2", b"C", b"R", "base:1")
    assert key != images.mlflow_key("3.17.2", b"C", b"R", "base:2")
    assert key != images.mlflow_key("3.17.2", b"C2", b"R", "base:1")
    assert key != images.mlflow_key("3.17.2", b"C", b"R2", "base:1")
    assert key != images.mlflow_key("3.16.1", b"C", b"R", "base:1")


# --- names and tags ---------------------------------------------------------------------------------


def test_tags_are_the_ones_the_collection_and_the_node_use(src: Path) -> None:
    specs = images.image_specs(src)
    assert specs.pause.ref == "localhost/mlstack/pause:3.10"
    assert specs.base.ref == f"localhost/mlstack/base:trixie-{specs.base.key}"
    assert specs.tools.ref == f"localhost/mlstack/tools:{specs.tools.key}"
    assert specs.mlflow[DEFAULT_MLFLOW].ref == f"127.0.0.1:35000/mlstack/mlflow:{DEFAULT_MLFLOW}-mlstack.1"
    assert images.mlflow_ref("3.16.1", "127.0.0.1:35500", "p") == "127.0.0.1:35500/p/mlflow:3.16.1-mlstack.1"
    assert images.mlflow_env_key("3.17.2") == "MLFLOW_IMAGE_3_17"
    assert images.mlflow_env_key("3.16.1") == "MLFLOW_IMAGE_3_16"


def test_the_default_mlflow_image_is_the_local_inventorys_mlflow_image() -> None:
    text = (REPO_ROOT / "inventory" / "local" / "group_vars" / "all" / "mlflow.yml").read_text()
    template = re.search(r"^mlflow_image:\s*\"(.*)\"", text, flags=re.MULTILINE).group(1)  # type: ignore[union-attr]
    rendered = template.replace("{{ harbor_registry }}", images.registry_host()).replace(
        "{{ harbor_project }}", PROJECT
    )
    assert rendered == images.mlflow_ref(DEFAULT_MLFLOW)


def test_archives_live_in_the_cache_keyed(paths: Paths) -> None:
    image = images.Image("tools", "localhost/mlstack/tools:abc", "0123456789ab")
    assert image.archive(paths) == paths.cache / "images" / "tools-0123456789ab.oci.tar"


def test_stale_archives_are_other_keys_of_the_same_image(tmp_path: Path) -> None:
    image = images.Image("mlflow-3.17.2", "r", "0123456789ab")
    for name in (
        "mlflow-3.17.2-0123456789ab.oci.tar",
        "mlflow-3.17.2-ffffffffffff.oci.tar",
        "mlflow-3.16.1-ffffffffffff.oci.tar",
        "mlflow-3.17.2-ffffffffffff.oci.tar.partial",
    ):
        (tmp_path / name).write_text("")
    assert images.stale_archives(tmp_path, image) == [tmp_path / "mlflow-3.17.2-ffffffffffff.oci.tar"]


# --- the recipes ------------------------------------------------------------------------------------


def containerfile_args(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, flags=re.MULTILINE))


def test_mlflow_containerfile_defaults_to_the_public_python_image() -> None:
    text = (REPO_ROOT / "images" / "mlflow" / "Containerfile").read_text()
    args = containerfile_args(text)
    assert args["BASE_IMAGE"] == "docker.io/library/python:3.13-slim-bookworm"
    assert args["MLFLOW_VERSION"] == DEFAULT_MLFLOW
    assert args["IMAGE_REVISION"] == images.MLFLOW_REVISION
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert froms == ["${BASE_IMAGE}", "${BASE_IMAGE}"]
    assert 'org.opencontainers.image.version="${MLFLOW_VERSION}-${IMAGE_REVISION}"' in text
    assert "COPY requirements-${MLFLOW_VERSION}.txt" in text


def test_mlflow_containerfile_bakes_no_host_pip_settings() -> None:
    text = (REPO_ROOT / "images" / "mlflow" / "Containerfile").read_text()
    assert "PIP_CERT=/etc" not in text
    assert "/etc/pip" not in text
    # The CA bundle arrives as a build secret, mounted for the pip step only.
    assert f"--mount=type=secret,id={images.PIP_CA_SECRET}" in text
    assert "USER 1000:1000" in text


def test_tools_containerfile_builds_on_the_given_base() -> None:
    text = (REPO_ROOT / "images" / "tools" / "Containerfile").read_text()
    assert "BASE_IMAGE" in containerfile_args(text)
    assert re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE) == ["${BASE_IMAGE}"]
    for package in ("bash", "fish", "curl", "coreutils", "python3"):
        assert re.search(rf"\b{package}\b", text)


def test_every_mlflow_version_has_a_complete_lock_with_the_same_other_pins() -> None:
    def pins(version: str) -> dict[str, str]:
        text = (REPO_ROOT / "images" / "mlflow" / images.requirements_name(version)).read_text()
        lines = [line for line in text.splitlines() if line and not line.startswith("#")]
        assert all(line.count("==") == 1 for line in lines), f"{version}: every line pins one version"
        return dict(line.split("==") for line in lines)

    # 3.18.0's mlflow-skinny and mlflow-tracing are not on the index; their files are in the mlflow wheel.
    split = {"mlflow", "mlflow-skinny", "mlflow-tracing"}
    for version in images.MLFLOW_VERSIONS:
        lock = pins(version)
        assert lock["mlflow"] == version
        assert {k: v for k, v in lock.items() if k not in split} == {
            k: v for k, v in pins(DEFAULT_MLFLOW).items() if k not in split
        }
        assert {"mlflow-oidc-auth", "psycopg2-binary", "boto3", "Flask-WTF", "prometheus_flask_exporter"} <= set(lock)


# --- command lines ------------------------------------------------------------------------------------


def test_buildah_always_runs_on_our_storage(paths: Paths) -> None:
    argv = images.buildah_argv(paths, "images")
    assert argv[: argv.index("buildah")] == images.contained([])
    tail = argv[argv.index("buildah") :]
    assert tail == [
        "buildah",
        "--root",
        str(paths.cache / "buildah" / "root"),
        "--runroot",
        str(paths.state / "buildah-run"),
        "--storage-driver",
        "overlay",
        "images",
    ]
    assert not any("/var/lib/containers" in arg for arg in argv)
    assert images.tool_env(paths) == {"TMPDIR": str(paths.cache / "images" / "tmp")}


def test_containerized_tools_see_var_lib_read_only() -> None:
    argv = images.contained(["skopeo", "x"])
    assert argv[:4] == ["unshare", "--mount", "--propagation", "private"]
    assert "remount,bind,ro /var/lib" in argv[6]
    assert argv[-2:] == ["skopeo", "x"]


def test_bud_uses_host_network_and_never_pulls(tmp_path: Path) -> None:
    args = images.bud_args(
        tmp_path / "Containerfile",
        tmp_path,
        "r:1",
        {"BASE_IMAGE": "localhost/mlstack/base:trixie-k", "MLFLOW_VERSION": "3.16.1"},
        {"pip-ca": Path("/etc/ssl/certs/ca-certificates.crt")},
    )
    assert args[:3] == ["bud", "--network", "host"]
    assert "--pull=never" in args
    assert ["--build-arg", "BASE_IMAGE=localhost/mlstack/base:trixie-k"] == args[7:9]
    assert "--build-arg" in args and "MLFLOW_VERSION=3.16.1" in args
    assert args[args.index("--secret") + 1] == "id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt"
    assert args[-5:] == ["-f", str(tmp_path / "Containerfile"), "-t", "r:1", str(tmp_path)]


def test_base_tarball_keeps_owners_and_drops_host_files(tmp_path: Path) -> None:
    argv = images.tar_rootfs_argv(tmp_path / "rootfs", tmp_path / "rootfs.tar")
    assert "--numeric-owner" in argv and "--one-file-system" in argv
    for excluded in ("./etc/resolv.conf", "./etc/hostname", "./dev/*", "./proc/*"):
        assert f"--exclude={excluded}" in argv
    assert argv[-5:] == ["-C", str(tmp_path / "rootfs"), "-cf", str(tmp_path / "rootfs.tar"), "."]


def test_export_and_import_keep_the_image_name(tmp_path: Path) -> None:
    archive = tmp_path / "pause.oci.tar"
    assert images.export_args("localhost/mlstack/pause:3.10", archive)[-1] == (
        f"oci-archive:{archive}:localhost/mlstack/pause:3.10"
    )
    assert images.ctr_import_argv("/s/containerd.sock", archive) == [
        "ctr",
        "--address",
        "/s/containerd.sock",
        "-n",
        "k8s.io",
        "images",
        "import",
        "--snapshotter=overlayfs",
        str(archive),
    ]


def test_pause_is_compiled_static() -> None:
    argv = images.pause_gcc_argv(Path("pause.c"), Path("out/pause"))
    assert argv[0] == "gcc" and "-static" in argv and argv[-3:] == ["-o", "out/pause", "pause.c"]


# --- credentials and the registry ---------------------------------------------------------------------


def test_push_argv_has_no_credentials(tmp_path: Path) -> None:
    argv = images.push_argv(
        tmp_path / "a.oci.tar", "127.0.0.1:35000/mlstack/mlflow:3.17.2-mlstack.1", tmp_path / "auth"
    )
    assert not any(HOSTILE_PASSWORD in arg or "creds" in arg for arg in argv)
    assert argv[argv.index("--dest-authfile") + 1] == str(tmp_path / "auth")
    assert "--dest-tls-verify=false" in argv
    assert argv[-2:] == [
        f"oci-archive:{tmp_path / 'a.oci.tar'}",
        "docker://127.0.0.1:35000/mlstack/mlflow:3.17.2-mlstack.1",
    ]


def test_auth_file_holds_the_robot_credentials() -> None:
    config = json.loads(images.auth_config("127.0.0.1:35000", ROBOT_USER, HOSTILE_PASSWORD))
    token = config["auths"]["127.0.0.1:35000"]["auth"]
    assert base64.b64decode(token).decode() == f"{ROBOT_USER}:{HOSTILE_PASSWORD}"


def test_write_private_creates_a_0600_file(tmp_path: Path) -> None:
    path = tmp_path / "d" / "auth.json"
    images.write_private(path, "x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "x"


def oci_archive(path: Path, ref: str, digest: str) -> Path:
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": digest,
                    "size": 1,
                    "annotations": {"org.opencontainers.image.ref.name": ref},
                }
            ],
        }
    ).encode()
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("index.json")
        info.size = len(index)
        tar.addfile(info, io.BytesIO(index))
    return path


def test_archive_manifest_reads_the_index(tmp_path: Path) -> None:
    archive = oci_archive(tmp_path / "a.oci.tar", "localhost/mlstack/pause:3.10", "sha256:" + "a" * 64)
    assert images.archive_manifest(archive) == ("localhost/mlstack/pause:3.10", "sha256:" + "a" * 64)


def test_manifest_check_url_and_headers() -> None:
    access = images.RegistryAccess.from_env(registry_env())
    assert access is not None
    assert access.manifest_url("3.17.2") == "http://127.0.0.1:35000/v2/mlstack/mlflow/manifests/3.17.2-mlstack.1"
    headers = images.manifest_headers(access.user, access.password)
    assert base64.b64decode(headers["Authorization"].removeprefix("Basic ")).decode() == (
        f"{ROBOT_USER}:{HOSTILE_PASSWORD}"
    )
    accepted = headers["Accept"].split(", ")
    assert "application/vnd.oci.image.manifest.v1+json" in accepted
    assert "application/vnd.docker.distribution.manifest.v2+json" in accepted
    assert images.RegistryAccess.from_env({}) is None


def test_pushed_compares_the_registry_digest_with_the_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = oci_archive(tmp_path / "a.oci.tar", "r", "sha256:" + "b" * 64)
    access = images.RegistryAccess.from_env(registry_env())
    assert access is not None
    seen: list[tuple[str, dict[str, str]]] = []

    def fake_digest(url: str, headers: dict[str, str]) -> str | None:
        seen.append((url, dict(headers)))
        return served

    monkeypatch.setattr(images, "registry_digest", fake_digest)
    served: str | None = "sha256:" + "b" * 64
    assert images.pushed(access, "3.17.2", archive)
    served = "sha256:" + "c" * 64  # the tag holds an older build
    assert not images.pushed(access, "3.17.2", archive)
    served = None
    assert not images.pushed(access, "3.17.2", archive)
    assert seen[0][0].endswith("/v2/mlstack/mlflow/manifests/3.17.2-mlstack.1")


def test_push_keeps_the_password_out_of_argv_and_removes_the_auth_file(
    paths: Paths, src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs = images.image_specs(src)
    for image in specs.mlflow.values():
        image.archive(paths).parent.mkdir(parents=True, exist_ok=True)
        oci_archive(image.archive(paths), image.ref, "sha256:" + "d" * 64)
    calls: list[list[str]] = []
    pushed_versions: set[str] = set()

    def fake_run_logged(_paths: Paths, _name: str, argv: list[str], **_kwargs: object) -> None:
        calls.append(list(argv))
        authfile = Path(argv[argv.index("--dest-authfile") + 1])
        assert stat.S_IMODE(authfile.stat().st_mode) == 0o600
        assert HOSTILE_PASSWORD not in authfile.read_text()  # base64 inside, and never in argv
        pushed_versions.add(argv[-1].rsplit(":", 1)[1].removesuffix("-mlstack.1"))

    monkeypatch.setattr(images, "run_logged", fake_run_logged)
    monkeypatch.setattr(images, "pushed", lambda _access, version, _archive: version in pushed_versions)
    access = images.RegistryAccess.from_env(registry_env("127.0.0.1:35500"))
    assert access is not None
    images.push_mlflow(paths, specs, access)
    assert len(calls) == len(images.MLFLOW_VERSIONS)
    assert all(HOSTILE_PASSWORD not in arg for argv in calls for arg in argv)
    assert calls[0][-1] == f"docker://127.0.0.1:35500/mlstack/mlflow:{DEFAULT_MLFLOW}-mlstack.1"
    assert list((paths.state / "images").iterdir()) == []
    # Everything is there now: a second push does nothing.
    images.push_mlflow(paths, specs, access)
    assert len(calls) == len(images.MLFLOW_VERSIONS)


# --- host settings ----------------------------------------------------------------------------------

DEB822 = """Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""


def test_apt_mirror_from_deb822_and_one_line_sources() -> None:
    assert images.apt_mirror(DEB822) == "http://deb.debian.org/debian"
    assert images.apt_mirror("deb [arch=amd64] http://mirror.example/debian/ bookworm main\n") == (
        "http://mirror.example/debian"
    )
    assert images.apt_mirror("deb http://security.debian.org/debian-security bookworm-security main\n") is None
    assert images.apt_mirror("") is None


def test_pip_ca_bundle_follows_the_host_pip_settings(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.crt"
    bundle.write_text("pem")
    assert images.pip_ca_bundle({"PIP_CERT": str(bundle)}, []) == bundle
    assert images.pip_ca_bundle({}, [f"[global]\ncert = {bundle}\n"]) == bundle
    assert images.pip_ca_bundle({"REQUESTS_CA_BUNDLE": str(bundle)}, ["not an ini"]) == bundle
    assert images.pip_ca_bundle({"PIP_CERT": str(tmp_path / "missing")}, []) is None
    assert images.pip_ca_bundle({}, []) is None


def test_mounts_below_lists_deepest_first() -> None:
    mountinfo = "\n".join(
        [
            "22 1 0:21 / /proc rw - proc proc rw",
            "90 1 0:50 / /c/work/base/rootfs/proc rw - proc proc rw",
            "91 90 0:51 / /c/work/base/rootfs/proc/sys/fs/binfmt_misc rw - binfmt_misc b rw",
            "92 1 0:52 / /c/work/base-other rw - tmpfs t rw",
        ]
    )
    assert images.mounts_below(mountinfo, Path("/c/work/base")) == [
        Path("/c/work/base/rootfs/proc/sys/fs/binfmt_misc"),
        Path("/c/work/base/rootfs/proc"),
    ]
    assert images.mounts_below(mountinfo, Path("/elsewhere")) == []


# --- the component ----------------------------------------------------------------------------------


def test_component_is_down_without_the_registry_and_publishes_image_names(paths: Paths) -> None:
    component = images.Images()
    assert component.name == "images" and component.wanted_secrets == {}
    assert not component.is_up(Context(paths=paths, secrets={}))
    env = component.env(Context(paths=paths, secrets={}, env=registry_env()))
    specs = images.image_specs()
    assert env["MLSTACK_PAUSE_IMAGE"] == "localhost/mlstack/pause:3.10"
    assert env["MLSTACK_TOOLS_IMAGE"] == specs.tools.ref
    assert env["MLSTACK_TOOLS_ARCHIVE"] == str(specs.tools.archive(paths))
    assert env["MLFLOW_IMAGE_3_18"] == "127.0.0.1:35000/mlstack/mlflow:3.18.0-mlstack.1"
    assert env["MLFLOW_IMAGE_3_17"] == "127.0.0.1:35000/mlstack/mlflow:3.17.2-mlstack.1"
    assert HOSTILE_PASSWORD not in "".join(env.values())


def test_start_needs_the_registry(paths: Paths) -> None:
    with pytest.raises(images.StackError, match="registry"):
        images.Images().start(Context(paths=paths, secrets={}))


def test_infra_archives_name_pause_and_tools(paths: Paths) -> None:
    with pytest.raises(images.StackError, match="missing"):
        images.infra_archives(paths)
    specs = images.image_specs()
    for image in (specs.pause, specs.tools):
        image.archive(paths).parent.mkdir(parents=True, exist_ok=True)
        image.archive(paths).write_bytes(b"")
    assert images.infra_archives(paths) == {
        "localhost/mlstack/pause:3.10": specs.pause.archive(paths),
        specs.tools.ref: specs.tools.archive(paths),
    }
