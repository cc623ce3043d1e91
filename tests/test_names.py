"""backend.names: untrusted text -> safe identifiers and comments."""
import re

import pytest

from qfx_compile.backend import names

IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
NASTY = ['a"b', "x\ny", "end */ int x; /*", '#include "evil.h"', "$(rm -rf ~)", "`id`", "naïve_層", "x" * 10000,
         "", "123", "class", "int", "__x", "a b", "a-b", "a.b", "{}[]", "\\", "main", "_", "\x00\x01"]


@pytest.mark.parametrize("text", NASTY)
def test_identifier_is_safe(text):
    s = names.identifier(text)
    assert IDENT.match(s) and len(s) <= names.MAX_IDENT
    assert s not in names.CXX_KEYWORDS


def test_table_unique_and_deterministic():
    def run():
        t = names.NameTable(reserved=("qfx_top",))
        return [t(x) for x in ["a b", "a-b", "a.b", "A_B", "qfx_top", "a b", "x" * 10000, "x" * 9999 + "y"]]

    r1, r2 = run(), run()
    assert r1 == r2
    assert r1[0] == r1[5]  # the same original gets the same name
    distinct = r1[:5] + r1[6:]
    assert len({s.lower() for s in distinct}) == len(distinct)
    assert "qfx_top" not in r1
    assert all(IDENT.match(s) and len(s) <= names.MAX_IDENT for s in r1)


def test_table_keys_distinguish_same_text():
    t = names.NameTable()
    assert t("conv", key="node:conv") != t("conv", key="tensor:conv")


@pytest.mark.parametrize("text", NASTY)
def test_comment_is_safe(text):
    c = names.comment(text)
    assert len(c) <= names.MAX_COMMENT
    assert c.isascii() and "\n" not in c and "\r" not in c
    assert all(32 <= ord(ch) < 127 for ch in c)
    for bad in ("*/", "/*", "??", "$", "`", '"', "'", "\\", "{", "}", "<", ">", "|"):
        assert bad not in c


@pytest.mark.parametrize("text", ["a*/b", "/*/", "*/*/", "a/**/b", "???/", "x??/\n", "?*/?", "/" * 5 + "*" * 5])
def test_comment_breaks_comment_delimiters(text):
    c = names.comment(text)
    assert "*/" not in c and "/*" not in c and "??" not in c and not c.endswith("\\")


def test_comment_keeps_plain_names():
    assert names.comment("conv1.weight") == "conv1.weight"
    # '/' is harmless in a // comment: ONNX node names read as written
    assert names.comment("stem.0/Conv") == "stem.0/Conv"
    assert names.comment("layer1[0].conv1/Conv#2") == "layer1[0].conv1/Conv#2"
    assert names.comment("a\nb") == "a?b"


def test_printable_escapes_terminal_controls_and_keeps_text():
    from qfx_compile.backend.names import printable

    hostile = "a\x1b[2J\x1b]0;title\x07b\u202ec\u200bd\udcff\x9b"
    s = printable(hostile)
    assert all(0x20 <= ord(ch) < 0x7f for ch in s)
    assert s == "a\\x1b[2J\\x1b]0;title\\x07b\\u202ec\\u200bd\\udcff\\x9b"
    assert printable("layer1[0]/Conv é") == "layer1[0]/Conv é"  # ordinary text, markup-like or not, kept
    long = printable("x" * 10_000, 100)
    assert len(long) <= 100 and long.startswith("xxx") and "~" in long
