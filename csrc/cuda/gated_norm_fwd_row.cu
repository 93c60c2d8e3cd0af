// Gated norm forward, block-row path: a block of ROW_BLOCK threads a (row, group), two
// 16-byte vectors a thread, a non-persistent grid. For RMSNorm with a gate after it, of
// 16-bit rows whose groups the register path cannot hold: 1025-2048 vectors, 8K-16K
// elements (launch_fwd_block_row says when).
//
// Why: at N = 16384 the split register path (a cluster of two 512-thread CTAs a row, a
// cp.async ring, a cluster barrier a row) reached 0.90 of the copy ceiling on the H100 and
// torch.compile's kernel (the whole row in one block of 32 warps) 0.98. This kernel: 0.92
// (sweep_n16384 148.3 -> 144.3 us, docs/benchmarks.md, twenty-second session). Every load of
// x is issued at once, before the sum; x stays packed in registers for the output; z of a
// gate after the norm and the parameters (L1 / L2 hits: every row reads the same ones) are
// loaded after it. Compiled for two blocks an SM (32 registers, as compile's kernel) it
// spilled 64-112 bytes and reached 0.66: one block an SM, 59-60 registers, no spills.
#include "gated_norm_fwd.cuh"

namespace gn {
namespace {

constexpr int ROW_BLOCK = 1024, ROW_NV = 2;

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
// the parameters' dtype (so far T: fp32 parameters beside 16-bit rows, the register path's
// mixed case, have not run on a GPU here and keep the split path).
template <typename T, typename P, int MODE>
__global__ void __launch_bounds__(ROW_BLOCK, 1) fwd_block_row(const gn_fwd_args a, const RowConsts<acc_t<T>> rc) {
  using A = acc_t<T>;
  constexpr int VEC = vec_size<T>(), STEP = ROW_BLOCK * VEC;  // vector j of a thread: column c0 + j * STEP
  __shared__ TeamScratch<1, A> red;
  int phase = 0;
  const gn_config& c = a.cfg;
  const int G = (int)c.group_size;  // the launcher: 2048 vectors at most
  const int64_t g = blockIdx.x, col0 = g * G;
  static_assert(MODE == GATE_NONE || MODE == GATE_AFTER, "RMSNorm without a gate or with one after it");
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
    A s[1] = {0};
#pragma unroll
    for (int j = 0; j < ROW_NV; ++j)
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        const A v = to_acc<T>(xv[j].e[i]);
        s[0] += v * v;
      }
    team_sum<1>(s, ROW_BLOCK, red, phase);
    const A var = s[0] * rc.inv_g;
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
        const A xi = to_acc<T>(xv[j].e[i]);
        A y = xi * rstd;
        if (w) y *= (A)to_acc<P>(wp.e[i]);
        if (bs) y += (A)to_acc<P>(bp.e[i]);
        ov.e[i] = from_acc<T>(y * az);
      }
      ov.store(p.out + cj);
    }
    if (threadIdx.x == 0) store_stats<A>(a, g, r, A(0), rstd);
  }
  pdl_trigger();
}

template <typename T, typename P>
gn_status launch(const gn_fwd_args& a, const DeviceInfo& dev, cudaStream_t s) {
  const int64_t ngroups = a.cfg.cols / a.cfg.group_size;
  const dim3 grid((unsigned)ngroups, (unsigned)(a.cfg.rows < 65535 ? a.cfg.rows : 65535));
  const auto rc = row_consts<acc_t<T>>(a.cfg);
  const char* what = "gated_norm forward (block-row) launch";
  return launch_pdl(fwd_block_row<T, P, GATE_AFTER>, grid, ROW_BLOCK, 0, s, dev, what, 1, a, rc);
}

// GATEDNORM_FWD_BLOCK_ROW=0 (read once) sends these groups back to the split path, for
// comparisons.
static bool block_row_on() {
  static const bool on = [] {
    const char* e = getenv("GATEDNORM_FWD_BLOCK_ROW");
    return !e || atoi(e) != 0;
  }();
  return on;
}

}  // namespace

gn_status launch_fwd_block_row(const gn_fwd_args& a, bool aligned, const DeviceInfo& dev, cudaStream_t s, bool* done) {
  *done = false;
  const gn_config& c = a.cfg;
  // 16-bit rows only: fp32's 4K-8K groups were not measured here (they keep the split path).
  if (!block_row_on() || !aligned || gn_dtype_size(c.dtype) != 2 || !c.is_rms_norm) return GN_OK;
  // A gate after the norm only, so far: the kernel is written for no gate too (MODE), but
  // that instantiation has not run on a GPU here.
  if (gate_mode(a.z, c.norm_before_gate) != GATE_AFTER) return GN_OK;
  const int64_t nvec = c.group_size / 8, ngroups = c.cols / c.group_size;
  // Groups the register path cannot hold (more than FWD_MAX_TEAM x FWD_MAX_VECS vectors) and
  // this block can; at least two waves of them (fewer rows: the split path spreads a row over
  // a cluster's SMs). Measured at 4096 rows (31 waves) only.
  if (nvec <= (int64_t)FWD_MAX_TEAM * FWD_MAX_VECS || nvec > (int64_t)ROW_BLOCK * ROW_NV) return GN_OK;
  if (c.rows * ngroups < 2LL * dev.sms || ngroups > 0x7fffffff) return GN_OK;
  if ((uintptr_t)a.weight % 16 || (uintptr_t)a.bias % 16) return GN_OK;  // whole-vector parameter loads
  if ((a.weight || a.bias) && c.param_dtype != c.dtype) return GN_OK;
  *done = true;
  return c.dtype == GN_BFLOAT16 ? launch<__nv_bfloat16, __nv_bfloat16>(a, dev, s) : launch<__half, __half>(a, dev, s);
}

}  // namespace gn
