"""Placeholder."""

from flask import Blueprint

bp = Blueprint("account", __name__)
