// The emulator's threads (emu.h): a launch runs its clusters one after another, the
// CTAs of a cluster on OS threads of their own, the CUDA threads of a CTA as fibers
// (ucontext) scheduled round-robin between barriers.
#include <dlfcn.h>
#include <sys/mman.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <thread>

#include "runtime.h"

namespace emu {
namespace detail {

thread_local Cta* tl_cta = nullptr;
thread_local char tl_anchor;
namespace {
thread_local std::string tl_message;
thread_local int tl_last_error = 0;
std::mutex g_launch;
}  // namespace

bool env_flag(const char* name, const char* value) {
  const char* v = getenv(name);
  return v && std::string(v) == value;
}
int env_int(const char* name, int dflt) {
  const char* v = getenv(name);
  return v && *v ? atoi(v) : dflt;
}

Cta& cta() {
  if (!tl_cta) {
    fprintf(stderr, "gatednorm emulator: device function called outside a kernel\n");
    abort();
  }
  return *tl_cta;
}
Fiber& fiber() { return *cta().cur; }

std::string where(const Cta& c, const Fiber* f) {
  char buf[160];
  snprintf(buf, sizeof buf, "block (%u,%u,%u) thread (%u,%u,%u)", c.bid.x, c.bid.y, c.bid.z, f ? f->tid.x : 0,
           f ? f->tid.y : 0, f ? f->tid.z : 0);
  return buf;
}

// Switches to the scheduler; `sync` (a thread's end) orders what the thread did before
// whatever follows the launch.
void to_sched(Cta& c, bool sync = false) {
  (void)c;
  (void)sync;
  TSAN(__tsan_switch_to_fiber(c.sched_tsan, sync ? 0 : TSAN_NO_SYNC));
}

// The TSan sync object of the barrier fiber f arrives at (the generation now current).
char* sync_obj(Cta& c, Fiber& f, St s) {
  if (s == St::Bar) return &c.bar_sync[c.bar_gen % SYNC_GENS];
  if (s == St::Warp) return &c.warp_sync[f.linear >> 5][c.warp_gen[f.linear >> 5] % SYNC_GENS];
  return &c.cl->sync[c.cluster_gen % SYNC_GENS];
}

// Ends this fiber's part in the launch: the scheduler sees the error and stops.
[[noreturn]] void fail_here(const std::string& why) {
  Cta& c = cta();
  if (c.error.empty()) c.error = where(c, c.cur) + ": " + why;
  c.cur->st = St::Done;
  to_sched(c);
  setcontext(&c.sched);
  abort();  // unreachable
}

void block_here(St s) {
  Cta& c = cta();
  Fiber* f = c.cur;
  char* obj = sync_obj(c, *f, s);
  (void)obj;
  TSAN(__tsan_release(obj));
  f->st = s;
  ++c.events;
  to_sched(c);
  swapcontext(&f->ctx, &c.sched);
  TSAN(__tsan_acquire(obj));
}
void yield_here() {
  Cta& c = cta();
  to_sched(c);
  swapcontext(&c.cur->ctx, &c.sched);
}


namespace {

void fiber_main() {
  Cta& c = cta();
  (*c.body)();
  land_all(*c.cur);  // copies still in flight land even after the thread exits
  c.cur->st = St::Done;
  ++c.events;
  to_sched(c, true);
}  // uc_link: back to the scheduler

// Every CTA of the cluster reaches this call (or the cluster failed): false on failure.
bool cluster_sync(Cluster& k) {
  std::unique_lock<std::mutex> l(k.m);
  const long g = k.gen;
  if (++k.arrived == k.csize) {
    k.arrived = 0;
    ++k.gen;
    k.cv.notify_all();
    return true;
  }
  const bool ok = k.cv.wait_for(l, std::chrono::duration<double>(WAIT_LIMIT_S),
                                [&] { return k.gen != g || k.failed; });
  return ok && !k.failed;
}
void cluster_fail(Cluster& k) {
  std::lock_guard<std::mutex> l(k.m);
  k.failed = true;
  k.cv.notify_all();
}

// Completes the barriers whose threads have all arrived; false if none did.
bool resolve(Cta& c) {
  bool released = false;
  const int n = c.nthreads;
  for (int w = 0; w * 32 < n; ++w) {
    const int lo = w * 32, hi = lo + 32 < n ? lo + 32 : n;
    unsigned mask = 0;
    bool any = false, ready = true;
    for (int i = lo; i < hi; ++i) {
      const Fiber& f = c.fibers[i];
      if (f.st != St::Warp) continue;
      if (any && f.mask != mask) {
        c.error = where(c, &f) + ": shuffles of one warp with different masks";
        return false;
      }
      mask = f.mask;
      any = true;
    }
    if (!any) continue;
    for (int l = 0; l < 32; ++l) {
      if (!(mask >> l & 1u) || lo + l >= hi) continue;  // lanes past the block do not exist
      const Fiber& f = c.fibers[lo + l];
      if (f.st == St::Done) {
        c.error = where(c, &f) + ": a shuffle's mask names this thread, which has exited";
        return false;
      }
      if (f.st != St::Warp) ready = false;
    }
    if (!ready) continue;
    for (int i = lo; i < hi; ++i)
      if (c.fibers[i].st == St::Warp) c.fibers[i].st = St::Run;
    ++c.warp_gen[w];
    released = true;
  }
  int live = 0, bar = 0, clu = 0;
  for (const Fiber& f : c.fibers) {
    live += f.st != St::Done;
    bar += f.st == St::Bar;
    clu += f.st == St::Cluster;
  }
  if (live && bar == live) {
    for (Fiber& f : c.fibers) f.st = St::Run;
    ++c.bar_gen;
    return true;
  }
  if (live && clu == live) {
    if (!cluster_sync(*c.cl)) {
      c.error = where(c, nullptr) + ": the cluster barrier timed out or another CTA failed";
      return false;
    }
    for (Fiber& f : c.fibers) f.st = St::Run;
    ++c.cluster_gen;
    return true;
  }
  return released;
}

std::string deadlock(const Cta& c) {
  int run = 0, bar = 0, warp = 0, clu = 0, done = 0;
  for (const Fiber& f : c.fibers) {
    run += f.st == St::Run;
    bar += f.st == St::Bar;
    warp += f.st == St::Warp;
    clu += f.st == St::Cluster;
    done += f.st == St::Done;
  }
  char buf[256];
  snprintf(buf, sizeof buf,
           ": deadlock: %d threads at __syncthreads, %d at a warp shuffle, %d at the cluster barrier, %d exited, "
           "%d spinning",
           bar, warp, clu, done, run);
  return where(c, nullptr) + buf;
}

struct Stacks {
  char* base = nullptr;
  size_t bytes = 0;
  explicit Stacks(int n) : bytes((size_t)n * STACK_BYTES) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    base = p == MAP_FAILED ? nullptr : static_cast<char*>(p);
  }
  ~Stacks() {
    if (base) munmap(base, bytes);
  }
};

void run_cta(Cta& c) {
  tl_cta = &c;
  Cluster& k = *c.cl;
  {
    std::lock_guard<std::mutex> l(k.m);
    k.anchors[c.rank] = &tl_anchor;
    k.dyns[c.rank] = c.dyn;
  }
  if (!cluster_sync(k)) {  // every CTA's shared memory is known before any runs
    c.error = where(c, nullptr) + ": another CTA of the cluster failed to start";
    tl_cta = nullptr;
    return;
  }
  const int n = c.nthreads;
  Stacks stacks(n);
  if (!stacks.base) {
    c.error = "emulator: out of memory for fiber stacks";
    cluster_fail(k);
    tl_cta = nullptr;
    return;
  }
  c.fibers.resize(n);
  for (int i = 0; i < n; ++i) {
    Fiber& f = c.fibers[i];
    f.linear = i;
    f.tid = uint3{(unsigned)i % c.bdim.x, (unsigned)i / c.bdim.x % c.bdim.y, (unsigned)i / (c.bdim.x * c.bdim.y)};
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = stacks.base + (size_t)i * STACK_BYTES;
    f.ctx.uc_stack.ss_size = STACK_BYTES;
    f.ctx.uc_link = &c.sched;
    makecontext(&f.ctx, fiber_main, 0);
    TSAN(f.tsan = __tsan_create_fiber(0));
  }
  TSAN(c.sched_tsan = __tsan_get_current_fiber());
  // The hang limit counts from the CTA's last progress, not its start: a long kernel under
  // ThreadSanitizer (150 rows of 32768 columns on one cluster) ran past 60 s in all.
  auto progress = std::chrono::steady_clock::now();
  for (;;) {
    const long before = c.events;
    bool live = false, spinning = false;
    for (Fiber& f : c.fibers) {
      if (f.st != St::Run) continue;
      c.cur = &f;
      TSAN(__tsan_switch_to_fiber(f.tsan, f.started ? TSAN_NO_SYNC : 0));
      f.started = true;
      swapcontext(&c.sched, &f.ctx);
      if (!c.error.empty()) break;
      if (f.st == St::Run) spinning = true;  // yielded in an mbarrier wait
    }
    if (!c.error.empty()) break;
    for (const Fiber& f : c.fibers) live |= f.st != St::Done;
    if (!live) break;
    const bool released = resolve(c);
    if (!c.error.empty()) break;
    if (released || c.events != before) {
      progress = std::chrono::steady_clock::now();
      continue;
    }
    if (!spinning) {
      c.error = deadlock(c);
      break;
    }
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - progress).count() > WAIT_LIMIT_S) {
      c.error = where(c, nullptr) + ": an mbarrier wait never completed";
      break;
    }
    std::this_thread::yield();
  }
  if (!c.error.empty()) cluster_fail(k);
  TSAN(for (Fiber& f : c.fibers) __tsan_destroy_fiber(f.tsan));
  c.cur = nullptr;
  tl_cta = nullptr;
}


}  // namespace
}  // namespace detail

