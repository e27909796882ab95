"""Names that a package exports but imports only when first touched (PEP 562), so `import atlas_hf`
stays fast: torch, TRL and the SDKs load only with a name that needs them."""

from __future__ import annotations

import importlib
import warnings
from typing import Any, Callable, Mapping


def lazy_exports(
    package: str, exports: Mapping[str, str], namespace: dict[str, Any], replaced_module: str | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of a package whose names live in its modules.

    Args:
        package (`str`): The package's name, for the error message.
        exports (`Mapping[str, str]`): Each exported name and the module that defines it.
        namespace (`dict`): The package's `globals()`, where a name is cached once loaded.
        replaced_module (`str`, *optional*): The module this package replaced (0.6's flat
            `atlas_hf.evaluation`, say). Its other names still resolve for one release, each with one
            `FutureWarning` that names the new module.

    Returns:
        `tuple[Callable, Callable]`: `__getattr__` and `__dir__` for the package.
    """

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
        elif replaced_module is not None and not name.startswith("__"):
            module = importlib.import_module(replaced_module)
            if not hasattr(module, name):
                raise AttributeError(f"module {package!r} has no attribute {name!r}")
            warnings.warn(
                f"{package}.{name} moved to {replaced_module}.{name}; the old name goes in the next release.",
                FutureWarning,
                stacklevel=2,
            )
            value = getattr(module, name)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
