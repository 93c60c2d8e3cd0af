// Fused add + RMSNorm backward: with g = dout * w',
//   dh = rstd * (g - h * rstd^2 * mean(g * h)) + dresidual_out,
//   dx = dh (x's dtype), dresidual = dh (residual's dtype),
//   dw = sum over rows of dout * h * rstd: one fp32 partial per row block, summed in
//   a fixed order by a second small kernel (partials.cuh), so dw is deterministic.
#include "add_rms_norm.cuh"
#include "partials.cuh"

namespace gn {
namespace {
using namespace an;

// Register path: h and dout of this thread's columns and its dw partial sums in
// registers; w' in shared memory.
template <typename T, typename R, int NV, bool ALIGNED>
__global__ void __launch_bounds__(BWD_MAX_TEAM > BWD_BLOCK ? BWD_MAX_TEAM : BWD_BLOCK)
    an_bwd_regs(const gn_addnorm_bwd_args a, const Layout L) {
  using A = acc_t<T>;
  constexpr int VEC = vec_of<T, R>(), K = NV * VEC;
  __shared__ TeamScratch<1, A> red;
  int phase = 0;
  __shared__ A part[BWD_BLOCK * K];  // cross-row fold of dw inside the block
  GN_DYN_SMEM(unsigned char, dyn);
  const gn_addnorm_config& c = a.cfg;
  const int rl = threadIdx.x / L.tpg, lt = threadIdx.x % L.tpg;
  const bool team_ok = rl < L.rpi;
  const int64_t N = c.cols, M = c.rows;
  A* sw = reinterpret_cast<A*>(dyn);

  // Aligned rows are software-pipelined as in the forward: the next row's h and
  // dout are requested (packed) before this row's reduction.
  const int64_t step = (int64_t)gridDim.y * L.rpi;
  Packed<R, VEC> ph[NV];
  Packed<T, VEC> pd[NV];
  auto prefetch = [&](int64_t rn) {
    const bool okn = team_ok && rn < M;
    const R* hp = static_cast<const R*>(a.h) + (okn ? rn : 0) * a.h_stride;
    const T* dp = static_cast<const T*>(a.dout) + (okn ? rn : 0) * a.dout_stride;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int64_t cj = (int64_t)(j * L.tpg + lt) * VEC;
      load_packed<R, VEC>(ph[j], hp, cj, okn ? N : 0);
      load_packed<T, VEC>(pd[j], dp, cj, okn ? N : 0);
    }
  };
  if (ALIGNED) prefetch((int64_t)blockIdx.y * L.rpi + rl);
  stage_weight<A>(c, a.weight, (int)N, sw, ALIGNED ? VEC : 0);

  A dw[K];
#pragma unroll
  for (int k = 0; k < K; ++k) dw[k] = 0;

  for (int64_t rb = (int64_t)blockIdx.y * L.rpi; rb < M; rb += step) {
    const int64_t r = rb + rl;
    const bool ok = team_ok && r < M;
    const int64_t lim = ok ? N : 0, rr = ok ? r : 0;
    A h[K], g[K];
    if (ALIGNED) {
#pragma unroll
      for (int j = 0; j < NV; ++j) {
        unpack<R, VEC>(ph[j], &h[j * VEC]);
        unpack<T, VEC>(pd[j], &g[j * VEC]);
      }
      if (rb + step < M) prefetch(rb + step + rl);
    } else {
      const R* hp = static_cast<const R*>(a.h) + rr * a.h_stride;
      const T* dp = static_cast<const T*>(a.dout) + rr * a.dout_stride;
#pragma unroll
      for (int j = 0; j < NV; ++j) {
        const int64_t cj = (int64_t)(j * L.tpg + lt) * VEC;
        load_vec<R, VEC>(hp, cj, lim, false, &h[j * VEC]);
        load_vec<T, VEC>(dp, cj, lim, false, &g[j * VEC]);
      }
    }
    // The residual stream's gradient is requested now, used after the reduction.
    const R* dro = a.dresidual_out ? static_cast<const R*>(a.dresidual_out) + rr * a.dresidual_out_stride : nullptr;
    Packed<R, VEC> pdr[NV];
    if (ALIGNED && dro) {
#pragma unroll
      for (int j = 0; j < NV; ++j) load_packed<R, VEC>(pdr[j], dro, (int64_t)(j * L.tpg + lt) * VEC, lim);
    }
    const A rs = ok ? static_cast<const A*>(a.rstd)[r] : A(0);
    // Padding and idle teams hold zeros: they add nothing to dw or the sum.
    A s[1] = {0};
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int64_t cj = (int64_t)(j * L.tpg + lt) * VEC;
      if (cj >= lim) continue;
      A wv[VEC];
      // cj < N: in the zero-padded staging (planar when aligned: ParamLayout)
      if (ALIGNED) load_param_vec<A, VEC>(sw, (N + 15) / 16 * 16 / VEC, cj / VEC, wv);
      else load_smem<A, VEC>(sw + cj, wv);
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        const int k = j * VEC + i;
        dw[k] += g[k] * (h[k] * rs);
        g[k] *= wv[i];
        s[0] += g[k] * h[k];
      }
    }
    team_sum<1>(s, L.tpg, red, phase);
    const A q = rs * rs * (s[0] / (A)N);
#pragma unroll
    for (int k = 0; k < K; ++k) g[k] = rs * (g[k] - h[k] * q);
    if (dro) {
#pragma unroll
      for (int j = 0; j < NV; ++j) {
        if (ALIGNED)
          unpack<R, VEC>(pdr[j], &h[j * VEC]);
        else
          load_vec<R, VEC>(dro, (int64_t)(j * L.tpg + lt) * VEC, lim, false, &h[j * VEC]);
#pragma unroll
        for (int i = 0; i < VEC; ++i) g[j * VEC + i] += h[j * VEC + i];
      }
    }
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int64_t cj = (int64_t)(j * L.tpg + lt) * VEC;
      if (a.dx) store_vec<T, VEC>(static_cast<T*>(a.dx) + rr * a.dx_stride, cj, lim, ALIGNED, &g[j * VEC]);
      if (a.dresidual)
        store_vec<R, VEC>(static_cast<R*>(a.dresidual) + rr * a.dresidual_stride, cj, lim, ALIGNED, &g[j * VEC]);
    }
  }
  if (a.dw) fold_partial<A, K, VEC>(dw, part, static_cast<A*>(a.workspace) + (int64_t)blockIdx.y * N, L, rl, lt, N);
}

