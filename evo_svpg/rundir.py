"""A run directory has one writer and holds only what evo_svpg wrote there.

* :class:`RunLock`: an exclusive ``fcntl`` lock on ``DIR/.lock`` held for the run's lifetime.
  A second run into the same directory is refused naming the holder (pid, host, start time).
  The operating system drops the lock when its process dies, however it dies, so the lock file a
  killed run leaves behind is recognised as stale and taken over.
* :func:`check_fresh_out`: a new run never replaces files it did not write: an ``--out`` that
  already holds any of the names a run writes is refused (a run there is continued with
  ``--resume``).
* :func:`default_out`: ``runs/<mode>-<env>-seed<seed>-<time>``, made unique by creating it.
* :func:`atomic_write_bytes`: files are replaced whole or not at all.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import IO

LOCK = ".lock"
# Everything a run writes into its directory (the lock file aside).
RUN_OUTPUTS = (
    "config.json", "metrics.csv", "scalars.csv", "summary.json", "checkpoint.pt", "qd.npz",
    "tensorboard", "learning_curves.png",
)  # fmt: skip


def atomic_write_bytes(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write through ``write(file)`` to a temporary file, fsync, then rename over ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class RunLock:
    """Exclusive lock on ``directory/.lock`` until :meth:`release` (or the process ends)."""

    def __init__(self, directory: Path, what: str = "run") -> None:
        self.path = Path(directory) / LOCK
        self.fh = open(self.path, "a+")  # noqa: SIM115 (held open for the lock's lifetime)
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self.fh.seek(0)
            holder = self.fh.read().strip() or "another process"
            self.fh.close()
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise ValueError(
                f"{directory} is in use by another {what} ({holder}); wait for it to end or "
                "choose another directory"
            ) from None
        self.fh.seek(0)  # what a killed holder left is stale: replaced
        self.fh.truncate()
        started = datetime.datetime.now().isoformat(timespec="seconds")
        self.fh.write(f"pid {os.getpid()} on {socket.gethostname()} since {started}\n")
        self.fh.flush()

    def release(self) -> None:
        if not self.fh.closed:
            self.fh.seek(0)
            self.fh.truncate()
            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()


def make_directory(path: Path, flag: str = "--out") -> None:
    """``mkdir -p path``; ValueError naming ``flag`` and the path if it cannot be made."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{flag} {path}: cannot create it ({exc.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path} is not writable")


def check_fresh_out(path: Path) -> None:
    """Refuse a new run into ``path`` if it holds anything a run would write."""
    if not path.exists():
        return
    if not path.is_dir():
        raise ValueError(f"--out {path} is a file, not a directory")
    if (path / "config.json").exists() and _is_run_config(path / "config.json"):
        raise ValueError(
            f"--out {path} already holds a run; continue it with --resume {path} "
            "or pick another --out"
        )
    clashes = [name for name in RUN_OUTPUTS if (path / name).exists()]
    if clashes:
        raise ValueError(
            f"--out {path} already holds {', '.join(clashes)}, not written by an evo_svpg run "
            "there; a run would replace them: pick another --out"
        )


def remove_run_outputs(path: Path) -> None:
    """Delete what a new run that completed no iteration wrote into ``path`` (never other
    files), so the directory is free for a new run again."""
    for name in RUN_OUTPUTS:
        target = path / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        (path / f"{name}.tmp").unlink(missing_ok=True)  # an atomic write cut short


def _is_run_config(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("config"), dict)


def default_out(mode: str, env: str, seed: int, root: Path = Path("runs")) -> Path:
    """A new directory ``root/<mode>-<env>-seed<seed>-<time>[-k]``, created here so that two
    runs started in the same second cannot share it (``/`` in env ids becomes ``_``)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{mode}-{env.replace('/', '_')}-seed{seed}-{stamp}"
    make_directory(root, "runs directory")
    for k in range(1, 10_000):
        path = root / (base if k == 1 else f"{base}-{k}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise ValueError(f"cannot find a free run directory name under {root}")
