// The emulator's memory side (emu.h): shared-memory addresses (the CTA's own and, through
// mapa, its cluster's), cp.async groups, mbarriers and st.async's transaction bytes.
#include <cstring>
#include <map>
#include <mutex>

#include "runtime.h"

namespace emu {
namespace detail {
namespace {
std::mutex g_mbar;  // every mbarrier operation (they are rare)
struct Mbar {
  unsigned expected, pending, phase;
  long tx;
};
std::map<void*, Mbar> g_mbars;
}  // namespace

void land(const Copy& k) {
  if (k.valid)
    memcpy(k.dst, k.src, (size_t)k.bytes);
  else
    memset(k.dst, 0, (size_t)k.bytes);
}
void land_all(Fiber& f) {
  for (const Copy& k : f.copies) land(k);
  f.copies.clear();
  f.commits.clear();
}

void mbar_reset() {
  std::lock_guard<std::mutex> l(g_mbar);
  g_mbars.clear();
}

}  // namespace detail

using namespace detail;

unsigned shared_addr(const void* p) {
  Cta& c = cta();
  const uintptr_t u = (uintptr_t)p;
  if (c.dyn && u >= (uintptr_t)c.dyn && u < (uintptr_t)c.dyn + c.dyn_bytes) return DYN_BIT | (unsigned)(u - (uintptr_t)c.dyn);
  const long off = (long)(u - (uintptr_t)&tl_anchor) + STATIC_BIAS;
  if (off < 0 || off > (long)OFF_MASK) fail_here("a shared-memory address of something not in shared memory");
  return (unsigned)off;
}

void* shared_ptr(unsigned a) {
  Cta& c = cta();
  const unsigned r = a >> RANK_SHIFT;
  const int rank = r ? (int)r - 1 : c.rank;
  if (rank >= c.cl->csize) fail_here("a shared-memory address of a CTA outside the cluster");
  const unsigned off = a & OFF_MASK;
  if (a & DYN_BIT) return c.cl->dyns[rank] + off;
  return c.cl->anchors[rank] + ((long)off - STATIC_BIAS);
}

unsigned cluster_map(unsigned local, int rank) {
  if (local >> RANK_SHIFT) fail_here("mapa of an address that is already a cluster address");
  if (rank < 0 || rank >= cta().cl->csize) fail_here("mapa to a rank outside the cluster");
  return local | ((unsigned)(rank + 1) << RANK_SHIFT);
}
unsigned cluster_rank() { return (unsigned)cta().rank; }

void cp_async(void* dst, const void* src, int bytes, bool valid) {
  if ((uintptr_t)dst % (uintptr_t)bytes || (valid && (uintptr_t)src % (uintptr_t)bytes)) fail_here("a misaligned cp.async");
  (void)shared_addr(dst);  // fails unless dst is shared memory
  static const bool eager = env_flag("GN_EMU_CP_ASYNC", "eager");
  const Copy k{dst, src, bytes, valid};
  if (eager)
    land(k);
  else
    fiber().copies.push_back(k);
}
void prefetch_l2(const void* p, unsigned bytes) {
  if ((uintptr_t)p % 16 || bytes % 16 || bytes == 0) fail_here("a bulk prefetch not of whole 16-byte words");
  const volatile char* c = static_cast<const volatile char*>(p);
  (void)c[0];
  (void)c[bytes - 1];
}
void cp_async_commit() {
  Fiber& f = fiber();
  f.commits.push_back(f.copies.size());
}
void cp_async_wait(int pending) {
  Fiber& f = fiber();
  const int groups = (int)f.commits.size();
  if (groups <= pending) return;
  const size_t upto = f.commits[groups - pending - 1];
  for (size_t i = 0; i < upto; ++i) land(f.copies[i]);
  f.copies.erase(f.copies.begin(), f.copies.begin() + (long)upto);
  f.commits.erase(f.commits.begin(), f.commits.begin() + (groups - pending));
  for (size_t& e : f.commits) e -= upto;
}

void mbar_init(unsigned bar, unsigned count) {
  void* p = shared_ptr(bar);
  std::lock_guard<std::mutex> l(g_mbar);
  g_mbars[p] = Mbar{count, count, 0, 0};
}

namespace {
// Runs `op` on the mbarrier at `bar` under the lock; fails the fiber (lock released)
// when the barrier was never initialised or `op` reports misuse.
template <typename Op>
void with_mbar(unsigned bar, Op op) {
  void* p = shared_ptr(bar);
  const char* misuse = nullptr;
  {
    std::lock_guard<std::mutex> l(g_mbar);
    auto it = g_mbars.find(p);
    if (it == g_mbars.end()) {
      misuse = "an mbarrier used before mbarrier.init";
    } else {
      misuse = op(it->second);
      Mbar& m = it->second;
      if (!misuse && m.pending == 0 && m.tx == 0) {  // the phase completes
        m.phase ^= 1u;
        m.pending = m.expected;
      }
    }
  }
  if (misuse) fail_here(misuse);
}
}  // namespace

void mbar_arrive_expect_tx(unsigned bar, unsigned bytes) {
  with_mbar(bar, [&](Mbar& m) -> const char* {
    if (m.pending == 0) return "more arrivals on an mbarrier than its count";
    TSAN(__tsan_release(&m));
    m.tx += bytes;
    --m.pending;
    return nullptr;
  });
}
void mbar_complete_tx(unsigned bar, unsigned bytes) {
  with_mbar(bar, [&](Mbar& m) -> const char* {
    TSAN(__tsan_release(&m));
    m.tx -= bytes;
    return nullptr;
  });
}
bool mbar_try_wait_parity(unsigned bar, unsigned parity) {
  bool done = false;
  with_mbar(bar, [&](Mbar& m) -> const char* {
    done = (m.phase & 1u) != (parity & 1u);
    TSAN(if (done) __tsan_acquire(&m));
    return nullptr;
  });
  if (!done) yield_here();
  return done;
}

void* dyn_smem() { return cta().dyn; }

}  // namespace emu
