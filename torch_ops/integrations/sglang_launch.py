"""Launch an sglang server with gatednorm's gated norms patched in, in every process:

    python -m torch_ops.integrations.sglang_launch <sglang.launch_server arguments>
    python -m torch_ops.integrations.sglang_launch --model-path Qwen/Qwen3-Next-80B-A3B-Instruct --tp 4

Options of this launcher (everything else goes to sglang unchanged):
    --gatednorm-help         this text
    --gatednorm-dry-run      patch, print the report as JSON, exit (no server)
    --gatednorm-check-spawn  with --gatednorm-dry-run: also start a child process the way sglang
                             starts its schedulers (multiprocessing, spawn) and report whether it
                             is patched

How the patch reaches sglang's worker processes: sglang starts its schedulers / TP workers with
multiprocessing's "spawn" method, which re-imports the parent's main module (this one, as
`__mp_main__`) in each child before anything else; this module then patches there when
GATEDNORM_SGLANG_PATCH=1, which the launcher sets (children inherit the environment). Where
gatednorm's `sglang.srt.plugins` entry point is installed, sglang's own plugin loader does the
same in every process (`torch_ops.integrations.sglang.sglang_plugin`).
"""
from __future__ import annotations

import json
import os
import runpy
import sys

OPTIONS = ("--gatednorm-help", "--gatednorm-dry-run", "--gatednorm-check-spawn")


def _child_report(queue) -> None:
    """Runs in a spawned child: is it patched (by the __mp_main__ import of this module)?"""
    from torch_ops.integrations import sglang as gn_sglang
    queue.put({"pid": os.getpid(), "patched": gn_sglang.is_patched()})


def _check_spawn() -> dict:
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_report, args=(queue,))
    proc.start()
    result = queue.get(timeout=600)
    proc.join(timeout=60)
    return result


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours = [a for a in argv if a.startswith("--gatednorm-")]
    rest = [a for a in argv if not a.startswith("--gatednorm-")]
    unknown = [a for a in ours if a not in OPTIONS]
    if unknown:
        print(f"sglang_launch: unknown option(s) {unknown}; ours are {', '.join(OPTIONS)}", file=sys.stderr)
        return 2
    if "--gatednorm-help" in ours:
        print(__doc__)
        return 0

    from torch_ops.integrations import sglang as gn_sglang

    os.environ[gn_sglang.ENV_VAR] = "1"  # spawned children patch too (see the module docstring)
    report = gn_sglang.patch()  # raises (nothing patched, no server) on an unsupported sglang
    print(report.summary(), file=sys.stderr, flush=True)
    if "--gatednorm-dry-run" in ours:
        out = report.as_dict()
        if "--gatednorm-check-spawn" in ours:
            out["spawned_child"] = _check_spawn()
        print(json.dumps(out))
        return 0

    # `python -m sglang.launch_server <rest>`, in this process. alter_sys=False keeps this module
    # as __main__, so that sglang's spawned children re-import it (and patch).
    sys.argv = ["sglang.launch_server", *rest]
    runpy.run_module("sglang.launch_server", run_name="__main__", alter_sys=False)
    return 0


if __name__ == "__mp_main__" and os.environ.get("GATEDNORM_SGLANG_PATCH") == "1":
    # a child started by multiprocessing (spawn / forkserver) of a launcher process
    from torch_ops.integrations.sglang import sglang_plugin as _patch_child

    _patch_child()
elif __name__ == "__main__":
    sys.exit(main())
