// Gated RMSNorm / LayerNorm forward (math: DESIGN section 2).
// One launch. Each input element is read once from global memory; statistics
// use two passes over data held in registers (or shared memory) so LayerNorm's
// variance is mean((v - mu)^2), never E[v^2] - mu^2.
#include "cluster.cuh"
#include "gated_norm_fwd.cuh"

namespace gn {
namespace {

// Bytes of the register path's dynamic shared memory: weight (and bias) as staged (SP) for
// the block's columns, then (aligned rows) the ring of `ring` rows of x (and z),
// one 16-byte slot per (stage, tensor, vector, thread).
template <typename A>
__host__ __device__ inline size_t fwd_params_bytes(int gpb, int64_t G, bool bias) {
  return ((size_t)gpb * G * sizeof(A) * (bias ? 2 : 1) + 15) / 16 * 16;
}
inline size_t fwd_ring_bytes(int nv, int threads, bool gate, int ring) {
  return (size_t)ring * (gate ? 2 : 1) * nv * threads * 16;
}
// The ring's rows unless the launcher picks FWD_SHORT_RING (launch_regs).
inline int default_ring(const Plan& p) { return p.layout.csize > 1 ? FWD_SPLIT_RING : FWD_RING; }

// cp.async.wait_group takes an immediate; the ring's depth is a run-time value (at most
// MAX + 1 rows): wait until at most n groups are in flight.
template <int MAX>
__device__ __forceinline__ void cp_async_wait_upto(int n) {
  if constexpr (MAX > 0) {
    if (n < MAX) return cp_async_wait_upto<MAX - 1>(n);
  }
  cp_async_wait<MAX>();
}

// Register path: see plan.h. Each thread owns columns (j * tpg + lt) * VEC + i of
// its group for j < NV, the same for every row it visits. Weight and bias sit in
// shared memory (fp32), not registers: registers bound occupancy. Aligned rows
// stream through a cp.async ring in shared memory, L.ring - 1 rows ahead of the
// one being reduced: the loads in flight per SM are bounded by shared memory, not
// by registers (a register prefetch needed ~100 registers a thread, which left 16
// warps per SM and ~16-32 KB in flight: 0.8 of the copy ceiling). The gate mode is
// a template parameter (GateMode, plan.h) so no mode holds values it does not use.
// SPLIT (the split register path, L.csize > 1): this CTA holds slice blockIdx.x %
// csize of group blockIdx.x / csize, one team a block; sums are finished across the
// cluster. A template parameter: with the cluster code merely branched around, the
// other kernels ran 7-14% slower (H100, N = 1024-8192).
// SP: the staged parameters' type: fp32 (A), or the rows' 16-bit dtype where launch_regs
// says (planar fp32 staging, or one 16-byte word a vector, linear).
template <typename T, int NV, bool ALIGNED, int MODE, bool SPLIT, typename SP = acc_t<T>>
__global__ void __launch_bounds__(FWD_MAX_TEAM, FWD_MIN_BLOCKS) fwd_regs(const gn_fwd_args a, const Layout L,
                                                                        const RowConsts<acc_t<T>> rc) {
  using A = acc_t<T>;
  constexpr int VEC = vec_size<T>(), K = NV * VEC;
  constexpr int SMAX = SPLIT ? FWD_SPLIT_RING : (FWD_RING > FWD_SHORT_RING ? FWD_RING : FWD_SHORT_RING);
  const int S = SPLIT ? FWD_SPLIT_RING : L.ring;  // the ring's rows (a constant for split CTAs)
  __shared__ TeamScratch<1, A> red;
  __shared__ ClusterScratch<1, A> cred;
  int phase = 0, cphase = 0;
  GN_DYN_SMEM(unsigned char, dyn);
  const gn_config& c = a.cfg;
  const int team = threadIdx.x / L.tpg, lt = threadIdx.x % L.tpg;
  const int gl = team % L.gpb, rl = team / L.gpb;
  const bool team_ok = rl < L.rpi;
  const int csize = SPLIT ? L.csize : 1;
  const int G = SPLIT ? (int)(c.group_size / csize) : (int)c.group_size;  // this CTA's columns of a group
  const int64_t M = c.rows;
  const int64_t g = (int64_t)(blockIdx.x / csize) * L.gpb + gl;
  const int crank = SPLIT ? blockIdx.x % csize : 0;  // the CTA's rank in its cluster (clusters run along x)
  const int64_t col0 = SPLIT ? g * c.group_size + (int64_t)crank * G : g * G;
  auto group_sum = [&](A(&v)[1]) {
    team_sum<1>(v, L.tpg, red, phase);
    if (SPLIT) cluster_sum<1>(v, csize, cred, cphase);
  };
  const bool gate = gate_on<MODE>(a.z), after = gate_after<MODE>(a.z, c.norm_before_gate);
  constexpr bool STAGED_T = !std::is_same_v<SP, A>;  // one 16-byte word a vector, linear
  SP* sw = reinterpret_cast<SP*>(dyn);
  SP* sb = a.bias ? sw + L.gpb * G : nullptr;
  const SP* tw = sw + gl * G;
  const SP* tb = sb ? sb + gl * G : nullptr;
  const int cl = lt * VEC, cs = L.tpg * VEC;  // vector j starts at column cl + j * cs

  uint4* ring = reinterpret_cast<uint4*>(dyn + fwd_params_bytes<SP>(L.gpb, G, a.bias != nullptr));
  const int narr = gate ? 2 : 1;
  auto slot = [&](int st, int arr, int j) { return ring + ((st * narr + arr) * NV + j) * blockDim.x + threadIdx.x; };
  const int64_t step = (int64_t)gridDim.y * L.rpi, rb0 = (int64_t)blockIdx.y * L.rpi;
  // Row pointers as cursors advanced by a constant each row, instead of base + row * stride
  // (64-bit multiplies, the clamp of rows past the end) recomputed for every tensor of every
  // row. Each issue() requests the cursor's row (rb0 + rl, then + step each call); copies
  // that read nothing take the tensor's base address.
  const T* const xb = static_cast<const T*>(a.x);
  const T* const zb = static_cast<const T*>(a.z);
  int64_t qr = rb0 + rl;
  const T* qx = xb + qr * a.x_stride + col0 + cl;
  const T* qz = gate ? zb + qr * a.z_stride + col0 + cl : zb;
  const int64_t qdx = step * a.x_stride, qdz = gate ? step * a.z_stride : 0;
  T* po = static_cast<T*>(a.out) + (rb0 + rl) * a.out_stride + col0;  // this row's out (aligned rows)
  const int64_t pdo = step * a.out_stride;
  auto issue = [&](int st) {  // one commit group per row, even an empty one
    const bool okn = team_ok && qr < M;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const bool in = okn && cl + j * cs < G;
      cp_async16(slot(st, 0, j), in ? qx + j * cs : xb, in);
      if (gate) cp_async16(slot(st, 1, j), in ? qz + j * cs : zb, in);
    }
    cp_async_commit();
    qr += step;
    qx += qdx;
    qz += qdz;
  };
  pdl_wait();
  if (ALIGNED) {
    for (int st = 0; st < S - 1; ++st) issue(st);
  }
  // Staged after the first rows are requested: both are in flight at once (with
  // one row per block, as in decode, this halves the latency).
  stage_params<A, SP>(a.weight, a.bias, c.param_dtype, SPLIT ? col0 : (int64_t)blockIdx.x * L.gpb * G, (int)(L.gpb * G),
                  sw, sb, ALIGNED ? VEC : 0);
  if (SPLIT) cluster_sum_init(cred, csize);

