"""Pages in English and Chinese, chosen from Accept-Language, with full catalogues."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from helpers import Browser

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "app" / "translations" / "zh" / "LC_MESSAGES"


@pytest.mark.parametrize(
    ("accept_language", "lang", "button"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh", "登录"),
        ("zh-TW", "zh", "登录"),
        ("en-US,en;q=0.9", "en", "Sign in"),
        ("fr-FR", "en", "Sign in"),
        (None, "en", "Sign in"),
    ],
)
def test_login_page_language_follows_accept_language(
    browser: Browser, accept_language: str | None, lang: str, button: str
) -> None:
    headers = {"Accept-Language": accept_language} if accept_language else {}
    page = browser.get("/login", headers=headers)
    assert f'<html lang="{lang}">' in page.text
    assert button in page.text


def test_consent_page_in_chinese(browser: Browser, user: dict[str, str]) -> None:
    from helpers import authorize_params, pkce_pair, register_client

    client = register_client(browser, client_name="Notes")
    browser.login(user["email"], user["password"])
    params = authorize_params(client, pkce_pair()[1])
    page = browser.get("/authorize", params=params, headers={"Accept-Language": "zh"})
    assert "Notes 请求访问你的账户" in page.text
    assert 'value="approve">授权</button>' in page.text


def test_every_message_has_a_chinese_translation(tmp_path: Path) -> None:
    template = tmp_path / "messages.pot"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "babel.messages.frontend",
            "extract",
            "-F",
            "babel.cfg",
            "-o",
            str(template),
            "app",
            "templates",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    with template.open("rb") as f:
        wanted = {m.id for m in read_po(f) if m.id}
    with (CATALOG / "messages.po").open("rb") as f:
        # A plural message is translated when every one of its forms is.
        translated = {m.id for m in read_po(f) if m.id and all(_forms(m.string))}
    assert wanted - translated == set(), "run `make translations` and translate"


def _forms(value: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    if isinstance(value, (tuple, list)):
        return tuple(value)
    return (value or "",)


def _plain(value: object) -> object:
    """A plural message as a tuple of forms (``read_mo`` gives lists)."""
    return tuple(value) if isinstance(value, list | tuple) else value


def test_compiled_catalogue_matches_its_source() -> None:
    with (CATALOG / "messages.po").open("rb") as f:
        source = {
            _plain(m.id): _plain(m.string) for m in read_po(f) if m.id and not m.fuzzy
        }
    with (CATALOG / "messages.mo").open("rb") as f:
        compiled = {_plain(m.id): _plain(m.string) for m in read_mo(f) if m.id}
    assert compiled == source, "run `pybabel compile -d app/translations`"
