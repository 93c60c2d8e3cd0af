// Gated norm backward, wide path: few (row, group) segments of very wide groups (16 rows
// of 2^20), as the forward's wide path (gated_norm_fwd_wide.cu) does it:
//  1. bwd_wide_sums: a block per chunk of the forward's geometry writes the chunk's parts
//     of the group sums c1 = mean(vhat * w * dy0) and c2 = mean(w * dy0) to the workspace;
//  2. bwd_wide_merge: a block per segment adds its parts in a fixed order into c1, c2;
//  3. bwd_wide_grads: a block per chunk of WIDE_BWD_VECS vectors a thread and per set of
//     rows (rows q, q + Q, ... of `row_splits` Q, walked from the last, which the first
//     kernel read last) writes dx, dz (and the recomputed output), and keeps its
//     columns' dw / db sums in registers across its rows: one partial row each, which
//     launch_reduce adds in a fixed order.
// Merging once a segment, not in every warp of kernel 3 (each row's 128 parts read again
// by 8 warps of 512 blocks: ~67 MB of L2 reads for bign_1m), keeps kernel 3 streaming.
// x, dy and z are read twice (the second time partly from L2), dx and dz written once.
#include "gated_norm_bwd.cuh"
#include "partials.cuh"
#include "wide.cuh"

