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

// dw[col] = sum over partials p (in order) of ws[p][col]; same for db.
template <typename A>
__global__ void reduce_partials(const A* __restrict__ ws, int64_t nparts, int64_t n, void* dw, void* db,
                                gn_dtype param_dtype) {
  const int64_t col = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (col >= n) return;
  for (int which = 0; which < 2; ++which) {
    void* dst = which ? db : dw;
    if (!dst) continue;
    const A* src = ws + (int64_t)which * nparts * n + col;
    A s = 0;
    for (int64_t q = 0; q < nparts; ++q) s += src[q * n];
    store_param<A>(dst, param_dtype, col, s);
  }
}

template <typename A>
inline void launch_reduce(const void* ws, int64_t nparts, int64_t n, void* dw, void* db, gn_dtype param_dtype,
                          cudaStream_t s) {
  reduce_partials<A><<<(unsigned)((n + 255) / 256), 256, 0, s>>>(static_cast<const A*>(ws), nparts, n, dw, db,
                                                                  param_dtype);
}

}  // namespace gn
