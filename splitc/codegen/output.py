"""Replacing outputs without losing data.

A compiled output directory is built in a private temporary directory beside it and renamed into place.
``--force`` replaces only a directory splitc wrote (its plan.json has splitc's schema) that holds neither the
input model nor the current directory; a symbolic link as the output is refused, never followed. The swap runs
with SIGINT/SIGTERM/SIGHUP handled only after it, so an interrupt leaves either the old or the new directory and no
``.NAME.tmp-*`` / ``.NAME.old-*`` behind. Single files go through a private ``mkstemp`` file and ``os.replace``.
Everything follows the umask (``mkdtemp``/``mkstemp`` create 0700/0600). Standard library only: ``splitc bench`` and
``splitc profile`` use it without the compiler.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from splitc.errors import SplitcError

_HELD = {getattr(signal, s) for s in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, s)}


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold back SIGINT/SIGTERM/SIGHUP: one that arrives inside is handled (by the previous handler) on exit.

    Python-level, so it holds whichever thread the OS delivers the signal to; outside the main thread, where
    handlers cannot be set, it holds nothing."""
    got: list[tuple[int, object]] = []
    try:
        previous = {s: signal.signal(s, lambda signum, frame: got.append((signum, frame))) for s in _HELD}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        if got:
            signum, frame = got[0]
            handler = previous[signum]
            if callable(handler):
                handler(signum, frame)
            elif handler in (signal.SIG_DFL, None):
                signal.raise_signal(signum)


def os_error(path: Path | str, action: str, e: OSError) -> SplitcError:
    """One line for an OS error: what we were doing with which path and why it failed."""
    why = e.strerror or str(e) or type(e).__name__
    where = f" ({e.filename})" if e.filename and str(e.filename) != str(path) else ""
    return SplitcError(f"{path}: cannot {action}: {why}{where}")


def output_dir(out: str | Path) -> Path:
    """The absolute output path, refusing a symbolic link (dangling or not) as the output itself."""
    out = Path(out)
    if out.is_symlink():
        raise SplitcError(f"-o {out}: is a symbolic link; splitc neither follows nor replaces links: give a real directory path")
    return out.resolve()


def check_replaceable(out: str | Path, force: bool, keep: Iterable[str | Path] = ()) -> Path:
    """Refuse (SplitcError) to write ``out`` unless it is new, or ``force`` and splitc wrote it and it holds
    none of ``keep`` (the input model) nor the current directory. Returns the absolute output path."""
    # imported here: this module stays standard-library only
    from splitc.codegen.plan import SCHEMA

    given = out
    out = output_dir(out)
    if not out.exists():
        return out
    if not out.is_dir():
        raise SplitcError(f"-o {given}: exists and is not a directory; choose another -o directory"
                          " (--force replaces only a directory splitc wrote)")
    if not force:
        raise SplitcError(f"{given}: already exists; choose another -o directory or pass --force to replace it")
    plan = out / "plan.json"
    try:
        schema = json.loads(plan.read_text()).get("schema") if plan.is_file() and not plan.is_symlink() else None
    except (OSError, ValueError, AttributeError):
        schema = None
    if schema != SCHEMA:
        raise SplitcError(f"-o {given}: not an output of splitc (no plan.json with schema {SCHEMA}); --force will not replace"
                          " it: remove it yourself or choose another -o directory")
    foreign = foreign_files(out)
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise SplitcError(f"-o {given}: holds {foreign[0]}{more}, which splitc did not write; --force will not delete it:"
                          " move it out or choose another -o directory")
    for path in keep:
        if Path(path).resolve().is_relative_to(out):
            raise SplitcError(f"-o {given}: holds the input {path}; --force will not replace it: choose another -o directory")
    if Path.cwd().resolve().is_relative_to(out):
        raise SplitcError(f"-o {given}: is or holds the current directory; --force will not replace it: choose another -o directory")
    return out


# files every output may hold besides those its plan.json names (the report, written unless --no-report)
OWN_FILES = frozenset({"plan.json", "report.html", "report_layers.png", "report_graph.png"})


