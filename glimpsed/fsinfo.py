"""What filesystem a path lives on, and therefore how to watch it.

inotify (watchdog's native observer on Linux) only sees changes made through
the local kernel. On a network or host-shared filesystem a file written by
another machine (the NAS, a colleague's laptop, the VM host) produces no event,
so the inbox must be polled there. This module reads ``/proc/self/mountinfo``
to find the filesystem type; nothing else is needed and nothing is mounted.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

MOUNTINFO_PATH: Final[str] = "/proc/self/mountinfo"
WATCH_MODES: Final[tuple[str, ...]] = ("auto", "native", "polling")

# Filesystem types (as the kernel names them in mountinfo) on which inotify
# misses changes made elsewhere. FUSE filesystems appear as "fuse.<subtype>".
NETWORK_FS_TYPES: Final[frozenset[str]] = frozenset(
    {
        "nfs", "nfs4",  # NFS v2/3 and v4.x (kernel client)
        "cifs", "smb3", "smb2", "smbfs",  # SMB/CIFS: Windows, Samba, Synology/QNAP/TrueNAS shares
        "fuse.sshfs", "sshfs",  # sshfs (older setups report plain "sshfs")
        "fuse.rclone", "rclone",  # rclone mount: Google Drive, S3, OneDrive...
        "9p", "v9fs",  # Plan 9: QEMU/KVM shared folders, WSL2's view of Windows drives
        "ceph", "fuse.ceph", "fuse.ceph-fuse",  # CephFS (kernel client, ceph-fuse)
        "glusterfs", "fuse.glusterfs",  # GlusterFS native client
        "afs", "openafs", "coda",  # AFS family
        "lustre", "gpfs", "beegfs", "orangefs", "pvfs2", "wekafs",  # HPC parallel filesystems
        "davfs", "fuse.davfs2",  # WebDAV via davfs2 (the name depends on its version)
        "fuse.s3fs", "fuse.gcsfuse", "fuse.blobfuse", "fuse.blobfuse2", "fuse.goofys",  # object storage
        "fuse.juicefs", "juicefs", "fuse.mfs", "fuse.mfsmount", "fuse.lizardfs",  # JuiceFS, MooseFS, LizardFS
        "ocfs2", "gfs2",  # shared-disk cluster filesystems: other nodes' writes make no local events
        "vboxsf", "fuse.vmhgfs-fuse", "virtiofs", "drvfs",  # VM host folders, WSL1: host changes unseen
        "ncpfs",  # NetWare (legacy)
    }
)  # fmt: skip

# The kernel escapes space, tab, newline and backslash in mountinfo as \ooo.
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class MountInfo:
    """One line of mountinfo.

    Attributes:
        mount_point: Where the filesystem is mounted, escapes decoded.
        fs_type: Kernel filesystem type, e.g. ``"ext4"``, ``"cifs"``, ``"fuse.sshfs"``.
        source: What is mounted, e.g. ``"/dev/nvme0n1p2"`` or ``"//nas/photos"``.
    """

    mount_point: Path
    fs_type: str
    source: str


def _unescape(field: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[MountInfo]:
    """Parse the text of ``/proc/<pid>/mountinfo`` (see proc(5)).

    Each line reads ``id parent major:minor root mount_point options
    [optional fields...] - fs_type source super_options``. Malformed lines are
    skipped rather than raising: the kernel format is stable, but a fixture or a
    foreign kernel should not stop the daemon.

    Args:
        text: The whole file.

    Returns:
        The mounts in file order (later lines are mounted on top of earlier ones).
    """
    mounts: list[MountInfo] = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
            mount_point, fs_type, source = fields[4], fields[sep + 1], fields[sep + 2]
        except (ValueError, IndexError):
            continue
        mounts.append(MountInfo(Path(_unescape(mount_point)), _unescape(fs_type), _unescape(source)))
    return mounts


def read_mountinfo() -> str | None:
    """Return the text of ``/proc/self/mountinfo``, or None where it cannot be read (non-Linux)."""
    try:
        return Path(MOUNTINFO_PATH).read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return None


def mount_for(path: str | os.PathLike[str], mountinfo_text: str | None = None) -> MountInfo | None:
    """Find the mount that holds ``path``.

    The path is resolved first (symlinks followed, as far as it exists), so a
    symlink from a local folder to a share reports the share. When the same
    mount point appears more than once, the last line wins: it is mounted on top.

    Args:
        path: Any path; it does not have to exist.
        mountinfo_text: mountinfo text to use instead of reading ``/proc/self/mountinfo``.

    Returns:
        The mount with the longest mount point that is a prefix of the resolved
        path, or None when mountinfo cannot be read or no mount matches.
    """
    text = read_mountinfo() if mountinfo_text is None else mountinfo_text
    if text is None:
        return None
    resolved = Path(path).resolve(strict=False)
    best: MountInfo | None = None
    for mount in parse_mountinfo(text):
        inside = resolved == mount.mount_point or mount.mount_point in resolved.parents
        if inside and (best is None or len(mount.mount_point.parts) >= len(best.mount_point.parts)):
            best = mount
    return best


def is_network_fs(path: str | os.PathLike[str], mountinfo_text: str | None = None) -> bool:
    """True when ``path`` is on a filesystem in :data:`NETWORK_FS_TYPES` (False when unknown)."""
    mount = mount_for(path, mountinfo_text)
    return mount is not None and mount.fs_type in NETWORK_FS_TYPES


def choose_watch_mode(
    path: str | os.PathLike[str],
    mode: str,
    *,
    mountinfo_text: str | None = None,
    platform: str | None = None,
) -> tuple[str, str]:
    """Decide between native events and polling for an inbox.

    Args:
        path: The inbox.
        mode: ``"auto"`` (polling on network filesystems, native elsewhere),
            ``"native"`` or ``"polling"`` (forced).
        mountinfo_text: mountinfo text for tests; read from /proc when None.
        platform: ``sys.platform`` value for tests; the real one when None.

    Returns:
        ``("native" | "polling", reason)``, the reason worded for a log line or
        ``glimpsed doctor``.

    Raises:
        ValueError: ``mode`` is not one of :data:`WATCH_MODES`.

    Example:
        >>> choose_watch_mode("/srv/inbox", "polling")
        ('polling', 'watch mode polling set in the config')
    """
    if mode not in WATCH_MODES:
        raise ValueError(f"`mode` must be one of {', '.join(WATCH_MODES)}, got {mode!r}")
    if mode == "polling":
        return "polling", "watch mode polling set in the config"
    platform = sys.platform if platform is None else platform
    text = None
    if platform.startswith("linux"):
        text = read_mountinfo() if mountinfo_text is None else mountinfo_text
    mount = mount_for(path, text) if text is not None else None
    if mode == "native":
        if mount is not None and mount.fs_type in NETWORK_FS_TYPES:
            return "native", (
                f"watch mode native set in the config, but the inbox is on {mount.fs_type} "
                "(network filesystem): files written by other machines are only seen by the rescan"
            )
        return "native", "watch mode native set in the config"
    if not platform.startswith("linux"):
        return "native", f"cannot tell filesystem types on {platform}: native events (set polling for a network share)"
    if text is None:
        return "native", f"cannot read {MOUNTINFO_PATH}: native events (set polling for a network share)"
    if mount is None:
        return "native", "no mount found for the inbox in mountinfo: native events"
    if mount.fs_type in NETWORK_FS_TYPES:
        return "polling", f"inbox is on {mount.fs_type} (network filesystem): polling"
    return "native", f"inbox is on {mount.fs_type} (local filesystem): native events"


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes available to this (unprivileged) user on the filesystem holding ``path``.

    Raises:
        OSError: ``path`` does not exist or the filesystem cannot be queried.
    """
    return shutil.disk_usage(path).free
