// Fused add + RMSNorm forward, a block per row: for few rows (decode; every block resident
// at once) and, with the add, for any number of rows (decode_waves). For few rows the
// cost is latency, not bandwidth: the time is the instruction path of one
// warp from its first load to its last store. Nsight Compute, M = 1, N = 2048 bf16,
// one cold call: the register-path kernel (cp.async ring, weight staged into planar
// shared memory through a dtype switch, run-time team indexing) ran 5.2 us at ~800
// instructions a warp, FlashInfer's 4.5 us at ~260. Here every load of the row
// (residual, x, w) is issued at once and held packed, and the block reduces once.
// A thread holds one vector of the row: blockDim.x * VEC >= cols.
#include <stdint.h>
#include <stdlib.h>

#include "add_rms_norm.cuh"

namespace gn {
namespace {
using namespace an;

// One vector a thread (bf16 rows up to 8192, fp32 up to 4096); longer rows take the
// streaming kernel.
constexpr int DECODE_MAX_THREADS = 1024;

template <typename T, typename R, typename P>
__device__ __forceinline__ void decode_row(const gn_addnorm_fwd_args& a, const RowConsts<acc_t<T>>& rc,
                                           TeamScratch<1, acc_t<T>>& red) {
  using A = acc_t<T>;
  constexpr int VEC = vec_of<T, R>();
  const gn_addnorm_config& c = a.cfg;
  const int64_t r = blockIdx.x;
  const int N = (int)c.cols, cj = threadIdx.x * VEC;
  const T* x = a.x ? static_cast<const T*>(a.x) + r * a.x_stride : nullptr;
  const R* res = static_cast<const R*>(a.residual) + r * a.residual_stride;
  const P* w = static_cast<const P*>(a.weight);
  Packed<R, VEC> pr;
  Packed<T, VEC> px;
  Packed<P, VEC> pw;
  load_packed<R, VEC>(pr, res, cj, N);
  if (x) load_packed<T, VEC>(px, x, cj, N);
  if (w) load_packed<P, VEC>(pw, w, cj, N);
  A h[VEC], ss[1] = {0};
  unpack<R, VEC>(pr, h);
  if (x) {
    A xv[VEC];
    unpack<T, VEC>(px, xv);
#pragma unroll
    for (int i = 0; i < VEC; ++i) h[i] += xv[i];
  }
#pragma unroll
  for (int i = 0; i < VEC; ++i) {
    h[i] = round_to<R>(h[i]);  // the residual as stored is what gets normalised
    ss[0] += h[i] * h[i];
  }
  if (a.residual_out) store_vec<R, VEC>(static_cast<R*>(a.residual_out) + r * a.residual_out_stride, cj, N, true, h);
  int phase = 0;
  team_sum<1>(ss, blockDim.x, red, phase);
  const A rstd = row_rstd<A>(ss[0], rc);
  A wv[VEC];
  if (w) {
    acc_t<P> wp[VEC];
    unpack<P, VEC>(pw, wp);
#pragma unroll
    for (int i = 0; i < VEC; ++i) wv[i] = (A)wp[i] + (c.gemma ? A(1) : A(0));
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) wv[i] = A(1);  // gemma: 1 + 0
  }
#pragma unroll
  for (int i = 0; i < VEC; ++i) h[i] *= rstd * wv[i];
  store_vec<T, VEC>(static_cast<T*>(a.out) + r * a.out_stride, cj, N, true, h);
  if (threadIdx.x == 0 && a.rstd) static_cast<A*>(a.rstd)[r] = rstd;
}

// Rows aligned as the register path's (aligned_rows), a weight of dtype P (or none: then
// P = T) that packs; blockDim.x * VEC >= cols, blockDim.x whole warps. One weight dtype a
// kernel: with a run-time switch over four the kernel took 48 registers (one block of
// 1024 threads an SM); alone it fits 32 with none spilled, two blocks of 1024 an SM.
// The row's residual and x (and, from block 0, the weight) are asked of L2 before pdl_wait:
// under programmatic dependent launch their DRAM latency then overlaps the previous grid's
// tail. H100 bf16, GPU time per CUDA-graph replay (a chain of calls), off -> on: M = 64
// 1.86 -> 1.65 us (N = 2048), 3.37 -> 2.59 (8192); M = 1 -1.5-2 %; plain RMSNorm M = 64
// N = 8192 2.45 -> 2.27. Only a grid of one wave does it: later blocks start after the
// previous grid is done, with nothing to overlap (not measured there). GATEDNORM_PREFETCH_L2=0
// (read once) turns it off, for measuring.
template <typename T, typename R, typename P>
__device__ __forceinline__ void prefetch_row(const gn_addnorm_fwd_args& a) {
  const int64_t r = blockIdx.x;
  const unsigned n = (unsigned)a.cfg.cols;
  if (threadIdx.x) return;
  prefetch_l2(static_cast<const R*>(a.residual) + r * a.residual_stride, n * (unsigned)sizeof(R));
  if (a.x) prefetch_l2(static_cast<const T*>(a.x) + r * a.x_stride, n * (unsigned)sizeof(T));
  if (a.weight && r == 0) prefetch_l2(a.weight, n * (unsigned)sizeof(P));
}

template <typename T, typename R, typename P>
__global__ void __launch_bounds__(DECODE_MAX_THREADS, 2) an_fwd_decode(const gn_addnorm_fwd_args a,
                                                                            const RowConsts<acc_t<T>> rc,
                                                                            const bool prefetch) {
  __shared__ TeamScratch<1, acc_t<T>> red;
  if (prefetch) prefetch_row<T, R, P>(a);
  pdl_wait();
  // The next kernel may start launching once every block of this grid has passed here;
  // its blocks wait in pdl_wait until this grid has finished.
  pdl_trigger();
  decode_row<T, R, P>(a, rc, red);
}

// Rows beyond one wave of resident blocks: with the add, this kernel still, as FlashInfer
// does (H100 bf16, N = 2048-8192: M = 4096 0.79-0.93 of the copy ceiling vs 0.76-0.89 for
// the streaming kernel, whose 128 KB ring and staged weight hold one block of 512 an SM at
// 8192; M = 65536 0.99-1.00 vs 0.98-0.99). Plain RMSNorm keeps the streaming kernel there
// (M = 65536: 0.82-0.93 here vs 0.97-0.99), and so do rows under 256 threads (not
// measured: a block of one or two warps a row, where the streaming kernel packs several
// rows a block). GATEDNORM_DECODE_WAVES=k (read once) caps both at k waves, for tuning.
static int64_t decode_waves(bool add, int threads) {
  static const long long v = [] {
    const char* e = getenv("GATEDNORM_DECODE_WAVES");
    return e ? atoll(e) : 0LL;
  }();
  return v > 0 ? (int64_t)v : (add && threads >= 256 ? INT64_MAX : 1);
}

template <typename T, typename R, typename P>
gn_status launch(const gn_addnorm_fwd_args& a, int threads, const DeviceInfo& dev, cudaStream_t s, bool* done) {
  constexpr auto kernel = an_fwd_decode<T, R, P>;
  const int64_t waves = decode_waves(a.x != nullptr, threads), resident = (int64_t)resident_blocks<kernel>(threads, 0) * dev.sms;
  if (a.cfg.rows > 0x7fffffff || (a.cfg.rows + resident - 1) / resident > waves) return GN_OK;  // grid.x's limit
  *done = true;
  static const bool prefetch = knob_on("GATEDNORM_PREFETCH_L2");
  return launch_pdl(kernel, dim3((unsigned)a.cfg.rows), threads, 0, s, dev, "add_rms_norm forward (decode) launch", 1,
                    a, row_consts<acc_t<T>>(a.cfg), prefetch && a.cfg.rows <= resident);
}

}  // namespace