def _plan_strings(plan: Path) -> set[str]:
    """Every string value in ``plan`` (the artifact, part and library paths among them); empty when unreadable."""
    try:
        data = json.loads(plan.read_text())
    except (OSError, ValueError):
        return set()
    found, stack = set(), [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.add(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def foreign_files(out: Path) -> list[str]:
    """Files under ``out`` that no plan.json there names (relative to its own folder: a sweep's ``plans/<i>/``)
    and that are not :data:`OWN_FILES`: a user's files, which ``--force`` must not delete. Links count as files."""
    foreign: list[str] = []

    def walk(folder: Path, root: Path, named: set[str]) -> None:
        if (folder / "plan.json").is_file() and not (folder / "plan.json").is_symlink():
            root, named = folder, _plan_strings(folder / "plan.json") | OWN_FILES
        for entry in sorted(folder.iterdir()):
            if entry.is_dir() and not entry.is_symlink():
                walk(entry, root, named)
            elif entry.relative_to(root).as_posix() not in named:
                foreign.append(entry.relative_to(out).as_posix())

    walk(out, out, set())
    return foreign


def make_temp_dir(out: Path) -> Path:
    """A private, empty directory beside ``out`` (same file system, so the final rename is atomic)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as e:
        raise os_error(out, "create it", e) from None


@contextlib.contextmanager
def staged(out: Path, force: bool, keep: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Yields a private temporary directory beside ``out``; when the block ends it is installed as ``out``
    (:func:`install_dir`), and on any error or interrupt it is removed and ``out`` stays as it was."""
    tmp = None
    try:
        with signals_held():  # an interrupt cannot fall between creating it and knowing its name
            tmp = make_temp_dir(out)
        yield tmp
        install_dir(tmp, out, force, keep)
    except BaseException as e:
        if tmp is not None:
            with signals_held():
                shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise os_error(out, "write it", e) from None
        raise


def install_dir(tmp: Path, out: Path, force: bool, keep: Iterable[str | Path] = ()) -> None:
    """Rename the finished ``tmp`` to ``out``, replacing ``out`` only as :func:`check_replaceable` allows.

    On any failure or interrupt ``tmp`` is removed and ``out`` is what it was; no ``.old-`` directory remains.
    """
    old, state = None, "none"  # state: none | reserved (old is an empty placeholder) | moved (old holds out) | done
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp made it 0700
        with signals_held():  # check, move aside, move in: nothing runs our handlers in between
            out = check_replaceable(out, force, keep)
            if out.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
                state = "reserved"
                os.replace(out, old)  # onto the empty placeholder, in the same folder
                state = "moved"
                try:
                    os.replace(tmp, out)
                except BaseException:
                    os.replace(old, out)
                    state = "none"
                    raise
            else:
                os.replace(tmp, out)
            state = "done"
    except OSError as e:
        raise os_error(out, "replace it" if state != "none" or old else "write it", e) from None
    finally:
        with signals_held():
            shutil.rmtree(tmp, ignore_errors=True)
            if old is not None and state in ("reserved", "done"):
                shutil.rmtree(old, ignore_errors=True)
            elif state == "moved":  # out could not be put back: say where it is
                raise SplitcError(f"{out}: replacing it failed and it could not be restored; it is now at {old}")


def write_text(path: str | Path, text: str) -> None:
    """Write ``path`` whole or not at all through a private temp file beside it; a link at ``path`` is replaced,
    never written through."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        raise SplitcError(f"{path}: is a directory; give a file path")
    fd, name = None, None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        if hasattr(os, "fchmod"):  # mkstemp made it 0600
            os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            fd = None
            f.write(text)
        os.replace(name, path)
        name = None
    except OSError as e:
        raise os_error(path, "write it", e) from None
    finally:
        if fd is not None:
            os.close(fd)
        if name is not None:
            with contextlib.suppress(OSError):
                os.unlink(name)
