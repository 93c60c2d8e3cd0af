// The CPU emulator of the CUDA kernels (GN_EMU builds only; docs/testing.md, "CUDA
// kernels on the CPU"). csrc/cuda compiles unchanged with a host C++ compiler against
// include/cuda_*.h; each CUDA thread of a launch becomes a fiber, the CTAs of a
// cluster run on threads of their own (their shared memory is thread-local), and
// barriers, warp shuffles, cp.async groups, mbarriers and the cluster barrier follow
// their PTX semantics closely enough to find logic errors before a GPU run:
//  - a fiber runs until it reaches a barrier (or spins on an mbarrier); a barrier
//    completes when every live thread it names has arrived, else the launch fails
//    with a deadlock report (a shuffle that names an exited lane, __syncthreads in
//    divergent code, a cluster barrier some CTA never reaches);
//  - cp.async copies land only at the cp.async.wait_group that covers them (the
//    latest moment the hardware allows): a read of a slot before its wait sees the
//    poison that fills shared memory at the start of every CTA (GN_EMU_CP_ASYNC=eager
//    lands them at issue instead);
//  - dynamic shared memory is poisoned (0xff: NaN in every float type).
// What it does not model: timing, memory ordering between CTAs beyond the barriers,
// the hardware's resource limits (registers; occupancy is estimated).
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};

namespace emu {

// The bits of `from` as a To (std::bit_cast, C++20; this header is also built as C++17).
template <typename To, typename From>
inline To bit_cast(const From& from) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast between types of one size");
  To to;
  memcpy(&to, &from, sizeof(To));
  return to;
}

// The running thread's threadIdx (0), blockIdx (1), blockDim (2), gridDim (3); axis 0-2.
unsigned coord(int which, int axis);

void syncthreads();
// Every lane in `mask` publishes `bits`; returns lane `src`'s (a warp barrier each side).
uint64_t warp_exchange(unsigned mask, uint64_t bits, int src);
int lane_id();

template <typename T>
T shfl_xor(unsigned mask, T v, int lane_mask, int width) {
  static_assert(sizeof(T) <= 8, "shuffles move 4 or 8 bytes");
  uint64_t b = 0;
  memcpy(&b, &v, sizeof(T));
  const int lane = lane_id();
  int src = lane ^ lane_mask;
  if (src >= (lane & ~(width - 1)) + width) src = lane;  // beyond this segment: own value
  const uint64_t r = warp_exchange(mask, b, src);
  T out;
  memcpy(&out, &r, sizeof(T));
  return out;
}

// Shared-memory addresses (32-bit, as PTX's shared window) and their pointers.
unsigned shared_addr(const void* p);
void* shared_ptr(unsigned addr);
unsigned cluster_map(unsigned local, int rank);
unsigned cluster_rank();
void cluster_barrier();

void cp_async(void* dst, const void* src, int bytes, bool valid);
void cp_async_commit();
void cp_async_wait(int pending);
// Checks a bulk L2 prefetch's contract and reads its first and last byte, so that
// AddressSanitizer builds see a range outside the allocation.
void prefetch_l2(const void* p, unsigned bytes);

void mbar_init(unsigned bar, unsigned count);
void mbar_arrive_expect_tx(unsigned bar, unsigned bytes);
void mbar_complete_tx(unsigned bar, unsigned bytes);
bool mbar_try_wait_parity(unsigned bar, unsigned parity);  // yields the fiber when false

void* dyn_smem();
[[noreturn]] void trap(const char* why);

// Runs `body` (a call of `kernel`) in every thread of the grid; 0 or a cudaError_t code
// (last_message says why). GN_EMU_TRACE=path appends a line per launch to that file:
// the kernel's name, grid, block, shared memory, cluster size.
int launch(const void* kernel, dim3 grid, dim3 block, size_t smem, int csize, const std::function<void()>& body);
const char* last_message();
// Dynamic shared memory a kernel may launch with: DEFAULT_DYN_SMEM until it opts in
// (cudaFuncSetAttribute); a launch past it fails and occupancy counts no block, as on a GPU.
constexpr size_t DEFAULT_DYN_SMEM = 48 * 1024;
size_t smem_allowed(const void* kernel);
void set_smem_allowed(const void* kernel, size_t bytes);
void set_last_error(int e);
int take_last_error();

// The emulated device (environment, read once): GN_EMU_SMS (4), GN_EMU_MAJOR (9),
// GN_EMU_GBPS (25 GB/s an SM: an H100's ratio), GN_EMU_SMEM (227 KB).
struct Device {
  int sms, major, gbps, smem_optin;
};
const Device& device();

}  // namespace emu
