// Gated norm forward, loop path: a block per (row, group), or per (row, slice of a
// group) split across a cluster; see the kernel's comment.
#include "cluster.cuh"
#include "gated_norm_fwd.cuh"

namespace gn {
namespace {

// Loop path: a block per (row, group); the group is walked in chunks of
// LOOP_BLOCK * VEC elements. x and z are staged in shared memory when they fit
// (plan.smem > 0), else re-read from global memory (L2) in the later passes.
// Compiled for 2 blocks of LOOP_BLOCK per SM (64 registers): left free, ptxas took 78
// (one block per SM) once team_sum's shuffle tree was inlined; at 64 the loop rows
// measured as before (N = 16384 0.56-0.57, 32768 0.37-0.38).
// SPLIT: a block per (row, slice of a group), the slices of a group a cluster
// (plan.cu: few rows of very wide groups); sums finished as in fwd_regs.
template <typename T, bool SPLIT>
__global__ void __launch_bounds__(LOOP_BLOCK, 2) fwd_loop(const gn_fwd_args a, const Layout L) {
  using A = acc_t<T>;
  constexpr int VEC = vec_size<T>();
  GN_DYN_SMEM(unsigned char, stage_raw);
  __shared__ TeamScratch<1, A> red;
  __shared__ ClusterScratch<1, A> cred;
  int phase = 0, cphase = 0;
  const gn_config& c = a.cfg;
  const int csize = SPLIT ? L.csize : 1;
  const int64_t G = c.group_size / csize, M = c.rows, g = blockIdx.x / csize;
  const int crank = SPLIT ? blockIdx.x % csize : 0;
  const int64_t col0 = g * c.group_size + crank * G;
  const A gsize = (A)c.group_size;
  auto group_sum = [&](A(&v)[1]) {
    team_sum<1>(v, blockDim.x, red, phase);
    if (SPLIT) cluster_sum<1>(v, csize, cred, cphase);
  };
  if (SPLIT) cluster_sum_init(cred, csize);
  const bool gate = a.z != nullptr, use_stage = L.staged;
  const bool z_early = gate && !c.norm_before_gate;  // z enters the statistics (fwd_loop_stage_bytes)
  // Staging is thread-private (each thread re-reads only what it wrote), so it
  // needs no barrier.
  T* sx = reinterpret_cast<T*>(stage_raw);
  T* sz = sx + G;
  const bool al = L.aligned;
  const int64_t step = (int64_t)blockDim.x * VEC;
  const bool wvec = params_vec_ok<VEC>(a.weight, col0, G), bvec = params_vec_ok<VEC>(a.bias, col0, G);

  for (int64_t r = blockIdx.y; r < M; r += gridDim.y) {
    const FwdRow<T> p = fwd_row<T>(a, r, col0);
    // pass 1: v = x (* act(z)); sum for the mean (LayerNorm) or sum of squares (RMS)
    A s[1] = {0};
#pragma unroll 4
    for (int64_t cj = (int64_t)threadIdx.x * VEC; cj < G; cj += step) {
      A v[VEC], zz[VEC];
      load_vec<T, VEC>(p.x, cj, G, al, v);
      if (use_stage) store_vec<T, VEC>(sx, cj, G, al, v);
      if (z_early) {
        load_vec<T, VEC>(p.z, cj, G, al, zz);
        if (use_stage) store_vec<T, VEC>(sz, cj, G, al, zz);
      }
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        A vi = z_early ? v[i] * act_fwd(zz[i], c.act) : v[i];
        s[0] += c.is_rms_norm ? vi * vi : vi;
      }
    }
    group_sum(s);
    const T* xs = use_stage ? sx : p.x;
    const T* zs = use_stage && z_early ? sz : p.z;
    A mean = 0, var = s[0] / gsize;
    if (!c.is_rms_norm) {  // pass 2 (LayerNorm): mean((v - mu)^2)
      mean = var;
      A q[1] = {0};
      for (int64_t cj = (int64_t)threadIdx.x * VEC; cj < G; cj += step) {
        A v[VEC], zz[VEC];
        load_vec<T, VEC, false>(xs, cj, G, al, v);
        if (z_early) load_vec<T, VEC, false>(zs, cj, G, al, zz);
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          if (cj + i >= G) continue;
          A d = (z_early ? v[i] * act_fwd(zz[i], c.act) : v[i]) - mean;
          q[0] += d * d;
        }
      }
      group_sum(q);
      var = q[0] / gsize;
    }
    const A rstd = rsqrt_acc(var + (A)c.eps);
    // last pass: normalise, affine, gate, store
    for (int64_t cj = (int64_t)threadIdx.x * VEC; cj < G; cj += step) {
      A v[VEC], zz[VEC], wv[VEC], bv[VEC];
      load_vec<T, VEC, false>(xs, cj, G, al, v);
      if (gate) load_vec<T, VEC, false>(zs, cj, G, al, zz);
      load_params<A, VEC>(a.weight, c.param_dtype, col0 + cj, col0 + G, wvec, A(1), wv);
      load_params<A, VEC>(a.bias, c.param_dtype, col0 + cj, col0 + G, bvec, A(0), bv);
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        const A az = gate ? act_fwd(zz[i], c.act) : A(1);
        A vi = z_early ? v[i] * az : v[i];
        vi = (vi - mean) * rstd * wv[i] + bv[i];
        v[i] = (gate && c.norm_before_gate) ? vi * az : vi;
      }
      store_vec<T, VEC>(p.out, cj, G, al, v);
    }
    if (threadIdx.x == 0 && crank == 0) store_stats<A>(a, g, r, mean, rstd);
  }
  if (SPLIT) cluster_exit(csize);
}

template <typename T, bool SPLIT>
gn_status launch_loop_kernel(const gn_fwd_args& a, const Plan& p, cudaStream_t s) {
  constexpr auto kernel = fwd_loop<T, SPLIT>;
  DeviceInfo dev;
  gn_status st = device_info(&dev);
  if (st != GN_OK) return st;
  if ((st = allow_smem<kernel>(p.smem)) != GN_OK) return st;
  const long long resident = resident_total<kernel>(p, p.smem, dev.sms);
  if (resident == 0) {  // split groups, not one cluster fits (a GPC short of free SMs)
    Plan loop = loop_plan(a.cfg, fwd_loop_stage_bytes<T>(a), dev);
    loop.layout.aligned = p.layout.aligned;
    return launch_loop_kernel<T, false>(a, loop, s);
  }
  // No second wave of blocks (G = 32K staged took one block per SM, the plan's grid two).
  const dim3 grid = resident_grid(p.grid, resident);
  return launch_ex(kernel, grid, p.threads, p.smem, s, false, p.layout.csize, "gated_norm forward launch", a,
                   p.layout);
}

template <typename T>
gn_status launch_typed(const gn_fwd_args& a, const Plan& p, cudaStream_t s) {
  return p.layout.csize > 1 ? launch_loop_kernel<T, true>(a, p, s) : launch_loop_kernel<T, false>(a, p, s);
}

}  // namespace

gn_status launch_fwd_loop(const gn_fwd_args& a, const Plan& p, cudaStream_t s) {
  if (p.layout.aligned) return launch_fwd_loop_async(a, p, s);
  return with_dtype(a.cfg.dtype, [&](auto t) { return launch_typed<typename decltype(t)::type>(a, p, s); });
}

}  // namespace gn
