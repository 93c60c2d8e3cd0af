// Gated norm forward, block-row paths: a block of ROW_BLOCK threads a (row, group), for
// RMSNorm and LayerNorm (no gate, or a gate after it) of groups the register path cannot hold:
// 1025-8192 16-byte vectors, fp32 up to 32768; and fwd_block_row in small blocks for RMSNorm
// groups of 128-1024 vectors (launch_small). launch_fwd_block_row says which kernel takes what.
//
// Why: at N = 16384 the split register path (a cluster of two 512-thread CTAs a row, a
// cp.async ring, a cluster barrier a row) reached 0.90 of the copy ceiling on the H100 and
// torch.compile's kernel (the whole row in one block of 32 warps, two blocks an SM) 0.98.
// Two kernels:
// - fwd_block_row (here): one block an SM. Every load of x is issued at once, before the sum;
//   x stays packed in registers for the output; z and the parameters (L1 / L2 hits) after it.
//   At 32 registers (two blocks an SM) it spilled 64-112 bytes and reached 0.66.
// - fwd_block_row_l2 (gated_norm_fwd_l2.cu): compile's shape, two blocks an SM at 32
//   registers; x is read twice, the second time from L2 (0.98 at 16384 where fwd_block_row
//   reaches 0.93); over a cluster of CTAs for the widest groups.
#include "block_row.cuh"

namespace gn {
namespace {

constexpr int SMALL_SLOTS = 4 * 32;  // launch_small: the vectors a warp holds

// MODE: GATE_NONE or GATE_AFTER (plan.h), a template parameter: gate flags cost registers. P:
// the parameters' dtype (T, or fp32 beside 16-bit rows).
// NV: 16-byte vectors a thread (2, or 4 for groups of 2049-4096 vectors: 12 bytes of spills).
// LayerNorm: one-pass statistics (block_row.cuh) over x held in registers.
// TB < ROW_BLOCK (launch_small): blocks of blockDim.x <= TB threads (whole warps), MINB of
// them an SM, for 16-bit RMSNorm groups of 128-1024 vectors: FLA's fused_norm_gate shape (a
// row a program of <= 8 warps, held in registers).
template <typename T, typename P, int MODE, int ROW_NV, int TB = ROW_BLOCK, int MINB = 1>
__global__ void __launch_bounds__(TB, MINB) fwd_block_row(const gn_fwd_args a, const RowConsts<acc_t<T>> rc) {
  using A = acc_t<T>;
  constexpr int VEC = vec_size<T>();
  const int nthr = TB == ROW_BLOCK ? ROW_BLOCK : (int)blockDim.x;
  const int STEP = nthr * VEC;  // vector j of a thread: column c0 + j * STEP
  __shared__ TeamScratch<1, A> red;
  __shared__ TeamScratch<2, A> red2;
  int phase = 0, phase2 = 0;
  const gn_config& c = a.cfg;
  const int G = (int)c.group_size;  // the launcher: ROW_NV x ROW_BLOCK vectors at most
  const int64_t g = blockIdx.x, col0 = g * G;
  const bool ln = !c.is_rms_norm;  // LayerNorm: one reduction of x - K (above; x in registers)
  static_assert(MODE == GATE_NONE || MODE == GATE_AFTER, "a norm without a gate or with one after it");
  constexpr bool gate = MODE == GATE_AFTER;
  const int c0 = threadIdx.x * VEC;
  const P* const w = a.weight ? static_cast<const P*>(a.weight) + col0 : nullptr;
  const P* const bs = a.bias ? static_cast<const P*>(a.bias) + col0 : nullptr;

  pdl_wait();
#pragma unroll 1
  for (int64_t r = blockIdx.y; r < c.rows; r += gridDim.y) {
    const FwdRow<T> p = fwd_row<T>(a, r, col0);
    Packed<T, VEC> xv[ROW_NV], zv[ROW_NV];
#pragma unroll
    for (int j = 0; j < ROW_NV; ++j) {  // columns past G read as zeros (G % VEC == 0)
      xv[j].u[0] = load_raw<T>(p.x, c0 + j * STEP, G);
    }
    A mean = 0, var = 0;
    bool have_var = false;
    if (ln) {
      const A k = one_pass_shift<T, VEC>(p.x);
      A m[2] = {0, 0};
#pragma unroll
      for (int j = 0; j < ROW_NV; ++j) {
        if (c0 + j * STEP >= G) continue;  // the zeros past G are not x - K
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          const A v = to_acc<T>(xv[j].e[i]) - k;
          m[0] += v;
          m[1] += v * v;
        }
      }
      team_sum<2>(m, nthr, red2, phase2);
      A v1;
      if (one_pass_moments(m[0], m[1], k, rc.inv_g, mean, v1)) {  // uniform: the same sums in every thread
        var = v1;
        have_var = true;
      }
    }
    if (!have_var) {
      A s[1] = {0};
#pragma unroll
      for (int j = 0; j < ROW_NV; ++j) {
        if (c0 + j * STEP >= G) continue;  // the zeros past G are not (0 - mean)^2
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          const A v = to_acc<T>(xv[j].e[i]) - mean;
          s[0] += v * v;
        }
      }
      team_sum<1>(s, nthr, red, phase);
      var = s[0] * rc.inv_g;
    }
    const A rstd = rsqrt_acc(var + rc.eps);
#pragma unroll
    for (int j = 0; j < ROW_NV; ++j) {  // z of a gate after the norm: only now
      if (gate) zv[j].u[0] = load_raw<T>(p.z, c0 + j * STEP, G);
    }
#pragma unroll
    for (int j = 0; j < ROW_NV; ++j) {
      const int cj = c0 + j * STEP;
      if (cj >= G) continue;
      Packed<P, VEC> wp, bp;
      Packed<T, VEC> ov;
      if (w) wp.load(w + cj);
      if (bs) bp.load(bs + cj);
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        const A az = gate ? act_fwd(to_acc<T>(zv[j].e[i]), c.act) : A(1);
        const A xi = to_acc<T>(xv[j].e[i]) - mean;
        A y = xi * rstd;
        if (w) y *= (A)to_acc<P>(wp.e[i]);
        if (bs) y += (A)to_acc<P>(bp.e[i]);
        ov.e[i] = from_acc<T>(y * az);
      }
      ov.store(p.out + cj);
    }
    if (threadIdx.x == 0) store_stats<A>(a, g, r, mean, rstd);
  }
  pdl_trigger();
}