  int st = 0;  // the ring slot of this row
  // The output loop, called with literal HB (bias) and SG (sigmoid gate) at the sites
  // below: each inlined copy folds them, so no element pays a select for either (H200,
  // bf16: rms_z_4096 0.89 -> 0.94 of the copy ceiling, sigmoid 0.89 -> 0.95;
  // docs/data/h200_fwd_lean.txt).
  auto finish = [&](A(&v)[K], const FwdRow<T>& p, int lim, A rstd, const bool HB, const bool SG) {
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int cj = cl + j * cs;
      if (cj >= lim) continue;
      A zz[VEC];
      if (after) {  // z of a gate after the norm is read only now
        if (ALIGNED) unpack<T, VEC>(*slot(st, 1, j), zz);
        else load_vec<T, VEC>(p.z, cj, lim, false, zz);  // unaligned rows: read again (L1)
      }
      A wv[VEC], bv[VEC];
      if (ALIGNED && STAGED_T) {
        unpack<T, VEC>(*reinterpret_cast<const uint4*>(tw + cj), wv);
        if (HB) unpack<T, VEC>(*reinterpret_cast<const uint4*>(tb + cj), bv);
      } else if (ALIGNED) {
        const int nvt = L.gpb * G / VEC, vi = (gl * G + cj) / VEC;  // planar staging (ParamLayout)
        load_param_vec<A, VEC>(reinterpret_cast<const A*>(sw), nvt, vi, wv);
        if (HB) load_param_vec<A, VEC>(reinterpret_cast<const A*>(sb), nvt, vi, bv);
      } else {  // unaligned rows: scalar reads, guarded at the row's end
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          wv[i] = cj + i < lim ? (A)to_acc<SP>(tw[cj + i]) : A(0);
          bv[i] = HB && cj + i < lim ? (A)to_acc<SP>(tb[cj + i]) : A(0);
        }
      }
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        A y = v[j * VEC + i] * rstd * wv[i];
        if (HB) y += bv[i];
        if (after) {
          const A sz = sigmoid(zz[i]);
          y *= SG ? sz : zz[i] * sz;
        }
        v[j * VEC + i] = y;
      }
      store_vec<T, VEC>(p.out, cj, lim, ALIGNED, &v[j * VEC]);
    }
  };
  auto output = [&](A(&v)[K], const FwdRow<T>& p, int lim, A rstd) {
    const bool sg = after && c.act == GN_ACT_SIGMOID;  // without a gate after, one copy per bias
    if (tb) {
      if (sg) finish(v, p, lim, rstd, true, true);
      else finish(v, p, lim, rstd, true, false);
    } else {
      if (sg) finish(v, p, lim, rstd, false, true);
      else finish(v, p, lim, rstd, false, false);
    }
  };
