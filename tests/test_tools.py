"""The offline tools kernel work relies on without a GPU: scripts/unifdef.py (a measured
tuning variant becomes the code), scripts/loop_async_model.py (the slot protocol of the
aligned loop kernels, checked sequentially), and the shell scripts device calls and CI run
(they parse)."""
import os
import subprocess
import sys

import pytest

SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")

SOURCE = """a
#ifdef GN_X
x on
#else
x off
#endif
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
arch
#else
no arch
#endif
#ifndef GN_X
not x
#endif
#ifdef GN_Y
#ifdef GN_X
y and x
#endif
#endif
b
"""


def unifdef(tmp_path, *flags, text=SOURCE):
    f = tmp_path / "k.cu"
    f.write_text(text)
    r = subprocess.run([sys.executable, os.path.join(SCRIPTS, "unifdef.py"), *flags, str(f)], capture_output=True,
                       text=True)
    return r, f.read_text()


def test_unifdef_keeps_the_defined_branch(tmp_path):
    r, out = unifdef(tmp_path, "-DGN_X")
    assert r.returncode == 0, r.stderr
    assert out == ("a\nx on\n#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900\narch\n#else\nno arch\n#endif\n"
                   "#ifdef GN_Y\ny and x\n#endif\nb\n")


def test_unifdef_keeps_the_undefined_branch(tmp_path):
    r, out = unifdef(tmp_path, "-UGN_X")
    assert r.returncode == 0, r.stderr
    assert out == ("a\nx off\n#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900\narch\n#else\nno arch\n#endif\n"
                   "not x\n#ifdef GN_Y\n#endif\nb\n")


def test_unifdef_check_changes_nothing(tmp_path):
    r, out = unifdef(tmp_path, "--check", "-DGN_X")
    assert r.returncode == 1 and out == SOURCE
    r, out = unifdef(tmp_path, "--check", "-DGN_OTHER")
    assert r.returncode == 0 and out == SOURCE


@pytest.mark.parametrize("text", ["#if defined(GN_X)\nx\n#endif\n", "#ifdef GN_X\nx\n#elif 1\ny\n#endif\n",
                                  "#ifdef GN_X\nx\n"], ids=["if-expression", "elif", "unterminated"])
def test_unifdef_refuses_what_it_cannot_resolve(tmp_path, text):
    r, out = unifdef(tmp_path, "-DGN_X", text=text)
    assert r.returncode != 0 and out == text


def test_loop_async_model_passes_and_can_fail(tmp_path):
    model = os.path.join(SCRIPTS, "loop_async_model.py")
    r = subprocess.run([sys.executable, model], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stdout + r.stderr
    # The same model with the statistics pass waiting for x only while z enters it too
    # (a wrong wait in the kernel) must fail.
    broken = tmp_path / "broken.py"
    src = open(model).read()
    assert "m.wait(0 if early else 1)" in src
    broken.write_text(src.replace("m.wait(0 if early else 1)", "m.wait(1)"))
    r = subprocess.run([sys.executable, str(broken)], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "in flight" in r.stderr


def _shell_scripts():
    root = os.path.dirname(SCRIPTS)
    found = []
    for d in ("scripts", os.path.join("docs", "pending"), ".ci"):
        for name in sorted(os.listdir(os.path.join(root, d))):
            path = os.path.join(root, d, name)
            if name.endswith(".sh") or (d == ".ci" and name == "run"):
                found.append(path)
    return found


@pytest.mark.parametrize("path", _shell_scripts(), ids=os.path.basename)
def test_shell_scripts_parse(path):
    """Every shell script a device call or CI runs parses (`bash -n`): a syntax error found
    on the GPU machine costs a device call."""
    r = subprocess.run(["bash", "-n", path], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_shell_parse_check_can_fail(tmp_path):
    bad = tmp_path / "bad.sh"
    bad.write_text("if true; then\n  echo x\n")  # no fi
    assert subprocess.run(["bash", "-n", str(bad)], capture_output=True).returncode != 0
