"""Output safety: the one way `starc` writes folders and files (docs/reliability.md).

Rules kept here, for every command and library writer:

- nothing the tool did not create is deleted, moved or overwritten: a non-empty folder without
  this tool's manifest (:data:`MANIFEST`), or with files its manifest does not list, is refused;
- re-running a command replaces its own, unchanged output; another command's output, or one
  changed since it was written, needs ``force``; an existing single file needs ``force``;
- an output never overlaps an input (same path, inside it, or containing it);
- a file target stays a file, a folder target stays a folder;
- replacement is atomic: the new output is built in a temporary sibling
  (``.starc-tmp-<pid>-<token>-<name>``), the old one is kept until the new one is complete, then
  they are swapped and the old one's listed files are deleted;
- temporaries are removed on errors, SIGINT, SIGTERM and SIGHUP (:func:`signals_handled`); those
  of killed processes (PID no longer alive) are removed by the next writer in the same folder.

API::

    out = OutputDir(dest, command="compile", inputs=[kv], force=False)  # checks, raises OutputError
    with out.build() as tmp:             # temporary sibling folder; write anything into it
        ...
    # here: manifest written, swapped into place, old output removed

    f = OutputFile(dest, command="rtl verilog", force=False)
    with f.build() as tmp:               # temporary file path next to dest
        tmp.write_text(text)

    write_atomic(path, data)             # caches: atomic write with the same temp naming
    strict_json(obj, indent=1)           # JSON text; NaN / Infinity raise ValueError
    undefined(row, key, reason)          # set row[key] = None and row[key + "_undefined"]

Construct :class:`OutputDir` / :class:`OutputFile` right after parsing the arguments so a bad
output is refused before expensive work; the same checks run again at commit time.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import signal
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "FORMATS",
    "FORMATS_ENV",
    "MANIFEST",
    "SCHEMA",
    "NonFiniteError",
    "OutputDir",
    "OutputError",
    "OutputFile",
    "Terminated",
    "check_not_input",
    "clean_stale",
    "plot_formats",
    "signals_handled",
    "strict_json",
    "undefined",
    "write_atomic",
]

MANIFEST = "starc-output.json"
SCHEMA = "starc-output/1"
TMP_PREFIX = ".starc-tmp-"
OLD_PREFIX = ".starc-old-"
_STALE_RE = re.compile(r"^\.starc-(tmp|old)-(\d+)-([0-9a-f]{8})-(.+)$")
_LIVE: set[Path] = set()   # temporaries of this process (removed on exit if still there)
_ARGV: list[str] = []      # the command line recorded in manifests (set by the CLI)


class OutputError(ValueError):
    """An output that cannot be written without losing or mixing someone's files."""


