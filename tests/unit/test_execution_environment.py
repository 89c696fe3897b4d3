"""meta/execution-environment.yml: ansible-builder accepts it, and what it declares is all the plugins import.

A clean virtual environment on another Python than the controller's (3.12, the oldest the README
supports) gets ansible-core, ansible-builder and exactly the declared Python requirements (pinned by
requirements.txt as constraints); there `ansible-builder introspect` reads the built, installed
collection, and every module, module_utils, filter and lookup file of the collection imports.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible.release import __version__ as ANSIBLE_CORE_VERSION
from packaging.requirements import Requirement

REPO_ROOT = Path(__file__).resolve().parents[2]
EE = yaml.safe_load((REPO_ROOT / "meta" / "execution-environment.yml").read_text())


def requirement_lines(path: Path) -> list[str]:
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line]


def declared() -> list[Requirement]:
    return [Requirement(line) for line in requirement_lines(REPO_ROOT / EE["dependencies"]["python"])]


def pins() -> dict[str, str]:
    found = {}
    for line in requirement_lines(REPO_ROOT / "requirements.txt"):
        requirement = Requirement(line)
        found[requirement.name.lower()] = next(iter(requirement.specifier)).version
    return found


def python312() -> str:
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=False).stdout.strip()  # noqa: S607
    found = sorted(glob.glob(f"{root or os.path.expanduser('~/.pyenv')}/versions/3.12*/bin/python3"))
    if not found:
        if os.environ.get("CI"):
            pytest.fail("Python 3.12 (pyenv) is missing: the execution-environment check needs it")
        pytest.skip("Python 3.12 not installed with pyenv")
    return found[-1]


def test_the_definition_is_version_1_and_names_files_that_exist() -> None:
    assert EE["version"] == 1
    assert set(EE["dependencies"]) == {"python", "system"}
    for kind in ("python", "system"):
        assert (REPO_ROOT / EE["dependencies"][kind]).is_file(), EE["dependencies"][kind]


def test_every_declared_requirement_admits_the_version_the_tests_run_with() -> None:
    pinned = pins()
    for requirement in declared():
        name = requirement.name.lower()
        if name in {"botocore", "cryptography", "pyyaml", "jsonpatch"}:
            continue  # boto3's, ansible-core's and kubernetes.core's own dependencies: what they resolve to
        assert name in pinned, f"{name} is declared for execution environments but not pinned in requirements.txt"
        assert requirement.specifier.contains(pinned[name]), f"requirements.txt pins {name}=={pinned[name]}"


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("ee") / "venv"
    subprocess.run([python312(), "-m", "venv", str(venv)], check=True)  # noqa: S603
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(  # noqa: S603
        [
            *pip,
            f"ansible-core=={ANSIBLE_CORE_VERSION}",
            "ansible-builder",
            "-r",
            str(REPO_ROOT / EE["dependencies"]["python"]),
            "-c",
            str(REPO_ROOT / "requirements.txt"),
        ],
        check=True,
        timeout=600,
    )
    return venv


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("installed")
    bin_dir = Path(sys.executable).parent
    subprocess.run(  # noqa: S603
        [str(REPO_ROOT / "hack" / "install-collection.sh"), str(dest)],
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        check=True,
        capture_output=True,
    )
    return dest / "collections"


def test_ansible_builder_reads_the_installed_collections_requirements(clean_venv: Path, installed: Path) -> None:
    result = subprocess.run(  # noqa: S603
        [str(clean_venv / "bin" / "ansible-builder"), "introspect", "--sanitize", str(installed)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(result.stdout.split("\n", 1)[1])  # after the "# Dependency data for" line
    python = [line.split("#")[0].strip() for line in data["python"]]
    for requirement in declared():
        if requirement.name.lower() == "pyyaml":
            continue  # ansible-builder drops what ansible-core itself requires
        assert str(requirement) in python, (requirement, python)
    assert any(line.startswith("ca-certificates") for line in data["system"]), data["system"]


def test_every_plugin_imports_with_only_the_declared_requirements(clean_venv: Path, installed: Path) -> None:
    collection = installed / "ansible_collections" / "mlstack" / "mlflow"
    modules = sorted(
        ".".join(("ansible_collections", "mlstack", "mlflow", *path.relative_to(collection).with_suffix("").parts))
        for path in (collection / "plugins").rglob("*.py")
        if path.name != "__init__.py" and path.parent.name != "doc_fragments"
    )
    assert any(name.endswith("modules.k8s_secret") for name in modules) and len(modules) >= 8, modules
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    result = subprocess.run(  # noqa: S603
        [str(clean_venv / "bin" / "python"), "-c", script, *modules],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(installed), "HOME": str(installed)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # The import of the third-party libraries is real, not guarded by a try/except in the plugin.
    check = "import kubernetes, psycopg2, boto3, botocore, jsonpatch, cryptography, yaml"
    assert subprocess.run([str(clean_venv / "bin" / "python"), "-c", check], check=False).returncode == 0  # noqa: S603
