"""`torch_ops.integrations.sglang`: the monkey-patch of sglang's norms, on REAL sglang
releases of both module layouts, installed with pip (no dependencies resolved: the release plus
the few pure-python packages that `import sglang` and the patched modules need):

- v0.5.16+ layout (`sglang.kernels.ops.attention.fla.*`): sglang 0.5.23
- v0.5.15- layout (`sglang.srt.layers.attention.fla.*`): sglang 0.5.15.post1 (with the
  transformers 5.12.1 it pins: its `qwen3_asr` config clashes with newer transformers)

into `~/.cache/gatednorm-test/sglang-<version>` (GATEDNORM_TEST_CACHE overrides the folder;
~340 MB each on disk). A cold install of both takes ~65 s: while the cache is cold these tests
are marked `slow` (deselected by `run.sh test`; `pytest -m slow tests/test_sglang_patch.py`
fills the cache), once it is warm they run by default (~55 s for the whole file). No network:
they are skipped with pip's reason. The offline GPU machine gets both trees pre-installed and
trimmed (scripts/fetch_sglang.py; requirements and markers: sglang_requirements.py).

Each release is imported in its own subprocess, which runs `tests/sglang_gated_checks.py
--check <layout>`: it builds sglang's modules (live
instances, before the patch), patches, runs sglang's own functions and modules on the CPU and
compares them with `torch_ops.gated_norm_ref` (sglang's unpatched functions are Triton kernels:
they do not run on a CPU; on CUDA the unpatched outputs are compared too), records every
dispatched op with a TorchDispatchMode (each call must reach `torch.ops.gatednorm`; on CUDA
torch.profiler must see it too), checks the
importers' bindings, idempotency and that unpatch() restores every original object (`is`). The
RMSNorm family's patched `forward_cuda` (sglang.srt.layers.layernorm) is checked against
sglang's own `forward_native` by `sglang_addnorm_checks.py`, in the same subprocess. It prints
one JSON line; the tests below assert on it. The patch's guards (unknown layout, drifted
signatures, NPU, a build without CUDA kernels) run on small fake `sglang` packages; the launcher
runs for real.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sglang_addnorm_checks import CHECKS as ADDNORM_CHECKS
from sglang_gated_checks import LAYOUT_PACKAGE
from sglang_requirements import MARKER, RELEASES, marker_ok, requirements

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("GATEDNORM_TEST_CACHE", Path.home() / ".cache" / "gatednorm-test"))

CHECK_SCRIPT = Path(__file__).with_name("sglang_gated_checks.py")  # runs in the subprocesses


def _requirements(layout: str) -> list:
    return requirements(layout)

def _cached(layout: str) -> bool:
    """A tree installed here, or one carried with its own torchvision (scripts/fetch_sglang.py)."""
    marker = CACHE / f"sglang-{RELEASES[layout][0]}" / MARKER
    return marker.exists() and marker_ok(marker.read_text(), layout)

# A cold install (both releases) takes ~65 s here: those tests are `slow` until the cache is
# warm (`pytest -m slow tests/test_sglang_patch.py` fills it), then ~55 s in all, in the default run.
SLOW_IF_COLD = pytest.mark.slow if not all(_cached(layout) for layout in RELEASES) else (lambda test: test)

def _install(layout: str) -> tuple[Path | None, str, float]:
    """(folder or None, reason if None, seconds spent installing: 0 when cached)."""
    version, _ = RELEASES[layout]
    reqs = _requirements(layout)
    target = CACHE / f"sglang-{version}"
    if _cached(layout):
        return target, "", 0.0
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / f".sglang-{version}.tmp-{os.getpid()}"
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
                           "--retries", "1", "--timeout", "20", "--target", str(tmp), *reqs], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        subprocess.run(["rm", "-rf", str(tmp)])
        tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        stale = (target / MARKER).exists()  # e.g. a tree carried for another torch (scripts/fetch_sglang.py)
        why = f"{target / MARKER} lists other requirements than this machine's ({reqs[-2:]}); " if stale else ""
        return None, f"{why}pip could not install sglang {version} (offline?): {tail}", time.time() - t0
    (tmp / MARKER).write_text("\n".join(reqs))
    if target.exists():
        subprocess.run(["rm", "-rf", str(target)])
    try:
        os.rename(tmp, target)
    except OSError:  # a concurrent run won the race
        subprocess.run(["rm", "-rf", str(tmp)])
    return target, "", time.time() - t0

def _hidden(*packages) -> Path:
    """A folder whose packages of these names raise ImportError, put before the rest of the
    path: the srt tree's pinned transformers (5.12.1) imports `kernels` when it is installed,
    and the `kernels` that newer transformers bring along (0.19: this machine's venv) fails at
    its import-time repository table with a ValueError, which it does not catch; without
    `kernels` (as on the GPU machines) it takes its ImportError branch."""
    root = CACHE / "hidden"
    for name in packages:
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "__init__.py").write_text(f"raise ImportError('{name} hidden by tests/test_sglang_patch.py')\n")
    return root


def _env(*paths) -> dict:
    env = dict(os.environ)
    if any(Path(p).name == f"sglang-{RELEASES['srt'][0]}" for p in paths):
        paths = (_hidden("kernels"), *paths)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), str(REPO)])
    env.pop("GATEDNORM_SGLANG_PATCH", None)  # the launcher sets it itself
    env["PYTHONWARNINGS"] = "ignore"
    return env

class _Job:
    def __init__(self, args, env):
        self.proc = subprocess.Popen(args, env=env, cwd=str(REPO), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.result = None

    def wait(self, timeout=600):
        if self.result is None:
            out, err = self.proc.communicate(timeout=timeout)
            self.result = (self.proc.returncode, out, err)
        return self.result

@pytest.fixture(scope="module")
def sglang_runs():
    """Installs both releases (cached), then starts every subprocess at once (they are
    independent: the two releases' checks and the launcher runs)."""
    installs = {layout: _install(layout) for layout in RELEASES}
    jobs = {}
    for layout, (path, _, _) in installs.items():
        if path is not None:
            jobs[layout] = _Job([sys.executable, str(CHECK_SCRIPT), "--check", layout], _env(path))
    if installs["kernels"][0] is not None:
        jobs["launch_spawn"] = _Job([sys.executable, "-m", "torch_ops.integrations.sglang_launch",
                                     "--gatednorm-dry-run", "--gatednorm-check-spawn"], _env(installs["kernels"][0]))
    if installs["srt"][0] is not None:
        jobs["launch_help"] = _Job([sys.executable, "-m", "torch_ops.integrations.sglang_launch", "--help"],
                                   _env(installs["srt"][0]))
    yield installs, jobs
    for job in jobs.values():
        if job.proc.poll() is None:
            job.proc.kill()

def _results(sglang_runs, layout) -> dict:
    installs, jobs = sglang_runs
    path, reason, _ = installs[layout]
    if path is None:
        pytest.skip(reason)
    rc, out, err = jobs[layout].wait()
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert rc == 0 and lines, f"check subprocess failed (rc {rc}):\n{err[-4000:]}\n{out[-2000:]}"
    return json.loads(lines[-1][len("RESULT "):])

LAYOUTS = pytest.mark.parametrize("layout", list(RELEASES), ids=[f"sglang-{v}" for v, _ in RELEASES.values()])
CHECKS = ["bindings", "layer_norm_fwd", "rms_norm_gated", "z_3d", "quant_heads", "layernorm_fn", "modules",
          "mixer2", "fused_rms_norm_gated", "fused_module", "mamba_ops", "cuda_unpatched_vs_patched", "cuda_profiler",
          *ADDNORM_CHECKS, "idempotent", "unpatch"]

@SLOW_IF_COLD
@LAYOUTS
@pytest.mark.parametrize("check", CHECKS)
def test_sglang_release(sglang_runs, layout, check):
    """One check of the subprocess run on a real sglang release (see _check_main)."""
    res = _results(sglang_runs, layout)[check]
    if res["ok"] is None:
        pytest.skip(res["detail"])
    assert res["ok"], res["detail"]
    if check not in ("bindings", "idempotent", "unpatch", "rmsnorm_bindings", "rmsnorm_fallbacks"):
        ops = json.dumps(res["detail"])
        assert "gatednorm::" in ops, f"no torch.ops.gatednorm op recorded: {ops}"

@SLOW_IF_COLD
@LAYOUTS
def test_report(sglang_runs, layout):
    rep = _results(sglang_runs, layout)["report"]
    version, _ = RELEASES[layout]
    pkg = LAYOUT_PACKAGE[layout]
    assert rep["sglang_version"] == version and rep["layout"] == layout and rep["layout_package"] == pkg
    must = [f"{pkg}.layernorm_gated.{n}" for n in ("_layer_norm_fwd", "rms_norm_gated", "LayerNormFn",
                                                   "layernorm_fn", "_use_cpu")]
    must += [f"{pkg}.fused_norm_gate.{n}" for n in ("layer_norm_gated_fwd", "LayerNormGatedFunction",
                                                    "rms_norm_gated", "_use_cpu")]
    must += ["sglang.srt.layers.attention.mamba.mixer2_rms_norm_gated.rms_norm_gated",
             f"{pkg}.kda.layer_norm_gated_fwd"]
    if layout == "kernels":
        must += ["sglang.srt.models.bailing_moe_linear.layernorm_fn", "sglang.srt.models.qwen3_5._layer_norm_fwd"]
    else:
        must += [f"sglang.srt.layers.attention.mamba.ops.layernorm_gated.{n}" for n in ("_layer_norm_fwd",
                                                                                    "rms_norm_gated")]
    assert not set(must) - set(rep["patched"]), set(must) - set(rep["patched"])
    # the RMSNorm family (this build may lack CUDA kernels: the check script pretends it has them)
    must += [f"sglang.srt.layers.layernorm.{c}.forward_cuda" for c in ("RMSNorm", "GemmaRMSNorm")]
    assert not set(must) - set(rep["patched"]), set(must) - set(rep["patched"])
    assert rep["rebound"] >= 3, rep["rebound"]  # the live instances' cached bound methods
    assert "sglang.srt.models.qwen3_next.RMSNormGated" in rep["checked"]
    assert "sglang.srt.models.qwen3_next.FusedRMSNormGated" in rep["checked"]
    # anything else skipped must say why (e.g. v0.5.15's bailing_moe_linear imports vllm on a CPU)
    assert all(isinstance(v, str) and v for v in rep["skipped"].values())

@SLOW_IF_COLD
def test_launcher_spawned_children_are_patched(sglang_runs):
    """`sglang_launch` patches, and a child started as sglang starts its schedulers
    (multiprocessing spawn) is patched too (it re-imports the launcher as __mp_main__)."""
    installs, jobs = sglang_runs
    if installs["kernels"][0] is None:
        pytest.skip(installs["kernels"][1])
    rc, out, err = jobs["launch_spawn"].wait()
    assert rc == 0, err[-4000:]
    report = json.loads(out.strip().splitlines()[-1])
    assert report["patched"] and report["spawned_child"]["patched"] is True, report

@SLOW_IF_COLD
def test_launcher_forwards_to_sglang(sglang_runs):
    """Arguments other than --gatednorm-* go to `python -m sglang.launch_server` (here --help)."""
    installs, jobs = sglang_runs
    if installs["srt"][0] is None:
        pytest.skip(installs["srt"][1])
    rc, out, err = jobs["launch_help"].wait()
    assert rc == 0, err[-4000:]
    assert "--model-path" in out and "gatednorm: sglang 0.5.15.post1" in err

def test_launcher_own_options():
    env = _env()
    cmd = [sys.executable, "-m", "torch_ops.integrations.sglang_launch"]
    p = subprocess.run([*cmd, "--gatednorm-help"], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "--gatednorm-dry-run" in p.stdout
    p = subprocess.run([*cmd, "--gatednorm-nope"], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "unknown option" in p.stderr

# ---- the guards, on fake sglang packages (no install needed) --------------------------------

def _fake_sglang(root: Path, files: dict) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root

def _run_fake(root: Path, code: str) -> dict:
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=_env(root), cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-4000:]
    return json.loads(p.stdout.strip().splitlines()[-1])

_FAKE_LG = '''
    import torch
    _is_npu = {npu}
    _use_cpu = False
    def _layer_norm_fwd(x, weight, bias, eps, z=None, out=None, group_size=None, norm_before_gate=True,
                        is_rms_norm=False, activation="swish", fp4_heads=0):  # drifted: unknown parameter
        raise NotImplementedError
    def rms_norm_gated(*, x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True,
                       is_rms_norm=False, activation="swish"):
        raise NotImplementedError
    class LayerNormFn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True,
                    is_rms_norm=False, activation="swish"):
            raise NotImplementedError
    def layernorm_fn(x, weight, bias, z=None, eps=1e-5, group_size=None, norm_before_gate=True,
                     is_rms_norm=False, activation="swish"):  # drifted: another default
        raise NotImplementedError
'''

def test_unknown_layout_raises(tmp_path):
    root = _fake_sglang(tmp_path, {"sglang/__init__.py": "__version__ = '0.4.0'\n"})
    res = _run_fake(root, """
        import json
        from torch_ops.integrations import sglang as gn
        try:
            gn.patch()
            print(json.dumps({"raised": None}))
        except RuntimeError as e:
            print(json.dumps({"raised": str(e), "patched": gn.is_patched()}))
    """)
    assert res["raised"] and "unknown sglang layout" in res["raised"] and not res["patched"]
    assert "v0.5.16" in res["raised"] and "v0.5.15" in res["raised"]

def test_drifted_signatures_are_skipped(tmp_path):
    root = _fake_sglang(tmp_path, {
        "sglang/__init__.py": "__version__ = '0.9.0'\n",
        "sglang/kernels/ops/attention/fla/layernorm_gated.py": _FAKE_LG.format(npu=False),
    })
    res = _run_fake(root, """
        import json
        from torch_ops.integrations import sglang as gn
        import sglang.kernels.ops.attention.fla.layernorm_gated as lg
        before = (lg._layer_norm_fwd, lg.rms_norm_gated, lg.LayerNormFn, lg.layernorm_fn)
        r = gn.patch()
        ok = lg.rms_norm_gated is gn.rms_norm_gated and lg.LayerNormFn is gn.LayerNormFn
        kept = lg._layer_norm_fwd is before[0] and lg.layernorm_fn is before[3]
        restored = gn.unpatch()
        back = (lg._layer_norm_fwd, lg.rms_norm_gated, lg.LayerNormFn, lg.layernorm_fn) == before
        print(json.dumps({"report": r.as_dict(), "ok": ok, "kept": kept, "restored": restored, "back": back}))
    """)
    rep = res["report"]
    p = "sglang.kernels.ops.attention.fla.layernorm_gated"
    assert res["ok"] and res["kept"] and res["back"]
    assert sorted(rep["patched"]) == sorted([f"{p}.rms_norm_gated", f"{p}.LayerNormFn"])
    assert "fp4_heads" in rep["skipped"][f"{p}._layer_norm_fwd"]
    assert "default" in rep["skipped"][f"{p}.layernorm_fn"]
    assert "sglang.kernels.ops.attention.fla.fused_norm_gate" in rep["absent"]
    assert any("not among the tested releases" in n for n in rep["notes"])

_FAKE_LAYERNORM = '''
    import torch
    {batch_invariant}
    class RMSNorm(torch.nn.Module):
        def forward_cuda(self, x, residual=None, post_residual_addition=None):
            raise NotImplementedError
    class GemmaRMSNorm(torch.nn.Module):
        def forward_cuda(self, x, residual=None, post_residual_addition=None, scale=1.0):  # drifted
            raise NotImplementedError
'''

_FAKE_LAYERNORM_RUN = """
    import os
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # a CPU process (a CUDA one with a CPU-only build refuses all)
    import json
    from torch_ops.integrations import sglang as gn
    gn.checks.has_cuda_kernels = lambda: {kernels}
    import sglang.srt.layers.layernorm as ln
    before = (ln.RMSNorm.forward_cuda, ln.GemmaRMSNorm.forward_cuda)
    r = gn.patch()
    rms_patched = ln.RMSNorm.forward_cuda is not before[0]
    gemma_kept = ln.GemmaRMSNorm.forward_cuda is before[1]
    restored = gn.unpatch()
    back = (ln.RMSNorm.forward_cuda, ln.GemmaRMSNorm.forward_cuda) == before
    print(json.dumps({{"report": r.as_dict(), "rms_patched": rms_patched, "gemma_kept": gemma_kept,
                      "restored": restored, "back": back}}))
"""

@pytest.mark.parametrize("kernels", [False, True], ids=["cpu-only-build", "cuda-build"])
def test_forward_cuda_needs_cuda_kernels(tmp_path, kernels):
    """The RMSNorm family is replaced only by a build with CUDA kernels (else skipped, with the
    reason); with one, a drifted method signature is left alone and reported."""
    root = _fake_sglang(tmp_path, {
        "sglang/__init__.py": "__version__ = '0.5.23'\n",
        "sglang/kernels/ops/attention/fla/layernorm_gated.py": _FAKE_LG.format(npu=False),
        "sglang/srt/layers/layernorm.py": _FAKE_LAYERNORM.format(
            batch_invariant="def is_batch_invariant_mode_enabled(): return False"),
    })
    res = _run_fake(root, _FAKE_LAYERNORM_RUN.format(kernels=kernels))
    rep, p = res["report"], "sglang.srt.layers.layernorm"
    assert res["back"] and res["gemma_kept"]
    if not kernels:
        assert not res["rms_patched"] and f"{p}.RMSNorm.forward_cuda" not in rep["patched"]
        for c in ("RMSNorm", "GemmaRMSNorm"):
            assert "no CUDA kernels" in rep["skipped"][f"{p}.{c}.forward_cuda"]
    else:
        assert res["rms_patched"] and f"{p}.RMSNorm.forward_cuda" in res["restored"]
        assert "'scale'" in rep["skipped"][f"{p}.GemmaRMSNorm.forward_cuda"]

def test_forward_cuda_needs_its_module_globals(tmp_path):
    """A layernorm module without the global the replacement reads at call time is not the
    sglang it was written for: left alone, reported."""
    root = _fake_sglang(tmp_path, {
        "sglang/__init__.py": "__version__ = '0.5.23'\n",
        "sglang/kernels/ops/attention/fla/layernorm_gated.py": _FAKE_LG.format(npu=False),
        "sglang/srt/layers/layernorm.py": _FAKE_LAYERNORM.format(batch_invariant=""),
    })
    res = _run_fake(root, _FAKE_LAYERNORM_RUN.format(kernels=True))
    assert not res["rms_patched"] and res["back"]
    assert "is_batch_invariant_mode_enabled" in res["report"]["skipped"][
        "sglang.srt.layers.layernorm.RMSNorm.forward_cuda"]

def test_npu_refused(tmp_path):
    root = _fake_sglang(tmp_path, {
        "sglang/__init__.py": "__version__ = '0.5.23'\n",
        "sglang/kernels/ops/attention/fla/layernorm_gated.py": _FAKE_LG.format(npu=True),
    })
    res = _run_fake(root, """
        import json
        from torch_ops.integrations import sglang as gn
        import sglang.kernels.ops.attention.fla.layernorm_gated as lg
        f = lg.rms_norm_gated
        try:
            gn.patch()
            print(json.dumps({"raised": None}))
        except RuntimeError as e:
            print(json.dumps({"raised": str(e), "patched": gn.is_patched(), "same": lg.rms_norm_gated is f}))
    """)
    assert res["raised"] and "NPU" in res["raised"] and not res["patched"] and res["same"]

