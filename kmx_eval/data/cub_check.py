"""``python -m kmx_eval.data.cub_check PATH [SEGMENTATIONS]``: check a CUB-200-2011 download.

Apart from :mod:`kmx_eval.data.cub` because ``python -m`` runs its module a second time as
``__main__``, which would register the ``cub`` source twice.
"""

from __future__ import annotations

import sys
from pathlib import Path

from kmx_eval.data.cub import CUB, CubTree, find_segmentations, read_tree
from kmx_eval.errors import KmxError


def summary(tree: CubTree, segmentations: Path | None) -> list[str]:
    """What a download check prints: counts of images, classes, split, segmentations and parts."""
    n_train = sum(tree.train.values())
    lines = [f"{tree.root}: {len(tree.images)} images of {len(tree.classes)} classes "
             f"({n_train} train, {len(tree.images) - n_train} test, the official split)",
             f"parts: {len(tree.part_names)} named ({', '.join(tree.part_names[:3])}, ...); "
             f"{int(sum(k[:, 2].sum() for k in tree.part_locs.values()))} visible annotations"]
    if segmentations is None:
        lines.append("segmentations: none found (no masks)")
    else:
        absent = [p for p in tree.images.values() if not (segmentations / Path(p).with_suffix(".png")).is_file()]
        lines.append(f"segmentations: {segmentations}, {len(tree.images) - len(absent)} found, "
                     f"{len(absent)} missing{f' (first: {absent[0]})' if absent else ''}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Check a CUB download before a study.

    Reads every list and checks every listed image exists (images are not decoded); prints the
    counts, or one line naming the faulty file and exits with status 2.
    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print("usage: python -m kmx_eval.data.cub_check CUB_200_2011 [segmentations]", file=sys.stderr)
        return 2
    try:
        cfg = CUB.Config(path=args[0], segmentations=args[1] if len(args) == 2 else None)
        tree = read_tree(cfg.path)
        for line in summary(tree, find_segmentations(cfg, tree.root)):
            print(line)
    except KmxError as exc:
        print(f"kmx-eval: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
