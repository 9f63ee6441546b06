"""A sandbox of its own for each submission, from Linux namespaces and util-linux ``unshare`` (no Docker).

The grader starts every submission's process through this file, run as a script::

    setpriv --pdeathsig KILL unshare [--user --map-root-user] --net --ipc --pid --fork --kill-child \\
        --mount --mount-proc -- python -I -S sdlab/grading/sandbox.py CONFIG -- python -m sdlab.grading.harness ...

``unshare`` gives the process new namespaces: no network but loopback, its own processes, its own mounts.
Inside them, before any of the submission's code exists, this script

1. builds what the process sees of the files: an empty tmpfs over each folder it must not see (the grades,
   the submissions, the checkout, the home folder, /tmp, /run), the course's package and the Python
   environment bound back where they lie inside those, a /dev with only null, zero, full, random and
   urandom, *every* mount made read-only, and one small private tmpfs at /tmp, the only place it can write
   (its home folder and /dev/shm live there);
2. sets its limits: memory (address space), CPU time, file size and number of processes (rlimits, which
   everything it starts inherits);
3. becomes an unprivileged user: ``nobody`` when the grader runs as root, else a nested user namespace in
   which it holds no capability, so that it can neither undo the view nor gain privileges (no_new_privs);
4. replaces itself with the command after ``--`` (the harness).

That command is process 1 of the new PID namespace: when it ends, or when the grader kills ``unshare``
(``--kill-child``, and ``setpriv --pdeathsig`` should the grader itself die), the kernel kills every process
the submission started, whatever it did to escape (``setsid``, a double fork, a daemon that ignores SIGTERM).

Where namespaces are unavailable (no ``unshare``, a container that forbids them, ``SDLAB_GRADER_SANDBOX=off``)
the grader runs the same script without ``unshare``: it then only sets the limits (:func:`isolation` says
which mode this machine gets, once). The script runs before the sandboxed Python reads its site packages
(``-I -S``), so this module uses the standard library only.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = ["Isolation", "HOME", "isolation", "command", "view"]

SCRIPT = os.path.abspath(__file__)
NOBODY = 65534  # the user and group a submission runs as where the grader is root (nobody/nogroup on Debian)
PRIVATE = "/tmp"  # inside the sandbox: the private writable tmpfs
HOME = "/tmp/home"  # the submission's home folder and working folder, inside it
PRIVATE_BYTES = 512 * 2**20  # the private tmpfs holds at most this much (it lives in memory)
DEVICES = ("null", "zero", "full", "random", "urandom")  # the only devices in the sandbox's /dev
OFF = "SDLAB_GRADER_SANDBOX"  # set to "off" to grade without namespaces

# mount(2) and prctl(2) constants from <linux/mount.h>, <linux/sched.h> and <linux/prctl.h>
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_RELATIME = 1024, 2048, 4096, 16384, 1 << 21
CLONE_NEWUSER = 0x10000000
PR_SET_NO_NEW_PRIVS = 38


# ============================================================================ the grader's side

@dataclass(frozen=True)
class Isolation:
    """How this machine isolates a submission: in a namespace sandbox (``prefix`` starts one), or not."""

    sandboxed: bool
    prefix: tuple[str, ...]
    why: str = ""  # why there is no sandbox: one sentence for the teacher


def view(hidden: list[Path], kept: list[Path]) -> dict:
    """The sandbox's view of the files: the folders to hide, and those inside them to show again (read-only).

    Besides ``hidden``, the home folder, the temporary folders and /run (where the machine's sockets live) are
    always hidden. The Python installation and its environment are always shown.
    """
    hide = [*hidden, Path.home(), Path(tempfile.gettempdir()), Path("/tmp"), Path("/var/tmp"), Path("/run")]
    keep = [*kept, *(Path(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix))]
    keep = _unique(keep)
    return {"hide": _unique(hide), "keep": [k for k in keep if not any(_inside(k, o) and k != o for o in keep)]}


def _unique(paths: list[Path]) -> list[str]:
    found = []
    for path in paths:
        real = os.path.realpath(path)
        if real != "/" and real not in found:
            found.append(real)
    return found


def _namespaces() -> tuple[str, ...]:
    """The command prefix that starts a process in new namespaces, from util-linux alone."""
    user = () if os.geteuid() == 0 else ("--user", "--map-root-user")  # root needs no user namespace to mount
    unshare = ("unshare", *user, "--net", "--ipc", "--pid", "--fork", "--kill-child=SIGKILL", "--mount",
               "--mount-proc")
    # unshare dies with the grader (and takes the sandbox with it) even if the grader is killed
    return ("setpriv", "--pdeathsig", "KILL", *unshare) if shutil.which("setpriv") else unshare


def command(isolation: Isolation, config: dict, argv: list[str]) -> list[str]:
    """The command line that runs ``argv`` in a sandbox (or, without one, only under the limits)."""
    config = {**config, "sandbox": isolation.sandboxed}
    return [*isolation.prefix, sys.executable, "-I", "-S", SCRIPT, json.dumps(config), "--", *argv]


def isolation(config: dict, probe: list[str], env: dict) -> Isolation:
    """Can submissions run in a sandbox here? Tried once: ``probe`` is run inside one with the given view."""
    if os.environ.get(OFF, "").lower() in ("off", "0", "no", "false"):
        return Isolation(False, (), f"the environment variable {OFF} is set to off")
    return _try(json.dumps(config), tuple(probe), json.dumps(env))


@cache
def _try(config: str, probe: tuple[str, ...], env: str) -> Isolation:
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return Isolation(False, (), "this machine has no `unshare` (util-linux) to build one")
    sandbox = Isolation(True, _namespaces())
    try:
        done = subprocess.run(command(sandbox, json.loads(config), list(probe)), env=json.loads(env),
                              capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as error:
        return Isolation(False, (), f"`unshare` could not start ({error})")
    if done.returncode != 0:
        message = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        why = message[-1] if message else f"exit status {done.returncode}"
        return Isolation(False, (), f"one could not start on this machine ({why})")
    return sandbox


# ============================================================================ inside the new namespaces

@cache
def _libc() -> ctypes.CDLL:
    """The C library's mount, unshare and prctl, with their argument types (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
    libc.unshare.argtypes = (ctypes.c_int,)
    libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
    return libc


def _call(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    encode = lambda text: None if text is None else text.encode()
    _call(_libc().mount(encode(source), encode(target), encode(fstype), flags, encode(data)), f"mount {target}")


def _remount_read_only(point: str) -> None:
    """Make the mount at ``point`` read-only, keeping the flags the kernel will not let a user namespace drop."""
    flags = os.statvfs(point).f_flag
    keep = ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
            (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME))
    try:
        _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | sum(ms for st, ms in keep if flags & st))
    except OSError:
        if not os.statvfs(point).f_flag & os.ST_RDONLY:  # a mount hidden under another one is not reachable here;
            raise  # whatever mount covers the path must be read-only all the same


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _mount_points() -> list[str]:
    """Every mount point of this mount namespace, from /proc/self/mountinfo (octal escapes such as \\040 undone)."""
    with open("/proc/self/mountinfo", "rb") as handle:
        fields = [line.split(b" ")[4] for line in handle]
    unescape = lambda field: re.sub(rb"\\([0-7]{3})", lambda match: bytes([int(match[1], 8)]), field)
    return [os.fsdecode(unescape(field)) for field in fields]


