// Device helpers for the kernels' data: dtype traits, 16-byte vector loads and stores
// with a scalar fallback, packed prefetches. No torch headers: only the CUDA toolkit.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include <type_traits>

#include "gatednorm.h"

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
// a prefetched row costs VEC * sizeof(T) / 4 registers instead of VEC. load / store: whole
// 16-byte words at p (aligned, in range).
template <typename T, int VEC>
union Packed {
  static constexpr int NU = VEC * (int)sizeof(T) / 16;
  uint4 u[NU];
  T e[VEC];
  __device__ __forceinline__ void load(const T* p) {
#pragma unroll
    for (int k = 0; k < NU; ++k) u[k] = __ldg(reinterpret_cast<const uint4*>(p) + k);
  }
  __device__ __forceinline__ void store(T* p) const {
#pragma unroll
    for (int k = 0; k < NU; ++k) reinterpret_cast<uint4*>(p)[k] = u[k];
  }
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

}  // namespace gn
