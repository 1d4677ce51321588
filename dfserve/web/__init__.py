"""`dfserve web`: an HTTP job API (FastAPI) and a page to upload a video and see its verdict.

Imports FastAPI only when the app is built (`create_app`), so the rest of dfserve never needs it.
Nothing in pipeline/export/serving/client imports this package.
"""
from __future__ import annotations


def create_app(settings):
    from .app import create_app as _create

    return _create(settings)
