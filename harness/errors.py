"""The harness's one error hierarchy: what the user must fix (exit 3) and what could not go on (exit 4).

::

    HarnessError
    ├── InputError (also a ValueError)          exit 3: bad input; the message names the key, file or trials
    │   ├── ConfigError                         a benchmark file, search space or override
    │   ├── SearchSpaceError                    one search-space entry (the benchmark wraps it in a ConfigError)
    │   ├── DatasetError (harness.data.layout)  a dataset tree or cache; ``.problems`` lists each file
    │   ├── MissingInputError                   a file or folder the input names is missing (a FileNotFoundError)
    │   ├── ModelError                          an unknown architecture or a shape it cannot take
    │   ├── ReplayError                         a sweep the ASHA replay cannot use
    │   ├── ResultsError                        a path that is not a readable results directory
    │   │   └── MissingResultsError             it or a required file is missing (a MissingInputError too)
    │   └── InsufficientSpaceError              what the command would write does not fit where it goes
    └── RunError (also a RuntimeError)          exit 4: a runtime failure; the message says what to do
        ├── ClusterError                        Ray cannot be used as asked
        ├── NoSpaceError                        a file system filled up while the command ran
        ├── CompareError                        the comparison cannot run as asked
        ├── TrackingError                       the MLflow tracking store cannot be used
        └── SweepError                          a sweep cannot start or continue
            ├── StorageError                    the sweep storage cannot be used
            └── SweepInterrupted                a stop signal ended the sweep (exit 130 / 143)

The command line (:mod:`harness.cli`) maps exactly these: any other exception is a bug, which exits 4
with its traceback instead of blaming the input. The subclasses of ``ValueError`` / ``RuntimeError``
keep ``except ValueError`` callers working. Nothing here imports anything but the standard library, so
every layer can raise these.
"""

from __future__ import annotations

__all__ = [
    "ClusterError",
    "CompareError",
    "ConfigError",
    "HarnessError",
    "InputError",
    "InsufficientSpaceError",
    "MissingInputError",
    "MissingResultsError",
    "ModelError",
    "NoSpaceError",
    "ReplayError",
    "ResultsError",
    "RunError",
    "SearchSpaceError",
    "StorageError",
    "SweepError",
    "SweepInterrupted",
    "TrackingError",
]


class HarnessError(Exception):
    """Base of every error the harness raises on purpose."""


class InputError(HarnessError, ValueError):
    """Bad input the user must fix (exit 3); the message names the key, file or trials."""


class RunError(HarnessError, RuntimeError):
    """A runtime failure (exit 4): a service, cluster or sweep state that cannot go on; the message says why."""


class ConfigError(InputError):
    """A benchmark file, search space or override is invalid; the message names the key or file."""


class SearchSpaceError(InputError):
    """A search-space entry is invalid; the message names the key."""


class MissingInputError(InputError, FileNotFoundError):
    """A file or folder the input names does not exist; the message names the path."""


class ModelError(InputError):
    """An unknown architecture, or a shape (depth, option) it cannot take; the message lists the valid ones."""


class ReplayError(InputError):
    """A sweep cannot be replayed (trials that did not run every epoch); the message names them."""


class ResultsError(InputError):
    """A path is not a readable results directory; the message names the path and the offending file."""


class MissingResultsError(ResultsError, MissingInputError):
    """The directory, or a required file in it, does not exist."""


class InsufficientSpaceError(InputError):
    """What a command would write does not fit in the free space where it goes; the message names the place."""


class NoSpaceError(RunError):
    """A file system filled up while the command ran; the message names the place and how to go on."""


class ClusterError(RunError):
    """Ray cannot be used as asked (unreachable address, refused token, resources no node has, other data)."""


class CompareError(RunError):
    """The comparison cannot run as asked; the message says why."""


class TrackingError(RunError):
    """The tracking store cannot be used; the message names the URI (or the run)."""


class SweepError(RunError):
    """A sweep cannot start or continue; the message says why and what to do."""


class StorageError(SweepError):
    """The sweep storage cannot be used (unreachable, no such bucket, refused); the message names the URI."""


class SweepInterrupted(SweepError):
    """A stop signal ended the sweep before its budget was spent: it is resumable and never counts as finished."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
