// Launch planning and error reporting for the CUDA kernels (host code only).
#include <stdio.h>
#include <stdlib.h>

#include "plan.h"

namespace gn {

static thread_local char g_error[256];

gn_status cuda_fail(cudaError_t e, const char* what) {
  snprintf(g_error, sizeof g_error, "%s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
  return GN_ERR_CUDA;
}

}  // namespace gn

extern "C" const char* gn_cuda_error_string(void) { return gn::g_error; }

namespace gn {

gn_status device_info(DeviceInfo* out) {
  constexpr int MAX_DEVICES = 64;
  static DeviceInfo cache[MAX_DEVICES];  // zero = not queried yet; benign race: same values
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return cuda_fail(e, "cudaGetDevice");
  if (dev < MAX_DEVICES && cache[dev].sms > 0) {
    *out = cache[dev];
    return GN_OK;
  }
  DeviceInfo d{};
  e = cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&d.max_smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&d.major, cudaDevAttrComputeCapabilityMajor, dev);
  if (e != cudaSuccess) return cuda_fail(e, "cudaDeviceGetAttribute");
  int mem_khz = 0, bus_bits = 0;  // optional: a device without them keeps the H100-measured policies
  if (cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, dev) != cudaSuccess) {
    (void)cudaGetLastError();
    mem_khz = bus_bits = 0;
  }
  d.dram_gbps = (int)((long long)mem_khz * bus_bits * 2 / 8 / 1000000);  // double data rate
  if (dev < MAX_DEVICES) cache[dev] = d;
  *out = d;
  return GN_OK;
}

static int next_pow2(int64_t v) {
  int p = 1;
  while (p < v) p <<= 1;
  return p;
}

// Threads of a team of which `busy` hold data: a power of two up to a warp (team_sum
// reduces those with xor shuffles), else whole warps (team_sum adds any number), so
// a group of 5120 bf16 (640 vectors, 2 a thread) takes 320 threads, not 512 with
// 192 idle (H100, gate_before_5120 forward: 0.80 -> 0.95 with the grid of forward_grid).
static int team_threads(int64_t busy) {
  return busy <= 32 ? next_pow2(busy) : (int)((busy + 31) / 32 * 32);
}

bool rows_aligned(const gn_config& cfg, const void* const* ptrs, const int64_t* strides, int n) {
  const int64_t vec = 16 / (int64_t)gn_dtype_size(cfg.dtype);
  if (cfg.group_size % vec) return false;
  for (int i = 0; i < n; ++i) {
    if (!ptrs[i]) continue;
    if ((uintptr_t)ptrs[i] % 16 || strides[i] % vec) return false;
  }
  return true;
}

// Resident blocks per SM we aim for with a persistent grid (more would only queue).
static int blocks_per_sm(int threads) { return threads >= 1024 ? 2 : 2048 / threads; }

// GATEDNORM_FWD_VECS / GATEDNORM_BWD_VECS=k (read once; for tuning sweeps): aligned,
// unsplit groups of 16- and 32-bit types take k vectors a thread in the forward (1 or 2) /
// the backward (1, 2 or 4, at most BWD_WIDE_ELEMS elements) instead of the fewest that keep
// a team within a warp. More elements a thread spread the per-row work (team sums, the
// statistics, the ring bookkeeping: about half the instructions of a 16-element row on the
// H200, SASS) over more of them; the H200's kernels are issue-bound.
static int vecs_override(bool backward) {
  auto read = [](const char* name, int max) {
    const char* e = getenv(name);
    const int k = e ? atoi(e) : 0;
    return (k == 1 || k == 2 || k == 4) && k <= max ? k : 0;
  };
  static const int fwd = read("GATEDNORM_FWD_VECS", FWD_MAX_VECS), bwd = read("GATEDNORM_BWD_VECS", 4);
  return backward ? bwd : fwd;
}

// Aligned 16-bit gated RMSNorm backward groups of up to BWD_MAX_TEAM vectors (2049-4096
// columns) keep BWD_MAX_ELEMS a thread in teams of up to 512 threads, not BWD_WIDE_ELEMS in
// teams of up to 256 (plan.h). H100 forward+backward, thirty-fourth session, on / off
// interleaved (docs/data/h100_2026-12-07_session34.txt): rms_z_4096 bf16 0.939 -> 0.960, fp16
// 0.940 -> 0.972, sigmoid_4096 bf16 0.941 -> 0.974, fp16 0.944 -> 0.984, sweep_n4096 bf16 0.901
// -> 0.929, fp16 0.897 -> 0.943. Without a gate they lost far (rms_noz_4096 bf16 0.944 ->
// 0.845: the 16-element kernels' lean copy), fp32 by 0.3-0.6 %, and LayerNorm (ln_bias_z_4096
// bf16 0.920 -> 0.903 under GATEDNORM_BWD_VECS=1): those keep the wide elements.
// GATEDNORM_BWD_RMS_TEAMS=0 (read once) keeps them everywhere, for comparisons.
static bool bwd_rms_teams() {
  static const bool on = knob_on("GATEDNORM_BWD_RMS_TEAMS");
  return on;
}

