// Weight / bias / dw / db: read in their run-time dtype (whole vectors where they can
// be), staged into shared memory in the accumulation type, written back.
#pragma once

#include "vec.cuh"

namespace gn {

// weight / bias / dw / db: their dtype is a run-time property (it may differ from
// x's); they are read once per thread (register path) or from L1, so a uniform
// switch costs nothing that matters.
template <typename A>
__device__ __forceinline__ A load_param(const void* p, gn_dtype t, int64_t i) {
  switch (t) {
    case GN_FLOAT16: return (A)__half2float(static_cast<const __half*>(p)[i]);
    case GN_BFLOAT16: return (A)__bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case GN_FLOAT64: return (A)static_cast<const double*>(p)[i];
    default: return (A)static_cast<const float*>(p)[i];
  }
}

// Parameters c..c+VEC-1 (limit: the end of the group's columns): out[i] = the value,
// `none` where p is null, 0 past limit. `vec` (uniform) promises p is 16-byte aligned
// and c a multiple of VEC: whole vectors then take one or two 8/16-byte loads instead of
// VEC scalar loads behind a dtype switch (the loop kernels read a parameter per
// element per row: the scalar form made them instruction-bound).
template <typename P, typename A, int VEC>
__device__ __forceinline__ bool params_vec(const void* p, int64_t c, A* out) {
  if constexpr ((VEC * sizeof(P)) % 16 == 0 && sizeof(acc_t<P>) == sizeof(A)) {
    load_vec<P, VEC>(static_cast<const P*>(p), c, c + VEC, true, out);
    return true;
  } else if constexpr (VEC * sizeof(P) == 8 && sizeof(P) == 2 && sizeof(A) == 4) {  // 4 halves / bf16s
    union { uint2 u; P e[VEC]; } pack;
    pack.u = __ldg(reinterpret_cast<const uint2*>(static_cast<const P*>(p) + c));
#pragma unroll
    for (int i = 0; i < VEC; ++i) out[i] = to_acc<P>(pack.e[i]);
    return true;
  } else {
    return false;
  }
}
template <typename A, int VEC>
__device__ __forceinline__ void load_params(const void* p, gn_dtype t, int64_t c, int64_t limit, bool vec, A none,
                                            A* out) {
  if (p && vec && c + VEC <= limit) {
    bool done = false;
    switch (t) {
      case GN_FLOAT16: done = params_vec<__half, A, VEC>(p, c, out); break;
      case GN_BFLOAT16: done = params_vec<__nv_bfloat16, A, VEC>(p, c, out); break;
      case GN_FLOAT64: done = params_vec<double, A, VEC>(p, c, out); break;
      default: done = params_vec<float, A, VEC>(p, c, out); break;
    }
    if (done) return;
  }
#pragma unroll
  for (int i = 0; i < VEC; ++i) out[i] = c + i < limit ? (p ? load_param<A>(p, t, c + i) : none) : A(0);
}
// May load_params take whole vectors for columns col0 + k * VEC of this pointer?
template <int VEC>
__device__ __forceinline__ bool params_vec_ok(const void* p, int64_t col0, int64_t group) {
  return p && (uintptr_t)p % 16 == 0 && col0 % VEC == 0 && group % VEC == 0;
}

template <typename A>
__device__ __forceinline__ void store_param(void* p, gn_dtype t, int64_t i, A v) {
  switch (t) {
    case GN_FLOAT16: static_cast<__half*>(p)[i] = __float2half_rn((float)v); break;
    case GN_BFLOAT16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn((float)v); break;
    case GN_FLOAT64: static_cast<double*>(p)[i] = (double)v; break;
    default: static_cast<float*>(p)[i] = (float)v; break;
  }
}

// round_to<T> for a dtype known at run time.
template <typename A>
__device__ __forceinline__ A round_as(A v, gn_dtype t) {
  switch (t) {
    case GN_FLOAT16: return (A)__half2float(__float2half_rn((float)v));
    case GN_BFLOAT16: return (A)__bfloat162float(__float2bfloat16_rn((float)v));
    case GN_FLOAT32: return (A)(float)v;
    default: return v;
  }
}

// Where staged parameter k sits in shared memory. A thread reads the VEC
// parameters of one of its vectors as 16-byte chunks; when VEC * sizeof(A) > 16
// (fp32 parameters beside 16-bit activations: 32 bytes a vector) a linear layout
// puts a warp's chunks 32 bytes apart, a two-way bank conflict on every read
// (Nsight Compute: 24% excess shared wavefronts; MIO throttle and short scoreboard
// the top stalls). Planar instead: chunk h of vector v at 16-byte word
// h * nvecs + v, so a warp reading one chunk touches consecutive words.
// vec == 0: linear (kernels that read parameters one by one).
struct ParamLayout {
  int vec;    // elements per thread vector (a power of two), or 0
  int nvecs;  // vectors staged (padded / vec)
};

template <typename A>
__device__ __forceinline__ int param_pos(ParamLayout pl, int k) {
  constexpr int PER = 16 / (int)sizeof(A);
  if (pl.vec * (int)sizeof(A) <= 16) return k;
  const int v = k / pl.vec, e = k % pl.vec;
  return ((e / PER) * pl.nvecs + v) * PER + e % PER;
}

// The VEC staged parameters of vector v (elements v * VEC ...), written by
// stage_* with ParamLayout{VEC, nvecs}.
template <typename A, int VEC>
__device__ __forceinline__ void load_param_vec(const A* s, int nvecs, int v, A* out) {
  constexpr int PER = 16 / (int)sizeof(A), H = VEC / PER;
  static_assert(VEC % PER == 0, "whole 16-byte chunks");
#pragma unroll
  for (int h = 0; h < H; ++h) {
    union { uint4 u; A e[PER]; } pack;
    pack.u = *reinterpret_cast<const uint4*>(s + (h * nvecs + v) * PER);
#pragma unroll
    for (int k = 0; k < PER; ++k) out[h * PER + k] = pack.e[k];
  }
}

// Stages parameters p[0..n) (dtype P; absent: `fill`) plus `add` into shared
// memory as S (A unless a kernel stages 16-bit parameters as they are), zeros in
// [n, padded). 16-byte loads, two in flight per thread before their stores (a decode-sized launch waits on this), and no unrolled
// scalar guards: this code's register peak is the kernel's (all four parameter
// dtypes are compiled in), so it must stay below the main loop's.
template <typename P, typename A, typename S = A>
__device__ __forceinline__ void stage_typed(const P* p, int n, int padded, A fill, A add, S* s, ParamLayout pl) {
  constexpr int V = 16 / (int)sizeof(P);
  const int bd = blockDim.x;
  int done = 0;  // elements [0, done) are staged by the vector loop
  if (p && (uintptr_t)p % 16 == 0) {
    const uint4* q = reinterpret_cast<const uint4*>(p);
    const int nv = n / V;
#pragma unroll 1
    for (int k = threadIdx.x; k < nv; k += 2 * bd) {
      union { uint4 u; P e[V]; } u0, u1;
      u0.u = __ldg(q + k);
      const bool two = k + bd < nv;
      u1.u = two ? __ldg(q + k + bd) : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int i = 0; i < V; ++i) s[param_pos<S>(pl, k * V + i)] = from_acc<S>((A)to_acc<P>(u0.e[i]) + add);
      if (two) {
#pragma unroll
        for (int i = 0; i < V; ++i) s[param_pos<S>(pl, (k + bd) * V + i)] = from_acc<S>((A)to_acc<P>(u1.e[i]) + add);
      }
    }
    done = nv * V;
  }
#pragma unroll 1
  for (int k = done + threadIdx.x; k < padded; k += bd)
    s[param_pos<S>(pl, k)] = from_acc<S>(k < n ? (p ? (A)to_acc<P>(p[k]) : fill) + add : A(0));
}

