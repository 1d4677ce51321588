"""Lazy imports of optional / GPU-only packages with a message naming the package and the extra."""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError


def require(module: str, package: str | None = None, extra: str | None = None) -> ModuleType:
    """Import `module` or raise MissingDependencyError saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pkg = package or module
        hint = f"pip install 'dfserve[{extra}]'" if extra else f"pip install {pkg}"
        raise MissingDependencyError(
            f"this feature needs the package {pkg!r} (import {module!r} failed: {exc}); "
            f"install it with: {hint}"
        ) from exc
