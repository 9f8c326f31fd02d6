"""Lazy build and load of the project's CUDA extension (``ops/csrc``, one module named ``domain_adapt_ops``).

Nothing here compiles at import time. :func:`get_plugin` builds on its first call (with ninja, through
``torch.utils.cpp_extension.load``), caches the module for the process and returns it, or returns ``None``
after warning once when the build is impossible or fails; a failed build is never retried in the same process.
:func:`build` is the explicit, raising variant (CI, ``python -m ops.build_check``).

What the build sets up, because the defaults do not work on GPU-less machines (see shared spec section 3):

- an explicit architecture list: ``DOMAIN_ADAPT_CUDA_ARCH``, else ``TORCH_CUDA_ARCH_LIST``, else the visible
  GPUs' compute capabilities, else ``"8.0;9.0"``; passed as ``-gencode`` flags (``"8.6+PTX"``, ``"9.0a"`` work);
- ``CUDA_HOME`` when unset (``/usr/local/cuda`` if it exists, else derived from ``nvcc`` on ``PATH``), also
  patched into ``torch.utils.cpp_extension`` whose import-time guess can be wrong (an ``nvcc`` wrapper script in
  ``/usr/local/bin`` makes it pick ``/usr/local``);
- the CUDA library headers of the torch wheel's dependencies (``site-packages/nvidia/cu13/include``) as an
  extra include path;
- the interpreter's ``bin`` directory (where the venv's ``ninja`` lives) on ``PATH``;
- a build directory ``$DOMAIN_ADAPT_EXT_DIR/<hash>`` (default ``~/.cache/domain_adapt/torch_extensions/<hash>``)
  keyed by the sources, torch/CUDA versions, arch list and flags, so different configurations never clobber
  each other and a rebuild only happens when something changed;
- a build lock of our own (pid + host inside); a lock whose owner is gone, or older than
  :data:`STALE_LOCK_S`, is removed, as is torch's own ``lock`` file in the build directory when nobody holds it
  or it is stale, so a build never hangs on a lock left by a killed process.

Environment: ``DOMAIN_ADAPT_CUDA_ARCH``, ``DOMAIN_ADAPT_EXT_DIR``, ``DOMAIN_ADAPT_EXT_VERBOSE=1`` (show the
compiler output on lazy builds), ``DOMAIN_ADAPT_NO_CUDA_EXT=1`` (never build; always fall back, silently).
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.util
import json
import os
import re
import shutil
import socket
import sys
import threading
import time
import warnings
from types import ModuleType
from typing import Iterator

EXT_NAME = "domain_adapt_ops"
CSRC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")
SOURCES = ("ops.cpp", "upfirdn2d.cu", "bias_act.cu")
HEADERS = ("ops.h",)
DEFAULT_ARCH = "8.0;9.0"
STALE_LOCK_S = 600.0  # a build lock older than this is considered abandoned (unless its owner is alive here)
LIVE_OWNER_MAX_S = 3600.0  # ... and a lock held by a live process on this host is trusted for this long
LOCK_WAIT_S = float(os.environ.get("DOMAIN_ADAPT_BUILD_LOCK_TIMEOUT", "3600"))
OWN_LOCK_NAME = "domain_adapt_build.lock"
TORCH_LOCK_NAME = "lock"
EXTRA_CFLAGS = ("-O3",)
EXTRA_CUDA_CFLAGS = ("-O3",)
_BUILD_FORMAT = "1"  # bump when the build recipe changes in a way the hash does not see

_module: ModuleType | None = None
_failure: str | None = None  # why the lazy build failed (never retried in this process)
_warned = False
_build_attempts = 0  # number of real build attempts in this process (tests check it)
_lock = threading.RLock()


class BuildError(RuntimeError):
    """The CUDA extension cannot be built here (missing toolchain) or its build failed."""


# ----------------------------------------------------------------------------------------------------------
# Public API


def get_plugin() -> ModuleType | None:
    """The compiled extension, building it on the first call; ``None`` (after one warning) if unavailable."""
    global _failure, _warned
    if _module is not None:
        return _module
    if _failure is not None:
        return None
    with _lock:
        if _module is not None:
            return _module
        if _failure is not None:
            return None
        if os.environ.get("DOMAIN_ADAPT_NO_CUDA_EXT", "") not in ("", "0"):
            _failure = "disabled by DOMAIN_ADAPT_NO_CUDA_EXT"
            return None
        try:
            return build(verbose=os.environ.get("DOMAIN_ADAPT_EXT_VERBOSE", "") not in ("", "0"))
        except Exception as exc:  # noqa: BLE001 - any failure means: fall back
            _failure = _summarise(exc)
            if not _warned:
                _warned = True
                warnings.warn(
                    f"Could not build the domain_adapt CUDA ops ({_failure}); "
                    "falling back to the PyTorch implementation.",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return None


def build(verbose: bool = True) -> ModuleType:
    """Build (or load the cached build of) the extension now and return it; raises :class:`BuildError`."""
    global _module, _failure
    with _lock:
        if _module is not None:
            return _module
        module = _build(verbose)
        _module = module
        _failure = None
        return module


def is_loaded() -> bool:
    """Whether the extension has been built and loaded in this process."""
    return _module is not None


def is_available() -> bool:
    """Whether the CUDA ops are (or can presumably be made) usable here. Never builds.

    True if the extension is loaded, or if no build has failed in this process and the prerequisites are
    present (a CUDA build of torch, nvcc, ninja). Does not initialise CUDA.
    """
    if _module is not None:
        return True
    if _failure is not None or os.environ.get("DOMAIN_ADAPT_NO_CUDA_EXT", "") not in ("", "0"):
        return False
    return _missing_prerequisite() is None


def failure_reason() -> str | None:
    """Why the lazy build failed in this process, or ``None``."""
    return _failure


# ----------------------------------------------------------------------------------------------------------
# Toolchain discovery


def source_paths() -> list[str]:
    return [os.path.join(CSRC_DIR, s) for s in SOURCES]


def cuda_home() -> str | None:
    """The CUDA toolkit root: $CUDA_HOME / $CUDA_PATH, /usr/local/cuda, or derived from nvcc on PATH."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        v = os.environ.get(var)
        if v:
            return v
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda"
    nvcc = shutil.which("nvcc")
    if nvcc:
        root = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
        if os.path.exists(os.path.join(root, "include", "cuda_runtime.h")):
            return root
    return None


