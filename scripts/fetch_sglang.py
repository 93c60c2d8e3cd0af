"""Fill the git-ignored `.whl_sgl/` with the two sglang releases of tests/test_sglang_patch.py
(0.5.23, 0.5.15.post1) for the offline GPU machine: the trees that the test would pip-install
into its cache (`$GATEDNORM_TEST_CACHE/sglang-<version>/` with its `.gatednorm-complete`
marker), pre-installed here for CPython 3.12 / manylinux x86_64, trimmed to what the test's
subprocesses use, both in one `sglang-cp312.tar.xz` (~20 MB; it unpacks into the cache layout;
scripts/device_check.sh does that; docs/testing.md, "sglang on the GPU machine").

    .venv/bin/python scripts/fetch_sglang.py            # here (needs the package index), ~10 min
    .venv/bin/python scripts/fetch_sglang.py --verify   # also checks the trim here (~5 min more)

How the trim is found (run with the Python that runs the tests here: it needs torch and the
built torch_ops): both releases are installed in full for this Python, and the test's
subprocesses run on them (the check script of each layout, the launcher's dry run with a
spawned child and its --help, on both trees) with an audit hook that records every imported
module and every file opened or dlopen'ed. A tree then keeps those files; the modules they
import at module level, also under `if` / `try` (the branches a GPU takes; imports inside
functions are not followed); each package's `__init__.py`; the shared libraries the kept
binaries need (readelf NEEDED: `*.libs/`, tvm_ffi/lib/); the `.dist-info` metadata (RECORD only
where read); and every folder, empty where nothing in it is kept (sglang checks that its JIT
source folders exist). The same list is applied to the cp312 install (extension modules matched
by name). torchvision keeps its ops library `_C` (its import registers fake kernels for them)
but not its image / video decoders.

Beyond the test's own requirements (tests/sglang_requirements.py) the trees carry what the
checks import that the GPU image may lack: ENV_EXTRAS. What the GPU image has (DEVICE_HAS:
torch, triton, transformers, numpy, einops, pytest, hypothesis and their dependencies) is not
carried. --verify packs the same trim for this Python, unpacks it into a temporary cache and
runs tests/test_sglang_patch.py on it twice: with this Python, and in a virtual environment
that holds only DEVICE_HAS (and their dependencies), as the GPU image does.

The carried markers list the requirements with torchvision (`own_torchvision=True`, matched to
the GPU's torch: --torch): tests/sglang_requirements.py accepts such a tree whether or not
torchvision is importable there.
"""
from __future__ import annotations

import argparse
import ast
import importlib.metadata
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import sglang_requirements as req  # noqa: E402

DEST = os.path.join(ROOT, ".whl_sgl")
TARGET_PYTHON = "3.12"
TARGET_TORCH = "2.11"  # the GPU machine's (docs/testing.md): selects the torchvision of the marker
PLATFORMS = ("manylinux_2_34_x86_64", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
# Imported by the checks (pydantic: sglang, fastapi, openai; annotated-doc: fastapi), not among
# the test's requirements (the machines that run it have them) and maybe not on the GPU image.
# typing-extensions: pydantic needs a recent one.
ENV_EXTRAS = ("pydantic==2.14.3", "pydantic-core==2.50.4", "annotated-types==0.8.0", "typing-inspection==0.4.5",
              "annotated-doc==0.0.7", "typing-extensions==4.16.0")
# What the GPU image has (with their dependencies); --verify's stand-in environment holds only these.
DEVICE_HAS = ("torch", "triton", "transformers", "numpy", "einops", "pytest", "hypothesis")
# ... but not these, which this machine's newer huggingface-hub pulls in and the GPU image's
# older one does not (openai 3.x imports httpx2 at module level: found on the H100, where the
# stand-in environment had hidden it).
DEVICE_LACKS = ("httpx2", "httpcore2", "truststore")
# Packages of which only these extension modules are kept, whatever the audit saw (it ran
# another version): torchvision's ops (its import registers fake kernels for them and fails
# without them), not its image / video decoders (loaded in try blocks, unused).
KEEP_BINARIES = {"torchvision": ("_C",)}
# The test's subprocesses (tests/test_sglang_patch.py, sglang_runs), each on both trees here.
RUNS = {
    "check": ["{py}", "tests/sglang_gated_checks.py", "--check", "{layout}"],
    "launch_spawn": ["{py}", "-m", "torch_ops.integrations.sglang_launch", "--gatednorm-dry-run",
                     "--gatednorm-check-spawn"],
    "launch_help": ["{py}", "-m", "torch_ops.integrations.sglang_launch", "--help"],
}
AUDIT_HOOK = r'''
import atexit, json, os, sys
_seen = set()
def _hook(event, args):
    if event in ("open", "ctypes.dlopen") and args and isinstance(args[0], (str, bytes, os.PathLike)):
        try:
            _seen.add(os.path.abspath(os.fsdecode(args[0])))
        except Exception:
            pass
sys.addaudithook(_hook)
@atexit.register
def _dump():
    files = {getattr(m, "__file__", None) for m in list(sys.modules.values())} | _seen
    path = os.path.join(os.environ["GATEDNORM_AUDIT"], f"{os.getpid()}.json")
    with open(path, "w") as f:
        json.dump(sorted(p for p in files if isinstance(p, str)), f)
'''


def _run(cmd, **kw):
    print("+ " + " ".join(cmd[:8]) + (" ..." if len(cmd) > 8 else ""), flush=True)
    return subprocess.run(cmd, check=True, **kw)


# ---- install ------------------------------------------------------------------------------------

def pip_install(reqs, target, python=None):
    """pip install --no-deps into `target`: for this Python, or for CPython `python` (X.Y) on
    manylinux x86_64 (binary wheels only)."""
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
           "--no-compile", "--target", target]
    if python:
        abi = "cp" + python.replace(".", "")
        cmd += ["--only-binary=:all:", "--python-version", python, "--implementation", "cp", "--abi", abi]
        for p in PLATFORMS:
            cmd += ["--platform", p]
    _run(cmd + list(reqs))


