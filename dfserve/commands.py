"""Subcommands beyond `export` (score, demo, repo, serve, bench): each registers itself here."""
from __future__ import annotations

ALL = []
