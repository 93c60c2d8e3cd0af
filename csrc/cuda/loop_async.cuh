// What the aligned loop kernels (gated_norm_{fwd,bwd}_loop_async.cu) share: their batch
// sizes and the staging cap of the tests.
#pragma once

#include <stdlib.h>

#include "common.cuh"

namespace gn {

// Vectors a thread loads from global memory before it uses any (an unrolled loop would
// re-test its bound, and wait, after each): the statistics passes (forward; the backward
// halves it, three tensors a vector) and the output / gradient pass, whose weight and
// bias loads ride along. -DGN_LOOP_BATCH / -DGN_OUT_BATCH build others for sweeps.
#ifndef GN_LOOP_BATCH
#define GN_LOOP_BATCH 4
#endif
#ifndef GN_OUT_BATCH
#define GN_OUT_BATCH 2
#endif
constexpr int LOOP_BATCH = GN_LOOP_BATCH, OUT_BATCH = GN_OUT_BATCH;

// Staged 16-byte vectors a thread: what the row's slice needs (`want`), at most what a
// block's shared memory holds beside `reserved` bytes, at most GATEDNORM_LOOP_SLOTS
// (read once; tests: small shapes then exercise the unstaged and partly staged cases).
inline int loop_slots(int64_t want, size_t smem_max, size_t reserved, int threads) {
  static const int cap = [] {
    const char* e = getenv("GATEDNORM_LOOP_SLOTS");
    return e ? atoi(e) : -1;
  }();
  const int64_t fit = smem_max > reserved ? (int64_t)((smem_max - reserved) / ((size_t)threads * 16)) : 0;
  int64_t s = want < fit ? want : fit;
  if (cap >= 0 && s > cap) s = cap;
  return (int)s;
}

}  // namespace gn
