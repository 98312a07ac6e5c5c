"""Errors that pandiff raises for bad input; the CLI prints their message without a traceback."""

import errno


class PandiffError(Exception):
    """Base class: a problem with the user's input that the message explains and says how to fix."""


class DataError(PandiffError, ValueError):
    """A dataset, annotation, map or image is missing, corrupt or inconsistent."""


class WeightsError(PandiffError):
    """A weight folder or hub id is absent, unreadable, or does not match the expected model."""


class ConfigError(PandiffError, ValueError):
    """A configuration value or command-line option is invalid."""


_ERRNO_HINTS = {
    errno.EACCES: "check its permissions or choose another path",
    errno.EPERM: "check its permissions or choose another path",
    errno.EROFS: "the file system is read-only; choose another path",
    errno.ENOSPC: "the disk is full; free some space or write elsewhere (nothing half-written is kept)",
    errno.EDQUOT: "the disk quota is used up; free some space or write elsewhere",
    errno.EBUSY: "it is in use (a mount point or the current folder?); choose another path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; fix the path",
    errno.EISDIR: "it is a folder where a file is expected; fix the path",
    errno.ENOENT: "it does not exist; fix the path",
    errno.ELOOP: "it is a loop of symbolic links; fix the path",
    errno.ENAMETOOLONG: "the name is too long; choose a shorter path",
}


def describe_environment_error(exc: BaseException) -> str | None:
    """One line for a failure of the machine or of a file rather than of pandiff (a full disk, a
    permission, a bomb image, a binary file read as text, memory); None for anything else.

    The CLI prints it instead of a traceback; ``PANDIFF_DEBUG=1`` shows the traceback.
    """
    if isinstance(exc, OSError):
        where = " ".join(f"'{f}'" for f in (exc.filename, exc.filename2) if f is not None)
        reason = exc.strerror or str(exc) or type(exc).__name__
        hint = _ERRNO_HINTS.get(exc.errno, "check the path and the disk")
        return f"{reason}{': ' + where if where else ''}; {hint}"
    if isinstance(exc, UnicodeDecodeError):
        return (
            f"a file that should be UTF-8 text is not ({exc.reason} at byte {exc.start}); a binary file "
            "was given where a text file (YAML, JSON) is expected"
        )
    if isinstance(exc, MemoryError):
        return "out of memory; ask for less at once (a smaller --batch, --n or size) or use a larger machine"
    if type(exc).__name__ == "DecompressionBombError":  # PIL's, without importing PIL here
        return f"{exc}; pandiff refuses images this large (a decompression bomb)"
    return None


def brief(exc: BaseException) -> str:
    """One line naming a library's complaint (its type and first 300 characters), for our messages."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
