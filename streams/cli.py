"""Moved to :mod:`streams.tools.cli`; this alias stays until tests/unit/test_evaluate.py (owned by
the branch that splits ``models/``) imports the new name, and then goes."""

from streams.tools.cli import build_parser, main

__all__ = ["main", "build_parser"]
