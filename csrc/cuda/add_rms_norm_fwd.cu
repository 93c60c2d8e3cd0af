// Fused add + RMSNorm forward: h = residual (+ x), rounded to residual's dtype and
// stored as residual_out; out = h * rstd * w'. One launch, each input read once.
// Outputs may alias inputs exactly (in place): every element is read by the
// thread that later writes it, before it writes it, and each row is read and
// written by one team only.
#include "add_rms_norm.cuh"

namespace gn {
namespace {
using namespace an;

// Register path (plan.h, one group per row). Each thread owns columns
// (j * tpg + lt) * VEC + i of its row; the next row's x and residual are
// prefetched (packed) before this row's reduction, as in the gated forward.
template <typename T, typename R, int NV, bool ALIGNED>
__global__ void __launch_bounds__(FWD_MAX_TEAM) an_fwd_regs(const gn_addnorm_fwd_args a, const Layout L) {
  using A = acc_t<T>;
  constexpr int VEC = vec_of<T, R>(), K = NV * VEC;
  __shared__ A red[32];
  extern __shared__ __align__(16) unsigned char dyn[];
  const gn_addnorm_config& c = a.cfg;
  const int rl = threadIdx.x / L.tpg, lt = threadIdx.x % L.tpg;
  const bool team_ok = rl < L.rpi;
  const int64_t N = c.cols, M = c.rows;
  A* sw = reinterpret_cast<A*>(dyn);
  const bool add = a.x != nullptr;

  const int64_t step = (int64_t)gridDim.y * L.rpi;
  Packed<T, VEC> px[NV];
  Packed<R, VEC> pr[NV];
  auto prefetch = [&](int64_t rn) {
    const bool okn = team_ok && rn < M;
    const T* x = static_cast<const T*>(a.x) + (okn ? rn : 0) * a.x_stride;
    const R* res = static_cast<const R*>(a.residual) + (okn ? rn : 0) * a.residual_stride;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int64_t cj = (int64_t)(j * L.tpg + lt) * VEC;
      load_packed<R, VEC>(pr[j], res, cj, okn ? N : 0);
      if (add) load_packed<T, VEC>(px[j], x, cj, okn ? N : 0);
    }
  };
  if (ALIGNED) prefetch((int64_t)blockIdx.y * L.rpi + rl);
  stage_weight<A>(c, a.weight, (int)N, sw);  // after the prefetch: both loads in flight at once

  for (int64_t rb = (int64_t)blockIdx.y * L.rpi; rb < M; rb += step) {
    const int64_t r = rb + rl;
    const bool ok = team_ok && r < M;
    const int64_t lim = ok ? N : 0, rr = ok ? r : 0;  // idle teams read nothing but still reduce
    A h[K];
    if (ALIGNED) {
#pragma unroll
      for (int j = 0; j < NV; ++j) {
        unpack<R, VEC>(pr[j], &h[j * VEC]);
        if (add) {
          A xv[VEC];
          unpack<T, VEC>(px[j], xv);
#pragma unroll
          for (int i = 0; i < VEC; ++i) h[j * VEC + i] += xv[i];
        }
      }
      if (rb + step < M) prefetch(rb + step + rl);
    } else {
      const T* x = static_cast<const T*>(a.x) + rr * a.x_stride;
      const R* res = static_cast<const R*>(a.residual) + rr * a.residual_stride;
#pragma unroll
      for (int j = 0; j < NV; ++j) {
        const int64_t cj = (int64_t)(j * L.tpg + lt) * VEC;
        load_vec<R, VEC>(res, cj, lim, false, &h[j * VEC]);
        if (add) {
          A xv[VEC];
          load_vec<T, VEC>(x, cj, lim, false, xv);
#pragma unroll
          for (int i = 0; i < VEC; ++i) h[j * VEC + i] += xv[i];
        }
      }
    }
    A ss[1] = {0};
#pragma unroll
    for (int k = 0; k < K; ++k) {
      h[k] = round_to<R>(h[k]);  // the residual as stored is what gets normalised
      ss[0] += h[k] * h[k];
    }
    if (a.residual_out) {
      R* ro = static_cast<R*>(a.residual_out) + rr * a.residual_out_stride;
#pragma unroll
      for (int j = 0; j < NV; ++j) store_vec<R, VEC>(ro, (int64_t)(j * L.tpg + lt) * VEC, lim, ALIGNED, &h[j * VEC]);
    }
    team_sum<1>(ss, L.tpg, red);
    const A rstd = rsqrt_acc(ss[0] / (A)N + (A)c.eps);
    T* out = static_cast<T*>(a.out) + rr * a.out_stride;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int64_t cj = (int64_t)(j * L.tpg + lt) * VEC;
      if (cj >= lim) continue;
      A wv[VEC];
      load_smem<A, VEC, ALIGNED>(sw + cj, wv);  // cj < N: in the zero-padded staging
#pragma unroll
      for (int i = 0; i < VEC; ++i) h[j * VEC + i] *= rstd * wv[i];
      store_vec<T, VEC>(out, cj, lim, ALIGNED, &h[j * VEC]);
    }
    if (ok && lt == 0 && a.rstd) static_cast<A*>(a.rstd)[r] = rstd;
  }
}

