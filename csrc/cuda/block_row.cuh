// The block-row forward kernels' shared pieces (gated_norm_fwd_row.cu: fwd_block_row and the
// dispatch; gated_norm_fwd_l2.cu: fwd_block_row_l2): their block size and LayerNorm's
// one-pass statistics.
#pragma once

#include "gated_norm_fwd.cuh"

namespace gn {

constexpr int ROW_BLOCK = 1024;

// LayerNorm in both kernels: the mean and the variance from one block reduction, of x - K and
// (x - K)^2 with K the mean of the group's first 16-byte vector (every thread reads the same
// word: the same K, bit for bit). Then var = E[(x - K)^2] - d^2 with d = E[x - K], whose
// rounding grows with d^2 / var: taken where d^2 <= ONE_PASS_SPREAD * var (K within two
// standard deviations of the mean, almost every row: K averages several samples), else the
// variance about the mean by a second reduction. A reduction costs a block of 32 warps its
// memory traffic meanwhile (z is read after the statistics): one instead of two took
// ln_bias_z_16384 bf16 forward 0.814 -> 0.841, ln_z_32768 0.920 -> 0.938 (H100).
constexpr float ONE_PASS_SPREAD = 4.f;

// K of the one-pass statistics: the mean of the group's first 16-byte vector.
template <typename T, int VEC>
__device__ __forceinline__ acc_t<T> one_pass_shift(const T* x) {
  using A = acc_t<T>;
  Packed<T, VEC> first;
  first.load(x);
  A k = 0;
#pragma unroll
  for (int i = 0; i < VEC; ++i) k += to_acc<T>(first.e[i]);
  return k * (A(1) / A(VEC));
}

// The mean and the variance from the group's sums of x - K (s0) and (x - K)^2 (s1); false
// where that variance would lose too many bits (ONE_PASS_SPREAD): the caller then sums
// (x - mean)^2.
template <typename A>
__device__ __forceinline__ bool one_pass_moments(A s0, A s1, A k, A inv_g, A& mean, A& var) {
  const A d = s0 * inv_g;
  mean = k + d;
  var = s1 * inv_g - d * d;
  return d * d <= A(ONE_PASS_SPREAD) * var;
}

// The launchers of fwd_block_row_l2 (gated_norm_fwd_l2.cu), each returning the launch's status;
// launch_fwd_block_row says which groups take which. The first three: 16-bit rows of
// 1025-2048 vectors a group, one block a (row, group).
// launch_l2_rms: RMSNorm, parameters of the rows' dtype, a gate after the norm or none.
gn_status launch_l2_rms(const gn_fwd_args& a, const DeviceInfo& dev, cudaStream_t s);
// launch_l2_ln: LayerNorm, a weight of the rows' dtype and a gate after the norm, a bias or none.
gn_status launch_l2_ln(const gn_fwd_args& a, const DeviceInfo& dev, cudaStream_t s);
// launch_l2_fp32_weight: RMSNorm, a gate after it, an fp32 weight and no bias.
gn_status launch_l2_fp32_weight(const gn_fwd_args& a, const DeviceInfo& dev, cudaStream_t s);
// try_l2_cluster: RMSNorm with a gate after it and a weight of the rows' dtype, no bias, groups
// of 4097-16384 vectors (fp32: to 32768) over a cluster; sets *done when it launched.
gn_status try_l2_cluster(const gn_fwd_args& a, int64_t nvec, const DeviceInfo& dev, cudaStream_t s, bool* done);

}  // namespace gn
