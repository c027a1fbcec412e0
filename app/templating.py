"""Template helpers: every URL a page prints is built from ``ISSUER``; each
page's messages come from the request's catalogue, found once."""

from __future__ import annotations

from typing import Any

from flask import Flask, g, request, url_for
from flask_babel import get_locale, get_translations

from .config import current_settings


def public_url(endpoint: str, **values: Any) -> str:
    """Build an absolute URL under the issuer, whatever Host the request carried."""
    path = url_for(endpoint, **values)
    root = request.script_root if request else ""
    if root and path.startswith(root):
        path = path[len(root) :]
    return current_settings().issuer + path


def page_translations() -> Any:
    """The catalogue of this request's locale, as Flask-Babel's ``_`` uses.

    Flask-Babel finds it anew for every message a template translates
    (about 14 µs each, a dozen or more a page). The locale is still asked
    each time, so a different one (``force_locale``, ``refresh``) gets its own.
    """
    locale = get_locale()
    found = g.get("page_translations")
    if found is None or found[0] is not locale:
        found = g.page_translations = (locale, get_translations())
    return found[1]


def init_app(app: Flask) -> None:
    app.jinja_env.globals.update(public_url=public_url, get_locale=get_locale)
    # As Flask-Babel installs them (newstyle: autoescaped, %-formatted),
    # with the catalogue found once per request.
    app.jinja_env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=lambda s: page_translations().ugettext(s),
        ngettext=lambda s, p, n: page_translations().ungettext(s, p, n),
        newstyle=True,
        pgettext=lambda c, s: page_translations().upgettext(c, s),
        npgettext=lambda c, s, p, n: page_translations().unpgettext(c, s, p, n),
    )
