"""Shared by the benchmark scripts: machine facts, CPU pinning, and writing bench/results.md.

results.md holds one section per benchmark script, each with one table; a run adds one row per
measured figure at the top of its table (newest first), so old runs stay comparable below it.
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.md"
COLUMNS = ("date", "commit", "machine", "parameters", "figure", "measured", "target", "verdict")
_INTRO = (
    "# Benchmark results\n\n"
    "Written by the scripts in this folder (see README.md), newest run first in each table. A row\n"
    "without its commit, machine and parameters cannot be compared, so it does not count.\n"
)


@dataclass(frozen=True)
class Figure:
    name: str
    measured: str
    target: str = "-"
    ok: bool | None = None  # None: informational, no target

    @property
    def verdict(self) -> str:
        return "-" if self.ok is None else ("PASS" if self.ok else "**MISS**")


def use_repo_root() -> None:
    """Make `app` and `sync` importable when a script is run as `python bench/<script>.py`."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def commit() -> str:
    """HEAD, with `+dirty <digest of the diff>` when code outside bench/ differs from it."""
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout

    try:
        head = git("rev-parse", "--short", "HEAD").strip()
        diff = git("diff", "HEAD", "--", ".", ":!bench")
        untracked = git("ls-files", "--others", "--exclude-standard", "--", "app", "sync")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not diff and not untracked:
        return head
    digest = hashlib.sha1((diff + untracked).encode(), usedforsecurity=False).hexdigest()[:8]
    return f"{head}+dirty (diff {digest})"


def machine(pinned: str) -> str:
    return (
        f"nproc {os.cpu_count()}, {pinned}, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {platform.system()} {platform.release()}"
    )


def pin_to(cpus: set[int]) -> str:
    """Pin this process (and what it starts later) to `cpus` when the machine has more; say what was done."""
    available = os.sched_getaffinity(0)
    chosen = cpus & available
    if len(available) <= len(chosen) or not chosen:
        return f"not pinned ({len(available)} CPU available)"
    os.sched_setaffinity(0, chosen)
    return "pinned to CPU " + ",".join(map(str, sorted(chosen)))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int | str = "self", field: str = "VmRSS") -> int:
    """A memory line of /proc/<pid>/status (VmRSS, VmHWM) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise ValueError(f"{field} not in /proc/{pid}/status")


def mb(kib: float) -> str:
    """KiB (as /proc and ru_maxrss report) in MB of 10^6 bytes, the unit of the targets."""
    return f"{kib * 1024 / 1e6:.0f} MB"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def record(
    script: str,
    parameters: str,
    pinned: str,
    figures: list[Figure],
    results: Path | None = None,
    *,
    write: bool = True,
) -> str:
    """Print the run as a table and (unless not `write`) add its rows to the top of the script's
    table in results.md."""
    results = results or RESULTS
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    head = (date, commit(), machine(pinned), parameters)
    rows = ["| " + " | ".join(_cell(c) for c in (*head, f.name, f.measured, f.target, f.verdict)) + " |"
            for f in figures]
    heading = f"## {script}"
    header = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS)
    if not write:
        return _print(script, date, head, parameters, figures, None)
    text = results.read_text() if results.exists() else _INTRO
    if heading + "\n" not in text:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n{header}\n"
    start = text.index(heading + "\n")
    sep = text.index("|" + "---|" * len(COLUMNS), start) + len("|" + "---|" * len(COLUMNS))
    text = text[:sep] + "\n" + "\n".join(rows) + text[sep:]
    results.write_text(text if text.endswith("\n") else text + "\n")
    return _print(script, date, head, parameters, figures, results)


def _print(
    script: str,
    date: str,
    head: tuple[str, ...],
    parameters: str,
    figures: list[Figure],
    results: Path | None,
) -> str:
    width = max(len(f.name) for f in figures)
    out = [f"{script}  {date}  commit {head[1]}", f"machine:    {head[2]}", f"parameters: {parameters}", ""]
    out += [f"  {f.name:<{width}}  {f.measured:<28} target {f.target:<14} {f.verdict}" for f in figures]
    out.append(f"\n(recorded in {results})" if results else "\n(not recorded: --no-record)")
    report = "\n".join(out)
    print(report, flush=True)
    return report
