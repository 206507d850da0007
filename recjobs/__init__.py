"""recjobs: the batch movie recommender's jobs, as plain functions.

The packages are the layers, each importing only the ones before it: storage (the database,
the run folders, publishing), method (the model and its scores), evaluation (holdout and
metrics), jobs (one module per step or command) and serving (datasette). cli.py and
pipeline.py are the command's thin faces; settings.py holds the one settings object.
"""

from .errors import ConfigError, DataError, RecJobsError, StateError
from .settings import Settings

__all__ = ["ConfigError", "DataError", "RecJobsError", "Settings", "StateError"]
