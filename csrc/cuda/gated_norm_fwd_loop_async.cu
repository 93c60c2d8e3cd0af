// Gated norm forward, loop path on aligned rows: the row's slice is staged in shared memory
// by cp.async, all of it at once.
//
// Why: the generic loop kernel (gated_norm_fwd_loop.cu) decides aligned / unaligned and
// staged / not per vector, so its SASS issues one 16-byte load, then waits for it to
// store it (shared memory) or use it, then the next: one load in flight per thread, 8 KB
// an SM at 512 threads. At ~1.5 us of loaded latency that is ~5.5 GB/s an SM, ~0.2 of
// the H200's copy ceiling -- what bign_1m (16 x 2^20) measured (0.21 H200, 0.28 H100).
// Here:
//  - every staged vector of the row is requested at once (cp.async holds no registers):
//    up to the whole slice (228 KB an SM) in flight;
//  - vectors that do not fit (the slice's x + z beyond shared memory) are read from
//    global memory in batches of LOOP_BATCH, every load of a batch issued before any
//    is used;
//  - the next row's copies are issued into each slot as soon as the last pass has
//    used it, so the next row streams in under this row's output.
// Slot s of thread t is stage[s * nt + t] (16 bytes; thread-private, so no barrier):
// x's vectors k < nx, then z's vectors k < nz, k the thread's k-th vector of the slice.
#include "cluster.cuh"
#include "gated_norm_fwd.cuh"
#include "loop_async.cuh"

