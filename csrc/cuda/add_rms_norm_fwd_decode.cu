// Fused add + RMSNorm forward for few rows (decode): a block per row, every block
// resident at once. Latency, not bandwidth: the time is the instruction path of one
// warp from its first load to its last store. Nsight Compute, M = 1, N = 2048 bf16,
// one cold call: the register-path kernel (cp.async ring, weight staged into planar
// shared memory through a dtype switch, run-time team indexing) ran 5.2 us at ~800
// instructions a warp, FlashInfer's 4.5 us at ~260. Here every load of the row
// (residual, x, w) is issued at once and held packed, and the block reduces once.
// A thread holds one vector of the row: blockDim.x * VEC >= cols.
#include <type_traits>

#include "add_rms_norm.cuh"

namespace gn {
namespace {
using namespace an;

// One vector a thread (bf16 rows up to 8192, fp32 up to 4096): two spilled at 1024
// threads (64 registers); longer rows take the streaming kernel.
constexpr int DECODE_MAX_THREADS = 1024;

// Can weights of dtype P be read as whole 16-byte words per VEC-element vector?
template <typename P, int VEC>
__host__ __device__ constexpr bool packs() { return (VEC * sizeof(P)) % 16 == 0; }

template <typename T, typename R, typename P>
__device__ __forceinline__ void decode_row(const gn_addnorm_fwd_args& a, TeamScratch<1, acc_t<T>>& red) {
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
  const A rstd = rsqrt_acc(ss[0] / (A)N + (A)c.eps);
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

// Rows aligned as the register path's (aligned_rows) and a weight that packs (or none:
// then `wdt` is T's dtype); blockDim.x * VEC >= cols, blockDim.x whole warps.
template <typename T, typename R>
__global__ void __launch_bounds__(DECODE_MAX_THREADS) an_fwd_decode(const gn_addnorm_fwd_args a, gn_dtype wdt) {
  __shared__ TeamScratch<1, acc_t<T>> red;
  constexpr int VEC = vec_of<T, R>();
  pdl_wait();
  // Every block of this grid is running (one wave): the next kernel may start launching
  // now; its blocks wait in pdl_wait until this grid has finished.
  pdl_trigger();
  switch (wdt) {
    case GN_BFLOAT16:
      if constexpr (packs<__nv_bfloat16, VEC>()) decode_row<T, R, __nv_bfloat16>(a, red);
      break;
    case GN_FLOAT16:
      if constexpr (packs<__half, VEC>()) decode_row<T, R, __half>(a, red);
      break;
    case GN_FLOAT32:
      if constexpr (packs<float, VEC>()) decode_row<T, R, float>(a, red);
      break;
    default:
      if constexpr (packs<double, VEC>()) decode_row<T, R, double>(a, red);
      break;
  }
}

template <typename T> __host__ __device__ constexpr gn_dtype dtype_of() {
  return sizeof(T) == 8 ? GN_FLOAT64 : sizeof(T) == 4 ? GN_FLOAT32
                        : (std::is_same<T, __half>::value ? GN_FLOAT16 : GN_BFLOAT16);
}

template <typename T, typename R>
gn_status launch(const gn_addnorm_fwd_args& a, int threads, gn_dtype wdt, const DeviceInfo& dev,
                 cudaStream_t s, bool* done) {
  constexpr auto kernel = an_fwd_decode<T, R>;
  // One wave: with more rows than resident blocks the streaming kernel wins.
  if (a.cfg.rows > (int64_t)resident_blocks<kernel>(threads, 0) * dev.sms) return GN_OK;
  *done = true;
  return launch_pdl(kernel, dim3((unsigned)a.cfg.rows), threads, 0, s, dev, "add_rms_norm forward (decode) launch", 1,
                    a, wdt);
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
    if ((VEC * (int)gn_dtype_size(wdt)) % 16) return;  // a weight that does not pack
    const int64_t nvec = c.cols / VEC;  // aligned: whole vectors
    if (nvec > DECODE_MAX_THREADS) return;
    st = launch<T, R>(a, (int)(nvec + 31) / 32 * 32, wdt, dev, s, done);
  });
  return st;
}

}  // namespace gn
