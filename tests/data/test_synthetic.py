"""The synthetic source: determinism, ground truth consistent with images, config validation."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError


def _arrays(split):
    from kmx_eval.data import decode_column

    return (decode_column(split, "image"), np.asarray(split["label"]),
            decode_column(split, "mask"), decode_column(split, "parts"))


def test_schema_sizes_and_balanced_labels(synthetic_dd, size):
    from kmx_eval.data import class_names, has_masks, has_parts

    assert set(synthetic_dd) == {"train", "test"}
    assert has_masks(synthetic_dd) and has_parts(synthetic_dd)
    names = class_names(synthetic_dd)
    assert len(names) == 3 and len(set(names)) == 3
    for split, per_class in (("train", 6), ("test", 3)):
        ds = synthetic_dd[split]
        row = ds[0]
        assert row["image"].mode == "RGB" and row["image"].size == (size, size)
        assert row["mask"].mode == "L" and row["parts"].mode == "L"
        assert np.bincount(ds["label"], minlength=3).tolist() == [per_class] * 3


def test_same_seed_same_arrays_other_seed_other_arrays(synthetic_dd, tiny_config, size):
    from kmx_eval.data import prepare_dataset

    again = prepare_dataset(tiny_config(), size)
    for split in ("train", "test"):
        for a, b in zip(_arrays(synthetic_dd[split]), _arrays(again[split])):
            np.testing.assert_array_equal(a, b)
    other = prepare_dataset(tiny_config(seed=1), size)
    img0, _, mask0, _ = _arrays(synthetic_dd["train"])
    img1, _, mask1, _ = _arrays(other["train"])
    assert (img0 != img1).mean() > 0.5
    assert not np.array_equal(mask0, mask1)


def test_masks_and_part_maps_match_the_objects(synthetic_dd):
    for split in ("train", "test"):
        images, labels, masks, parts = _arrays(synthetic_dd[split])
        assert set(np.unique(masks)) == {0, 255}
        assert set(np.unique(parts)) <= {0, 1, 2, 3}
        # Parts lie inside the object mask and fill it: the mask is the union of the parts.
        np.testing.assert_array_equal(parts > 0, masks == 255)
        coverage = (masks == 255).mean(axis=(1, 2))
        assert coverage.min() > 0.05 and coverage.max() < 0.4, coverage
        assert 0.1 < coverage.mean() < 0.3
        # Every part is visible in almost every image (parts are spaced so none hides another).
        present = np.array([[(p == k).any() for k in (1, 2, 3)] for p in parts])
        assert present.mean() > 0.9
        # The object is painted: inside and outside the mask differ in colour.
        inside = np.array([im[m == 255].mean(axis=0) for im, m in zip(images, masks)])
        outside = np.array([im[m == 0].mean(axis=0) for im, m in zip(images, masks)])
        assert np.abs(inside - outside).max(axis=1).mean() > 10


def test_objects_of_one_class_share_their_part_colours(synthetic_dd):
    """Each class's parts have class-specific colours: per-part mean colours agree within a class."""
    images, labels, _, parts = _arrays(synthetic_dd["train"])
    colour = np.full((len(images), 3, 3), np.nan)
    for i, (im, p) in enumerate(zip(images, parts)):
        for k in (1, 2, 3):
            if (p == k).any():
                colour[i, k - 1] = im[p == k].mean(axis=0)
    within = np.nanmean([np.nanstd(colour[labels == c], axis=0).mean() for c in range(3)])
    between = np.nanstd(np.stack([np.nanmean(colour[labels == c], axis=0) for c in range(3)]), axis=0).mean()
    assert between > 2 * within


def test_config_defaults_and_validation():
    from kmx_eval.config import format_validation_error
    from kmx_eval.data import SOURCES

    Config = SOURCES.get("synthetic").Config
    cfg = Config(source="synthetic")
    assert (cfg.n_classes, cfg.train_per_class, cfg.test_per_class, cfg.clutter, cfg.n_parts) == (6, 200, 50, 6, 3)
    with pytest.raises(ValidationError) as err:
        Config(source="synthetic", n_classes=1)
    assert "datasets.shapes.n_classes" in format_validation_error(err.value, prefix="datasets.shapes")
    with pytest.raises(ValidationError) as err:
        Config(source="synthetic", n_class=3)
    assert err.value.errors()[0]["type"] == "extra_forbidden"
    with pytest.raises(ValidationError, match="n_parts of 2 or more"):
        Config(source="synthetic", n_classes=500, n_parts=1)


def test_n_classes_below_two_is_a_params_error(tmp_path):
    from kmx_eval.validation import load_params
    from kmx_eval.errors import ParamsError

    path = tmp_path / "params.yaml"
    path.write_text("datasets:\n  shapes: {source: synthetic, n_classes: 1}\n")
    with pytest.raises(ParamsError, match="datasets.shapes.n_classes"):
        load_params(path)


