// Host-side launch planning shared by the forward and backward launchers.
//
// Two kernel shapes:
//  - register path (group_size up to ~8K elements): a team of `tpg` threads holds
//    one (row, group), NV 16-byte vectors per thread. A block holds `gpb` groups x
//    `rpi` rows of teams and keeps the SAME columns for its whole life (grid.x picks
//    the groups, grid.y walks rows: forward_grid), so weight and bias are staged once
//    (shared memory) and the backward accumulates dw/db in registers. Aligned rows
//    stream through a cp.async ring in shared memory (FWD_RING / BWD_RING rows).
//    (grid.x picks the groups because ngroups can exceed grid.y's 65535 limit.)
//  - split register path (sm_90+, aligned groups too wide for one block, up to
//    CLUSTER_MAX x the widest register-path group): the register path on a slice of
//    G / csize columns per CTA, the group's sums completed across the CTAs of a
//    thread-block cluster through distributed shared memory (cluster.cuh).
//  - loop path (larger groups): one block per (row, group), looping over the
//    group in block-wide chunks, staged in shared memory when it fits; with too few
//    rows to fill the GPU (16 rows of 2^20), one block per (row, slice of a group),
//    a group's slices a cluster as above (the split loop path).
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include "gatednorm.h"

namespace gn {

struct Layout {
  int tpg;      // threads per (row, group) team: a power of two <= 32, else whole warps
  int gpb;      // groups per block (divides ngroups)
  int rpi;      // rows per block iteration
  int aligned;  // every row/group start is 16-byte aligned: vector loads
  int staged;   // loop path: rows are staged in shared memory (else re-read)
  int acc_smem; // loop-path backward: dw/db sums in shared memory (else in the workspace)
  int csize;    // CTAs of a thread-block cluster that split each group (sm_90+; 1 = none)
  int ring;     // forward register path: rows of its cp.async ring (set by its launcher)
  int lean;     // backward register path: RMSNorm without db, its lean row copy (set by its launcher)
};

struct Plan {
  bool regs;      // register path, else loop path
  int nv;         // 16-byte vectors per thread (register path)
  int threads;    // block size
  Layout layout;
  dim3 grid;      // x: blocks of groups (ngroups / gpb), y: row blocks (persistent)
  size_t smem;    // dynamic shared memory (loop path staging)
};

// How z enters, as a kernel template parameter: fewer live registers, and no
// per-element branches, than deciding at run time. GATE_RUNTIME (fp64, the
// unaligned path) reads it from the arguments.
enum GateMode { GATE_NONE, GATE_BEFORE, GATE_AFTER, GATE_RUNTIME };

inline GateMode gate_mode(const void* z, int norm_before_gate) {
  return !z ? GATE_NONE : (norm_before_gate ? GATE_AFTER : GATE_BEFORE);
}

// The kernel's view: is there a gate, and does it come after the norm.
template <int MODE>
__host__ __device__ __forceinline__ bool gate_on(const void* z) {
  return MODE == GATE_RUNTIME ? z != nullptr : MODE != GATE_NONE;
}
template <int MODE>
__host__ __device__ __forceinline__ bool gate_after(const void* z, int norm_before_gate) {
  return MODE == GATE_RUNTIME ? z != nullptr && norm_before_gate : MODE == GATE_AFTER;
}

struct DeviceInfo {
  int sms;
  int max_smem_optin;
  int major;     // compute capability
  int dram_gbps; // peak DRAM bandwidth, GB/s (memory clock x bus width; 0 if unknown)
};

// Memory bandwidth per SM above what the H100 has (25 GB/s an SM; the H200 37): such a
// device moves more bytes per SM cycle, so the forward kernels' per-block costs (staging
// the weight, filling the cp.async ring) weigh more than the tail of a persistent grid,
// and launch policies measured on the H100 are wrong there (docs/data/h200_ring_iters.txt).
// The split paths run cluster_sum, which exists only in the kernels' sm_90+ code. A
// build whose newest target is older (8.0 with PTX, JIT-compiled on an H100) keeps
// them off: its kernels would sum each slice alone. (__CUDA_ARCH_LIST__: nvcc's list
// of this build's virtual architectures, the same in every translation unit.)
#ifdef __CUDA_ARCH_LIST__
inline constexpr int kBuildArchs[] = {__CUDA_ARCH_LIST__};
#else
inline constexpr int kBuildArchs[] = {0};
#endif
inline constexpr bool built_for_clusters() {
  for (int a : kBuildArchs)
    if (a >= 900) return true;
  return false;
}

inline bool bandwidth_rich(const DeviceInfo& d) { return d.dram_gbps > 30 * d.sms; }

// Bytes of the kernels' accumulation type for rows of dtype t (acc_t: fp64 for fp64, else fp32).
inline size_t acc_bytes(gn_dtype t) { return t == GN_FLOAT64 ? 8 : 4; }

// Queried once per device (cached); -1 device means the current one.
gn_status device_info(DeviceInfo* out);

// How much of a row each thread holds in the register path (register budget: the
// forward holds x and z, plus the next row's x and z packed; the backward holds
// x, z, dy and its dw/db partial sums). Forward: 16-byte vectors per tensor;
// backward: elements per tensor.
// Tuning sweeps build other values with -DGN_FWD_BLOCK=k and -DGN_FWD_RING=k
// (GATEDNORM_NVCC_FLAGS in setup.py; scripts/device_tune.sh).
#ifndef GN_FWD_BLOCK
#define GN_FWD_BLOCK 256
#endif
constexpr int FWD_MAX_VECS = 2, FWD_MAX_TEAM = 512, FWD_BLOCK = GN_FWD_BLOCK;
// Rows in the forward's cp.async ring (aligned register path): this row and the
// next RING - 1 ones in flight.
#ifndef GN_FWD_RING
#define GN_FWD_RING 3
#endif
constexpr int FWD_RING = GN_FWD_RING, BWD_RING = 3;
// The short ring: rows whose FWD_RING-row ring leaves one or two blocks an SM take
// FWD_SHORT_RING rows when that fits more (H100, 2026-12-05, eighteenth session, bf16
// forward, fractions of the copy ceiling; docs/data/h100_2026-12-05_session18.txt):
//  - LayerNorm + bias + gate at 4096 (256 threads; 32 KB of weight and bias + 48 KB of
//    ring; 64 KB with 2 rows: 2 -> 3 blocks): 0.989 vs 0.922;
//  - groups of 5000 / 5120 (320-thread teams, 81 KB; 61 KB: 2 -> 3 blocks), at 2 row
//    blocks a block: gate_before_5120 0.984 vs 0.965, odd_n5000 0.885 vs 0.864;
//  - N = 8192 (512 threads, 128 KB; 96 KB: 1 -> 2 blocks), at 2 row blocks a block:
//    M = 8192 0.970 vs 0.925, M = 4096 0.917 vs 0.853 (fp32 at 4096: level, 0.962 vs 0.960).
#ifndef GN_FWD_SHORT_RING
#define GN_FWD_SHORT_RING 2
#endif
constexpr int FWD_SHORT_RING = GN_FWD_SHORT_RING;
// The split forward's ring: 2 rows (one ahead) leave room for two CTAs of 512 threads
// an SM, so twice the clusters fit (H100 bf16, slices of 8192: N = 16K-128K 0.80-0.84
// vs 0.74-0.85 with 3 rows, 0.72-0.84 with 4; docs/data/h100_row_iters_sweep.txt).
// -DGN_SPLIT_RING=k builds another depth for such sweeps.
#ifndef GN_SPLIT_RING
#define GN_SPLIT_RING 2
#endif
constexpr int FWD_SPLIT_RING = GN_SPLIT_RING;
// Forward register-path kernels are compiled for 2 blocks of FWD_MAX_TEAM threads
// per SM (64 registers): left free, ptxas took 57-84 (2-4 blocks of 256 threads,
// varying with unrelated code changes); at 64 only the split (cluster) bf16 kernel with
// the gate before the norm spills, 8 bytes (and fp64's split one; sm_90, ptxas -v, with the
// per-row constants in the constant bank: scripts/sass_loop.py, eleventh session).
constexpr int FWD_MIN_BLOCKS = 2;  // (3: 40 registers and spills, sm_90 bf16)
constexpr int BWD_MAX_ELEMS = 8, BWD_MAX_TEAM = 512, BWD_BLOCK = 256;
// Aligned backward groups wider than a team of BWD_BLOCK threads at BWD_MAX_ELEMS (bf16
// / fp16 past 2048, fp32 past 2048) hold BWD_WIDE_ELEMS a thread (120-128 registers, no
// spills), so teams stay at 256 threads up to 4096 bf16 and two blocks share an SM:
// one's row reduction (a block-wide barrier) overlaps the other's streaming. H100 bf16
// forward+backward at 4096: RMSNorm without a gate 0.74 -> 0.92, with one 0.86 -> 0.93,
// LayerNorm with bias 0.79 -> 0.85 (512-thread teams at 8 elements, one block an SM, vs
// 256 at 16; deeper rings or 64-register kernels did not help: see
// docs/data/h100_row_iters_sweep.txt). Past 512 threads at 8 elements (8192 bf16) the
// loop path was the alternative: 0.44-0.56 for groups of 5000-8192. Since the thirty-fourth
// session gated 16-bit RMSNorm keeps 8 elements up to 512 threads (plan.cu, bwd_rms_teams):
// with the kernels as they are now, those teams won there by 2-5 %.
constexpr int BWD_WIDE_ELEMS = 16;
constexpr int LOOP_BLOCK = 512;
// Shared memory of the backward register path (gated_norm_bwd.cu), `acc` the bytes of its
// accumulation type. Dynamic: the weight (and bias) of the block's groups (`gpb` of G
// columns), then, on aligned rows, the cp.async ring: BWD_RING rows of x, dy (and z: `narr`
// tensors), 16 bytes a (stage, tensor, vector, thread), and the rows' rstd and mean. The
// fold of the rows' dw/db partials (BWD_BLOCK x the thread's elements) reuses the ring once
// the rows are done (bwd_stream_bytes: the larger of the two): a static fold took 8 KB (one
// bf16 vector a thread) to 16.5 KB of a block, which left LayerNorm + bias + gate after at
// 2049-4096 columns one 256-thread block an SM (most kernels stop at two by registers).
__host__ __device__ inline size_t bwd_params_bytes(int gpb, int64_t G, bool bias, size_t acc) {
  return ((size_t)gpb * G * acc * (bias ? 2 : 1) + 15) / 16 * 16;
}
inline size_t bwd_ring_bytes(int nv, int threads, int narr, size_t acc) {
  return (size_t)BWD_RING * threads * (narr * nv * 16 + 2 * acc);
}
inline size_t bwd_fold_bytes(int nv, int vec, size_t acc) { return (size_t)BWD_BLOCK * nv * vec * acc; }
inline size_t bwd_stream_bytes(bool aligned, int nv, int threads, int narr, int vec, size_t acc) {
  const size_t ring = aligned ? bwd_ring_bytes(nv, threads, narr, acc) : 0, fold = bwd_fold_bytes(nv, vec, acc);
  return ring > fold ? ring : fold;
}
// A block's whole dynamic shared memory: parameters staged at `param` bytes each, then the stream.
inline size_t bwd_regs_bytes(const Plan& p, int64_t group_size, bool bias, size_t param, int narr, int vec,
                             size_t acc) {
  return bwd_params_bytes(p.layout.gpb, group_size / p.layout.csize, bias, param) +
         bwd_stream_bytes(p.layout.aligned, p.nv, p.threads, narr, vec, acc);
}
// Split register path: at most this many CTAs a group (16 is beyond the portable 8:
// the kernels opt in), each slice at most CLUSTER_SLICE_VECS 16-byte vectors (8192
// bf16, 2 vectors a thread of 512): H100 forward and forward+backward level with 512
// (docs/data/h100_row_iters_sweep.txt), with half the CTAs a cluster; the backward halves it
// past two slices (plan.cu, slice_vecs). GATEDNORM_SLICE_VECS overrides both for tuning
// (read once).
constexpr int CLUSTER_MAX = 16, CLUSTER_SLICE_VECS = 1024;

// Forward wide path (gated_norm_fwd_wide.cu): chunks of WIDE_BLOCK threads x WIDE_VECS
// 16-byte vectors, three kernels (partial sums, statistics, output). One vector a thread:
// the kernels' registers (32-48 at one vector, 64-88 at four) set their blocks an SM, and
// more warps kept more loads in flight (H100, bign_1m forward+backward 0.42 -> 0.49 of
// the copy ceiling, bign_ln_before_1m 0.33 -> 0.40; bign_1m forward 0.56 -> 0.54, its
// partial sums faster at four). -DGN_WIDE_VECS=k and -DGN_WIDE_BWD_VECS=k (below) are
// tuning variants (scripts/device_tune.sh).
#ifndef GN_WIDE_VECS
#define GN_WIDE_VECS 1
#endif
constexpr int WIDE_BLOCK = 256, WIDE_VECS = GN_WIDE_VECS;
// Vectors a thread of the forward's partial sums reads: RMSNorm 4 (bign_1m, H100: 15.6 vs
// 20.4 us at 1), LayerNorm 1 (it holds the values for its second pass: 36.4 vs 32.5 us
// at 4). The output kernel stays at WIDE_VECS.
constexpr int wide_stats_vecs(bool rms) { return rms ? 4 : 1; }
template <typename T, int V = WIDE_VECS>
constexpr int64_t wide_chunk_cols() { return (int64_t)WIDE_BLOCK * V * (16 / (int64_t)sizeof(T)); }
// The narrowest group the wide paths take, whatever the chunk: 32 KB (16384 bf16), where
// two kernels over chunks pay for their extra launches (the loop path keeps narrower
// groups, decode rows among them).
inline int64_t wide_min_group(gn_dtype t) { return 32768 / (int64_t)gn_dtype_size(t); }
// Chunks of wide_stats_vecs a group takes for the forward's partial sums (the workspace's
// count; the output kernel's chunks follow from WIDE_VECS), or 0 when the path is not for cfg:
// it serves what the loop path would run with fewer (row, group) blocks than twice the
// SMs (16 rows of 2^20), groups of wide_min_group or more. GATEDNORM_FWD_WIDE=0 (read
// once) turns it off, for tuning: those shapes then take the (split) loop path.
int64_t fwd_wide_chunks(const gn_config& cfg, const DeviceInfo& dev);
// Backward wide path (gated_norm_bwd_wide.cu): the row sums over the forward's chunks
// (`sum_chunks` a group), the gradients over chunks of WIDE_BWD_VECS vectors a thread
// (`grad_chunks`), each of those blocks walking one of `row_splits` interleaved sets of
// the rows (enough blocks for twice the SMs), its dw/db sums one partial row. All zero
// when the path is not for cfg; GATEDNORM_BWD_WIDE=0 (read once) turns it off.
#ifndef GN_WIDE_BWD_VECS
#define GN_WIDE_BWD_VECS 1
#endif
constexpr int WIDE_BWD_VECS = GN_WIDE_BWD_VECS;
struct WideBwd {
  int64_t sum_chunks, grad_chunks, row_splits;
};
WideBwd bwd_wide_layout(const gn_config& cfg, const DeviceInfo& dev);

// `split`: the caller's kernels take the split register path (Layout::csize). `narrays`:
// the row tensors the loop path stages (the backward: x, dy and z); `bwd_bias`: the
// backward's register path stages a bias beside the weight.
Plan make_plan(const gn_config& cfg, bool backward, int narrays, bool aligned, const DeviceInfo& dev, bool split,
               bool bwd_bias = false);

// The loop path alone: a block of LOOP_BLOCK threads per (row, group), staging
// `stage_bytes` per row in shared memory when they fit; `csize` > 1: per (row, slice
// of a group), the slices of a group a cluster (the split loop path).
Plan loop_plan(const gn_config& cfg, size_t stage_bytes, const DeviceInfo& dev, int csize = 1);

// `p`, unless it is a register-path plan whose kernel needs `regs_smem` bytes of
// shared memory (staged parameters, the cp.async ring) and the device has fewer
// (GPUs smaller than an A100 / H100): then the loop path, staging `stage_bytes` a
// row. Its grid.y may exceed the register plan's: backward workspaces are sized
// for both (gn_cuda_bwd_workspace_bytes).
inline Plan fit_smem(const Plan& p, size_t regs_smem, const gn_config& cfg, size_t stage_bytes,
                     const DeviceInfo& dev) {
  if (!p.regs || regs_smem <= (size_t)dev.max_smem_optin - 1024) return p;
  Plan loop = loop_plan(cfg, stage_bytes, dev);
  loop.layout.aligned = p.layout.aligned;
  return loop;
}

// True when every pointer is 16-byte aligned and every row stride keeps it so.
bool rows_aligned(const gn_config& cfg, const void* const* ptrs, const int64_t* strides, int n);

// A comparison knob (an environment variable): on unless set to 0. Callers read it once.
bool knob_on(const char* name);

// Per-thread error text for GN_ERR_CUDA.
gn_status cuda_fail(cudaError_t e, const char* what);

// Lets KERNEL use `dynamic` bytes of dynamic shared memory beside `fixed` bytes of
// static shared memory (beyond 48 KB in total a kernel must opt in, once per
// device; cached here so the hot path makes no extra driver call).
// Resident blocks per SM of KERNEL at this block size and dynamic shared memory
// (cached per device for the last configuration asked; 1 if the query fails).
// SLOT: a second cache entry for a kernel asked about two configurations per call.
template <auto KERNEL, int SLOT = 0>
int resident_blocks(int threads, size_t smem) {
  constexpr int MAX_DEVICES = 64;
  struct Entry { int threads; size_t smem; int blocks; };
  static thread_local Entry cache[MAX_DEVICES];
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 1;
  Entry* e = dev < MAX_DEVICES ? &cache[dev] : nullptr;
  if (e && e->threads == threads && e->smem == smem) return e->blocks;
  int n = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, KERNEL, threads, smem) != cudaSuccess || n < 1) n = 1;
  if (e) *e = Entry{threads, smem, n};
  return n;
}

