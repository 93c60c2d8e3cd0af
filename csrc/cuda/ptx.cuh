// Every inline-PTX instruction of the kernels, each behind a named function: the
// kernels read as C++, and the CPU emulator (csrc/emu, GN_EMU builds: docs/testing.md,
// "CUDA kernels on the CPU") supplies its own version of each function instead.
// No other file under csrc/cuda holds asm.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#ifdef GN_EMU
#include "emu_ptx.h"
#else
namespace gn {

// Asynchronous 16-byte copies global -> shared memory (cp.async, sm_80+). Loads in
// flight then hold no registers, so how far ahead a kernel reads is bounded by
// shared memory instead of by occupancy. `valid` false writes zeros and reads
// nothing (src may then be any mapped address). A thread that reads back only its
// own copies needs no barrier, only cp_async_wait.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 16 : 0)
               : "memory");
}
// 4 or 8 bytes (a row's statistic); src aligned to BYTES.
template <int BYTES>
__device__ __forceinline__ void cp_async_small(void* dst, const void* src, bool valid) {
  static_assert(BYTES == 4 || BYTES == 8, "cp.async.ca copies 4, 8 or 16 bytes");
  const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(d), "l"(src), "n"(BYTES),
               "r"(valid ? BYTES : 0)
               : "memory");
}
// 16-byte global loads (read-only data) with an L2 eviction priority, as Triton's
// eviction_policy: evict_last for data read again soon (a row's x, re-read from L2 for the
// output), evict_first for its last read, so that rows streaming past do not push the rows
// still in use out of L2.
template <bool KEEP>
__device__ __forceinline__ uint4 ld_l2_hint(const void* p) {
  uint4 v;
  unsigned long long pol;
  if constexpr (KEEP) {
    asm("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;\n" : "=l"(pol));
  } else {
    asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(pol));
  }
  asm volatile("ld.global.nc.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p), "l"(pol));
  return v;
}
__device__ __forceinline__ uint4 ld_keep_l2(const void* p) { return ld_l2_hint<true>(p); }
__device__ __forceinline__ uint4 ld_last_l2(const void* p) { return ld_l2_hint<false>(p); }
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Programmatic dependent launch (launch_pdl, plan.h; no-ops before sm_90). A kernel
// launched that way waits for the previous grid in the stream (completed, its
// writes visible) before its first global access, and signals, once its rows are
// done, that the next kernel may start launching (it waits likewise).
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
// Asks L2 for the bytes [p, p + bytes): p 16-byte aligned, bytes a multiple of 16, the range
// inside one allocation (sm_90 bulk prefetch; a no-op before). A hint that changes no value
// any load returns (L2 is the point of coherence), so a kernel may issue it before
// pdl_wait, while the previous grid still runs: its DRAM latency then overlaps that grid.
__device__ __forceinline__ void prefetch_l2(const void* p, unsigned bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(p), "r"(bytes) : "memory");
#endif
}

// The approximate MUFU ex2 and rcp (~2 ulp; flush-to-zero).
__device__ __forceinline__ float ex2_approx(float x) {
  float e;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(e) : "f"(x));
  return e;
}
__device__ __forceinline__ float rcp_approx(float x) {
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
// Thread-block clusters (cluster.cuh): shared-memory addresses, the cluster barrier,
// and the mbarrier + st.async pair that carries a group's partial sums between CTAs.
__device__ __forceinline__ unsigned smem_addr(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }
// The same shared-memory offset in CTA `rank` of the cluster.
__device__ __forceinline__ unsigned cluster_addr(unsigned local, int rank) {
  unsigned remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(local), "r"(rank));
  return remote;
}
__device__ __forceinline__ unsigned cluster_ctarank() {
  unsigned rank;
  asm("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(rank));
  return rank;
}
__device__ __forceinline__ void cluster_barrier() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
// An mbarrier expecting one arrival a phase; visible to the cluster after the fence.
__device__ __forceinline__ void mbar_init(unsigned bar) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
// The phase's arrival, announcing `bytes` that st.async will complete.
__device__ __forceinline__ void mbar_arrive_expect_tx(unsigned bar, unsigned bytes) {
  asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1;\n}\n" ::"r"(bar),
               "r"(bytes)
               : "memory");
}
// Stores into another CTA's shared memory (cluster addresses), completing the
// store's bytes on that CTA's mbarrier `rbar`.
__device__ __forceinline__ void st_async(unsigned dst, unsigned long long v, unsigned rbar) {
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.b64 [%0], %1, [%2];\n" ::"r"(dst), "l"(v),
               "r"(rbar)
               : "memory");
}
__device__ __forceinline__ void st_async(unsigned dst, unsigned v, unsigned rbar) {
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.b32 [%0], %1, [%2];\n" ::"r"(dst), "r"(v),
               "r"(rbar)
               : "memory");
}
// Has the phase of parity `parity` completed (1) or not yet (0).
__device__ __forceinline__ unsigned mbar_try_wait_parity(unsigned bar, unsigned parity) {
  unsigned done;
  asm volatile("{\n.reg .pred ok;\nmbarrier.try_wait.parity.shared::cta.b64 ok, [%1], %2;\nselp.u32 %0, 1, 0, ok;\n}\n"
               : "=r"(done)
               : "r"(bar), "r"(parity)
               : "memory");
  return done;
}
#endif

}  // namespace gn
#endif  // GN_EMU
