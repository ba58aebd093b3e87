"""backbone.numerics: the kernel pins, where a stage process gets them, and what they guarantee."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from kmx_eval import numerics
from kmx_eval.errors import UnavailableError

REPO = Path(__file__).resolve().parents[2]

# A stage-like script: trains a seeded resnet18 for a few steps, takes pooled layer4 features,
# and prints their digests with what the process's libraries dispatched to.
TRAIN = textwrap.dedent("""
    import hashlib, json, os, sys
    import kmx_eval  # pins, as every stage's first import does
    loaded_before = [m for m in ("numpy", "torch") if m in sys.modules]
    import torch, torchvision
    from threadpoolctl import threadpool_info
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    x, y = torch.randn(8, 3, 48, 48), torch.randint(0, 3, (8,))
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        trunk = torch.nn.Sequential(*list(model.children())[:-2])
        features = trunk(x).mean((2, 3))
    sha = lambda b: hashlib.sha256(b).hexdigest()
    print(json.dumps({
        "weights": sha(b"".join(p.detach().numpy().tobytes() for p in model.state_dict().values())),
        "features": sha(features.numpy().tobytes()),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "openblas": sorted({i.get("architecture") for i in threadpool_info() if i["internal_api"] == "openblas"}),
        "env": {k: os.environ.get(k) for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "KMX_NUMERICS")},
        "loaded_before": loaded_before}))