def find_nvcc() -> str | None:
    """Path of nvcc (in the CUDA toolkit root first), or ``None``."""
    home = cuda_home()
    if home:
        p = os.path.join(home, "bin", "nvcc")
        if os.path.exists(p):
            return p
    return shutil.which("nvcc") or (
        "/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)


def nvidia_include_dirs() -> list[str]:
    """Header folders of the CUDA libraries shipped with the torch wheel (``nvidia/cu13/include`` etc.)."""
    dirs: list[str] = []
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        spec = None
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        combined = sorted(glob.glob(os.path.join(root, "cu[0-9]*", "include")), reverse=True)
        if combined:  # CUDA 13 wheels: one include dir with every library's headers
            dirs.append(combined[0])
            continue
        for lib in ("cublas", "cusparse", "cusolver", "curand", "cufft"):  # CUDA 12 wheels: one dir per library
            d = os.path.join(root, lib, "include")
            if os.path.isdir(d):
                dirs.append(d)
    return dirs


def arch_list() -> str:
    """The architectures to compile for (see the module docstring for the order of precedence)."""
    for var in ("DOMAIN_ADAPT_CUDA_ARCH", "TORCH_CUDA_ARCH_LIST"):
        v = os.environ.get(var, "").strip()
        if v and v != "native":
            return v
    try:
        import torch

        if torch.cuda.is_available():
            caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
            if caps:
                return ";".join(f"{a}.{b}" for a, b in caps)
    except Exception:  # noqa: BLE001 - a broken driver is "no GPU" here
        pass
    return DEFAULT_ARCH


_ARCH_RE = re.compile(r"^(?:sm_)?(\d+)\.?(\d)([af]?)(\+PTX)?$", re.IGNORECASE)
# The named architectures torch.utils.cpp_extension understands (as of torch 2.14) that CUDA 13 still supports.
_NAMED_ARCHES = {"turing": "7.5+PTX", "ampere": "8.0;8.6+PTX", "ada": "8.9+PTX", "hopper": "9.0+PTX",
                 "blackwell": "10.0;10.3;12.0;12.1+PTX"}


def arch_flags(arches: str) -> list[str]:
    """``"8.0;8.6+PTX;9.0a"`` -> nvcc ``-gencode`` flags (``+PTX`` also embeds PTX for newer GPUs)."""
    flags: list[str] = []
    items = [i for i in re.split(r"[;,\s]+", arches.strip()) if i]
    items = [a for i in items for a in _NAMED_ARCHES.get(i.lower(), i).split(";")]
    for item in items:
        m = _ARCH_RE.match(item)
        if not m:
            raise BuildError(f"invalid CUDA architecture {item!r} in {arches!r} (expected e.g. '8.0', '8.6+PTX')")
        num = f"{m.group(1)}{m.group(2)}{m.group(3).lower()}"
        for flag in (f"-gencode=arch=compute_{num},code=sm_{num}",
                     f"-gencode=arch=compute_{num},code=compute_{num}" if m.group(4) else None):
            if flag and flag not in flags:
                flags.append(flag)
    if not flags:
        raise BuildError(f"empty CUDA architecture list {arches!r}")
    return flags


def cache_root() -> str:
    env = os.environ.get("DOMAIN_ADAPT_EXT_DIR")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "domain_adapt", "torch_extensions")


