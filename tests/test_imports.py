"""No import cycle in app/: arrows run one way, function-level imports included."""

from __future__ import annotations

from pathlib import Path

from import_cycles import cycles, graph_of

APP = Path(__file__).resolve().parent.parent / "app"


def test_app_has_no_import_cycle() -> None:
    assert cycles(graph_of(APP)) == []


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("def late() -> None:\n    from .a import x\n")
    assert cycles(graph_of(package)) == [["pkg.a", "pkg.b"]]


def test_every_module_of_app_is_walked() -> None:
    graph = graph_of(APP)
    assert "app.oauth.grants.authorization_code" in graph
    assert "app.oauth.consent" in graph["app.oauth.grants.authorization_code"]
