// Fused add + RMSNorm forward: h = residual (+ x), rounded to residual's dtype and
// stored as residual_out; out = h * rstd * w'. One launch, each input read once.
// Outputs may alias inputs exactly (in place): every element is read by the
// thread that later writes it, before it writes it, and each row is read and
// written by one team only.
#include "add_rms_norm.cuh"

namespace gn {
namespace {
using namespace an;

// 16-byte words a thread streams per row: each vector of the residual (R) and,
// with the add, of x (T); the wider dtype takes two words a vector.
template <typename T, typename R>
__host__ __device__ inline int fwd_words(int nv, bool add) {
  return nv * (Packed<R, vec_of<T, R>()>::NU + (add ? Packed<T, vec_of<T, R>()>::NU : 0));
}
template <typename T, typename R>
inline size_t fwd_regs_smem(const gn_addnorm_fwd_args& a, const Plan& p, bool aligned) {
  return staged_weight_bytes<acc_t<T>>(a.cfg.cols) +
         (aligned ? (size_t)FWD_RING * fwd_words<T, R>(p.nv, a.x != nullptr) * p.threads * 16 : 0);
}

// Register path (plan.h, one group per row). Each thread owns columns
// (j * tpg + lt) * VEC + i of its row. Aligned rows stream through a cp.async ring
// in shared memory, FWD_RING - 1 rows ahead, as in the gated forward. In place is
// safe: a row is read (into the ring) before the same team writes it.
template <typename T, typename R, int NV, bool ALIGNED>
__global__ void __launch_bounds__(FWD_MAX_TEAM, FWD_MIN_BLOCKS) an_fwd_regs(const gn_addnorm_fwd_args a, const Layout L,
                                                                           const RowConsts<acc_t<T>> rc) {
  using A = acc_t<T>;
  constexpr int VEC = vec_of<T, R>(), K = NV * VEC, S = FWD_RING;
  constexpr int NUR = Packed<R, VEC>::NU, NUT = Packed<T, VEC>::NU;
  __shared__ TeamScratch<1, A> red;
  int phase = 0;
  GN_DYN_SMEM(unsigned char, dyn);
  const gn_addnorm_config& c = a.cfg;
  const int rl = threadIdx.x / L.tpg, lt = threadIdx.x % L.tpg;
  const bool team_ok = rl < L.rpi;
  const int N = (int)c.cols;  // the register path holds a row: N < 2^31
  const int64_t M = c.rows;
  A* sw = reinterpret_cast<A*>(dyn);
  const bool add = a.x != nullptr;
  const int cl = lt * VEC, cs = L.tpg * VEC;  // vector j starts at column cl + j * cs

  const int bd = blockDim.x, words = fwd_words<T, R>(NV, add);
  uint4* ring = reinterpret_cast<uint4*>(dyn + staged_weight_bytes<A>(N));
  auto word = [&](int st, int w) { return ring + (st * words + w) * bd + threadIdx.x; };
  const int64_t step = (int64_t)gridDim.y * L.rpi, rb0 = (int64_t)blockIdx.y * L.rpi;
  // As in gated_norm_fwd.cu: row pointers as cursors advanced by a constant each row; each
  // issue() requests the cursor's row (rb0 + rl, then + step each call); copies that read
  // nothing take the tensor's base address.
  const T* const xb = static_cast<const T*>(a.x);
  const R* const resb = static_cast<const R*>(a.residual);
  int64_t qr = rb0 + rl;
  const T* qx = add ? xb + qr * a.x_stride + cl : xb;
  const R* qres = resb + qr * a.residual_stride + cl;
  const int64_t qdx = add ? step * a.x_stride : 0, qdres = step * a.residual_stride;
  R* pro = a.residual_out ? static_cast<R*>(a.residual_out) + (rb0 + rl) * a.residual_out_stride : nullptr;
  T* pout = static_cast<T*>(a.out) + (rb0 + rl) * a.out_stride;
  const int64_t pdro = a.residual_out ? step * a.residual_out_stride : 0, pdout = step * a.out_stride;
  auto issue = [&](int st) {  // one commit group per row, even an empty one
    const bool okn = team_ok && qr < M;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const bool in = okn && cl + j * cs < N;
#pragma unroll
      for (int u = 0; u < NUR; ++u)
        cp_async16(word(st, j * NUR + u), in ? qres + j * cs + u * (16 / sizeof(R)) : resb, in);
      if (add) {
#pragma unroll
        for (int u = 0; u < NUT; ++u)
          cp_async16(word(st, NV * NUR + j * NUT + u), in ? qx + j * cs + u * (16 / sizeof(T)) : xb, in);
      }
    }
    cp_async_commit();
    qr += step;
    qx += qdx;
    qres += qdres;
  };
  pdl_wait();
  if (ALIGNED) {
#pragma unroll
    for (int st = 0; st < S - 1; ++st) issue(st);
  }
  // After the first rows are requested: both in flight at once.
  stage_weight<A>(c, a.weight, N, sw, ALIGNED ? VEC : 0);