namespace gn {
namespace {

// Elements of the workspace before the row sums: the dw and db partial rows.
__host__ __device__ inline int64_t sums_offset(int64_t row_splits, int64_t cols, int acc_bytes) {
  const int64_t per16 = 16 / acc_bytes;
  return (2 * row_splits * cols + per16 - 1) / per16 * per16;
}

// Elements before the merged (c1, c2) of each segment: the dw/db rows, then the parts.
// The kernels pass `segments` from their grid (no division on their way to a load).
__host__ __device__ inline int64_t merged_offset(int64_t row_splits, int64_t cols, int64_t segments, int64_t C1,
                                                 int acc_bytes) {
  const int64_t per16 = 16 / acc_bytes, n = segments * C1 * 2;
  return sums_offset(row_splits, cols, acc_bytes) + (n + per16 - 1) / per16 * per16;
}

template <typename T>
__global__ void __launch_bounds__(WIDE_BLOCK) bwd_wide_sums(const gn_bwd_args a, const int64_t C, const int64_t Q,
                                                            const bool al) {
  using A = acc_t<T>;
  constexpr int VEC = vec_size<T>();
  constexpr int64_t CH = wide_chunk_cols<T>();
  __shared__ TeamScratch<2, A> red;
  int phase = 0;
  pdl_wait();
  pdl_trigger();  // the second kernel's blocks wait in its pdl_wait until this grid is done
  const gn_config& c = a.cfg;
  // The grid is (chunks, groups, rows), as the forward's chunk kernels (gated_norm_fwd_wide.cu).
  const int64_t G = c.group_size, ck = blockIdx.x, g = blockIdx.y, r = blockIdx.z;
  const int64_t seg = r * gridDim.y + g, item = seg * C + ck;
  const int64_t col0 = g * G + ck * CH, lim = chunk_cols(G, ck, CH);
  const BwdRow<T> p = bwd_row<T>(a, r, col0);
  const bool gate = a.z != nullptr, after = gate && c.norm_before_gate;
  uint4 xr[WIDE_VECS], dyr[WIDE_VECS], zr[WIDE_VECS];
#pragma unroll
  for (int j = 0; j < WIDE_VECS; ++j) {  // every load issued before any is used
    xr[j] = load_word<T>(p.x, wide_col<T>(j), lim, al);
    dyr[j] = load_word<T>(p.dy, wide_col<T>(j), lim, al);
    if (gate) zr[j] = load_word<T>(p.z, wide_col<T>(j), lim, al);
  }
  A mean, rstd;
  load_stats<A>(a, g, r, mean, rstd);
  const bool wvec = params_vec_ok<VEC>(a.weight, col0, lim);
  A s[2] = {0, 0};
#pragma unroll
  for (int j = 0; j < WIDE_VECS; ++j) {
    A x[VEC], dy[VEC], z[VEC], wv[VEC];
    unpack<T, VEC>(xr[j], x);
    unpack<T, VEC>(dyr[j], dy);
    if (gate) unpack<T, VEC>(zr[j], z);
    load_params<A, VEC>(a.weight, c.param_dtype, col0 + wide_col<T>(j), col0 + lim, wvec, A(1), wv);
#pragma unroll
    for (int i = 0; i < VEC; ++i) {  // padding: dy = 0, so dy0 = 0 and it adds nothing
      const Elem<A> e = elem_grad<A>(c.act, gate, after, x[i], gate ? z[i] : A(0), dy[i], wv[i], A(0), mean, rstd);
      s[0] += e.vhat * wv[i] * e.dy0;
      s[1] += wv[i] * e.dy0;
    }
  }
  team_sum<2>(s, WIDE_BLOCK, red, phase);
  if (threadIdx.x == 0) {
    A* sums = static_cast<A*>(a.workspace) + sums_offset(Q, c.cols, (int)sizeof(A)) + item * 2;
    sums[0] = s[0];
    sums[1] = s[1];
  }
}

// A block per segment, as fwd_wide_merge.
template <typename T>
__global__ void __launch_bounds__(WIDE_BLOCK) bwd_wide_merge(const gn_bwd_args a, const int64_t C1, const int64_t Q,
                                                             const RowConsts<acc_t<T>> rc) {
  using A = acc_t<T>;
  __shared__ TeamScratch<2, A> red;
  int phase = 0;
  pdl_wait();
  pdl_trigger();
  const gn_config& c = a.cfg;
  const int64_t seg = blockIdx.x;
  A* ws = static_cast<A*>(a.workspace);
  const A* part = ws + sums_offset(Q, c.cols, (int)sizeof(A)) + seg * C1 * 2;
  A s[2] = {0, 0};
  for (int64_t i = threadIdx.x; i < C1; i += WIDE_BLOCK) {
    s[0] += part[2 * i];
    s[1] += part[2 * i + 1];
  }
  team_sum<2>(s, WIDE_BLOCK, red, phase);
  if (threadIdx.x == 0) {
    A* m = ws + merged_offset(Q, c.cols, gridDim.x, C1, (int)sizeof(A)) + seg * 2;
    m[0] = s[0] * rc.inv_g;
    m[1] = c.is_rms_norm ? A(0) : s[1] * rc.inv_g;
  }
}

// Two blocks an SM (at most 128 registers, no spills, sm_90; bwd_wide_layout sizes the
// grid for that).
template <typename T>
__global__ void __launch_bounds__(WIDE_BLOCK, 2) bwd_wide_grads(const gn_bwd_args a, const int64_t C1, const int64_t C2,
                                                             const bool al) {
  using A = acc_t<T>;
  constexpr int VEC = vec_size<T>(), K = WIDE_BWD_VECS * VEC;
  constexpr int64_t CH = wide_chunk_cols<T, WIDE_BWD_VECS>();
  const gn_config& c = a.cfg;
  // The grid is (chunks, groups, row sets), chunks and groups in reverse: the first kernel's
  // last chunks first.
  const int64_t G = c.group_size, ngroups = gridDim.y, M = c.rows, N = c.cols, Q = gridDim.z, q = blockIdx.z;
  const int64_t ck = C2 - 1 - blockIdx.x, g = ngroups - 1 - blockIdx.y;
  const int64_t col0 = g * G + ck * CH, lim = chunk_cols(G, ck, CH);
  const bool gate = a.z != nullptr, after = gate && c.norm_before_gate;
  const bool want_b = a.bias && (a.out || after);
  const bool wvec = params_vec_ok<VEC>(a.weight, col0, lim), bvec = params_vec_ok<VEC>(a.bias, col0, lim);
  const A* merged = static_cast<const A*>(a.workspace) + merged_offset(Q, N, M * ngroups, C1, (int)sizeof(A));
  A dw[K], db[K];
#pragma unroll
  for (int k = 0; k < K; ++k) dw[k] = db[k] = A(0);
  // A row's loads are issued one row ahead, under the previous row's math and stores:
  // with two blocks an SM, one row's 24 KB a block in flight at a time left the kernel
  // latency-bound.
  uint4 xr[WIDE_BWD_VECS], dyr[WIDE_BWD_VECS], zr[WIDE_BWD_VECS];
  const auto load_row = [&](int64_t r, uint4(&xv)[WIDE_BWD_VECS], uint4(&dyv)[WIDE_BWD_VECS],
                            uint4(&zv)[WIDE_BWD_VECS]) {
    const BwdRow<T> p = bwd_row<T>(a, r, col0);
#pragma unroll
    for (int j = 0; j < WIDE_BWD_VECS; ++j) {
      xv[j] = load_word<T>(p.x, wide_col<T>(j), lim, al);
      dyv[j] = load_word<T>(p.dy, wide_col<T>(j), lim, al);
      zv[j] = gate ? load_word<T>(p.z, wide_col<T>(j), lim, al) : make_uint4(0, 0, 0, 0);
    }
  };
  // The first row's loads before the wait: the two kernels before this one only read x,
  // dy, z, and this grid starts only once every block of those has passed its own wait.
  if (M - 1 - q >= 0) load_row(M - 1 - q, xr, dyr, zr);
  pdl_wait();
  pdl_trigger();
  for (int64_t r = M - 1 - q; r >= 0; r -= Q) {
    const BwdRow<T> p = bwd_row<T>(a, r, col0);
    A mean, rstd;
    load_stats<A>(a, g, r, mean, rstd);
    const A* m = merged + (r * ngroups + g) * 2;
    const A c1 = m[0], c2 = m[1];
    uint4 nx[WIDE_BWD_VECS], ndy[WIDE_BWD_VECS], nz[WIDE_BWD_VECS];
    if (r - Q >= 0) load_row(r - Q, nx, ndy, nz);
#pragma unroll
    for (int j = 0; j < WIDE_BWD_VECS; ++j) {
      const int64_t cj = wide_col<T>(j);
      if (cj >= lim) continue;
      A x[VEC], dy[VEC], z[VEC], wv[VEC], bv[VEC];
      unpack<T, VEC>(xr[j], x);
      unpack<T, VEC>(dyr[j], dy);
      if (gate) unpack<T, VEC>(zr[j], z);
      load_params<A, VEC>(a.weight, c.param_dtype, col0 + cj, col0 + lim, wvec, A(1), wv);
      load_params<A, VEC>(want_b ? a.bias : nullptr, c.param_dtype, col0 + cj, col0 + lim, bvec, A(0), bv);
#pragma unroll
      for (int i = 0; i < VEC; ++i) {  // columns past lim: dy = 0, so dy0 = 0 (never stored)
        const Elem<A> e =
            elem_grad<A>(c.act, gate, after, x[i], gate ? z[i] : A(0), dy[i], wv[i], bv[i], mean, rstd);
        A dxi, dzi;
        input_grads<A>(gate, after, e, x[i], wv[i], c1, c2, rstd, dxi, dzi);
        dw[j * VEC + i] += e.dy0 * e.vhat;
        db[j * VEC + i] += e.dy0;
        x[i] = dxi;
        z[i] = dzi;
        dy[i] = e.y;
      }
      store_vec<T, VEC>(p.dx, cj, lim, al, x);
      if (gate) store_vec<T, VEC>(p.dz, cj, lim, al, z);
      if (p.out) store_vec<T, VEC>(p.out, cj, lim, al, dy);
    }
#pragma unroll
    for (int j = 0; j < WIDE_BWD_VECS; ++j) {
      xr[j] = nx[j];
      dyr[j] = ndy[j];
      zr[j] = nz[j];
    }
  }
  A* ws_dw = static_cast<A*>(a.workspace) + q * N + col0;
  A* ws_db = ws_dw + Q * N;
#pragma unroll
  for (int j = 0; j < WIDE_BWD_VECS; ++j) {
    const int64_t cj = wide_col<T>(j);
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      if (cj + i >= lim) continue;
      if (a.dw) ws_dw[cj + i] = dw[j * VEC + i];
      if (a.db) ws_db[cj + i] = db[j * VEC + i];
    }
  }
}

template <typename T>
gn_status launch_typed(const gn_bwd_args& a, bool aligned, const WideBwd& w, const DeviceInfo& dev, cudaStream_t s) {
  const int64_t ngroups = a.cfg.cols / a.cfg.group_size, segments = a.cfg.rows * ngroups;  // < 2 * SMs
  if (w.sum_chunks > 0x7fffffff || w.grad_chunks > 0x7fffffff || w.row_splits > 65535)
    return GN_ERR_UNSUPPORTED;  // grid limits: groups of 2^43+ columns (rows and groups: < 2 * SMs)
  gn_status st = launch_pdl(bwd_wide_sums<T>, dim3((unsigned)w.sum_chunks, (unsigned)ngroups, (unsigned)a.cfg.rows),
                            WIDE_BLOCK, 0, s, dev, "gated_norm backward (wide path, row sums) launch", 1, a,
                            w.sum_chunks, w.row_splits, aligned);
  if (st != GN_OK) return st;
  st = launch_pdl(bwd_wide_merge<T>, dim3((unsigned)segments), WIDE_BLOCK, 0, s, dev,
                  "gated_norm backward (wide path, row sums merge) launch", 1, a, w.sum_chunks, w.row_splits,
                  row_consts<acc_t<T>>(a.cfg));
  if (st != GN_OK) return st;
  return launch_pdl(bwd_wide_grads<T>, dim3((unsigned)w.grad_chunks, (unsigned)ngroups, (unsigned)w.row_splits),
                    WIDE_BLOCK, 0, s, dev, "gated_norm backward (wide path) launch", 1, a, w.sum_chunks, w.grad_chunks,
                    aligned);
}

}  // namespace

size_t bwd_wide_workspace_bytes(const gn_config& c, const WideBwd& w) {
  if (!w.sum_chunks) return 0;
  const int acc = (int)acc_bytes(c.dtype);
  const int64_t segments = c.rows * (c.cols / c.group_size);
  return (size_t)(merged_offset(w.row_splits, c.cols, segments, w.sum_chunks, acc) + segments * 2) * acc;
}

gn_status launch_bwd_wide(const gn_bwd_args& a, bool aligned, const WideBwd& w, const DeviceInfo& dev,
                          cudaStream_t s) {
  if (!a.workspace || (uintptr_t)a.workspace % 16) return GN_ERR_INVALID;  // gn_cuda_bwd_workspace_bytes
  return with_dtype(a.cfg.dtype,
                    [&](auto t) { return launch_typed<typename decltype(t)::type>(a, aligned, w, dev, s); });
}

}  // namespace gn