def install(layout, dest, python, torch_version):
    """The full tree of one layout (test requirements with torchvision, plus ENV_EXTRAS) ->
    its folder."""
    version = req.RELEASES[layout][0]
    tree = os.path.join(dest, f"sglang-{version}")
    reqs = req.requirements(layout, torch_version, own_torchvision=True) + list(ENV_EXTRAS)
    stamp = os.path.join(dest, f".sglang-{version}.installed")
    if os.path.exists(stamp) and open(stamp).read() == "\n".join(reqs):  # --keep-work: installed already
        return tree
    shutil.rmtree(tree, ignore_errors=True)
    pip_install(reqs, tree, python)
    for junk in ("bin", "share"):  # console scripts, jupyter data: not imported
        shutil.rmtree(os.path.join(tree, junk), ignore_errors=True)
    with open(stamp, "w") as f:
        f.write("\n".join(reqs))
    return tree


# ---- audit --------------------------------------------------------------------------------------

def audit(trees: dict, work: str) -> dict:
    """Run the test's subprocesses on the full trees of this Python -> {layout: set of paths
    relative to its tree}, and the outside imports (distribution names) per layout."""
    hook = os.path.join(work, "audit_site")
    os.makedirs(hook, exist_ok=True)
    with open(os.path.join(hook, "sitecustomize.py"), "w") as f:
        f.write(AUDIT_HOOK)
    used, outside = {}, {}
    for layout, tree in trees.items():
        used[layout], outside[layout] = set(), set()
        for name, args in RUNS.items():
            out = os.path.join(work, f"audit-{layout}-{name}")
            shutil.rmtree(out, ignore_errors=True)
            os.makedirs(out)
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([hook, tree, ROOT]), PYTHONWARNINGS="ignore",
                       GATEDNORM_AUDIT=out)
            env.pop("GATEDNORM_SGLANG_PATCH", None)
            cmd = [a.format(py=sys.executable, layout=layout) for a in args]
            t0 = time.time()
            p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
            if p.returncode != 0:
                sys.exit(f"audit run {cmd} failed:\n{p.stderr[-3000:]}")
            if name == "check":
                res = json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")][-1][7:])
                bad = [k for k, v in res.items() if isinstance(v, dict) and v.get("ok") is False]
                if bad:
                    sys.exit(f"{layout}: checks fail on the full tree: {bad}")
            files = set()
            for fn in os.listdir(out):
                with open(os.path.join(out, fn)) as f:
                    files.update(json.load(f))
            print(f"  {layout} {name}: {len(files)} files ({time.time() - t0:.0f} s)")
            for path in files:
                if path.startswith(tree + os.sep):
                    used[layout].add(os.path.relpath(path, tree))
                else:
                    outside[layout].add(path)
    return used, outside


