"""Pickle-free persistence of heads: a fresh process loads a head and predicts identically."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from kmx_eval.errors import DataError, KmxError
from kmx_eval.heads import (
    KMeansHead,
    LinearProbe,
    LinearSEM,
    load_kmeans_head,
    load_linear_sem,
    load_probe,
    read_head_meta,
    save_kmeans_head,
    save_linear_sem,
    save_probe,
)

REPO = Path(__file__).resolve().parents[2]


def data(n_classes=3, n=60, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (n_classes, dim))
    y = np.arange(n) % n_classes
    return centres[y] + rng.normal(0, 1, (n, dim)), y


def query(dim=4):
    return np.random.default_rng(123).normal(0, 5, (30, dim))


def test_kmeans_head_round_trip_with_metadata(tmp_path):
    Z, y = data()
    head = KMeansHead(n_prototypes=3, n_init=2, random_state=7).fit(Z, y)
    save_kmeans_head(head, tmp_path, meta={"combination": "B234", "labels": "ground_truth"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kmeans.json", "kmeans.npz"]
    meta = read_head_meta(tmp_path, "kmeans")
    assert meta["kind"] == "KMeansHead" and meta["combination"] == "B234"
    assert meta["params"] == {"n_prototypes": 3, "n_init": 2, "max_iter": 300, "random_state": 7}
    loaded = load_kmeans_head(tmp_path)
    assert loaded.get_params() == head.get_params()
    for attr in ("prototypes_", "classes_", "n_prototypes_per_class_", "inertia_", "n_iter_"):
        np.testing.assert_array_equal(getattr(loaded, attr), getattr(head, attr))
    Zq = query()
    np.testing.assert_array_equal(loaded.predict(Zq), head.predict(Zq))
    np.testing.assert_array_equal(loaded.class_scores(Zq), head.class_scores(Zq))


def test_string_classes_survive_without_pickle(tmp_path):
    Z, y = data()
    labels = np.array(["crane", "heron", "stork"], dtype=object)[y]  # object dtype, as pandas gives
    head = KMeansHead(n_prototypes=2, random_state=0).fit(Z, labels)
    save_kmeans_head(head, tmp_path)
    with np.load(tmp_path / "kmeans.npz", allow_pickle=False) as npz:  # would raise on pickled data
        assert npz["classes"].dtype.kind == "U"
    loaded = load_kmeans_head(tmp_path)
    assert loaded.predict(Z).tolist() == head.predict(Z).tolist()


def test_probe_and_linear_sem_round_trip(tmp_path):
    for n_classes in (2, 3):
        Z, y = data(n_classes=n_classes, seed=n_classes)
        probe = LinearProbe(C=0.3, random_state=1).fit(Z, y)
        save_probe(probe, tmp_path / str(n_classes))
        loaded = load_probe(tmp_path / str(n_classes))
        assert loaded.get_params() == probe.get_params()
        Zq = query()
        np.testing.assert_array_equal(loaded.predict(Zq), probe.predict(Zq))
        np.testing.assert_array_equal(loaded.predict_proba(Zq), probe.predict_proba(Zq))
        np.testing.assert_array_equal(loaded.prototypes_, probe.prototypes_)
        np.testing.assert_array_equal(loaded.offsets_, probe.offsets_)
    sem = LinearSEM(np.random.default_rng(0).normal(size=(3, 4)), [0.1, -0.2, 0.3])
    save_linear_sem(sem, tmp_path, meta={"source": "cnn"})
    loaded = load_linear_sem(tmp_path)
    np.testing.assert_array_equal(loaded.decision_function(query()), sem.decision_function(query()))
    np.testing.assert_array_equal(loaded.offsets_, sem.offsets_)


def test_fresh_process_loads_and_predicts_identically(tmp_path):
    Z, y = data(seed=5)
    head = KMeansHead(n_prototypes=3, random_state=0).fit(Z, y)
    probe = LinearProbe(random_state=0).fit(Z, y)
    save_kmeans_head(head, tmp_path)
    save_probe(probe, tmp_path)
    Zq = query()
    np.save(tmp_path / "query.npy", Zq)
    code = (
        "import sys, numpy as np\n"
        "from kmx_eval.heads import load_kmeans_head, load_probe\n"
        "d = sys.argv[1]\n"
        "Zq = np.load(d + '/query.npy')\n"
        "np.save(d + '/kmeans_scores.npy', load_kmeans_head(d).class_scores(Zq))\n"
        "np.save(d + '/probe_proba.npy', load_probe(d).predict_proba(Zq))\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, cwd=REPO, timeout=120)
    np.testing.assert_array_equal(np.load(tmp_path / "kmeans_scores.npy"), head.class_scores(Zq))
    np.testing.assert_array_equal(np.load(tmp_path / "probe_proba.npy"), probe.predict_proba(Zq))


def test_saved_files_hold_no_pickle(tmp_path):
    Z, y = data()
    save_kmeans_head(KMeansHead(n_prototypes=2, random_state=0).fit(Z, y), tmp_path)
    with zipfile.ZipFile(tmp_path / "kmeans.npz") as zf:
        for name in zf.namelist():
            header = zf.read(name)[:128]
            assert b"'descr': '|O'" not in header  # no object arrays
    json.loads((tmp_path / "kmeans.json").read_text())  # plain JSON


def test_loading_the_wrong_kind_or_a_missing_file_is_a_clear_error(tmp_path):
    Z, y = data()
    save_probe(LinearProbe().fit(Z, y), tmp_path, name="kmeans")
    with pytest.raises(DataError, match="holds a 'LinearProbe', not a KMeansHead"):
        load_kmeans_head(tmp_path)
    with pytest.raises(KmxError, match="does not exist"):
        load_probe(tmp_path / "nowhere")


def test_reserved_meta_keys_are_refused(tmp_path):
    Z, y = data()
    with pytest.raises(ValueError, match="reserved"):
        save_kmeans_head(KMeansHead(n_prototypes=2).fit(Z, y), tmp_path, meta={"kind": "x"})


def test_checked_head_is_refused_when_fitted_with_other_features_or_classes(tmp_path):
    from kmx_eval.heads import load_checked_kmeans_head

    X, y = data()
    settings = {"normalisation": "standardize", "resize": "bilinear", "block_weighting": "channels"}
    head = KMeansHead(n_prototypes=2, random_state=0).fit(X, y)
    save_kmeans_head(head, tmp_path / "ok", meta=settings)
    loaded = load_checked_kmeans_head(tmp_path / "ok", **settings)
    np.testing.assert_array_equal(loaded.prototypes_, head.prototypes_)
    # A head fitted before a setting existed (no key in its metadata) passes for that key.
    save_kmeans_head(head, tmp_path / "old", meta={"normalisation": "standardize"})
    load_checked_kmeans_head(tmp_path / "old", **settings)
    for key, other in (("normalisation", "l2"), ("resize", "nearest"), ("block_weighting", "balanced")):
        with pytest.raises(DataError, match=f"fitted with {key} .* but features.{key} is '{other}'"):
            load_checked_kmeans_head(tmp_path / "ok", **{**settings, key: other})
    # Row c of the prototypes must be class c: labels 1..3 are not 0..2.
    save_kmeans_head(KMeansHead(n_prototypes=2, random_state=0).fit(X, y + 1), tmp_path / "shifted",
                     meta=settings)
    with pytest.raises(DataError, match=r"shifted: head classes \[1 2 3\] are not 0..2"):
        load_checked_kmeans_head(tmp_path / "shifted", **settings)
