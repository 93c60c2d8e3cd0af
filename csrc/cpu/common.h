/*
 * Pieces shared by the CPU kernels (gated_norm.c, add_rms_norm.c): OpenMP and
 * multiversioning macros, bit-exact fp16/bf16 conversions, row conversion
 * between storage dtypes and the accumulation type, and the backward's row
 * chunking, which fixes the order of the dw/db reductions. Type-generic
 * helpers (tiled sums, the final reduce of the chunk partials) are in
 * common_impl.h, included by each kernel instantiation.
 *
 * Everything is static: each kernel file gets its own copy. C99 and C++17
 * (torch's build compiles the .c files with the C++ compiler).
 */
#ifndef GN_CPU_COMMON_H
#define GN_CPU_COMMON_H

#include "../gatednorm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef __FAST_MATH__
/* The fp16 rounding below relies on IEEE float arithmetic (overflow to inf,
 * round-to-nearest-even); -ffast-math would let gcc fold it away. */
#error "csrc/cpu must not be compiled with -ffast-math"
#endif

/* OpenMP pragmas that vanish (without -Wunknown-pragmas noise) when the
 * build has no OpenMP: everything is still correct, just serial. */
#ifdef _OPENMP
#define GN_PRAGMA(x) _Pragma(#x)
#else
#define GN_PRAGMA(x)
#endif

/* The kernels' per-thread bodies (fwd_team, bwd_team, an_*_team) and the
 * conversion loops: on x86-64 with glibc (ifunc), gcc also builds x86-64-v4 (AVX-512)
 * and x86-64-v3 (AVX2 + FMA) copies of them and picks one at load time; every loop below a body is inlined
 * into it (GN_INLINE), so all of them get the wider vectors (the activations are
 * compute-bound: AVX-512 over AVX2, the silu loop 0.8 -> 0.45 ns an element; the
 * reductions and the normalisation, baseline SSE2 until 2026-12-05, took a fifth of
 * the fp32 gated forward's time). Element-wise loops give bitwise the same results in every
 * copy because setup.py builds with -ffp-contract=off (the v3 / v4 copies would
 * otherwise fuse some a*b+c into FMAs and the baseline copy cannot), and the FMAs the
 * source asks for (fmaf: the exp) are one correctly rounded operation everywhere: an
 * instruction in the v3 / v4 copies, glibc's exact fmaf in the baseline one (scalar:
 * slow, but only CPUs without AVX2 run it); sums because their order is fixed in the
 * source (GN_LANE_SUM), not by the vector width. */
#ifndef GN_MULTIVERSION /* -DGN_MULTIVERSION= turns it off */
#if defined(__x86_64__) && defined(__GLIBC__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8
#define GN_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GN_MULTIVERSION
#endif
#endif

/* The helpers of a multiversioned row kernel: inlined into each of its copies, so they
 * are compiled for that copy's ISA (a call would run the baseline code). */
#ifdef __GNUC__
#define GN_INLINE inline __attribute__((always_inline))
#else
#define GN_INLINE inline
#endif

#ifdef __cplusplus
#define GN_RESTRICT __restrict
#else
#define GN_RESTRICT restrict
#endif

/* ------------------------------------------------------------------------ */
/* fp16 / bf16 <-> fp32, bit-exact, branch-free so loops over them vectorise.
 * Selects are done with bit masks, not ?:, on purpose: when one arm of a ?:
 * is a constant, gcc sinks the float math of the other arm into a branch and,
 * since float ops may trap (-ftrapping-math), then refuses to vectorise. */

static inline uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static inline float f32_from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/* all-ones when c, else zero */
static inline uint32_t mask_u32(int c) { return (uint32_t)0 - (uint32_t)(c != 0); }

/* m ? a : b, bitwise */
static inline uint32_t sel_u32(uint32_t m, uint32_t a, uint32_t b) { return (a & m) | (b & ~m); }

/* IEEE half -> float (exact). Normal halves are re-biased by a multiply
 * (inf/NaN keep an all-ones exponent); subnormal halves are built as
 * 0.5 + m*2^-24 in float and the 0.5 subtracted, which is exact. */