def build_directory(arches: str | None = None, home: str | None = None) -> str:
    """``<cache root>/<hash>``, the hash covering sources, torch/CUDA/Python versions, arch list and flags."""
    import torch

    arches = arch_list() if arches is None else arches
    home = cuda_home() if home is None else home
    h = hashlib.sha256()
    for name in sorted(SOURCES + HEADERS):
        h.update(name.encode())
        with open(os.path.join(CSRC_DIR, name), "rb") as fh:
            h.update(hashlib.sha256(fh.read()).digest())
    meta = [_BUILD_FORMAT, torch.__version__, str(torch.version.cuda), arches, str(home),
            f"{sys.version_info[0]}.{sys.version_info[1]}", sys.platform, *EXTRA_CFLAGS, "|", *EXTRA_CUDA_CFLAGS]
    h.update("\0".join(meta).encode())
    return os.path.join(cache_root(), h.hexdigest()[:20])


def _ensure_venv_bin_on_path() -> None:
    bindir = os.path.dirname(sys.executable)
    parts = os.environ.get("PATH", "").split(os.pathsep)
    if bindir and bindir not in parts:
        os.environ["PATH"] = os.pathsep.join([bindir] + [p for p in parts if p])


def _missing_prerequisite() -> str | None:
    """A human-readable reason why building cannot work here, or ``None``."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover
        return f"torch is not importable: {exc}"
    if not torch.version.cuda:
        return f"torch {torch.__version__} was built without CUDA support"
    if find_nvcc() is None:
        return "nvcc not found (install the CUDA toolkit or set CUDA_HOME)"
    search = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    if shutil.which("ninja", path=search) is None:
        return "ninja not found (pip install ninja)"
    return None


# ----------------------------------------------------------------------------------------------------------
# Locking


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _own_lock_stale(path: str) -> str | None:
    """Why the build lock at ``path`` is stale, or ``None`` if it is (presumably) held by a live builder."""
    try:
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return "gone"
    info: dict = {}
    with contextlib.suppress(OSError, ValueError):
        with open(path, encoding="utf-8") as fh:
            info = json.load(fh)
    pid, host = info.get("pid"), info.get("host")
    if host == socket.gethostname() and isinstance(pid, int):
        if pid == os.getpid():
            return None  # our own (another thread); the RLock serialises us anyway
        if not _pid_alive(pid):
            return f"its owner (pid {pid}) is gone"
        return f"it is {age:.0f} s old" if age > LIVE_OWNER_MAX_S else None
    return f"it is {age:.0f} s old" if age > STALE_LOCK_S else None


def _torch_lock_stale(path: str) -> str | None:
    """torch's ``lock`` file: stale if old, or if nobody holds the OS lock on it (its owner is gone)."""
    try:
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return None
    if age > STALE_LOCK_S:
        return f"it is {age:.0f} s old"
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return None  # held by a live process: leave it alone, torch will wait for it
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return "no process holds it"
    finally:
        os.close(fd)


