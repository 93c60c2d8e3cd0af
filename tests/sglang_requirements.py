"""What tests/test_sglang_patch.py installs beside each sglang release, and the marker of an
installed tree; shared with scripts/fetch_sglang.py, which builds the same trees (trimmed) for
the offline GPU machine. No torch or pytest needed at import time.

A tree is usable when its `.gatednorm-complete` marker lists the requirements this machine
would install (`requirements(layout)`), or those of a tree that brings its own torchvision
(`requirements(layout, own_torchvision=True)`): such a tree works whether or not torchvision is
importable here. The two lists differ only where torchvision is importable; the carried trees
of fetch_sglang.py are of the second kind.
"""
from __future__ import annotations

import importlib.util

# What `import sglang` and the patched modules import beyond torch / triton / numpy / pydantic /
# transformers (found by importing them one missing module at a time; all pure Python or small
# wheels). Pinned: a new release of one of them could need more. torchvision is added below,
# matched to the installed torch, unless it is importable already.
COMMON_DEPS = (
    "aiohappyeyeballs==2.7.1", "aiohttp==3.14.5", "aiosignal==1.4.0", "anyio==4.12.1",
    "apache-tvm-ffi==0.1.15.post2", "attrs==26.1.0", "certifi==2026.10.18", "charset-normalizer==3.5.2",
    "compressed-tensors==0.20.0", "dill==0.4.1", "einops==0.8.2", "fastapi==0.165.0",
    "frozenlist==1.8.0", "gguf==0.19.0", "h11==0.16.0", "httpcore==1.0.9", "httpcore2==2.16.2",
    "httpx==0.28.1", "httpx2==2.16.2", "idna==3.20", "ipython==9.18.1", "loguru==0.7.3",
    "msgspec==0.22.0", "multidict==7.2.1", "openai==3.54.0", "opentelemetry-api==1.45.2",
    "orjson==3.13.0", "partial-json-parser==0.2.1.1.post7", "propcache==0.5.4", "psutil==7.2.2",
    "pybase64==1.5.1", "pyzmq==27.3.0", "requests==2.34.2", "sentencepiece==0.2.3", "sniffio==1.3.1",
    "starlette==1.10.0", "traitlets==5.16.1", "truststore==0.10.5", "urllib3==2.8.0", "uvicorn==0.54.0",
    "yarl==1.25.1",
)
RELEASES = {
    # layout: (sglang release, extra pins)
    "kernels": ("0.5.23", ()),
    "srt": ("0.5.15.post1", ("transformers==5.12.1", "tokenizers==0.22.2", "huggingface-hub==1.33.0")),
}
MARKER = ".gatednorm-complete"


def torchvision_pin(torch_version: str | None = None, own_torchvision: bool = False) -> tuple:
    """torchvision (and pillow, its own dependency: installed --no-deps here) matched to torch
    (`torch_version`, default the installed one); () when torchvision is importable already,
    unless `own_torchvision`."""
    if not own_torchvision and importlib.util.find_spec("torchvision") is not None:
        return ()
    if torch_version is None:
        import torch
        torch_version = torch.__version__
    major, minor = (int(p) for p in torch_version.split("+")[0].split(".")[:2])
    return (f"torchvision==0.{minor + 15}.*", "pillow==13.0.0") if major == 2 else ()


def requirements(layout: str, torch_version: str | None = None, own_torchvision: bool = False) -> list:
    version, extra = RELEASES[layout]
    return [f"sglang=={version}", *COMMON_DEPS, *extra, *torchvision_pin(torch_version, own_torchvision)]


def marker_text(layout: str, torch_version: str | None = None, own_torchvision: bool = False) -> str:
    return "\n".join(requirements(layout, torch_version, own_torchvision))


def marker_ok(text: str, layout: str) -> bool:
    """Is a tree with this marker usable here (see the module docstring)?"""
    return text in (marker_text(layout), marker_text(layout, own_torchvision=True))