// A persistent grid no larger than what is resident at once: a second wave
// would only add a tail. (Shrinking grid.y is always safe: the backward sums
// gridDim.y partials, and its workspace is sized for the plan's maximum.)
// `resident`: blocks resident at once on the whole device.
inline dim3 resident_grid(dim3 grid, long long resident) {
  const long long cap = resident / grid.x;
  grid.y = (unsigned)(cap < 1 ? 1 : (cap < grid.y ? cap : grid.y));
  return grid;
}

// The grid of a register-path forward kernel whose blocks walk row blocks of `rpi`
// rows: `preferred` row blocks per block (the launcher's measured choice for many
// rows; <= 0 = persistent: resident_grid) unless that grid would be fewer than 4
// waves of resident blocks: then persistent, as a partial last wave costs more than
// the overlap of starting blocks gains (H100, M = 4096: docs/data/h100_row_iters_sweep.txt).
// GATEDNORM_ROW_ITERS, read once, overrides `preferred` for tuning (docs/design.md,
// "Grids"): -1 = persistent, k > 0 = k. grid.y stays within its 65535 limit: the
// kernels loop, so every row is still covered.
// `resident`: blocks resident at once on the device (resident_total).
dim3 forward_grid(int preferred, dim3 grid, int64_t rows, int rpi, long long resident);

