// __nv_bfloat16 for the CPU emulator (csrc/emu/emu.h): storage and the two conversions
// csrc/cuda uses, rounding as the device does (to nearest even; NaN stays NaN).
#pragma once

#include "../emu.h"

struct __nv_bfloat16 {
  unsigned short x;
};
inline float __bfloat162float(__nv_bfloat16 h) { return ::emu::bit_cast<float>((unsigned)h.x << 16); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  unsigned u = ::emu::bit_cast<unsigned>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{(unsigned short)((u >> 16) | 0x40)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return __nv_bfloat16{(unsigned short)(u >> 16)};
}