namespace gn {
namespace {

// One block an SM by default (108-126 registers, no spills, sm_90): the staged slice of a
// 2^20-wide row fills its shared memory anyway. -DGN_LOOP_MIN_BLOCKS=2 -DGN_OUT_BATCH=1: 64
// registers (0-12 bytes of spills), two blocks an SM where the slice leaves room.
#ifndef GN_LOOP_MIN_BLOCKS
#define GN_LOOP_MIN_BLOCKS 1
#endif

template <typename T, bool SPLIT>
__global__ void __launch_bounds__(LOOP_BLOCK, GN_LOOP_MIN_BLOCKS) fwd_loop_async(const gn_fwd_args a, const Layout L,
                                                                const RowConsts<acc_t<T>> rc, const int slots) {
  using A = acc_t<T>;
  constexpr int VEC = vec_size<T>();
  static_assert(VEC * sizeof(T) == 16, "one 16-byte word a vector");
  GN_DYN_SMEM(uint4, stage);
  __shared__ TeamScratch<1, A> red;
  __shared__ ClusterScratch<1, A> cred;
  int phase = 0, cphase = 0;
  const gn_config& c = a.cfg;
  const int csize = SPLIT ? L.csize : 1;
  const int64_t G = c.group_size / csize, M = c.rows, g = blockIdx.x / csize;
  const int crank = SPLIT ? blockIdx.x % csize : 0;
  const int64_t col0 = g * c.group_size + (int64_t)crank * G;
  const int nt = blockDim.x, t = threadIdx.x;
  const int kn = (int)((G / VEC + nt - 1) / nt);  // vectors a thread per array
  const bool gate = a.z != nullptr, early = gate && !c.norm_before_gate, after = gate && c.norm_before_gate;
  const int nx = kn < slots ? kn : slots;
  const int nz = gate ? (kn < slots - nx ? kn : slots - nx) : 0;
  const bool wvec = params_vec_ok<VEC>(a.weight, col0, G), bvec = params_vec_ok<VEC>(a.bias, col0, G);
  auto col = [&](int k) { return ((int64_t)k * nt + t) * VEC; };
  auto slot = [&](int s) { return stage + (size_t)s * nt + t; };
  const uint4 zero = make_uint4(0, 0, 0, 0);
  // Vector k of x / z of this row: staged, or read from global memory (padding: zeros).
  auto read_x = [&](const FwdRow<T>& p, int k, bool in) {
    return !in ? zero : k < nx ? *slot(k) : __ldg(reinterpret_cast<const uint4*>(p.x + col(k)));
  };
  auto read_z = [&](const FwdRow<T>& p, int k, bool in) {
    return !in ? zero : k < nz ? *slot(nx + k) : __ldg(reinterpret_cast<const uint4*>(p.z + col(k)));
  };
  // The staged copies of row r: x's, committed, then z's, committed (two groups a row,
  // so a pass that needs only x waits for x alone). Out-of-range vectors copy nothing.
  auto issue_x = [&](const FwdRow<T>& p, int k) {
    const bool in = col(k) < G;
    cp_async16(slot(k), p.x + (in ? col(k) : 0), in);
  };
  auto issue_z = [&](const FwdRow<T>& p) {
    for (int k = 0; k < nz; ++k) {
      const bool in = col(k) < G;
      cp_async16(slot(nx + k), p.z + (in ? col(k) : 0), in);
    }
    cp_async_commit();
  };
  // v = x (* act(z) when z enters the statistics), for vectors k0 .. k0 + LOOP_BATCH - 1
  // below hi: all loads first, then `use(v, in)` per vector.
  auto values = [&](const FwdRow<T>& p, int k0, int hi, auto&& use) {
    uint4 xr[LOOP_BATCH], zr[LOOP_BATCH];
    bool in[LOOP_BATCH];
#pragma unroll
    for (int j = 0; j < LOOP_BATCH; ++j) {
      in[j] = k0 + j < hi && col(k0 + j) < G;
      xr[j] = read_x(p, k0 + j, in[j]);
      if (early) zr[j] = read_z(p, k0 + j, in[j]);
    }
#pragma unroll
    for (int j = 0; j < LOOP_BATCH; ++j) {
      A v[VEC], zz[VEC];
      unpack<T, VEC>(xr[j], v);
      if (early) {
        unpack<T, VEC>(zr[j], zz);
#pragma unroll
        for (int i = 0; i < VEC; ++i) v[i] *= act_fwd(zz[i], c.act);
      }
      use(v, in[j]);
    }
  };
  auto group_sum = [&](A(&v)[1]) {
    team_sum<1>(v, nt, red, phase);
    if (SPLIT) cluster_sum<1>(v, csize, cred, cphase);
  };
  if (SPLIT) cluster_sum_init(cred, csize);

  int64_t r = blockIdx.y;
  if (r < M) {
    const FwdRow<T> p = fwd_row<T>(a, r, col0);
    for (int k = 0; k < nx; ++k) issue_x(p, k);
    cp_async_commit();
    issue_z(p);
  }
  for (; r < M; r += gridDim.y) {
    const FwdRow<T> p = fwd_row<T>(a, r, col0);
    const int64_t rn = r + gridDim.y;
    const FwdRow<T> pn = fwd_row<T>(a, rn < M ? rn : r, col0);
    // Pass 1: the unstaged vectors first (their loads overlap the copies in flight),
    // then the staged ones.
    A s[1] = {0};
    auto add = [&](const A(&v)[VEC], bool) {  // padding is zeros: adds 0 (act(0) * 0 too)
#pragma unroll
      for (int i = 0; i < VEC; ++i) s[0] += c.is_rms_norm ? v[i] * v[i] : v[i];
    };
    for (int k0 = nx; k0 < kn; k0 += LOOP_BATCH) values(p, k0, kn, add);
    if (early) cp_async_wait<0>();
    else cp_async_wait<1>();
    for (int k0 = 0; k0 < nx; k0 += LOOP_BATCH) values(p, k0, nx, add);
    group_sum(s);
    A mean = 0, var = s[0] * rc.inv_g;
    if (!c.is_rms_norm) {  // pass 2 (LayerNorm): mean((v - mu)^2), padding left out
      mean = var;
      A q[1] = {0};
      auto dev2 = [&](const A(&v)[VEC], bool in) {
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          const A d = v[i] - mean;
          q[0] += in ? d * d : A(0);
        }
      };
      for (int k0 = 0; k0 < kn; k0 += LOOP_BATCH) values(p, k0, kn, dev2);
      group_sum(q);
      var = q[0] * rc.inv_g;
    }
    const A rstd = rsqrt_acc(var + rc.eps);
    if (!early) cp_async_wait<0>();  // z prefetched for the output
    // Last pass: normalise, affine, gate, store; then refill the x slots just used
    // with the next row (after the stores, which consumed what the slots held).
    for (int k0 = 0; k0 < kn; k0 += OUT_BATCH) {
      uint4 xr[OUT_BATCH], zr[OUT_BATCH];
      A wv[OUT_BATCH][VEC], bv[OUT_BATCH][VEC];
      bool in[OUT_BATCH];
#pragma unroll
      for (int j = 0; j < OUT_BATCH; ++j) {
        const int k = k0 + j;
        in[j] = k < kn && col(k) < G;
        xr[j] = read_x(p, k, in[j]);
        if (gate) zr[j] = read_z(p, k, in[j]);
        load_params<A, VEC>(a.weight, c.param_dtype, col0 + col(k), col0 + G, wvec, A(1), wv[j]);
        load_params<A, VEC>(a.bias, c.param_dtype, col0 + col(k), col0 + G, bvec, A(0), bv[j]);
      }
#pragma unroll
      for (int j = 0; j < OUT_BATCH; ++j) {
        if (!in[j]) continue;
        A v[VEC], zz[VEC];
        unpack<T, VEC>(xr[j], v);
        if (gate) unpack<T, VEC>(zr[j], zz);
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          const A az = gate ? act_fwd(zz[i], c.act) : A(1);
          A y = early ? v[i] * az : v[i];
          y = (y - mean) * rstd * wv[j][i] + bv[j][i];
          v[i] = after ? y * az : y;
        }
        store_vec<T, VEC>(p.out, col(k0 + j), G, true, v);
      }
      if (rn < M) {
#pragma unroll
        for (int j = 0; j < OUT_BATCH; ++j)
          if (k0 + j < nx) issue_x(pn, k0 + j);
      }
    }
    if (rn < M) {
      cp_async_commit();
      issue_z(pn);
    }
    if (t == 0 && crank == 0) store_stats<A>(a, g, r, mean, rstd);
  }
  cp_async_wait<0>();
  if (SPLIT) cluster_exit(csize);
}

