// Gated norm forward, block-row paths: a block of ROW_BLOCK threads a (row, group) (over a
// cluster: clusters walking the rows), for RMSNorm and LayerNorm (no gate, or a gate after
// it) of groups the register path cannot hold: 1025-8192 16-byte vectors, fp32 up to 32768
// (launch_fwd_block_row says which kernel takes what); and fwd_block_row in small blocks for
// RMSNorm groups of 128-1024 vectors (launch_small).
//
// Why: at N = 16384 the split register path (a cluster of two 512-thread CTAs a row, a
// cp.async ring, a cluster barrier a row) reached 0.90 of the copy ceiling on the H100 and
// torch.compile's kernel (the whole row in one block of 32 warps, two blocks an SM) 0.98.
// Two kernels here:
// - fwd_block_row: one block an SM. Every load of x is issued at once, before the sum; x
//   stays packed in registers for the output; z and the parameters (L1 / L2 hits) after it.
//   At 32 registers (two blocks an SM) it spilled 64-112 bytes and reached 0.66.
// - fwd_block_row_l2: compile's shape, two blocks an SM at 32 registers; x is read twice,
//   the second time from L2 (0.98 at 16384 where fwd_block_row reaches 0.93); over a cluster
//   of four CTAs for groups of 4097-8192 vectors, sixteen for fp32 groups of 16385-32768.
#include "cluster.cuh"
#include "gated_norm_fwd.cuh"

