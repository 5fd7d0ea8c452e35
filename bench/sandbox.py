"""Isolated execution of untrusted, model-generated Python programs.

Mechanism: bubblewrap (``bwrap``, Debian package ``bubblewrap``; ``scripts/ensure-sandbox.sh``
installs it). Each program runs in fresh PID, network, IPC and UTS namespaces (so it sees only
loopback, cannot signal or even name the scorer, and dies with the namespace), over a new root
that holds only read-only ``/usr``, the ``/lib*`` links, the base Python installation of the
scorer (its directory alone, even under /root; never the venv) and small size-capped tmpfs mounts
on ``/tmp`` (the working directory) and ``/dev/shm``. Nothing else from /work, /root, /etc or the
home directory is mounted, so the program can neither read nor change results or the repository,
and its files disappear with the sandbox. bwrap was chosen over ``unshare`` + chroot because it does
the mount setup correctly in one exec (cheap per run) and works both unprivileged (via a user
namespace) and as root.

Resource limits (CPU, address space, file size, processes, open files) are set by a few lines of
Python that run inside the sandbox before the program (``_BOOT``), because RLIMIT_NPROC must be
applied after the namespaces exist. RLIMIT_NPROC counts every process of a (user namespace, uid),
so each sandbox must be a user of its own, or one program forking to its limit makes a correct
program in a concurrent sandbox fail to fork (two code trials score at once). Unprivileged, the
user namespace bwrap creates makes the count per sandbox. As root, bwrap runs without a user
namespace (with one, the program would still be kernel uid 0, which RLIMIT_NPROC never limits),
so the boot code drops to a uid of its own: ``UID_BASE + slot``, the slot held for the sandbox's
life by an ``flock`` on ``UID_LOCK_DIR/<slot>`` (host-wide, so scorers in other processes never
share it) and skipped while any process of that uid exists. A host where that uid cannot be taken
refuses to score code, as a missing bwrap does. The parent enforces wall time by killing bwrap's
process group; ``--die-with-parent`` then takes down the PID namespace and everything in it.

Where bwrap is missing or cannot start a sandbox, ``run`` raises ``SandboxUnavailable``; it never
runs code unguarded.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

INSTALL_HINT = (
    "install bubblewrap: `sudo apt-get install bubblewrap` on Debian/Ubuntu "
    "(or run scripts/ensure-sandbox.sh as root)"
)
# As root every sandbox runs as a uid of its own from this range (module docstring).
UID_BASE = 1_900_000_000
UID_SLOTS = 1024
UID_LOCK_DIR = "/run/hizfo-bench/sandbox-uids"

# Runs first inside the sandbox (as `python -I -S -c _BOOT limits...`), then the program in the
# same interpreter: one Python start-up per run instead of two.
_BOOT = """\
import os, resource, site, sys
cpu, mem, fsize, nproc, nofile, uid = map(int, sys.argv[1:7])
for lim, soft, hard in ((resource.RLIMIT_CPU, cpu, cpu + 1), (resource.RLIMIT_AS, mem, mem),
                        (resource.RLIMIT_FSIZE, fsize, fsize), (resource.RLIMIT_CORE, 0, 0),
                        (resource.RLIMIT_NOFILE, nofile, nofile), (resource.RLIMIT_NPROC, nproc, nproc)):
    resource.setrlimit(lim, (soft, hard))
if os.getuid() == 0:
    try:
        os.setgroups([]); os.setgid(uid); os.setuid(uid)
    except OSError as e:
        raise SystemExit(f"sandbox: cannot run as a uid of its own ({uid}): {e}")
    if os.getuid() == 0 or os.geteuid() == 0:
        raise SystemExit("sandbox: could not drop root")
site.setquit()
sys.argv = ["main.py"]
main = type(sys)("__main__")
main.__file__ = "main.py"
boot, sys.modules["__main__"] = sys.modules["__main__"], main  # a real __main__ for pickle & co
with open("main.py", "rb") as f:
    exec(compile(f.read(), "main.py", "exec"), main.__dict__)