// The register-path layout of groups of `nvec` vectors (`ngroups` of them; `split`:
// a slice per CTA, one team a block): false when a team would exceed the kernel's.
static bool regs_layout(Plan& p, const gn_config& cfg, bool backward, int narrays, int64_t nvec, int64_t ngroups,
                        bool split, const DeviceInfo& dev) {
  const int64_t vec = 16 / (int64_t)gn_dtype_size(cfg.dtype), M = cfg.rows;
  int max_nv = backward ? (int)(BWD_MAX_ELEMS / vec) : FWD_MAX_VECS;
  // plan.h, BWD_WIDE_ELEMS: aligned groups wider than a BWD_BLOCK team at BWD_MAX_ELEMS
  // (unaligned ones take one vector a thread, up to BWD_MAX_TEAM threads; so do aligned
  // 16-bit gated RMSNorm groups: bwd_rms_teams).
  const bool rms_teams = cfg.is_rms_norm && narrays == 3 && gn_dtype_size(cfg.dtype) == 2 && bwd_rms_teams();
  const int narrow_team = p.layout.aligned && !rms_teams ? BWD_BLOCK : BWD_MAX_TEAM;
  if (backward && (split || nvec > (int64_t)narrow_team * max_nv)) max_nv = (int)(BWD_WIDE_ELEMS / vec);
  const int max_team = backward ? BWD_MAX_TEAM : FWD_MAX_TEAM;
  const int block = backward ? BWD_BLOCK : FWD_BLOCK;

  // Fewest vectors per thread that keep the team within a warp; else the most.
  int nv = 1;
  const int nv_cap = cfg.dtype == GN_FLOAT64 && max_nv > 4 ? 4 : max_nv;  // fp64: correctness, not speed
  while (nv < nv_cap && (split || nvec > 32 * (int64_t)nv)) nv <<= 1;  // split slices: the most (one kernel each)
  const int asked = split || !p.layout.aligned || vec < 4 ? 0 : vecs_override(backward);
  if (asked) {
    const int most = backward ? (int)(BWD_WIDE_ELEMS / vec) : FWD_MAX_VECS;
    nv = asked < most ? asked : most;
  }
  const int tpg = team_threads((nvec + nv - 1) / nv);
  // Unaligned rows (odd group sizes, offset views) take the register path only
  // with one vector per thread; wider ones go to the loop path.
  if (tpg > max_team || !(p.layout.aligned || nv == 1)) return false;
  p.regs = true;
  p.nv = nv;
  p.layout.tpg = tpg;
  const int teams = split || tpg >= block ? 1 : block / tpg;
  p.threads = teams * tpg;
  int gpb = (int)(ngroups < teams ? ngroups : teams);
  while (ngroups % gpb) --gpb;  // a divisor, so every block owns whole groups
  p.layout.gpb = gpb;
  p.layout.rpi = teams / gpb;
  const int64_t gy = ngroups / gpb;
  const int64_t want = (M + p.layout.rpi - 1) / p.layout.rpi;
  int64_t cap = (int64_t)dev.sms * blocks_per_sm(p.threads) / gy;
  if (cap < 1) cap = 1;
  p.grid = dim3((unsigned)gy, (unsigned)(want < cap ? want : cap), 1);
  return true;
}

// The split register path's slice (16-byte vectors a CTA): CLUSTER_SLICE_VECS, halved for
// the backward of groups of three to four such slices (16-bit 32768, fp32 16384: eight
// CTAs, not four): there 256-thread CTAs, two an SM, beat 512-thread ones, one an SM by
// registers (twenty-seventh session, H100 forward+backward: ln_z_32768 bf16 0.814 -> 0.854,
// sweep_n32768 bf16 0.842 -> 0.855, fp32 sweep_n16384 0.895 -> 0.909); at 16-bit 16384 (2
// CTAs against 4) they lose (0.901 -> 0.870), and so do they past four slices, where halving
// doubles a cluster of eight to sixteen (thirty-first session, two runs each: sweep_n65536
// bf16 0.833 -> 0.840, fp16 0.842 -> 0.860, fp32 sweep_n32768 0.894 -> 0.905; past eight
// slices sixteen CTAs take 1024 vectors either way; the rule as built in, against
// GATEDNORM_SLICE_VECS=512, thirty-second session: sweep_n65536 bf16 0.832 -> 0.839, fp16 0.842
// -> 0.868, fp32 sweep_n32768 0.893 -> 0.907). GATEDNORM_SLICE_VECS=k (read once) sets every
// slice, forward and backward, for tuning.
static int slice_vecs(bool backward, int64_t nvec) {
  static const int asked = [] {
    const char* e = getenv("GATEDNORM_SLICE_VECS");
    const int k = e ? atoi(e) : 0;
    return k > 0 ? k : 0;  // 0: the defaults below
  }();
  if (asked) return asked;
  const bool halve = backward && nvec > 2LL * CLUSTER_SLICE_VECS && nvec <= 4LL * CLUSTER_SLICE_VECS;
  return halve ? CLUSTER_SLICE_VECS / 2 : CLUSTER_SLICE_VECS;
}

