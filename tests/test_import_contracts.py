"""The package boundaries (pyproject's [tool.importlinter] contracts) hold, and each contract
breaks when the import it forbids is added, also one inside a function."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import grimp
import pytest
from importlinter.application import use_cases
from importlinter.application.app_config import settings
from importlinter.configuration import configure

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _checks(monkeypatch, added: tuple[str, str] | None = None) -> dict[str, bool]:
    """{contract id: kept} for the tree as it is, or with one import `importer -> imported`
    added to its import graph."""
    configure()
    build = settings.GRAPH_BUILDER.build

    def build_with_import(**kwargs):
        graph = build(**kwargs)
        if added is not None:
            importer, imported = added
            graph.add_import(
                importer=importer, imported=imported, line_number=1, line_contents="added"
            )
        return graph

    monkeypatch.setattr(settings.GRAPH_BUILDER, "build", build_with_import)
    use_cases._register_built_in_contract_types()
    options = use_cases.read_user_options(str(PYPROJECT))
    report = use_cases.create_report(options, cache_dir=None)
    return {
        contract.contract_options["id"]: check.kept
        for contract, check in report.get_contracts_and_checks()
    }


def test_the_tree_keeps_every_contract(monkeypatch):
    checks = _checks(monkeypatch)
    assert set(checks) == {"engine-no-textual", "tui-no-torch", "textual-only-for-tui"}
    assert all(checks.values()), checks


@pytest.mark.parametrize(
    "importer, imported, broken",
    [
        ("vqatune.engine.trainer", "textual", "engine-no-textual"),
        ("vqatune.tui.screens.runs", "torch", "tui-no-torch"),
        ("vqatune.tui.commands.runs_cmd", "transformers", "tui-no-torch"),
        ("vqatune.tui.commands.runs_cmd", "textual", "textual-only-for-tui"),
        # indirectly: the display module pulling in a module that imports textual
        ("vqatune.tui.display", "vqatune.tui.messages", "textual-only-for-tui"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(monkeypatch, importer, imported, broken):
    checks = _checks(monkeypatch, added=(importer, imported))
    assert checks[broken] is False
    assert all(kept for cid, kept in checks.items() if cid != broken), checks


def test_imports_inside_functions_are_in_the_graph(tmp_path, monkeypatch):
    """What the contracts see: a lazy import counts like one at the top of the module."""
    package = tmp_path / "lazyprobe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "command.py").write_text(
        textwrap.dedent(
            """
            def run():
                import torch

                return torch
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("lazyprobe", include_external_packages=True, cache_dir=None)
    assert "torch" in graph.find_modules_directly_imported_by("lazyprobe.command")
    sys.modules.pop("lazyprobe", None)
