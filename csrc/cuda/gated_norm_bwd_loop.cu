// Gated norm backward, loop path: groups too long for the register path (bf16 /
// fp16 above 4K elements, fp32 above 8K). One block per (row, group) walks the
// group in chunks of LOOP_BLOCK * VEC elements, twice: the group sums, then the
// gradients. Every row a block visits maps a thread to the same columns, so its
// dw/db sums are thread-private: they live in shared memory across rows (planar,
// conflict-free) and reach the block's workspace row once at the end. (They used
// to be read-modify-written in the workspace row for every row: 8-16 bytes of L2
// traffic and a dependent L2 load per element on top of ~10 bytes of real data.)
#include "cluster.cuh"
#include "gated_norm_bwd.cuh"

namespace gn {
namespace {

// Compiled for 2 blocks per SM (64 registers, ~100 bytes of spills) rather than 1
// without spills (109 registers): H100 bf16 forward+backward 0.41-0.53 vs 0.31-0.42
// for groups of 5000-16384.
// SPLIT: a block per (row, slice of a group), the slices of a group a cluster, as in
// fwd_loop; each block's dw/db partials are its slice's columns.
template <typename T, bool SPLIT>
__global__ void __launch_bounds__(LOOP_BLOCK, 2) bwd_loop(const gn_bwd_args a, const Layout L) {
  using A = acc_t<T>;
  constexpr int VEC = vec_size<T>();
  GN_DYN_SMEM(unsigned char, stage_raw);
  __shared__ TeamScratch<2, A> red;
  __shared__ ClusterScratch<2, A> cred;
  int phase = 0, cphase = 0;
  const gn_config& c = a.cfg;
  const int csize = SPLIT ? L.csize : 1;
  const int64_t G = c.group_size / csize, M = c.rows, N = c.cols, g = blockIdx.x / csize;
  const int64_t col0 = g * c.group_size + (SPLIT ? (int64_t)(blockIdx.x % csize) * G : 0);
  if (SPLIT) cluster_sum_init(cred, csize);
  const bool gate = a.z != nullptr, after = gate && c.norm_before_gate, st = L.staged, al = L.aligned;
  const bool want_b = a.bias && (a.out || after);
  // Thread-private staging: each thread re-reads only what it wrote.
  T* sx = reinterpret_cast<T*>(stage_raw);
  T* sdy = sx + G;
  T* sz = sdy + G;
  const int64_t nvec = (G + VEC - 1) / VEC;  // accumulator slot of (vector v, lane i): i * nvec + v
  A* acc_dw = reinterpret_cast<A*>(stage_raw + (st ? bwd_loop_stage_bytes<T>(G, gate) : 0));
  A* acc_db = acc_dw + (a.dw ? VEC * nvec : 0);
  A* ws_dw = static_cast<A*>(a.workspace) + (int64_t)blockIdx.y * N + col0;
  A* ws_db = ws_dw + (int64_t)gridDim.y * N;
  const int64_t step = (int64_t)blockDim.x * VEC;
  const bool wvec = params_vec_ok<VEC>(a.weight, col0, G), bvec = params_vec_ok<VEC>(a.bias, col0, G);

  if (L.acc_smem) {  // each thread zeroes the slots it will own: no barrier
    for (int64_t cj = (int64_t)threadIdx.x * VEC; cj < G; cj += step) {
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        if (a.dw) acc_dw[i * nvec + cj / VEC] = 0;
        if (a.db) acc_db[i * nvec + cj / VEC] = 0;
      }
    }
  }
  for (int64_t r = blockIdx.y; r < M; r += gridDim.y) {
    const bool first = r == (int64_t)blockIdx.y;
    const BwdRow<T> p = bwd_row<T>(a, r, col0);
    A mean, rstd;
    load_stats<A>(a, g, r, mean, rstd);
    A s[2] = {0, 0};
    for (int64_t cj = (int64_t)threadIdx.x * VEC; cj < G; cj += step) {
      A x[VEC], z[VEC], dy[VEC];
      load_vec<T, VEC>(p.x, cj, G, al, x);
      load_vec<T, VEC>(p.dy, cj, G, al, dy);
      if (gate) load_vec<T, VEC>(p.z, cj, G, al, z);
      if (st) {
        store_vec<T, VEC>(sx, cj, G, al, x);
        store_vec<T, VEC>(sdy, cj, G, al, dy);
        if (gate) store_vec<T, VEC>(sz, cj, G, al, z);
      }
      A wv[VEC];  // the sums need no bias (it enters y and dz only)
      load_params<A, VEC>(a.weight, c.param_dtype, col0 + cj, col0 + G, wvec, A(1), wv);
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        const Elem<A> e = elem_grad<A>(c.act, gate, after, x[i], gate ? z[i] : A(0), dy[i], wv[i], A(0), mean, rstd);
        s[0] += e.vhat * wv[i] * e.dy0;
        s[1] += wv[i] * e.dy0;
      }
    }
    team_sum<2>(s, blockDim.x, red, phase);
    if (SPLIT) cluster_sum<2>(s, csize, cred, cphase);
    const A c1 = s[0] / (A)c.group_size, c2 = c.is_rms_norm ? A(0) : s[1] / (A)c.group_size;
    const T* xs = st ? sx : p.x;
    const T* dys = st ? sdy : p.dy;
    const T* zs = st ? sz : p.z;
    for (int64_t cj = (int64_t)threadIdx.x * VEC; cj < G; cj += step) {
      A x[VEC], z[VEC], dy[VEC];  // become dx, dz, y (registers: see the launch bounds)
      load_vec<T, VEC, false>(xs, cj, G, al, x);
      load_vec<T, VEC, false>(dys, cj, G, al, dy);
      if (gate) load_vec<T, VEC, false>(zs, cj, G, al, z);
      const int64_t v = cj / VEC;
      A wv[VEC], bv[VEC];
      load_params<A, VEC>(a.weight, c.param_dtype, col0 + cj, col0 + G, wvec, A(1), wv);
      load_params<A, VEC>(want_b ? a.bias : nullptr, c.param_dtype, col0 + cj, col0 + G, bvec, A(0), bv);
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        const bool in = cj + i < G;
        const Elem<A> e =
            elem_grad<A>(c.act, gate, after, x[i], gate ? z[i] : A(0), dy[i], wv[i], bv[i], mean, rstd);
        A dxi, dzi;
        input_grads<A>(gate, after, e, x[i], wv[i], c1, c2, rstd, dxi, dzi);
        if (L.acc_smem) {  // padding columns add 0 (dy0 of a column past G is 0)
          if (a.dw) acc_dw[i * nvec + v] += in ? e.dy0 * e.vhat : A(0);
          if (a.db) acc_db[i * nvec + v] += in ? e.dy0 : A(0);
        } else {
          if (in && a.dw) ws_dw[cj + i] = (first ? A(0) : ws_dw[cj + i]) + e.dy0 * e.vhat;
          if (in && a.db) ws_db[cj + i] = (first ? A(0) : ws_db[cj + i]) + e.dy0;
        }
        x[i] = dxi;
        z[i] = dzi;
        dy[i] = e.y;
      }
      store_vec<T, VEC>(p.dx, cj, G, al, x);
      if (gate) store_vec<T, VEC>(p.dz, cj, G, al, z);
      if (p.out) store_vec<T, VEC>(p.out, cj, G, al, dy);
    }
  }
  if (L.acc_smem) {  // each thread flushes exactly the slots it accumulated: no barrier
    for (int64_t cj = (int64_t)threadIdx.x * VEC; cj < G; cj += step) {
      const int64_t v = cj / VEC;
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        if (cj + i >= G) continue;
        if (a.dw) ws_dw[cj + i] = acc_dw[i * nvec + v];
        if (a.db) ws_db[cj + i] = acc_db[i * nvec + v];
      }
    }
  }
  if (SPLIT) cluster_exit(csize);
}

