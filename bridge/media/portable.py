"""How media state crosses to another process: a leg moving between media workers takes its
stream identity and figures along, and a worker reports digits to the bridge, both pickled.

Compiled with mypyc (``bridge/native.py``) a class has no ``__slots__`` for pickle to read and
cannot be made without its ``__init__``, so pickle's default protocol cannot rebuild it. Each
class that crosses reduces itself to :func:`rebuilt` instead, which works compiled or not.
"""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")


def rebuilt(cls: type[T], arguments: dict[str, Any], state: dict[str, Any]) -> T:
    """``cls(**arguments)`` with ``state`` restored attribute by attribute."""
    obj = cls(**arguments)
    for name, value in state.items():
        setattr(obj, name, value)
    return obj