#pragma unroll 1
  for (int64_t rb = rb0; rb < M; rb += step) {
    const int64_t r = rb + rl;
    const bool ok = team_ok && r < M;
    FwdRow<T> p;  // aligned rows read the ring and write through the cursor (never past the end: lim)
    if (ALIGNED) {
      p.x = p.z = nullptr;
      p.out = po;
      po += pdo;
    } else {
      p = fwd_row<T>(a, ok ? r : 0, col0);
    }
    const int lim = ok ? G : 0;  // idle teams read nothing but still reduce
    if (ALIGNED) {
      // The slot refilled here was read in the previous iteration, whose values
      // were all consumed (stored) before this point: no overwrite hazard.
      issue(st == 0 ? S - 1 : st - 1);  // row rb + (S - 1) * step + rl
      cp_async_wait_upto<SMAX - 1>(S - 1);
    }
    A v[K];
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int cj = cl + j * cs;
      if (ALIGNED) unpack<T, VEC>(*slot(st, 0, j), &v[j * VEC]);
      else load_vec<T, VEC>(p.x, cj, lim, false, &v[j * VEC]);
      if (gate && !after) {
        A zz[VEC];
        if (ALIGNED) unpack<T, VEC>(*slot(st, 1, j), zz);
        else load_vec<T, VEC>(p.z, cj, lim, false, zz);
#pragma unroll
        for (int i = 0; i < VEC; ++i) v[j * VEC + i] *= act_fwd(zz[i], c.act);
      }
    }
    A mean = 0;
    if (!c.is_rms_norm) {
      A s[1] = {0};
#pragma unroll
      for (int k = 0; k < K; ++k) s[0] += v[k];
      group_sum(s);
      mean = s[0] * rc.inv_g;
#pragma unroll
      for (int j = 0; j < NV; ++j)
#pragma unroll
        for (int i = 0; i < VEC; ++i)
          if (cl + j * cs + (ALIGNED ? 0 : i) < lim) v[j * VEC + i] -= mean;  // padding stays 0 (aligned: G % VEC == 0)
    }
    A ss[1] = {0};
