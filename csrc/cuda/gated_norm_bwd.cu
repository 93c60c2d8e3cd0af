// Gated RMSNorm / LayerNorm backward (math: DESIGN section 2).
// One fused kernel computes dx, dz (and optionally the forward output again) from
// the saved statistics, and writes one fp32 dw/db partial per row block; a tiny
// second kernel sums the partials in a fixed order, so dw/db are bitwise
// deterministic (no float atomics).
#include "cluster.cuh"
#include "gated_norm_bwd.cuh"
#include "partials.cuh"

namespace gn {
namespace {

// Weight and bias of columns cj..cj+VEC of this team's group (its first staged
// column: gc0) from shared memory (bias 0 when it is not needed); columns past
// `lim` read as 0. Aligned kernels staged them planar (ParamLayout, nvt vectors) as A,
// or as the rows' 16-bit dtype T (SP = T: one 16-byte word a vector, linear).
template <typename A, typename T, typename SP, int VEC, bool ALIGNED>
__device__ __forceinline__ void load_weights(const SP* sw, const SP* sb, int gc0, int nvt, int cj, int lim, A* wv,
                                             A* bv) {
  if constexpr (!std::is_same_v<SP, A>) {
    static_assert(ALIGNED && std::is_same_v<SP, T>, "16-bit staging: aligned rows, the rows' dtype");
    unpack<T, VEC>(*reinterpret_cast<const uint4*>(sw + gc0 + cj), wv);
    if (sb) unpack<T, VEC>(*reinterpret_cast<const uint4*>(sb + gc0 + cj), bv);
  } else if (ALIGNED) {
    load_param_vec<A, VEC>(sw, nvt, (gc0 + cj) / VEC, wv);
    if (sb) load_param_vec<A, VEC>(sb, nvt, (gc0 + cj) / VEC, bv);
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      wv[i] = cj + i < lim ? sw[gc0 + cj + i] : A(0);
      if (sb) bv[i] = cj + i < lim ? sb[gc0 + cj + i] : A(0);
    }
  }
  if (!sb) {
#pragma unroll
    for (int i = 0; i < VEC; ++i) bv[i] = 0;
  }
}

// Register path (plan.h). Aligned rows stream through a cp.async ring in shared
// memory, BWD_RING - 1 rows ahead (see the forward): x, z, dy are read from it
// twice, for the group sums and then for the gradients, instead of being held in
// registers across the reduction, which leaves registers for occupancy. This
// thread's dw/db partial sums stay in registers; weight and bias in shared memory.
// SPLIT (the split register path, L.csize > 1): as in the forward, a slice of a
// group per CTA of a cluster; dw/db partials are per column, so each CTA writes its
// own slice's. A template parameter, as in the forward.
// SP: the staged parameters' type, fp32 (A) or, where launch_regs says, the rows' 16-bit
// dtype (as the forward's fwd_regs).
template <typename T, int NV, bool ALIGNED, int MODE, bool SPLIT, typename SP = acc_t<T>>
__global__ void __launch_bounds__(BWD_MAX_TEAM > BWD_BLOCK ? BWD_MAX_TEAM : BWD_BLOCK)
    bwd_regs(const gn_bwd_args a, const Layout L, const RowConsts<acc_t<T>> rc) {
  using A = acc_t<T>;
  constexpr int VEC = vec_size<T>(), K = NV * VEC, S = BWD_RING;
  __shared__ TeamScratch<2, A> red;
  __shared__ ClusterScratch<2, A> cred;
  int phase = 0, cphase = 0;
  GN_DYN_SMEM(unsigned char, dyn);
  const gn_config& c = a.cfg;
  const int team = threadIdx.x / L.tpg, lt = threadIdx.x % L.tpg;
  const int gl = team % L.gpb, rl = team / L.gpb;
  const bool team_ok = rl < L.rpi;
  const int csize = SPLIT ? L.csize : 1;
  const int G = SPLIT ? (int)(c.group_size / csize) : (int)c.group_size;  // this CTA's columns of a group
  const int64_t M = c.rows, N = c.cols;
  const int64_t g = (int64_t)(blockIdx.x / csize) * L.gpb + gl;
  // clusters run along x: a CTA's rank is blockIdx.x % csize
  const int64_t col0 = SPLIT ? g * c.group_size + (int64_t)(blockIdx.x % csize) * G : g * G;
  const bool gate = gate_on<MODE>(a.z), after = gate_after<MODE>(a.z, c.norm_before_gate);
  // Bias only enters y0 (gate after the norm, or a recomputed output).
  const bool want_b = a.bias && (a.out || after);
  SP* sw = reinterpret_cast<SP*>(dyn);
  SP* sb = want_b ? sw + L.gpb * G : nullptr;
  const int cl = lt * VEC, cs = L.tpg * VEC;  // vector j starts at column cl + j * cs

  const int bd = blockDim.x, narr = gate ? 3 : 2;  // ring tensors: x, dy, z
  uint4* ring = reinterpret_cast<uint4*>(dyn + bwd_params_bytes(L.gpb, G, want_b, sizeof(SP)));
  A* rstats = reinterpret_cast<A*>(ring + S * narr * NV * bd);  // [stage][rstd, mean][thread]
  A* part = reinterpret_cast<A*>(ring);  // after the rows: the cross-row fold of dw/db (plan.h)
  auto slot = [&](int st, int arr, int j) { return ring + ((st * narr + arr) * NV + j) * bd + threadIdx.x; };
  const int64_t step = (int64_t)gridDim.y * L.rpi, rb0 = (int64_t)blockIdx.y * L.rpi;
  auto issue = [&](int64_t rn, int st) {  // one commit group per row, even an empty one
    const bool okn = team_ok && rn < M;
    const BwdRow<T> q = bwd_row<T>(a, okn ? rn : 0, col0);
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int cj = cl + j * cs;
      const bool in = okn && cj < G;
      cp_async16(slot(st, 0, j), q.x + (in ? cj : 0), in);
      cp_async16(slot(st, 1, j), q.dy + (in ? cj : 0), in);
      if (gate) cp_async16(slot(st, 2, j), q.z + (in ? cj : 0), in);
    }
    const int64_t i = g * M + (okn ? rn : 0);
    cp_async_small<sizeof(A)>(rstats + (st * 2) * bd + threadIdx.x, static_cast<const A*>(a.rstd) + i, okn);
    if (!c.is_rms_norm) cp_async_small<sizeof(A)>(rstats + (st * 2 + 1) * bd + threadIdx.x,
                                                  static_cast<const A*>(a.mean) + i, okn);
    cp_async_commit();
  };
  if (ALIGNED) {
#pragma unroll
    for (int st = 0; st < S - 1; ++st) issue(rb0 + st * step + rl, st);
  }
  stage_params<A, SP>(a.weight, want_b ? a.bias : nullptr, c.param_dtype, SPLIT ? col0 : (int64_t)blockIdx.x * L.gpb * G,
                  (int)(L.gpb * G), sw, sb, ALIGNED ? VEC : 0);
  const int gc0 = gl * G, nvt = L.gpb * G / VEC;
  if (SPLIT) cluster_sum_init(cred, csize);