namespace gn {
namespace {

constexpr int ROW_BLOCK = 1024;
constexpr int SMALL_SLOTS = 4 * 32;  // launch_small: the vectors a warp holds

// CTAs a group of `nvec` vectors takes in fwd_block_row_l2 over a cluster: the fewest (a
// power of two, for cluster_sum) whose slices fit two vectors a thread.
__host__ __device__ inline int l2_csize(int64_t nvec) {
  int c = 1;
  while ((int64_t)c * 2 * ROW_BLOCK < nvec) c *= 2;
  return c;
}

// VEC elements of E as whole 16-byte words.
template <typename E, int VEC>
union Packed16 {
  static constexpr int NU = VEC * (int)sizeof(E) / 16;
  uint4 u[NU];
  E e[VEC];
  __device__ __forceinline__ void load(const E* p) {
#pragma unroll
    for (int k = 0; k < NU; ++k) u[k] = __ldg(reinterpret_cast<const uint4*>(p) + k);
  }
  __device__ __forceinline__ void store(E* p) const {
#pragma unroll
    for (int k = 0; k < NU; ++k) reinterpret_cast<uint4*>(p)[k] = u[k];
  }
};

// MODE: GATE_NONE or GATE_AFTER (plan.h), a template parameter: gate flags cost registers. P:
// the parameters' dtype (T, or fp32 beside 16-bit rows).
// NV: 16-byte vectors a thread (2, or 4 for groups of 2049-4096 vectors: 12 bytes of spills).
// LayerNorm: the mean and the variance from one block reduction, of x - K and
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
  Packed16<T, VEC> first;
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
    Packed16<T, VEC> xv[ROW_NV], zv[ROW_NV];
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
      Packed16<P, VEC> wp, bp;
      Packed16<T, VEC> ov;
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

// The same rows at two blocks an SM, as torch.compile's kernel (32 registers, 64 warps an
// SM): x is read twice, kept in L2 by the first read (evict_last) and re-read for the output
// (evict_first, with z), so no value lives across the sum but the sum itself. One row a block
// (grid: rows x groups). HB / HW: bias / weight present (template parameters: at 32
// registers a predicated load still holds its registers). HZ: a gate after the norm (else
// none). P: the parameters' dtype (fp32 beside 16-bit rows: a weight only). ptxas, sm_90:
// 26-32 registers, no spills.
// CL: a group cut into l2_csize slices (four or sixteen: try_l2_cluster), one per CTA of a
// cluster along x (grid: rows x csize, groups), its sum finished by cluster_sum. Each CTA's x
// in L2 stays one slice (32 KB), as at 16K, where one block over a 64K row (four vectors a
// thread and more) kept 128 KB a block and reached 0.82.
// LN: LayerNorm, its mean and variance from one sum of x - K and (x - K)^2 as fwd_block_row's
// (K the mean of the group's first vector; the fallback to the variance about the mean
// re-reads x from L2), one block a group (not CL); with a bias 12-16 bytes of spills (ptxas),
// still two blocks an SM: ln_bias_z_16384 0.84 -> 0.95 against fwd_block_row.
template <typename T, bool HB, bool HW, bool HZ = true, typename P = T, bool CL = false, bool LN = false>
__global__ void __launch_bounds__(ROW_BLOCK, 2) fwd_block_row_l2(const gn_fwd_args a, const RowConsts<acc_t<T>> rc) {
  using A = acc_t<T>;
  constexpr int VEC = vec_size<T>(), STEP = ROW_BLOCK * VEC, NV = 2, NS = LN ? 2 : 1;
  static_assert(!(LN && CL), "LayerNorm: one block a group");
  __shared__ TeamScratch<NS, A> red;
  __shared__ TeamScratch<1, A> red1;  // LN's fallback
  __shared__ ClusterScratch<1, A> cred;
  int phase = 0, phase1 = 0, calls = 0;
  const int csize = CL ? l2_csize(a.cfg.group_size / VEC) : 1;
  const int G = (int)(a.cfg.group_size / csize);  // this CTA's columns: NV x ROW_BLOCK vectors at most
  const int64_t g = blockIdx.y;
  const int rank = CL ? (int)(blockIdx.x % csize) : 0;  // clusters run along x
  const int64_t col0 = g * a.cfg.group_size + (int64_t)rank * G;
  const int c0 = threadIdx.x * VEC;
  const P* w = HW ? static_cast<const P*>(a.weight) + col0 : nullptr;
  const P* bs = HB ? static_cast<const P*>(a.bias) + col0 : nullptr;
  pdl_wait();
  auto row = [&](int64_t r, bool last) {
    const T* x = static_cast<const T*>(a.x) + r * a.x_stride + col0;
    Packed16<T, VEC> xs[NV];
#pragma unroll
    for (int j = 0; j < NV; ++j) xs[j].u[0] = c0 + j * STEP < G ? ld_keep_l2(x + c0 + j * STEP) : make_uint4(0, 0, 0, 0);
    // under the first loads: the CTAs' mbarriers exist before any sends
    if (CL && calls == 0) cluster_sum_init(cred, csize);
    const A k = LN ? one_pass_shift<T, VEC>(x) : A(0);
    A s[NS] = {};
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      if (LN && c0 + j * STEP >= G) continue;  // the zeros past G are not x - K
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        const A v = to_acc<T>(xs[j].e[i]) - k;
        if (LN) s[0] += v;
        s[NS - 1] += v * v;
      }
    }
    team_sum<NS>(s, ROW_BLOCK, red, phase);
    if constexpr (CL) {
      cluster_sum<1>(s, csize, cred, calls);
      // After the last sum nothing addresses another CTA (each received every partial): the
      // exit barrier goes there, before the output's stores, whose completion a barrier at
      // the end would wait for (barrier.cluster's release: a GPU-wide fence).
      if (last) cluster_exit(csize);
    }
    A mean = 0, var = s[NS - 1] * rc.inv_g;
    if (LN) {
      if (!one_pass_moments(s[0], s[NS - 1], k, rc.inv_g, mean, var)) {  // uniform: the same sums in every thread
        A q[1] = {0};
#pragma unroll
        for (int j = 0; j < NV; ++j) {
          if (c0 + j * STEP >= G) continue;
          Packed16<T, VEC> xr;
          xr.u[0] = ld_keep_l2(x + c0 + j * STEP);
#pragma unroll
          for (int i = 0; i < VEC; ++i) {
            const A v = to_acc<T>(xr.e[i]) - mean;
            q[0] += v * v;
          }
        }
        team_sum<1>(q, ROW_BLOCK, red1, phase1);
        var = q[0] * rc.inv_g;
      }
    }
    const A rstd = rsqrt_acc(var + rc.eps);
    const T* z = HZ ? static_cast<const T*>(a.z) + r * a.z_stride + col0 : nullptr;
    T* out = static_cast<T*>(a.out) + r * a.out_stride + col0;
    Packed16<T, VEC> xv[NV], zv[NV];
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int cj = c0 + j * STEP;
      xv[j].u[0] = cj < G ? ld_last_l2(x + cj) : make_uint4(0, 0, 0, 0);
      if (HZ) zv[j].u[0] = cj < G ? ld_last_l2(z + cj) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int cj = c0 + j * STEP;
      if (cj >= G) continue;
      Packed16<P, VEC> wp, bp;
      Packed16<T, VEC> ov;
      if (HW) wp.load(w + cj);
      if (HB) bp.load(bs + cj);
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        A y = (to_acc<T>(xv[j].e[i]) - mean) * rstd;
        if (HW) y *= (A)to_acc<P>(wp.e[i]);
        if (HB) y += (A)to_acc<P>(bp.e[i]);
        ov.e[i] = from_acc<T>(HZ ? y * act_fwd(to_acc<T>(zv[j].e[i]), a.cfg.act) : y);
      }
      ov.store(out + cj);
    }
    if (threadIdx.x == 0 && rank == 0) {
      if (LN) store_stats<A>(a, g, r, mean, rstd);
      else if (a.rstd) static_cast<A*>(a.rstd)[g * a.cfg.rows + r] = rstd;
    }
  };
  if constexpr (CL) {
    // Clusters walk rows (launch_l2_cluster_if_fits' persistent grid); cluster_sum
    // alternates its slot sets call by call, the exit barrier follows each cluster's last sum.
    const int64_t step = gridDim.x / csize;
#pragma unroll 1
    for (int64_t r = blockIdx.x / csize; r < a.cfg.rows; r += step) row(r, r + step >= a.cfg.rows);
  } else {
    row(blockIdx.x, true);
  }
  pdl_trigger();
}

