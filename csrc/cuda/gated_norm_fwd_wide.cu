// Gated norm forward, wide path: few (row, group) segments of very wide groups (16 rows
// of 2^20), three kernels over chunks of the group (plan.h, wide_chunk_cols).
//
// Why: a block (or a cluster of up to 16 CTAs) per segment leaves most SMs idle or waits
// for whole clusters to fit (16 clusters of 16 CTAs on 132 SMs: bign_1m 0.35 of the H100's
// copy ceiling, torch.compile's split reduction 0.59). Here every chunk is a block:
//  1. fwd_wide_stats: a block per chunk reads x (and z when it enters the statistics),
//     and writes the chunk's partial sums to the workspace: RMS the sum of squares;
//     LayerNorm the sum and the squared deviations from the chunk's own mean (merged
//     exactly in 2, as Chan et al.'s pairwise variance, never as E[v^2] - mu^2);
//  2. fwd_wide_merge: a block per segment sums its partials in a fixed order (reruns get
//     the same bits) into the segment's mean and rstd (workspace and stats outputs);
//  3. fwd_wide_apply: a block per chunk normalises its chunk with them and writes it. It
//     walks the chunks in reverse, so the chunks the first kernel read last are read
//     again while they are still in L2.
// Merging once a segment, not in every block of kernel 3, keeps kernel 3 a plain stream:
// there, each warp's merge of 128 partials read ~8 MB of L2 and kept the block's loads
// waiting (H100 ncu, bign_1m: 46% of DRAM bandwidth at 3 blocks an SM).
// x is read twice (z too when it enters the statistics); the second read hits L2 for
// what the first left there. No atomics, no waiting between blocks, no clusters.
#include "gated_norm_fwd.cuh"
#include "wide.cuh"

