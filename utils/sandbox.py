"""Run one untrusted command as an unprivileged user, without network, with memory and process limits.

The grader (utils/grading.py) starts each submission's Jupyter kernel through this launcher:

    python -m utils.sandbox UID MEMORY_BYTES -- python -m ipykernel_launcher -f connection.json

It must start as root. In order it (1) moves into a new, empty network namespace (loopback only, brought up,
so a notebook may still talk to a server it starts itself on 127.0.0.1), (2) in a private mount namespace,
lays a read-only, empty folder over every private folder (mode 0700, such as /root) on the way to the Python
it runs, and binds back only the part it needs, so UID can start Python and sees nothing else of them,
(3) hands the current folder, its private copy, to UID, (4) caps memory, processes, file sizes and core dumps,
(5) drops every privilege to UID, for good (no setuid program can give one back), and (6) replaces itself
with the command. Each submission gets its own UID, so two submissions can neither signal each other's
processes nor write each other's files, and `clean_up(UID)` afterwards ends every process and removes every
file in the shared temporary folders that UID left behind. Linux only: it uses unshare(2), mount(2), prctl(2)
and setuid(2) through the C library, as `unshare` and `setpriv` (util-linux) do.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import resource
import shutil
import socket
import struct
import sys
from pathlib import Path

CLONE_NEWNET, CLONE_NEWNS = 0x40000000, 0x00020000  # <sched.h>: new network / mount namespaces
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x1, 0x20, 0x1000, 0x4000, 0x40000  # <sys/mount.h>
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1  # <linux/sockios.h>, <net/if.h>
PR_SET_NO_NEW_PRIVS = 38  # <linux/prctl.h>: execve() never grants privileges again (setuid bits ignored)
SHARED_TMP = ("/tmp", "/var/tmp", "/dev/shm")  # folders every user may write to
MAX_PROCESSES = 256  # per UID: enough for a kernel and its DataLoader workers, not for a fork bomb
MAX_FILE_BYTES = 2 * 2**30  # no single file over 2 GiB: a submission cannot fill the disk with one write


def available() -> str:
    """'' when this machine can sandbox kernels, else the reason it cannot (shown to the instructor)."""
    if not sys.platform.startswith("linux"):
        return f"sandboxing needs Linux (network namespaces); this is {sys.platform}."
    if os.geteuid() != 0:
        return ("sandboxing runs every kernel as its own unprivileged user, which needs root: run the grader "
                "as root (in a container or a VM made for grading, e.g. `sudo python -m utils.course grade ...`).")
    return ""


def _libc(name: str, *args: object) -> None:
    """Call a C library function that returns 0 on success; an OSError naming it otherwise."""
    if getattr(ctypes.CDLL(None, use_errno=True), name)(*args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{name}{args} failed: {os.strerror(errno)}")


def _mount(source: str | None, target: str | Path, fstype: str | None, flags: int, data: str | None) -> None:
    encode = lambda text: None if text is None else str(text).encode()  # noqa: E731
    _libc("mount", encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags), encode(data))


def _private_folders(paths: list[Path]) -> dict[Path, list[Path]]:
    """{topmost folder that others cannot enter: the paths inside it the sandbox needs} (/root: [.pyenv/...])."""
    needed: dict[Path, set[Path]] = {}
    for path in paths:
        private = next((p for p in reversed(path.parents) if not p.stat().st_mode & 0o001), None)
        if private is not None:  # no "x" for others on `private`: uid could not pass through it
            needed.setdefault(private, set()).add(path.relative_to(private))
    # A path inside another needed path comes along with it.
    return {folder: [r for r in sorted(rels) if not any(o != r and o in r.parents for o in rels)]
            for folder, rels in needed.items()}


def _open_private_folders(paths: list[Path], stage: Path) -> None:
    """Over each private folder on the way to `paths`, an empty read-only tmpfs with only `paths` bound in it."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE, None)  # nothing done here reaches the machine's mounts
    for number, (folder, inside) in enumerate(sorted(_private_folders(paths).items())):
        staged = stage.with_name(f"{stage.name}-{number}")
        staged.mkdir(mode=0o700)  # root only: uid never sees the private folder whole through it
        _mount(str(folder), staged, None, MS_BIND | MS_REC, None)
        _mount("tmpfs", folder, "tmpfs", 0, "mode=0755,size=1m")
        for relative in inside:
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.mkdir() if (staged / relative).is_dir() else target.touch()
            _mount(str(staged / relative), target, None, MS_BIND | MS_REC, None)
        _mount(None, folder, None, MS_BIND | MS_REMOUNT | MS_RDONLY, None)  # uid adds nothing next to them