  A dw[K], db[K];
#pragma unroll
  for (int k = 0; k < K; ++k) dw[k] = db[k] = 0;

  int st = 0;  // the ring slot of this row
  // One row; called with a literal activation, so each inlined copy folds the
  // activation's selects out of both per-element passes (H200 bf16 forward+backward:
  // sigmoid_4096 0.82 -> 0.87 of the copy ceiling, rms_z_4096 0.81 -> 0.84, N = 64..8192
  // +0.02; docs/data/h200_bwd_lean.txt), and a literal `rms_no_db` (RMSNorm without db,
  // LEAN kernels only: below): mean 0 and c2 0 fold away, and neither the group sum of
  // w * dy0 nor db is kept (a row's loop 1034 -> 900 SASS instructions at 16 elements a
  // thread, 612 -> 527 at 8).
  auto row = [&](int64_t rb, const gn_act act, auto rms_no_db) {
    constexpr bool RMS = decltype(rms_no_db)::value;
    constexpr int NS = RMS ? 1 : 2;  // group sums: vhat * w * dy0, w * dy0
    const int64_t r = rb + rl;
    const bool ok = team_ok && r < M;
    const BwdRow<T> p = bwd_row<T>(a, ok ? r : 0, col0);
    const int lim = ok ? G : 0;
    A mean = 0, rstd = 0;
    if (ALIGNED) {
      issue(rb + (S - 1) * step + rl, st == 0 ? S - 1 : st - 1);  // refills the slot read last row
      cp_async_wait<S - 1>();
      rstd = rstats[(st * 2) * bd + threadIdx.x];
      if (!c.is_rms_norm) mean = rstats[(st * 2 + 1) * bd + threadIdx.x];
    } else if (ok) {
      load_stats<A>(a, g, r, mean, rstd);
    }
    if (RMS) mean = 0;  // a literal: the loads above are dead in this copy
    // x, dy, z of vector j: from the ring, or (unaligned rows) from global memory,
    // where the second read hits L1.
    auto row_vec = [&](int j, A* x, A* dy, A* z) {
      const int cj = cl + j * cs;
      if (ALIGNED) {
        unpack<T, VEC>(*slot(st, 0, j), x);
        unpack<T, VEC>(*slot(st, 1, j), dy);
        if (gate) unpack<T, VEC>(*slot(st, 2, j), z);
      } else {
        load_vec<T, VEC>(p.x, cj, lim, false, x);
        load_vec<T, VEC>(p.dy, cj, lim, false, dy);
        if (gate) load_vec<T, VEC>(p.z, cj, lim, false, z);
      }
    };
    // Elements past the group (padding, idle teams) contribute nothing.
    A s[NS] = {};
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int cj = cl + j * cs;
      if (cj >= lim) continue;
      A x[VEC], dy[VEC], z[VEC], wv[VEC], bv[VEC];
      row_vec(j, x, dy, z);
      load_weights<A, T, SP, VEC, ALIGNED>(sw, sb, gc0, nvt, cj, lim, wv, bv);
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        if (!ALIGNED && cj + i >= lim) continue;
        const Elem<A> e = elem_grad<A>(act, gate, after, x[i], gate ? z[i] : A(0), dy[i], wv[i], bv[i], mean, rstd);
        s[0] += e.vhat * wv[i] * e.dy0;
        if constexpr (!RMS) s[NS - 1] += wv[i] * e.dy0;
        dw[j * VEC + i] += e.dy0 * e.vhat;
        if constexpr (!RMS) db[j * VEC + i] += e.dy0;
      }
    }
    team_sum<NS>(s, L.tpg, red, phase);
    if (SPLIT) cluster_sum<NS>(s, csize, cred, cphase);
    const A c1 = s[0] * rc.inv_g, c2 = RMS || c.is_rms_norm ? A(0) : s[NS - 1] * rc.inv_g;
    // Recomputing the per-element terms is cheaper than keeping them in registers (with
    // more than 8 elements a thread; with fewer, keeping them was measured no faster: the
    // H100, 2026-12-05, docs/benchmarks.md).
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int cj = cl + j * cs;
      if (cj >= lim) continue;
      A x[VEC], dy[VEC], z[VEC], wv[VEC], bv[VEC];
      row_vec(j, x, dy, z);
      load_weights<A, T, SP, VEC, ALIGNED>(sw, sb, gc0, nvt, cj, lim, wv, bv);
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        const Elem<A> e = elem_grad<A>(act, gate, after, x[i], gate ? z[i] : A(0), dy[i], wv[i], bv[i], mean, rstd);
        A dxi, dzi;
        input_grads<A>(gate, after, e, x[i], wv[i], c1, c2, rstd, dxi, dzi);
        x[i] = dxi;  // reuse registers: x -> dx, z -> dz, dy -> y
        z[i] = dzi;
        dy[i] = e.y;
      }
      store_vec<T, VEC>(p.dx, cj, lim, ALIGNED, x);
      if (gate) store_vec<T, VEC>(p.dz, cj, lim, ALIGNED, z);
      if (p.out) store_vec<T, VEC>(p.out, cj, lim, ALIGNED, dy);
    }
    st = st + 1 == S ? 0 : st + 1;
  };
  using general = std::false_type;
  using lean_t = std::true_type;
  // The lean copy only where it was measured faster: 16 elements a thread (H100 bf16
  // forward+backward, GATEDNORM_BWD_LEAN on / off in one call, thirty-first session:
  // odd_n5000 0.810 -> 0.849, sweep_n16384 0.878 -> 0.912, rms_z_4096 0.925 -> 0.937,
  // sweep_n4096 0.890 -> 0.903). At 8 (one bf16 vector) it was mixed: lost with teams of
  // 64-256 threads (sweep_n1024 0.935 -> 0.896, its backward kernel 235 -> 251 us; sweep_n512,
  // sweep_n2048, mamba2_g1024 alike), level within a warp (qwen3next_prefill 0.792 either
  // way), and won with odd_n1200's 160 (0.838 -> 0.874): no rule yet (docs/pending).
  constexpr bool LEAN = K >= 16;
  if constexpr (MODE == GATE_RUNTIME) {  // unaligned rows, fp64: one copy (two spilled 80 bytes)
#pragma unroll 1
    for (int64_t rb = rb0; rb < M; rb += step) row(rb, c.act, general());
  } else {
    const bool sg = gate && c.act == GN_ACT_SIGMOID;  // without a gate, one activation
    const bool lean = LEAN && L.lean;
#pragma unroll 1
    for (int64_t rb = rb0; rb < M; rb += step) {
      if constexpr (LEAN) {
        if (sg) lean ? row(rb, GN_ACT_SIGMOID, lean_t()) : row(rb, GN_ACT_SIGMOID, general());
        else lean ? row(rb, GN_ACT_SILU, lean_t()) : row(rb, GN_ACT_SILU, general());
      } else {
        if (sg) row(rb, GN_ACT_SIGMOID, general());
        else row(rb, GN_ACT_SILU, general());
      }
    }
  }
  if (ALIGNED) {
    cp_async_wait<0>();  // the ring's trailing (empty) groups
    if (L.rpi > 1) __syncthreads();  // every thread's last row read from the ring the fold reuses
  }

  // Teams of different rows in this block own the same columns: fold them into
  // row 0's team in a fixed order, then write this row block's partial.
  A* ws_dw = static_cast<A*>(a.workspace) + (int64_t)blockIdx.y * N + col0;
  if (a.dw) fold_partial<A, K, VEC>(dw, part, ws_dw, L, rl, lt, G);
  if (a.db) fold_partial<A, K, VEC>(db, part, ws_dw + (int64_t)gridDim.y * N, L, rl, lt, G);
  if (SPLIT) cluster_exit(csize);
}