def build_view(hide: list[str], keep: list[str]) -> None:
    """Hide, show again, make read-only: see the module's docstring. Runs as root of the mount namespace."""
    # Open what must stay visible before anything is hidden: /proc/self/fd/N still reaches it afterwards.
    kept = {path: os.open(path, os.O_PATH | os.O_DIRECTORY) for path in keep if os.path.isdir(path)}
    hidden = [path for path in hide if os.path.isdir(path)]
    # Outer folders first, so that a folder kept inside a hidden one, or hidden inside a kept one, ends on top.
    steps = sorted([(path, "hide") for path in hidden] + [(path, "keep") for path in kept],
                   key=lambda step: (step[0].count("/"), step[1]))
    for path, what in steps:
        if what == "hide" and os.path.isdir(path):  # no longer there when an outer folder hid it
            if path == PRIVATE:
                _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={PRIVATE_BYTES}")
            else:
                _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m")
        elif what == "keep" and any(_inside(path, folder) for folder in hidden):
            os.makedirs(path, exist_ok=True)
            _mount(f"/proc/self/fd/{kept[path]}", path, None, MS_BIND | MS_REC)
    for fd in kept.values():
        os.close(fd)
    _minimal_dev()
    # Every mount read-only, but the private tmpfs and /proc (the PID namespace's own).
    for point in _mount_points():
        if point != PRIVATE and not _inside(point, "/proc") and os.path.exists(point):
            _remount_read_only(point)
    # shared memory (Python's multiprocessing, torch) goes to the private tmpfs
    os.makedirs(f"{PRIVATE}/.shm", exist_ok=True)
    os.chmod(f"{PRIVATE}/.shm", 0o1777)
    _mount(f"{PRIVATE}/.shm", "/dev/shm", None, MS_BIND)


