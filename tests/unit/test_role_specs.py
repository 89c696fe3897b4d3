"""Every role documents exactly the variables it defaults, and the README's table matches the specs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if (p / "tasks").is_dir())


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


@pytest.mark.parametrize("role", ROLES)
def test_role_has_argument_specs(role: str) -> None:
    spec = _load(REPO / "roles" / role / "meta" / "argument_specs.yml")
    assert "main" in spec["argument_specs"]
    assert spec["argument_specs"]["main"]["short_description"]


@pytest.mark.parametrize("role", ROLES)
def test_defaults_and_specs_list_the_same_variables(role: str) -> None:
    options = _load(REPO / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    defaults = _load(REPO / "roles" / role / "defaults" / "main.yml")
    required = {name for name, option in options.items() if option.get("required")}
    assert set(defaults) == set(options) - required
    for name, option in options.items():
        assert option.get("description"), f"{role}: {name} has no description"


def test_required_variables_have_no_default() -> None:
    options = _load(REPO / "roles" / "preflight" / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert {name for name, option in options.items() if option.get("required")} == {"domain_name", "harbor_registry"}


def test_readme_variables_table_is_current() -> None:
    sys.path.insert(0, str(REPO / "hack"))
    import gen_docs

    readme = (REPO / "README.md").read_text()
    assert gen_docs.render(readme) == readme, "run: python hack/gen_docs.py"
