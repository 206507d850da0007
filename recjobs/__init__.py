"""recjobs: the batch movie recommender's jobs, as plain functions."""

from .errors import ConfigError, DataError, RecJobsError, StateError
from .settings import Settings

__all__ = ["ConfigError", "DataError", "RecJobsError", "Settings", "StateError"]
