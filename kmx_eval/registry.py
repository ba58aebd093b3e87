"""Registries from params names to implementations.

Params name a registry key (a dataset ``source``, a backbone ``architecture``, an explainer, a
metric); adding an implementation is one decorated function or class and no other change.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from kmx_eval.errors import ParamsError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """A named mapping from keys to implementations with helpful lookup errors.

    Examples
    --------
    >>> SOURCES = Registry("dataset source")
    >>> @SOURCES.register("synthetic")
    ... def make_synthetic(cfg): ...
    >>> SOURCES.get("synthetic") is make_synthetic
    True
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str, where: str | None = None) -> T:
        """Return the implementation of ``name``; ``where`` names the params key for the message."""
        try:
            return self._items[name]
        except KeyError:
            at = f"{where}: " if where else ""
            raise ParamsError(
                f"{at}unknown {self.kind} {name!r}{did_you_mean(name, self._items)}; "
                f"valid: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)