def outside_distributions(paths) -> list:
    """The distributions of the site-packages files among `paths`."""
    tops = set()
    for p in paths:
        m = re.search(r"[/\\]site-packages[/\\]([^/\\]+)", p)
        if m and not m.group(1).endswith((".dist-info", ".pth")):
            tops.add(m.group(1).split(".")[0])
    dists = importlib.metadata.packages_distributions()
    return sorted({d for t in tops for d in dists.get(t, [t])})


# ---- trim ---------------------------------------------------------------------------------------

def _module_file(tree, name):
    base = os.path.join(tree, *name.split("."))
    for cand in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(cand):
            return cand
    d, stem = os.path.split(base)
    if os.path.isdir(d):
        for fn in os.listdir(d):
            if fn.startswith(stem + ".") and fn.endswith(".so"):
                return os.path.join(d, fn)
    return None


def _is_type_checking(test):
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
           (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def module_level_imports(path, modname, is_pkg) -> set:
    """Module names imported when the module runs (not inside functions, not under
    `if TYPE_CHECKING:`), both sides of every `if`/`try`."""
    try:
        body = ast.parse(open(path, "rb").read()).body
    except (SyntaxError, ValueError):
        return set()
    package = modname if is_pkg else modname.rpartition(".")[0]
    names = set()

    def walk(nodes):
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1])
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module
                names.add(base)
                names.update(f"{base}.{a.name}" for a in node.names if a.name != "*")
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                walk(node.orelse)
                continue
            walk([c for c in ast.iter_child_nodes(node) if isinstance(c, ast.stmt)] +
                 [h for h in getattr(node, "handlers", [])])

    walk(body)
    out = set()
    for n in names:  # a.b.c imports a and a.b first
        parts = n.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return out


def _needed(path) -> list:
    p = subprocess.run(["readelf", "-d", path], capture_output=True, text=True)
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", p.stdout)


def keep_list(tree, used) -> set:
    """The files of `tree` to keep (paths relative to it), from the audited `used` paths."""
    keep, missing = set(), []
    for rel in used:
        if "__pycache__" in rel.split(os.sep):
            continue
        cand = os.path.join(tree, rel)
        if not os.path.isfile(cand) and rel.endswith(".so"):  # another Python's extension module
            d, fn = os.path.split(cand)
            stem = fn.split(".")[0]
            hits = [f for f in os.listdir(d) if f.split(".")[0] == stem and f.endswith(".so")] if os.path.isdir(d) else []
            cand = os.path.join(d, hits[0]) if hits else cand
        if os.path.isfile(cand):
            keep.add(os.path.relpath(cand, tree))
        elif ".dist-info" not in rel:  # metadata probes of files that do not exist
            missing.append(rel)
    if missing:
        print(f"  {len(missing)} audited files not in this tree (another version's): {sorted(missing)[:5]} ...")
    # module-level import closure
    todo = [k for k in keep if k.endswith(".py")]
    while todo:
        rel = todo.pop()
        parts = rel[:-3].split(os.sep)
        is_pkg = parts[-1] == "__init__"
        modname = ".".join(parts[:-1] if is_pkg else parts)
        for name in module_level_imports(os.path.join(tree, rel), modname, is_pkg):
            f = _module_file(tree, name)
            if f is not None:
                r = os.path.relpath(f, tree)
                if r not in keep:
                    keep.add(r)
                    if r.endswith(".py"):
                        todo.append(r)
    # packages' __init__.py
    for rel in list(keep):
        parts = rel.split(os.sep)[:-1]
        for i in range(1, len(parts) + 1):
            init = os.path.join(*parts[:i], "__init__.py")
            if os.path.isfile(os.path.join(tree, init)):
                keep.add(init)
    for pkg, stems in KEEP_BINARIES.items():
        keep = {k for k in keep if not (k.split(os.sep)[0] == pkg and ".so" in k)}
        if os.path.isdir(os.path.join(tree, pkg)):
            keep.update(os.path.join(pkg, f) for f in os.listdir(os.path.join(tree, pkg))
                        if f.endswith(".so") and f.split(".")[0].startswith(stems))
    # the shared libraries the kept binaries need (auditwheel's *.libs/ folders, tvm_ffi/lib/)
    libs = {}
    for dirpath, _, files in os.walk(tree):
        for fn in files:
            if ".so" in fn:
                libs.setdefault(fn, []).append(os.path.relpath(os.path.join(dirpath, fn), tree))
    todo = [k for k in keep if ".so" in os.path.basename(k)]
    while todo:
        for lib in _needed(os.path.join(tree, todo.pop())):
            for rel in libs.get(lib, []):
                if rel not in keep:
                    keep.add(rel)
                    todo.append(rel)
    # metadata
    for entry in os.listdir(tree):
        if entry.endswith(".dist-info"):
            for fn in os.listdir(os.path.join(tree, entry)):
                rel = os.path.join(entry, fn)
                if os.path.isfile(os.path.join(tree, rel)) and (fn != "RECORD" or rel in used):
                    keep.add(rel)
    return keep