// The loop path's largest cluster. GATEDNORM_LOOP_CLUSTER=k (1, 2, 4, 8 or 16; read once)
// overrides CLUSTER_MAX for tuning: 16 rows of 2^20 split 16 ways make 16 clusters of 16
// CTAs, more than an H100 holds at once (a cluster of 16 needs 16 free SMs of one GPC),
// so they may run in waves where clusters of 8 would run in one.
static int loop_cluster_max() {
  static const int v = [] {
    const char* e = getenv("GATEDNORM_LOOP_CLUSTER");
    const int k = e ? atoi(e) : 0;
    return k >= 1 && k <= CLUSTER_MAX && (k & (k - 1)) == 0 ? k : CLUSTER_MAX;
  }();
  return v;
}

// Whether the backward register path's shared memory (plan.h, bwd_params_bytes) fits a
// block of this device.
static bool bwd_regs_fit(const Plan& p, const gn_config& cfg, int narrays, bool bias, const DeviceInfo& dev) {
  const size_t acc = acc_bytes(cfg.dtype);
  const int vec = 16 / (int)gn_dtype_size(cfg.dtype);
  return bwd_regs_bytes(p, cfg.group_size, bias, acc, narrays, vec, acc) <= (size_t)dev.max_smem_optin - 1024;
}

// GATEDNORM_SMEM_SPLIT=0 (read once; for comparisons): groups whose unsplit plan overflows
// shared memory keep it (the register path's overflow then takes the loop path, the loop
// path's stages what fits).
static bool smem_split_on() {
  static const bool on = [] {
    const char* e = getenv("GATEDNORM_SMEM_SPLIT");
    return !(e && atoi(e) == 0);
  }();
  return on;
}

Plan make_plan(const gn_config& cfg, bool backward, int narrays, bool aligned, const DeviceInfo& dev, bool split,
               bool bwd_bias) {
  Plan p{};
  const int64_t vec = 16 / (int64_t)gn_dtype_size(cfg.dtype);
  const int64_t G = cfg.group_size, ngroups = cfg.cols / G;
  const int64_t nvec = (G + vec - 1) / vec;
  p.layout.aligned = aligned;
  p.layout.csize = 1;
  split = split && aligned && dev.major >= 9 && built_for_clusters();
  const bool smem_split = split && smem_split_on();
  // A backward team whose ring overflows shared memory (fp32 groups of 4097-8192 with a
  // gate: 300 KB at 512 threads) splits over a cluster, a split one (fp32 131072: 2048
  // vectors a slice) takes the split loop path below, rather than fit_smem's loop path of
  // a CTA a row.
  auto fits = [&] { return !backward || !smem_split || bwd_regs_fit(p, cfg, narrays, bwd_bias, dev); };
  if (regs_layout(p, cfg, backward, narrays, nvec, ngroups, false, dev) && fits()) return p;
  p = Plan{};
  p.layout.aligned = aligned;
  p.layout.csize = 1;
  // Too wide for one block (or its ring): a slice of at most slice_vecs vectors per CTA
  // of a cluster (whole vectors: aligned rows only), if the kernel can take the slice.
  if (split) {
    int cs = 2;
    while (cs < CLUSTER_MAX && nvec > (int64_t)cs * slice_vecs(backward, nvec)) cs <<= 1;
    // A backward slice whose ring, staged parameters and dw/db fold overflow shared memory
    // takes more, smaller slices (16-bit LayerNorm + bias at 16384: 272 KB over 2 CTAs,
    // 136 KB over 4), rather than the loop path (ln_bias_z_16384 bf16 forward+backward 0.45).
    // (regs_layout reads only the alignment and rewrites the rest of the layout each try.)
    for (; cs <= CLUSTER_MAX && nvec % cs == 0; cs <<= 1) {
      if (!regs_layout(p, cfg, backward, narrays, nvec / cs, ngroups * cs, true, dev)) break;
      p.layout.csize = cs;
      if (fits()) return p;
    }
  }
  // The loop path; split across a cluster (whole vectors a slice) while the rows alone
  // would leave SMs idle: 16 rows of 2^20 made 16 blocks for 132 SMs.
  // And while a slice's rows (and the backward's dw sums) overflow shared memory: the loop
  // kernels re-read from L2 or DRAM what they could not stage (fp32 groups of 131072: four
  // slices forward, x 128 KB each; sixteen backward, x, dy, z and dw 128 KB each).
  int cs = 1;
  auto stage = [&](int k) {
    return (size_t)(G / k) * (gn_dtype_size(cfg.dtype) * narrays + (backward ? acc_bytes(cfg.dtype) : 0));
  };
  if (split) {
    while (cs < loop_cluster_max() && nvec % (2 * cs) == 0 &&
           (ngroups * cs * cfg.rows < 2LL * dev.sms || (smem_split && stage(cs) > (size_t)dev.max_smem_optin - 2048)))
      cs <<= 1;
  }
  Plan loop = loop_plan(cfg, (size_t)(G / cs) * gn_dtype_size(cfg.dtype) * narrays, dev, cs);
  loop.layout.aligned = aligned;
  return loop;
}