template <typename T, bool SPLIT>
gn_status launch_async(const gn_fwd_args& a, const Plan& p, cudaStream_t s, const DeviceInfo& dev) {
  constexpr auto kernel = fwd_loop_async<T, SPLIT>;
  constexpr int VEC = vec_size<T>();
  const int nt = p.threads, csize = SPLIT ? p.layout.csize : 1;
  const int64_t kn = (a.cfg.group_size / csize / VEC + nt - 1) / nt;
  const int slots = loop_slots(kn * (a.z ? 2 : 1), dev.max_smem_optin, 1024, nt);
  const size_t smem = (size_t)slots * nt * 16;
  gn_status st = allow_smem<kernel>(smem);
  if (st != GN_OK) return st;
  const long long resident = resident_total<kernel>(p, smem, dev.sms);
  if (resident == 0) {  // split groups, not one cluster fits (a GPC short of free SMs)
    Plan loop = loop_plan(a.cfg, fwd_loop_stage_bytes<T>(a), dev);
    loop.layout.aligned = true;
    return launch_async<T, false>(a, loop, s, dev);
  }
  const dim3 grid = resident_grid(p.grid, resident);
  return launch_ex(kernel, grid, p.threads, smem, s, false, p.layout.csize, "gated_norm forward launch", a, p.layout,
                   row_consts<acc_t<T>>(a.cfg), slots);
}

template <typename T>
gn_status launch_typed(const gn_fwd_args& a, const Plan& p, cudaStream_t s) {
  DeviceInfo dev;
  gn_status st = device_info(&dev);
  if (st != GN_OK) return st;
  return p.layout.csize > 1 ? launch_async<T, true>(a, p, s, dev) : launch_async<T, false>(a, p, s, dev);
}

}  // namespace

gn_status launch_fwd_loop_async(const gn_fwd_args& a, const Plan& p, cudaStream_t s) {
  return with_dtype(a.cfg.dtype, [&](auto t) { return launch_typed<typename decltype(t)::type>(a, p, s); });
}

}  // namespace gn
