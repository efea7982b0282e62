"""Moved to :mod:`streams.tools.eval`; this alias stays until tests/unit/test_evaluate.py (owned by
the branch that splits ``models/``) imports the new name, and then goes."""

from streams.tools.eval import _FORMATS, add_arguments, main

__all__ = ["main", "add_arguments", "_FORMATS"]
