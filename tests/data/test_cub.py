"""The cub source on a tiny tree in CUB-200-2011's distributed layout (tests/cub_tree.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from cub_tree import (BOX, CLASSES, H, NO_SEGMENTATION, NOT_VISIBLE, PARTS, W, image_rel, part_location,
                      soft_segmentation, write_cub_tree)

from kmx_eval.data import (SOURCES, decode_column, has_masks, keypoint_names, load_keypoints, prepare_dataset)
from kmx_eval.data.images import resize_mask
from kmx_eval.errors import DataError, ParamsError
from kmx_eval.metrics.parts import part_pointing_game
from kmx_eval.validation import parse_params

SIZE = 32
REPO = Path(__file__).resolve().parents[2]  # the repository root
TRAIN_IDS = [1, 2, 4, 5, 7, 8]  # the official split of the tiny tree: two per class train
TEST_IDS = [3, 6, 9]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_cub_tree(tmp_path_factory.mktemp("cub"))


def cub(path, **over):
    return SOURCES.get("cub").Config.model_validate({"source": "cub", "path": str(path), **over})


@pytest.fixture(scope="module")
def prepared(tree):
    return prepare_dataset(cub(tree), SIZE, name="birds")


def test_the_official_split_classes_and_images(prepared):
    assert prepared["train"].features["label"].names == [c.split(".")[1] for c in CLASSES]
    assert prepared["train"]["label"] == [0, 0, 1, 1, 2, 2] and prepared["test"]["label"] == [0, 1, 2]
    assert decode_column(prepared["test"]).shape == (3, SIZE, SIZE, 3)


def test_masks_are_the_segmentations_above_half_agreement_and_a_missing_one_is_empty(prepared, caplog):
    assert has_masks(prepared)
    masks = decode_column(prepared["train"], "mask") > 127
    for row, image_id in enumerate(TRAIN_IDS):
        if image_id == NO_SEGMENTATION:
            assert not masks[row].any()  # no mask: the localisation metrics skip it as "empty mask"
            continue
        # 153 (3 of 5 annotators) and 255 are object, 102 (2 of 5) is not
        expected = resize_mask(soft_segmentation(image_id) > 127.5, SIZE)
        np.testing.assert_array_equal(masks[row], expected)
        assert 0 < masks[row].mean() < 1


def test_a_missing_segmentation_is_counted_in_the_log(tree, caplog):
    with caplog.at_level("WARNING", logger="kmx_eval"):
        prepare_dataset(cub(tree, classes=[2, 3]), SIZE)
    assert "1 image(s) have no segmentation" in caplog.text and image_rel(NO_SEGMENTATION) in caplog.text


def test_a_lower_threshold_takes_the_two_of_five_band_into_the_object(tree, prepared):
    low = decode_column(prepare_dataset(cub(tree, mask_threshold=0.3), SIZE)["test"], "mask") > 127
    high = decode_column(prepared["test"], "mask") > 127
    assert (low >= high).all() and low.sum() > high.sum()


def test_part_locations_are_named_keypoints_scaled_to_the_stored_image(prepared):
    assert keypoint_names(prepared) == list(PARTS)
    xy, visible = load_keypoints(prepared["train"])
    assert xy.shape == (6, len(PARTS), 2) and visible.shape == (6, len(PARTS))
    for row, image_id in enumerate(TRAIN_IDS):
        for p in range(len(PARTS)):
            if (image_id, p + 1) == NOT_VISIBLE:
                assert not visible[row, p] and (xy[row, p] == 0).all()
                continue
            x, y = part_location(image_id, p + 1)
            assert visible[row, p]
            np.testing.assert_allclose(xy[row, p], (x * SIZE / W, y * SIZE / H), rtol=1e-6)
    assert visible.sum() == 6 * len(PARTS) - 1
    xy2, vis2 = load_keypoints(prepared["train"], [1])
    np.testing.assert_array_equal(xy2[0], xy[1]) and np.testing.assert_array_equal(vis2[0], visible[1])


def test_bbox_crops_move_the_part_locations_into_the_box(tree):
    dd = prepare_dataset(cub(tree, crop="bbox"), SIZE)
    xy, visible = load_keypoints(dd["test"])
    x0, y0, w, h = BOX
    for row, image_id in enumerate(TEST_IDS):
        x, y = part_location(image_id, 1)
        np.testing.assert_allclose(xy[row, 0], ((x - x0) * SIZE / w, (y - y0) * SIZE / h), rtol=1e-6)
    mask = decode_column(dd["test"], "mask")[0] > 127
    seg = soft_segmentation(TEST_IDS[0])[int(y0):int(y0 + h), int(x0):int(x0 + w)] > 127.5
    np.testing.assert_array_equal(mask, resize_mask(seg, SIZE))


@pytest.mark.parametrize("classes, names", [
    (2, ["Black_footed_Albatross", "Laysan_Albatross"]),
    ([3, "001.Black_footed_Albatross"], ["Black_footed_Albatross", "Sooty_Albatross"]),
    (["laysan_albatross", 3], ["Laysan_Albatross", "Sooty_Albatross"]),
])
def test_a_class_subset(tree, classes, names):
    dd = prepare_dataset(cub(tree, classes=classes), SIZE)
    assert dd["train"].features["label"].names == names
    assert sorted(set(dd["train"]["label"])) == [0, 1] and len(dd["test"]) == 2


@pytest.mark.parametrize("classes, says", [
    (["Sooty_Albatros", 1], "did you mean 'Sooty_Albatross'"),
    (1, "at least 2"),
    ([7, 1], "ids 1..3"),
])
def test_a_wrong_class_subset_is_one_line_naming_the_key(tree, classes, says):
    with pytest.raises(ParamsError) as err:
        prepare_dataset(cub(tree, classes=classes), SIZE, name="birds")
    assert "cub.classes" in str(err.value) and says in str(err.value) and "\n" not in str(err.value)


def test_without_a_segmentations_folder_there_are_no_masks(tmp_path, tree):
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "CUB_200_2011").symlink_to(tree, target_is_directory=True)
    dd = prepare_dataset(cub(lone), SIZE)  # the parent folder is taken for CUB_200_2011/ as well
    assert not has_masks(dd) and len(dd["train"]) == 6


def test_the_cub_entry_validates_in_params():
    params = parse_params({"datasets": {"birds": {"source": "cub", "path": "cub/CUB_200_2011",
                                                  "classes": 20, "crop": "bbox"}}})
    assert params.datasets["birds"].classes == 20
    with pytest.raises(ParamsError, match="datasets.birds.crop"):
        parse_params({"datasets": {"birds": {"source": "cub", "path": "x", "crop": "box"}}})


def _break(tree: Path, tmp_path: Path, how: str) -> tuple[Path, str]:
    """A copy of the tree broken one way; returns it and the file the message must name."""
    broken = tmp_path / how / "CUB_200_2011"
    shutil.copytree(tree, broken)
    if how == "no_images_txt":
        (broken / "images.txt").unlink()
        return broken, str(broken / "images.txt")
    if how == "absent_image":
        (broken / "images" / image_rel(4)).unlink()
        return broken, str(broken / "images" / image_rel(4))
    labels = broken / "image_class_labels.txt"
    labels.write_text(labels.read_text().replace("\n7 3\n", "\n7 204\n"))
    return broken, f"{labels} line 7: class id 204 is out of range"


@pytest.mark.parametrize("how", ["no_images_txt", "absent_image", "class_out_of_range"])
def test_a_bad_tree_stops_with_one_line_naming_the_file(tree, tmp_path, how):
    broken, named = _break(tree, tmp_path, how)
    with pytest.raises(DataError) as err:
        prepare_dataset(cub(broken), SIZE, name="birds")
    assert str(err.value).startswith("datasets.birds: ") and named in str(err.value)
    assert "\n" not in str(err.value)
    proc = subprocess.run([sys.executable, "-m", "kmx_eval.data.cub_check", str(broken)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and named in proc.stderr and "Traceback" not in proc.stderr


def test_the_download_check_prints_the_counts(tree):
    proc = subprocess.run([sys.executable, "-m", "kmx_eval.data.cub_check", str(tree)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "9 images of 3 classes (6 train, 3 test" in proc.stdout
    assert "8 found, 1 missing" in proc.stdout and f"{len(PARTS) * 9 - 1} visible" in proc.stdout


def test_the_part_pointing_game_reads_the_prepared_keypoints(prepared):
    xy, visible = load_keypoints(prepared["test"])
    maps = np.zeros((len(xy), SIZE, SIZE))
    for row, (x, y) in enumerate(xy[:, 0]):  # each map peaks on the image's first part (the beak)
        maps[row, int(y), int(x)] = 1.0
    np.testing.assert_array_equal(part_pointing_game(maps, xy, visible), [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(part_pointing_game(maps[:, ::-1], xy, visible), [0.0, 0.0, 0.0])


def _readme_cub_blocks() -> tuple[str, list[str]]:
    """The README's CUB steps: the shell block that extracts the archives, and the run block."""
    from readme_blocks import README, code_blocks

    (extract,) = [b for b in code_blocks("sh") if "CUB_200_2011.tgz" in b]
    text = README.read_text(encoding="utf-8")
    run = text.split("3. Run the study:", 1)[1].split("```", 2)[1]
    return extract, [line.strip() for line in run.splitlines() if line.strip()]