// The register path stages the bias only where it enters y0 (the kernel's want_b).
bool bwd_stages_bias(const gn_bwd_args& a) { return a.bias && (a.out || (a.z && a.cfg.norm_before_gate)); }

template <typename T, typename SP = acc_t<T>>
size_t bwd_regs_smem(const gn_bwd_args& a, const Plan& p) {
  return bwd_regs_bytes(p, a.cfg.group_size, bwd_stages_bias(a), sizeof(SP), a.z ? 3 : 2, vec_size<T>(),
                        sizeof(acc_t<T>));
}

// Launches the register-path kernel; `parts` gets the number of row blocks (dw/db
// partials) it was launched with.
template <typename T, int NV, bool ALIGNED, int MODE, bool SPLIT, typename SP = acc_t<T>>
gn_status launch_regs(const gn_bwd_args& a, const Plan& p, cudaStream_t s, unsigned& parts) {
  using A = acc_t<T>;
  constexpr auto kernel = bwd_regs<T, NV, ALIGNED, MODE, SPLIT, SP>;
  const size_t smem = bwd_regs_smem<T, SP>(a, p);
  gn_status st = allow_smem<kernel>(smem);
  if (st != GN_OK) return st;
  DeviceInfo dev;
  if ((st = device_info(&dev)) != GN_OK) return st;
  const long long resident = resident_total<kernel>(p, smem, dev.sms);
  // 16-bit weight and bias of the rows' dtype staged as they are (half the bytes, exact) if
  // that keeps as many blocks resident, as the forward does (gated_norm_fwd.cu). LayerNorm +
  // bias + gate after, split in slices of 4096 columns (16384 over 4 CTAs; 8192 over 2 until
  // the fold moved into the ring and it fit unsplit): 32 KB of fp32 weight and bias + 78 KB
  // of ring, with the fold then static (16.5 KB), left one 256-thread block an SM; 16 KB of
  // 16-bit ones two. H100 forward+backward, bf16 / fp16: ln_bias_z_8192 0.767 -> 0.835 /
  // 0.765 -> 0.850, ln_bias_z_16384 0.697 -> 0.787 / 0.698 -> 0.818. Split slices only:
  // their clusters wait on each other every row, which a second block an SM hides; the
  // unsplit block at 4096 gained nothing (bf16 +0.9 %, fp16 -1.0 %). Since the fold reuses
  // the ring (plan.h, bwd_stream_bytes), fp32 staging fits two such blocks on the H100 (2 x
  // 113 KB of its 228) and 16-bit staging is kept where it fits as many (ln_bias_z_16384
  // against fp32 staging: fp16 0.840 -> 0.865, bf16 0.836 -> 0.826). Only LayerNorm + bias +
  // gate after comes near (without the bias or the gate, or with the gate before, the ring
  // is smaller; 512-thread blocks stay at one an SM by their registers).
  // GATEDNORM_BWD_PARAMS_T=0 (read once) keeps fp32 staging, for comparisons.
  if constexpr (sizeof(T) == 2 && std::is_same_v<SP, A> && ALIGNED && SPLIT && NV == 2 && MODE == GATE_AFTER) {
    static const bool params_t_on = knob_on("GATEDNORM_BWD_PARAMS_T");
    if (params_t_on && resident > 0 && a.bias && a.cfg.param_dtype == a.cfg.dtype &&
        !bandwidth_rich(dev)) {
      // The opt-in first: the occupancy query counts no blocks past a kernel's allowed
      // dynamic shared memory (48 KB until opted in).
      constexpr auto t_kernel = bwd_regs<T, NV, ALIGNED, MODE, SPLIT, T>;
      const size_t t_smem = bwd_regs_smem<T, T>(a, p);
      if ((st = allow_smem<t_kernel>(t_smem)) != GN_OK) return st;
      if (resident_total<t_kernel>(p, t_smem, dev.sms) >= resident)
        return launch_regs<T, NV, ALIGNED, MODE, SPLIT, T>(a, p, s, parts);
    }
  }
  if (resident == 0) {  // split groups, not one cluster fits (a GPC short of free SMs)
    Plan loop = loop_plan(a.cfg, bwd_loop_stage_bytes<T>(a.cfg.group_size, a.z != nullptr), dev);
    loop.layout.aligned = ALIGNED;
    return launch_bwd_loop(a, loop, s, parts);
  }
  const dim3 grid = resident_grid(p.grid, resident);
  parts = grid.y;
  Layout L = p.layout;
  // The kernel's lean row copy (RMSNorm without db; kernels of 16 elements a thread).
  // GATEDNORM_BWD_LEAN=0 (read once) keeps the general copy, for comparisons.
  static const bool lean_on = knob_on("GATEDNORM_BWD_LEAN");
  L.lean = lean_on && a.cfg.is_rms_norm && !a.db;
  return launch_ex(kernel, grid, p.threads, smem, s, false, p.layout.csize, "gated_norm backward launch", a, L,
                   row_consts<A>(a.cfg));
}