def test_image_is_a_pure_function_of_seed_split_and_index():
    from kmx_eval.data.synthetic import design_classes, render
    from kmx_eval.seeding import rng

    designs = design_classes(4, 2, 7)
    pool = tuple(p.style for d in designs for p in d.parts)
    a = render(designs[1], 40, rng(7, "train", 5), 3, pool)
    b = render(designs[1], 40, rng(7, "train", 5), 3, pool)
    c = render(designs[1], 40, rng(7, "train", 6), 3, pool)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert set(np.unique(a[1])) <= {0, 1, 2}


def test_paper_scale_classes_share_parts_but_not_designs():
    """200 classes x 3 parts exceed the distinct part styles: classes then share parts, but no
    two classes have the same set of parts."""
    from kmx_eval.data.synthetic import N_STYLES, design_classes

    designs = design_classes(200, 3, 0)
    assert 200 * 3 > N_STYLES and len(designs) == 200
    sets = {frozenset(p.style for p in d.parts) for d in designs}
    assert len(sets) == 200
    assert all(len({p.style for p in d.parts}) == 3 for d in designs)
    assert design_classes(200, 3, 0) == designs


def test_a_small_style_pool_makes_classes_share_parts_but_not_designs():
    """With n_styles below n_classes * n_parts every class draws a distinct set of parts from the
    pool: parts recur across classes, so a single part no longer tells the class."""
    from kmx_eval.data.synthetic import design_classes

    designs = design_classes(10, 3, 0, 12)
    sets = [frozenset(p.style for p in d.parts) for d in designs]
    assert len(set(sets)) == 10 and all(len(s) == 3 for s in sets)
    styles = set().union(*sets)
    assert len(styles) <= 12
    uses = [sum(style in s for s in sets) for style in styles]
    assert max(uses) >= 2  # at least one part is shared by two classes
    assert len({d.name for d in designs}) == 10
    assert design_classes(10, 3, 0, 12) == designs
    # Without a pool, the same classes share nothing (the default dataset is unchanged).
    own = [frozenset(p.style for p in d.parts) for d in design_classes(10, 3, 0)]
    assert len(set().union(*own)) == 30


def test_coverage_sets_the_object_size(tiny_config, size):
    from kmx_eval.data import decode_column, prepare_dataset

    small = prepare_dataset(tiny_config(coverage=(0.04, 0.06), n_styles=5, clutter=8), size)
    masks = decode_column(small["train"], "mask") == 255
    share = masks.mean(axis=(1, 2))
    # Rasterisation at 48 px adds a pixel rim: allow a little above the drawn target.
    assert share.max() < 0.09 and share.mean() < 0.07, share
    default = decode_column(prepare_dataset(tiny_config(), size)["train"], "mask") == 255
    assert default.mean() > 2 * masks.mean()


def test_style_pool_and_coverage_are_validated():
    from kmx_eval.data import SOURCES

    Config = SOURCES.get("synthetic").Config
    assert Config(source="synthetic").n_styles is None
    assert Config(source="synthetic", coverage=[0.05, 0.1]).coverage == (0.05, 0.1)
    with pytest.raises(ValidationError, match="raise n_styles"):
        Config(source="synthetic", n_classes=10, n_parts=2, n_styles=4)  # C(4, 2) = 6 sets < 10
    with pytest.raises(ValidationError, match="at least n_parts"):
        Config(source="synthetic", n_parts=3, n_styles=2)
    with pytest.raises(ValidationError, match="coverage"):
        Config(source="synthetic", coverage=[0.2, 0.1])
    with pytest.raises(ValidationError, match="coverage"):
        Config(source="synthetic", coverage=[0.0, 0.1])


def _default_shapes(**overrides):
    """The study's ``shapes`` entry of params.yaml (with ``overrides``) and its number of concepts."""
    from pathlib import Path

    from kmx_eval.validation import load_params

    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    return params.dataset("shapes").model_copy(update=overrides), params.explain.concepts.n_concepts


def test_pixel_colour_cannot_recover_the_part_maps_drawn_per_image():
    """The colour floor (docs/METHOD.md, section 4): a pixel-colour k-means with the study's number of
    concepts, fitted on the object's pixels, scores about chance (AMI ~ 0) against the part maps of the
    study's shapes design drawn with colour: per_image (its palette, if it names one), while on the
    same design drawn with colour per style it recovers them."""
    from kmx_eval.data.synthetic import generate
    from kmx_eval.metrics.colour_floor import colour_kmeans_ami

    cfg, n_concepts = _default_shapes()
    ami = {}
    for colour in ("per_image", "per_style"):
        drawn = cfg.model_copy(update={"colour": colour, "palette": cfg.palette if colour == "per_image" else None})
        split = generate(drawn, 64, "test", 4)
        ami[colour] = np.nanmean(colour_kmeans_ami(np.stack(split["images"]), np.stack(split["parts"]),
                                                   n_concepts=n_concepts, seed=0))
    assert abs(ami["per_image"]) < 0.05, ami
    assert ami["per_style"] > 0.5, ami


