// Deterministic parameter-gradient reduction shared by the backward kernels:
// each row block folds its threads' dw (db) sums into one fp32 partial row of
// the workspace, and a small second kernel adds the partials in a fixed order
// (bitwise-reproducible dw/db without float atomics).
#pragma once

#include "common.cuh"
#include "plan.h"

namespace gn {

// Sums a block's per-thread dw (or db) over its row teams and writes the block's
// partial for its columns. Arrays are passed by reference so they stay in registers.
template <typename A, int K, int VEC>
__device__ __forceinline__ void fold_partial(A (&acc)[K], A* part, A* ws, const Layout& L, int rl, int lt,
                                             int64_t G) {
  if (L.rpi > 1) {
#pragma unroll
    for (int k = 0; k < K; ++k) part[threadIdx.x * K + k] = acc[k];
    __syncthreads();
    if (rl == 0) {
      for (int q = 1; q < L.rpi; ++q)
#pragma unroll
        for (int k = 0; k < K; ++k) acc[k] += part[(threadIdx.x + q * L.gpb * L.tpg) * K + k];
    }
    __syncthreads();
  }
  if (rl != 0) return;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int64_t col = (int64_t)((k / VEC) * L.tpg + lt) * VEC + k % VEC;
    if (col < G) ws[col] = acc[k];
  }
}

// dw[col] = sum over partials q of ws[q][col] (same for db), in a fixed order:
// thread (x, y) of a RED_COLS x RED_SPLIT block sums partials y, y + RED_SPLIT, ...
// of column x in order, then row y == 0 adds the RED_SPLIT sums in order. A single
// thread per column would walk ~1000 partials one dependent load after another.
constexpr int RED_COLS = 32, RED_SPLIT = 16;

template <typename A>
__global__ void __launch_bounds__(RED_COLS * RED_SPLIT)
    reduce_partials(const A* __restrict__ ws, int64_t nparts, int64_t n, void* dw, void* db, gn_dtype param_dtype) {
  __shared__ A sums[RED_SPLIT][RED_COLS + 1];
  const int64_t col = (int64_t)blockIdx.x * RED_COLS + threadIdx.x;
  for (int which = 0; which < 2; ++which) {
    void* dst = which ? db : dw;
    if (!dst) continue;
    const A* src = ws + (int64_t)which * nparts * n + col;
    A s = 0;
    if (col < n) {
#pragma unroll 8
      for (int64_t q = threadIdx.y; q < nparts; q += RED_SPLIT) s += src[q * n];
    }
    sums[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && col < n) {
      A t = 0;
#pragma unroll
      for (int k = 0; k < RED_SPLIT; ++k) t += sums[k][threadIdx.x];
      store_param<A>(dst, param_dtype, col, t);
    }
    __syncthreads();
  }
}

template <typename A>
inline void launch_reduce(const void* ws, int64_t nparts, int64_t n, void* dw, void* db, gn_dtype param_dtype,
                          cudaStream_t s) {
  reduce_partials<A><<<(unsigned)((n + RED_COLS - 1) / RED_COLS), dim3(RED_COLS, RED_SPLIT), 0, s>>>(
      static_cast<const A*>(ws), nparts, n, dw, db, param_dtype);
}

}  // namespace gn
