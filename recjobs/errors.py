"""One base error; the CLI turns each into a one-line message and exit status 1."""


class RecJobsError(Exception):
    """Base of every error a user can act on."""


class DataError(RecJobsError):
    """An input file is missing or malformed."""


class ConfigError(RecJobsError):
    """A setting or argument is out of range."""


class StateError(RecJobsError):
    """The database or artifacts are not in the state a job needs (e.g. no published run)."""