// Whole clusters of `csize` CTAs of KERNEL resident at once (a cluster's CTAs share a
// GPC, so this is below blocks per SM x SMs / csize); 0 when none fits. Cached per
// device for the last configuration asked.
template <auto KERNEL>
int resident_clusters(int threads, size_t smem, int csize) {
  constexpr int MAX_DEVICES = 64;
  struct Entry { int threads; size_t smem; int csize; int n; };
  static thread_local Entry cache[MAX_DEVICES];
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 0;
  Entry* e = dev < MAX_DEVICES ? &cache[dev] : nullptr;
  if (e && e->threads == threads && e->smem == smem && e->csize == csize) return e->n;
  if (csize > 8 && cudaFuncSetAttribute(KERNEL, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(csize, 1, 1);
  cfg.blockDim = dim3(threads, 1, 1);
  cfg.dynamicSmemBytes = smem;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = csize;
  attr[0].val.clusterDim.y = attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  int n = 0;
  if (cudaOccupancyMaxActiveClusters(&n, KERNEL, &cfg) != cudaSuccess) {
    (void)cudaGetLastError();
    n = 0;
  }
  if (e) *e = Entry{threads, smem, csize, n};
  return n;
}

// Blocks of KERNEL resident at once on the device for plan `p` (clusters: whole ones).
template <auto KERNEL>
long long resident_total(const Plan& p, size_t smem, int sms) {
  if (p.layout.csize > 1) return (long long)resident_clusters<KERNEL>(p.threads, smem, p.layout.csize) * p.layout.csize;
  return (long long)resident_blocks<KERNEL>(p.threads, smem) * sms;
}
// Do at least 3/4 of a team's vector slots (tpg * nv) hold data? Groups like 1200 or
// 5120 leave 37-41% of the team idle; such kernels preferred other grids (measured:
// the forward launchers).
inline bool team_mostly_full(int64_t group, int vec, int tpg, int nv) {
  return ((group + vec - 1) / vec) * 4 >= (int64_t)3 * tpg * nv;
}

// Launches KERNEL, with programmatic dependent launch when `pdl` (the kernel must
// then call pdl_wait() before its first global access; it calls pdl_trigger() when
// its rows are done): a decode step's back-to-back kernels then overlap one's launch
// with the previous one's tail, ~1 us of a 2-4 us launch. `csize` > 1: clusters of
// csize CTAs along x (the split register path).
template <typename... P, typename... Args>
gn_status launch_ex(void (*kernel)(P...), dim3 grid, int threads, size_t smem, cudaStream_t s, bool pdl, int csize,
                    const char* what, Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(threads, 1, 1);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[2];
  int n = 0;
  if (pdl) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (csize > 1) {
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n].val.clusterDim.x = csize;
    attr[n].val.clusterDim.y = attr[n].val.clusterDim.z = 1;
    ++n;
  }
  cfg.attrs = attr;
  cfg.numAttrs = n;
  const cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, static_cast<Args&&>(args)...);
  return e == cudaSuccess ? GN_OK : cuda_fail(e, what);
}

// launch_ex with programmatic dependent launch on sm_90+ (a plain launch elsewhere).
template <typename... P, typename... Args>
gn_status launch_pdl(void (*kernel)(P...), dim3 grid, int threads, size_t smem, cudaStream_t s, const DeviceInfo& dev,
                     const char* what, int csize, Args&&... args) {
  return launch_ex(kernel, grid, threads, smem, s, dev.major >= 9, csize, what, static_cast<Args&&>(args)...);
}

template <auto KERNEL>
gn_status allow_smem(size_t dynamic, size_t fixed = 1024) {
  if (dynamic + fixed <= 48 * 1024) return GN_OK;
  constexpr int MAX_DEVICES = 64;
  static size_t allowed[MAX_DEVICES];  // benign race: every writer stores a valid limit
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return cuda_fail(e, "cudaGetDevice");
  if (dev < MAX_DEVICES && allowed[dev] >= dynamic) return GN_OK;
  e = cudaFuncSetAttribute(KERNEL, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)dynamic);
  if (e != cudaSuccess) return cuda_fail(e, "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
  if (dev < MAX_DEVICES) allowed[dev] = dynamic;
  return GN_OK;
}

}  // namespace gn
