"""Tests for glimpsed.fsinfo: mountinfo parsing and the choice of watch mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from glimpsed import fsinfo
from glimpsed.fsinfo import MountInfo, choose_watch_mode, is_network_fs, mount_for, parse_mountinfo

# Shaped like a real workstation's /proc/self/mountinfo: optional fields
# (shared:N, master:N) before " - ", escapes for spaces, nested mounts, and
# one mount point mounted twice (the later line is on top).
MOUNTINFO = "\n".join(
    [
        "22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw",
        "28 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro",
        "29 28 259:3 / /srv/data rw,relatime shared:30 - xfs /dev/nvme1n1 rw,attr2,inode64",
        "101 28 0:52 / /mnt/nas rw,relatime shared:60 - nfs4 nas.lan:/volume1/photos "
        "rw,vers=4.2,rsize=1048576,wsize=1048576,hard,proto=tcp",
        "102 101 0:53 / /mnt/nas/local\\040cache rw,relatime shared:61 - tmpfs tmpfs rw,size=1024k",
        "103 28 0:54 / /mnt/win\\040share rw,relatime shared:62 master:3 - cifs //winbox/Photo\\040Drop "
        "rw,vers=3.1.1,cache=strict,username=ann",
        "104 28 0:55 / /home/ann/remote rw,nosuid,nodev,relatime shared:63 - fuse.sshfs ann@build:/data "
        "rw,user_id=1000,group_id=1000",
        "105 29 0:56 / /srv/data/inbox rw,relatime - cifs //nas/inbox rw,vers=3.0",
        "106 29 0:57 / /srv/data/inbox rw,relatime - ext4 /dev/sdb1 rw",
        "this line is garbage",
    ]
)


def test_parse_decodes_escapes_and_skips_optional_fields() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert len(mounts) == 9  # the garbage line is skipped
    cifs = next(m for m in mounts if m.fs_type == "cifs")
    assert cifs == MountInfo(Path("/mnt/win share"), "cifs", "//winbox/Photo Drop")
    nfs = next(m for m in mounts if m.fs_type == "nfs4")
    assert nfs.source == "nas.lan:/volume1/photos"


@pytest.mark.parametrize(
    ("path", "fs_type"),
    [
        ("/home/ann/inbox", "ext4"),
        ("/", "ext4"),
        ("/mnt/nas", "nfs4"),
        ("/mnt/nas/inbox/sub", "nfs4"),
        ("/mnt/nas/local cache/x", "tmpfs"),  # nested mount: longest prefix wins
        ("/mnt/nasty", "ext4"),  # a string prefix is not a path prefix
        ("/mnt/win share/in", "cifs"),
        ("/home/ann/remote/photos", "fuse.sshfs"),
        ("/srv/data/x", "xfs"),
        ("/srv/data/inbox/a.jpg", "ext4"),  # mounted twice: the later line is on top
    ],
)
def test_mount_for_picks_longest_prefix(path: str, fs_type: str) -> None:
    mount = mount_for(path, MOUNTINFO)
    assert mount is not None
    assert mount.fs_type == fs_type


def test_mount_for_resolves_symlinks(tmp_path: Path) -> None:
    target = tmp_path / "real"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    text = f"1 0 0:1 / / rw - ext4 /dev/a rw\n2 1 0:2 / {target} rw - nfs srv:/x rw\n"
    mount = mount_for(link / "inbox", text)
    assert mount is not None and mount.fs_type == "nfs"


def test_mount_for_without_match_or_text() -> None:
    assert mount_for("/x", "") is None
    assert is_network_fs("/x", "") is False


def test_is_network_fs() -> None:
    assert is_network_fs("/mnt/nas/in", MOUNTINFO)
    assert is_network_fs("/home/ann/remote", MOUNTINFO)
    assert not is_network_fs("/home/ann", MOUNTINFO)


def test_network_types_cover_the_usual_suspects() -> None:
    wanted = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "fuse.rclone", "9p", "ceph", "glusterfs",
              "fuse.glusterfs", "afs", "lustre", "gpfs", "beegfs", "davfs", "fuse.davfs2", "fuse.s3fs",
              "fuse.gcsfuse", "ocfs2"}
    assert wanted <= fsinfo.NETWORK_FS_TYPES
    assert not {"ext4", "xfs", "btrfs", "zfs", "tmpfs", "overlay"} & fsinfo.NETWORK_FS_TYPES


@pytest.mark.parametrize(
    ("path", "mode", "expected", "in_reason"),
    [
        ("/mnt/win share/in", "auto", "polling", "inbox is on cifs (network filesystem): polling"),
        ("/mnt/nas/in", "auto", "polling", "nfs4"),
        ("/home/ann/remote", "auto", "polling", "fuse.sshfs"),
        ("/home/ann/inbox", "auto", "native", "inbox is on ext4 (local filesystem)"),
        ("/home/ann/inbox", "polling", "polling", "set in the config"),
        ("/mnt/nas/in", "polling", "polling", "set in the config"),
        ("/home/ann/inbox", "native", "native", "set in the config"),
        ("/mnt/nas/in", "native", "native", "only seen by the rescan"),
    ],
)
def test_choose_watch_mode(path: str, mode: str, expected: str, in_reason: str) -> None:
    got, reason = choose_watch_mode(path, mode, mountinfo_text=MOUNTINFO, platform="linux")
    assert got == expected
    assert in_reason in reason


def test_choose_watch_mode_off_linux_is_native() -> None:
    got, reason = choose_watch_mode("/Volumes/nas", "auto", platform="darwin")
    assert got == "native"
    assert "darwin" in reason


def test_choose_watch_mode_unreadable_mountinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fsinfo, "MOUNTINFO_PATH", "/nonexistent/mountinfo")
    got, reason = choose_watch_mode("/srv/in", "auto", platform="linux")
    assert got == "native"
    assert "cannot read /nonexistent/mountinfo" in reason


def test_choose_watch_mode_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="`mode` must be one of auto, native, polling, got 'inotify'"):
        choose_watch_mode("/srv/in", "inotify")


def test_real_mountinfo_and_free_bytes(tmp_path: Path) -> None:
    mode, reason = choose_watch_mode(tmp_path, "auto")  # whatever this machine is, it answers
    assert mode in ("native", "polling") and reason
    assert fsinfo.free_bytes(tmp_path) > 0