using namespace detail;

unsigned coord(int which, int axis) {
  const Cta& c = cta();
  switch (which) {
    case 0: {
      const uint3& t = c.cur->tid;
      return axis == 0 ? t.x : axis == 1 ? t.y : t.z;
    }
    case 1: return axis == 0 ? c.bid.x : axis == 1 ? c.bid.y : c.bid.z;
    case 2: return axis == 0 ? c.bdim.x : axis == 1 ? c.bdim.y : c.bdim.z;
    default: return axis == 0 ? c.gdim.x : axis == 1 ? c.gdim.y : c.gdim.z;
  }
}
int lane_id() { return fiber().linear & 31; }

void syncthreads() { block_here(St::Bar); }

uint64_t warp_exchange(unsigned mask, uint64_t bits, int src) {
  Cta& c = cta();
  Fiber& f = fiber();
  const int lane = f.linear & 31;
  if (!(mask >> lane & 1u)) fail_here("a shuffle by a lane outside its own mask");
  if (!(mask >> src & 1u)) fail_here("a shuffle reads a lane outside the mask");
  c.xchg[f.linear] = bits;
  f.mask = mask;
  block_here(St::Warp);
  const int s = (f.linear & ~31) + src;
  if (s >= c.nthreads) fail_here("a shuffle reads a lane past the end of the block");
  const uint64_t r = c.xchg[s];
  block_here(St::Warp);  // nobody overwrites its slot before every lane has read
  return r;
}