template <typename T, bool HZ>
gn_status launch_l2(const gn_fwd_args& a, const DeviceInfo& dev, cudaStream_t s) {
  const dim3 grid((unsigned)a.cfg.rows, (unsigned)(a.cfg.cols / a.cfg.group_size));
  const auto rc = row_consts<acc_t<T>>(a.cfg);
  const char* what = "gated_norm forward (block-row, L2) launch";
  const int k = (a.bias ? 2 : 0) + (a.weight ? 1 : 0);
  switch (k) {
    case 0: return launch_pdl(fwd_block_row_l2<T, false, false, HZ>, grid, ROW_BLOCK, 0, s, dev, what, 1, a, rc);
    case 1: return launch_pdl(fwd_block_row_l2<T, false, true, HZ>, grid, ROW_BLOCK, 0, s, dev, what, 1, a, rc);
    case 2: return launch_pdl(fwd_block_row_l2<T, true, false, HZ>, grid, ROW_BLOCK, 0, s, dev, what, 1, a, rc);
    default: return launch_pdl(fwd_block_row_l2<T, true, true, HZ>, grid, ROW_BLOCK, 0, s, dev, what, 1, a, rc);
  }
}

// LayerNorm with a weight and a gate after the norm, with or without a bias.
template <typename T>
gn_status launch_l2_ln(const gn_fwd_args& a, const DeviceInfo& dev, cudaStream_t s) {
  const dim3 grid((unsigned)a.cfg.rows, (unsigned)(a.cfg.cols / a.cfg.group_size));
  const auto rc = row_consts<acc_t<T>>(a.cfg);
  const char* what = "gated_norm forward (block-row, L2, LayerNorm) launch";
  constexpr auto with_bias = fwd_block_row_l2<T, true, true, true, T, false, true>;
  constexpr auto no_bias = fwd_block_row_l2<T, false, true, true, T, false, true>;
  return launch_pdl(a.bias ? with_bias : no_bias, grid, ROW_BLOCK, 0, s, dev, what, 1, a, rc);
}

template <typename T>
gn_status launch_l2_fp32_weight(const gn_fwd_args& a, const DeviceInfo& dev, cudaStream_t s) {
  const dim3 grid((unsigned)a.cfg.rows, (unsigned)(a.cfg.cols / a.cfg.group_size));
  return launch_pdl(fwd_block_row_l2<T, false, true, true, float>, grid, ROW_BLOCK, 0, s, dev,
                    "gated_norm forward (block-row, L2) launch", 1, a, row_consts<acc_t<T>>(a.cfg));
}

// Launches when a cluster of csize fits the device at once (*done), else leaves the group
// to the split path. A persistent grid: the clusters resident at once walk the rows. A
// cluster a row paid each row a cluster launch (a GPC with csize free CTA slots at once) and
// the exit barrier's wait; walking, once a CTA (twenty-fifth session, H100: sweep_n65536
// bf16 0.857 -> 0.912, sweep_n131072 fp32 0.773 -> 0.936).
template <typename T>
gn_status launch_l2_cluster_if_fits(const gn_fwd_args& a, int csize, const DeviceInfo& dev, cudaStream_t s,
                                    bool* done) {
  constexpr auto kernel = fwd_block_row_l2<T, false, true, true, T, true>;
  const int64_t resident = resident_clusters<kernel>(ROW_BLOCK, 0, csize);
  if (resident == 0) return GN_OK;
  *done = true;
  const int64_t ngroups = a.cfg.cols / a.cfg.group_size;
  const int64_t per_group = resident / ngroups > 0 ? resident / ngroups : 1;
  const int64_t clusters = per_group < a.cfg.rows ? per_group : a.cfg.rows;
  const dim3 grid((unsigned)(clusters * csize), (unsigned)ngroups);
  return launch_pdl(kernel, grid, ROW_BLOCK, 0, s, dev, "gated_norm forward (block-row, L2, cluster) launch", csize,
                    a, row_consts<acc_t<T>>(a.cfg));
}

