// The emulator's versions of csrc/cuda/ptx.cuh (GN_EMU builds): same names, same
// contracts, on the runtime of emu.h.
#pragma once

#include <float.h>
#include <math.h>
#include <string.h>

#include "emu.h"

namespace gn {

inline void cp_async16(void* dst, const void* src, bool valid) { ::emu::cp_async(dst, src, 16, valid); }
template <int BYTES>
inline void cp_async_small(void* dst, const void* src, bool valid) {
  static_assert(BYTES == 4 || BYTES == 8, "cp.async.ca copies 4, 8 or 16 bytes");
  ::emu::cp_async(dst, src, BYTES, valid);
}
inline uint4 ld_keep_l2(const void* p) {
  uint4 v;
  memcpy(&v, p, 16);
  return v;
}
inline uint4 ld_last_l2(const void* p) { return ld_keep_l2(p); }
inline void cp_async_commit() { ::emu::cp_async_commit(); }
template <int N>
inline void cp_async_wait() {
  ::emu::cp_async_wait(N);
}
// Launches are synchronous here: the previous grid has always completed.
inline void pdl_wait() {}
inline void pdl_trigger() {}
inline void prefetch_l2(const void* p, unsigned bytes) { ::emu::prefetch_l2(p, bytes); }

// ftz: subnormal inputs and results are zeros, as the MUFU's .ftz forms.
inline float ftz(float v) { return fabsf(v) < FLT_MIN ? copysignf(0.f, v) : v; }
inline float ex2_approx(float x) { return ftz(exp2f(ftz(x))); }
inline float rcp_approx(float x) { return ftz(1.f / ftz(x)); }

inline unsigned smem_addr(const void* p) { return ::emu::shared_addr(p); }
inline unsigned cluster_addr(unsigned local, int rank) { return ::emu::cluster_map(local, rank); }
inline unsigned cluster_ctarank() { return ::emu::cluster_rank(); }
inline void cluster_barrier() { ::emu::cluster_barrier(); }
inline void mbar_init(unsigned bar) { ::emu::mbar_init(bar, 1); }
inline void mbar_init_fence() {}
inline void mbar_arrive_expect_tx(unsigned bar, unsigned bytes) { ::emu::mbar_arrive_expect_tx(bar, bytes); }
inline void st_async(unsigned dst, unsigned long long v, unsigned rbar) {
  memcpy(::emu::shared_ptr(dst), &v, 8);
  ::emu::mbar_complete_tx(rbar, 8);
}
inline void st_async(unsigned dst, unsigned v, unsigned rbar) {
  memcpy(::emu::shared_ptr(dst), &v, 4);
  ::emu::mbar_complete_tx(rbar, 4);
}
inline unsigned mbar_try_wait_parity(unsigned bar, unsigned parity) {
  return ::emu::mbar_try_wait_parity(bar, parity) ? 1u : 0u;
}

}  // namespace gn
