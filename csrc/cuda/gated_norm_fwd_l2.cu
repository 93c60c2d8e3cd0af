// Gated norm forward, fwd_block_row_l2: torch.compile's shape for groups of 1025-2048 16-byte
// vectors (16-bit 8K-16K), two blocks of 1024 threads an SM at 32 registers, x read twice (the
// second time from L2: 0.98 of the copy ceiling at 16384 on the H100, where fwd_block_row in
// gated_norm_fwd_row.cu reaches 0.93); over a persistent grid of clusters of four CTAs for
// groups of 4097-8192 vectors, eight for 8193-16384, sixteen for fp32 groups of 16385-32768.
// launch_fwd_block_row (gated_norm_fwd_row.cu) says which groups come here.
#include "block_row.cuh"
#include "cluster.cuh"

namespace gn {
namespace {

// CTAs a group of `nvec` vectors takes in fwd_block_row_l2 over a cluster: the fewest (a
// power of two, for cluster_sum) whose slices fit two vectors a thread.
__host__ __device__ inline int l2_csize(int64_t nvec) {
  int c = 1;
  while ((int64_t)c * 2 * ROW_BLOCK < nvec) c *= 2;
  return c;
}

// Groups of 1025-2048 vectors at two blocks an SM, as torch.compile's kernel (32 registers, 64 warps an
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
    Packed<T, VEC> xs[NV];
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
          Packed<T, VEC> xr;
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
    Packed<T, VEC> xv[NV], zv[NV];
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
      Packed<P, VEC> wp, bp;
      Packed<T, VEC> ov;
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
    // Clusters walk rows (launch_cluster_if_fits' persistent grid); cluster_sum
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
gn_status launch_rms(const gn_fwd_args& a, const DeviceInfo& dev, cudaStream_t s) {
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
gn_status launch_ln(const gn_fwd_args& a, const DeviceInfo& dev, cudaStream_t s) {
  const dim3 grid((unsigned)a.cfg.rows, (unsigned)(a.cfg.cols / a.cfg.group_size));
  const auto rc = row_consts<acc_t<T>>(a.cfg);
  const char* what = "gated_norm forward (block-row, L2, LayerNorm) launch";
  constexpr auto with_bias = fwd_block_row_l2<T, true, true, true, T, false, true>;
  constexpr auto no_bias = fwd_block_row_l2<T, false, true, true, T, false, true>;
  return launch_pdl(a.bias ? with_bias : no_bias, grid, ROW_BLOCK, 0, s, dev, what, 1, a, rc);
}

template <typename T>
gn_status launch_fp32_weight(const gn_fwd_args& a, const DeviceInfo& dev, cudaStream_t s) {
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
gn_status launch_cluster_if_fits(const gn_fwd_args& a, int csize, const DeviceInfo& dev, cudaStream_t s,
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

}  // namespace

gn_status launch_l2_rms(const gn_fwd_args& a, const DeviceInfo& dev, cudaStream_t s) {
  if (a.cfg.dtype == GN_BFLOAT16)
    return a.z ? launch_rms<__nv_bfloat16, true>(a, dev, s) : launch_rms<__nv_bfloat16, false>(a, dev, s);
  return a.z ? launch_rms<__half, true>(a, dev, s) : launch_rms<__half, false>(a, dev, s);
}

gn_status launch_l2_ln(const gn_fwd_args& a, const DeviceInfo& dev, cudaStream_t s) {
  return a.cfg.dtype == GN_BFLOAT16 ? launch_ln<__nv_bfloat16>(a, dev, s) : launch_ln<__half>(a, dev, s);
}

gn_status launch_l2_fp32_weight(const gn_fwd_args& a, const DeviceInfo& dev, cudaStream_t s) {
  return a.cfg.dtype == GN_BFLOAT16 ? launch_fp32_weight<__nv_bfloat16>(a, dev, s)
                                    : launch_fp32_weight<__half>(a, dev, s);
}

gn_status try_l2_cluster(const gn_fwd_args& a, int64_t nvec, const DeviceInfo& dev, cudaStream_t s, bool* done) {
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
    case GN_BFLOAT16: return launch_cluster_if_fits<__nv_bfloat16>(a, csize, dev, s, done);
    case GN_FLOAT16: return launch_cluster_if_fits<__half>(a, csize, dev, s, done);
    default: return launch_cluster_if_fits<float>(a, csize, dev, s, done);
  }
}

}  // namespace gn
