"""Load a user's verifier function from a `package.module:function` import path.

    .venv/bin/python -c "from potstill.pipelines.verify.user_callable import load_callable; print(load_callable('os.path:isabs'))"

The function is called as `function(completion, reference) -> bool` (None
means "no verdict"). It must be importable on every Ray worker (install it,
or ship it with the job's runtime_env).
"""

from __future__ import annotations

import importlib
from typing import Callable

FIELD = "verify.function"
_FORM = "'package.module:function', e.g. 'my_checks.grading:is_correct'"


class CallableLoadError(ValueError):
    """`verify.function` does not name an importable callable."""


def load_callable(path: str, *, field: str = FIELD) -> Callable[..., object]:
    """Import `package.module:attr[.attr...]` and return it; errors name `field`, the problem and the fix."""
    module_name, sep, attr_path = path.partition(":")
    if not sep or not module_name.strip() or not attr_path.strip():
        raise CallableLoadError(f"{field}={path!r} is not an import path; write it as {_FORM}")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise CallableLoadError(
            f"{field}={path!r}: module {module_name!r} cannot be imported ({type(exc).__name__}: {exc}); "
            "install the package or put it on the PYTHONPATH of every Ray worker (runtime_env working_dir/py_modules)"
        ) from exc
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise CallableLoadError(
                f"{field}={path!r}: {getattr(obj, '__name__', module_name)!r} has no attribute {part!r}; "
                f"check the name after ':' (form {_FORM})"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise CallableLoadError(
            f"{field}={path!r} is a {type(obj).__name__}, not a callable; "
            "point it at a function taking (completion, reference) and returning a bool"
        )
    return obj