void cluster_barrier() { block_here(St::Cluster); }

void trap(const char* why) {
  if (!tl_cta) {
    fprintf(stderr, "gatednorm emulator: %s outside a kernel\n", why);
    abort();
  }
  fail_here(why);
}

const char* last_message() { return tl_message.c_str(); }
void set_last_error(int e) { tl_last_error = e; }
int take_last_error() {
  const int e = tl_last_error;
  tl_last_error = 0;
  return e;
}

const Device& device() {
  static const Device d = [] {
    Device v{};
    v.sms = env_int("GN_EMU_SMS", 4);
    v.major = env_int("GN_EMU_MAJOR", 9);
    v.gbps = env_int("GN_EMU_GBPS", 25 * v.sms);
    v.smem_optin = env_int("GN_EMU_SMEM", 227 * 1024);
    return v;
  }();
  return d;
}

// A kernel's dynamic shared memory limit, as cudaFuncSetAttribute(MaxDynamicSharedMemorySize)
// set it: 48 KB until a kernel opts in (the real limit counts its static shared memory
// too, which is unknown here).
namespace {
std::mutex g_optin;
std::map<const void*, size_t>& optins() {
  static std::map<const void*, size_t> m;
  return m;
}
}  // namespace

size_t smem_allowed(const void* kernel) {
  std::lock_guard<std::mutex> lock(g_optin);
  const auto it = optins().find(kernel);
  return it == optins().end() ? DEFAULT_DYN_SMEM : it->second;
}

