"""Placeholder."""

from flask import Blueprint

bp = Blueprint("mcp", __name__)
