// Gated norm backward, loop path on aligned rows: the forward's gated_norm_fwd_loop_async.cu
// for the backward.
//
// The generic loop kernel (gated_norm_bwd_loop.cu) decides aligned / unaligned and staged
// / not per vector, so its loads wait on one another; where its dw/db sums do not fit in
// shared memory (slices of 2^16 bf16: 256 KB of fp32) it read-modify-writes the workspace
// row one scalar at a time. bign_1m forward+backward measured 0.11 (H200), 0.15 (H100).
// Here:
//  - x, dy, z of the row's slice are staged by cp.async, all at once, as far as shared
//    memory holds them (x first, then dy, then z);
//  - what does not fit is read from global memory in batches whose loads are all
//    issued before any is used;
//  - the next row's copies go into each slot once the gradient pass has used it;
//  - dw/db partials that do not fit in shared memory go to the workspace row as whole
//    16-byte vectors (written, or read-added-written after the block's first row).
// Slot s of thread t is stage[s * nt + t]: x's vectors k < nx, then dy's k < ndy, then
// z's k < nz (k: the thread's k-th vector of the slice); the dw/db sums follow.
#include "cluster.cuh"
#include "gated_norm_bwd.cuh"
#include "loop_async.cuh"

namespace gn {
namespace {

constexpr int SUM_BATCH = LOOP_BATCH / 2 > 0 ? LOOP_BATCH / 2 : 1;  // three tensors a vector
constexpr int GRAD_BATCH = OUT_BATCH;

// One block an SM (124-128 registers, no spills at sm_90; two, at 64 registers, spilled
// 70-190 bytes): the staged rows fill its shared memory anyway.
template <typename T, bool SPLIT>
__global__ void __launch_bounds__(LOOP_BLOCK, 1) bwd_loop_async(const gn_bwd_args a, const Layout L,
                                                                                const int slots) {
  using A = acc_t<T>;
  constexpr int VEC = vec_size<T>();
  static_assert(VEC * sizeof(T) == 16, "one 16-byte word a vector");
  GN_DYN_SMEM(uint4, stage);
  __shared__ TeamScratch<2, A> red;
  __shared__ ClusterScratch<2, A> cred;
  int phase = 0, cphase = 0;
  const gn_config& c = a.cfg;
  const int csize = SPLIT ? L.csize : 1;
  const int64_t G = c.group_size / csize, M = c.rows, N = c.cols, g = blockIdx.x / csize;
  const int64_t col0 = g * c.group_size + (SPLIT ? (int64_t)(blockIdx.x % csize) * G : 0);
  const int nt = blockDim.x, t = threadIdx.x;
  const int64_t nvec = G / VEC;
  const int kn = (int)((nvec + nt - 1) / nt);
  const bool gate = a.z != nullptr, after = gate && c.norm_before_gate;
  const bool want_b = a.bias && (a.out || after);
  auto fill = [&](int used) { const int left = slots - used; return kn < left ? kn : left; };
  const int nx = fill(0), ndy = fill(nx), nz = gate ? fill(nx + ndy) : 0;
  auto col = [&](int k) { return ((int64_t)k * nt + t) * VEC; };
  auto slot = [&](int s) { return stage + (size_t)s * nt + t; };
  // dw/db sums in shared memory (L.acc_smem): slot (vector v, lane i) at i * nvec + v.
  A* acc_dw = reinterpret_cast<A*>(stage + (size_t)slots * nt);
  A* acc_db = acc_dw + (a.dw ? VEC * nvec : 0);
  A* ws_dw = static_cast<A*>(a.workspace) + (int64_t)blockIdx.y * N + col0;
  A* ws_db = ws_dw + (int64_t)gridDim.y * N;
  const bool wvec = params_vec_ok<VEC>(a.weight, col0, G), bvec = params_vec_ok<VEC>(a.bias, col0, G);
  const uint4 zero = make_uint4(0, 0, 0, 0);
  auto read = [&](const T* p, int k, int staged, int base, bool in) {
    return !in ? zero : k < staged ? *slot(base + k) : __ldg(reinterpret_cast<const uint4*>(p + col(k)));
  };
  auto issue = [&](const BwdRow<T>& p, int k) {  // vector k's copies of the row (what is staged)
    const bool in = col(k) < G;
    const int64_t cj = in ? col(k) : 0;
    if (k < nx) cp_async16(slot(k), p.x + cj, in);
    if (k < ndy) cp_async16(slot(nx + k), p.dy + cj, in);
    if (k < nz) cp_async16(slot(nx + ndy + k), p.z + cj, in);
  };
  auto group_sum = [&](A(&v)[2]) {
    team_sum<2>(v, nt, red, phase);
    if (SPLIT) cluster_sum<2>(v, csize, cred, cphase);
  };
  if (SPLIT) cluster_sum_init(cred, csize);
  if (L.acc_smem) {  // each thread zeroes the slots it will own: no barrier
    for (int k = 0; k < kn; ++k) {
      if (col(k) >= G) break;
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        if (a.dw) acc_dw[i * nvec + col(k) / VEC] = 0;
        if (a.db) acc_db[i * nvec + col(k) / VEC] = 0;
      }
    }
  }