def remove_stale_locks(build_dir: str) -> list[str]:
    """Remove abandoned lock files in ``build_dir``; returns what was removed (with the reason)."""
    removed = []
    own = os.path.join(build_dir, OWN_LOCK_NAME)
    if os.path.exists(own):
        why = _own_lock_stale(own)
        if why and why != "gone":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(own)
                removed.append(f"{own} ({why})")
    tl = os.path.join(build_dir, TORCH_LOCK_NAME)
    why = _torch_lock_stale(tl)
    if why:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tl)
            removed.append(f"{tl} ({why})")
    return removed


@contextlib.contextmanager
def build_lock(build_dir: str, timeout: float | None = None) -> Iterator[None]:
    """Exclusive build lock on ``build_dir`` across processes; stale locks are removed, never waited on."""
    timeout = LOCK_WAIT_S if timeout is None else timeout
    os.makedirs(build_dir, exist_ok=True)
    path = os.path.join(build_dir, OWN_LOCK_NAME)
    deadline = time.monotonic() + timeout
    announced = False
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            why = _own_lock_stale(path)
            if why is not None:
                if why != "gone":
                    warnings.warn(f"removing stale CUDA-extension build lock {path} ({why})", RuntimeWarning,
                                  stacklevel=4)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                continue
            if time.monotonic() > deadline:
                raise BuildError(f"timed out after {timeout:.0f} s waiting for the build lock {path}; "
                                 "delete it if no build is running") from None
            if not announced:
                print(f"[domain_adapt] waiting for another process building in {build_dir} ...",
                      file=sys.stderr, flush=True)
                announced = True
            time.sleep(1.0)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}, fh)
        break
    try:
        # We hold the build lock: any torch `lock` nobody holds (or an old one) was left by a killed build.
        tl = os.path.join(build_dir, TORCH_LOCK_NAME)
        why = _torch_lock_stale(tl)
        if why:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tl)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


# ----------------------------------------------------------------------------------------------------------
# Building


def _summarise(exc: BaseException, limit: int = 1500) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(text) <= limit:
        return " | ".join(lines) if len(lines) <= 3 else text
    errors = [ln for ln in lines if "error" in ln.lower()]
    head = lines[0]
    tail = "\n".join(errors[-8:]) if errors else "\n".join(lines[-8:])
    return f"{head} ... {tail}"[-limit:]


def _build(verbose: bool) -> ModuleType:
    global _build_attempts
    missing = _missing_prerequisite()
    if missing:
        raise BuildError(missing)
    _ensure_venv_bin_on_path()  # cpp_extension runs `ninja` from PATH
    home = cuda_home()
    assert home is not None  # _missing_prerequisite found nvcc
    user_set_home = bool(os.environ.get("CUDA_HOME"))
    os.environ.setdefault("CUDA_HOME", home)  # before importing cpp_extension, which reads it at import

    import torch.utils.cpp_extension as cpp_ext

    if not user_set_home and cpp_ext.CUDA_HOME != home:
        cpp_ext.CUDA_HOME = home  # its import-time guess may come from an nvcc wrapper script
    arches = arch_list()
    gencode = arch_flags(arches)
    bdir = build_directory(arches, home)
    os.makedirs(bdir, exist_ok=True)
    include_dirs = [CSRC_DIR] + nvidia_include_dirs()
    if verbose:
        print(f"[domain_adapt] building {EXT_NAME} for arch {arches} in {bdir}", file=sys.stderr, flush=True)
    _build_attempts += 1
    with build_lock(bdir):
        try:
            module = cpp_ext.load(
                name=EXT_NAME,
                sources=source_paths(),
                extra_cflags=list(EXTRA_CFLAGS),
                extra_cuda_cflags=list(EXTRA_CUDA_CFLAGS) + gencode,
                extra_include_paths=include_dirs,
                build_directory=bdir,
                with_cuda=True,
                verbose=verbose,
            )
        except Exception as exc:
            raise BuildError(f"building {EXT_NAME} in {bdir} failed: {exc}") from exc
    missing_fns = [f for f in ("upfirdn2d", "bias_act", "bias_act_grad") if not hasattr(module, f)]
    if missing_fns:
        raise BuildError(f"extension built from {bdir} lacks {missing_fns}")
    return module


def _reset_for_tests() -> None:
    """Forget the loaded module and any failure (tests only)."""
    global _module, _failure, _warned, _build_attempts
    with _lock:
        _module = None
        _failure = None
        _warned = False
        _build_attempts = 0
