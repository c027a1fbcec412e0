"""The reference in docs/ names every setting and every route the service has."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from app.config import Settings

DOCS = Path(__file__).resolve().parent.parent / "docs"
README = DOCS.parent / "README.md"
#: A row of a settings table: ``| `NAME` | ...``.
SETTING_ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \|", re.MULTILINE)
#: Methods every route answers implicitly; the reference names the real ones.
IMPLICIT_METHODS = frozenset({"HEAD", "OPTIONS"})


def documented_settings() -> set[str]:
    return set(SETTING_ROW.findall((DOCS / "settings.md").read_text()))


def test_every_setting_is_documented() -> None:
    names = {setting.name.upper() for setting in dataclasses.fields(Settings)}
    missing = names - documented_settings()
    assert not missing, f"add rows to docs/settings.md for {sorted(missing)}"


def test_documented_settings_exist() -> None:
    names = {setting.name.upper() for setting in dataclasses.fields(Settings)}
    unknown = documented_settings() - names
    assert not unknown, f"docs/settings.md describes unknown {sorted(unknown)}"


def _as_documented(rule: str) -> str:
    """``/api-keys/<key_id>`` stays; ``<path:suffix>`` loses its converter."""
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"<\1>", rule)


def test_every_route_is_documented(app: Any) -> None:
    reference = (DOCS / "reference.md").read_text()
    missing = [
        f"{method} {_as_documented(rule.rule)}"
        for rule in app.url_map.iter_rules()
        for method in sorted((rule.methods or set()) - IMPLICIT_METHODS)
        if f"`{method} {_as_documented(rule.rule)}`" not in reference
    ]
    assert not missing, f"docs/reference.md does not describe {missing}"


def test_nothing_points_outside_the_repository() -> None:
    # A clone has only the repository: references must resolve inside it.
    root = README.parent
    sources = [
        *root.glob("app/**/*.py"),
        *root.glob("tests/*.py"),
        *root.glob("tools/*.py"),
        root / "Makefile",
    ]
    for path in [README, *DOCS.iterdir(), *sources]:
        text = path.read_text()
        if path.name == "test_docs.py":
            continue
        assert "../shared" not in text, path.name
        assert "CONTRACT" not in text, path.name
        assert "the contract" not in text.lower(), path.name


def test_relative_links_resolve() -> None:
    link = re.compile(r"\]\(([^)#:]+)(?:#[^)]*)?\)")
    for path in [README, *DOCS.glob("*.md")]:
        for target in link.findall(path.read_text()):
            assert (path.parent / target).exists(), f"{path.name} -> {target}"


#: A module named in the README's layout: ``name.py``, alone or in a list.
LAYOUT_MODULE = re.compile(r"(?<![\w./*])([a-z_][a-z0-9_]*\.py)\b")


def layout_paths() -> set[str]:
    """Every path the README's layout names, read from its indented tree.

    A line whose first word ends in ``/`` opens a folder inside the folder
    above it (by indentation); ``name.py`` anywhere on a line inside a folder,
    or on the folder's own line, names a module of that folder.
    """
    section = README.read_text().split("## Layout", 1)[1]
    block = section.split("```", 2)[1]
    named: set[str] = set()
    folders: list[tuple[int, str]] = []
    for line in block.splitlines()[1:]:
        indent = len(line) - len(line.lstrip())
        words = line.split()
        if not words:
            continue
        while folders and folders[-1][0] >= indent:
            folders.pop()
        here = folders[-1][1] if folders else ""
        folder = words[0].rstrip(",")
        if folder.endswith("/"):
            here += folder
            named.add(here)
            folders.append((indent, here))
        named.update(here + module for module in LAYOUT_MODULE.findall(line))
    return named


def test_the_readme_layout_names_every_module() -> None:
    root = README.parent
    app = root / "app"
    modules = {
        str(path.relative_to(root))
        for path in app.rglob("*.py")
        if path.name != "__init__.py" or path.parent == app
    }
    packages = {
        str(path.parent.relative_to(root)) + "/" for path in app.rglob("*/*.py")
    }
    missing = (modules | packages) - layout_paths()
    assert not missing, f"name these in the README's layout: {sorted(missing)}"


def test_the_readme_layout_names_nothing_that_is_gone() -> None:
    root = README.parent
    gone = sorted(path for path in layout_paths() if not (root / path).exists())
    assert not gone, f"the README's layout names what does not exist: {gone}"