  int64_t r = blockIdx.y;
  if (r < M) {
    const BwdRow<T> p = bwd_row<T>(a, r, col0);
    for (int k = 0; k < nx; ++k) issue(p, k);  // nx >= ndy >= nz
    cp_async_commit();
  }
  for (; r < M; r += gridDim.y) {
    const bool first = r == (int64_t)blockIdx.y;
    const BwdRow<T> p = bwd_row<T>(a, r, col0);
    const int64_t rn = r + gridDim.y;
    const BwdRow<T> pn = bwd_row<T>(a, rn < M ? rn : r, col0);
    A mean, rstd;
    load_stats<A>(a, g, r, mean, rstd);
    // Pass 1: the group sums (padding: x = dy = 0 gives dy0 = 0, adds nothing).
    A s[2] = {0, 0};
    auto sums = [&](int k0, int hi) {
      uint4 xr[SUM_BATCH], dr[SUM_BATCH], zr[SUM_BATCH];
      A wv[SUM_BATCH][VEC];  // the sums need no bias (it enters y and dz only)
#pragma unroll
      for (int j = 0; j < SUM_BATCH; ++j) {
        const int k = k0 + j;
        const bool in = k < hi && col(k) < G;
        xr[j] = read(p.x, k, nx, 0, in);
        dr[j] = read(p.dy, k, ndy, nx, in);
        if (gate) zr[j] = read(p.z, k, nz, nx + ndy, in);
        load_params<A, VEC>(a.weight, c.param_dtype, col0 + col(k), col0 + G, wvec, A(1), wv[j]);
      }
#pragma unroll
      for (int j = 0; j < SUM_BATCH; ++j) {
        A x[VEC], dy[VEC], z[VEC];
        unpack<T, VEC>(xr[j], x);
        unpack<T, VEC>(dr[j], dy);
        if (gate) unpack<T, VEC>(zr[j], z);
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          const Elem<A> e = elem_grad<A>(c.act, gate, after, x[i], gate ? z[i] : A(0), dy[i], wv[j][i], A(0), mean,
                                         rstd);
          s[0] += e.vhat * wv[j][i] * e.dy0;
          s[1] += wv[j][i] * e.dy0;
        }
      }
    };
    for (int k0 = nx; k0 < kn; k0 += SUM_BATCH) sums(k0, kn);  // unstaged: overlaps the copies
    cp_async_wait<0>();
    for (int k0 = 0; k0 < nx; k0 += SUM_BATCH) sums(k0, nx);
    group_sum(s);
    const A c1 = s[0] / (A)c.group_size, c2 = c.is_rms_norm ? A(0) : s[1] / (A)c.group_size;
    // Pass 2: the gradients; then the next row's copies into the slots just used.
    for (int k0 = 0; k0 < kn; k0 += GRAD_BATCH) {
      uint4 xr[GRAD_BATCH], dr[GRAD_BATCH], zr[GRAD_BATCH];
      A wv[GRAD_BATCH][VEC], bv[GRAD_BATCH][VEC];
      bool in[GRAD_BATCH];
#pragma unroll
      for (int j = 0; j < GRAD_BATCH; ++j) {
        const int k = k0 + j;
        in[j] = k < kn && col(k) < G;
        xr[j] = read(p.x, k, nx, 0, in[j]);
        dr[j] = read(p.dy, k, ndy, nx, in[j]);
        if (gate) zr[j] = read(p.z, k, nz, nx + ndy, in[j]);
        load_params<A, VEC>(a.weight, c.param_dtype, col0 + col(k), col0 + G, wvec, A(1), wv[j]);
        load_params<A, VEC>(want_b ? a.bias : nullptr, c.param_dtype, col0 + col(k), col0 + G, bvec, A(0), bv[j]);
      }
#pragma unroll
      for (int j = 0; j < GRAD_BATCH; ++j) {
        if (!in[j]) continue;
        const int64_t cj = col(k0 + j), v = cj / VEC;
        A x[VEC], dy[VEC], z[VEC], pdw[VEC], pdb[VEC];
        unpack<T, VEC>(xr[j], x);
        unpack<T, VEC>(dr[j], dy);
        if (gate) unpack<T, VEC>(zr[j], z);
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          const Elem<A> e = elem_grad<A>(c.act, gate, after, x[i], gate ? z[i] : A(0), dy[i], wv[j][i], bv[j][i],
                                         mean, rstd);
          A dxi, dzi;
          input_grads<A>(gate, after, e, x[i], wv[j][i], c1, c2, rstd, dxi, dzi);
          pdw[i] = e.dy0 * e.vhat;
          pdb[i] = e.dy0;
          x[i] = dxi;
          z[i] = dzi;
          dy[i] = e.y;
        }
        store_vec<T, VEC>(p.dx, cj, G, true, x);
        if (gate) store_vec<T, VEC>(p.dz, cj, G, true, z);
        if (p.out) store_vec<T, VEC>(p.out, cj, G, true, dy);
        if (L.acc_smem) {
#pragma unroll
          for (int i = 0; i < VEC; ++i) {
            if (a.dw) acc_dw[i * nvec + v] += pdw[i];
            if (a.db) acc_db[i * nvec + v] += pdb[i];
          }
        } else {  // this thread's own workspace columns: no other thread touches them
          auto partial = [&](A* ws, A(&d)[VEC]) {
            if (!first) {
              A prev[VEC];
              load_vec<A, VEC, false>(ws, cj, G, true, prev);
#pragma unroll
              for (int i = 0; i < VEC; ++i) d[i] += prev[i];
            }
            store_vec<A, VEC>(ws, cj, G, true, d);
          };
          if (a.dw) partial(ws_dw, pdw);
          if (a.db) partial(ws_db, pdb);
        }
      }
      if (rn < M) {
#pragma unroll
        for (int j = 0; j < GRAD_BATCH; ++j)
          if (k0 + j < nx) issue(pn, k0 + j);
      }
    }
    if (rn < M) cp_async_commit();
  }
  cp_async_wait<0>();
  if (L.acc_smem) {  // each thread flushes exactly the slots it accumulated: no barrier
    for (int k = 0; k < kn; ++k) {
      const int64_t cj = col(k);
      if (cj >= G) break;
      A d[VEC];
#pragma unroll
      for (int i = 0; i < VEC; ++i) d[i] = a.dw ? acc_dw[i * nvec + cj / VEC] : A(0);
      if (a.dw) store_vec<A, VEC>(ws_dw, cj, G, true, d);
#pragma unroll
      for (int i = 0; i < VEC; ++i) d[i] = a.db ? acc_db[i * nvec + cj / VEC] : A(0);
      if (a.db) store_vec<A, VEC>(ws_db, cj, G, true, d);
    }
  }
  if (SPLIT) cluster_exit(csize);
}

