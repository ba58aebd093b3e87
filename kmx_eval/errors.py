"""User-facing errors.

A :class:`KmxError` is a problem with the user's input (params, files, data), not a bug: stages
print its message as one line and exit with status 2, without a traceback. Messages name the
offending parameter, file or sample and say what would be valid.
"""

from __future__ import annotations

import difflib


class KmxError(Exception):
    """An input problem the user can fix; its message is shown as is."""


class ParamsError(KmxError):
    """A wrong key, type or value in params.yaml."""


class DataError(KmxError):
    """A dataset, image or mask that cannot be used."""


class UnavailableError(KmxError):
    """Something that needs the network (hub dataset, pretrained weights) or hardware (CUDA)."""


def did_you_mean(value: str, valid) -> str:
    """Return ' (did you mean X?)' for the closest valid name, or '' when none is close."""
    close = difflib.get_close_matches(str(value), [str(v) for v in valid], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
