// The split register path's cross-CTA step (plan.h, Layout::csize): a group too wide
// for one block is cut into csize slices, one per CTA of a thread-block cluster
// (sm_90+), and each group sum is finished through distributed shared memory.
// A sum over 2^20 bf16 in one block left 2^20-wide rows at 16 blocks for 132 SMs,
// and the loop path re-reads or stages rows without overlapping one row's
// reduction with the next rows' loads (H100: N = 16K-128K forward 0.37-0.57).
#pragma once

#include "common.cuh"
#include "plan.h"

namespace gn {

// This CTA's receive side of cluster_sum: every CTA's partials of the last two calls
// (by source rank) and an mbarrier per slot that completes when all have landed.
template <int NVAL, typename A>
struct ClusterScratch {
  A part[2][NVAL][CLUSTER_MAX];
  unsigned long long bar[2];
};

// Once, before the first cluster_sum: the mbarriers exist before any CTA sends.
template <int NVAL, typename A>
__device__ __forceinline__ void cluster_sum_init(ClusterScratch<NVAL, A>& red, int csize) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (csize <= 1) return;
  if (threadIdx.x == 0) {
    for (int p = 0; p < 2; ++p) mbar_init(smem_addr(&red.bar[p]));
    mbar_init_fence();
  }
  cluster_barrier();
#endif
}

// Turns v (this CTA's sums, the same in every thread) into the sums over the csize
// CTAs of the cluster (a power of two), the same bits in every CTA. Lanes q < csize
// of warp 0 push this CTA's partials into CTA q's slots with st.async, which
// completes bytes on CTA q's mbarrier; every thread waits on its own CTA's mbarrier,
// then each group of csize lanes adds the csize partials by an xor-shuffle tree
// (identical in every lane and CTA). Not barrier.cluster: its release compiles to a
// GPU-wide fence that waits for the previous row's global stores (~1 us a row).
// Slots alternate: CTA q's slot p is rewritten two calls later, after every CTA sent
// the next call's partials, which each sent after its last reads of slot p (every
// thread passed team_sum's barrier: split teams are whole blocks of > 32 threads).
// Every thread of every CTA makes the same sequence of calls (`calls` starts at 0).
// CAP >= NVAL as team_sum's.
template <int NVAL, int CAP, typename A>
__device__ __forceinline__ void cluster_sum(A (&v)[NVAL], int csize, ClusterScratch<CAP, A>& red, int& calls) {
  static_assert(NVAL <= CAP, "scratch for NVAL values");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const int p = calls & 1;
  const unsigned parity = (calls >> 1) & 1;  // uses of slot p so far, mod 2
  ++calls;
  const unsigned bar = smem_addr(&red.bar[p]);
  if (threadIdx.x == 0) mbar_arrive_expect_tx(bar, (unsigned)(csize * NVAL * sizeof(A)));
  if (threadIdx.x < (unsigned)csize) {
    const int q = threadIdx.x;
    const unsigned rank = cluster_ctarank();
    const unsigned rbar = cluster_addr(bar, q);
#pragma unroll
    for (int k = 0; k < NVAL; ++k) {
      const unsigned dst = cluster_addr(smem_addr(&red.part[p][k][rank]), q);
      if constexpr (sizeof(A) == 8) {
        st_async(dst, (unsigned long long)__double_as_longlong((double)v[k]), rbar);
      } else {
        st_async(dst, __float_as_uint((float)v[k]), rbar);
      }
    }
  }
  while (!mbar_try_wait_parity(bar, parity)) {}
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int k = 0; k < NVAL; ++k) {
    A s = red.part[p][k][lane & (csize - 1)];
#pragma unroll
    for (int off = 16; off > 0; off >>= 1)
      if (off < csize) s += __shfl_xor_sync(0xffffffffu, s, off);
    v[k] = s;
  }
#else
  // Unreachable: plan.cu splits groups only for builds with sm_90 code on sm_90+
  // devices. Should a plan ever get here, fail loudly rather than sum one slice.
  if (csize > 1) __trap();
#endif
}

// Before a CTA of a cluster exits: no CTA leaves while another may still address it.
__device__ __forceinline__ void cluster_exit(int csize) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (csize > 1) cluster_barrier();
#endif
}

}  // namespace gn