namespace gn {
namespace {

// A chunk's place: segment s = r * ngroups + g, chunk c of C, item s * C + c (its slot in
// the workspace); `lim` its columns.
template <typename T>
struct Chunk {
  FwdRow<T> p;
  int64_t s, r, g, c, item, lim;
};

// The chunk kernels' grid is (chunks, groups, rows): a block reads its chunk off its
// indices, `rev` in reverse order. (Recovered from a linear index, the two 64-bit
// divisions were most of a thread's instructions before its first load at one vector a
// thread: bf16 output kernel, first load at SASS instruction 187 of 952.)
template <typename T, int V>
__device__ __forceinline__ Chunk<T> this_chunk(const gn_fwd_args& a, bool rev) {
  constexpr int64_t CH = wide_chunk_cols<T, V>();
  const int64_t G = a.cfg.group_size, C = gridDim.x, ngroups = gridDim.y;
  Chunk<T> k;
  k.c = rev ? C - 1 - blockIdx.x : blockIdx.x;
  k.g = rev ? ngroups - 1 - blockIdx.y : blockIdx.y;
  k.r = rev ? gridDim.z - 1 - blockIdx.z : blockIdx.z;
  k.s = k.r * ngroups + k.g;
  k.item = k.s * C + k.c;
  k.p = fwd_row<T>(a, k.r, k.g * G + k.c * CH);
  k.lim = chunk_cols(G, k.c, CH);
  return k;
}

// Partial sums per chunk: RMS one value, LayerNorm two (sum, squared deviations).
__host__ __device__ inline int wide_parts(const gn_config& c) { return c.is_rms_norm ? 1 : 2; }

// RMS a template argument: LayerNorm keeps the chunk's values for its second pass, which
// a run-time flag would cost RMSNorm's registers too.
template <typename T, bool RMS>
__global__ void __launch_bounds__(WIDE_BLOCK) fwd_wide_stats(const gn_fwd_args a, const bool al) {
  using A = acc_t<T>;
  constexpr int V = wide_stats_vecs(RMS), VEC = vec_size<T>(), K = V * VEC;
  __shared__ TeamScratch<1, A> red;
  int phase = 0;
  pdl_wait();
  pdl_trigger();  // the second kernel's blocks wait in its pdl_wait until this grid is done
  const gn_config& c = a.cfg;
  const Chunk<T> k = this_chunk<T, V>(a, false);
  const bool early = a.z && !c.norm_before_gate;
  uint4 xr[V], zr[V];
#pragma unroll
  for (int j = 0; j < V; ++j) {  // every load issued before any is used
    xr[j] = load_word<T>(k.p.x, wide_col<T>(j), k.lim, al);
    if (early) zr[j] = load_word<T>(k.p.z, wide_col<T>(j), k.lim, al);
  }
  A v[K], s[1] = {0};
#pragma unroll
  for (int j = 0; j < V; ++j) {
    unpack<T, VEC>(xr[j], v + j * VEC);
    if (early) {
      A zz[VEC];
      unpack<T, VEC>(zr[j], zz);
#pragma unroll
      for (int i = 0; i < VEC; ++i) v[j * VEC + i] *= act_fwd(zz[i], c.act);  // padding: 0 * act(0) = 0
    }
#pragma unroll
    for (int i = 0; i < VEC; ++i) s[0] += RMS ? v[j * VEC + i] * v[j * VEC + i] : v[j * VEC + i];
  }
  team_sum<1>(s, WIDE_BLOCK, red, phase);
  A* ws = static_cast<A*>(a.workspace) + k.item * wide_parts(c);
  if (RMS) {
    if (threadIdx.x == 0) ws[0] = s[0];
    return;
  }
  const A mc = s[0] / (A)k.lim;
  A q[1] = {0};
#pragma unroll
  for (int j = 0; j < V; ++j) {
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      const A d = v[j * VEC + i] - mc;
      q[0] += wide_col<T>(j) + i < k.lim ? d * d : A(0);
    }
  }
  team_sum<1>(q, WIDE_BLOCK, red, phase);
  if (threadIdx.x == 0) {
    ws[0] = s[0];
    ws[1] = q[0];
  }
}

// Where the segments' (mean, rstd) sit in the workspace: after the partials, 16-byte aligned.
__host__ __device__ inline int64_t stats_offset(const gn_config& c, int64_t C) {
  const int64_t n = c.rows * (c.cols / c.group_size) * C * wide_parts(c);
  return (n + 3) / 4 * 4;
}

// A block per segment: a thread adds at most a few partials, then the block's fixed-order
// sum (a warp's lanes added up to 16 each; both measured ~5 us on bign_1m, a time that
// includes the PDL wait for the partial sums' last blocks).
template <typename T>
__global__ void __launch_bounds__(WIDE_BLOCK) fwd_wide_merge(const gn_fwd_args a, const int64_t C,
                                                             const RowConsts<acc_t<T>> rc) {
  using A = acc_t<T>;
  constexpr int64_t CH = wide_chunk_cols<T, wide_stats_vecs(false)>();  // (LayerNorm only)
  __shared__ TeamScratch<1, A> red;
  int phase = 0;
  pdl_wait();
  pdl_trigger();
  const gn_config& c = a.cfg;
  const int64_t seg = blockIdx.x, ngroups = c.cols / c.group_size, r = seg / ngroups, g = seg - r * ngroups;
  const int np = wide_parts(c);
  const A* part = static_cast<const A*>(a.workspace) + seg * C * np;
  A s[1] = {0};
  for (int64_t i = threadIdx.x; i < C; i += WIDE_BLOCK) s[0] += part[i * np];
  team_sum<1>(s, WIDE_BLOCK, red, phase);
  A mean = 0, var = s[0] * rc.inv_g;
  if (!c.is_rms_norm) {  // sum over chunks of M2_i + n_i (mean_i - mean)^2
    mean = var;
    A q[1] = {0};
    for (int64_t i = threadIdx.x; i < C; i += WIDE_BLOCK) {
      const A n = (A)chunk_cols(c.group_size, i, CH);
      const A d = part[i * np] / n - mean;
      q[0] += part[i * np + 1] + n * d * d;
    }
    team_sum<1>(q, WIDE_BLOCK, red, phase);
    var = q[0] * rc.inv_g;
  }
  const A rstd = rsqrt_acc(var + rc.eps);
  if (threadIdx.x == 0) {
    A* st = static_cast<A*>(a.workspace) + stats_offset(c, C) + seg * 2;
    st[0] = mean;
    st[1] = rstd;
    store_stats<A>(a, g, r, mean, rstd);
  }
}

// BIAS a template argument: the bias's loads, held beside the weight's, took 20 of 60
// registers at one vector a thread (sm_90), i.e. blocks an SM, for rows without one.
template <typename T, bool BIAS>
__global__ void __launch_bounds__(WIDE_BLOCK) fwd_wide_apply(const gn_fwd_args a, const int64_t Cs, const bool al) {
  using A = acc_t<T>;
  constexpr int VEC = vec_size<T>();
  constexpr int64_t CH = wide_chunk_cols<T>();
  const gn_config& c = a.cfg;
  // Reverse order: the first blocks take the chunks fwd_wide_stats read last (in L2).
  const Chunk<T> k = this_chunk<T, WIDE_VECS>(a, true);
  const bool gate = a.z != nullptr, early = gate && !c.norm_before_gate, after = gate && c.norm_before_gate;
  uint4 xr[WIDE_VECS], zr[WIDE_VECS];
  // x and z are loaded before the wait: the two kernels before this one only read them,
  // and this grid starts only once every block of those has passed its own wait on the
  // grid that wrote them (so the loads overlap their last blocks). The output is written
  // after it.
#pragma unroll
  for (int j = 0; j < WIDE_VECS; ++j) {
    xr[j] = load_word<T>(k.p.x, wide_col<T>(j), k.lim, al);
    if (gate) zr[j] = load_word<T>(k.p.z, wide_col<T>(j), k.lim, al);
  }
  pdl_wait();
  pdl_trigger();
  const A* st = static_cast<const A*>(a.workspace) + stats_offset(c, Cs) + k.s * 2;
  const A mean = st[0], rstd = st[1];
  const int64_t col0 = k.g * c.group_size + k.c * CH;
  const bool wvec = params_vec_ok<VEC>(a.weight, col0, k.lim), bvec = params_vec_ok<VEC>(a.bias, col0, k.lim);
#pragma unroll
  for (int j = 0; j < WIDE_VECS; ++j) {
    const int64_t cj = wide_col<T>(j);
    if (cj >= k.lim) continue;
    A v[VEC], zz[VEC], wv[VEC], bv[VEC];
    unpack<T, VEC>(xr[j], v);
    if (gate) unpack<T, VEC>(zr[j], zz);
    load_params<A, VEC>(a.weight, c.param_dtype, col0 + cj, col0 + k.lim, wvec, A(1), wv);
    if (BIAS) load_params<A, VEC>(a.bias, c.param_dtype, col0 + cj, col0 + k.lim, bvec, A(0), bv);
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      const A az = gate ? act_fwd(zz[i], c.act) : A(1);
      A y = early ? v[i] * az : v[i];
      y = (y - mean) * rstd * wv[i] + (BIAS ? bv[i] : A(0));
      v[i] = after ? y * az : y;
    }
    store_vec<T, VEC>(k.p.out, cj, k.lim, al, v);
  }
}