// Loop path: a block per row, elements one by one (dtypes known at run time).
// h is staged in shared memory when it fits, else read back from residual_out
// (this thread wrote it: a plain load, not the non-coherent cache) or recomputed.
template <typename A>
__global__ void __launch_bounds__(LOOP_BLOCK) an_fwd_loop(const gn_addnorm_fwd_args a, const Layout L) {
  extern __shared__ __align__(16) unsigned char stage_raw[];
  __shared__ A red[32];
  const gn_addnorm_config& c = a.cfg;
  const int64_t N = c.cols, M = c.rows;
  const size_t es = dtype_bytes(c.dtype), rs = dtype_bytes(c.residual_dtype);
  A* sh = reinterpret_cast<A*>(stage_raw);
  for (int64_t r = blockIdx.y; r < M; r += gridDim.y) {
    const void* x = row_of(a.x, r, a.x_stride, es);
    const void* res = row_of(a.residual, r, a.residual_stride, rs);
    void* ro = row_of(a.residual_out, r, a.residual_out_stride, rs);
    void* out = row_of(a.out, r, a.out_stride, es);
    auto h_at = [&](int64_t j) {
      const A v = load_param<A>(res, c.residual_dtype, j) + (x ? load_param<A>(x, c.dtype, j) : A(0));
      return round_as<A>(v, c.residual_dtype);
    };
    A ss[1] = {0};
    for (int64_t j = threadIdx.x; j < N; j += blockDim.x) {
      const A h = h_at(j);
      if (ro) store_param<A>(ro, c.residual_dtype, j, h);
      if (L.staged) sh[j] = h;
      ss[0] += h * h;
    }
    team_sum<1>(ss, blockDim.x, red);
    const A rstd = rsqrt_acc(ss[0] / (A)N + (A)c.eps);
    for (int64_t j = threadIdx.x; j < N; j += blockDim.x) {
      const A h = L.staged ? sh[j] : (ro ? load_param<A>(ro, c.residual_dtype, j) : h_at(j));
      store_param<A>(out, c.dtype, j, h * rstd * weight_at<A>(c, a.weight, j));
    }
    if (threadIdx.x == 0 && a.rstd) static_cast<A*>(a.rstd)[r] = rstd;
  }
}

template <typename T, typename R, int NV, bool ALIGNED>
gn_status launch_regs(const gn_addnorm_fwd_args& a, const Plan& p, cudaStream_t s) {
  using A = acc_t<T>;
  constexpr auto kernel = an_fwd_regs<T, R, NV, ALIGNED>;
  const size_t smem = staged_weight_bytes<A>(a.cfg.cols);
  gn_status st = allow_smem<kernel>(smem);
  if (st != GN_OK) return st;
  DeviceInfo dev;
  if ((st = device_info(&dev)) != GN_OK) return st;
  const dim3 grid = resident_grid(p.grid, resident_blocks<kernel>(p.threads, smem), dev.sms);
  kernel<<<grid, p.threads, smem, s>>>(a, p.layout);
  return GN_OK;
}

template <typename T, typename R>
gn_status launch_fast(const gn_addnorm_fwd_args& a, const Plan& p, cudaStream_t s) {
  static_assert(FWD_MAX_VECS == 2, "instantiate the register path for every vector count");
  if (!p.layout.aligned) return p.nv == 1 ? launch_regs<T, R, 1, false>(a, p, s) : GN_ERR_INVALID;
  switch (p.nv) {
    case 1: return launch_regs<T, R, 1, true>(a, p, s);
    case 2: return launch_regs<T, R, 2, true>(a, p, s);
    default: return GN_ERR_INVALID;
  }
}

template <typename A>
gn_status launch_loop(const gn_addnorm_fwd_args& a, const Plan& p, cudaStream_t s) {
  gn_status st = allow_smem<an_fwd_loop<A>>(p.smem);
  if (st != GN_OK) return st;
  an_fwd_loop<A><<<p.grid, p.threads, p.smem, s>>>(a, p.layout);
  return GN_OK;
}

}  // namespace
}  // namespace gn

extern "C" gn_status gn_cuda_addnorm_fwd(const gn_addnorm_fwd_args* a, void* stream) {
  using namespace gn;
  const gn_addnorm_config& c = a->cfg;
  if (c.rows < 0 || c.cols <= 0 || !(c.eps >= 0) || !a->residual || !a->out) return GN_ERR_INVALID;
  if (c.rows == 0) return GN_OK;
  DeviceInfo dev;
  gn_status st = device_info(&dev);
  if (st != GN_OK) return st;
  const void* ptrs[4] = {a->x, a->residual, a->residual_out, a->out};
  const gn_dtype types[4] = {c.dtype, c.residual_dtype, c.residual_dtype, c.dtype};
  const int64_t strides[4] = {a->x_stride, a->residual_stride, a->residual_out_stride, a->out_stride};
  Plan p = an::plan(c, an::aligned_rows(c, ptrs, types, strides, 4), 1, dev);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (p.regs) {
    st = GN_ERR_INVALID;
    an::with_fast_pair(c.dtype, c.residual_dtype, [&](auto t, auto r) {
      st = launch_fast<typename decltype(t)::type, typename decltype(r)::type>(*a, p, s);
    });
  } else {
    st = c.dtype == GN_FLOAT64 ? launch_loop<double>(*a, p, s) : launch_loop<float>(*a, p, s);
  }
  if (st != GN_OK) return st;
  cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? GN_OK : cuda_fail(e, "add_rms_norm forward launch");
}
