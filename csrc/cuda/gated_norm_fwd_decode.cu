// Gated norm forward for few rows of narrow groups (decode: every block resident at once, a
// group one vector a thread, teams within a warp; H100 under graph replay: decode_qwen3next
// 2.54 -> 2.03 us, decode_m32 1.93 -> 1.47 us). For few rows the time is latency, the
// instruction path of one warp from its first load to its last store; the register path
// spends it on a cp.async ring and on staging the weight in shared memory behind a barrier
// (add + RMSNorm measured the same: add_rms_norm_fwd_decode.cu). Here every load of a group
// (x, z, w, b) is issued at once and held packed, and the team reduces with shuffles only.
// H200, bf16: the register path takes 2.06 us a graph replay at M = 32, N = 128 (triton
// 1.53).
#include "gated_norm_fwd.cuh"

namespace gn {
namespace {

constexpr int DECODE_BLOCK = 256;

// Sum over a team of `tpg` lanes (a power of two <= 32) of one warp.
template <typename A>
__device__ __forceinline__ A lanes_sum(A v, int tpg) {
  for (int off = tpg >> 1; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// A team of L.tpg threads per (row, group), DECODE_BLOCK / L.tpg teams a block, in
// (row, group) order; P: the parameters' dtype (T, or fp32 beside 16-bit rows).
template <typename T, typename P>
__global__ void __launch_bounds__(DECODE_BLOCK) fwd_decode(const gn_fwd_args a, const Layout L,
                                                           const RowConsts<acc_t<T>> rc, const bool prefetch) {
  using A = acc_t<T>;
  constexpr int VEC = vec_size<T>();
  const gn_config& c = a.cfg;
  const int G = (int)c.group_size, lt = threadIdx.x % L.tpg, cj = lt * VEC;
  // One wave of blocks: the (row, group) index fits 32 bits, and one group a row (the
  // decode shapes) needs no division at all.
  const unsigned ngroups = (unsigned)(c.cols / G);
  const unsigned t = blockIdx.x * (blockDim.x / L.tpg) + threadIdx.x / L.tpg;
  const unsigned r = ngroups == 1 ? t : t / ngroups, g = t - r * ngroups;
  // Teams past the last row load nothing but still shuffle: a warp's lanes all take part.
  const bool ok = r < c.rows;
  const int lim = ok ? G : 0;
  const int64_t rr = ok ? r : 0, col = (int64_t)g * G;
  const bool gate = a.z != nullptr, after = gate && c.norm_before_gate;  // norm, then gate
  // The team's x and z (the first row's teams: the group's parameters) asked of L2 before
  // pdl_wait, whose DRAM latency then overlaps the previous grid's tail (prefetch_l2). H100
  // bf16 per CUDA-graph replay: decode_qwen3next (2048 x 128) 2.03 -> 1.79 us; decode_m32
  // level (1.40). GATEDNORM_PREFETCH_L2=0 (read once) turns it off, for measuring.
  if (prefetch && ok && lt == 0) {
    const unsigned gb = (unsigned)G * (unsigned)sizeof(T), wb = (unsigned)G * (unsigned)sizeof(P);
    prefetch_l2(static_cast<const T*>(a.x) + rr * a.x_stride + col, gb);
    if (gate) prefetch_l2(static_cast<const T*>(a.z) + rr * a.z_stride + col, gb);
    if (r == 0 && a.weight) prefetch_l2(static_cast<const P*>(a.weight) + col, wb);
    if (r == 0 && a.bias) prefetch_l2(static_cast<const P*>(a.bias) + col, wb);
  }
  pdl_wait();
  Packed<T, VEC> px, pz;
  Packed<P, VEC> pw, pb;
  load_packed<T, VEC>(px, static_cast<const T*>(a.x) + rr * a.x_stride + col, cj, lim);
  if (gate) load_packed<T, VEC>(pz, static_cast<const T*>(a.z) + rr * a.z_stride + col, cj, lim);
  if (a.weight) load_packed<P, VEC>(pw, static_cast<const P*>(a.weight) + col, cj, lim);
  if (a.bias) load_packed<P, VEC>(pb, static_cast<const P*>(a.bias) + col, cj, lim);
  // The next kernel may start launching once every block has passed here; its blocks
  // wait in pdl_wait until this grid has finished.
  pdl_trigger();
  A v[VEC], zz[VEC];
  unpack<T, VEC>(px, v);
  if (gate) {
    unpack<T, VEC>(pz, zz);
    if (!after) {
#pragma unroll
      for (int i = 0; i < VEC; ++i) v[i] *= act_fwd(zz[i], c.act);
    }
  }
  A mean = 0;
  if (!c.is_rms_norm) {
    A s = 0;
#pragma unroll
    for (int i = 0; i < VEC; ++i) s += v[i];
    mean = lanes_sum(s, L.tpg) * rc.inv_g;
    if (cj < lim) {  // whole vectors (aligned rows); padding stays 0
#pragma unroll
      for (int i = 0; i < VEC; ++i) v[i] -= mean;
    }
  }
  A ss = 0;
#pragma unroll
  for (int i = 0; i < VEC; ++i) ss += v[i] * v[i];
  const A rstd = rsqrt_acc(lanes_sum(ss, L.tpg) * rc.inv_g + rc.eps);
  acc_t<P> wv[VEC], bv[VEC];
  if (a.weight) unpack<P, VEC>(pw, wv);
  if (a.bias) unpack<P, VEC>(pb, bv);
#pragma unroll
  for (int i = 0; i < VEC; ++i) {
    A y = v[i] * rstd * (a.weight ? (A)wv[i] : A(1)) + (a.bias ? (A)bv[i] : A(0));
    v[i] = after ? y * act_fwd(zz[i], c.act) : y;
  }
  store_vec<T, VEC>(static_cast<T*>(a.out) + rr * a.out_stride + col, cj, lim, true, v);
  if (ok && lt == 0) store_stats<A>(a, g, r, mean, rstd);
}

template <typename T, typename P>
gn_status launch(const gn_fwd_args& a, const Plan& p, const DeviceInfo& dev, cudaStream_t s, bool* done) {
  constexpr auto kernel = fwd_decode<T, P>;
  const int64_t teams = a.cfg.rows * (a.cfg.cols / a.cfg.group_size), per_block = DECODE_BLOCK / p.layout.tpg;
  const int64_t blocks = (teams + per_block - 1) / per_block;
  if (blocks > (int64_t)resident_blocks<kernel>(DECODE_BLOCK, 0) * dev.sms) return GN_OK;  // more than one wave
  *done = true;
  using A = acc_t<T>;
  static const bool prefetch = knob_on("GATEDNORM_PREFETCH_L2");
  return launch_pdl(kernel, dim3((unsigned)blocks), DECODE_BLOCK, 0, s, dev, "gated_norm forward (decode) launch", 1,
                    a, p.layout, row_consts<A>(a.cfg), prefetch);
}

}  // namespace

gn_status launch_fwd_decode(const gn_fwd_args& a, const Plan& p, const DeviceInfo& dev, cudaStream_t s, bool* done) {
  *done = false;
  // One 16-byte vector a thread, teams within a warp, rows and parameters aligned.
  const bool fits = p.regs && p.layout.aligned && p.layout.csize == 1 && p.nv == 1 && p.layout.tpg <= 32 &&
                    (uintptr_t)a.weight % 16 == 0 && (uintptr_t)a.bias % 16 == 0;
  if (!fits) return GN_OK;
  const gn_dtype pd = a.weight || a.bias ? a.cfg.param_dtype : a.cfg.dtype;
  return with_dtype(a.cfg.dtype, [&](auto tag) -> gn_status {
    using T = typename decltype(tag)::type;
    if constexpr (sizeof(T) == 8) {
      return GN_OK;  // fp64: correctness, not latency (the register path)
    } else {
      if (pd == dtype_of<T>()) return launch<T, T>(a, p, dev, s, done);
      if constexpr (sizeof(T) == 2) {
        if (pd == GN_FLOAT32) return launch<T, float>(a, p, dev, s, done);
      }
      return GN_OK;
    }
  });
}

}  // namespace gn