void set_smem_allowed(const void* kernel, size_t bytes) {
  std::lock_guard<std::mutex> lock(g_optin);
  optins()[kernel] = bytes;
}

namespace {
void trace(const void* kernel, dim3 grid, dim3 block, size_t smem, int csize) {
  const char* path = getenv("GN_EMU_TRACE");  // at each launch: tests set it around a call
  if (!path || !*path) return;
  // Kernels are local symbols (dladdr cannot name them): the offset in the library,
  // which `nm -C` of the library names (scripts/emu_trace.py).
  Dl_info info{};
  char name[64] = "?";
  if (dladdr(kernel, &info) && info.dli_fbase)
    snprintf(name, sizeof name, "0x%lx", (unsigned long)((const char*)kernel - (const char*)info.dli_fbase));
  if (FILE* f = fopen(path, "a")) {
    fprintf(f, "%s\tgrid %u,%u,%u\tblock %u,%u,%u\tsmem %zu\tcluster %d\n", name, grid.x, grid.y, grid.z,
            block.x, block.y, block.z, smem, csize);
    fclose(f);
  }
}
}  // namespace

int launch(const void* kernel, dim3 grid, dim3 block, size_t smem, int csize, const std::function<void()>& body) {
  trace(kernel, grid, block, smem, csize);
  const long threads = (long)block.x * block.y * block.z;
  char buf[200];
  auto bad = [&](const char* what) {
    snprintf(buf, sizeof buf, "invalid launch: %s (grid %u,%u,%u block %u,%u,%u smem %zu cluster %d)", what, grid.x,
             grid.y, grid.z, block.x, block.y, block.z, smem, csize);
    tl_message = buf;
    return 1;  // cudaErrorInvalidValue
  };
  if (threads < 1 || threads > MAX_THREADS) return bad("block size");
  if (!grid.x || !grid.y || !grid.z || grid.y > 65535 || grid.z > 65535) return bad("grid size");
  if (csize < 1 || csize > MAX_CLUSTER || grid.x % (unsigned)csize) return bad("cluster size");
  if (csize > 1 && device().major < 9) return bad("clusters before sm_90");
  if (smem > (size_t)device().smem_optin) return bad("dynamic shared memory");
  if (smem > smem_allowed(kernel)) return bad("dynamic shared memory past the kernel's opt-in (cudaFuncSetAttribute)");
  std::lock_guard<std::mutex> serial(g_launch);
  std::string error;
  for (unsigned z = 0; z < grid.z && error.empty(); ++z)
    for (unsigned y = 0; y < grid.y && error.empty(); ++y)
      for (unsigned x0 = 0; x0 < grid.x && error.empty(); x0 += (unsigned)csize) {
        Cluster k;
        k.csize = csize;
        std::vector<Cta> ctas(csize);
        // Exactly the bytes asked for (16-aligned), so that AddressSanitizer builds see
        // an access past them.
        std::vector<std::unique_ptr<unsigned char, decltype(&free)>> dyn;
        std::vector<std::thread> workers;
        for (int r = 0; r < csize; ++r) {
          Cta& c = ctas[r];
          c.bid = uint3{x0 + (unsigned)r, y, z};
          c.bdim = block;
          c.gdim = grid;
          c.rank = r;
          c.nthreads = (int)threads;
          c.cl = &k;
          c.body = &body;
          dyn.emplace_back(static_cast<unsigned char*>(aligned_alloc(16, smem ? (smem + 15) / 16 * 16 : 16)), &free);
          c.dyn = dyn.back().get();
          if (!c.dyn) return bad("host memory for shared memory");
          memset(c.dyn, 0xff, smem);  // poison: NaN in every float type
          c.dyn_bytes = smem;
        }
        for (Cta& c : ctas) workers.emplace_back(run_cta, std::ref(c));
        for (std::thread& t : workers) t.join();
        for (Cta& c : ctas)
          if (!c.error.empty() && error.empty()) error = c.error;
      }
  mbar_reset();
  if (error.empty()) return 0;
  tl_message = "kernel failed in the emulator: " + error;
  return 719;  // cudaErrorLaunchFailure
}

}  // namespace emu
