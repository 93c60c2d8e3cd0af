"""Mutation smoke test: does the CPU test suite catch small, plausible defects?

Each mutant replaces one snippet of the source (a kernel, the shim, the Python layer),
rebuilds the CPU-only extension in place, runs the core test files on the CPU and
reports KILLED (some test failed: good) or SURVIVED (a gap in the tests). Mutants of the
CUDA kernels run the forward tests through them on the CPU emulator instead
(scripts/emu_check.sh; "emu:thread" / "emu:address": under that sanitizer, whose report
counts as a failure). The source is
restored and rebuilt afterwards, also on Ctrl-C. A mutant whose snippet is gone is
reported as STALE: update the table when the code moves.

    python scripts/mutation_smoke.py [name ...]      # ~35 s a mutant on 2 cores
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PY = sys.executable
BUILD = f"GATEDNORM_CPU_ONLY=1 MAX_JOBS=2 {PY} -m pip install -q --no-build-isolation --no-deps --no-index -e ."
TESTS = ["tests/test_forward.py", "tests/test_backward.py", "tests/test_add_rms_norm.py", "tests/test_fast_path.py",
         "tests/test_inplace_out.py", "tests/test_errors.py", "tests/test_param_layouts.py",
         "tests/test_no_silent_grads.py", "tests/test_eager_direct.py", "tests/test_func_transforms.py",
         "tests/test_torch_integration.py", "tests/test_dtensor.py"]

EMU_TESTS = ["-q", "-x", "-k", "cpu", "tests/test_forward.py"]
EMU_BWD_TESTS = ["-q", "-x", "-k", "cpu and wide", "tests/test_backward.py"]
EMU_AN_TESTS = ["-q", "-x", "-k", "cpu", "tests/test_add_rms_norm.py"]
# Emulated devices for some mutants. At the default 4 SMs every wide case has chunks for
# twice the SMs, so the backward's gradients kernel walks all rows in one set (the
# prefetch of the next row runs); at 16 it splits the rows into sets (dw/db partial rows).
EMU_ENV = {"emu_wide_bwd_db_rows_overlap": {"GN_EMU_SMS": "16"}}
# Mutants of a backward kernel outside the wide path: the backward tests they need.
EMU_SELECT = {"emu_bwd_z_row_uses_x_stride": ["-q", "-x", "-k", "cpu and strided", "tests/test_backward.py"],
              "emu_decode_prefetch_past_group": ["-q", "-x", "-k", "cpu and (decode or paths)",
                                                 "tests/test_forward.py"],
              "emu_an_prefetch_not_whole_words": ["-q", "-x", "-k", "cpu and (paths or decode)",
                                                  "tests/test_add_rms_norm.py"],
              "emu_fwd_row_out_uses_x_stride": ["-q", "-x", "-k", "cpu and distinct",
                                                "tests/test_forward.py"]}

# name -> (file, snippet, replacement[, "emu" | "emu:thread" | "emu:address"]).
# All were KILLED on 2026-12-05 (those added on 2026-12-06 and 2026-12-07: on that day).
MUTANTS = {
    "emu_ring_waits_one_group_short": ("csrc/cuda/gated_norm_fwd.cu", "cp_async_wait_upto<SMAX - 1>(S - 1);",
                                       "cp_async_wait_upto<SMAX>(S);", "emu"),
    # the short ring (test_forward: 40 x 4096 LayerNorm + bias, 5000, 8192): slots past its end
    "emu_bias_ring_kernel_ignores_layout": ("csrc/cuda/gated_norm_fwd.cu", "SPLIT ? FWD_SPLIT_RING : L.ring;",
                                            "SPLIT ? FWD_SPLIT_RING : FWD_RING;", "emu:address"),
    "emu_bias_ring_waits_as_three": ("csrc/cuda/gated_norm_fwd.cu", "cp_async_wait_upto<SMAX - 1>(S - 1);",
                                     "cp_async_wait_upto<SMAX - 1>(FWD_RING - 1);", "emu"),
    "emu_cluster_sum_wrong_parity": ("csrc/cuda/cluster.cuh", "const unsigned parity = (calls >> 1) & 1;",
                                     "const unsigned parity = ((calls >> 1) & 1) ^ 1;", "emu"),
    "emu_team_sum_no_barrier": ("csrc/cuda/common.cuh",
                                "    for (int k = 0; k < NVAL; ++k) part[k * 32 + warp] = v[k];\n  }\n  __syncthreads();",
                                "    for (int k = 0; k < NVAL; ++k) part[k * 32 + warp] = v[k];\n  }", "emu"),
    "emu_team_sum_single_buffer": ("csrc/cuda/common.cuh", "  A* part = red.part[phase];\n  phase ^= 1;",
                                   "  A* part = red.part[0];", "emu:thread"),
    # the decode kernels' L2 prefetch before pdl_wait (ptx.cuh prefetch_l2): its contract, as the
    # emulator checks it (whole 16-byte words; first and last byte inside the allocation)
    "emu_an_prefetch_not_whole_words": ("csrc/cuda/add_rms_norm_fwd_decode.cu",
                                        "r * a.residual_stride, n * (unsigned)sizeof(R));",
                                        "r * a.residual_stride, n * (unsigned)sizeof(R) - 8);", "emu"),
    "emu_decode_prefetch_past_group": ("csrc/cuda/gated_norm_fwd_decode.cu",
                                       "const unsigned gb = (unsigned)G * (unsigned)sizeof(T),",
                                       "const unsigned gb = (unsigned)G * (unsigned)sizeof(T) + 16,", "emu:address"),
    "emu_load_vec_reads_one_past": ("csrc/cuda/vec.cuh", "v[i] = (c + i < limit) ? to_acc<T>(p[c + i])",
                                    "v[i] = (c + i <= limit) ? to_acc<T>(p[c + i])", "emu:address"),
    # fp32 weights beside bf16 x on the loop path, read in x's dtype: survived the forward
    # suite until test_mixed_param_dtype got its loop case (nineteenth session)
    "emu_fwd_loop_weight_in_x_dtype": ("csrc/cuda/gated_norm_fwd_loop.cu",
                                       "load_params<A, VEC>(a.weight, c.param_dtype, col0 + cj",
                                       "load_params<A, VEC>(a.weight, c.dtype, col0 + cj", "emu"),
    # the streaming add + RMSNorm forward steps x's row cursor by the row length, not the
    # stride: survived every test until the strided-rows test got a streaming shape
    "emu_addnorm_stream_ignores_x_stride": ("csrc/cuda/add_rms_norm_fwd.cu",
                                            "const int64_t qdx = add ? step * a.x_stride : 0",
                                            "const int64_t qdx = add ? step * a.cfg.cols : 0", "emu"),
    # the register path's z cursor steps by x's row stride: survived test_forward,
    # test_inplace_out, test_param_layouts, test_api and test_torch_integration (290 passed)
    # until test_distinct_row_strides
    "emu_fwd_z_cursor_steps_by_x_stride": ("csrc/cuda/gated_norm_fwd.cu", "qdz = gate ? step * a.z_stride : 0",
                                           "qdz = gate ? step * a.x_stride : 0", "emu"),
    # the backward reads z's rows at x's stride: survived test_backward + test_inplace_out
    # (151 passed) until test_bwd_out_strided_views gave z a stride of its own
    "emu_bwd_z_row_uses_x_stride": ("csrc/cuda/gated_norm_bwd.cuh",
                                    "p.z = a.z ? static_cast<const T*>(a.z) + r * a.z_stride",
                                    "p.z = a.z ? static_cast<const T*>(a.z) + r * a.x_stride", "emu"),
    # the streaming add + RMSNorm forward steps residual_out's cursor by the residual's stride:
    # survived test_add_rms_norm, test_inplace_out, test_fast_path, test_eager_direct (322
    # passed) until test_add_rms_norm_strided_inputs
    "emu_addnorm_stream_residual_out_stride": ("csrc/cuda/add_rms_norm_fwd.cu",
                                               "pdro = a.residual_out ? step * a.residual_out_stride",
                                               "pdro = a.residual_out ? step * a.residual_stride", "emu"),
    # the add + RMSNorm backward reads dresidual_out's rows at dout's stride: survived
    # test_add_rms_norm + test_inplace_out (215 passed) until test_add_rms_norm_bwd_strided_grads
    "emu_addnorm_bwd_dresidual_out_stride": ("csrc/cuda/add_rms_norm_bwd.cu",
                                             "static_cast<const R*>(a.dresidual_out) + rr * a.dresidual_out_stride",
                                             "static_cast<const R*>(a.dresidual_out) + rr * a.dout_stride", "emu"),
    # the add + RMSNorm backward reads the saved sum h as if contiguous: every test's h came
    # from the forward (stride = cols, so the mutant was equivalent there) until
    # test_add_rms_norm_bwd_strided_grads gave it a stride of its own (twentieth session)
    "emu_addnorm_bwd_h_stride": ("csrc/cuda/add_rms_norm_bwd.cu",
                                 "static_cast<const R*>(a.h) + (okn ? rn : 0) * a.h_stride",
                                 "static_cast<const R*>(a.h) + (okn ? rn : 0) * a.cfg.cols", "emu"),
    # fwd_row (the unaligned register path, the loop and wide paths) reads z at x's row stride
    "emu_fwd_row_z_uses_x_stride": ("csrc/cuda/gated_norm_fwd.cuh",
                                    "static_cast<const T*>(a.z) + r * a.z_stride + col0",
                                    "static_cast<const T*>(a.z) + r * a.x_stride + col0", "emu"),
    # fwd_row writes out= rows at x's row stride (the loop, wide and unaligned paths): killed
    # by test_wide_groups' padded case, and (its EMU_SELECT) by test_distinct_row_strides'
    # unaligned and loop cases (twentieth session; its aligned cases survive it)
    "emu_fwd_row_out_uses_x_stride": ("csrc/cuda/gated_norm_fwd.cuh",
                                      "p.out = static_cast<T*>(a.out) + r * a.out_stride + col0;",
                                      "p.out = static_cast<T*>(a.out) + r * a.x_stride + col0;", "emu"),
    "emu_wide_merge_drops_between_chunks": ("csrc/cuda/gated_norm_fwd_wide.cu",
                                            "q[0] += part[i * np + 1] + n * d * d;", "q[0] += part[i * np + 1];",
                                            "emu"),
    # the block-row forward (gated_norm_fwd_row.cu, gated_norm_fwd_l2.cu): the weight, and the
    # guard of a thread's second vector past the group's end (12288 = 1.5 x 1024 x 8)
    "emu_block_row_ignores_weight": ("csrc/cuda/gated_norm_fwd_row.cu", "if (w) y *= (A)to_acc<P>(wp.e[i]);", "",
                                     "emu"),
    "emu_block_row_writes_past_group": ("csrc/cuda/gated_norm_fwd_row.cu", "if (cj >= G) continue;", "",
                                        "emu:address"),
    "emu_block_row_l2_ignores_weight": ("csrc/cuda/gated_norm_fwd_l2.cu", "if (HW) y *= (A)to_acc<P>(wp.e[i]);", "",
                                        "emu"),
    "emu_block_row_l2_no_gate_reads_z": ("csrc/cuda/gated_norm_fwd_l2.cu", "if (HZ) zv[j].u[0]", "zv[j].u[0]",
                                         "emu:address"),
    # the chunk kernels' (chunks, groups, rows) grid: a segment's workspace slot
    "emu_wide_segment_ignores_groups": ("csrc/cuda/gated_norm_fwd_wide.cu", "k.s = k.r * ngroups + k.g;",
                                        "k.s = k.r + k.g;", "emu"),
    "emu_wide_deviation_counts_padding": ("csrc/cuda/gated_norm_fwd_wide.cu",
                                          "q[0] += wide_col<T>(j) + i < k.lim ? d * d : A(0);", "q[0] += d * d;",
                                          "emu"),
    "emu_wide_bwd_skips_row_0": ("csrc/cuda/gated_norm_bwd_wide.cu", "for (int64_t r = M - 1 - q; r >= 0; r -= Q)",
                                 "for (int64_t r = M - 1 - q; r > 0; r -= Q)", "emu"),
    "emu_wide_bwd_prefetches_same_row": ("csrc/cuda/gated_norm_bwd_wide.cu",
                                         "if (r - Q >= 0) load_row(r - Q, nx, ndy, nz);",
                                         "if (r - Q >= 0) load_row(r, nx, ndy, nz);", "emu"),
    "emu_wide_apply_drops_bias": ("csrc/cuda/gated_norm_fwd_wide.cu",
                                  "a.bias ? fwd_wide_apply<T, true> : fwd_wide_apply<T, false>",
                                  "fwd_wide_apply<T, false>", "emu"),
    "emu_wide_bwd_merged_sums_of_group_0": ("csrc/cuda/gated_norm_bwd_wide.cu",
                                            "const A* m = merged + (r * ngroups + g) * 2;",
                                            "const A* m = merged + r * ngroups * 2;", "emu"),
    "emu_wide_bwd_db_rows_overlap": ("csrc/cuda/gated_norm_bwd_wide.cu", "A* ws_db = ws_dw + Q * N;",
                                     "A* ws_db = ws_dw + N;", "emu"),
    "addnorm_normalises_unrounded_sum": ("csrc/cpu/add_rms_norm_impl.h", "      ROUND(H, p->rdt, n); /* h_s",
                                         "      (void)0; /* h_s"),
    "stats_row_major": ("csrc/cpu/gated_norm_impl.h",
                        "      if (mean != NULL) mean[g * p->rows + r] = mu;\n"
                        "      if (rstd != NULL) rstd[g * p->rows + r] = rs;",
                        "      if (mean != NULL) mean[r * ng + g] = mu;\n"
                        "      if (rstd != NULL) rstd[r * ng + g] = rs;"),
    "rms_bwd_subtracts_mean_term": ("csrc/cpu/gated_norm_impl.h",
                                    "  if (!p->is_rms) GN_LANE_SUM(GN_T, c2, n, i, w[i] * dy0[i]);",
                                    "  GN_LANE_SUM(GN_T, c2, n, i, w[i] * dy0[i]);"),
    "sum_drops_last_element": ("csrc/cpu/common.h",
                               "      const int64_t m_ = (n) - j0_ < GN_TILE ? (n) - j0_ : GN_TILE;                \\\n",
                               "      const int64_t m_ = (n) - j0_ < GN_TILE ? (n) - j0_ - ((n) > 1) : GN_TILE;  \\\n"),
    "weight_read_in_x_dtype": ("csrc/cpu/gated_norm_impl.h", "    LOAD(wb, weight, p->pdt, n);",
                               "    LOAD(wb, weight, p->dt, n);"),
    "gemma_ignored": ("csrc/cpu/add_rms_norm_impl.h", "    if (p->gemma) {", "    if (p->gemma && 0) {"),
    "silu_derivative_off_by_1e-4": ("csrc/cpu/gated_norm_impl.h", "*dact = silu ? s * ((GN_T)1 + z * ((GN_T)1 - s)) :",
                                    "*dact = silu ? s * ((GN_T)1 + z * ((GN_T)1 - s)) * (GN_T)1.0001 :"),
    "exp_coefficient_off_5e-4": ("csrc/cpu/gated_norm.c", "p = fmaf(p, r, 4.9999991059303284e-1f);",
                                 "p = fmaf(p, r, 4.9949991059303284e-1f);"),
    "addnorm_eps_doubled": ("csrc/cpu/add_rms_norm_impl.h", "* inv_n + eps);", "* inv_n + eps * (GN_T)2);"),
    "direct_entry_ignores_requires_grad": ("csrc/eager.cpp", "!(grad && out->requires_grad())",
                                           "!(false && out->requires_grad())"),
    "direct_rms_norm_drops_gemma": ("csrc/eager.cpp", "gn_shim::rms_norm(*x, w, eps, gemma)",
                                    "gn_shim::rms_norm(*x, w, eps, false)"),
    "no_version_bump": ("csrc/shim.cpp",
                        "[](const std::string&, const at::Tensor& t) { torch::autograd::impl::bump_version(t); }",
                        "[](const std::string&, const at::Tensor& t) { (void)t; }"),
    "add_bwd_drops_dresidual": ("torch_ops/add_rms_norm.py",
                                "_ops.add_rms_norm_bwd(dout, dresidual_out, h, weight, rstd, ctx.gemma)",
                                "_ops.add_rms_norm_bwd(dout, None, h, weight, rstd, ctx.gemma)"),
    "gemma_weight_rounded_in_bf16": ("torch_ops/add_rms_norm.py",
                                     "weight = 1 + weight.to(torch.promote_types(weight.dtype, torch.float32))",
                                     "weight = 1 + weight"),
    "autograd_kernel_lets_grad_through": ("csrc/shim.cpp",
                                          "                                         torch::jit::Stack* stack) {\n"
                                          "  if (at::GradMode::is_enabled()) {\n    const auto& args",
                                          "                                         torch::jit::Stack* stack) {\n"
                                          "  if (false) {\n    const auto& args"),
    "stats_ref_row_major": ("torch_ops/gated_norm.py", "mean.t().reshape(-1)), rstd.t().reshape(-1)",
                            "mean.reshape(-1)), rstd.reshape(-1)"),
    "vmap_stats_not_per_sample": ("torch_ops/_vmap.py", "t.view(ngroups, n, -1).transpose(0, 1).reshape(n, -1)",
                                  "t.view(ngroups, n, -1).reshape(n, -1)"),
    "dtensor_in_place_allows_split_rows": ("torch_ops/dtensor.py", "isinstance(pl, Shard) and pl.dim < t.ndim - 1",
                                           "isinstance(pl, Shard) and pl.dim < t.ndim"),
}


def run(name: str) -> str:
    rel, old, new, *emu = MUTANTS[name]
    path = ROOT / rel
    src = path.read_text()
    if old not in src:
        return "STALE (snippet not found)"
    path.write_text(src.replace(old, new))
    try:
        if emu:
            env = dict(os.environ, GATEDNORM_EMU_SANITIZER=emu[0].partition(":")[2])
            # a backward kernel: its wide-path tests; an add + RMSNorm kernel: its own tests
            tests = EMU_AN_TESTS if "add_rms_norm" in rel else EMU_BWD_TESTS if "_bwd" in rel else EMU_TESTS
            tests = EMU_SELECT.get(name, tests)
            env.update(EMU_ENV.get(name, {}))
            t = subprocess.run(["bash", "scripts/emu_check.sh", *tests], cwd=ROOT, env=env, capture_output=True,
                               text=True)
            found = [ln for ln in (t.stdout + t.stderr).splitlines() if "FAILED" in ln or "Sanitizer" in ln][:3]
            return ("KILLED" if t.returncode else "SURVIVED") + "".join(f"\n    {f}" for f in found)
        b = subprocess.run(BUILD, shell=True, cwd=ROOT, capture_output=True, text=True)
        if b.returncode:
            return "BUILD FAILED\n" + b.stderr[-800:]
        t = subprocess.run([PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cpu", *TESTS], cwd=ROOT,
                           capture_output=True, text=True)
        summary = t.stdout.strip().splitlines()[-1] if t.stdout.strip() else t.stderr[-300:]
        failed = [ln.split(" ")[1] for ln in t.stdout.splitlines() if ln.startswith("FAILED")][:3]
        return ("KILLED" if t.returncode else "SURVIVED") + f": {summary}" + "".join(f"\n    {f}" for f in failed)
    finally:
        path.write_text(src)


def main(names) -> int:
    survived = 0
    try:
        for name in names or list(MUTANTS):
            result = run(name)
            survived += not result.startswith("KILLED")
            print(f"{name}: {result}", flush=True)
    finally:
        subprocess.run(BUILD, shell=True, cwd=ROOT, capture_output=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