// stage_typed for a parameter dtype known at run time (p + c0: this block's columns),
// in layout `vec` (ParamLayout; 0 = linear).
template <typename A, typename S = A>
__device__ __forceinline__ void stage_param_row(const void* p, gn_dtype t, int64_t c0, int n, int padded, A fill,
                                                A add, S* s, int vec) {
  const ParamLayout pl{vec, vec ? padded / vec : 0};
  switch (t) {
    case GN_FLOAT16:
      return stage_typed<__half, A, S>(p ? static_cast<const __half*>(p) + c0 : nullptr, n, padded, fill, add, s, pl);
    case GN_BFLOAT16:
      return stage_typed<__nv_bfloat16, A, S>(p ? static_cast<const __nv_bfloat16*>(p) + c0 : nullptr, n, padded,
                                              fill, add, s, pl);
    case GN_FLOAT64:
      return stage_typed<double, A, S>(p ? static_cast<const double*>(p) + c0 : nullptr, n, padded, fill, add, s, pl);
    default:
      return stage_typed<float, A, S>(p ? static_cast<const float*>(p) + c0 : nullptr, n, padded, fill, add, s, pl);
  }
}

// Copies a block's n weight / bias columns starting at column c0 into shared
// memory in the accumulation type (ones / zeros when absent; sb may be null),
// in layout `vec` (ParamLayout).
template <typename A, typename S = A>
__device__ __forceinline__ void stage_params(const void* w, const void* b, gn_dtype t, int64_t c0, int n, S* sw,
                                             S* sb, int vec) {
  stage_param_row<A, S>(w, t, c0, n, n, A(1), A(0), sw, vec);
  if (sb) stage_param_row<A, S>(b, t, c0, n, n, A(0), A(0), sb, vec);
  __syncthreads();
}

// VEC consecutive values from linearly staged shared memory (unaligned rows; the
// aligned kernels read planar staging with load_param_vec).
template <typename A, int VEC>
__device__ __forceinline__ void load_smem(const A* p, A* v) {
#pragma unroll
  for (int i = 0; i < VEC; ++i) v[i] = p[i];
}

}  // namespace gn