def test_the_readme_cub_steps_work_on_the_tiny_tree(tmp_path, monkeypatch, caplog):
    """The README's commands as written, with DOWNLOADS pointing at archives of the tiny tree, in a
    folder laid out as the repository (the venv, profiles/); then paper.yaml's cub entry, copied as
    the README says, prepares the extracted tree (make repro itself needs the GPU the profile asks for)."""
    from cub_tree import write_archives
    from readme_blocks import README

    from kmx_eval.validation import load_params

    extract, run = _readme_cub_blocks()
    downloads, repo = tmp_path / "downloads", tmp_path / "repo"
    downloads.mkdir()
    repo.mkdir()
    write_archives(downloads)
    (repo / ".venv").symlink_to(Path(sys.executable).parents[1], target_is_directory=True)
    (repo / "profiles").symlink_to(README.parent / "profiles", target_is_directory=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DOWNLOADS": str(downloads), "LANG": "C.UTF-8"}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", extract], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{extract}\n{proc.stdout}\n{proc.stderr}"
    assert "9 images of 3 classes (6 train, 3 test" in proc.stdout and "8 found, 1 missing" in proc.stdout
    assert run[-1] == "make repro"  # the study itself: on the GPU that paper.yaml asks for
    for line in run[:-1]:
        subprocess.run(["bash", "-euo", "pipefail", "-c", line], cwd=repo, env=env, check=True, timeout=60)
    params = load_params(repo / "params.yaml")
    monkeypatch.chdir(repo)  # the stages run in the repository root: datasets.cub.path is relative to it
    with caplog.at_level("WARNING", logger="kmx_eval"):
        dd = prepare_dataset(params.dataset("cub"), SIZE, name="cub")
    assert (len(dd["train"]), len(dd["test"])) == (6, 3) and has_masks(dd) and keypoint_names(dd) == list(PARTS)
    assert "1 image(s) have no segmentation" in caplog.text


