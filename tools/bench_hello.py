"""The framework floor for ``make bench``: a bare Flask "hello world".

gunicorn serves it with the app's own command line and ``gunicorn.conf.py``,
so the ratio of the app's requests per second to this app's is what the app
itself costs. Every path answers, for GET and POST alike, so the benchmark
can send it the very requests it sends the app.
"""

from __future__ import annotations

from flask import Flask


def create_app() -> Flask:
    app = Flask(__name__)

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST"])
    @app.route("/<path:path>", methods=["GET", "POST"])
    def hello(path: str) -> str:
        return "Hello, World!"

    return app
