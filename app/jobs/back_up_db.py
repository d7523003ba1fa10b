"""back_up_db: the nightly online backup, then encryption, the second copy and rotation.

Run by the scheduler at `ops.backup.time` (local) and by `cashloop backup`. The copy is taken with
SQLite's backup API while the service keeps writing (backups/backup.py), checked, then, when a key
is set, sealed (backups/encryption.py) so that only the sealed file stays. Each folder is rotated
by the same daily/weekly/monthly counts. A failure raises BackupFailed and leaves no half file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess  # nosec B404
from dataclasses import dataclass, field
from pathlib import Path

from app.config import Config, expand_credentials
from app.services import Services
from backups import encryption, rotation
from backups.backup import BackupError, backup

log = logging.getLogger(__name__)
COPY_TIMEOUT_SECONDS = 3600


class BackupFailed(RuntimeError):
    """The backup (or its copy) could not be made; the message says which step and why."""


@dataclass
class BackupReport:
    path: Path
    copied_to: list[str] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        extra = f"; copied to {', '.join(self.copied_to)}" if self.copied_to else ""
        return f"backup: {self.path}{extra}; {len(self.removed)} old backups removed"


def folder(cfg: Config) -> Path:
    return Path(cfg.ops.backup.folder or cfg.data_path / "backups")


def key(cfg: Config) -> bytes | None:
    """The backup key, or None when backups are not encrypted. Raises EncryptionError."""
    path = cfg.ops.backup.encryption_key_file
    return encryption.load_key(Path(expand_credentials(path))) if path else None


def run(services: Services) -> BackupReport:
    """One backup; see the module doc. Not idempotent: each call makes a new file."""
    cfg = services.config
    settings = cfg.ops.backup
    dest = folder(cfg)
    try:
        secret = key(cfg)
        plain = backup(cfg.db_path, dest, now=services.clock.utc_now())
    except (OSError, BackupError, encryption.EncryptionError) as exc:
        raise BackupFailed(f"backup of {cfg.db_path} failed: {exc}") from exc
    path = _seal(plain, secret) if secret else plain
    report = BackupReport(path)
    if settings.copy_to:
        report.copied_to.append(str(_copy(path, Path(settings.copy_to))))
    if settings.copy_command:
        _run_copy_command(settings.copy_command, path)
        report.copied_to.append(settings.copy_command[0])
    for where in [dest, *([Path(settings.copy_to)] if settings.copy_to else [])]:
        report.removed += rotation.rotate(
            where, daily=settings.keep_daily, weekly=settings.keep_weekly, monthly=settings.keep_monthly,
            tz=cfg.tz,
        )
    log.info("%s", report.summary())
    return report


def _seal(plain: Path, secret: bytes) -> Path:
    sealed = plain.with_name(plain.name + ".enc")
    partial = plain.with_name(f".{sealed.name}.partial")
    try:
        encryption.encrypt_file(plain, partial, secret)
        os.replace(partial, sealed)
    except OSError as exc:
        raise BackupFailed(f"encrypting {plain} failed: {exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        plain.unlink(missing_ok=True)  # only the sealed file may stay
    return sealed


def _copy(path: Path, target_dir: Path) -> Path:
    target = target_dir / path.name
    partial = target_dir / f".{path.name}.partial"
    try:
        target_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with path.open("rb") as src, os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, 1024 * 1024)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise BackupFailed(f"copying {path.name} to {target_dir} failed: {exc}") from exc
    return target


def _run_copy_command(command: tuple[str, ...], path: Path) -> None:
    # The operator's own command from the config, as an argument list: no shell ever parses it.
    argv = [str(path) if part == "{file}" else part for part in command]
    try:
        done = subprocess.run(  # noqa: S603 # nosec B603
            argv, capture_output=True, text=True, timeout=COPY_TIMEOUT_SECONDS, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackupFailed(f"copy_command {command[0]} failed: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
        raise BackupFailed(f"copy_command {command[0]} exited {done.returncode}: {tail[0][:300]}")