bool knob_on(const char* name) {
  const char* e = getenv(name);
  return !e || atoi(e) != 0;
}

// Chunks of WIDE_BLOCK x `vecs` vectors a group, when the wide paths are for cfg.
static int64_t wide_chunks(const gn_config& cfg, const DeviceInfo& dev, int vecs) {
  const int64_t G = cfg.group_size, segments = cfg.rows * (cfg.cols / G);
  if (G < wide_min_group(cfg.dtype) || segments >= 2LL * dev.sms) return 0;
  const int64_t ch = (int64_t)WIDE_BLOCK * vecs * (16 / (int64_t)gn_dtype_size(cfg.dtype));
  return (G + ch - 1) / ch;
}

int64_t fwd_wide_chunks(const gn_config& cfg, const DeviceInfo& dev) {
  static const bool on = knob_on("GATEDNORM_FWD_WIDE");
  return on ? wide_chunks(cfg, dev, wide_stats_vecs(cfg.is_rms_norm)) : 0;
}

WideBwd bwd_wide_layout(const gn_config& cfg, const DeviceInfo& dev) {
  static const bool on = knob_on("GATEDNORM_BWD_WIDE");
  WideBwd w{};
  if (!on || !(w.sum_chunks = wide_chunks(cfg, dev, WIDE_VECS))) return w;
  w.grad_chunks = wide_chunks(cfg, dev, WIDE_BWD_VECS);
  const int64_t blocks = cfg.cols / cfg.group_size * w.grad_chunks, want = 2LL * dev.sms;
  w.row_splits = (want + blocks - 1) / blocks;
  if (w.row_splits > cfg.rows) w.row_splits = cfg.rows;
  return w;
}

static int row_iters_override() {
  static const int v = [] {
    const char* e = getenv("GATEDNORM_ROW_ITERS");
    return e ? atoi(e) : 0;
  }();
  return v;
}

dim3 forward_grid(int preferred, dim3 grid, int64_t rows, int rpi, long long resident) {
  const int64_t row_blocks = (rows + rpi - 1) / rpi;
  int iters = row_iters_override();
  if (!iters) iters = preferred > 0 && row_blocks * grid.x >= (int64_t)4 * preferred * resident ? preferred : -1;
  if (iters <= 0) return resident_grid(grid, resident);
  const int64_t blocks = (row_blocks + iters - 1) / iters;
  grid.y = (unsigned)(blocks < 65535 ? blocks : 65535);
  return grid;
}

Plan loop_plan(const gn_config& cfg, size_t stage_bytes, const DeviceInfo& dev, int csize) {
  Plan p{};
  const int64_t ngroups = cfg.cols / cfg.group_size * csize, M = cfg.rows;  // (blocks of) groups
  p.regs = false;
  p.threads = LOOP_BLOCK;
  p.layout.tpg = LOOP_BLOCK;
  p.layout.gpb = 1;
  p.layout.rpi = 1;
  p.layout.csize = csize;
  p.smem = stage_bytes <= (size_t)dev.max_smem_optin - 1024 ? stage_bytes : 0;
  p.layout.staged = p.smem > 0;  // else the later passes re-read global memory (L2)
  // The grid must not depend on the staging or alignment: the backward workspace
  // (one dw/db partial per row block) is sized from the config alone.
  int64_t cap = (int64_t)dev.sms * 2 / ngroups;
  if (cap < 1) cap = 1;
  p.grid = dim3((unsigned)ngroups, (unsigned)(M < cap ? M : cap), 1);
  return p;
}

}  // namespace gn