// The aligned register path per gate mode; fp64 keeps the mode a run-time value.
template <typename T, int NV, bool SPLIT = false>
gn_status launch_aligned(const gn_bwd_args& a, const Plan& p, cudaStream_t s, unsigned& parts) {
  if constexpr (sizeof(T) == 8) {
    return launch_regs<T, NV, true, GATE_RUNTIME, SPLIT>(a, p, s, parts);
  } else {
    switch (gate_mode(a.z, a.cfg.norm_before_gate)) {
      case GATE_NONE: return launch_regs<T, NV, true, GATE_NONE, SPLIT>(a, p, s, parts);
      case GATE_BEFORE: return launch_regs<T, NV, true, GATE_BEFORE, SPLIT>(a, p, s, parts);
      default: return launch_regs<T, NV, true, GATE_AFTER, SPLIT>(a, p, s, parts);
    }
  }
}

template <typename T>
gn_status launch_typed(const gn_bwd_args& a, Plan p, cudaStream_t s) {
  using A = acc_t<T>;
  DeviceInfo dev;
  gn_status st = device_info(&dev);
  if (st != GN_OK) return st;
  p = fit_smem(p, bwd_regs_smem<T>(a, p), a.cfg,
               bwd_loop_stage_bytes<T>(a.cfg.group_size, a.z != nullptr), dev);
  unsigned parts = p.grid.y;
  if (p.regs) {
    constexpr int MAX_NV = BWD_WIDE_ELEMS / vec_size<T>();
    constexpr int SPLIT_NV = MAX_NV > 4 ? 4 : MAX_NV;  // plan.cu: a split slice holds the most a thread takes
    if (!p.layout.aligned) {
      st = p.nv == 1 ? launch_regs<T, 1, false, GATE_RUNTIME, false>(a, p, s, parts) : GN_ERR_INVALID;
    } else if (p.layout.csize > 1) {
      st = p.nv == SPLIT_NV ? launch_aligned<T, SPLIT_NV, true>(a, p, s, parts) : GN_ERR_INVALID;
    } else {
      switch (p.nv) {
        case 1: st = launch_aligned<T, 1>(a, p, s, parts); break;
        case 2: st = launch_aligned<T, (MAX_NV >= 2 ? 2 : 1)>(a, p, s, parts); break;
        case 4: st = launch_aligned<T, (MAX_NV >= 4 ? 4 : 1)>(a, p, s, parts); break;
        default: st = GN_ERR_INVALID;
      }
    }
  } else if (const WideBwd w = bwd_wide_layout(a.cfg, dev); w.sum_chunks) {
    st = launch_bwd_wide(a, p.layout.aligned, w, dev, s);
    parts = (unsigned)w.row_splits;
  } else {
    st = launch_bwd_loop(a, p, s, parts);
  }
  if (st != GN_OK) return st;
  if (a.dw || a.db) {
    launch_reduce<A>(a.workspace, parts, a.cfg.cols, a.dw, a.db, a.cfg.param_dtype, s);
  }
  return GN_OK;
}