gn_status an::launch_fwd_decode(const gn_addnorm_fwd_args& a, bool aligned, const DeviceInfo& dev, cudaStream_t s,
                                bool* done) {
  *done = false;
  const gn_addnorm_config& c = a.cfg;
  if (!aligned || (a.weight && (uintptr_t)a.weight % 16)) return GN_OK;
  gn_status st = GN_OK;
  with_fast_pair(c.dtype, c.residual_dtype, [&](auto t, auto r) {
    using T = typename decltype(t)::type;
    using R = typename decltype(r)::type;
    constexpr int VEC = vec_of<T, R>();
    const gn_dtype wdt = a.weight ? c.param_dtype : dtype_of<T>();
    const int64_t nvec = c.cols / VEC;  // aligned: whole vectors
    if (nvec > DECODE_MAX_THREADS) return;
    const int threads = (int)(nvec + 31) / 32 * 32;
    // The weight in x's dtype, or fp32 beside 16-bit x (it packs: 8 x 4 bytes); other
    // pairs take the streaming kernel.
    if (wdt == dtype_of<T>()) {
      st = launch<T, R, T>(a, threads, dev, s, done);
    } else if constexpr (sizeof(T) == 2) {
      if (wdt == GN_FLOAT32) st = launch<T, R, float>(a, threads, dev, s, done);
    }
  });
  return st;
}

}  // namespace gn
