// Device helpers shared by the gated-norm kernels: what vec.cuh (dtype traits, vector
// loads) and params.cuh (weight / bias) hold, plus activations, per-row constants and
// segmented reductions. No torch headers: only the CUDA toolkit.
#pragma once

#include "params.cuh"
#include "ptx.cuh"

namespace gn {

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
// The scratch may hold more values than a call sums (CAP >= NVAL: one kernel summing two
// values or one per row, by a literal of its row loop).
template <int NVAL, int CAP, typename A>
__device__ __forceinline__ void team_sum(A (&v)[NVAL], int tpg, TeamScratch<CAP, A>& red, int& phase) {
  static_assert(NVAL <= CAP, "scratch for NVAL values");
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