// Blocks of ROW_BLOCK threads, or (launch_small) `threads` of at most TB, MINB an SM.
template <typename T, typename P, int NV, int TB = ROW_BLOCK, int MINB = 1>
gn_status launch(const gn_fwd_args& a, const DeviceInfo& dev, cudaStream_t s, int threads = ROW_BLOCK) {
  const int64_t ngroups = a.cfg.cols / a.cfg.group_size;
  const dim3 grid((unsigned)ngroups, (unsigned)(a.cfg.rows < 65535 ? a.cfg.rows : 65535));
  const auto rc = row_consts<acc_t<T>>(a.cfg);
  const char* what = TB == ROW_BLOCK ? "gated_norm forward (block-row) launch"
                                     : "gated_norm forward (block-row, small blocks) launch";
  if (a.z)
    return launch_pdl(fwd_block_row<T, P, GATE_AFTER, NV, TB, MINB>, grid, threads, 0, s, dev, what, 1, a, rc);
  if constexpr (sizeof(T) == 2 && TB == ROW_BLOCK) {  // 16-bit rows without a gate take fwd_block_row_l2
    return GN_ERR_UNSUPPORTED;
  } else {
    return launch_pdl(fwd_block_row<T, P, GATE_NONE, NV, TB, MINB>, grid, threads, 0, s, dev, what, 1, a, rc);
  }
}

// Four vectors a thread, blocks of up to 256 threads, four an SM: a block a (row, group),
// as FLA's fused_norm_gate runs them. The register path it replaces there packs a team of
// up to 8 warps a row and loops over rows on a persistent grid; here the hardware's block
// scheduler keeps more rows in flight. H100 forward as landed, GATEDNORM_FWD_SMALL 1 / 0
// interleaved, two runs each (thirty-third session, docs/data/h100_2026-12-07_session33.txt):
// odd_n5000 bf16 0.893 -> 0.929, fp16 0.894 -> 0.930 (its 625 vectors made a 320-thread team,
// one row a block, two blocks an SM), sweep_n1024 - n8192 +0.1-0.7 %, rms_noz_4096 level.
// One vector a thread (blocks of 160 threads for odd_n1200's 150 vectors) lost: 0.92 -> 0.72.
static int small_threads(int64_t nvec) { return (int)((nvec + SMALL_SLOTS - 1) / SMALL_SLOTS) * 32; }

template <typename T>
gn_status launch_small(const gn_fwd_args& a, int64_t nvec, const DeviceInfo& dev, cudaStream_t s) {
  return launch<T, T, 4, 256, 4>(a, dev, s, small_threads(nvec));
}