def pack(trees: dict, out_path):
    """One tar.xz of the kept files of each tree, as `sglang-<version>/...` with its marker and a
    note. Files of the same relative path are adjacent: the second copy of a dependency that
    both trees carry costs (almost) nothing in xz's 64 MiB window."""
    entries, dirs = [], set()
    for tree, keep, extra in trees.values():
        name = os.path.basename(tree)
        entries += [(rel, name, os.path.join(tree, rel), None) for rel in keep]
        # every folder of the full install, empty where nothing in it is kept: code looks for
        # folders (sglang's JIT kernel path: include/ and csrc/ must exist)
        for dirpath, dirnames, _ in os.walk(tree):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            if dirpath != tree:
                dirs.add((os.path.relpath(dirpath, tree), name))
        entries += [(rel, name, None, data) for rel, data in extra.items()]
    with tarfile.open(out_path, "w:xz", preset=9) as tar:
        for rel, name in sorted(dirs):
            ti = tarfile.TarInfo(f"{name}/{rel}")
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
            tar.addfile(ti)
        for rel, name, path, data in sorted(entries, key=lambda e: (e[0], e[1])):
            ti = tarfile.TarInfo(f"{name}/{rel}")
            if path is not None:
                with open(path, "rb") as f:
                    data = f.read()
                ti.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            else:
                data, ti.mode = data.encode(), 0o644
            ti.size, ti.mtime = len(data), 1_700_000_000
            tar.addfile(ti, io.BytesIO(data))
    return os.path.getsize(out_path)


def build(trees, out_path, python, torch_version, used):
    """Trim each layout's full tree (for CPython `python`, None: this one) and pack them all."""
    packed = {}
    for layout, tree in trees.items():
        version = req.RELEASES[layout][0]
        keep = keep_list(tree, used[layout])
        raw = sum(os.path.getsize(os.path.join(tree, k)) for k in keep)
        print(f"  sglang-{version}: {len(keep)} files, {raw / 2**20:.1f} MiB")
        note = (f"sglang {version} for CPython {python or sys.version.split()[0]} (torch {torch_version}), "
                f"trimmed by scripts/fetch_sglang.py to {len(keep)} files of the full install; "
                f"also carries {', '.join(ENV_EXTRAS)}\n")
        packed[layout] = (tree, keep, {".gatednorm-trimmed": note,
                                       req.MARKER: req.marker_text(layout, torch_version, own_torchvision=True)})
    size = pack(packed, out_path)
    print(f"  {os.path.basename(out_path)}: {size / 2**20:.2f} MiB")
    return out_path


# ---- verify -------------------------------------------------------------------------------------

def _requires_closure(roots, exclude) -> set:
    """The installed distributions that `roots` need (with the extras they ask for)."""
    from packaging.requirements import Requirement
    seen, todo = set(), [(r, frozenset()) for r in roots]
    while todo:
        name, extras = todo.pop()
        name = name.lower().replace("_", "-")
        if (name, extras) in seen or name in exclude:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        seen.add((name, extras))
        for r in dist.requires or []:
            r = Requirement(r)
            if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in {"", *extras}):
                todo.append((r.name, frozenset(r.extras)))
    return {name for name, _ in seen}