gn_status plan_bwd(const gn_config& c, const gn_bwd_args* a, Plan* p) {
  DeviceInfo dev;
  gn_status st = device_info(&dev);
  if (st != GN_OK) return st;
  bool aligned = false;
  if (a) {
    const void* ptrs[6] = {a->x, a->z, a->dy, a->dx, a->dz, a->out};
    const int64_t strides[6] = {a->x_stride, a->z_stride, a->dy_stride, a->dx_stride, a->dz_stride, a->out_stride};
    aligned = rows_aligned(c, ptrs, strides, 6);
  }
  *p = make_plan(c, true, a && a->z ? 3 : 2, aligned, dev, true, a && bwd_stages_bias(*a));
  return GN_OK;
}

}  // namespace
}  // namespace gn

// One dw and one db partial row per row block. The plan (and so the number of
// row blocks) depends on the alignment of the pointers, which this query does
// not see: size for the largest of the plans ...
extern "C" size_t gn_cuda_bwd_workspace_bytes(const gn_config* c) {
  if (c->rows <= 0 || c->cols <= 0 || c->group_size <= 0 || c->cols % c->group_size) return 16;
  gn::DeviceInfo dev;
  if (gn::device_info(&dev) != GN_OK) return 16;
  // ... nor, on aligned rows, the tensors it stages (with or without z and a bias: the
  // ring's size can send a group to the split path; unaligned rows never split); and for
  // the loop path a device short of shared memory falls back to (fit_smem).
  size_t parts = gn::loop_plan(*c, 0, dev).grid.y;
  auto take = [&](const gn::Plan& p) { parts = p.grid.y > parts ? p.grid.y : parts; };
  take(gn::make_plan(*c, true, 3, false, dev, true));
  for (int narrays = 2; narrays <= 3; ++narrays)
    for (const bool bias : {false, true}) take(gn::make_plan(*c, true, narrays, true, dev, true, bias));
  const size_t acc = gn::acc_bytes(c->dtype), partials = 2 * parts * (size_t)c->cols * acc;
  const size_t wide = gn::bwd_wide_workspace_bytes(*c, gn::bwd_wide_layout(*c, dev));
  return partials > wide ? partials : wide;
}

extern "C" gn_status gn_cuda_bwd(const gn_bwd_args* a, void* stream) {
  using namespace gn;
  const gn_config& c = a->cfg;
  if (c.rows < 0 || c.cols <= 0 || c.group_size <= 0 || c.cols % c.group_size || !(c.eps >= 0) || !a->x ||
      !a->dy || !a->dx || !a->rstd || (!c.is_rms_norm && !a->mean) || (a->z && !a->dz) ||
      ((a->dw || a->db) && !a->workspace))
    return GN_ERR_INVALID;
  if (c.rows == 0) return GN_OK;
  Plan p;
  gn_status st = plan_bwd(c, a, &p);
  if (st != GN_OK) return st;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  st = with_dtype(c.dtype, [&](auto t) { return launch_typed<typename decltype(t)::type>(*a, p, s); });
  if (st != GN_OK) return st;
  cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? GN_OK : cuda_fail(e, "gated_norm backward launch");
}
