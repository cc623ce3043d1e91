"""Untrusted names (from the model file) -> safe identifiers and comment text.

Everything that comes from an ONNX file is untrusted: it may hold quotes,
newlines, ``*/``, ``#include``, ``$(...)``, backticks, non-ASCII text or be
10,000 characters long. Generated C++, Tcl and Makefiles only ever see:

* :func:`identifier` / :class:`NameTable`: ``[A-Za-z_][A-Za-z0-9_]*``, at most
  :data:`MAX_IDENT` characters, never a C/C++ keyword or a name reserved to the
  implementation (leading underscore + capital, double underscore), and unique
  within a table (collisions resolved deterministically by order of request);
* :func:`comment`: printable ASCII without ``*/``, ``/*``, ``??``, backslashes,
  ``$``, backticks, quotes, braces, ``|``, ``<>`` or newlines, capped at :data:`MAX_COMMENT`.
"""
from __future__ import annotations

import hashlib
import re

MAX_IDENT = 48
MAX_COMMENT = 80

CXX_KEYWORDS = frozenset("""
alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t char16_t char32_t class
compl concept const consteval constexpr constinit const_cast continue co_await co_return co_yield decltype
default delete do double dynamic_cast else enum explicit export extern false float for friend goto if inline
int long mutable namespace new noexcept not not_eq nullptr operator or or_eq private protected public register
reinterpret_cast requires return short signed sizeof static static_assert static_cast struct switch template
this thread_local throw true try typedef typeid typename union unsigned using virtual void volatile wchar_t
while xor xor_eq final override import module restrict _Bool _Complex _Imaginary
main std hls ap_fixed ap_ufixed ap_int ap_uint NULL EOF errno assert
""".split())

_BAD = re.compile(r"[^A-Za-z0-9_]+")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def identifier(text: object, *, prefix: str = "n", max_len: int = MAX_IDENT) -> str:
    """A safe C/Tcl/Make identifier derived from ``text`` (not unique: see :class:`NameTable`)."""
    raw = text if isinstance(text, str) else str(text)
    s = _BAD.sub("_", raw.encode("ascii", "ignore").decode("ascii"))
    s = re.sub(r"_+", "_", s).strip("_")
    changed = s != raw
    if not s:
        s = prefix
        changed = True
    if s[0].isdigit():
        s = f"{prefix}_{s}"
    if s in CXX_KEYWORDS or s.lower() in CXX_KEYWORDS:
        s = f"{prefix}_{s}"
    if len(s) > max_len:
        # keep it recognisable, make it unique-ish with a digest of the full original text
        s = s[: max_len - 9].rstrip("_") + "_" + _digest(raw)
        changed = False
    del changed
    return s


class NameTable:
    """Gives each distinct original name one unique safe identifier, deterministically.

    ``reserved`` names are never handed out (e.g. the top function, the
    generated helper names). The first request of a sanitized form gets it
    as is; later distinct originals that sanitize to the same form get
    ``_2``, ``_3``, ... in order of request.
    """

    def __init__(self, prefix: str = "n", reserved: tuple[str, ...] | frozenset = (), max_len: int = MAX_IDENT):
        self.prefix = prefix
        self.max_len = max_len
        self._by_orig: dict[str, str] = {}
        self._used: set[str] = {r.lower() for r in reserved}

    def __call__(self, original: object, key: str | None = None) -> str:
        """The identifier for ``original``; ``key`` (default: the text itself) tells originals apart."""
        text = original if isinstance(original, str) else str(original)
        key = text if key is None else key
        if key in self._by_orig:
            return self._by_orig[key]
        base = identifier(text, prefix=self.prefix, max_len=self.max_len - 4)
        cand, i = base, 2
        # case-insensitive uniqueness: file names on case-insensitive file systems must not clash
        while cand.lower() in self._used:
            cand = f"{base}_{i}"
            i += 1
        self._used.add(cand.lower())
        self._by_orig[key] = cand
        return cand


_COMMENT_BAD = re.compile(r"[^A-Za-z0-9 _.,:;=+\-()!?@%^~/*#&\[\]]")


def comment(text: object, max_len: int = MAX_COMMENT) -> str:
    """Text safe inside a C ``//`` or ``/* */`` comment, a Tcl/Make ``#`` comment or a Markdown cell.

    Layer names keep their usual punctuation (``stem.0/Conv``, ``layer1[0]``). What could end a
    comment, continue it onto the next line, start a string or a Markdown code span, or reach a
    shell or Make expansion becomes ``?``: newlines and other control characters, non-ASCII, quotes,
    backslashes, ``$``, backticks, braces, ``|``, ``<>``. ``*/`` and ``/*`` are broken, runs of
    ``?`` collapse to one (no ``??/`` trigraph); long text is cut with a digest.
    """
    raw = text if isinstance(text, str) else str(text)
    s = _COMMENT_BAD.sub("?", raw)
    while "*/" in s or "/*" in s:
        s = s.replace("*/", "*?").replace("/*", "?*")
    s = re.sub(r"\?{2,}", "?", s)
    if len(s) > max_len:
        s = s[: max_len - 12] + "...h" + _digest(raw)
    return s


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ud800-\udfff]")


def printable(text: object, max_len: int = 200) -> str:
    """Untrusted text (names, op types, domains, paths) made safe for a terminal message.

    Control characters (ESC and the rest of C0/C1: no escape sequence reaches the terminal), bidi and
    zero-width marks and lone surrogates (names decoded with ``surrogateescape``) are shown as
    ``\\xNN``/``\\uNNNN`` escapes; other text is kept, so a message still names what the user wrote.
    The result never holds rich markup meaning by itself: print it with ``markup=False``.
    Long text is cut in the middle with a digest.
    """
    raw = text if isinstance(text, str) else str(text)

    def esc(m: re.Match) -> str:
        c = ord(m.group(0))
        return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"

    s = _UNPRINTABLE.sub(esc, raw)
    if len(s) > max_len:
        keep = max(8, max_len - 14)
        s = s[: keep // 2] + "..." + s[len(s) - keep // 2:] + "~" + _digest(raw)
    return s
