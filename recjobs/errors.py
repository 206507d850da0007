"""One base error; the CLI turns each into a one-line message and exit status 1."""


class RecJobsError(Exception):
    """Base of every error a user can act on."""


class DataError(RecJobsError):
    """An input file is missing or malformed."""


class ConfigError(RecJobsError):
    """A setting or argument is out of range."""


class StateError(RecJobsError):
    """The database or artifacts are not in the state a job needs (e.g. no published run)."""


DISK_FULL = ("database or disk is full",)
READ_ONLY = ("attempt to write a readonly database", "readonly database")
IO_ERROR = ("disk I/O error", "unable to open database file")


def storage_message(error: BaseException, db=None) -> str:
    """One line for an OS or SQLite error: what failed, where, and what to do. Writes are
    atomic (files renamed into place, publishing one transaction), so what was published stays."""
    import errno

    detail = getattr(error, "orig", None) or error
    text = str(detail).splitlines()[0] if str(detail) else type(detail).__name__
    code = getattr(detail, "errno", None)
    where = getattr(detail, "filename", None) if isinstance(detail, OSError) else db  # SQLite errors: the database
    prefix = f"{where}: " if where and str(where) not in text else ""
    unchanged = "what is published is unchanged"
    if code == errno.ENOSPC or any(m in text for m in DISK_FULL):
        return f"{prefix}no space left on the device ({text}); free some space and run again: {unchanged}"
    if code == errno.EROFS or any(m in text for m in READ_ONLY):
        return f"{prefix}cannot write: the file system is read-only ({text}); expected a writable folder: {unchanged}"
    if any(m in text for m in IO_ERROR):
        return (
            f"{prefix}SQLite cannot read or write the database's files ({text}); expected a folder with free space "
            f"where SQLite may create its -wal and -shm files: {unchanged}"
        )
    return f"{prefix}{type(detail).__name__}: {text}"