def test_classes_keep_their_prefix_when_the_short_names_collide(tmp_path, tree):
    copy = tmp_path / "CUB_200_2011"
    shutil.copytree(tree, copy)
    (copy / "classes.txt").write_text("1 001.Albatross\n2 002.Albatross\n3 003.Sooty_Albatross\n")
    names = prepare_dataset(cub(copy), SIZE)["train"].features["label"].names
    assert names == ["001.Albatross", "002.Albatross", "003.Sooty_Albatross"]


def _prepare_stage():
    import importlib.util

    spec = importlib.util.spec_from_file_location("kmx_stage_prepare_cub", REPO / "stages" / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_the_prepare_stage_saves_the_keypoints_and_stops_on_a_bad_tree_with_one_line(tree, tmp_path, monkeypatch,
                                                                                    capsys):
    from kmx_eval.data import load_prepared

    broken, named = _break(tree, tmp_path, "absent_image")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "datasets": {"birds": {"source": "cub", "path": str(tree)}, "bad": {"source": "cub", "path": str(broken)}},
        "backbone": {"architecture": "resnet18", "image_size": SIZE, "epochs": 1}}))
    monkeypatch.chdir(tmp_path)
    assert _prepare_stage()(["birds", "--params", str(params)]) == 0
    dd = load_prepared(tmp_path / "data" / "birds")
    xy, visible = load_keypoints(dd["train"])
    assert keypoint_names(dd) == list(PARTS) and visible.sum() == 6 * len(PARTS) - 1
    np.testing.assert_array_equal(xy, load_keypoints(prepare_dataset(cub(tree), SIZE)["train"])[0])
    capsys.readouterr()
    assert _prepare_stage()(["bad", "--params", str(params)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "datasets.bad" in err and named in err and "Traceback" not in err
    assert not (tmp_path / "data" / "bad").exists()


def test_the_evaluation_scores_pointing_and_alignment_at_the_prepared_keypoints(prepared):
    """What the evaluate stage writes for a dataset with part locations, on the tiny tree: a map
    peaked on each image's beak hits, its mirror misses, the grid's ceiling is above both, and a
    concept map that names the parts aligns with them."""
    import pandas as pd

    from kmx_eval.metrics.evaluation import EvaluationTables
    from kmx_eval.metrics.parts import concept_part_alignment

    test = prepared["test"]
    xy, visible = load_keypoints(test)
    n = len(xy)
    peaked = np.zeros((n, SIZE, SIZE), np.float32)
    named = np.zeros((n, SIZE, SIZE), np.int16)
    for row in range(n):
        x, y = xy[row, 0]
        peaked[row, int(y), int(x)] = 1.0
        for part in range(len(PARTS)):  # each part's concept around its location, drawn in part order
            px, py = xy[row, part].astype(int)
            named[row, max(py - 1, 0):py + 2, max(px - 1, 0):px + 2] = 1 + part
    tables = EvaluationTables("birds", "B4", n_resamples=50, confidence=0.95)
    tables.add_keypoints(0, {"margin": peaked, "mirrored": peaked[:, ::-1, ::-1].copy()}, keypoints=xy,
                         visible=visible, tolerance=0.0, grids={"ceiling": (4, 4)}, sample_ids=np.arange(n),
                         concepts={"concepts_global": named})
    rows = pd.DataFrame(tables.rows).set_index(["method", "metric"])
    assert rows.loc[("margin", "keypoint_pointing"), "value"] == 1.0
    assert rows.loc[("mirrored", "keypoint_pointing"), "value"] == 0.0
    assert rows.loc[("ceiling", "keypoint_pointing"), "value"] >= 0.5
    assert 0 < rows.loc[("margin", "keypoint_pointing"), "chance"] < 0.05
    ami = rows.loc[("concepts_global", "concept_part_ami")]
    assert ami["value"] == pytest.approx(concept_part_alignment(named, xy, visible)) and ami["value"] > 0.5
    assert ami["n"] == int(visible.sum())  # visible parts only
