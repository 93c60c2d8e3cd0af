// Internals of the emulator's runtime (emu.h), shared by its two halves: fibers.cpp
// (CUDA threads as fibers, barriers, launches) and memory.cpp (shared-memory addresses,
// cp.async, mbarriers).
#pragma once

#include <ucontext.h>

#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include "emu.h"

// ThreadSanitizer builds (setup.py, GATEDNORM_EMU_SANITIZER=thread; this file itself stays
// uninstrumented): every CUDA thread is a TSan fiber, switched to and from without
// synchronisation, and each barrier is a release by every thread that arrives and an
// acquire by each once it completes (per generation, so that a thread already past it
// orders nothing for one still inside). TSan then reports two threads' accesses to the
// same shared (or global) memory that no barrier orders: racecheck's job. cp.async
// copies land through memcpy inside the issuing thread, so they count as its writes.
#ifdef GN_EMU_TSAN
extern "C" {
void* __tsan_get_current_fiber(void);
void* __tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void* fiber);
void __tsan_switch_to_fiber(void* fiber, unsigned flags);
void __tsan_acquire(void* addr);
void __tsan_release(void* addr);
}
#define TSAN(...) __VA_ARGS__
#else
#define TSAN(...)
#endif

namespace emu {
namespace detail {

constexpr int SYNC_GENS = 64;  // TSan sync objects a barrier cycles through
constexpr unsigned TSAN_NO_SYNC = 1;

constexpr size_t STACK_BYTES = 256 << 10;  // the kernels' register arrays live on it
constexpr int MAX_THREADS = 1024, MAX_CLUSTER = 16;
// 32-bit shared-memory addresses: [0, 24) offset, bit 24 = dynamic shared memory,
// [25, 30) = 1 + the cluster rank of a mapped (mapa) address. Static shared memory is
// thread-local (the CTA's thread): its offsets are taken from an anchor variable of
// the same module, biased to stay positive.
constexpr unsigned OFF_MASK = (1u << 24) - 1, DYN_BIT = 1u << 24, RANK_SHIFT = 25;
constexpr long STATIC_BIAS = 1L << 23;
constexpr double WAIT_LIMIT_S = 60;  // an mbarrier or cluster wait longer than this is a hang

enum class St { Run, Bar, Warp, Cluster, Done };

struct Copy {
  void* dst;
  const void* src;
  int bytes;
  bool valid;
};

struct Fiber {
  ucontext_t ctx;
  uint3 tid;
  int linear = 0;
  St st = St::Run;
  unsigned mask = 0;
  std::vector<Copy> copies;     // issued, not landed
  std::vector<size_t> commits;  // copies.size() at each commit not yet waited for
  void* tsan = nullptr;
  bool started = false;  // TSan: the first switch in orders the launch before the thread
};

struct Cluster {
  int csize = 1;
  char* anchors[MAX_CLUSTER] = {};
  unsigned char* dyns[MAX_CLUSTER] = {};
  std::mutex m;
  std::condition_variable cv;
  int arrived = 0;
  long gen = 0;
  bool failed = false;
  char sync[SYNC_GENS];  // TSan: the cluster barrier's generations
};

struct Cta {
  uint3 bid;
  dim3 bdim, gdim;
  int rank = 0, nthreads = 0;
  Cluster* cl = nullptr;
  const std::function<void()>* body = nullptr;
  std::vector<Fiber> fibers;
  Fiber* cur = nullptr;
  ucontext_t sched;
  unsigned char* dyn = nullptr;
  size_t dyn_bytes = 0;
  long events = 0;  // barrier arrivals and exits: progress
  long bar_gen = 0, cluster_gen = 0, warp_gen[MAX_THREADS / 32] = {};
  char bar_sync[SYNC_GENS], warp_sync[MAX_THREADS / 32][SYNC_GENS];
  void* sched_tsan = nullptr;
  std::string error;
  uint64_t xchg[MAX_THREADS];
};

extern thread_local Cta* tl_cta;
extern thread_local char tl_anchor;  // static shared memory's addresses are offsets from it

bool env_flag(const char* name, const char* value);
int env_int(const char* name, int dflt);
Cta& cta();
Fiber& fiber();
std::string where(const Cta& c, const Fiber* f);
[[noreturn]] void fail_here(const std::string& why);  // ends this thread's part in the launch
void block_here(St s);                                // waits at a barrier of kind s
void yield_here();                                    // back to the scheduler, still runnable
void land(const Copy& k);
void land_all(Fiber& f);
void mbar_reset();  // forgets every mbarrier (end of a launch)

}  // namespace detail
}  // namespace emu
