"""README.md and docs/ say what the service does, and the service does it.

The reference names every setting, route and command, and nothing that is
gone; every JSON example and every field and error table is held to a live
answer of one running service (tests/docs_live.py says how each is asked).
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
import sqlalchemy
from conftest import TABLES, LiveServer
from docs_live import (
    ERRORS,
    EXAMPLES,
    FIELDS,
    ISSUER_PLACEHOLDERS,
    SETTINGS,
    Answers,
    ask,
)

from app.config import Settings
from app.surfaces import cors_routes

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


# --- The documents, read as a test reads them ---------------------------------------

#: Every document a reader is sent to.
DOCUMENTS = (README, *sorted(DOCS.glob("*.md")))
#: ``<!-- live: NAME -->`` and its kin, on the line before a block or table.
MARKER = re.compile(r"^<!-- (live|live fields|live errors|not an answer): (.+) -->$")
#: A table's separator line.
TABLE_RULE = re.compile(r"^\|(\s*:?-+:?\s*\|)+$")
#: What a route is written as: ``GET /token``.
ROUTE = re.compile(r"`((?:GET|POST|PUT|PATCH|DELETE) /[^`\s]*)`")


@dataclass(frozen=True)
class Marked:
    """A block or table, and what the line before it says it is."""

    path: Path
    line: int
    kind: str | None
    name: str | None

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


@dataclass(frozen=True)
class Block(Marked):
    language: str
    text: str


@dataclass(frozen=True)
class Table(Marked):
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def _cells(line: str) -> tuple[str, ...]:
    """A table row's cells; a ``|`` inside backticks is text."""
    cells, current, quoted = [], "", False
    for char in line.strip()[1:-1]:
        if char == "`":
            quoted = not quoted
        if char == "|" and not quoted:
            cells.append(current.strip())
            current = ""
        else:
            current += char
    return (*cells, current.strip())


def _marker(lines: list[str], index: int) -> tuple[str | None, str | None]:
    """The marker on the last non-blank line before ``lines[index]``."""
    for line in reversed(lines[:index]):
        if line.strip():
            found = MARKER.match(line.strip())
            return (found.group(1), found.group(2)) if found else (None, None)
    return None, None


def parse(path: Path) -> tuple[list[Block], list[Table]]:
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    tables: list[Table] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.lstrip().startswith("```"):
            end = next(
                i
                for i in range(index + 1, len(lines))
                if lines[i].lstrip().startswith("```")
            )
            language = line.strip()[3:].strip()
            text = "\n".join(lines[index + 1 : end])
            blocks.append(
                Block(path, index + 1, *_marker(lines, index), language, text)
            )
            index = end + 1
            continue
        if (
            line.startswith("|")
            and index + 1 < len(lines)
            and TABLE_RULE.match(lines[index + 1].strip())
        ):
            end = index + 2
            while end < len(lines) and lines[end].startswith("|"):
                end += 1
            rows = tuple(_cells(row) for row in lines[index + 2 : end])
            marker = _marker(lines, index)
            tables.append(Table(path, index + 1, *marker, _cells(line), rows))
            index = end
            continue
        index += 1
    return blocks, tables


PARSED = {path: parse(path) for path in DOCUMENTS}
BLOCKS = [block for blocks, _ in PARSED.values() for block in blocks]
TABLES_SHOWN = [table for _, tables in PARSED.values() for table in tables]
JSON_BLOCKS = [block for block in BLOCKS if block.language == "json"]


def _is_field_table(table: Table) -> bool:
    return table.header[0] in ("field", "claim")


def _is_error_table(table: Table) -> bool:
    return "`error`" in table.header


FIELD_TABLES = [table for table in TABLES_SHOWN if _is_field_table(table)]
ERROR_TABLES = [table for table in TABLES_SHOWN if _is_error_table(table)]


def _ids(marked: list[Any]) -> list[str]:
    return [f"{item.where} {item.name}" for item in marked]


def _backticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


# --- Every example and table says what it is ----------------------------------------