// Where fwd_block_row's grid (x: the groups, y: the rows, a block a (row, group)) fits and
// pays: two waves of blocks (fewer: the split path spreads a row over a cluster's SMs), and
// parameters whole-vector loads can read (16-byte aligned).
static bool block_grid_fits(const gn_fwd_args& a, int64_t ngroups, const DeviceInfo& dev) {
  const gn_config& c = a.cfg;
  return c.rows * ngroups >= 2LL * dev.sms && ngroups <= 65535 && c.rows <= 0x7fffffff &&
         (uintptr_t)a.weight % 16 == 0 && (uintptr_t)a.bias % 16 == 0;
}

// Whether launch_small takes these groups: RMSNorm, a gate after or none, parameters of the
// rows' dtype (16-byte aligned), two waves of blocks, 128-1024 vectors that leave (16-bit)
// less than a warp's vector of the block's four-a-thread slots empty (more idle a warp on its
// last vectors: odd_n1200's 150 vectors in 256 slots lost, 0.923 -> 0.908), or (fp32) fill
// three quarters of them or more (forced, thirty-third session: rms_z_4096 1.011 -> 1.021,
// sweep_n4096 0.996 -> 1.008, odd_n1200's 300 vectors in 384 slots 0.980 -> 0.990).
// GATEDNORM_FWD_SMALL (read once): 0 keeps the register path everywhere, 2 takes any fill too,
// for comparisons.
static bool small_fits(const gn_fwd_args& a, int64_t nvec, int64_t ngroups, bool mixed, const DeviceInfo& dev) {
  static const int mode = [] {
    const char* e = getenv("GATEDNORM_FWD_SMALL");
    return e ? atoi(e) : 1;
  }();
  const gn_config& c = a.cfg;
  const int64_t slots = 4LL * small_threads(nvec), empty = slots - nvec;
  const bool measured = gn_dtype_size(c.dtype) == 2 ? empty < 32 : 4 * empty <= slots;
  return (mode == 2 || (mode == 1 && measured)) && c.is_rms_norm && !mixed && nvec >= 128 && nvec <= 1024 &&
         block_grid_fits(a, ngroups, dev);
}

template <typename T>
gn_status launch_nv(const gn_fwd_args& a, int nv, const DeviceInfo& dev, cudaStream_t s) {
  return nv == 2 ? launch<T, T, 2>(a, dev, s) : launch<T, T, 4>(a, dev, s);
}

// GATEDNORM_FWD_BLOCK_ROW=0 (read once) sends these groups back to the split path, for
// comparisons.
static bool block_row_on() {
  static const bool on = knob_on("GATEDNORM_FWD_BLOCK_ROW");
  return on;
}

}  // namespace

