"""Block combinations S, written by their digits: ``B4``, ``B34``, ``B234``, ``B1234``, ``B24``...

A combination is a non-empty subset of the ResNet blocks {1, 2, 3, 4} (torchvision's ``layer1`` ..
``layer4``). The digits must be strictly increasing, so every subset has exactly one name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kmx_eval.errors import ParamsError

BLOCKS = (1, 2, 3, 4)
#: torchvision ResNet node that holds block b's output.
BLOCK_NODES = {1: "layer1", 2: "layer2", 3: "layer3", 4: "layer4"}
#: Stride of block b's grid relative to the input (ResNet: stem /4, then /2 per stage).
BLOCK_STRIDES = {1: 4, 2: 8, 3: 16, 4: 32}

_PATTERN = re.compile(r"^B([1-4]+)$")


@dataclass(frozen=True, order=True)
class Combination:
    """A block combination S; ``blocks`` is sorted, ``shallowest`` sets the grid of F_S."""

    blocks: tuple[int, ...]

    @property
    def name(self) -> str:
        return "B" + "".join(str(b) for b in self.blocks)

    @property
    def shallowest(self) -> int:
        return self.blocks[0]

    @property
    def stride(self) -> int:
        """Input pixels per cell of F_S's grid."""
        return BLOCK_STRIDES[self.shallowest]

    def __str__(self) -> str:
        return self.name


def parse_combination(name: str, where: str = "combinations") -> Combination:
    """Parse ``'B234'`` into ``Combination((2, 3, 4))``.

    Raises :class:`~kmx_eval.errors.ParamsError` naming ``where`` for an unknown block (``B5``), digits
    out of order or repeated (``B43``, ``B44``), or an empty combination (``B``).
    """
    text = str(name).strip()
    valid = "a 'B' followed by strictly increasing block digits from 1-4, such as B4, B34, B234, B1234"
    if text in ("", "B"):
        raise ParamsError(f"{where}: empty block combination {name!r}; expected {valid}")
    m = _PATTERN.match(text)
    if not m:
        bad = [c for c in text[1:] if c not in "1234"] if text.startswith("B") else []
        hint = f" (unknown block B{bad[0]}; blocks are B1..B4)" if bad else ""
        raise ParamsError(f"{where}: invalid block combination {name!r}{hint}; expected {valid}")
    digits = tuple(int(c) for c in m.group(1))
    if list(digits) != sorted(set(digits)):
        suggestion = "B" + "".join(str(d) for d in sorted(set(digits)))
        raise ParamsError(
            f"{where}: invalid block combination {name!r}: digits must be strictly increasing "
            f"(did you mean {suggestion!r}?); expected {valid}"
        )
    return Combination(digits)
