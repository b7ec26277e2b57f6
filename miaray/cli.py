"""What every command-line entry point does with an error: one line and an exit status, no traceback.

An *expected* error is one the user can fix from the line alone: a value the command line asked for
that cannot work (`ConfigError`, exit 2 like argparse's own usage errors), a missing or damaged dataset
file, a store entry that could not be rebuilt, a file or folder the system refuses (`OSError`: missing,
unwritable, disk full, a connection refused at `--address`), GPU memory running out. Each prints
`prog: error: message` on stderr and exits 1 (2 for a `ConfigError`); Ctrl-C prints `prog: interrupted`
and exits 130, SIGTERM the same with `prog: terminated` and exits 143. Anything else is a bug and keeps
its traceback. `--debug` (every entry point's parser has it, `add_debug_option`) or `MIARAY_DEBUG=1`
shows the traceback of expected errors too.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
import threading
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from miaray.config import ConfigError
from miaray.data.sources import DatasetFileError, DatasetNotFoundError

DEBUG_ENV = "MIARAY_DEBUG"
DEBUG_OPTION = "--debug"
USAGE_STATUS = 2       # argparse's status for a bad command line
ERROR_STATUS = 1
INTERRUPTED_STATUS = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C
TERMINATED_STATUS = 143   # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by the entry point's handler: a KeyboardInterrupt, so that
    everything stops as for Ctrl-C (a sweep keeps its finished rows and stops the Ray it started)."""


_sigterm = threading.Event()  # set by the handler: Ray re-raises a KeyboardInterrupt of its own from its calls


def _raise_terminated(signum: int, frame: object) -> None:
    _sigterm.set()
    raise Terminated()

# Errors about the user's data and environment, never about miaray's logic (OSError covers files,
# folders, disks and connections; the dataset errors are its and ValueError's subclasses).
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (DatasetNotFoundError, DatasetFileError, OSError)
# The same, from modules that import torch: looked up only where the failing command imported them, so
# that the analysis scripts do not pay torch's import for their error handling.
EXPECTED_LAZY = (("miaray.store", "DamagedEntryError"), ("torch", "OutOfMemoryError"))

Main = Callable[..., int]


class HelpFormatter(argparse.HelpFormatter):
    """Every entry point's `--help`: an option's default stated once. "(default: X)" is appended only
    where the help does not already say what its default is, the option takes a value and the default
    is a value (an option whose default is None says in its help what happens without it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or not action.option_strings or action.nargs == 0 or default is None
                or default is argparse.SUPPRESS or default in ([], "")):
            return text
        return f"{text} (default: %(default)s)"


def add_debug_option(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give `parser` the `--debug` flag that `entry_point` reads (it reads the raw arguments, so that an
    error raised before or while parsing is covered too)."""
    parser.add_argument(DEBUG_OPTION, action="store_true",
                        help=f"show the Python traceback of an error (also: {DEBUG_ENV}=1)")
    return parser


def debug_requested(argv: Sequence[str]) -> bool:
    """`--debug` (or an abbreviation argparse accepts) among the options of `argv`, or MIARAY_DEBUG set."""
    if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
        return True
    for token in argv:
        if token == "--":  # what follows is positional
            break
        if len(token) > 2 and DEBUG_OPTION.startswith(token):
            return True
    return False


def check_writable_folder(path: str, *, option: str, must_exist: bool = False) -> None:
    """Refuse, before any work, a local folder that cannot take the files a command writes at its end:
    a file in its place or on its path, or a folder the system will not write to (probed with a temporary
    file, gone when the probe ends: permission bits do not tell for root or a read-only mount). The check
    creates nothing, so that a command refused later leaves no folder behind: a missing folder passes
    (unless `must_exist`) where its nearest existing parent is a writable folder, and the command creates
    it when it writes there. A URI (s3://...) is left to its filesystem."""
    if "://" in path:
        return
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{option}: {path!r} is a file, not a folder")
    if must_exist and not folder.is_dir():
        raise ConfigError(f"{option}: the folder {path!r} does not exist")
    existing = next(p for p in (folder, *folder.parents) if p.exists())  # "." or "/" at the latest
    if not existing.is_dir():
        raise ConfigError(f"{option}: cannot create the folder {path!r}: {str(existing)!r} is a file")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".miaray-write-check-"):
            pass
    except OSError as error:
        what = (f"write to the folder {path!r}" if existing == folder
                else f"create the folder {path!r} in {str(existing)!r}")
        raise ConfigError(f"{option}: cannot {what} ({error.strerror or error})") from None


