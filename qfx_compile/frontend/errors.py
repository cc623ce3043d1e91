"""The one error the frontend raises for a file it cannot compile exactly (CLI exit status 2)."""
from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ud800-\udfff]")


def shown(text: object) -> str:
    """Untrusted text (a name, op type, domain or path from the model) as it may appear in a message:
    control characters, bidi/zero-width marks and lone surrogates escaped (no terminal escape sequence)."""
    s = text if isinstance(text, str) else str(text)
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}" if ord(m.group(0)) < 0x100
                        else f"\\u{ord(m.group(0)):04x}", s)


class ModelError(ValueError):
    """A model file that is malformed, unsupported, or not exactly fixed-point; names file and node.

    The file name, node name and op are shown escaped (:func:`shown`); the CLI escapes the whole message
    again before printing it, as other parts of a message may quote the model too."""

    def __init__(self, message: str, *, path: str | None = None, node: str | None = None, op: str | None = None):
        where = []
        if path is not None:
            where.append(shown(path))
        if node is not None:
            where.append(f"node {node!r}" + (f" ({shown(op)})" if op else ""))
        self.path, self.node, self.op, self.reason = path, node, op, message
        super().__init__(f"{': '.join(where)}: {message}" if where else message)