template <typename T>
gn_status launch_typed(const gn_fwd_args& a, bool aligned, int64_t Cs, const DeviceInfo& dev, cudaStream_t s) {
  // Fewer segments than twice the SMs (fwd_wide_chunks): rows and groups are far within
  // grid.y and grid.z's 65535.
  const int64_t ngroups = a.cfg.cols / a.cfg.group_size, segments = a.cfg.rows * ngroups;
  constexpr int64_t CH = wide_chunk_cols<T>();
  const int64_t C = (a.cfg.group_size + CH - 1) / CH;  // the output kernel's chunks (Cs: the partial sums')
  if (C > 0x7fffffff) return GN_ERR_UNSUPPORTED;  // grid.x's limit: groups of 2^43+ columns
  gn_status st = launch_pdl(a.cfg.is_rms_norm ? fwd_wide_stats<T, true> : fwd_wide_stats<T, false>,
                            dim3((unsigned)Cs, (unsigned)ngroups, (unsigned)a.cfg.rows), WIDE_BLOCK, 0, s, dev,
                            "gated_norm forward (wide path, partial sums) launch", 1, a, aligned);
  if (st != GN_OK) return st;
  st = launch_pdl(fwd_wide_merge<T>, dim3((unsigned)segments), WIDE_BLOCK, 0, s, dev,
                  "gated_norm forward (wide path, statistics) launch", 1, a, Cs, row_consts<acc_t<T>>(a.cfg));
  if (st != GN_OK) return st;
  return launch_pdl(a.bias ? fwd_wide_apply<T, true> : fwd_wide_apply<T, false>,
                    dim3((unsigned)C, (unsigned)ngroups, (unsigned)a.cfg.rows), WIDE_BLOCK, 0, s, dev,
                    "gated_norm forward (wide path) launch", 1, a, Cs, aligned);
}

}  // namespace

gn_status launch_fwd_wide(const gn_fwd_args& a, bool aligned, int64_t chunks, const DeviceInfo& dev,
                          cudaStream_t s) {
  if (!a.workspace || (uintptr_t)a.workspace % 16) return GN_ERR_INVALID;  // gn_cuda_fwd_workspace_bytes > 0
  return with_dtype(a.cfg.dtype,
                    [&](auto t) { return launch_typed<typename decltype(t)::type>(a, aligned, chunks, dev, s); });
}

}  // namespace gn

extern "C" size_t gn_cuda_fwd_workspace_bytes(const gn_config* c) {
  // Groups under wide_min_group never take the wide path: no device query on the hot path of
  // narrow rows (decode).
  if (!c || c->rows <= 0 || c->cols <= 0 || c->group_size <= 0 || c->cols % c->group_size ||
      c->group_size < gn::wide_min_group(c->dtype))
    return 0;
  gn::DeviceInfo dev;
  if (gn::device_info(&dev) != GN_OK) return 0;
  const int64_t chunks = gn::fwd_wide_chunks(*c, dev);
  const size_t acc = gn::acc_bytes(c->dtype);
  return (size_t)(gn::stats_offset(*c, chunks) + 2 * c->rows * (c->cols / c->group_size)) * acc;
}
