// Gated norm forward: the per-row pieces shared by the register kernel
// (gated_norm_fwd.cu) and the loop kernel (gated_norm_fwd_loop.cu).
#pragma once

#include "common.cuh"
#include "plan.h"

namespace gn {

// Per-row pointers of this block's rows.
template <typename T>
struct FwdRow {
  const T* x;
  const T* z;
  T* out;
};

template <typename T>
__device__ __forceinline__ FwdRow<T> fwd_row(const gn_fwd_args& a, int64_t r, int64_t col0) {
  FwdRow<T> p;
  p.x = static_cast<const T*>(a.x) + r * a.x_stride + col0;
  p.z = a.z ? static_cast<const T*>(a.z) + r * a.z_stride + col0 : nullptr;
  p.out = static_cast<T*>(a.out) + r * a.out_stride + col0;
  return p;
}

template <typename A>
__device__ __forceinline__ void store_stats(const gn_fwd_args& a, int64_t g, int64_t r, A mean, A rstd) {
  const int64_t i = g * a.cfg.rows + r;
  if (a.mean) static_cast<A*>(a.mean)[i] = mean;
  if (a.rstd) static_cast<A*>(a.rstd)[i] = rstd;
}

// Arrays the forward loop path stages per group: x, and z only when the statistics
// need it (gate before the norm); a gate after the norm is read once, in the last pass.
inline int fwd_loop_arrays(const gn_fwd_args& a) { return a.z && !a.cfg.norm_before_gate ? 2 : 1; }
// Bytes the forward loop path stages per row (a whole group).
template <typename T>
size_t fwd_loop_stage_bytes(const gn_fwd_args& a) {
  return (size_t)a.cfg.group_size * sizeof(T) * fwd_loop_arrays(a);
}

// The decode kernel (gated_norm_fwd_decode.cu): few rows of groups of one vector a thread.
// Sets *done when it launched; otherwise (the plan does not fit it, or more than one wave
// of blocks) the caller launches its own kernel.
gn_status launch_fwd_decode(const gn_fwd_args& a, const Plan& p, const DeviceInfo& dev, cudaStream_t s, bool* done);

// The block-row paths (gated_norm_fwd_row.cu, its L2 kernel in gated_norm_fwd_l2.cu): a block
// of 1024 threads a (row, group) of 1025-4096 vectors, wider over a cluster, and small blocks
// of 128-1024; RMSNorm or LayerNorm without a gate before it. Sets *done when it launched.
gn_status launch_fwd_block_row(const gn_fwd_args& a, bool aligned, const DeviceInfo& dev, cudaStream_t s, bool* done);

// The loop path (groups too wide for the register path, or unaligned and wider than
// one vector a thread); see gated_norm_fwd_loop.cu.
gn_status launch_fwd_loop(const gn_fwd_args& a, const Plan& p, cudaStream_t s);
// The wide path (few rows of very wide groups, fwd_wide_chunks > 0; gated_norm_fwd_wide.cu):
// needs a.workspace (gn_cuda_fwd_workspace_bytes).
gn_status launch_fwd_wide(const gn_fwd_args& a, bool aligned, int64_t chunks, const DeviceInfo& dev, cudaStream_t s);
// The loop path on aligned rows, staged by cp.async (gated_norm_fwd_loop_async.cu).
gn_status launch_fwd_loop_async(const gn_fwd_args& a, const Plan& p, cudaStream_t s);

}  // namespace gn
