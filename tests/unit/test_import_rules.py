"""The arrows point inward: parse every module's imports and enforce docs/architecture.md.

- The core (``errors``, ``ports``, ``user_context``) imports nothing of ours but the core.
- No module outside ``adapters/`` and ``fakes/`` imports either package, except the composition
  roots (``composition.py`` and its asyncio twin ``async_composition.py``), which alone import
  both; and the provisioning
  tools (``bootstrap.py``, ``devstack.py``), which set up real servers and may import the
  adapters, never the fakes.
- Adapters never import fakes. Fakes never import adapters, with one documented exception:
  ``fakes/keyvalue.py`` runs the Valkey adapter's own code over fakeredis, so that only the
  transport differs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import crm_infra

PACKAGE_DIR = Path(crm_infra.__file__).resolve().parent
CORE = {"crm_infra.errors", "crm_infra.ports", "crm_infra.user_context"}
COMPOSITION_ROOTS = {"crm_infra.composition", "crm_infra.async_composition"}
PROVISIONING_TOOLS = {"crm_infra.bootstrap", "crm_infra.devstack"}
FAKES_ALLOWED_TO_IMPORT_ADAPTERS = {("crm_infra.fakes.keyvalue", "crm_infra.adapters.valkey")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def our_imports(path: Path) -> set[str]:
    """Return every ``crm_infra`` module ``path`` imports, at any depth (functions included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                name = module_name(path)
                package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            found.add(base)
            # `from crm_infra import adapters` imports the subpackage itself.
            found.update(
                f"{base}.{alias.name}" for alias in node.names if is_module(f"{base}.{alias.name}")
            )
    return {name for name in found if name == "crm_infra" or name.startswith("crm_infra.")}


def is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    root = PACKAGE_DIR.parent
    return (root / relative).with_suffix(".py").is_file() or (root / relative).is_dir()


def in_package(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


MODULES = {module_name(p): our_imports(p) for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def test_the_parser_sees_the_modules_and_their_imports() -> None:
    assert "crm_infra.ports" in MODULES
    assert "crm_infra.user_context" in MODULES["crm_infra.ports"]
    for root in COMPOSITION_ROOTS:
        assert any(in_package(n, "crm_infra.fakes") for n in MODULES[root])
        assert any(in_package(n, "crm_infra.adapters") for n in MODULES[root])


@pytest.mark.parametrize("module", sorted(CORE))
def test_the_core_imports_only_the_core(module: str) -> None:
    assert MODULES[module] <= CORE, MODULES[module]


@pytest.mark.parametrize(
    "module",
    sorted(
        m
        for m in MODULES
        if m not in COMPOSITION_ROOTS
        and m not in PROVISIONING_TOOLS
        and not in_package(m, "crm_infra.adapters")
        and not in_package(m, "crm_infra.fakes")
    ),
)
def test_only_the_composition_root_imports_adapters_or_fakes(module: str) -> None:
    offending = {
        n
        for n in MODULES[module]
        if in_package(n, "crm_infra.adapters") or in_package(n, "crm_infra.fakes")
    }
    assert not offending, f"{module} imports {sorted(offending)}; only the composition roots may"


ADAPTERS = sorted(m for m in MODULES if in_package(m, "crm_infra.adapters"))
FAKES = sorted(m for m in MODULES if in_package(m, "crm_infra.fakes"))


@pytest.mark.parametrize("module", sorted(PROVISIONING_TOOLS & MODULES.keys()))
def test_provisioning_tools_never_import_fakes(module: str) -> None:
    offending = {n for n in MODULES[module] if in_package(n, "crm_infra.fakes")}
    assert not offending, f"{module} imports {sorted(offending)}"


@pytest.mark.parametrize("module", ADAPTERS)
def test_adapters_never_import_fakes(module: str) -> None:
    offending = {n for n in MODULES[module] if in_package(n, "crm_infra.fakes")}
    assert not offending, f"{module} imports {sorted(offending)}"


@pytest.mark.parametrize("module", FAKES)
def test_fakes_never_import_adapters_except_the_shared_valkey_code_path(module: str) -> None:
    offending = {
        n
        for n in MODULES[module]
        if in_package(n, "crm_infra.adapters")
        and (module, n) not in FAKES_ALLOWED_TO_IMPORT_ADAPTERS
    }
    assert not offending, f"{module} imports {sorted(offending)}"


def test_a_violation_would_be_caught(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from crm_infra import fakes\n    import crm_infra.adapters\n")
    assert {"crm_infra", "crm_infra.fakes", "crm_infra.adapters"} <= our_imports(bad)
