// __half for the CPU emulator (csrc/emu/emu.h): storage and the two conversions
// csrc/cuda uses, through the compiler's IEEE binary16 (round to nearest even).
#pragma once

#include <string.h>

struct __half {
  unsigned short x;
};
inline float __half2float(__half h) {
  _Float16 v;
  memcpy(&v, &h.x, 2);
  return (float)v;
}
inline __half __float2half_rn(float f) {
  const _Float16 v = (_Float16)f;
  __half h;
  memcpy(&h.x, &v, 2);
  return h;
}
