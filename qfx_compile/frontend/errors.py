"""The one error the frontend raises for a file it cannot compile exactly (CLI exit status 2)."""
from __future__ import annotations


class ModelError(ValueError):
    """A model file that is malformed, unsupported, or not exactly fixed-point; names file and node."""

    def __init__(self, message: str, *, path: str | None = None, node: str | None = None, op: str | None = None):
        where = []
        if path is not None:
            where.append(f"{path}")
        if node is not None:
            where.append(f"node {node!r}" + (f" ({op})" if op else ""))
        self.path, self.node, self.op, self.reason = path, node, op, message
        super().__init__(f"{': '.join(where)}: {message}" if where else message)
