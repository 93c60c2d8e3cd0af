// Pieces shared by the fused add + RMSNorm forward and backward launchers
// (contract: "Fused add + RMSNorm" in gatednorm.h).
//
// Kernel shapes reuse the gated norm's plan (plan.h) with one group per row:
//  - register path for the common dtype pairs (x / out dtype T, residual dtype R):
//    (T, T) for every dtype, and (fp16 | bf16, fp32) — a bf16 model with an fp32
//    residual stream. A vector is VEC = 16 / min(sizeof T, sizeof R) elements, so
//    the wider tensor moves in two 16-byte words per vector.
//  - decode kernel (add_rms_norm_fwd_decode.cu, forward only): a block per row when
//    every row's block is resident at once and a row is one vector a thread.
//  - loop path (rows too long for registers, and every other dtype pair): a block
//    per row, elements addressed one by one with their dtype known at run time, so
//    one kernel per accumulation type serves every pair.
#pragma once

#include "common.cuh"
#include "plan.h"

namespace gn {
namespace an {

// rstd of a row from its sum of squares. Every forward kernel computes it this one way, so
// in-place and out-of-place calls agree bitwise whichever kernel each takes:
// 1/N and eps from the constant bank (RowConsts, a kernel parameter) instead of an IEEE
// division (~15 instructions and a slow-path call in the decode kernel's SASS) and a
// double->float conversion a row.
template <typename A>
__device__ __forceinline__ A row_rstd(A ss, const RowConsts<A>& rc) {
  return rsqrt_acc(ss * rc.inv_g + rc.eps);
}
template <typename A>
inline RowConsts<A> row_consts(const gn_addnorm_config& c) {
  return RowConsts<A>{A(1) / (A)c.cols, (A)c.eps};
}

// Calls f(Tag<T>{}, Tag<R>{}) for a pair with register-path kernels; false otherwise.
template <typename F>
bool with_fast_pair(gn_dtype t, gn_dtype r, F&& f) {
  if (t == r) {
    switch (t) {
      case GN_FLOAT32: f(Tag<float>{}, Tag<float>{}); return true;
      case GN_FLOAT16: f(Tag<__half>{}, Tag<__half>{}); return true;
      case GN_BFLOAT16: f(Tag<__nv_bfloat16>{}, Tag<__nv_bfloat16>{}); return true;
      case GN_FLOAT64: f(Tag<double>{}, Tag<double>{}); return true;
    }
    return false;
  }
  if (r != GN_FLOAT32) return false;
  if (t == GN_FLOAT16) { f(Tag<__half>{}, Tag<float>{}); return true; }
  if (t == GN_BFLOAT16) { f(Tag<__nv_bfloat16>{}, Tag<float>{}); return true; }
  return false;
}

inline bool is_fast_pair(gn_dtype t, gn_dtype r) {
  return with_fast_pair(t, r, [](auto, auto) {});
}

template <typename T, typename R>
__host__ __device__ constexpr int vec_of() {
  return 16 / (int)(sizeof(T) < sizeof(R) ? sizeof(T) : sizeof(R));
}

// The gated-norm planning problem equivalent to this one: one group per row; the
// narrower dtype sets the vector width.
inline gn_config plan_config(const gn_addnorm_config& c) {
  gn_config p{};
  p.rows = c.rows;
  p.cols = c.cols;
  p.group_size = c.cols;
  p.eps = c.eps;
  p.is_rms_norm = 1;
  p.norm_before_gate = 1;
  p.dtype = gn_dtype_size(c.residual_dtype) < gn_dtype_size(c.dtype) ? c.residual_dtype : c.dtype;
  p.param_dtype = c.param_dtype;
  return p;
}

inline size_t acc_size(const gn_addnorm_config& c) { return acc_bytes(c.dtype); }

// Register path when the pair has kernels and the row fits; else the loop path,
// staging `staged_rows` rows of fp32 (fp64) values per block in shared memory.
inline Plan plan(const gn_addnorm_config& c, bool aligned, int staged_rows, const DeviceInfo& dev) {
  const gn_config pc = plan_config(c);
  if (is_fast_pair(c.dtype, c.residual_dtype)) {
    // The backward holds only h, dout and dw per element (the gated one holds
    // five arrays), so it takes the forward's register limits: rows up to 8192
    // half-precision elements stay on the register path.
    const Plan p = make_plan(pc, false, 1, aligned, dev, false);
    if (p.regs) return p;
  }
  return loop_plan(pc, (size_t)staged_rows * c.cols * acc_size(c), dev);
}

// Every row of every tensor starts 16-byte aligned and the row length is whole
// vectors: the register path may use 16-byte accesses.
inline bool aligned_rows(const gn_addnorm_config& c, const void* const* ptrs, const gn_dtype* types,
                         const int64_t* strides, int n) {
  const int64_t vec = 16 / (int64_t)gn_dtype_size(plan_config(c).dtype);
  if (c.cols % vec) return false;
  for (int i = 0; i < n; ++i) {
    if (!ptrs[i]) continue;
    if ((uintptr_t)ptrs[i] % 16 || (strides[i] * (int64_t)gn_dtype_size(types[i])) % 16) return false;
  }
  return true;
}

// w' = w (or 1 + w with gemma; ones without a weight) in shared memory, zero-padded
// to whole 16-element vectors: a thread's vector that starts inside the row reads
// only staged values, without per-element guards.
template <typename A>
__host__ __device__ inline size_t staged_weight_bytes(int64_t n) {
  return (size_t)((n + 15) / 16 * 16) * sizeof(A);
}

// vec: the ParamLayout the kernel reads (0 = linear); nvecs = padded / vec.
template <typename A>
__device__ __forceinline__ void stage_weight(const gn_addnorm_config& c, const void* w, int n, A* sw, int vec) {
  stage_param_row<A>(w, c.param_dtype, 0, n, (n + 15) / 16 * 16, A(c.gemma ? 0 : 1), A(c.gemma ? 1 : 0), sw, vec);
  __syncthreads();
}

// The decode kernel (add_rms_norm_fwd_decode.cu): a block per row when every row's
// block is resident at once, the row is aligned (aligned_rows) and short enough, and
// the weight packs into 16-byte words. *done says whether it launched.
gn_status launch_fwd_decode(const gn_addnorm_fwd_args& a, bool aligned, const DeviceInfo& dev, cudaStream_t s,
                            bool* done);

// w'[col] read from global memory (loop path).
template <typename A>
__device__ __forceinline__ A weight_at(const gn_addnorm_config& c, const void* w, int64_t col) {
  return (w ? load_param<A>(w, c.param_dtype, col) : A(c.gemma ? 0 : 1)) + A(c.gemma ? 1 : 0);
}

// Row r of a tensor of element size `es` and row stride `stride` (elements).
__device__ __forceinline__ const void* row_of(const void* p, int64_t r, int64_t stride, size_t es) {
  return p ? static_cast<const char*>(p) + r * stride * (int64_t)es : nullptr;
}
__device__ __forceinline__ void* row_of(void* p, int64_t r, int64_t stride, size_t es) {
  return p ? static_cast<char*>(p) + r * stride * (int64_t)es : nullptr;
}

}  // namespace an
}  // namespace gn