// Which groups take which kernel; each range measured on the H100 against the split path
// (forward, fraction of the copy ceiling; docs/benchmarks.md, twenty-third session):
// - 16-bit rows, parameters of their dtype, 1025-2048 vectors (8K-16K), a gate after:
//   fwd_block_row_l2 (sweep_n16384 0.89 -> 0.98; fwd_block_row 0.93); no gate: the same
//   kernel without z (rms_noz_16384 0.88 -> 0.92; fwd_block_row 0.79: one block an SM
//   keeps only x's bytes in flight);
// - 16-bit rows, fp32 parameters, 1025-2048 vectors, a gate after: a weight alone,
//   fwd_block_row_l2 (mixed_16384 0.89 -> 0.98; fwd_block_row 0.93); with a bias,
//   fwd_block_row (not measured apart: ptxas, 61-63 registers, no spills);
// - 16-bit rows, a gate after, 2049-4096 vectors (16K-32K): fwd_block_row, four vectors a
//   thread (sweep_n32768 0.86 -> 0.96);
// - fp32 rows, no gate or a gate after, 1025-4096 vectors (4K-16K): fwd_block_row
//   (sweep_n8192 / 16384 0.92 / 0.90 -> 0.99; rms_noz_16384 0.89 -> 0.97);
// - a gate after, a weight of the rows' dtype and no bias, 4097-8192 vectors (16-bit
//   32K-64K, fp32 16K-32K): fwd_block_row_l2 over a cluster of four CTAs (try_l2_cluster;
//   twenty-fourth session: sweep_n65536 bf16 0.829 -> 0.847, sweep_n32768 fp32 0.875 ->
//   0.910); 8193-16384 vectors (16-bit 64K-128K, fp32 32K-64K): over eight (twenty-seventh
//   session: sweep_n131072 bf16 0.834 -> 0.898); fp32, 16385-32768 vectors (128K): over
//   sixteen (sweep_n131072 0.695 -> 0.802).
// - LayerNorm, a gate after or none (16-bit rows: after only), 1025-4096 vectors:
//   fwd_block_row, its statistics over x held in registers (twenty-fifth session, H100,
//   against the split path: ln_bias_z_16384 fp32 0.885 -> 0.986, bf16 0.826 -> 0.844;
//   ln_bias_z_8192 fp32 0.920 -> 0.931); 16-bit rows of 1025-2048 vectors with a weight of
//   their dtype: fwd_block_row_l2, two blocks an SM (twenty-seventh session:
//   ln_bias_z_16384 bf16 0.841 -> 0.951, fp16 0.859 -> 0.948).
// Not here (the split path): a gate before the norm (z is in the statistics), what was not
// measured (16-bit rows without a gate: with fp32 parameters, or 2049-4096 vectors; 16-bit
// rows with fp32 parameters at 2049-4096 vectors), and fewer than two waves of (row, group)
// blocks (the split path spreads a row over a cluster's SMs). Parameters must be 16-byte
// aligned (whole-vector loads). Tried and dropped: fwd_block_row_l2 at 4-16 vectors a
// thread (16K-128K 16-bit rows): 0.93 / 0.82 / 0.73 at 32K / 64K / 128K against 0.95 /
// 0.83 / 0.83.
gn_status launch_fwd_block_row(const gn_fwd_args& a, bool aligned, const DeviceInfo& dev, cudaStream_t s, bool* done) {
  *done = false;
  const gn_config& c = a.cfg;
  if (!block_row_on() || !aligned || c.dtype == GN_FLOAT64) return GN_OK;
  const bool ln = !c.is_rms_norm;  // LayerNorm: no cluster (the L2 kernel one block a group, or fwd_block_row)
  const GateMode gm = gate_mode(a.z, c.norm_before_gate);
  const bool half = gn_dtype_size(c.dtype) == 2;
  const bool mixed = (a.weight || a.bias) && c.param_dtype != c.dtype;
  if (gm == GATE_BEFORE || (mixed && !(half && c.param_dtype == GN_FLOAT32))) return GN_OK;
  const int64_t nvec = c.group_size / (16 / (int64_t)gn_dtype_size(c.dtype)), ngroups = c.cols / c.group_size;
  if (small_fits(a, nvec, ngroups, mixed, dev)) {
    *done = true;
    switch (c.dtype) {
      case GN_BFLOAT16: return launch_small<__nv_bfloat16>(a, nvec, dev, s);
      case GN_FLOAT16: return launch_small<__half>(a, nvec, dev, s);
      default: return launch_small<float>(a, nvec, dev, s);
    }
  }
  if (gm == GATE_AFTER && !ln) {
    const gn_status st = try_l2_cluster(a, nvec, dev, s, done);
    if (st != GN_OK || *done) return st;
  }
  if (nvec <= (int64_t)FWD_MAX_TEAM * FWD_MAX_VECS || nvec > 4LL * ROW_BLOCK) return GN_OK;
  if (!block_grid_fits(a, ngroups, dev)) return GN_OK;
  const int nv = nvec <= 2LL * ROW_BLOCK ? 2 : 4;
  // 16-bit rows at four vectors a thread: a gate after and parameters of their dtype only;
  // without a gate: parameters of their dtype only (the L2 kernel)
  if (half && nv == 4 && (gm == GATE_NONE || mixed)) return GN_OK;
  if (half && gm == GATE_NONE && (mixed || ln)) return GN_OK;  // LayerNorm: one block an SM without z (RMSNorm 0.79)
  *done = true;
  if (half && !mixed && nv == 2 && !ln) return launch_l2_rms(a, dev, s);
  if (half && !mixed && nv == 2 && ln && gm == GATE_AFTER && a.weight) return launch_l2_ln(a, dev, s);
  if (half && mixed && nv == 2 && a.weight && !a.bias && !ln)  // (a gate after: no gate returned above)
    return launch_l2_fp32_weight(a, dev, s);
  switch (c.dtype) {  // mixed: two vectors a thread (above)
    case GN_BFLOAT16: return mixed ? launch<__nv_bfloat16, float, 2>(a, dev, s) : launch_nv<__nv_bfloat16>(a, nv, dev, s);
    case GN_FLOAT16: return mixed ? launch<__half, float, 2>(a, dev, s) : launch_nv<__half>(a, nv, dev, s);
    default: return launch_nv<float>(a, nv, dev, s);
  }
}

}  // namespace gn