def test_every_json_block_says_what_it_is() -> None:
    unsaid = [
        block for block in JSON_BLOCKS if block.kind not in ("live", "not an answer")
    ]
    assert not unsaid, (
        "put <!-- live: NAME --> (an answer tests/docs_live.py asks for) or"
        " <!-- not an answer: why --> on the line before"
        f" {[block.where for block in unsaid]}"
    )


def test_every_field_and_error_table_says_what_it_is() -> None:
    unsaid = [
        table.where
        for table in FIELD_TABLES
        if table.kind not in ("live fields", "not an answer")
    ] + [table.where for table in ERROR_TABLES if table.kind != "live errors"]
    assert not unsaid, (
        "put <!-- live fields: NAME -->, <!-- live errors: NAME --> or"
        f" <!-- not an answer: why --> on the line before the tables at {unsaid}"
    )


def test_every_marker_names_something_asked() -> None:
    asked: dict[str, dict[str, Any]] = {
        "live": EXAMPLES,
        "live fields": FIELDS,
        "live errors": ERRORS,
    }
    unknown = [
        f"{marked.where}: {marked.kind}: {marked.name}"
        for marked in [*BLOCKS, *TABLES_SHOWN]
        if marked.kind in asked and marked.name not in asked[marked.kind]
    ]
    assert not unknown, f"tests/docs_live.py asks nothing by these names: {unknown}"
    shown = {(marked.kind, marked.name) for marked in [*BLOCKS, *TABLES_SHOWN]}
    unused = [
        f"{kind}: {name}"
        for kind, names in asked.items()
        for name in names
        if (kind, name) not in shown
    ]
    assert not unused, f"no document shows what tests/docs_live.py asks: {unused}"


# --- ... and is what the service answers -------------------------------------------


@pytest.fixture(scope="module")
def docs_service(
    base_env: dict[str, str], engine: sqlalchemy.Engine, redis_client: Any
) -> Iterator[tuple[LiveServer, Answers]]:
    """One service for the module, started empty as a default deploy, and
    every answer the documents show, asked of it at once (the tables are
    emptied before each test, and the keys it made with them)."""
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"TRUNCATE {', '.join(TABLES)} CASCADE"))
    redis_client.flushdb()
    live = LiveServer(base_env, SETTINGS)
    try:
        yield live, ask(live, engine)
    finally:
        live.stop()


@pytest.fixture
def answers(docs_service: tuple[LiveServer, Answers]) -> Answers:
    return docs_service[1]


@pytest.fixture
def app(docs_service: tuple[LiveServer, Answers]) -> Any:
    return docs_service[0].app


