// Device helpers shared by the gated-norm kernels: dtype traits, 16-byte vector
// loads with a scalar fallback, activations, segmented reductions.
// No torch headers: only the CUDA toolkit.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include <type_traits>

#include "gatednorm.h"
#include "ptx.cuh"

// This kernel's dynamic shared memory as `T name[]` (the emulator: a pointer to it).
#ifdef GN_EMU
#define GN_DYN_SMEM(T, name) T* name = static_cast<T*>(::emu::dyn_smem())
#else
#define GN_DYN_SMEM(T, name) extern __shared__ __align__(16) T name[]
#endif

namespace gn {

// Accumulation type: fp32, except fp64 problems (fp64 gradcheck must be exact).
template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };
template <typename T> using acc_t = typename Acc<T>::type;

template <typename T> __device__ __forceinline__ acc_t<T> to_acc(T v) { return static_cast<acc_t<T>>(v); }
template <> __device__ __forceinline__ float to_acc<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_acc<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T, typename A> __device__ __forceinline__ T from_acc(A v) { return static_cast<T>(v); }
template <> __device__ __forceinline__ __half from_acc<__half, float>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16, float>(float v) {
  return __float2bfloat16_rn(v);
}

template <typename T> struct Tag { using type = T; };

// The gn_dtype of a storage type (with_dtype's inverse).
template <typename T> __host__ __device__ constexpr gn_dtype dtype_of() {
  return sizeof(T) == 8 ? GN_FLOAT64 : sizeof(T) == 4 ? GN_FLOAT32
                        : (std::is_same<T, __half>::value ? GN_FLOAT16 : GN_BFLOAT16);
}

// The launchers' dtype dispatch: f(Tag<T>{}) with T the storage type of `dtype`, its
// status returned; GN_ERR_INVALID for a dtype without kernels.
template <typename F>
inline gn_status with_dtype(gn_dtype dtype, F&& f) {
  switch (dtype) {
    case GN_FLOAT32: return f(Tag<float>{});
    case GN_FLOAT16: return f(Tag<__half>{});
    case GN_BFLOAT16: return f(Tag<__nv_bfloat16>{});
    case GN_FLOAT64: return f(Tag<double>{});
    default: return GN_ERR_INVALID;
  }
}

// gn_dtype_size for device code.
__host__ __device__ __forceinline__ size_t dtype_bytes(gn_dtype t) {
  return t == GN_FLOAT64 ? 8 : (t == GN_FLOAT32 ? 4 : 2);
}

// Elements per 16-byte vector.
template <typename T> __host__ __device__ constexpr int vec_size() { return 16 / (int)sizeof(T); }

// Loads VEC elements starting at column c of row p (columns >= limit read as 0)
// into v[0..VEC); v points into a register array indexed with constants only.
// `aligned` promises p+c is 16-byte aligned and c+VEC <= limit whenever c < limit;
// VEC * sizeof(T) is a multiple of 16 (one or more 16-byte loads: an fp32
// residual beside bf16 activations takes two per vector).
// GLOBAL: p is global memory, read through the non-coherent cache (ld.global.nc);
// otherwise p may be shared memory, or global memory this kernel wrote (generic load).
template <typename T, int VEC, bool GLOBAL = true>
__device__ __forceinline__ void load_vec(const T* __restrict__ p, int64_t c, int64_t limit, bool aligned,
                                         acc_t<T>* v) {
  constexpr int NU = VEC * (int)sizeof(T) / 16;
  static_assert(NU >= 1 && VEC * sizeof(T) == NU * 16, "whole 16-byte vectors");
  if (aligned) {
    if (c < limit) {
      union { uint4 u[NU]; T e[VEC]; } pack;
      const uint4* q = reinterpret_cast<const uint4*>(p + c);
#pragma unroll
      for (int u = 0; u < NU; ++u) pack.u[u] = GLOBAL ? __ldg(q + u) : q[u];
#pragma unroll
      for (int i = 0; i < VEC; ++i) v[i] = to_acc<T>(pack.e[i]);
    } else {
#pragma unroll
      for (int i = 0; i < VEC; ++i) v[i] = 0;
    }
    return;
  }
#pragma unroll
  for (int i = 0; i < VEC; ++i) v[i] = (c + i < limit) ? to_acc<T>(p[c + i]) : acc_t<T>(0);
}