def check_output_file(path: str | os.PathLike, *, option: str, folder_must_exist: bool = False) -> None:
    """Refuse, before any work, an output file that could not be written at the end: a folder in its
    place, a folder for it that is a file or not writable, or missing with `folder_must_exist` (the
    check creates nothing: `check_writable_folder`).
    Also a symbolic link: writing it would overwrite the file it points to, which the user never named
    (an output is written through a link only when the user names the file itself)."""
    target = Path(path).expanduser()
    if target.is_symlink():
        raise ConfigError(f"{option} {str(path)!r} is a symbolic link to {os.readlink(target)!r}: writing it would "
                          "overwrite that file; name the file itself, or another path")
    if target.is_dir():
        raise ConfigError(f"{option} {str(path)!r} is a folder; name a file in it")
    check_writable_folder(str(Path(path).parent), option=f"{option} {str(path)!r}", must_exist=folder_must_exist)
    if target.exists() and not os.access(target, os.W_OK):
        raise ConfigError(f"{option} {str(path)!r}: not writable")


def _is(error: BaseException, module: str, name: str) -> bool:
    loaded = sys.modules.get(module)  # not loaded: the error cannot be one of its classes
    return loaded is not None and isinstance(error, getattr(loaded, name))


def _out_of_memory(error: BaseException) -> bool:
    return _is(error, "torch", "OutOfMemoryError")


def exit_status(error: BaseException) -> int | None:
    """The status an entry point exits with for `error`; None for a bug (its traceback is shown)."""
    if isinstance(error, Terminated):
        return TERMINATED_STATUS
    if isinstance(error, KeyboardInterrupt):
        return INTERRUPTED_STATUS
    if isinstance(error, ConfigError):
        return USAGE_STATUS
    if isinstance(error, EXPECTED_ERRORS) or any(_is(error, module, name) for module, name in EXPECTED_LAZY):
        return ERROR_STATUS
    return None


def message(error: BaseException, *, resume: str = "") -> str:
    """What is printed after `prog: ` for an expected error (`resume`: how to go on after Ctrl-C)."""
    if isinstance(error, KeyboardInterrupt):
        what = "terminated (SIGTERM)" if isinstance(error, Terminated) else "interrupted"
        return f"{what}{'; ' + resume if resume else ''}"
    text = str(error).strip() or type(error).__name__
    if _out_of_memory(error):
        text = f"out of GPU memory ({' '.join(text.split())[:200]}); use a smaller --width or fewer trials per GPU"
    return f"error: {text}"


def entry_point(*, prog: str, resume: str = "") -> Callable[[Main], Main]:
    """Decorate an entry point's `main(argv=None) -> int` so that an expected error (`exit_status`) prints
    one line `prog: error: ...` on stderr and returns its status, unless `--debug` or MIARAY_DEBUG asks
    for the traceback; a bug propagates with its traceback. argparse's own exits pass through. `resume`
    says after Ctrl-C how to go on. While `main` runs in the main thread, SIGTERM is handled like Ctrl-C
    (`Terminated`: the same line with 'terminated', exit 143); the handler before it is put back after."""
    def decorate(main: Main) -> Main:
        @functools.wraps(main)
        def run(argv: Sequence[str] | None = None) -> int:
            on_main = threading.current_thread() is threading.main_thread()
            previous = signal.signal(signal.SIGTERM, _raise_terminated) if on_main else None
            _sigterm.clear()
            try:
                return main(argv)
            except BaseException as error:  # noqa: BLE001  sorted by exit_status; the rest re-raised
                if isinstance(error, KeyboardInterrupt) and _sigterm.is_set():
                    error = Terminated()  # raised by our handler, or by Ray where the handler interrupted it
                status = None if isinstance(error, SystemExit) else exit_status(error)
                if status is None or debug_requested(sys.argv[1:] if argv is None else argv):
                    raise
                print(f"{prog}: {message(error, resume=resume)}", file=sys.stderr, flush=True)
                return status
            finally:
                if on_main:
                    signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        return run
    return decorate