def _json_type(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return repr(value)
    for python, name in ((str, "string"), ((int, float), "number"), (list, "array")):
        if isinstance(value, python):
            return name
    return "object"


def _as_live(shown: Any, issuer: str) -> Any:
    """``shown`` with the issuer's placeholders filled in."""
    if isinstance(shown, str):
        for placeholder in ISSUER_PLACEHOLDERS:
            shown = shown.replace(placeholder, issuer)
    return shown


def differences(
    shown: Any, live: Any, varies: frozenset[str], issuer: str, at: str = "$"
) -> list[str]:
    """How an example differs from a live answer: keys at every level, values
    but those under a varying key (whose JSON type must still match)."""
    if isinstance(shown, dict) and isinstance(live, dict):
        found = []
        if set(shown) != set(live):
            found.append(
                f"{at}: shown but not answered {sorted(set(shown) - set(live))},"
                f" answered but not shown {sorted(set(live) - set(shown))}"
            )
        for key in shown.keys() & live.keys():
            if key in varies:
                if _json_type(shown[key]) != _json_type(live[key]):
                    found.append(
                        f"{at}.{key}: shown {shown[key]!r}, answered {live[key]!r}"
                    )
            else:
                found += differences(
                    shown[key], live[key], varies, issuer, f"{at}.{key}"
                )
        return found
    if isinstance(shown, list) and isinstance(live, list) and len(shown) == len(live):
        return [
            found
            for index, (one, other) in enumerate(zip(shown, live, strict=True))
            for found in differences(one, other, varies, issuer, f"{at}[{index}]")
        ]
    shown = _as_live(shown, issuer)
    if _json_type(shown) != _json_type(live) or shown != live:
        return [f"{at}: shown {shown!r}, answered {live!r}"]
    return []


LIVE_BLOCKS = [block for block in JSON_BLOCKS if block.kind == "live"]


@pytest.mark.parametrize("block", LIVE_BLOCKS, ids=_ids(LIVE_BLOCKS))
def test_the_json_example_is_what_the_service_answers(
    block: Block, answers: Answers
) -> None:
    assert block.name is not None
    shown = json.loads(block.text)
    live = answers.examples[block.name]
    found = differences(shown, live, EXAMPLES[block.name].varies, answers.issuer)
    assert not found, f"{block.where} shows {block.name} as it is not: {found}"


LIVE_FIELD_TABLES = [table for table in FIELD_TABLES if table.kind == "live fields"]


def _field_names(table: Table) -> dict[str, tuple[str, ...]]:
    """Each row's field names (the first column's), by row."""
    return {name: row for row in table.rows for name in _backticked(row[0])}


@pytest.mark.parametrize("table", LIVE_FIELD_TABLES, ids=_ids(LIVE_FIELD_TABLES))
def test_the_field_table_names_what_the_service_answers(
    table: Table, answers: Answers
) -> None:
    assert table.name is not None
    live = answers.fields[table.name]
    rows = _field_names(table)
    assert set(rows) == set(live), (
        f"{table.where}: listed but not answered {sorted(set(rows) - set(live))},"
        f" answered but not listed {sorted(set(live) - set(rows))}"
    )
    if table.header[1] != "value":
        return
    # A JSON list or switch shown as the value of one field is its value.
    for name, row in rows.items():
        if len(_backticked(row[0])) > 1:
            continue
        for written in _backticked(row[1]):
            try:
                shown = json.loads(written)
            except ValueError:
                continue
            if isinstance(shown, list | bool | dict):
                assert (
                    differences(shown, live[name], frozenset(), answers.issuer) == []
                ), f"{table.where}: {name} is shown as {written}, answered {live[name]}"


def _documented_errors(table: Table) -> set[tuple[int, str]]:
    status = table.header.index("status")
    error = table.header.index("`error`")
    pairs: set[tuple[int, str]] = set()
    for row in table.rows:
        statuses = [int(code) for code in _backticked(row[status])]
        errors = _backticked(row[error])
        if len(statuses) == len(errors):
            pairs.update(zip(statuses, errors, strict=True))
        else:
            pairs.update(itertools.product(statuses, errors))
    return pairs


LIVE_ERROR_TABLES = [table for table in ERROR_TABLES if table.kind == "live errors"]


@pytest.mark.parametrize("table", LIVE_ERROR_TABLES, ids=_ids(LIVE_ERROR_TABLES))
def test_the_error_table_has_the_errors_the_service_gives(
    table: Table, answers: Answers
) -> None:
    assert table.name is not None
    documented = _documented_errors(table)
    for provoked in answers.errors[table.name]:
        assert provoked.error == provoked.meant, (
            f"tests/docs_live.py meant to provoke {provoked.meant} for {table.name},"
            f" and got {provoked.status} {provoked.error}"
        )
        assert (provoked.status, provoked.error) in documented, (
            f"{table.where}: the service answers {provoked.status}"
            f" {provoked.error}, which this table does not say"
        )


def test_the_device_grant_answers_as_the_code_grant(answers: Answers) -> None:
    # docs/reference.md, "Polling": the 200 is the one of the code grant.
    assert set(answers.device_token) == set(answers.code_token)
    assert answers.device_token["token_type"] == answers.code_token["token_type"]


def test_the_guides_verifiers_accept_a_token_of_the_default_keys(
    answers: Answers,
) -> None:
    # docs/resource-servers.md's PyJWT and FastMCP blocks, run as written
    # against the RS256 keys a default deploy makes.
    claims_of_token = json.loads(
        base64.urlsafe_b64decode(answers.access_token.split(".")[1] + "==")
    )
    assert answers.verified == {"PyJWT": claims_of_token, "FastMCP": claims_of_token}


# --- Routes, the OpenAPI document, commands and links -------------------------------


def _route_shape(route: str) -> str:
    """``GET /login/<name>`` and ``GET /login/<path:name>`` alike."""
    return re.sub(r"<[^>]*>", "<>", route)


def _app_routes(app: Any) -> set[str]:
    return {
        _route_shape(f"{method} {rule.rule}")
        for rule in app.url_map.iter_rules()
        for method in (rule.methods or set()) - IMPLICIT_METHODS
    }


def test_every_route_the_documents_name_exists(app: Any) -> None:
    reference = (DOCS / "reference.md").read_text()
    headings = "\n".join(
        line for line in reference.splitlines() if line.startswith("#")
    )
    route_table = next(
        table for table in PARSED[README][1] if table.header == ("route", "what")
    )
    named = {
        "docs/reference.md's headings": ROUTE.findall(headings),
        "the README's table of routes": [
            route for row in route_table.rows for route in ROUTE.findall(row[0])
        ],
    }
    routes = _app_routes(app)
    for where, shown in named.items():
        gone = [route for route in shown if _route_shape(route) not in routes]
        assert not gone, f"{where} name routes the service does not have: {gone}"


def test_the_reference_names_every_route_open_to_other_origins(app: Any) -> None:
    reference = (DOCS / "reference.md").read_text()
    paragraph = reference.split("**CORS.**", 1)[1].split("\n\n", 1)[0]
    named = [route.split(" ", 1) for route in ROUTE.findall(paragraph)]
    routes = [
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        for method in sorted((rule.methods or set()) - IMPLICIT_METHODS)
    ]
    documented = {
        (method, path)
        for method, path in routes
        for shown_method, shown in named
        if method == shown_method
        and (path == shown or (shown.endswith("*") and path.startswith(shown[:-1])))
    }
    open_routes = {
        (method, path)
        for method, path in routes
        for pattern, (methods, _) in cors_routes(app).items()
        if method in methods and re.match(pattern, path)
    }
    assert documented == open_routes, (
        f"docs/reference.md, CORS: names {sorted(documented - open_routes)} that"
        f" are closed, leaves out {sorted(open_routes - documented)}"
    )


def test_the_reference_names_what_the_openapi_document_covers() -> None:
    # The one sentence that says which endpoints the document describes.
    reference = (DOCS / "reference.md").read_text()
    section = reference.split("### `GET /openapi.json`", 1)[1]
    sentence = section.split(". ", 1)[0]
    named = {
        _route_shape(path) for path in _backticked(sentence) if path.startswith("/")
    }
    document = json.loads((README.parent / "app" / "openapi.json").read_text())
    covered = {re.sub(r"\{[^}]*\}", "<>", path) for path in document["paths"]}
    assert named == covered, (named, covered)


def _commands(group: click.Group, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix}{name} ")
        else:
            yield prefix + name, command


def test_the_reference_names_every_command_and_option(app: Any) -> None:
    reference = (DOCS / "reference.md").read_text()
    section = reference.split("### Command line", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    # One entry a command; a line ending in a backslash goes on.
    entries = block.replace("\\\n", " ").splitlines()
    for name, command in _commands(app.cli):
        entry = next(
            (
                e
                for e in entries
                if e.startswith(f"flask --app app {name} ")
                or e == f"flask --app app {name}"
            ),
            None,
        )
        assert entry is not None, f"docs/reference.md, Command line: add {name}"
        options = [
            option
            for parameter in command.params
            for option in parameter.opts
            if option.startswith("--")
        ]
        missing = [option for option in options if option not in entry]
        assert not missing, f"docs/reference.md, Command line: {name} {missing}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    in_block = False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            in_block = not in_block
        if in_block or not re.match(r"#{1,6} ", line):
            continue
        slug = _slug(line.lstrip("#"))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_every_link_to_a_heading_finds_it() -> None:
    link = re.compile(r"\]\(([^)#:\s]*)#([^)\s]+)\)")
    broken = []
    for path in DOCUMENTS:
        for target, fragment in link.findall(path.read_text()):
            document = (path.parent / target) if target else path
            if document.suffix == ".md" and fragment not in _anchors(document):
                broken.append(f"{path.name} -> {target}#{fragment}")
    assert not broken, broken