def device_like_python(work) -> str:
    """A venv holding only DEVICE_HAS and their dependencies (symlinked from this Python's),
    without ENV_EXTRAS unless torch needs one -> its python."""
    extras = {e.split("==")[0] for e in ENV_EXTRAS}
    dists = _requires_closure(DEVICE_HAS, extras | set(DEVICE_LACKS)) | _requires_closure(["torch"], set())
    env = os.path.join(work, "device-like")
    shutil.rmtree(env, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", env], check=True)
    farm = os.path.join(work, "device-like-site")
    shutil.rmtree(farm, ignore_errors=True)
    os.makedirs(farm)
    for name in sorted(dists):
        dist = importlib.metadata.distribution(name)
        base = str(dist.locate_file(""))
        for top in {str(f).split("/")[0] for f in dist.files or []}:
            src, dst = os.path.join(base, top), os.path.join(farm, top)
            if top not in ("..", "bin") and os.path.exists(src) and not os.path.exists(dst):
                os.symlink(src, dst)
    site = subprocess.run([os.path.join(env, "bin", "python"), "-c", "import site; print(site.getsitepackages()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(site, "device.pth"), "w") as f:
        f.write(farm + "\n")
    print(f"  device-like environment: {len(dists)} distributions ({', '.join(sorted(dists))})")
    return os.path.join(env, "bin", "python")


def _pytest(py, cache) -> tuple:
    env = dict(os.environ, GATEDNORM_TEST_CACHE=cache)
    p = subprocess.run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs", "tests/test_sglang_patch.py"],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    lines = p.stdout.strip().splitlines()
    print("\n".join(lines[-12:]))
    return p.returncode, re.sub(r" in [0-9.]+s.*", "", lines[-1] if lines else "")


def verify(tarball, full: dict, work) -> bool:
    """tests/test_sglang_patch.py on the full trees and on the trimmed ones (also in a
    device-like environment): the same results, and no failure."""
    for layout, tree in full.items():
        with open(os.path.join(tree, req.MARKER), "w") as f:
            f.write(req.marker_text(layout, own_torchvision=True))
    cache = os.path.join(work, "cache")
    shutil.rmtree(cache, ignore_errors=True)
    os.makedirs(cache)
    _run(["tar", "-xJf", tarball, "-C", cache])
    results = []
    for label, py, where in (("full trees, this Python", sys.executable, os.path.dirname(next(iter(full.values())))),
                             ("trimmed trees, this Python", sys.executable, cache),
                             ("trimmed trees, device-like environment", device_like_python(work), cache)):
        print(f"== tests/test_sglang_patch.py: {label}", flush=True)
        results.append(_pytest(py, where))
    print("summaries: " + " | ".join(r[1] for r in results))
    return all(r[0] == 0 for r in results) and len({r[1] for r in results}) == 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default=TARGET_PYTHON, help="the GPU machine's Python (X.Y)")
    ap.add_argument("--torch", default=TARGET_TORCH, help="the GPU machine's torch (X.Y): torchvision's version")
    ap.add_argument("--verify", action="store_true", help="run the test file on the same trim for this Python")
    ap.add_argument("--keep-work", help="build in this folder and keep it (default: a temporary one)")
    a = ap.parse_args()
    import torch  # the audit runs the checks: this Python must run the tests
    layouts = list(req.RELEASES)
    work = a.keep_work or tempfile.mkdtemp(prefix="fetch_sglang-")
    os.makedirs(work, exist_ok=True)
    try:
        print(f"== full install for this Python ({sys.version.split()[0]}, torch {torch.__version__}) and audit")
        here = {lay: install(lay, os.path.join(work, "full-here"), None, torch.__version__) for lay in layouts}
        saved = os.path.join(work, "audit.json")
        if os.path.exists(saved):  # --keep-work: audited already
            with open(saved) as f:
                used, outside = ({k: set(v) for k, v in d.items()} for d in json.load(f))
        else:
            used, outside = audit(here, work)
            with open(saved, "w") as f:
                json.dump([{k: sorted(v) for k, v in d.items()} for d in (used, outside)], f)
        device = _requires_closure(DEVICE_HAS, set()) | {"gatednorm"}
        for layout in layouts:
            beyond = [d for d in outside_distributions(outside[layout])
                      if d.lower().replace("_", "-") not in device and not d.startswith("__editable__")]
            print(f"  {layout}: {len(used[layout])} files of the tree used; imported from this Python's "
                  f"site-packages beyond DEVICE_HAS and their dependencies: {', '.join(beyond) or 'nothing'}")
        shutil.rmtree(DEST, ignore_errors=True)
        os.makedirs(DEST)
        print(f"== CPython {a.python} trees (carried)")
        tag = "cp" + a.python.replace(".", "")
        there = {lay: install(lay, os.path.join(work, f"full-{tag}"), a.python, a.torch) for lay in layouts}
        build(there, os.path.join(DEST, f"sglang-{tag}.tar.xz"), a.python, a.torch, used)
        total = sum(os.path.getsize(os.path.join(DEST, f)) for f in os.listdir(DEST))
        print(f"{total / 2 ** 20:.2f} MiB in {DEST} (carry limit 64 MiB per call, all carried paths together)")
        if a.verify:
            print("== the same trim for this Python, verified")
            tarball = build(here, os.path.join(work, "sglang-here.tar.xz"), None, torch.__version__, used)
            if not verify(tarball, here, work):
                sys.exit("verification failed")
            print("verified")
    finally:
        if not a.keep_work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