template <typename T, bool SPLIT>
gn_status launch(const gn_bwd_args& a, Plan p, cudaStream_t s, unsigned& parts) {
  constexpr auto kernel = bwd_loop<T, SPLIT>;
  using A = acc_t<T>;
  constexpr int VEC = vec_size<T>();
  DeviceInfo dev;
  gn_status st = device_info(&dev);
  if (st != GN_OK) return st;
  // Shared memory: the accumulators save the most, then the staged rows (else the
  // second pass re-reads them, from L2 mostly). Within half an SM's shared memory
  // if they fit there (two blocks of 512 threads resident), else within a block's.
  const int64_t G = a.cfg.group_size / p.layout.csize;
  const size_t fixed = sizeof(TeamScratch<2, A>) + sizeof(ClusterScratch<2, A>) + 1024;
  const size_t whole = (size_t)dev.max_smem_optin - fixed, half = ((size_t)dev.max_smem_optin + 1024) / 2 - fixed;
  const size_t acc = (size_t)((G + VEC - 1) / VEC) * VEC * sizeof(A) * ((a.dw ? 1 : 0) + (a.db ? 1 : 0));
  const size_t stage = bwd_loop_stage_bytes<T>(G, a.z != nullptr);
  const size_t cap = acc + stage <= half || acc <= half ? half : whole;
  p.layout.acc_smem = acc > 0 && acc <= cap;
  const size_t acc_used = p.layout.acc_smem ? acc : 0;
  p.layout.staged = stage + acc_used <= cap;
  p.smem = (p.layout.staged ? stage : 0) + acc_used;
  if ((st = allow_smem<kernel>(p.smem, fixed)) != GN_OK) return st;
  const long long resident = resident_total<kernel>(p, p.smem, dev.sms);
  if (resident == 0) {  // split groups, not one cluster fits (a GPC short of free SMs)
    Plan loop = loop_plan(a.cfg, bwd_loop_stage_bytes<T>(a.cfg.group_size, a.z != nullptr), dev);
    loop.layout.aligned = p.layout.aligned;
    return launch<T, false>(a, loop, s, parts);
  }
  // No second wave: the blocks walk their rows persistently (fewer partials are fine).
  const dim3 grid = resident_grid(p.grid, resident);
  parts = grid.y;
  return launch_ex(kernel, grid, p.threads, p.smem, s, false, p.layout.csize, "gated_norm backward launch", a,
                   p.layout);
}

template <typename T>
gn_status launch_typed(const gn_bwd_args& a, const Plan& p, cudaStream_t s, unsigned& parts) {
  return p.layout.csize > 1 ? launch<T, true>(a, p, s, parts) : launch<T, false>(a, p, s, parts);
}

}  // namespace

gn_status launch_bwd_loop(const gn_bwd_args& a, const Plan& p, cudaStream_t s, unsigned& parts) {
  if (p.layout.aligned) return launch_bwd_loop_async(a, p, s, parts);
  return with_dtype(a.cfg.dtype, [&](auto t) { return launch_typed<typename decltype(t)::type>(a, p, s, parts); });
}

}  // namespace gn
