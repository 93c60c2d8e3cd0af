// __half for the CPU emulator (csrc/emu/emu.h): storage and the two conversions
// csrc/cuda uses, through the compiler's IEEE binary16 (round to nearest even).
#pragma once

#include "../emu.h"

struct __half {
  unsigned short x;
};
inline float __half2float(__half h) { return (float)::emu::bit_cast<_Float16>(h.x); }
inline __half __float2half_rn(float f) { return __half{::emu::bit_cast<unsigned short>((_Float16)f)}; }