def test_per_image_colour_paints_every_shape_of_an_image_in_two_tones(tiny_config, size):
    """colour: per_image: the object's pixels hold two colours per image (base and alternate tone of
    the image's colour), shared by the distractors; the class names read texture and shape."""
    from kmx_eval.data import class_names, prepare_dataset

    dd = prepare_dataset(tiny_config(colour="per_image"), size)
    images, _, _, parts = _arrays(dd["train"])
    tones = [np.unique(im[p > 0], axis=0) for im, p in zip(images, parts)]
    assert all(len(t) == 2 for t in tones)
    assert len({tuple(t[0]) for t in tones}) > 3  # the colour changes from image to image
    # Distractors carry the same two tones: every saturated background pixel is one of them.
    for im, p, t in zip(images, parts, tones):
        outside = im[p == 0]
        painted = (outside[:, None, :] == t[None]).all(axis=2).any(axis=1)
        assert painted.sum() > 0
    assert all(name.split("-")[0] in ("stripes", "checker", "rings") for name in class_names(dd))


def test_intervention_copies_change_only_what_they_say(tiny_config, synthetic_dd, size):
    """Part removal changes only that part's pixels; object-only keeps the object pixel for pixel and
    replaces the rest; the originals are the test split's images."""
    from kmx_eval.data.synthetic import intervention_copies

    for cfg, dd in ((tiny_config(), synthetic_dd),):
        images, _, _, parts = _arrays(dd["test"])
        idx = np.array([0, 4, 7])
        copies = intervention_copies(cfg, size, idx)
        np.testing.assert_array_equal(copies.original, images[idx])
        for j, i in enumerate(idx):
            for k in range(cfg.n_parts):
                changed = (copies.without_part[j, k] != images[i]).any(axis=2)
                assert not (changed & (parts[i] != k + 1)).any()
                if (parts[i] == k + 1).sum() > 20:
                    assert changed.sum() > 0.3 * (parts[i] == k + 1).sum()
            obj = parts[i] > 0
            np.testing.assert_array_equal(copies.object_only[j][obj], images[i][obj])
            assert (copies.object_only[j] != images[i]).any(axis=2)[~obj].mean() > 0.5
    again = intervention_copies(tiny_config(), size, [4])
    np.testing.assert_array_equal(again.object_only[0], copies.object_only[1])
    assert intervention_copies(tiny_config(), size, []).without_part.shape == (0, 3, size, size, 3)


def test_per_image_style_pool_is_validated():
    from kmx_eval.data import SOURCES
    from kmx_eval.data.synthetic import N_SHAPE_STYLES

    Config = SOURCES.get("synthetic").Config
    assert Config(source="synthetic").colour == "per_style"
    with pytest.raises(ValidationError, match="colour: per_image"):
        Config(source="synthetic", colour="per_image", n_styles=N_SHAPE_STYLES + 1)
    with pytest.raises(ValidationError):
        Config(source="synthetic", colour="per_part")
    with pytest.raises(ValidationError, match="n_parts of 2 or more"):
        Config(source="synthetic", colour="per_image", n_classes=N_SHAPE_STYLES + 1, n_parts=1)
    assert Config(source="synthetic", colour="per_image", palette=["yellow"]).palette == ("yellow",)
    for bad in ({"palette": ["yellow"]}, {"colour": "per_image", "palette": ["mauve"]},
                {"colour": "per_image", "palette": []}):
        with pytest.raises(ValidationError, match="palette"):
            Config(source="synthetic", **bad)


def test_a_palette_of_one_colour_paints_every_image_in_it(tiny_config, size):
    from kmx_eval.data import prepare_dataset
    from kmx_eval.data.synthetic import COLOURS

    dd = prepare_dataset(tiny_config(colour="per_image", palette=["green"]), size)
    images, _, _, parts = _arrays(dd["test"])
    for im, p in zip(images, parts):
        tones = np.unique(im[p > 0], axis=0).astype(float)
        base = tones[np.argmax(tones.sum(axis=1))]
        # one brightness per image in [0.85, 1.1] of the palette's colour
        ratio = base / np.maximum(np.asarray(COLOURS["green"], float), 1)
        assert np.ptp(ratio[ratio > 0]) < 0.05 and 0.8 < ratio.max() < 1.15