template <typename T>
gn_status launch_l2_gate(const gn_fwd_args& a, const DeviceInfo& dev, cudaStream_t s) {
  return a.z ? launch_l2<T, true>(a, dev, s) : launch_l2<T, false>(a, dev, s);
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

static gn_status try_l2_cluster(const gn_fwd_args& a, int64_t nvec, const DeviceInfo& dev, cudaStream_t s, bool* done) {
  const gn_config& c = a.cfg;
  const int vec = 16 / (int)gn_dtype_size(c.dtype), csize = l2_csize(nvec);
  const int64_t ngroups = c.cols / c.group_size;
  // Four CTAs: at two (16-bit 16K-32K) fwd_block_row holds the row in registers (0.954
  // against 0.898). Eight (16-bit 128K, fp32 64K): a cluster a row lost to the split path
  // (0.799 / 0.878 against 0.834 / 0.885); on the persistent grid it wins (twenty-seventh
  // session, H100: sweep_n131072 bf16 0.834 -> 0.898, fp16 0.846 -> 0.908, sweep_n65536
  // fp32 0.883 -> 0.924). Sixteen for fp32 16385-32768 vectors (128K), where the split
  // register path cannot take a slice: 0.802 against the split loop path's 0.695 (16-bit
  // rows of 256K, not measured, stay there).
  const bool four = nvec > 4LL * ROW_BLOCK && nvec <= 8LL * ROW_BLOCK;
  const bool eight = nvec > 8LL * ROW_BLOCK && nvec <= 16LL * ROW_BLOCK;
  const bool sixteen = c.dtype == GN_FLOAT32 && nvec > 16LL * ROW_BLOCK && nvec <= 32LL * ROW_BLOCK;
  if (!four && !eight && !sixteen) return GN_OK;
  if (c.group_size % ((int64_t)csize * vec) || !a.z || !a.weight || a.bias || c.param_dtype != c.dtype) return GN_OK;
  if (dev.major < 9 || !built_for_clusters() || (uintptr_t)a.weight % 16) return GN_OK;
  if (c.rows * ngroups * csize < 2LL * dev.sms || ngroups > 65535 || c.rows * csize > 0x7fffffff) return GN_OK;
  switch (c.dtype) {
    case GN_BFLOAT16: return launch_l2_cluster_if_fits<__nv_bfloat16>(a, csize, dev, s, done);
    case GN_FLOAT16: return launch_l2_cluster_if_fits<__half>(a, csize, dev, s, done);
    default: return launch_l2_cluster_if_fits<float>(a, csize, dev, s, done);
  }
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
  if (half && !mixed && nv == 2 && !ln)
    return c.dtype == GN_BFLOAT16 ? launch_l2_gate<__nv_bfloat16>(a, dev, s) : launch_l2_gate<__half>(a, dev, s);
  if (half && !mixed && nv == 2 && ln && gm == GATE_AFTER && a.weight)
    return c.dtype == GN_BFLOAT16 ? launch_l2_ln<__nv_bfloat16>(a, dev, s) : launch_l2_ln<__half>(a, dev, s);
  if (half && mixed && nv == 2 && a.weight && !a.bias && !ln)  // (a gate after: no gate returned above)
    return c.dtype == GN_BFLOAT16 ? launch_l2_fp32_weight<__nv_bfloat16>(a, dev, s)
                                  : launch_l2_fp32_weight<__half>(a, dev, s);
  switch (c.dtype) {  // mixed: two vectors a thread (above)
    case GN_BFLOAT16: return mixed ? launch<__nv_bfloat16, float, 2>(a, dev, s) : launch_nv<__nv_bfloat16>(a, nv, dev, s);
    case GN_FLOAT16: return mixed ? launch<__half, float, 2>(a, dev, s) : launch_nv<__half>(a, nv, dev, s);
    default: return launch_nv<float>(a, nv, dev, s);
  }
}

}  // namespace gn
