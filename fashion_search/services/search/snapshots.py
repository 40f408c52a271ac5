"""Snapshots of the index: create, list and restore, for Qdrant Edge and qdrant-client (local directory or server).

Edge and local mode archive the index's own files, taken while no write can run (the index's lock, after a flush);
a Qdrant server makes and recovers its own collection snapshots. A restore replaces the index as a whole, and the
restored index's version is above any version served before, so no cached answer of the replaced index survives.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fashion_search.core.settings import Settings

SUFFIX = ".snapshot.tar"
META_FILE = "snapshot.json"


@dataclass(frozen=True)
class SnapshotInfo:
    """One stored snapshot: its name, size and when it was taken."""

    name: str
    size_bytes: int
    created: str


def snapshot_dir(settings: Settings) -> Path:
    """Where this collection's snapshots are kept (settings.snapshot_dir, else data_dir/snapshots)."""
    base = settings.snapshot_dir if str(settings.snapshot_dir) not in ("", ".") else settings.data_dir / "snapshots"
    return Path(base) / settings.collection


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def archive(sources: list[Path], dest_dir: Path, name: str, meta: dict[str, object]) -> Path:
    """Pack files and folders into dest_dir/name (written aside, then renamed: never half a snapshot)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / name
    fd, tmp = tempfile.mkstemp(dir=dest_dir, suffix=".tmp")
    os.close(fd)
    try:
        with tarfile.open(tmp, "w") as tar:
            for src in sources:
                if src.exists():
                    tar.add(src, arcname=src.name)
            data = json.dumps(meta).encode()
            info = tarfile.TarInfo(META_FILE)
            info.size = len(data)
            tar.addfile(info, fileobj=_bytes(data))
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def _bytes(data: bytes) -> object:
    import io

    return io.BytesIO(data)


def read_meta(path: Path) -> dict[str, object]:
    """The facts a snapshot archive records about itself (backend, version), or ValueError if it is not one."""
    try:
        with tarfile.open(path, "r") as tar:
            member = tar.extractfile(META_FILE)
            if member is None:
                raise ValueError(f"{path} is not a snapshot: it has no {META_FILE}")
            return dict(json.loads(member.read()))
    except (tarfile.TarError, KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a snapshot ({exc})") from None


def unpack(path: Path, into: Path) -> None:
    """Extract a snapshot archive into the empty folder `into` (members stay inside it)."""
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "r") as tar:
        tar.extractall(into, filter="data")


def replace_tree(new: Path, old: Path) -> None:
    """Put folder `new` where `old` is: old moves aside first, so a crash leaves one of the two in place."""
    aside = old.with_name(old.name + ".replaced")
    shutil.rmtree(aside, ignore_errors=True)
    if old.exists():
        os.replace(old, aside)
    os.replace(new, old)
    shutil.rmtree(aside, ignore_errors=True)


def list_snapshots(settings: Settings) -> list[SnapshotInfo]:
    """The stored snapshots of this collection, oldest first."""
    folder = snapshot_dir(settings)
    if not folder.is_dir():
        return []
    out = []
    for f in sorted(folder.glob(f"*{SUFFIX}")):
        stat = f.stat()
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stat.st_mtime))
        out.append(SnapshotInfo(f.name, stat.st_size, created))
    return out


def snapshot_name(settings: Settings, version: int) -> str:
    """A new snapshot's file name: collection, UTC time and index version."""
    return f"{settings.collection}-{_stamp()}-v{version}{SUFFIX}"


def find_snapshot(settings: Settings, name: str) -> Path:
    """The stored snapshot of that name (or a path to one), or ValueError."""
    path = Path(name)
    if not path.is_file():
        path = snapshot_dir(settings) / name
    if not path.is_file():
        raise ValueError(f"no snapshot {name!r} in {snapshot_dir(settings)}")
    return path