def _minimal_dev() -> None:
    """A /dev of its own with the few devices a program expects, and no others (no GPU, disk or terminal)."""
    devices = {name: os.open(f"/dev/{name}", os.O_PATH) for name in DEVICES if os.path.exists(f"/dev/{name}")}
    _mount("tmpfs", "/dev", "tmpfs", MS_NOSUID, "mode=755,size=1m")
    for name, fd in devices.items():
        open(f"/dev/{name}", "w").close()
        _mount(f"/proc/self/fd/{fd}", f"/dev/{name}", None, MS_BIND)
        os.close(fd)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"/dev/{name}")
    os.mkdir("/dev/shm")


def set_limits(limits: dict) -> None:
    """rlimits, inherited by every process the submission starts; a write past the file limit fails, quietly."""
    for name, value in limits.items():
        which = {"memory": resource.RLIMIT_AS, "cpu": resource.RLIMIT_CPU, "file": resource.RLIMIT_FSIZE,
                 "processes": resource.RLIMIT_NPROC}[name]
        soft = hard = int(value)
        if name == "cpu":
            hard = soft + 5  # SIGXCPU at the soft limit, SIGKILL five seconds of CPU later
        resource.setrlimit(which, (soft, hard))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # ignored signals stay ignored across exec


def _in_user_namespace() -> bool:
    with open("/proc/self/uid_map") as handle:
        return handle.read().split() != ["0", "0", "4294967295"]


def become_unprivileged() -> None:
    """Root: become nobody. Root of a user namespace: enter a nested one where the process is nobody, which
    keeps no capability across exec and owns none of the mounts above."""
    if _in_user_namespace():
        _call(_libc().unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
        for name, text in (("setgroups", "deny"), ("uid_map", f"{NOBODY} 0 1"), ("gid_map", f"{NOBODY} 0 1")):
            with open(f"/proc/self/{name}", "w") as handle:
                handle.write(text)
    else:
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
    _call(_libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")  # no setuid programs


def main(argv: list[str]) -> None:
    config, program = json.loads(argv[0]), argv[2:]
    os.umask(0o022)  # the folders made for the view must be readable by the sandbox's user
    if config["sandbox"]:
        build_view(config["hide"], config["keep"])
    set_limits(config.get("limits", {}))
    if config["sandbox"]:
        become_unprivileged()
        os.makedirs(HOME, exist_ok=True)
        os.chdir(HOME)
    os.execvp(program[0], program)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except Exception as error:  # the grader shows this line and records that the submission did not run
        print(f"sdlab sandbox: {error}", file=sys.stderr)
        raise SystemExit(70) from None