#pragma unroll
    for (int k = 0; k < K; ++k) ss[0] += v[k] * v[k];
    group_sum(ss);
    const A rstd = rsqrt_acc(ss[0] * rc.inv_g + rc.eps);
    output(v, p, lim, rstd);
    if (ok && lt == 0 && crank == 0) store_stats<A>(a, g, r, mean, rstd);
    st = st + 1 == S ? 0 : st + 1;
  }
  if (ALIGNED) cp_async_wait<0>();  // the ring's trailing (empty) groups
  pdl_trigger();
  if (SPLIT) cluster_exit(csize);
}

template <typename T, typename SP = acc_t<T>>
size_t fwd_regs_smem(const gn_fwd_args& a, const Plan& p, int nv, bool aligned, int ring) {
  return fwd_params_bytes<SP>(p.layout.gpb, a.cfg.group_size / p.layout.csize, a.bias != nullptr) +
         (aligned ? fwd_ring_bytes(nv, p.threads, a.z != nullptr, ring) : 0);
}

template <typename T, int NV, bool ALIGNED, int MODE, bool SPLIT, typename SP = acc_t<T>>
gn_status launch_regs(const gn_fwd_args& a, const Plan& p, cudaStream_t s) {
  constexpr auto kernel = fwd_regs<T, NV, ALIGNED, MODE, SPLIT, SP>;
  Layout L = p.layout;
  L.ring = default_ring(p);
  size_t smem = fwd_regs_smem<T, SP>(a, p, NV, ALIGNED, L.ring);
  gn_status st = allow_smem<kernel>(smem);  // the largest ring asked for: a shorter one fits too
  if (st != GN_OK) return st;
  DeviceInfo dev;
  if ((st = device_info(&dev)) != GN_OK) return st;
  // Grid (plan.h, forward_grid), as measured on the H100 over GATEDNORM_ROW_ITERS (bf16,
  // fractions of the copy ceiling; docs/data/h100_row_iters_sweep.txt, then
  // h100_2026-12-05_session17.txt and _session18.txt):
  //  - 3+ resident blocks an SM: 2 row blocks a block, whose starts overlap the other
  //    blocks' work (N = 64..4096: 0.94-1.00 vs 0.83-0.85 persistent); 4 for blocks wider
  //    than FWD_BLOCK (whole-warp teams: G = 5000, 5120 take 320 threads);
  //  - the short ring (below; LN + bias at 4096, G = 5000 / 5120, N = 8192): 4 for
  //    FWD_BLOCK threads (0.983 vs 0.910 at 2), 2 for wider blocks (gate_before_5120 0.984
  //    vs 0.965 at 4; N = 8192 0.970 vs 0.958 at 4, 0.904 persistent);
  //  - two blocks an SM with the FWD_RING-row ring: 4 for wider blocks without a bias or
  //    FWD_BLOCK threads with one (0.929 vs 0.848 persistent), else persistent;
  //  - one block an SM: 8 (N = 8192 before the short ring: 0.92 vs 0.85);
  //  - teams with many idle lanes: persistent, or 8 with 3+ resident blocks
  //    (team_mostly_full).
  // Split groups: persistent (one cluster per resident slot), or the loop path when
  // not one cluster of the plan's CTAs fits (a GPC short of free SMs).
  long long resident = resident_total<kernel>(p, smem, dev.sms);
  int per_sm = resident_blocks<kernel>(p.threads, smem);
  // One or two blocks an SM: a FWD_SHORT_RING-row ring if that fits more (plan.h; measured on the
  // H100 only, so not on bandwidth-rich devices). Its occupancy has its own cache slot: no
  // driver query a call.
  if (ALIGNED && !SPLIT && per_sm <= 2 && !bandwidth_rich(dev) && FWD_SHORT_RING < L.ring) {
    const size_t short_smem = fwd_regs_smem<T, SP>(a, p, NV, ALIGNED, FWD_SHORT_RING);
    const int short_per_sm = resident_blocks<kernel, 1>(p.threads, short_smem);
    if (short_per_sm > per_sm) {
      L.ring = FWD_SHORT_RING;
      smem = short_smem;
      per_sm = short_per_sm;
      resident = (long long)per_sm * dev.sms;
    }
  }
  // Still one block an SM: 16-bit parameters of the rows' dtype staged as they are (half the
  // bytes, exact), if that fits more. LayerNorm + bias at 8192 (64 KB of fp32 parameters):
  // two blocks an SM on the short ring, forward bf16 0.852 -> 0.912, fp16 0.855 -> 0.935
  // (H100, twenty-sixth session; docs/data/h100_2026-12-06_session26.txt). Only there:
  // staging every 16-bit kernel so lost 1-7 % where two or more blocks fit already
  // (ln_bias_z_4096 0.993 -> 0.927, odd_n5000 0.894 -> 0.872; twenty-fifth session). Two
  // vectors a thread and a gate after: the one kernel of 16-bit rows that reaches one block
  // an SM (without z the ring is half: two fit). GATEDNORM_FWD_PARAMS_T=0 (read once) keeps
  // fp32 staging, for comparisons.
  if constexpr (sizeof(T) == 2 && std::is_same_v<SP, acc_t<T>> && ALIGNED && !SPLIT && NV == 2 &&
                MODE == GATE_AFTER) {
    static const bool params_t_on = knob_on("GATEDNORM_FWD_PARAMS_T");
    if (per_sm == 1 && (a.weight || a.bias) && a.cfg.param_dtype == a.cfg.dtype && !bandwidth_rich(dev) &&
        params_t_on) {
      // The opt-in first: the occupancy query counts no blocks past a kernel's allowed
      // dynamic shared memory (48 KB until opted in).
      constexpr auto t_kernel = fwd_regs<T, NV, ALIGNED, MODE, SPLIT, T>;
      const size_t t_smem = fwd_regs_smem<T, T>(a, p, NV, ALIGNED, FWD_SHORT_RING);
      if ((st = allow_smem<t_kernel>(t_smem)) != GN_OK) return st;
      if (resident_blocks<t_kernel, 1>(p.threads, t_smem) > 1) return launch_regs<T, NV, ALIGNED, MODE, SPLIT, T>(a, p, s);
    }
  }
  if (resident == 0) {
    Plan loop = loop_plan(a.cfg, fwd_loop_stage_bytes<T>(a), dev);
    loop.layout.aligned = ALIGNED;
    return launch_fwd_loop(a, loop, s);
  }
  constexpr int VEC = vec_size<T>();
  const bool full = team_mostly_full(a.cfg.group_size, VEC, p.layout.tpg, NV);
  const bool wide = p.threads > FWD_BLOCK;
  // Bandwidth-rich devices (plan.h; H200 bf16 over GATEDNORM_ROW_ITERS, ring 3:
  // docs/data/h200_row_iters.txt): 4 row blocks a block with 3+ resident blocks per SM
  // (N = 64..4096, groups of 1024: 0.84-0.94 vs 0.73-0.95 at 2, 0.80-0.85 persistent),
  // else persistent (gate_before_5120 0.91 vs 0.80 at 4; N = 8192 0.85 vs 0.73 at 8).
  const int preferred = p.layout.csize > 1    ? -1
                        : !full               ? (per_sm >= 3 ? 8 : -1)
                        : bandwidth_rich(dev) ? (per_sm >= 3 ? 4 : -1)
                        : L.ring < FWD_RING   ? (wide ? 2 : 4)
                        : per_sm >= 3         ? (wide ? 4 : 2)
                        : per_sm == 2         ? (wide == !a.bias ? 4 : -1)  // wide without bias, or FWD_BLOCK with
                        : a.bias              ? -1  // ln_bias_z_8192 bf16: 0.852 against 0.826 at 8
                                              : 8;
  const dim3 grid = forward_grid(preferred, p.grid, a.cfg.rows, p.layout.rpi, resident);
  return launch_pdl(kernel, grid, p.threads, smem, s, dev, "gated_norm forward launch", p.layout.csize, a, L,
                    row_consts<acc_t<T>>(a.cfg));
}