"""

_SIGNAL_HINTS = {
    signal.SIGKILL: "memory or CPU limit?",
    signal.SIGXCPU: "CPU time limit",
    signal.SIGXFSZ: "file size limit",
    signal.SIGSEGV: "crash, stack overflow?",
}


class SandboxUnavailable(RuntimeError):
    """The isolation mechanism is missing or does not work on this machine."""


@dataclass(frozen=True)
class SandboxLimits:
    """Per-program limits. Each process gets ``memory_mb`` of address space, so a program that
    forks can use up to ``max_processes * memory_mb`` until the wall-time limit kills it."""

    cpu_seconds: int = 10  # CPU time per process (SIGXCPU)
    memory_mb: int = 1024  # address space per process (RLIMIT_AS: MemoryError)
    max_processes: int = 64  # processes (and threads) in this sandbox
    max_file_mb: int = 16  # largest file written, stdout and stderr included (SIGXFSZ)
    tmp_mb: int = 64  # size of the tmpfs /tmp (the working directory) and /dev/shm, in RAM
    open_files: int = 256
    output_kb: int = 8  # kept of stdout and of stderr each (head and tail)


@dataclass(frozen=True)
class SandboxResult:
    passed: bool  # exited 0 within every limit
    reason: str | None  # None when passed, otherwise a short human-readable why
    returncode: int | None  # None on timeout
    stdout: str
    stderr: str
    seconds: float


def check_available() -> None:
    """Raise SandboxUnavailable unless a sandboxed program can actually run here."""
    _probe(_find_bwrap())


def run(code: str, *, timeout_s: float, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``code`` as ``__main__`` in a fresh sandbox; it passes when it exits 0 in time."""
    bwrap = _find_bwrap()
    _probe(bwrap)
    return _execute(bwrap, code, timeout_s, limits or SandboxLimits())


def _find_bwrap() -> str:
    path = shutil.which("bwrap") or shutil.which("bwrap", path="/usr/bin:/bin")
    if path is None:
        raise SandboxUnavailable(
            f"refusing to run generated code: bubblewrap (`bwrap`) not found; {INSTALL_HINT}"
        )
    return path


@functools.cache
def _probe(bwrap: str) -> None:
    # Once per process: a bwrap that cannot set up namespaces here would otherwise make every
    # program "fail" with a bwrap error instead of saying the sandbox is broken.
    result = _execute(bwrap, "print('ok')", 30.0, SandboxLimits())
    if not (result.passed and result.stdout.strip() == "ok"):
        if (result.reason or "").startswith("sandbox: cannot run as a uid of its own"):
            raise SandboxUnavailable(
                f"refusing to run generated code: no per-sandbox process limit here "
                f"({result.reason}); as root each sandbox needs a uid of its own in "
                f"{UID_BASE}..{UID_BASE + UID_SLOTS - 1} (a user namespace that maps fewer uids "
                "cannot give it)"
            )
        raise SandboxUnavailable(
            f"refusing to run generated code: {bwrap} cannot start a sandbox here "
            f"({result.reason}); it needs user namespaces (or root). Check "
            "`sysctl kernel.unprivileged_userns_clone user.max_user_namespaces`, AppArmor's "
            "`kernel.apparmor_restrict_unprivileged_userns`, or the container's seccomp profile."
        )


def _python() -> tuple[str, list[str]]:
    """The base interpreter (never a venv, which may live inside the repo) and the install
    directories that must be visible for it to start."""
    exe = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    dirs = {os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix)}
    if not any(exe.startswith(d + os.sep) for d in dirs):
        dirs.add(exe)
    return exe, sorted(d for d in dirs if d != "/" and not d.startswith("/usr/"))


def _bwrap_args(bwrap: str, code_fd: int, limits: SandboxLimits, uid: int) -> list[str]:
    exe, binds = _python()
    if os.geteuid() == 0:
        # No user namespace as root (see module docstring); keep only what _BOOT needs to drop
        # to the sandbox's own uid. bwrap also sets no_new_privs, so setuid binaries in /usr give nothing back.
        args = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
        args += ["--unshare-cgroup-try", "--cap-drop", "ALL"]
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        args = [bwrap, "--unshare-all"]
    args += ["--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    # bwrap would create the parents of a bind (say /root) as 0700, untraversable by the program.
    for parent in sorted({a for path in binds for a in _ancestors(os.path.dirname(path))}):
        args += ["--perms", "0755", "--dir", parent]
    for path in binds:
        args += ["--ro-bind", path, path]
    args += ["--proc", "/proc", "--dev", "/dev"]
    for scratch in ("/tmp", "/dev/shm"):  # /dev/shm: multiprocessing's semaphores
        args += ["--perms", "1777", "--size", str(limits.tmp_mb << 20), "--tmpfs", scratch]
    args += ["--perms", "0444", "--file", str(code_fd), "/tmp/main.py", "--chdir", "/tmp"]
    args += [exe, "-I", "-S", "-c", _BOOT]
    numbers = (
        limits.cpu_seconds,
        limits.memory_mb << 20,
        limits.max_file_mb << 20,
        limits.max_processes,
        limits.open_files,
        uid,
    )
    return args + [str(n) for n in numbers]


def _ancestors(path: str) -> list[str]:
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1) if parts[0]]


