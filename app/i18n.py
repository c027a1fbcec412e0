"""English and Chinese pages, chosen from ``Accept-Language``."""

from __future__ import annotations

from pathlib import Path

from flask import Flask, has_request_context, request
from flask_babel import Babel

#: The languages with a catalogue; the first is the fallback.
LANGUAGES = ("en", "zh")

babel = Babel()


def select_locale() -> str:
    # Operator commands share messages with pages; they speak the fallback.
    if not has_request_context():
        return LANGUAGES[0]
    return request.accept_languages.best_match(LANGUAGES) or LANGUAGES[0]


def init_app(app: Flask) -> None:
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(
        Path(__file__).parent / "translations"
    )
    babel.init_app(app, locale_selector=select_locale)