// Raw 16-byte vector at column c (zero when c >= limit; zero bits are 0.0 in
// every dtype here); kept packed so a prefetched row costs 4 registers a vector.
template <typename T>
__device__ __forceinline__ uint4 load_raw(const T* __restrict__ p, int64_t c, int64_t limit) {
  return c < limit ? __ldg(reinterpret_cast<const uint4*>(p + c)) : make_uint4(0, 0, 0, 0);
}

template <typename T, int VEC>
__device__ __forceinline__ void unpack(uint4 u, acc_t<T>* v) {
  union { uint4 u; T e[VEC]; } pack;
  pack.u = u;
#pragma unroll
  for (int i = 0; i < VEC; ++i) v[i] = to_acc<T>(pack.e[i]);
}

template <typename T, int VEC>
__device__ __forceinline__ void store_vec(T* __restrict__ p, int64_t c, int64_t limit, bool aligned,
                                          const acc_t<T>* v) {
  constexpr int NU = VEC * (int)sizeof(T) / 16;
  static_assert(NU >= 1 && VEC * sizeof(T) == NU * 16, "whole 16-byte vectors");
  if (aligned) {
    if (c < limit) {
      union { uint4 u[NU]; T e[VEC]; } pack;
#pragma unroll
      for (int i = 0; i < VEC; ++i) pack.e[i] = from_acc<T>(v[i]);
#pragma unroll
      for (int u = 0; u < NU; ++u) reinterpret_cast<uint4*>(p + c)[u] = pack.u[u];
    }
    return;
  }
#pragma unroll
  for (int i = 0; i < VEC; ++i)
    if (c + i < limit) p[c + i] = from_acc<T>(v[i]);
}

// The value v keeps after a store to T and a load back (the rounding of a stored
// residual). Through float for half types, as torch converts double -> bf16.
template <typename T, typename A>
__device__ __forceinline__ A round_to(A v) {
  if constexpr (sizeof(T) >= sizeof(A)) {
    return v;
  } else if constexpr (sizeof(T) == 4) {
    return (A)(float)v;
  } else {
    return (A)to_acc<T>(from_acc<T, float>((float)v));
  }
}

// VEC elements of T kept packed (16-byte words) between a prefetch and its use:
// a prefetched row costs VEC * sizeof(T) / 4 registers instead of VEC.
template <typename T, int VEC>
struct Packed {
  static constexpr int NU = VEC * (int)sizeof(T) / 16;
  uint4 u[NU];
};

template <typename T, int VEC>
__device__ __forceinline__ void load_packed(Packed<T, VEC>& q, const T* __restrict__ p, int64_t c, int64_t limit) {
#pragma unroll
  for (int u = 0; u < Packed<T, VEC>::NU; ++u)
    q.u[u] = c < limit ? __ldg(reinterpret_cast<const uint4*>(p + c) + u) : make_uint4(0, 0, 0, 0);
}