""")

SHELLS = {  # what a calling shell may have set
    "clean": {},
    "generic": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE"},
    "widest": {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
}

needs_avx2 = pytest.mark.skipif("avx2" not in numerics.cpu_flags(), reason="the portable mode needs AVX2")


def run_script(folder: Path, mode: str | None, shell: dict, *, as_stage: bool = True) -> dict:
    """Run TRAIN as ``stages/train_probe.py`` (or as a plain script) with ``--params`` in ``folder``."""
    script_dir = folder / ("stages" if as_stage else "scripts")
    script_dir.mkdir(parents=True, exist_ok=True)
    (script_dir / "train_probe.py").write_text(TRAIN)
    params = {"backbone": {"numerics": mode}} if mode else {}
    (folder / "study.yaml").write_text(yaml.safe_dump(params))
    env = {k: v for k, v in os.environ.items() if k not in numerics.PORTABLE_ENV and k != numerics.MODE_VARIABLE}
    env.update(shell, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(script_dir / "train_probe.py"), "--params", "study.yaml"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_avx2
def test_portable_bytes_do_not_depend_on_the_calling_shell(tmp_path):
    # The clean shell's params leave numerics out: the default is the portable mode.
    runs = {name: run_script(tmp_path / name, None if name == "clean" else "portable", shell)
            for name, shell in SHELLS.items()}
    for name, run in runs.items():
        assert run["loaded_before"] == [], f"kmx_eval imported {run['loaded_before']} before pinning"
        assert run["capability"] == numerics.PORTABLE_CAPABILITY, name
        assert run["env"]["KMX_NUMERICS"] == "portable", name
        assert run["env"]["ONEDNN_MAX_CPU_ISA"] == "AVX2", name
        assert run["openblas"] in ([], ["Haswell"]), name
    assert len({r["weights"] for r in runs.values()}) == 1, runs
    assert len({r["features"] for r in runs.values()}) == 1, runs
    # The workload is sensitive to the kernels: the same script outside a stage process, under
    # the generic shell setting, gives other bytes (so the equality above is the pins' doing).
    unpinned = run_script(tmp_path / "unpinned", "portable", SHELLS["generic"], as_stage=False)
    assert unpinned["capability"] == "DEFAULT"
    assert unpinned["weights"] != runs["clean"]["weights"]


def test_native_clears_what_the_shell_set(tmp_path):
    run = run_script(tmp_path, "native", SHELLS["generic"])
    assert run["env"] == {"ATEN_CPU_CAPABILITY": None, "ONEDNN_MAX_CPU_ISA": None, "KMX_NUMERICS": "native"}
    assert run["capability"] != "DEFAULT"  # the CPU's own choice, not the shell's generic one


def test_pin_overrides_and_clears():
    env = {"ATEN_CPU_CAPABILITY": "default", "OTHER": "kept"}
    if "avx2" in numerics.cpu_flags():
        numerics.pin("portable", env)
        assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["MKL_CBWR"] == "AVX2"
    numerics.pin("native", env)
    assert not set(numerics.PORTABLE_ENV) & set(env) and env["OTHER"] == "kept"
    with pytest.raises(UnavailableError, match="native, portable"):
        numerics.pin("fast", env)


def test_portable_refuses_a_cpu_without_avx2(monkeypatch):
    monkeypatch.setattr(numerics, "cpu_flags", lambda: {"sse2", "avx"})
    with pytest.raises(UnavailableError, match="no AVX2"):
        numerics.pin("portable", {})
    with pytest.raises(UnavailableError, match="use numerics: native"):
        numerics.check_pinned("portable")


def test_mode_and_params_file_from_the_command_line(tmp_path):
    assert numerics.params_file(["stages/fit.py", "shapes", "B4"]) == Path("params.yaml")
    assert numerics.params_file(["stages/fit.py", "--params", "p.yaml"]) == Path("p.yaml")
    assert numerics.params_file(["stages/fit.py", "--params=q.yaml"]) == Path("q.yaml")
    assert numerics.is_stage_process(["/x/stages/fit.py"]) and not numerics.is_stage_process(["-c"])
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("backbone: {numerics: native}\n")
    bad.write_text("backbone: [\n")
    assert numerics.requested_mode(good) == "native"
    # A broken file gives the default here; the stage's validation then names the problem.
    assert numerics.requested_mode(bad) == numerics.requested_mode(tmp_path / "absent") == "portable"


def test_platform_record_says_where_and_is_stable():
    import torch

    first = numerics.platform_record(mode="portable", device=torch.device("cpu"), threads=2)
    assert first == numerics.platform_record(mode="portable", device=torch.device("cpu"), threads=2)
    assert {"cpu", "cpu_capability", "threads", "device", "numerics", "torch", "mkl", "onednn"} <= set(first)
    assert first["threads"] == 2 and first["device"] == "cpu"
    assert first["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert first["onednn"][0].isdigit() or first["onednn"] == "none"
    assert "portable numerics" in numerics.describe(first)


def test_check_pinned_warns_only_in_a_stage_process(monkeypatch, caplog):
    import torch  # noqa: F401  (loaded: pinning now is too late)

    monkeypatch.delenv(numerics.MODE_VARIABLE, raising=False)
    monkeypatch.setattr(sys, "argv", ["pytest"])
    numerics.check_pinned("portable")
    assert not caplog.records and numerics.MODE_VARIABLE not in os.environ
    monkeypatch.setattr(sys, "argv", ["stages/train.py", "shapes"])
    numerics.check_pinned("portable")
    assert "loaded before the kernels could be pinned" in caplog.text


def test_records_are_read_and_summarised(tmp_path):
    from kmx_eval import io

    a = {"cpu": "AMD EPYC", "cpu_capability": "AVX2", "numerics": "portable", "threads": 2, "device": "cpu"}
    io.write_json(tmp_path / "metrics" / "platform" / "train@shapes.json", a)
    io.write_json(tmp_path / "metrics" / "platform" / "fit@shapes-B4.json", a)
    assert numerics.summarise(numerics.read_records(tmp_path)) == numerics.describe(a)
    io.write_json(tmp_path / "reports" / "platform.json", {**a, "cpu": "Intel Xeon"})
    records = numerics.read_records(tmp_path)
    assert set(records) == {"train@shapes", "fit@shapes-B4", "report"}
    line = numerics.summarise(records)
    assert "AMD EPYC" in line and "(fit@shapes-B4, train@shapes)" in line and "Intel Xeon" in line
    assert numerics.summarise({}) == ""