  int st = 0;  // the ring slot of this row
#pragma unroll 1
  for (int64_t rb = rb0; rb < M; rb += step) {
    const int64_t r = rb + rl;
    const bool ok = team_ok && r < M;
    const int64_t rr = ok ? r : 0;
    const int lim = ok ? N : 0;  // idle teams read nothing but still reduce
    A h[K];
    if (ALIGNED) {
      issue(st == 0 ? S - 1 : st - 1);  // row rb + (S - 1) * step + rl, into the slot read last row
      cp_async_wait<S - 1>();
#pragma unroll
      for (int j = 0; j < NV; ++j) {
        Packed<R, VEC> pr;
#pragma unroll
        for (int u = 0; u < NUR; ++u) pr.u[u] = *word(st, j * NUR + u);
        unpack<R, VEC>(pr, &h[j * VEC]);
        if (add) {
          Packed<T, VEC> px;
#pragma unroll
          for (int u = 0; u < NUT; ++u) px.u[u] = *word(st, NV * NUR + j * NUT + u);
          A xv[VEC];
          unpack<T, VEC>(px, xv);
#pragma unroll
          for (int i = 0; i < VEC; ++i) h[j * VEC + i] += xv[i];
        }
      }
    } else {
      const T* x = static_cast<const T*>(a.x) + rr * a.x_stride;
      const R* res = static_cast<const R*>(a.residual) + rr * a.residual_stride;
#pragma unroll
      for (int j = 0; j < NV; ++j) {
        const int cj = cl + j * cs;
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
    R* const ro_row = ALIGNED || !a.residual_out
                          ? pro
                          : static_cast<R*>(a.residual_out) + rr * a.residual_out_stride;
    T* const out_row = ALIGNED ? pout : static_cast<T*>(a.out) + rr * a.out_stride;
    pro += pdro;
    pout += pdout;
    if (a.residual_out) {
      R* ro = ro_row;
#pragma unroll
      for (int j = 0; j < NV; ++j) store_vec<R, VEC>(ro, cl + j * cs, lim, ALIGNED, &h[j * VEC]);
    }
    team_sum<1>(ss, L.tpg, red, phase);
    const A rstd = row_rstd<A>(ss[0], rc);
    T* out = out_row;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int cj = cl + j * cs;
      if (cj >= lim) continue;
      A wv[VEC];
      // cj < N: in the zero-padded staging (planar when aligned: ParamLayout)
      if (ALIGNED) load_param_vec<A, VEC>(sw, (N + 15) / 16 * 16 / VEC, cj / VEC, wv);
      else load_smem<A, VEC>(sw + cj, wv);
#pragma unroll
      for (int i = 0; i < VEC; ++i) h[j * VEC + i] *= rstd * wv[i];
      store_vec<T, VEC>(out, cj, lim, ALIGNED, &h[j * VEC]);
    }
    if (ok && lt == 0 && a.rstd) static_cast<A*>(a.rstd)[r] = rstd;
    st = st + 1 == S ? 0 : st + 1;
  }
  if (ALIGNED) cp_async_wait<0>();  // the ring's trailing (empty) groups
  pdl_trigger();
}

// Loop path: a block per row, elements one by one (dtypes known at run time).
// h is staged in shared memory when it fits, else read back from residual_out
// (this thread wrote it: a plain load, not the non-coherent cache) or recomputed.
template <typename A>
__global__ void __launch_bounds__(LOOP_BLOCK) an_fwd_loop(const gn_addnorm_fwd_args a, const Layout L,
                                                  const RowConsts<A> rc) {
  GN_DYN_SMEM(unsigned char, stage_raw);
  __shared__ TeamScratch<1, A> red;
  int phase = 0;
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
    team_sum<1>(ss, blockDim.x, red, phase);
    const A rstd = row_rstd<A>(ss[0], rc);
    for (int64_t j = threadIdx.x; j < N; j += blockDim.x) {
      const A h = L.staged ? sh[j] : (ro ? load_param<A>(ro, c.residual_dtype, j) : h_at(j));
      store_param<A>(out, c.dtype, j, h * rstd * weight_at<A>(c, a.weight, j));
    }
    if (threadIdx.x == 0 && a.rstd) static_cast<A*>(a.rstd)[r] = rstd;
  }
}

template <typename T, typename R, int NV, bool ALIGNED>
gn_status launch_regs(const gn_addnorm_fwd_args& a, const Plan& p, cudaStream_t s) {
  constexpr auto kernel = an_fwd_regs<T, R, NV, ALIGNED>;
  const size_t smem = fwd_regs_smem<T, R>(a, p, ALIGNED);
  gn_status st = allow_smem<kernel>(smem);
  if (st != GN_OK) return st;
  // Grid (plan.h, forward_grid), as measured on the H100 over GATEDNORM_ROW_ITERS
  // (docs/data/h100_row_iters_sweep.txt, bf16, M = 65536, with and without the add; the
  // add at these N now takes the block-per-row kernel, add_rms_norm_fwd_decode.cu):
  // 2 row blocks per block with 3+ resident blocks per SM (N = 2048, 4096: 0.97-0.99 vs
  // 0.83-0.94 persistent), 3 with one (N = 8192 with the add: 0.99 vs 0.89-0.96).
  DeviceInfo dev;
  if ((st = device_info(&dev)) != GN_OK) return st;
  const int per_sm = resident_blocks<kernel>(p.threads, smem);
  constexpr int VEC = vec_of<T, R>();
  // Blocks wider than FWD_BLOCK (whole-warp teams of N = 5120: 320 threads; N = 8192:
  // 512) take 4 row blocks each: RMSNorm at 5120 0.98 vs 0.85 at 2, at 8192 0.99 vs
  // 0.91; add + RMSNorm at 5120 0.98 (as at 3); one block per SM (add at 8192) keeps 3.
  const bool wide = p.threads > FWD_BLOCK;
  // Bandwidth-rich devices (plan.h): 4 where the H100 took 2 (H200, plain RMSNorm, M =
  // 65536, N = 4096: 0.87 vs 0.72 at 2, 0.83 persistent; docs/data/h200_row_iters.txt).
  const int preferred = !team_mostly_full(a.cfg.cols, VEC, p.layout.tpg, NV) ? -1
                        : per_sm == 1                                        ? 3
                        : per_sm >= 3 && !wide                               ? (bandwidth_rich(dev) ? 4 : 2)
                                                                             : 4;
  const dim3 grid = forward_grid(preferred, p.grid, a.cfg.rows, p.layout.rpi, (long long)per_sm * dev.sms);
  return launch_pdl(kernel, grid, p.threads, smem, s, dev, "add_rms_norm forward launch", 1, a, p.layout,
                    row_consts<acc_t<T>>(a.cfg));
}

template <typename A>
gn_status launch_loop(const gn_addnorm_fwd_args& a, const Plan& p, cudaStream_t s);

template <typename T, typename R>
gn_status launch_fast(const gn_addnorm_fwd_args& a, Plan p, cudaStream_t s) {
  static_assert(FWD_MAX_VECS == 2, "instantiate the register path for every vector count");
  DeviceInfo dev;
  gn_status st = device_info(&dev);
  if (st != GN_OK) return st;
  p = fit_smem(p, fwd_regs_smem<T, R>(a, p, p.layout.aligned), plan_config(a.cfg), a.cfg.cols * sizeof(acc_t<T>),
               dev);
  if (!p.regs) return launch_loop<acc_t<T>>(a, p, s);
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
  an_fwd_loop<A><<<p.grid, p.threads, p.smem, s>>>(a, p.layout, row_consts<A>(a.cfg));
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
  const bool aligned = an::aligned_rows(c, ptrs, types, strides, 4);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  bool done = false;
  if ((st = an::launch_fwd_decode(*a, aligned, dev, s, &done)) != GN_OK || done) return st;
  Plan p = an::plan(c, aligned, 1, dev);
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
