"""The exceptions atlas_hf raises, in one place (each says what was wrong, which input, and how to fix it).

Every one derives from `AtlasError`, and from the built-in exception it refines (`ValueError`,
`KeyError`, ...), so `except ValueError` keeps working and `except AtlasError` catches what the
package reports on purpose. A Hub failure is a `HubPublishError`, which is also the
`huggingface_hub` class it came from (`RepositoryNotFoundError`, `GatedRepoError`, ..., see
`hub_publish_error_class`; its response, request id and server message kept, the original as `__cause__`).
"""

from __future__ import annotations

import functools

from huggingface_hub.errors import HfHubHTTPError


class AtlasError(Exception):
    """The base of every exception atlas_hf raises on purpose (a bug raises something else)."""


class InvalidInputError(AtlasError, ValueError, TypeError):
    """An argument, a setting or an input value is invalid; the message names it and how to fix it.

    It is a `ValueError` (and a `TypeError`, for arguments of the wrong kind), as the built-in checks it
    replaces were.
    """


class TrajectoryError(AtlasError, ValueError):
    """A row that cannot be read as a trajectory; the message names the row, the field and the fix.

    Attributes:
        row (`int` or `str`): The row's index in the input (or a label such as "3 of the batch").
        field (`str`): The field (column or turn key) at fault.
        problem (`str`): What was wrong with it.
    """

    def __init__(self, row: int | str | None, field: str, problem: str, fix: str = "") -> None:
        self.row, self.field, self.problem = row, field, problem
        message = f"Row {row}, field `{field}`: {problem}" if row is not None else f"Field `{field}`: {problem}"
        if fix:
            message += f" {fix}"
        super().__init__(message)


class AnnotationError(AtlasError, ValueError):
    """Rows could not be annotated and `CriticalStepAnnotator(strict=True)` was asked (the valid answers of
    the batch are cached before it is raised)."""


class OracleError(AtlasError, RuntimeError):
    """An oracle cannot answer at all (a rejected key, a missing model) or broke its contract."""


class TemplateError(AtlasError, ValueError):
    """A chat template could not render a trajectory."""


class DistributedSetupError(AtlasError, RuntimeError):
    """A launch asked for a parallelism (FSDP, DeepSpeed) that accelerate did not set up, so training would
    silently run with full replicas instead of shards."""


class AtlasFileNotFoundError(AtlasError, FileNotFoundError):
    """A file or folder atlas_hf was pointed at is missing or is not what was expected."""


class HubPublishError(AtlasError, HfHubHTTPError):
    """A Hub request failed while publishing; the message says what failed and how to fix it.

    Secrets are removed from the message and from the original error (its `__cause__`).

    Args:
        message (`str`): What failed and how to fix it (the request id and the server's message are
            appended, as `huggingface_hub` does).
        response (`httpx.Response`): The Hub's response.
        server_message (`str`, *optional*): The Hub's own error text.
    """


@functools.lru_cache(maxsize=None)
def hub_publish_error_class(hub_class: type[HfHubHTTPError]) -> type[HubPublishError]:
    """The `HubPublishError` raised for a failure of `hub_class`: a subclass of both, so a publish failure
    stays catchable as the Hub's own class (`RepositoryNotFoundError`, `GatedRepoError`, ...), as
    huggingface_hub refines its errors rather than replacing them.

    Args:
        hub_class (`type[HfHubHTTPError]`): The class huggingface_hub raised.

    Returns:
        `type[HubPublishError]`: `HubPublishError` itself for `HfHubHTTPError`, else a cached subclass of
        `HubPublishError` and `hub_class`.
    """
    if hub_class is HfHubHTTPError or issubclass(hub_class, HubPublishError):
        return HubPublishError
    return type(f"HubPublishError[{hub_class.__name__}]", (HubPublishError, hub_class), {"__module__": __name__})


class _AtlasKeyError(AtlasError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class EnvironmentNotFoundError(_AtlasKeyError):
    """`make_env` was given a name that no environment is registered under."""


class ColumnNotFoundError(_AtlasKeyError):
    """A dataset lacks a column a stage needs; the message lists the columns it has and the fix."""


__all__ = [
    "AnnotationError",
    "AtlasError",
    "AtlasFileNotFoundError",
    "ColumnNotFoundError",
    "EnvironmentNotFoundError",
    "HubPublishError",
    "InvalidInputError",
    "OracleError",
    "TemplateError",
    "TrajectoryError",
]