template <typename T, int VEC>
__device__ __forceinline__ void unpack(const Packed<T, VEC>& q, acc_t<T>* v) {
  union { uint4 u[Packed<T, VEC>::NU]; T e[VEC]; } pack;
#pragma unroll
  for (int u = 0; u < Packed<T, VEC>::NU; ++u) pack.u[u] = q.u[u];
#pragma unroll
  for (int i = 0; i < VEC; ++i) v[i] = to_acc<T>(pack.e[i]);
}

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
// memory as A, zeros in [n, padded). 16-byte loads, two in flight per thread
// before their stores (a decode-sized launch waits on this), and no unrolled
// scalar guards: this code's register peak is the kernel's (all four parameter
// dtypes are compiled in), so it must stay below the main loop's.
template <typename P, typename A>
__device__ __forceinline__ void stage_typed(const P* p, int n, int padded, A fill, A add, A* s, ParamLayout pl) {
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
      for (int i = 0; i < V; ++i) s[param_pos<A>(pl, k * V + i)] = (A)to_acc<P>(u0.e[i]) + add;
      if (two) {
#pragma unroll
        for (int i = 0; i < V; ++i) s[param_pos<A>(pl, (k + bd) * V + i)] = (A)to_acc<P>(u1.e[i]) + add;
      }
    }
    done = nv * V;
  }
#pragma unroll 1
  for (int k = done + threadIdx.x; k < padded; k += bd)
    s[param_pos<A>(pl, k)] = k < n ? (p ? (A)to_acc<P>(p[k]) : fill) + add : A(0);
}

// stage_typed for a parameter dtype known at run time (p + c0: this block's columns),
// in layout `vec` (ParamLayout; 0 = linear).
template <typename A>
__device__ __forceinline__ void stage_param_row(const void* p, gn_dtype t, int64_t c0, int n, int padded, A fill,
                                                A add, A* s, int vec) {
  const ParamLayout pl{vec, vec ? padded / vec : 0};
  switch (t) {
    case GN_FLOAT16:
      return stage_typed<__half, A>(p ? static_cast<const __half*>(p) + c0 : nullptr, n, padded, fill, add, s, pl);
    case GN_BFLOAT16:
      return stage_typed<__nv_bfloat16, A>(p ? static_cast<const __nv_bfloat16*>(p) + c0 : nullptr, n, padded, fill,
                                           add, s, pl);
    case GN_FLOAT64:
      return stage_typed<double, A>(p ? static_cast<const double*>(p) + c0 : nullptr, n, padded, fill, add, s, pl);
    default:
      return stage_typed<float, A>(p ? static_cast<const float*>(p) + c0 : nullptr, n, padded, fill, add, s, pl);
  }
}

// Copies a block's n weight / bias columns starting at column c0 into shared
// memory in the accumulation type (ones / zeros when absent; sb may be null),
// in layout `vec` (ParamLayout).
template <typename A>
__device__ __forceinline__ void stage_params(const void* w, const void* b, gn_dtype t, int64_t c0, int n, A* sw,
                                             A* sb, int vec) {
  stage_param_row<A>(w, t, c0, n, n, A(1), A(0), sw, vec);
  if (sb) stage_param_row<A>(b, t, c0, n, n, A(0), A(0), sb, vec);
  __syncthreads();
}

// VEC consecutive values from linearly staged shared memory (unaligned rows; the
// aligned kernels read planar staging with load_param_vec).
template <typename A, int VEC>
__device__ __forceinline__ void load_smem(const A* p, A* v) {
#pragma unroll
  for (int i = 0; i < VEC; ++i) v[i] = p[i];
}

// 1 / (1 + 2^(-z log2(e))) on the approximate MUFU ex2 and rcp (~2 ulp, like Triton's
// div.full). `1.f / (1.f + __expf(-z))` compiled to ~20 instructions an element (exp's
// denormal fixups, the IEEE division's range check and slow-path call): the largest
// per-element cost in these memory-bound kernels. z -> -inf: e = inf, rcp = 0.
__device__ __forceinline__ float sigmoid(float z) { return rcp_approx(1.f + ex2_approx(-1.4426950408889634f * z)); }
__device__ __forceinline__ double sigmoid(double z) { return 1.0 / (1.0 + exp(-z)); }
__device__ __forceinline__ float rsqrt_acc(float v) { return rsqrtf(v); }
__device__ __forceinline__ double rsqrt_acc(double v) { return rsqrt(v); }

