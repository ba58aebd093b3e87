"""Faithfulness on part interventions (docs/METHOD.md, section 4, "Part interventions")."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kmx_eval.metrics import interventions as iv

SIZE, N_PARTS, N_CLASSES = 24, 3, 4


def _parts(n, seed=0):
    """Three rectangular parts of different sizes per image, at random places."""
    rng = np.random.default_rng(seed)
    parts = np.zeros((n, SIZE, SIZE), dtype=np.int64)
    for i in range(n):
        r, c = rng.integers(0, 6, 2)
        parts[i, r:r + 5, c:c + 5] = 1
        parts[i, r + 7:r + 10, c:c + 12] = 2
        parts[i, r + 12:r + 18, c + 2:c + 8] = 3
    return parts


def _map_on_parts(parts, weights, seed=0):
    """A map with ``weights[i, k]`` on part k+1 of image i, 0 on the background, plus small noise."""
    w = np.concatenate([np.zeros((len(parts), 1)), weights], axis=1)
    noise = 1e-3 * np.random.default_rng(seed).random(parts.shape)
    return np.take_along_axis(w, parts.reshape(len(parts), -1), axis=1).reshape(parts.shape) + noise


def _outputs(n, seed=0):
    rng = np.random.default_rng(seed)
    return iv.InterventionOutputs(rng.normal(size=(n, N_CLASSES)), rng.normal(size=(n, N_PARTS, N_CLASSES)),
                                  rng.normal(size=(n, N_CLASSES)))


def test_a_map_that_ranks_parts_as_the_drops_do_scores_one_and_its_reverse_minus_one():
    n = 5
    parts = _parts(n)
    targets = np.arange(n) % N_CLASSES
    out = _outputs(n)
    drops = iv.part_drops(out.scores, out.without_part, targets)
    # Mass per pixel chosen so that each part's total mass ranks as its drop (parts differ in size).
    area = np.stack([(parts == k).sum(axis=(1, 2)) for k in (1, 2, 3)], axis=1)
    order = drops.argsort(axis=1).argsort(axis=1) + 1.0
    good = iv.part_scores(_map_on_parts(parts, order / area), parts, drops)
    bad = iv.part_scores(_map_on_parts(parts, (4.0 - order) / area), parts, drops)
    np.testing.assert_allclose(good.rank_correlation, 1.0)
    np.testing.assert_allclose(good.top_part_drop, 1.0)
    np.testing.assert_allclose(good.curve[:, -1], 0.0)  # the map's last part is the least used one
    np.testing.assert_allclose(bad.rank_correlation, -1.0)
    np.testing.assert_allclose(bad.top_part_drop, 0.0)
    assert np.all((good.chance > 0) & (good.chance < 1))
    assert good.reasons == [None] * n


def test_drops_are_the_target_score_minus_the_copy_score():
    out = _outputs(2)
    d = iv.part_drops(out.scores, out.without_part, np.array([1, 3]))
    np.testing.assert_allclose(d[0], out.scores[0, 1] - out.without_part[0, :, 1])
    np.testing.assert_allclose(d[1], out.scores[1, 3] - out.without_part[1, :, 3])


def test_flat_drops_and_constant_maps_are_undefined_with_their_reason():
    parts = _parts(2)
    drops = np.array([[0.5, 0.5, 0.5], [1.0, 2.0, 3.0]])
    flat = iv.part_scores(_map_on_parts(parts, np.ones((2, 3))), parts, drops)
    assert np.isnan(flat.rank_correlation[0]) and flat.reasons[0] == iv.FLAT_DROPS
    const = iv.part_scores(np.ones(parts.shape), parts, drops)
    assert np.isnan(const.rank_correlation[1]) and const.reasons[1] == iv.FLAT_MAP
    # A map with no mass above its mean on any part (all on the background) does not order the parts.
    background = (parts == 0).astype(float)
    off = iv.part_scores(background, parts, drops)
    assert off.rank_correlation[1] == 0.0
    np.testing.assert_allclose(off.curve[1], off.chance[1])


@settings(max_examples=40, deadline=None)
@given(alpha=st.floats(0.01, 100), beta=st.floats(-1e3, 1e3), s=st.floats(0.01, 100), c=st.floats(-1e3, 1e3),
       seed=st.integers(0, 2**16))
def test_scores_are_invariant_to_output_units_and_per_image_map_shift_and_scale(alpha, beta, s, c, seed):
    """f -> alpha f + beta (alpha > 0) and a -> s a + c per image (s > 0) change no score; every score
    stays within its bounds."""
    n = 4
    rng = np.random.default_rng(seed)
    parts = _parts(n, seed)
    maps = _map_on_parts(parts, rng.random((n, N_PARTS)), seed) + rng.normal(size=(n, 1, 1))
    out = _outputs(n, seed)
    targets = rng.integers(0, N_CLASSES, n)
    base = iv.part_scores(maps, parts, iv.part_drops(out.scores, out.without_part, targets))
    moved = iv.part_scores(s * maps + c * rng.random((n, 1, 1)), parts,
                           iv.part_drops(alpha * out.scores + beta, alpha * out.without_part + beta, targets))
    np.testing.assert_allclose(moved.rank_correlation, base.rank_correlation, atol=1e-9)
    np.testing.assert_allclose(moved.curve, base.curve, atol=1e-6)
    np.testing.assert_allclose(moved.chance, base.chance, atol=1e-6)
    assert np.all(np.abs(base.rank_correlation) <= 1 + 1e-12)
    assert np.all((base.curve >= 0) & (base.curve <= 1))
    agree = iv.background_agreement(out.scores, out.object_only)
    np.testing.assert_array_equal(iv.background_agreement(alpha * out.scores + beta,
                                                          alpha * out.object_only + beta), agree)


def test_background_agreement_counts_kept_decisions():
    scores = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]])
    only = np.array([[3.0, 0.0], [1.0, 0.0], [0.0, 5.0]])
    np.testing.assert_array_equal(iv.background_agreement(scores, only), [1.0, 0.0, 0.0])


def test_intervention_outputs_are_the_model_on_each_copy():
    from kmx_eval.data import normalise
    from kmx_eval.data.interventions import Interventions

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, N_CLASSES)).train()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    copies = Interventions(rng.integers(0, 256, (2, N_PARTS, SIZE, SIZE, 3), dtype=np.uint8),
                           rng.integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8))
    out = iv.intervention_outputs(model, normalise(images).numpy(), copies, device="cpu", batch_size=3)
    assert model.training  # its mode is restored
    model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(out.scores, model(normalise(images)).numpy(), atol=1e-5)
        np.testing.assert_allclose(out.without_part[1, 2], model(normalise(copies.without_part[1, 2:3]))[0].numpy(),
                                   atol=1e-5)
        np.testing.assert_allclose(out.object_only, model(normalise(copies.object_only)).numpy(), atol=1e-5)


def test_copies_round_trip_through_the_prepared_folder(tmp_path):
    """The prepare stage's copies come back for any subset of the test split, in its order; a source
    without interventions has none, a folder without them gives None, a missing image is one line."""
    from kmx_eval.data import SOURCES, prepare_dataset, save_prepared
    from kmx_eval.data.interventions import FOLDER, build_interventions, load_interventions
    from kmx_eval.data.synthetic import intervention_copies
    from kmx_eval.errors import DataError

    cfg = SOURCES.get("synthetic").Config(source="synthetic", n_classes=2, train_per_class=2, test_per_class=2,
                                          clutter=2, colour="per_image")
    copies = build_interventions(cfg, 32)
    assert len(copies) == 4 * (cfg.n_parts + 1)
    path = save_prepared(prepare_dataset(cfg, 32), tmp_path / "tiny", extras={FOLDER: copies})
    got = load_interventions(path, [3, 1])
    want = intervention_copies(cfg, 32, [3, 1])
    np.testing.assert_array_equal(got.without_part, want.without_part)
    np.testing.assert_array_equal(got.object_only, want.object_only)
    assert build_interventions(SOURCES.get("digits").Config(source="digits"), 32) is None
    assert load_interventions(tmp_path / "nowhere", [0]) is None
    with pytest.raises(DataError, match="rerun the prepare stage"):
        load_interventions(path, [7])


def test_tables_write_intervention_rows_or_say_why_not():
    from kmx_eval.metrics.evaluation import EvaluationTables

    n = 6
    parts = _parts(n)
    maps = {"good": _map_on_parts(parts, np.random.default_rng(1).random((n, N_PARTS)))}
    tables = EvaluationTables("shapes", "B4", 50, 0.95)
    tables.add_interventions(0, maps, model_name="kmeans", outputs=_outputs(n), parts=parts,
                             targets=np.zeros(n, int), sample_ids=np.arange(n))
    rows = {(r["method"], r["metric"]): r for r in tables.rows}
    assert set(rows) == {("good", "part_rank_correlation"), ("good", "part_deletion_1"),
                         ("good", "part_deletion_2"), ("good", "part_deletion_3"), ("kmeans", "background_agreement")}
    assert all(r["kind"] == "interventions" and r["category"] == "interventions" for r in rows.values())
    assert rows[("good", "part_rank_correlation")]["chance"] == 0.0
    assert 0 <= rows[("kmeans", "background_agreement")]["value"] <= 1
    skipped = EvaluationTables("digits", "B4", 50, 0.95)
    skipped.add_interventions(0, maps, model_name="kmeans", outputs=None, parts=None, targets=np.zeros(n, int),
                              sample_ids=np.arange(n), why_not="not applicable: no interventions")
    assert {r["note"] for r in skipped.rows} == {"not applicable: no interventions"}
    assert all(r["value"] is None or np.isnan(r["value"]) for r in skipped.rows) and len(skipped.rows) == 3
