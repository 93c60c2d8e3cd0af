// The part of the CUDA runtime API and device language that csrc/cuda uses, for the
// CPU emulator (csrc/emu/emu.h). Only GN_EMU builds put this directory on the include
// path, ahead of the toolkit.
#pragma once

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <tuple>
#include <type_traits>
#include <utility>

#include "../emu.h"

#ifndef GN_EMU
#error "csrc/emu/include is for GN_EMU builds only"
#endif

// Device code compiles as host code; __CUDA_ARCH__ selects the sm_90 paths (clusters).
#define __CUDA_ARCH__ 900
#define __CUDA_ARCH_LIST__ 900
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static thread_local
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

// threadIdx.x etc.: objects whose members read the running fiber's coordinates.
namespace emu {
template <int WHICH, int AXIS>
struct Coord {
  operator unsigned() const { return coord(WHICH, AXIS); }
};
template <int WHICH>
struct Coords {
  Coord<WHICH, 0> x;
  Coord<WHICH, 1> y;
  Coord<WHICH, 2> z;
};
}  // namespace emu
static constexpr emu::Coords<0> threadIdx{};
static constexpr emu::Coords<1> blockIdx{};
static constexpr emu::Coords<2> blockDim{};
static constexpr emu::Coords<3> gridDim{};

struct __align__(16) uint4 { unsigned x, y, z, w; };
struct __align__(8) uint2 { unsigned x, y; };
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }

template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
inline unsigned __float_as_uint(float f) { return ::emu::bit_cast<unsigned>(f); }
inline long long __double_as_longlong(double d) { return ::emu::bit_cast<long long>(d); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline float __expf(float x) { return expf(x); }
inline float rsqrtf(float x) { return 1.f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
[[noreturn]] inline void __trap() { ::emu::trap("__trap()"); }
inline size_t __cvta_generic_to_shared(const void* p) { return ::emu::shared_addr(p); }
inline void __syncthreads() { ::emu::syncthreads(); }
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return ::emu::shfl_xor(mask, v, lane_mask, width);
}

// ---- runtime API ----
typedef int cudaError_t;
enum : int { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorLaunchFailure = 719 };
struct CUstream_st;
typedef CUstream_st* cudaStream_t;
inline cudaError_t cudaGetLastError() { return ::emu::take_last_error(); }
inline const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaSuccess ? "no error" : ::emu::last_message();
}
inline const char* cudaGetErrorName(cudaError_t e) {
  return e == cudaSuccess ? "cudaSuccess" : (e == cudaErrorLaunchFailure ? "cudaErrorLaunchFailure (emulator)"
                                                                         : "cudaErrorInvalidValue (emulator)");
}
inline cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}

enum cudaDeviceAttr {
  cudaDevAttrMultiProcessorCount,
  cudaDevAttrMaxSharedMemoryPerBlockOptin,
  cudaDevAttrComputeCapabilityMajor,
  cudaDevAttrMemoryClockRate,
  cudaDevAttrGlobalMemoryBusWidth,
};
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) {
  const ::emu::Device& d = ::emu::device();
  switch (a) {
    case cudaDevAttrMultiProcessorCount: *v = d.sms; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = d.smem_optin; break;
    case cudaDevAttrComputeCapabilityMajor: *v = d.major; break;
    case cudaDevAttrMemoryClockRate: *v = d.gbps * 1000; break;  // kHz: with the bus below, gbps
    case cudaDevAttrGlobalMemoryBusWidth: *v = 4000; break;      // bits (x2 DDR / 8 / 1e6)
  }
  return cudaSuccess;
}

enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize, cudaFuncAttributeNonPortableClusterSizeAllowed };
template <typename F>
inline cudaError_t cudaFuncSetAttribute(F* k, cudaFuncAttribute a, int v) {
  if (a != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaSuccess;
  if (v < 0 || v > ::emu::device().smem_optin) return cudaErrorInvalidValue;
  ::emu::set_smem_allowed(reinterpret_cast<const void*>(k), (size_t)v);
  return cudaSuccess;
}

namespace emu {
// Blocks an SM holds at once: by threads (2048) and shared memory only (registers and
// static shared memory are unknown here).
inline int blocks_per_sm(int threads, size_t smem) {
  int n = threads > 0 ? 2048 / threads : 1;
  if (smem) {
    const int by_smem = (int)((size_t)(device().smem_optin + 1024) / (smem + 1024));
    if (by_smem < n) n = by_smem;
  }
  if (n > 32) n = 32;
  return n;
}
}  // namespace emu

// Past the kernel's opt-in: no block (the occupancy calculator's answer on a GPU).
template <typename F>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, F* k, int threads, size_t smem) {
  *n = smem > ::emu::smem_allowed(reinterpret_cast<const void*>(k)) ? 0 : ::emu::blocks_per_sm(threads, smem);
  return cudaSuccess;
}

enum cudaLaunchAttributeID {
  cudaLaunchAttributeClusterDimension = 4,
  cudaLaunchAttributeProgrammaticStreamSerialization = 5,
};
struct cudaLaunchAttribute {
  cudaLaunchAttributeID id;
  union {
    struct {
      unsigned x, y, z;
    } clusterDim;
    int programmaticStreamSerializationAllowed;
  } val;
};
struct cudaLaunchConfig_t {
  dim3 gridDim;
  dim3 blockDim;
  size_t dynamicSmemBytes;
  cudaStream_t stream;
  cudaLaunchAttribute* attrs;
  unsigned numAttrs;
};

namespace emu {
inline int cluster_size(const cudaLaunchConfig_t* c) {
  for (unsigned i = 0; i < c->numAttrs; ++i)
    if (c->attrs[i].id == cudaLaunchAttributeClusterDimension) return (int)c->attrs[i].val.clusterDim.x;
  return 1;
}
// A kernel call with its arguments converted to the parameter types, as a launch does.
template <typename... P, typename... Args>
inline int launch_kernel(void (*k)(P...), dim3 grid, dim3 block, size_t smem, int csize, Args&&... args) {
  std::tuple<std::decay_t<P>...> params(static_cast<Args&&>(args)...);
  return launch(reinterpret_cast<const void*>(k), grid, block, smem, csize, [k, &params] { std::apply(k, params); });
}
// `kernel<<<grid, block, smem, stream>>>(args)`: the emulator build rewrites it to
// `::emu::chevron(kernel, grid, block, smem, stream)(args)` (setup.py).
template <typename K>
struct Chevron {
  K k;
  dim3 grid, block;
  size_t smem;
  template <typename... Args>
  void operator()(Args&&... args) const {
    const int e = launch_kernel(k, grid, block, smem, 1, static_cast<Args&&>(args)...);
    if (e) set_last_error(e);  // read back by cudaGetLastError, as after a real <<<>>>
  }
};
template <typename K>
inline Chevron<K> chevron(K k, dim3 grid, dim3 block, size_t smem = 0, cudaStream_t = nullptr) {
  return Chevron<K>{k, grid, block, smem};
}
}  // namespace emu

template <typename F>
inline cudaError_t cudaOccupancyMaxActiveClusters(int* n, F* k, const cudaLaunchConfig_t* c) {
  const int cs = ::emu::cluster_size(c);
  *n = c->dynamicSmemBytes > ::emu::smem_allowed(reinterpret_cast<const void*>(k))
           ? 0
           : ::emu::blocks_per_sm((int)c->blockDim.x, c->dynamicSmemBytes) * ::emu::device().sms / (cs > 0 ? cs : 1);
  return cudaSuccess;
}

template <typename... P, typename... Args>
inline cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t* c, void (*k)(P...), Args&&... args) {
  return ::emu::launch_kernel(k, c->gridDim, c->blockDim, c->dynamicSmemBytes, ::emu::cluster_size(c),
                              static_cast<Args&&>(args)...);
}
