"""Block combinations S, written by their digits: ``B4``, ``B34``, ``B234``, ``B1234``, ``B24``...

A combination is a non-empty subset of the blocks B1..Bn of the CNN's architecture (n is at most 9;
a ResNet has B1..B4, a VGG16 B1..B5: :mod:`kmx_eval.models.architectures`). The digits must be
strictly increasing, so every subset has exactly one name. :func:`parse_combination` checks the
spelling; which blocks exist is the architecture's business (``Architecture.check_blocks``).

A name may end with a block weighting, ``B234_balanced`` or ``B234_channels`` (docs/METHOD.md,
section 6): how much each block weighs in ``F_S`` (:data:`WEIGHTINGS`). Without a suffix the
combination takes ``features.block_weighting``. So ``combinations: [B234, B234_balanced]`` runs both
weightings as separate rows of one study (names use only letters, digits and ``_``, as DVC stage
names and paths need).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kmx_eval.errors import ParamsError

#: Block weightings of F_S: ``channels`` concatenates the (normalised) blocks as they are, so a block
#: weighs in proportion to its channel count; ``balanced`` scales each block to the same total
#: variance (:func:`kmx_eval.models.blocks.block_scales`).
WEIGHTINGS = ("channels", "balanced")

_PATTERN = re.compile(r"^B([1-9]+)(?:_([a-z]+))?$")


@dataclass(frozen=True, order=True)
class Combination:
    """A block combination S; ``blocks`` is sorted, ``shallowest`` sets the grid of F_S.

    ``weighting`` is the block weighting in effect (:data:`WEIGHTINGS`); ``spelled`` says whether the
    name carries it as a suffix (``B234_balanced``) or took it from ``features.block_weighting``
    (``B234``). Only the spelling, not equality, depends on ``spelled``.
    """

    blocks: tuple[int, ...]
    weighting: str
    spelled: bool = field(default=False, compare=False)

    @property
    def name(self) -> str:
        digits = "B" + "".join(str(b) for b in self.blocks)
        return f"{digits}_{self.weighting}" if self.spelled else digits

    @property
    def shallowest(self) -> int:
        return self.blocks[0]

    def __str__(self) -> str:
        return self.name


def check_combination_name(name: str, *, where: str = "combinations") -> tuple[tuple[int, ...], str | None]:
    """The blocks and the weighting suffix (or None) that ``name`` spells, e.g. ``'B234_balanced'`` ->
    ``((2, 3, 4), 'balanced')``; what the params validator checks before any weighting is known.

    Raises :class:`~kmx_eval.errors.ParamsError` naming ``where`` for a character that is not a block
    digit (``B0``; whether the architecture has the blocks is ``Architecture.check_blocks``'s
    business), digits out of order or repeated (``B43``, ``B44``), an empty combination (``B``) or an
    unknown weighting suffix (``B234_equal``).
    """
    text = str(name).strip()
    valid = ("a 'B' followed by strictly increasing block digits from 1-9, such as B4, B34, B234, B1234, "
             f"optionally with a block weighting suffix ({', '.join('_' + w for w in WEIGHTINGS)})")
    if text in ("", "B"):
        raise ParamsError(f"{where}: empty block combination {name!r}; expected {valid}")
    m = _PATTERN.match(text)
    if not m:
        bad = [c for c in text[1:].split("_")[0] if c not in "123456789"] if text.startswith("B") else []
        hint = f" ({bad[0]!r} is not a block digit)" if bad else ""
        raise ParamsError(f"{where}: invalid block combination {name!r}{hint}; expected {valid}")
    digits = tuple(int(c) for c in m.group(1))
    suffix = m.group(2)
    if suffix is not None and suffix not in WEIGHTINGS:
        raise ParamsError(f"{where}: invalid block weighting suffix {suffix!r} in {name!r}; "
                          f"valid: {', '.join('_' + w for w in WEIGHTINGS)}")
    if list(digits) != sorted(set(digits)):
        suggestion = "B" + "".join(str(d) for d in sorted(set(digits)))
        raise ParamsError(
            f"{where}: invalid block combination {name!r}: digits must be strictly increasing "
            f"(did you mean {suggestion!r}?); expected {valid}"
        )
    return digits, suffix


def parse_combination(name: str, *, weighting: str, where: str = "combinations") -> Combination:
    """Parse ``'B234'`` into ``Combination((2, 3, 4), weighting)`` and ``'B234_balanced'`` into
    ``Combination((2, 3, 4), "balanced", spelled=True)``.

    ``weighting`` is the block weighting of a name without suffix: ``features.block_weighting``, passed
    on by ``Params.combination``, the one road from params to a combination (its default is the
    schema's). Errors as :func:`check_combination_name`, and for an unknown ``weighting``.
    """
    if weighting not in WEIGHTINGS:
        raise ParamsError(f"features.block_weighting: unknown value {weighting!r}; valid: {', '.join(WEIGHTINGS)}")
    digits, suffix = check_combination_name(name, where=where)
    if suffix is None:
        return Combination(digits, weighting)
    return Combination(digits, suffix, spelled=True)


def as_combination(combination: Combination) -> Combination:
    """``combination`` itself; a name (``"B234"``) is refused rather than parsed, since parsing it
    here would have to guess the block weighting (``Params.combination`` knows it)."""
    if not isinstance(combination, Combination):
        raise TypeError(f"expected a Combination, got {combination!r}: build it with "
                        "Params.combination(name) or parse_combination(name, weighting=...)")
    return combination