template <typename T, bool SPLIT>
gn_status launch_async(const gn_bwd_args& a, Plan p, cudaStream_t s, unsigned& parts, const DeviceInfo& dev) {
  constexpr auto kernel = bwd_loop_async<T, SPLIT>;
  using A = acc_t<T>;
  constexpr int VEC = vec_size<T>();
  const int nt = p.threads;
  const int64_t nvec = a.cfg.group_size / p.layout.csize / VEC, kn = (nvec + nt - 1) / nt;
  // Shared memory: the dw/db sums when they take at most half of it (each one saves a
  // workspace read-modify-write a row), the staged rows in the rest.
  const size_t fixed = sizeof(TeamScratch<2, A>) + sizeof(ClusterScratch<2, A>) + 1024;
  const size_t whole = (size_t)dev.max_smem_optin - fixed;
  const size_t acc = (size_t)nvec * VEC * sizeof(A) * ((a.dw ? 1 : 0) + (a.db ? 1 : 0));
  p.layout.acc_smem = acc > 0 && acc <= whole / 2;
  const size_t acc_used = p.layout.acc_smem ? acc : 0;
  const int slots = loop_slots(kn * (a.z ? 3 : 2), whole - acc_used, 0, nt);
  p.smem = (size_t)slots * nt * 16 + acc_used;
  gn_status st = allow_smem<kernel>(p.smem, fixed);
  if (st != GN_OK) return st;
  const long long resident = resident_total<kernel>(p, p.smem, dev.sms);
  if (resident == 0) {  // split groups, not one cluster fits (a GPC short of free SMs)
    Plan loop = loop_plan(a.cfg, bwd_loop_stage_bytes<T>(a.cfg.group_size, a.z != nullptr), dev);
    loop.layout.aligned = true;
    return launch_async<T, false>(a, loop, s, parts, dev);
  }
  const dim3 grid = resident_grid(p.grid, resident);
  parts = grid.y;
  return launch_ex(kernel, grid, p.threads, p.smem, s, false, p.layout.csize, "gated_norm backward launch", a,
                   p.layout, slots);
}

template <typename T>
gn_status launch_typed(const gn_bwd_args& a, const Plan& p, cudaStream_t s, unsigned& parts) {
  DeviceInfo dev;
  gn_status st = device_info(&dev);
  if (st != GN_OK) return st;
  return p.layout.csize > 1 ? launch_async<T, true>(a, p, s, parts, dev) : launch_async<T, false>(a, p, s, parts, dev);
}

}  // namespace

gn_status launch_bwd_loop_async(const gn_bwd_args& a, const Plan& p, cudaStream_t s, unsigned& parts) {
  return with_dtype(a.cfg.dtype, [&](auto t) { return launch_typed<typename decltype(t)::type>(a, p, s, parts); });
}

}  // namespace gn
