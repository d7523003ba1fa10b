"""A throwaway root for install.sh: an overlay of the host's own / in a private mount namespace.

Everything written in it lands in an upper directory of the test's, never on the host: the host's
/ is the read-only lower layer. A root may start as a copy of another's upper layer, so a test can
start from "installed" without installing again. Each `run` is one session: a new
mount and PID namespace (`unshare`), the overlay mounted, /proc, /dev and a fresh /run, then the
script run by bash in a chroot. The PID namespace ends every process the session started (the
service the systemctl stub started included) when the script ends.

There is no init in the root, so systemctl is replaced by tests/ops/systemctl_stub.sh, installed
as /usr/local/sbin/systemctl, and /run/systemd/system is made so install.sh uses it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
STUB = HERE / "systemctl_stub.sh"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What a snapshot covers: everything install.sh may create or change.
WATCHED = [
    "/opt/cashloop", "/etc/cashloop", "/var/lib/cashloop", "/etc/systemd/system/cashloop.service",
    "/etc/systemd/system/cashloop.service.d", "/etc/systemd/system/multi-user.target.wants/cashloop.service",
    "/usr/local/bin/cashloop",
]
SNAPSHOT = r'''
import grp, hashlib, json, os, pwd, stat, sys
out = {}
def add(path):
    st = os.lstat(path)
    kind = "link" if stat.S_ISLNK(st.st_mode) else "dir" if stat.S_ISDIR(st.st_mode) else "file"
    row = {"kind": kind, "mode": oct(stat.S_IMODE(st.st_mode)), "owner": pwd.getpwuid(st.st_uid).pw_name,
           "group": grp.getgrgid(st.st_gid).gr_name}
    if kind == "link":
        row["target"] = os.readlink(path)
    elif kind == "file":
        row["size"] = st.st_size
        row["mtime_ns"] = st.st_mtime_ns
        with open(path, "rb") as fh:
            row["sha256"] = hashlib.sha256(fh.read()).hexdigest()
    out[path] = row
for top in sys.argv[1:]:
    if not os.path.lexists(top):
        continue
    add(top)
    if os.path.isdir(top) and not os.path.islink(top):
        for base, dirs, files in os.walk(top):
            for name in dirs + files:
                add(os.path.join(base, name))
for name in ("cashloop",):
    try:
        pw = pwd.getpwnam(name)
        out["user:" + name] = {"uid": pw.pw_uid, "gid": pw.pw_gid, "home": pw.pw_dir, "shell": pw.pw_shell}
    except KeyError:
        pass
print(json.dumps(out, sort_keys=True))
'''


def source_copy(dest: Path, root: Path = ROOT) -> Path:
    """The source tree as a clone would have it (no caches, no virtualenv, no local data)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules", ".venv", ".git", "demo-data",
                                    "test-artifacts", ".hypothesis", ".pytest_cache", ".ruff_cache",
                                    "*.egg-info")
    shutil.copytree(root, dest, ignore=ignore, symlinks=True)
    return dest


@dataclass
class Session:
    returncode: int
    output: str


class ThrowawayRoot:
    def __init__(self, base: Path, *, copy_of: ThrowawayRoot | None = None, lower: Path = Path("/")) -> None:
        self.base = base
        self.lower = copy_of.lower if copy_of is not None else lower
        self.upper = base / "upper"
        self.work = base / "work"
        self.merged = base / "merged"
        base.mkdir(parents=True, exist_ok=True)
        if copy_of is not None:
            # NOTE: overlayfs refuses a lower layer inside another (the earlier upper lies under /),
            # so a root starts from a copy of the earlier upper: owners, modes, whiteouts and all.
            subprocess.run(["cp", "-a", str(copy_of.upper), str(self.upper)], check=True, timeout=300)
        for d in (self.upper, self.work, self.merged):
            d.mkdir(parents=True, exist_ok=True)
        stub = self.upper / "usr/local/sbin/systemctl"
        stub.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(STUB, stub)
        stub.chmod(0o755)

    def run(self, script: str, *, timeout: float = 900, binds: tuple[Path, ...] = ()) -> Session:
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            pytest.fail("the throwaway root needs root and unshare (util-linux): run the tests as root")
        session = self.base / "session.sh"
        session.write_text(
            "set -e\n"
            "mount --make-rprivate /\n"
            f"mount -t overlay overlay -o lowerdir={self.lower},upperdir={self.upper},workdir={self.work} "
            f"{self.merged}\n"
            f"mount -t proc proc {self.merged}/proc\n"
            f"mount --rbind /dev {self.merged}/dev\n"
            f"mount -t tmpfs -o mode=0755 tmpfs {self.merged}/run\n"
            f"mkdir -p {self.merged}/run/systemd/system\n"
            # A root of another system (not an overlay of this one) sees the source through a bind.
            + "".join(f"mkdir -p {self.merged}{p}\nmount --bind {p} {self.merged}{p}\n" for p in binds)
            + (self._same_network() if str(self.lower) != "/" else "")
            + f"exec chroot {self.merged} /bin/bash -c {shlex.quote(script)}\n"
        )
        env = {k: v for k, v in os.environ.items() if k.startswith(("PIP_", "LANG", "LC_"))}
        env.update(PATH=PATH, HOME="/root", TERM="dumb", CASHLOOP_HEALTH_TIMEOUT="30")
        try:
            done = subprocess.run(
                ["unshare", "--mount", "--pid", "--fork", "--kill-child", "/bin/bash", str(session)],
                capture_output=True, text=True, timeout=timeout, env=env, check=False,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"a throwaway-root session ran over {timeout} s: {exc.stdout}{exc.stderr}")
        return Session(done.returncode, done.stdout + done.stderr)

    def _same_network(self) -> str:
        """A root of another system reaches the network as this host does: its resolver and the
        certificate authorities this host added (a proxy that inspects TLS needs them)."""
        local_cas = Path("/usr/local/share/ca-certificates")
        lines = f"cp /etc/resolv.conf {self.merged}/etc/resolv.conf\n"
        if local_cas.is_dir() and any(local_cas.iterdir()):
            lines += (f"mkdir -p {self.merged}{local_cas}\ncp -a {local_cas}/. {self.merged}{local_cas}/\n"
                      f"chroot {self.merged} update-ca-certificates >/dev/null 2>&1\n")
        return lines

    def snapshot_script(self, out: str) -> str:
        return f"/usr/bin/python3 -c {shlex.quote(SNAPSHOT)} {' '.join(WATCHED)} > {out}"

    def read(self, path: str) -> str:
        """A file the root wrote (read from its upper layer)."""
        return (self.upper / path.lstrip("/")).read_text(encoding="utf-8")