// The aligned register path per gate mode; fp64 (correctness, not speed) keeps
// the mode a run-time value: fewer instantiations to compile.
template <typename T, int NV, bool SPLIT = false>
gn_status launch_aligned(const gn_fwd_args& a, const Plan& p, cudaStream_t s) {
  if constexpr (sizeof(T) == 8) {
    return launch_regs<T, NV, true, GATE_RUNTIME, SPLIT>(a, p, s);
  } else {
    switch (gate_mode(a.z, a.cfg.norm_before_gate)) {
      case GATE_NONE: return launch_regs<T, NV, true, GATE_NONE, SPLIT>(a, p, s);
      case GATE_BEFORE: return launch_regs<T, NV, true, GATE_BEFORE, SPLIT>(a, p, s);
      default: return launch_regs<T, NV, true, GATE_AFTER, SPLIT>(a, p, s);
    }
  }
}

template <typename T>
gn_status launch_typed(const gn_fwd_args& a, Plan p, cudaStream_t s) {
  DeviceInfo dev;
  gn_status st = device_info(&dev);
  if (st != GN_OK) return st;
  p = fit_smem(p, fwd_regs_smem<T>(a, p, p.nv, p.layout.aligned, default_ring(p)), a.cfg,
               fwd_loop_stage_bytes<T>(a), dev);
  if constexpr (sizeof(T) <= 4) {
    bool done = false;
    if ((st = launch_fwd_decode(a, p, dev, s, &done)) != GN_OK || done) return st;
    if ((st = launch_fwd_block_row(a, p.layout.aligned, dev, s, &done)) != GN_OK || done) return st;
  }
  if (p.regs) {
    static_assert(FWD_MAX_VECS == 2, "instantiate the register path for every vector count");
    if (!p.layout.aligned) return p.nv == 1 ? launch_regs<T, 1, false, GATE_RUNTIME, false>(a, p, s) : GN_ERR_INVALID;
    if (p.layout.csize > 1) return p.nv == FWD_MAX_VECS ? launch_aligned<T, FWD_MAX_VECS, true>(a, p, s) : GN_ERR_INVALID;
    switch (p.nv) {
      case 1: return launch_aligned<T, 1>(a, p, s);
      case 2: return launch_aligned<T, 2>(a, p, s);
      default: return GN_ERR_INVALID;
    }
  }
  if (const int64_t chunks = fwd_wide_chunks(a.cfg, dev)) return launch_fwd_wide(a, p.layout.aligned, chunks, dev, s);
  return launch_fwd_loop(a, p, s);
}

}  // namespace
}  // namespace gn

extern "C" gn_status gn_cuda_fwd(const gn_fwd_args* a, void* stream) {
  using namespace gn;
  const gn_config& c = a->cfg;
  if (c.rows < 0 || c.cols <= 0 || c.group_size <= 0 || c.cols % c.group_size || !(c.eps >= 0) || !a->x ||
      !a->out || (a->mean && c.is_rms_norm))
    return GN_ERR_INVALID;
  if (c.rows == 0) return GN_OK;
  DeviceInfo dev;
  gn_status st = device_info(&dev);
  if (st != GN_OK) return st;
  const void* ptrs[3] = {a->x, a->z, a->out};
  const int64_t strides[3] = {a->x_stride, a->z_stride, a->out_stride};
  const Plan p = make_plan(c, false, fwd_loop_arrays(*a), rows_aligned(c, ptrs, strides, 3), dev, true);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  st = with_dtype(c.dtype, [&](auto t) { return launch_typed<typename decltype(t)::type>(*a, p, s); });
  if (st != GN_OK) return st;
  cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? GN_OK : cuda_fail(e, "gated_norm forward launch");
}
