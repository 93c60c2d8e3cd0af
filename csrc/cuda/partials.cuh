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

// reduce_partials (above) loads 4 bytes a thread and, with few partials (16 rows of 2^20:
// 8-16 of them), one load a thread: ~8 KB in flight an SM, ~0.2 of the copy ceiling -- for
// bign_1m's 32-64 MB of partials, tens of microseconds (it remains for rows that are not
// whole 16-byte vectors). Here a thread owns a 16-byte vector of columns, and the partials
// are split over `split` threads only when the columns alone would leave the GPU short of
// threads; each thread issues its loads 8 at a time. Thread (x, y) sums partials y, y +
// split, ... of its columns in order, then the split sums are added as a fixed tree: a
// fixed order for given (nparts, n), so dw/db stay bitwise reproducible.
// Splits up to a whole block (H100 bf16 forward+backward against a cap of 16, thirty-first
// session: qwen3next_prefill 0.792 -> 0.806, its reduction 4.4 -> 2.9 us (264 partials of
// 128 columns: at 16, two blocks and three dependent rounds of loads a thread; at 256, 32
// blocks and one or two loads); sweep_n128 / n256 +1 %, the other rows level; 64 splits in
// between).
constexpr int RED_THREADS = 256, RED_MAX_SPLIT = RED_THREADS;

template <typename A>
__global__ void __launch_bounds__(RED_THREADS)
    reduce_partials_vec(const A* __restrict__ ws, int64_t nparts, int64_t n, void* dw, void* db,
                        gn_dtype param_dtype) {
  constexpr int VW = 16 / (int)sizeof(A);  // columns a thread
  __shared__ A sums[RED_THREADS * VW];
  const int split = blockDim.y, x = threadIdx.x, y = threadIdx.y;
  const int64_t col = ((int64_t)blockIdx.x * blockDim.x + x) * VW;
  for (int which = 0; which < 2; ++which) {
    void* dst = which ? db : dw;
    if (!dst) continue;
    const A* src = ws + (int64_t)which * nparts * n + col;
    A s[VW] = {};
    if (col < n) {
      constexpr int B = 8;  // loads issued before the first add (an unrolled loop re-tests its bound each trip)
      for (int64_t q0 = y; q0 < nparts; q0 += (int64_t)B * split) {
        A v[B][VW];
#pragma unroll
        for (int b = 0; b < B; ++b) {  // past the last partial: zeros (adding +0 keeps the order fixed)
          const int64_t q = q0 + (int64_t)b * split;
          load_vec<A, VW>(src + (q < nparts ? q : 0) * n, 0, q < nparts ? VW : 0, true, v[b]);
        }
#pragma unroll
        for (int b = 0; b < B; ++b)
#pragma unroll
          for (int i = 0; i < VW; ++i) s[i] += v[b][i];
      }
    }
    // The split sums of a column added as a tree (split a power of two): log2(split)
    // rounds, not `split` dependent shared-memory reads in one thread. Fixed pairs, so a
    // fixed order.
    for (int h = split >> 1; h > 0; h >>= 1) {
      if (y >= h && y < 2 * h) {
#pragma unroll
        for (int i = 0; i < VW; ++i) sums[((y - h) * blockDim.x + x) * VW + i] = s[i];
      }
      __syncthreads();
      if (y < h) {
#pragma unroll
        for (int i = 0; i < VW; ++i) s[i] += sums[(y * blockDim.x + x) * VW + i];
      }
      __syncthreads();
    }
    if (y == 0 && col < n) {
#pragma unroll
      for (int i = 0; i < VW; ++i) store_param<A>(dst, param_dtype, col + i, s[i]);
    }
  }
}

template <typename A>
inline void launch_reduce(const void* ws, int64_t nparts, int64_t n, void* dw, void* db, gn_dtype param_dtype,
                          cudaStream_t s) {
  constexpr int VW = 16 / (int)sizeof(A);
  if (n % VW == 0 && (uintptr_t)ws % 16 == 0) {  // whole vectors in every partial row
    // The fewest splits that give the GPU ~64K threads (a fixed function of nparts and n).
    const int64_t vecs = n / VW;
    int split = 1;
    while (split < RED_MAX_SPLIT && split < nparts && vecs * split < 65536) split <<= 1;
    const int bx = RED_THREADS / split;
    reduce_partials_vec<A><<<(unsigned)((vecs + bx - 1) / bx), dim3(bx, split), 0, s>>>(
        static_cast<const A*>(ws), nparts, n, dw, db, param_dtype);
    return;
  }
  reduce_partials<A><<<(unsigned)((n + RED_COLS - 1) / RED_COLS), dim3(RED_COLS, RED_SPLIT), 0, s>>>(
      static_cast<const A*>(ws), nparts, n, dw, db, param_dtype);
}

}  // namespace gn