def _unshare() -> None:
    """New network and mount namespaces: from here on only a fresh loopback interface exists."""
    _libc("unshare", CLONE_NEWNET | CLONE_NEWNS)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # `ip link set lo up`, without iproute2
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


def _give_folder(folder: Path, uid: int) -> None:
    """Make `folder` and everything in it (the private copy, the connection file) belong to `uid`."""
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, uid, uid, follow_symlinks=False)
    folder.chmod(0o700)  # no other user, and so no other submission, can look inside


def _limit(memory_bytes: int) -> None:
    """Address space (memory), processes of this UID, file size, no core dumps."""
    for limit, value in ((resource.RLIMIT_AS, memory_bytes), (resource.RLIMIT_NPROC, MAX_PROCESSES),
                         (resource.RLIMIT_FSIZE, MAX_FILE_BYTES), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(limit, (value, value))  # soft = hard: the process cannot raise them again


def enter(uid: int, memory_bytes: int) -> None:
    """Sandbox this process (see the module docstring); afterwards it runs as `uid` and cannot go back."""
    if reason := available():
        raise ValueError(reason)
    if uid <= 0:
        raise ValueError(f"uid must be a positive user id (not root); got {uid}.")
    _unshare()
    # What the kernel must reach: this Python (the venv and the installation it links to), the folders on
    # PYTHONPATH (the course's utils), the course's cache if one is given, and its own folder; the staging
    # points sit next to that folder.
    given = [*os.environ.get("PYTHONPATH", "").split(os.pathsep), os.environ.get("COURSE_CACHE", "")]
    paths = [Path(p).resolve() for p in (sys.base_prefix, sys.prefix, Path.cwd(), *filter(None, given))]
    paths = [p for p in paths if p.exists()]
    _open_private_folders(paths, Path.cwd().parent / f".stage-{uid}")
    _give_folder(Path.cwd(), uid)
    _limit(memory_bytes)
    _libc("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)  # last: after it, nothing above could be done again


def clean_up(uid: int) -> tuple[int, int]:
    """Kill every process still running as `uid` and remove its files in SHARED_TMP: (processes, files)."""
    killed = removed = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            line = next(line for line in status.read_text().splitlines() if line.startswith("Uid:"))
            if int(line.split()[1]) == uid:
                os.kill(int(status.parent.name), 9)  # SIGKILL
                killed += 1
        except (OSError, StopIteration, ValueError):  # it ended meanwhile
            continue
    for entry in (e for folder in SHARED_TMP if os.path.isdir(folder) for e in os.scandir(folder)):
        try:
            if entry.stat(follow_symlinks=False).st_uid == uid:
                shutil.rmtree(entry.path) if entry.is_dir(follow_symlinks=False) else os.unlink(entry.path)
                removed += 1
        except OSError:
            continue
    return killed, removed


def main(argv: list[str]) -> None:
    """`python -m utils.sandbox UID MEMORY_BYTES -- COMMAND ...`: sandbox, then exec COMMAND."""
    if len(argv) < 4 or argv[2] != "--":
        raise SystemExit("usage: python -m utils.sandbox UID MEMORY_BYTES -- COMMAND [ARG ...]")
    enter(int(argv[0]), int(argv[1]))
    os.execvp(argv[3], argv[3:])


if __name__ == "__main__":
    main(sys.argv[1:])
