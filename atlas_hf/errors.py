"""The exceptions atlas_hf raises, in one place (each says what was wrong, which input, and how to fix it)."""

from __future__ import annotations


class TrajectoryError(ValueError):
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


class AnnotationError(ValueError):
    """Rows could not be annotated and `CriticalStepAnnotator(strict=True)` was asked (the valid answers of
    the batch are cached before it is raised)."""


class TemplateError(ValueError):
    """A chat template could not render a trajectory."""


class HubPublishError(RuntimeError):
    """A Hub request failed while publishing; the message says what failed and how to fix it."""


class EnvironmentNotFoundError(KeyError):
    """`make_env` was given a name that no environment is registered under."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""