static inline float gn_half_to_float(uint16_t h) {
  const uint32_t w = (uint32_t)h << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const float normalized = f32_from_bits((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  const float denormalized = f32_from_bits((two_w >> 17) | (126u << 23)) - 0.5f;
  const uint32_t m = mask_u32(two_w < (1u << 27));
  return f32_from_bits(sign | sel_u32(m, f32_bits(denormalized), f32_bits(normalized)));
}

/* float -> IEEE half, round to nearest even, overflow to inf, subnormals,
 * NaN kept quiet. The FPU does the rounding: scaling by 2^112 then 2^-110
 * saturates values too large for half to inf, and adding a power of two
 * chosen from the exponent (at least 2^-14's worth) leaves exactly the half's
 * mantissa bits, correctly rounded, in the low bits of the sum. */
static inline uint16_t gn_float_to_half(float f) {
  float base = (fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
  const uint32_t w = f32_bits(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  bias = bias < 0x71000000u ? 0x71000000u : bias;
  base = f32_from_bits((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = f32_bits(base);
  const uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
  return (uint16_t)((sign >> 16) | sel_u32(mask_u32(shl1_w > 0xFF000000u), 0x7E00u, nonsign));
}

static inline float gn_bf16_to_float(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

/* float -> bf16, round to nearest even; NaN stays NaN (quiet bit forced so
 * that a payload living only in the low bits cannot round to inf). */
static inline uint16_t gn_float_to_bf16(float f) {
  const uint32_t u = f32_bits(f);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const uint32_t nan = (u >> 16) | 0x0040u;
  return (uint16_t)sel_u32(mask_u32((u & 0x7FFFFFFFu) > 0x7F800000u), nan, rounded);
}

/* ------------------------------------------------------------------------ */
/* Row conversion between storage dtypes and the accumulation type. The
 * dtype switch is outside the loops so each loop is a plain vector loop.
 * Double -> fp16/bf16 goes through float (as torch's casts do). */

GN_MULTIVERSION static void load_f32(float* GN_RESTRICT dst, const void* src, gn_dtype t, int64_t n) {
  int64_t j;
  if (t == GN_FLOAT32) {
    memcpy(dst, src, (size_t)n * sizeof(float));
  } else if (t == GN_FLOAT16) {
    const uint16_t* s = (const uint16_t*)src;
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) dst[j] = gn_half_to_float(s[j]);
  } else if (t == GN_BFLOAT16) {
    const uint16_t* s = (const uint16_t*)src;
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) dst[j] = gn_bf16_to_float(s[j]);
  } else {
    const double* s = (const double*)src;
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) dst[j] = (float)s[j];
  }
}

GN_MULTIVERSION static void store_f32(void* dst, const float* GN_RESTRICT src, gn_dtype t, int64_t n) {
  int64_t j;
  if (t == GN_FLOAT32) {
    memcpy(dst, src, (size_t)n * sizeof(float));
  } else if (t == GN_FLOAT16) {
    uint16_t* d = (uint16_t*)dst;
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) d[j] = gn_float_to_half(src[j]);
  } else if (t == GN_BFLOAT16) {
    uint16_t* d = (uint16_t*)dst;
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) d[j] = gn_float_to_bf16(src[j]);
  } else {
    double* d = (double*)dst;
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) d[j] = (double)src[j];
  }
}

static void load_f64(double* GN_RESTRICT dst, const void* src, gn_dtype t, int64_t n) {
  int64_t j;
  if (t == GN_FLOAT64) {
    memcpy(dst, src, (size_t)n * sizeof(double));
  } else if (t == GN_FLOAT32) {
    const float* s = (const float*)src;
    for (j = 0; j < n; j++) dst[j] = (double)s[j];
  } else if (t == GN_FLOAT16) {
    const uint16_t* s = (const uint16_t*)src;
    for (j = 0; j < n; j++) dst[j] = (double)gn_half_to_float(s[j]);
  } else {
    const uint16_t* s = (const uint16_t*)src;
    for (j = 0; j < n; j++) dst[j] = (double)gn_bf16_to_float(s[j]);
  }
}

static void store_f64(void* dst, const double* GN_RESTRICT src, gn_dtype t, int64_t n) {
  int64_t j;
  if (t == GN_FLOAT64) {
    memcpy(dst, src, (size_t)n * sizeof(double));
  } else if (t == GN_FLOAT32) {
    float* d = (float*)dst;
    for (j = 0; j < n; j++) d[j] = (float)src[j];
  } else if (t == GN_FLOAT16) {
    uint16_t* d = (uint16_t*)dst;
    for (j = 0; j < n; j++) d[j] = gn_float_to_half((float)src[j]);
  } else {
    uint16_t* d = (uint16_t*)dst;
    for (j = 0; j < n; j++) d[j] = gn_float_to_bf16((float)src[j]);
  }
}

/* ------------------------------------------------------------------------ */
/* Small helpers. */

static inline int dtype_ok(gn_dtype t) {
  return t == GN_FLOAT32 || t == GN_FLOAT16 || t == GN_BFLOAT16 || t == GN_FLOAT64;
}

/* The accumulation (and statistics) type's size: fp64 problems accumulate in
 * double, all others in float. */
static inline size_t acc_size(gn_dtype t) { return t == GN_FLOAT64 ? sizeof(double) : sizeof(float); }

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* Address of element `elem` (64-bit) of a tensor of `esz`-byte elements. */
static inline const char* gn_at(const void* base, int64_t elem, size_t esz) {
  return (const char*)base + elem * (int64_t)esz;
}

/* Below this many elements a parallel region costs more than it saves. */
#define GN_PAR_MIN_ELEMS 32768

/* Reductions are vector sums over tiles of this many elements, and tile sums
 * are added up in order: error grows like tile/lanes + n/tile, not n/lanes,
 * which matters for rows of up to a million elements in float. */
#define GN_TILE 2048
#define GN_LANES 32 /* multiple of 16, divides GN_TILE */

/* total = sum over i in [0, n) of EXPR (an expression in i). Within a tile, lane k
 * sums the i = k mod GN_LANES in order and the lanes are folded by a fixed tree; tile
 * sums are added in order. Every addition's order is written here, not left to the
 * vectoriser (`omp simd reduction` would sum in as many lanes as the ISA has), so the
 * AVX-512, AVX2 and baseline copies give bitwise the same sums; 32 lanes are two
 * independent AVX-512 add chains (one chain is latency-bound at ~5 floats a cycle). */
#define GN_LANE_SUM(T, total, n, i, EXPR)                                          \
  do {                                                                             \
    int64_t j0_, j_, k_;                                                           \
    (total) = 0;                                                                   \
    for (j0_ = 0; j0_ < (n); j0_ += GN_TILE) {                                     \
      const int64_t m_ = (n) - j0_ < GN_TILE ? (n) - j0_ : GN_TILE;                \
      T acc_[GN_LANES] = {0};                                                      \
      for (j_ = 0; j_ + GN_LANES <= m_; j_ += GN_LANES)                            \
        for (k_ = 0; k_ < GN_LANES; k_++) {                                        \
          const int64_t i = j0_ + j_ + k_;                                         \
          acc_[k_] += (EXPR);                                                      \
        }                                                                          \
      for (k_ = 0; j_ + k_ < m_; k_++) {                                           \
        const int64_t i = j0_ + j_ + k_;                                           \
        acc_[k_] += (EXPR);                                                        \
      }                                                                            \
      for (k_ = GN_LANES / 2; k_ > 0; k_ /= 2) {                                   \
        int64_t q_;                                                                \
        for (q_ = 0; q_ < k_; q_++) acc_[q_] += acc_[q_ + k_];                     \
      }                                                                            \
      (total) += acc_[0];                                                          \
    }                                                                              \
  } while (0)
#define GN_RTILE 1024 /* columns per task of the final dw/db reduce */

/* ------------------------------------------------------------------------ */
/* Backward chunking. Parameter gradients (dw, db) are reduced in two fixed
 * stages: rows are cut into `nchunks` consecutive blocks, each block sums its
 * rows in row order into its own partials in the workspace, then partials
 * are summed in block order (reduce_chunks in common_impl.h). The cut depends
 * only on the problem shape and the partials' size (never on the thread count
 * or on which thread runs a block), so the gradients are bitwise reproducible
 * with any OMP_NUM_THREADS and any schedule. Workspace:
 *   nchunks * (bytes of one chunk's partials), at most
 *   max(32 MiB, one chunk's partials). */

#define GN_WS_BUDGET ((int64_t)32 << 20) /* bytes of partials we aim to stay under */
#define GN_MAX_CHUNKS 256                 /* plenty of parallelism for many cores */
#define GN_MIN_CHUNKS 64                  /* ... kept even when rows are few */
#define GN_CHUNK_ROWS 16                  /* rows per chunk: the reduce costs ~1/40 */
#define GN_MIN_CHUNK_ELEMS 16384          /* tiny problems: few chunks */

typedef struct {
  int64_t nchunks, rows_per_chunk;
} gn_chunks;

/* rows > 0, cols > 0; `chunk_bytes`: size of one chunk's partials (> 0). */
static inline gn_chunks gn_row_chunks(int64_t rows, int64_t cols, int64_t chunk_bytes) {
  gn_chunks k;
  int64_t n = max64((rows + GN_CHUNK_ROWS - 1) / GN_CHUNK_ROWS, min64(rows, GN_MIN_CHUNKS));
  n = min64(n, (rows * cols + GN_MIN_CHUNK_ELEMS - 1) / GN_MIN_CHUNK_ELEMS);
  n = min64(n, min64(GN_MAX_CHUNKS, GN_WS_BUDGET / chunk_bytes));
  n = max64(n, 1);
  k.rows_per_chunk = (rows + n - 1) / n;
  k.nchunks = (rows + k.rows_per_chunk - 1) / k.rows_per_chunk; /* no empty chunk */
  return k;
}

/* Per-thread scratch, called by every thread of a parallel region: a thread whose
 * malloc fails sets *failed, and after the barrier all threads see it and get NULL,
 * so all take the same path through the worksharing loop that follows (a thread
 * skipping an `omp for` alone would hang the others). Free the result either way. */
static inline void* gn_thread_scratch(size_t bytes, int* failed) {
  void* p = malloc(bytes);
  int any;
  if (p == NULL) {
    GN_PRAGMA(omp atomic write)
    *failed = 1;
  }
  GN_PRAGMA(omp barrier)
  GN_PRAGMA(omp atomic read)
  any = *failed;
  if (any) {
    free(p);
    return NULL;
  }
  return p;
}

#endif /* GN_CPU_COMMON_H */
