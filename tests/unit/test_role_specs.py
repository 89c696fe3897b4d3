"""Every role documents exactly the variables it defaults, with those defaults, and the READMEs match the specs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "hack"))

import gen_docs  # noqa: E402 - from hack/, put on the path above

ROLES = gen_docs.all_roles()
# Options whose defaults/main.yml value is a Jinja expression their spec's type cannot hold as a default
# (an int): the spec has no `default:` and its description says what it defaults to.
DERIVED = {("preflight", "mlflow_db_admin_port"): "mlflow_db_port"}


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def _entry_points(role: str) -> dict:
    return gen_docs.load_specs(role)


@pytest.mark.parametrize("role", ROLES)
def test_role_has_argument_specs(role: str) -> None:
    spec = _entry_points(role)
    assert "main" in spec
    assert spec["main"]["short_description"]


@pytest.mark.parametrize("role", ROLES)
def test_defaults_and_specs_list_the_same_variables(role: str) -> None:
    options = _entry_points(role)["main"]["options"]
    defaults = _load(REPO / "roles" / role / "defaults" / "main.yml")
    required = {name for name, option in options.items() if option.get("required")}
    assert set(defaults) == set(options) - required
    for name, option in options.items():
        assert option.get("description"), f"{role}: {name} has no description"


def test_required_variables_have_no_default() -> None:
    options = _entry_points("preflight")["main"]["options"]
    required = {name for name, option in options.items() if option.get("required")}
    assert required == {"domain_name", "harbor_registry"}
    assert not [name for name in required if "default" in options[name]]


@pytest.mark.parametrize("role", ROLES)
def test_spec_defaults_equal_role_defaults(role: str) -> None:
    """Each option's `default:` is its defaults/main.yml value, same type; none is missing or invented."""
    defaults = _load(REPO / "roles" / role / "defaults" / "main.yml")
    problems = []
    for entry, spec in _entry_points(role).items():
        for name, option in (spec.get("options") or {}).items():
            where = f"roles/{role}/meta/argument_specs.yml: {entry}.{name}"
            if (role, name) in DERIVED:
                source = DERIVED[role, name]
                if "default" in option or f"defaults to the value of {source}" not in str(option["description"]):
                    problems.append(f"{where}: derived from {source}, so no default: and a description saying so")
            elif name not in defaults:
                if "default" in option:
                    problems.append(f"{where}: default: {option['default']!r}, but defaults/main.yml has no {name}")
            elif "default" not in option:
                problems.append(f"{where}: no default:, defaults/main.yml has {defaults[name]!r}")
            elif option["default"] != defaults[name] or type(option["default"]) is not type(defaults[name]):
                problems.append(f"{where}: default: {option['default']!r}, defaults/main.yml has {defaults[name]!r}")
    assert not problems, "\n".join(problems)


def test_derived_defaults_are_jinja_in_defaults() -> None:
    for (role, name), source in DERIVED.items():
        assert _load(REPO / "roles" / role / "defaults" / "main.yml")[name] == f"{{{{ {source} }}}}"


@pytest.mark.parametrize("role", ROLES)
def test_spec_defaults_fit_their_types(role: str) -> None:
    """Ansible's own validator accepts every default as given: valid for the option's type, unchanged by it."""
    for entry, spec in _entry_points(role).items():
        options = {n: o for n, o in (spec.get("options") or {}).items() if not o.get("required")}
        result = ArgumentSpecValidator(options).validate({}, validate_role_argument_spec=True)
        assert not result.error_messages, f"roles/{role} {entry}: {result.error_messages}"
        for name, option in options.items():
            if "default" in option:
                assert result.validated_parameters[name] == option["default"], f"roles/{role} {entry}.{name}"


@pytest.fixture(scope="module")
def ansible_doc(collections_path: Path) -> dict:
    """`ansible-doc -t role --json` of every role, in one real call against this working tree."""
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(collections_path)}
    argv = [str(Path(sys.executable).parent / "ansible-doc"), "-t", "role", "--json"]
    argv += [f"mlstack.mlflow.{role}" for role in ROLES]
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, check=False)  # noqa: S603
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("role", ROLES)
def test_ansible_doc_shows_the_defaults(ansible_doc: dict, role: str) -> None:
    doc = ansible_doc[f"mlstack.mlflow.{role}"]
    assert Path(doc["path"]).resolve() == REPO, f"ansible-doc read another copy of the collection: {doc['path']}"
    defaults = _load(REPO / "roles" / role / "defaults" / "main.yml")
    specs = _entry_points(role)
    assert set(doc["entry_points"]) == set(specs)
    for entry, spec in specs.items():
        shown = doc["entry_points"][entry].get("options") or {}
        assert set(shown) == set(spec.get("options") or {})
        for name, option in shown.items():
            if name in defaults and (role, name) not in DERIVED:
                assert option.get("default") == defaults[name], f"ansible-doc mlstack.mlflow.{role}: {entry}.{name}"
            else:
                assert "default" not in option, f"ansible-doc mlstack.mlflow.{role}: {entry}.{name}"


def test_readme_variables_table_is_current() -> None:
    readme = (REPO / "README.md").read_text()
    assert gen_docs.render(readme) == readme, "run: python hack/gen_docs.py"


@pytest.mark.parametrize("role", ROLES)
def test_role_readme_is_current(role: str) -> None:
    path = REPO / "roles" / role / "README.md"
    assert path.exists(), f"roles/{role}/README.md is missing: run python hack/gen_docs.py"
    current = path.read_text()
    assert gen_docs.render_role(role, current) == current, "run: python hack/gen_docs.py"
    for name in gen_docs.load_specs(role)["main"].get("options") or {}:
        assert f"| `{name}` |" in current, f"roles/{role}/README.md has no row for {name}"


def test_preflight_checks_the_spec_of_every_deploy_role_with_options() -> None:
    """Preflight validates these roles' specs before any change; a role left out would be checked late."""
    listed = _load(REPO / "roles" / "preflight" / "vars" / "main.yml")["_preflight_spec_roles"]
    with_options = [
        role
        for role in ROLES
        if role not in ("preflight", "uninstall") and any(spec.get("options") for spec in _entry_points(role).values())
    ]
    assert sorted(listed) == sorted(with_options)
