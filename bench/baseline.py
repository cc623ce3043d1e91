"""Before/after in one run: a bench script timed on this checkout and on an earlier commit, alternately.

``python bench/X.py --baseline REF`` extracts ``qfx_compile/`` at git commit REF
(``git archive``) into a temporary folder, then runs ``X.py --json`` ``rounds`` times
against each tree, alternating (before, after, before, ...), so that background load
falls on both alike, and reports the median of each field. The child picks the tree
with ``--pkg DIR`` (put first on ``sys.path``).
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def use_pkg(argv: list[str]) -> None:
    """Honour ``--pkg DIR`` before qfx_compile is imported (call at the top of a bench script)."""
    if "--pkg" in argv:
        sys.path.insert(0, argv[argv.index("--pkg") + 1])
    else:
        sys.path.insert(0, str(ROOT))


def extract(ref: str, dest: str) -> str:
    """``qfx_compile/`` (and the mapped templates / hls_lib) at ``ref`` under ``dest``; returns its commit."""
    commit = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    tar = Path(dest) / "src.tar"
    subprocess.run(["git", "archive", "-o", str(tar), ref, "qfx_compile", "templates", "hls_lib"], cwd=ROOT,
                   check=True)
    with tarfile.open(tar) as t:
        t.extractall(dest, filter="data")
    return commit


def compare(script: str, args: list[str], ref: str, rounds: int) -> tuple[dict, dict, str]:
    """Median of each numeric field printed (as JSON, last line) by ``script --json`` at ``ref`` and here."""
    with tempfile.TemporaryDirectory() as d:
        commit = extract(ref, d)
        runs = {"before": [], "after": []}
        for _ in range(rounds):
            for key, extra in (("before", ["--pkg", d]), ("after", [])):
                out = subprocess.run([sys.executable, script, *args, "--json", *extra], capture_output=True,
                                     text=True, check=True).stdout
                runs[key].append(json.loads(out.strip().splitlines()[-1]))
    med = {k: {f: statistics.median(r[f] for r in v) for f in v[0] if isinstance(v[0][f], (int, float))}
           for k, v in runs.items()}
    return med["before"], med["after"], commit


def head() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()


def command(argv: list[str]) -> str:
    """The command line that produced a result, as the README quotes it (without ``--readme``)."""
    args = [a for a in argv[1:] if a != "--readme"]
    return " ".join(["python", f"bench/{Path(argv[0]).name}", *args])


def write_readme(name: str, text: str) -> None:
    """Put ``text`` between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in README.md."""
    readme = ROOT / "README.md"
    s = readme.read_text()
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in s or end not in s:
        raise SystemExit(f"README.md has no {begin} ... {end} markers; nothing written")
    a, b = s.index(begin) + len(begin), s.index(end)
    readme.write_text(s[:a] + "\n" + text.rstrip() + "\n" + s[b:])
    print(f"written into README.md ({name})")