// Loop path: a block per row, two passes (the sum, then the gradients); h and
// dout staged in shared memory when they fit. The block owns its workspace row,
// so dw accumulates there without atomics.
template <typename A>
__global__ void __launch_bounds__(LOOP_BLOCK) an_bwd_loop(const gn_addnorm_bwd_args a, const Layout L) {
  GN_DYN_SMEM(unsigned char, stage_raw);
  __shared__ TeamScratch<1, A> red;
  int phase = 0;
  const gn_addnorm_config& c = a.cfg;
  const int64_t N = c.cols, M = c.rows;
  const size_t es = dtype_bytes(c.dtype), rsz = dtype_bytes(c.residual_dtype);
  A* sh = reinterpret_cast<A*>(stage_raw);  // thread-private: each thread re-reads what it wrote
  A* sd = sh + N;
  A* ws = static_cast<A*>(a.workspace) + (int64_t)blockIdx.y * N;
  for (int64_t r = blockIdx.y; r < M; r += gridDim.y) {
    const bool first = r == (int64_t)blockIdx.y;
    const void* hp = row_of(a.h, r, a.h_stride, rsz);
    const void* dp = row_of(a.dout, r, a.dout_stride, es);
    const A rs = static_cast<const A*>(a.rstd)[r];
    A s[1] = {0};
    for (int64_t j = threadIdx.x; j < N; j += blockDim.x) {
      const A h = load_param<A>(hp, c.residual_dtype, j), d = load_param<A>(dp, c.dtype, j);
      if (L.staged) {
        sh[j] = h;
        sd[j] = d;
      }
      if (a.dw) ws[j] = (first ? A(0) : ws[j]) + d * (h * rs);
      s[0] += d * weight_at<A>(c, a.weight, j) * h;
    }
    team_sum<1>(s, blockDim.x, red, phase);
    const A q = rs * rs * (s[0] / (A)N);
    const void* dro = row_of(a.dresidual_out, r, a.dresidual_out_stride, rsz);
    void* dx = row_of(a.dx, r, a.dx_stride, es);
    void* dres = row_of(a.dresidual, r, a.dresidual_stride, rsz);
    for (int64_t j = threadIdx.x; j < N; j += blockDim.x) {
      const A h = L.staged ? sh[j] : load_param<A>(hp, c.residual_dtype, j);
      const A d = L.staged ? sd[j] : load_param<A>(dp, c.dtype, j);
      A dh = rs * (d * weight_at<A>(c, a.weight, j) - h * q);
      if (dro) dh += load_param<A>(dro, c.residual_dtype, j);
      if (dx) store_param<A>(dx, c.dtype, j, dh);
      if (dres) store_param<A>(dres, c.residual_dtype, j, dh);
    }
  }
}