class NonFiniteError(RuntimeError):
    """A NaN or Infinity reached a JSON writer: a bug (an undefined figure must be ``None`` with
    a reason, :func:`undefined`)."""


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM / SIGHUP so cleanup code runs (not an Exception, so
    ``except Exception`` blocks do not swallow it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def set_argv(argv: Iterable[str]) -> None:
    """The command line recorded in manifests (the CLI calls this once)."""
    _ARGV[:] = [str(a) for a in argv]


# ---- strict JSON -----------------------------------------------------------------------------
def _plain(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def strict_json(obj: Any, *, indent: int | None = 1, sort_keys: bool = False) -> str:
    """JSON text of ``obj``; numpy scalars and arrays become numbers and lists. NaN and Infinity
    are refused (:class:`NonFiniteError` naming the key): an undefined figure must be ``None``
    with a reason (:func:`undefined`)."""
    try:
        return json.dumps(obj, indent=indent, sort_keys=sort_keys, allow_nan=False,
                          default=_plain)
    except ValueError:
        where = _first_nonfinite(obj)
        if where is None:
            raise
        raise NonFiniteError(f"a non-finite number at {where} would be written as JSON") \
            from None


def _first_nonfinite(obj: Any, path: str = "") -> str | None:
    if isinstance(obj, float) or type(obj).__name__.startswith("float"):
        try:
            return None if math.isfinite(float(obj)) else (path or "<top>")
        except (TypeError, ValueError):
            return None
    if isinstance(obj, dict):
        for k, v in obj.items():
            r = _first_nonfinite(v, f"{path}.{k}" if path else str(k))
            if r:
                return r
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            r = _first_nonfinite(v, f"{path}[{i}]")
            if r:
                return r
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return _first_nonfinite(obj.tolist(), path)
    return None


def undefined(row: dict[str, Any], key: str, reason: str) -> None:
    """Mark ``row[key]`` as undefined: ``None`` plus ``row[key + '_undefined'] = reason``."""
    row[key] = None
    row[f"{key}_undefined"] = reason


# ---- processes and temporaries -----------------------------------------------------------------
def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def _temp_name(prefix: str, name: str) -> str:
    return f"{prefix}{os.getpid()}-{os.urandom(4).hex()}-{name}"


def clean_stale(folder: Path) -> list[Path]:
    """Remove temporaries of dead processes in ``folder`` (only ``.starc-tmp-<pid>-...`` and
    ``.starc-old-<pid>-...`` names whose PID is not alive). A stale ``.starc-old-*`` whose output
    is missing is renamed back; otherwise only the files its manifest lists are removed. Returns
    what was removed or restored."""
    done: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return done
    for ent in entries:
        m = _STALE_RE.match(ent.name)
        if not m or _alive(int(m.group(2))):
            continue
        p = Path(ent.path)
        try:
            if m.group(1) == "tmp":
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
            else:
                dest = p.with_name(m.group(4))
                if not dest.exists() and not dest.is_symlink():
                    os.rename(p, dest)
                elif p.is_dir() and not p.is_symlink():
                    _remove_owned(p)
                else:
                    p.unlink()
            done.append(p)
        except OSError:
            continue
    return done


# ---- ownership ---------------------------------------------------------------------------------
def _files_of(root: Path) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            full = Path(dirpath) / f
            rel = full.relative_to(root).as_posix()
            if rel == MANIFEST:
                continue
            st = full.lstat()
            out[rel] = {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    return out


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The output manifest of ``folder``, or ``None`` when there is none or it is not ours."""
    mp = folder / MANIFEST
    try:
        man = json.loads(mp.read_text(encoding="utf-8"))
    except (OSError, UnicodeError, ValueError):
        return None
    if (not isinstance(man, dict) or man.get("schema") != SCHEMA
            or not isinstance(man.get("files"), dict) or not isinstance(man.get("command"), str)):
        return None
    return man


def _remove_owned(folder: Path) -> None:
    """Delete the files ``folder``'s manifest lists, then the manifest and the emptied folders.
    Anything else stays (and the folder with it)."""
    man = read_manifest(folder)
    listed = list(man["files"]) if man else []
    for rel in listed:
        p = folder / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            continue
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, NotADirectoryError):
            p.unlink()
    if man is not None:
        with contextlib.suppress(FileNotFoundError):
            (folder / MANIFEST).unlink()
    for dirpath, _dirs, _files in os.walk(folder, topdown=False):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


def _resolve(p: Path) -> Path:
    return Path(os.path.realpath(os.path.abspath(p)))


def check_not_input(dest: Path, inputs: Iterable[Any]) -> None:
    """Refuse ``dest`` if it is an input, lies inside one, or contains one."""
    d = _resolve(dest)
    for i in inputs:
        if i is None:
            continue
        ip = _resolve(Path(i))
        if d == ip:
            raise OutputError(f"{dest}: the output is also an input of this command; choose "
                              f"another output")
        if ip in d.parents:
            raise OutputError(f"{dest}: the output lies inside the input {i}; write it "
                              f"elsewhere")
        if d in ip.parents:
            raise OutputError(f"{dest}: the output folder contains the input {i}; write it "
                              f"elsewhere")


def _parent_ok(dest: Path) -> Path:
    parent = dest.parent
    anc = parent
    while not anc.exists():
        if anc.is_symlink():
            raise OutputError(f"{dest}: {anc} is a broken symbolic link")
        anc = anc.parent
    if not anc.is_dir():
        raise OutputError(f"{dest}: {anc} is a file, not a folder; choose another output path")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise OutputError(f"{dest}: cannot write in {anc} (permission denied); choose another "
                          f"output path")
    return parent


def _make_parents(parent: Path) -> list[Path]:
    """Create ``parent`` and missing ancestors; return the folders created (deepest last)."""
    made: list[Path] = []
    p = parent
    while not p.exists():
        made.append(p)
        p = p.parent
    parent.mkdir(parents=True, exist_ok=True)
    return made[::-1]


def _remove_made(made: list[Path]) -> None:
    for p in reversed(made):
        try:
            os.rmdir(p)
        except OSError:
            break


def _describe(names: list[str]) -> str:
    shown = ", ".join(sorted(names)[:4])
    return shown + (f" and {len(names) - 4} more" if len(names) > 4 else "")


class OutputDir:
    """A folder output (see the module docstring). The constructor checks; :meth:`build`
    writes."""

    def __init__(self, dest: str | os.PathLike[str], *, command: str,
                 inputs: Iterable[Any] = (), force: bool = False) -> None:
        self.dest = Path(dest)
        self.command = command
        self.inputs = [Path(i) for i in inputs if i is not None]
        self.force = force
        if str(dest) in ("", ".") or self.dest.name in ("", ".", ".."):
            raise OutputError(f"{str(dest)!r}: name an output folder (not the current folder)")
        self.check()

    def check(self) -> None:
        """Raise :class:`OutputError` unless ``dest`` may be (re)written."""
        d = self.dest
        check_not_input(d, self.inputs)
        _parent_ok(d)
        if d.is_symlink() and not d.exists():
            raise OutputError(f"{d}: a broken symbolic link; remove it or choose another name")
        if not d.exists():
            return
        if not d.is_dir():
            raise OutputError(f"{d} is a file, and this command writes a folder; choose another "
                              f"name (the file is left alone)")
        if d.is_symlink():
            raise OutputError(f"{d} is a symbolic link to a folder; give the real path")
        try:
            present = _files_of(d)
            empty = not any(os.scandir(d))
        except OSError as e:
            raise OutputError(f"{d}: cannot read the folder ({e.strerror})") from None
        if empty:
            return
        man = read_manifest(d)
        if man is None:
            raise OutputError(f"{d} is a non-empty folder that starc did not write (no "
                              f"{MANIFEST}); choose a new or empty folder (nothing was changed)")
        foreign = [f for f in present if f not in man["files"]]
        if foreign:
            raise OutputError(f"{d} holds files starc did not write ({_describe(foreign)}); move "
                              f"them out or choose another folder (nothing was changed)")
        if self.force:
            return
        if man["command"] != self.command:
            raise OutputError(f"{d} holds the output of `starc {man['command']}`; pass --force to "
                              f"replace it with the output of `starc {self.command}`, or choose "
                              f"another folder")
        changed = [f for f, st in present.items()
                   if man["files"].get(f, {}).get("bytes") != st["bytes"]
                   or man["files"].get(f, {}).get("mtime_ns") != st["mtime_ns"]]
        if changed:
            raise OutputError(f"{d}: files were changed since starc wrote them "
                              f"({_describe(changed)}); pass --force to replace the folder, or "
                              f"choose another one")

    @contextlib.contextmanager
    def build(self) -> Iterator[Path]:
        """Yield a temporary sibling folder; on success make it ``dest`` atomically."""
        parent = _parent_ok(self.dest)
        made = _make_parents(parent)
        clean_stale(parent)
        tmp = parent / _temp_name(TMP_PREFIX, self.dest.name)
        _LIVE.add(tmp)                     # registered before it exists: a signal between the
        try:                               # two steps cannot leave it behind
            tmp.mkdir()
            yield tmp
            self._commit(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            _LIVE.discard(tmp)
            _remove_made(made)
            raise
        _LIVE.discard(tmp)

    def _commit(self, tmp: Path) -> None:
        import datetime as _dt
        man = {"schema": SCHEMA, "tool": "starc-pim", "version": _version(),
               "command": self.command, "argv": list(_ARGV),
               "created_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "files": _files_of(tmp)}
        (tmp / MANIFEST).write_text(strict_json(man, indent=1) + "\n", encoding="utf-8")
        self.check()                       # the folder may have changed while we worked
        d = self.dest
        if d.exists() and any(os.scandir(d)):
            # The complete new output first takes an old-output name, then trades places with
            # dest. Whenever a SIGKILL lands, dest holds a complete output and the stale
            # .starc-old-* holds one too (the next run deletes only the files its manifest
            # lists, or renames it back when dest is missing); SIGTERM / SIGINT / SIGHUP wait
            # until the swap is done.
            old = d.with_name(_temp_name(OLD_PREFIX, d.name))
            with _signals_deferred():
                os.rename(tmp, old)
                _LIVE.discard(tmp)
                try:
                    exchanged = _exchange(old, d)
                except OSError:
                    os.rename(old, tmp)
                    _LIVE.add(tmp)
                    raise
                if not exchanged:          # two renames: put the old one back if one fails
                    prev = d.with_name(_temp_name(OLD_PREFIX, d.name))
                    os.rename(d, prev)
                    try:
                        os.rename(old, d)
                    except BaseException:
                        if not d.exists():
                            os.rename(prev, d)
                        os.rename(old, tmp)
                        _LIVE.add(tmp)
                        raise
                    old = prev
            _LIVE.add(old)
            _remove_owned(old)
            _LIVE.discard(old)
        else:
            if d.exists():
                os.rmdir(d)                # an empty folder (ours to replace)
            _rename_noreplace(tmp, d)


class OutputFile:
    """A single-file output (see the module docstring)."""

    def __init__(self, dest: str | os.PathLike[str], *, command: str,
                 inputs: Iterable[Any] = (), force: bool = False) -> None:
        self.dest = Path(dest)
        self.command = command
        self.inputs = [Path(i) for i in inputs if i is not None]
        self.force = force
        if str(dest) in ("", ".") or self.dest.name in ("", ".", "..") or \
                str(dest).endswith(("/", os.sep)):
            raise OutputError(f"{str(dest)!r}: name an output file")
        self.check()

    def check(self) -> None:
        d = self.dest
        check_not_input(d, self.inputs)
        _parent_ok(d)
        if d.is_dir():
            raise OutputError(f"{d} is a folder, and this command writes a file; choose a file "
                              f"name (the folder is left alone)")
        if d.exists() or d.is_symlink():
            if not (d.is_file() or d.is_symlink()):
                raise OutputError(f"{d} exists and is not a regular file; choose another name")
            if not self.force:
                raise OutputError(f"{d} exists; pass --force to replace it (the old file is kept "
                                  f"until the new one is complete), or choose another name")

    @contextlib.contextmanager
    def build(self) -> Iterator[Path]:
        parent = _parent_ok(self.dest)
        made = _make_parents(parent)
        clean_stale(parent)
        tmp = parent / _temp_name(TMP_PREFIX, self.dest.name)
        _LIVE.add(tmp)
        try:
            yield tmp
            if not tmp.is_file():
                raise OutputError(f"internal: nothing was written for {self.dest}")
            self.check()
            os.replace(tmp, self.dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                if tmp.is_dir():
                    shutil.rmtree(tmp)
                else:
                    tmp.unlink()
            _LIVE.discard(tmp)
            _remove_made(made)
            raise
        _LIVE.discard(tmp)


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` to ``path`` atomically (temporary sibling, then rename), for caches: no
    ownership rules, but the same temporary naming, so stale ones are found and removed."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.parent / _temp_name(TMP_PREFIX, p.name)
    _LIVE.add(tmp)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    finally:
        _LIVE.discard(tmp)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("starc-pim")
    except PackageNotFoundError:  # pragma: no cover - running from a plain source tree
        return "unknown"


# ---- atomic renames (Linux renameat2) ----------------------------------------------------------
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_libc: Any = None


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """``renameat2``; False when the system or filesystem does not offer it."""
    global _libc
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import ctypes.util
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            _libc.renameat2  # noqa: B018 - probe
        except (OSError, AttributeError):
            _libc = False
    if _libc is False:
        return False
    r = _libc.renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst),
                        ctypes.c_uint(flags))
    if r == 0:
        return True
    e = ctypes.get_errno()
    if e in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(e, os.strerror(e), str(dst))


def _exchange(a: Path, b: Path) -> bool:
    return _renameat2(a, b, _RENAME_EXCHANGE)


def _rename_noreplace(src: Path, dst: Path) -> None:
    if not _renameat2(src, dst, _RENAME_NOREPLACE):
        if dst.exists():
            raise OutputError(f"{dst} appeared while the output was being written; nothing "
                              f"was replaced")
        os.rename(src, dst)


# ---- signals -----------------------------------------------------------------------------------
_DEFERRED = (signal.SIGINT, signal.SIGTERM, *((signal.SIGHUP,) if hasattr(signal, "SIGHUP")
                                               else ()))


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT / SIGTERM / SIGHUP until the block is done (a few renames), so an interrupt
    cannot land between two steps that must happen together. A no-op off the main thread or
    where the OS has no signal masks."""
    import threading
    if not hasattr(signal, "pthread_sigmask") or \
            threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _cleanup_live() -> None:
    for p in list(_LIVE):
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                if p.name.startswith(OLD_PREFIX):
                    continue   # an old output being deleted: the next run finishes the job
                shutil.rmtree(p)
            else:
                p.unlink()
        _LIVE.discard(p)


def _raise_terminated(signum: int, _frame: Any) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def signals_handled() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`Terminated` in the main thread (SIGINT raises
    KeyboardInterrupt as usual), so ``with`` blocks remove their temporaries; whatever is left
    is removed on the way out."""
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if s is not None:
            previous[s] = signal.signal(s, _raise_terminated)
    try:
        yield
    finally:
        _cleanup_live()
        for s, h in previous.items():
            signal.signal(s, h)


#: files :func:`starc.plots.save` writes per figure: a raster for reading, vectors for papers
FORMATS = ("png", "svg", "pdf")
#: A comma list of :data:`FORMATS` that :func:`starc.plots.save` (and every report) writes
#: instead of all three, e.g. ``png``: each format draws the whole figure again, so the raster
#: alone takes about a third of the time (1.3 s against 3.5 s for a six-panel figure, docs/
#: outputs.md). The test suite sets it (tests/conftest.py); tests/sw/test_plots.py and
#: tests/sw/test_system_cli.py write all three.
FORMATS_ENV = "STARC_PLOT_FORMATS"


def plot_formats() -> tuple[str, ...]:
    """The formats a figure is written in: :data:`FORMATS`, or those :data:`FORMATS_ENV` names
    (in :data:`FORMATS`' order). Raises ``ValueError`` naming the variable for anything else."""
    raw = os.environ.get(FORMATS_ENV, "")
    if not raw.strip():
        return FORMATS
    chosen = {f.strip().lower() for f in raw.split(",")} - {""}
    unknown = sorted(chosen - set(FORMATS))
    if unknown or not chosen:
        raise ValueError(f"{FORMATS_ENV}={raw!r} names {', '.join(unknown) or 'no format'}; "
                         f"set it to a comma list of {', '.join(FORMATS)}, or unset it for all")
    return tuple(f for f in FORMATS if f in chosen)