// Per-row constants of the register kernels (1/G, eps) as a kernel parameter: they live in
// the constant bank, so neither costs a division or a double->float conversion a row
// (not free at 16 elements a thread: these kernels are issue-bound on the H200) nor holds
// a register across the row loop (hoisted into registers they spilled at the 64-register
// bound of the forward).
template <typename A>
struct RowConsts {
  A inv_g, eps;
};
template <typename A>
inline RowConsts<A> row_consts(const gn_config& c) {
  return RowConsts<A>{A(1) / (A)c.group_size, (A)c.eps};
}

// act(z) and act'(z) for silu (z*s) and sigmoid (s), s = sigmoid(z).
template <typename A>
__device__ __forceinline__ A act_fwd(A z, gn_act act) {
  A s = sigmoid(z);
  return act == GN_ACT_SIGMOID ? s : z * s;
}
template <typename A>
__device__ __forceinline__ void act_fwd_bwd(A z, gn_act act, A& a, A& da) {
  A s = sigmoid(z);
  if (act == GN_ACT_SIGMOID) {
    a = s;
    da = s * (A(1) - s);
  } else {
    a = z * s;
    da = s * (A(1) + z * (A(1) - s));
  }
}

// Shared scratch of team_sum for NVAL values: two halves used alternately, so a
// call need not wait for every thread to have read the previous call's partials
// before the next call overwrites them (one barrier per call, not two: a thread
// writing half h in call k+2 has passed call k+1's barrier, which every reader of
// call k reached only after its reads).
template <int NVAL, typename A>
struct TeamScratch {
  A part[2][NVAL * 32];
};

// Sums NVAL values over a team of `tpg` consecutive threads (a power of two up to
// 32, else any number of whole warps).
// Teams of <= 32 threads reduce with shuffles inside their warp; larger teams
// (whole warps) go through `red`. Every thread of the block must make the same
// sequence of calls with the same `phase` (a per-thread counter starting at 0):
// it may hit __syncthreads. All team members get the same, order-fixed result.
template <int NVAL, typename A>
__device__ __forceinline__ void team_sum(A (&v)[NVAL], int tpg, TeamScratch<NVAL, A>& red, int& phase) {
  // Unrolled, each step predicated on the (uniform) team width -- a run-time loop costs
  // six instructions a step (SASS), this two or three; the same additions in the same
  // order.
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    if (off < tpg) {
#pragma unroll
      for (int k = 0; k < NVAL; ++k) v[k] += __shfl_xor_sync(0xffffffffu, v[k], off);
    }
  }
  if (tpg <= 32) return;
  A* part = red.part[phase];
  phase ^= 1;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) {
#pragma unroll
    for (int k = 0; k < NVAL; ++k) part[k * 32 + warp] = v[k];
  }
  __syncthreads();
  const int wpt = tpg >> 5;  // warps per team
  // The team's warp partials, summed by a shuffle tree in every group of `tree` lanes
  // (each group holds them all, so every lane gets the same, order-fixed sum): log2
  // steps, not wpt dependent shared-memory reads (32 of them in a 1024-thread block
  // were ~0.4 us of a decode-sized kernel). tree: wpt rounded up to a power of two.
  // The first warp of this thread's team, warp / wpt * wpt, without an integer division
  // (~25 instructions, redone at every call of a row loop: SASS of the gated forward):
  // warp + 1/2 lies at least 1/64 from a multiple of wpt <= 32, far beyond the
  // approximate reciprocal's error (~2 ulp).
  const float rw = rcp_approx((float)wpt);
  const int first = (int)(((float)warp + 0.5f) * rw) * wpt;
  const int tree = 1 << (32 - __clz(wpt - 1));
  const int slot = lane & (tree - 1);
#pragma unroll
  for (int k = 0; k < NVAL; ++k) {
    A s = slot < wpt ? part[k * 32 + first + slot] : A(0);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1)
      if (off < tree) s += __shfl_xor_sync(0xffffffffu, s, off);
    v[k] = s;
  }
}

}  // namespace gn
