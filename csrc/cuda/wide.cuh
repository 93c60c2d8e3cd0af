// The wide paths' shared pieces (gated_norm_fwd_wide.cu, gated_norm_bwd_wide.cu): few
// (row, group) segments of very wide groups, cut into chunks of WIDE_BLOCK threads x k
// 16-byte vectors, a block per chunk.
#pragma once

#include "common.cuh"
#include "plan.h"

namespace gn {

// Vector j of this thread in a chunk: columns (j * WIDE_BLOCK + threadIdx.x) * VEC ..
template <typename T>
__device__ __forceinline__ int64_t wide_col(int j) {
  return ((int64_t)j * WIDE_BLOCK + threadIdx.x) * vec_size<T>();
}

// A 16-byte vector of T at column c (zeros past lim): load_raw on aligned rows, element
// by element otherwise. Zero bits are 0.0 in every dtype here.
template <typename T>
__device__ __forceinline__ uint4 load_word(const T* p, int64_t c, int64_t lim, bool aligned) {
  if (aligned) return load_raw<T>(p, c, lim);
  constexpr int VEC = vec_size<T>();
  union { uint4 u; T e[VEC]; } k;
  k.u = make_uint4(0, 0, 0, 0);
#pragma unroll
  for (int i = 0; i < VEC; ++i)
    if (c + i < lim) k.e[i] = p[c + i];
  return k.u;
}

// Columns of chunk c of a group of G, chunks of CH.
__device__ __forceinline__ int64_t chunk_cols(int64_t G, int64_t c, int64_t CH) {
  return G - c * CH < CH ? G - c * CH : CH;
}

}  // namespace gn