def _execute(bwrap: str, code: str, timeout_s: float, limits: SandboxLimits) -> SandboxResult:
    # memfds: the code and the output never touch the host's disk, and the program's writes to
    # stdout/stderr are capped by RLIMIT_FSIZE rather than by the scorer's memory.
    code_fd = os.memfd_create("main.py")
    out_fd = os.memfd_create("stdout")
    err_fd = os.memfd_create("stderr")
    try:
        data = code.encode()
        while data:
            data = data[os.write(code_fd, data) :]
        os.lseek(code_fd, 0, os.SEEK_SET)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp"}
        with _own_uid() as uid:
            start = time.monotonic()
            proc = subprocess.Popen(
                _bwrap_args(bwrap, code_fd, limits, uid),
                stdin=subprocess.DEVNULL,
                stdout=out_fd,
                stderr=err_fd,
                pass_fds=(code_fd,),
                env=env,
                start_new_session=True,
            )
            try:
                timed_out = not _wait_for_exit(proc.pid, timeout_s)
            finally:
                if proc.poll() is None:  # timeout, or the scorer was interrupted
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            seconds = time.monotonic() - start
        keep = limits.output_kb << 10
        stdout, stderr = _read_capped(out_fd, keep), _read_capped(err_fd, keep)
    finally:
        for fd in (code_fd, out_fd, err_fd):
            os.close(fd)
    returncode = None if timed_out else proc.returncode
    return SandboxResult(
        passed=returncode == 0,
        reason=_reason(returncode, stderr, timeout_s),
        returncode=returncode,
        stdout=stdout,
        stderr=stderr,
        seconds=seconds,
    )


@contextlib.contextmanager
def _own_uid() -> Iterator[int]:
    """As root, a uid that no other sandbox on this host runs as while this one lives (held by
    an flock, so a scorer that dies frees it); unprivileged, the user's own (the user namespace
    already counts per sandbox)."""
    if os.geteuid() != 0:
        yield os.getuid()
        return
    try:
        os.makedirs(UID_LOCK_DIR, mode=0o700, exist_ok=True)
    except OSError as e:
        raise SandboxUnavailable(
            f"refusing to run generated code: cannot hold a uid for the sandbox "
            f"({UID_LOCK_DIR}: {e.strerror or e})"
        ) from None
    start = random.randrange(UID_SLOTS)  # spread out, so a just-freed uid is rarely taken again
    for i in range(UID_SLOTS):
        uid = UID_BASE + (start + i) % UID_SLOTS
        fd = os.open(os.path.join(UID_LOCK_DIR, str(uid)), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            if _processes_of(uid):  # someone outside the suite uses it, or a sandbox dying
                continue
            try:
                yield uid
            finally:
                # After a kill the PID namespace dies asynchronously: keep the uid until it is
                # gone, so the next sandbox given it starts from zero processes.
                deadline = time.monotonic() + 10
                while _processes_of(uid) and time.monotonic() < deadline:
                    time.sleep(0.01)
            return
        finally:
            os.close(fd)
    raise SandboxUnavailable(
        f"refusing to run generated code: all {UID_SLOTS} sandbox uids are in use"
    )


def _processes_of(uid: int) -> bool:
    """Whether any process on the host (as far as /proc shows) has the real uid `uid`, the one
    RLIMIT_NPROC counts (read from status: a non-dumpable process's /proc folder is root's)."""
    wanted = f"Uid:\t{uid}\t".encode()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/status", "rb") as f:
                    if wanted in f.read(2048):
                        return True
            except OSError:
                pass
    return False


def _wait_for_exit(pid: int, timeout_s: float) -> bool:
    # Popen.wait(timeout) polls with sleeps of up to 50 ms; a pidfd wakes up at the exit.
    pidfd = os.pidfd_open(pid)
    try:
        poller = select.poll()  # not select.select: a busy scorer may hold fds above 1024
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(max(0.0, timeout_s) * 1000))
    finally:
        os.close(pidfd)


def _read_capped(fd: int, keep: int) -> str:
    size = os.fstat(fd).st_size
    if size <= keep:
        return os.pread(fd, size, 0).decode(errors="replace")
    head = os.pread(fd, keep // 2, 0).decode(errors="replace")
    tail = os.pread(fd, keep // 2, size - keep // 2).decode(errors="replace")
    return f"{head}\n[... {size - keep} bytes cut ...]\n{tail}"


def _reason(returncode: int | None, stderr: str, timeout_s: float) -> str | None:
    if returncode is None:
        return f"timeout ({timeout_s:g} s)"
    if returncode == 0:
        return None
    # bwrap reports a program killed by signal N as exit status 128 + N.
    if returncode > 128 and returncode - 128 in signal.valid_signals():
        sig = signal.Signals(returncode - 128)
        return f"killed by signal {sig.value} ({_SIGNAL_HINTS.get(sig, sig.name)})"
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1][:300] if lines else f"exit code {returncode}"