// Launches the register path; `parts` gets its number of row blocks (dw partials).
template <typename T, typename R, int NV, bool ALIGNED>
gn_status launch_regs(const gn_addnorm_bwd_args& a, const Plan& p, cudaStream_t s, unsigned& parts) {
  using A = acc_t<T>;
  constexpr auto kernel = an_bwd_regs<T, R, NV, ALIGNED>;
  const size_t smem = staged_weight_bytes<A>(a.cfg.cols);
  gn_status st = allow_smem<kernel>(smem, BWD_BLOCK * NV * vec_of<T, R>() * sizeof(A) + 1024);
  if (st != GN_OK) return st;
  DeviceInfo dev;
  if ((st = device_info(&dev)) != GN_OK) return st;
  const dim3 grid = resident_grid(p.grid, (long long)resident_blocks<kernel>(p.threads, smem) * dev.sms);
  kernel<<<grid, p.threads, smem, s>>>(a, p.layout);
  parts = grid.y;
  return GN_OK;
}

template <typename T, typename R>
gn_status launch_fast(const gn_addnorm_bwd_args& a, const Plan& p, cudaStream_t s, unsigned& parts) {
  static_assert(FWD_MAX_VECS == 2, "the backward plans with the forward's limits (add_rms_norm.cuh)");
  if (!p.layout.aligned) return p.nv == 1 ? launch_regs<T, R, 1, false>(a, p, s, parts) : GN_ERR_INVALID;
  switch (p.nv) {
    case 1: return launch_regs<T, R, 1, true>(a, p, s, parts);
    case 2: return launch_regs<T, R, 2, true>(a, p, s, parts);
    default: return GN_ERR_INVALID;
  }
}

template <typename A>
gn_status launch_loop(const gn_addnorm_bwd_args& a, const Plan& p, cudaStream_t s) {
  gn_status st = allow_smem<an_bwd_loop<A>>(p.smem);
  if (st != GN_OK) return st;
  an_bwd_loop<A><<<p.grid, p.threads, p.smem, s>>>(a, p.layout);
  return GN_OK;
}

Plan bwd_plan(const gn_addnorm_bwd_args& a, const DeviceInfo& dev) {
  const gn_addnorm_config& c = a.cfg;
  const void* ptrs[5] = {a.h, a.dout, a.dresidual_out, a.dx, a.dresidual};
  const gn_dtype types[5] = {c.residual_dtype, c.dtype, c.residual_dtype, c.dtype, c.residual_dtype};
  const int64_t strides[5] = {a.h_stride, a.dout_stride, a.dresidual_out_stride, a.dx_stride, a.dresidual_stride};
  return an::plan(c, an::aligned_rows(c, ptrs, types, strides, 5), 2, dev);
}

}  // namespace
}  // namespace gn

// One fp32 (fp64) dw partial row per row block; the number of row blocks depends on
// the pointers' alignment, which this query does not see: the largest of the plans.
extern "C" size_t gn_cuda_addnorm_bwd_workspace_bytes(const gn_addnorm_config* c) {
  if (c->rows <= 0 || c->cols <= 0) return 16;
  gn::DeviceInfo dev;
  if (gn::device_info(&dev) != GN_OK) return 16;
  size_t parts = 0;
  for (bool aligned : {false, true}) {
    const gn::Plan p = gn::an::plan(*c, aligned, 2, dev);
    parts = p.grid.y > parts ? p.grid.y : parts;
  }
  return parts * (size_t)c->cols * gn::an::acc_size(*c);
}

extern "C" gn_status gn_cuda_addnorm_bwd(const gn_addnorm_bwd_args* a, void* stream) {
  using namespace gn;
  const gn_addnorm_config& c = a->cfg;
  if (c.rows < 0 || c.cols <= 0 || !a->h || !a->dout || !a->rstd || (a->dw && !a->workspace))
    return GN_ERR_INVALID;
  if (c.rows == 0) return GN_OK;
  DeviceInfo dev;
  gn_status st = device_info(&dev);
  if (st != GN_OK) return st;
  const Plan p = bwd_plan(*a, dev);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  unsigned parts = p.grid.y;
  if (p.regs) {
    st = GN_ERR_INVALID;
    an::with_fast_pair(c.dtype, c.residual_dtype, [&](auto t, auto r) {
      st = launch_fast<typename decltype(t)::type, typename decltype(r)::type>(*a, p, s, parts);
    });
  } else {
    st = c.dtype == GN_FLOAT64 ? launch_loop<double>(*a, p, s) : launch_loop<float>(*a, p, s);
  }
  if (st != GN_OK) return st;
  if (a->dw) {
    if (c.dtype == GN_FLOAT64)
      launch_reduce<double>(a->workspace, parts, c.cols, a->dw, nullptr, c.param_dtype, s);
    else
      launch_reduce<float>(a->workspace, parts, c.cols, a->dw, nullptr, c.param_dtype, s);
  }
  cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? GN_OK : cuda_fail(e, "add_rms_norm backward launch");
}
