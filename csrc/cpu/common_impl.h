/*
 * Type-generic helpers shared by the CPU kernels; included (no include guard)
 * by each instantiation of gated_norm_impl.h and add_rms_norm_impl.h, after
 * common.h and with the includer's
 *   GN_T     float or double (the accumulation type)
 *   GN_DT    its gn_dtype (GN_FLOAT32 / GN_FLOAT64)
 *   FN(x)    x suffixed by the instantiation (x_f32 / x_f64)
 *   LOAD     load_f32 / load_f64
 *   STORE    store_f32 / store_f64
 */

/* sum((v - mu)^2) (GN_LANE_SUM): with mu = 0 the sum of squares; the two-pass
 * variance otherwise, exact-ish even when |mu| >> std. */
static GN_INLINE GN_T FN(sum_sq_dev)(const GN_T* GN_RESTRICT v, GN_T mu, int64_t n) {
  GN_T total;
  GN_LANE_SUM(GN_T, total, n, i, (v[i] - mu) * (v[i] - mu));
  return total;
}

/* sum(a * b) (GN_LANE_SUM). */
static GN_INLINE GN_T FN(dot)(const GN_T* GN_RESTRICT a, const GN_T* GN_RESTRICT b, int64_t n) {
  GN_T total;
  GN_LANE_SUM(GN_T, total, n, i, a[i] * b[i]);
  return total;
}

/* A row of n elements of dtype t as GN_T: the tensor's own memory when it holds
 * GN_T already (no copy: the kernels read fp32 / fp64 rows where they lie), else
 * `buf`, filled by a conversion. */
static GN_INLINE const GN_T* FN(row_in)(const void* src, gn_dtype t, GN_T* buf, int64_t n) {
  if (t == GN_DT) return (const GN_T*)src;
  LOAD(buf, src, t, n);
  return buf;
}

/* Second stage of the parameter-gradient reduction (see gn_row_chunks): the
 * workspace holds, per chunk c, `nparts` partials of `cols` each, part q at
 * ws + (c * nparts + q) * cols. dst[q] (NULL: skipped) = sum over c, in chunk
 * order, stored in pdt. Parallel over columns, which does not change any
 * column's order. */
static void FN(reduce_chunks)(const GN_T* ws, int64_t nchunks, int nparts, int64_t cols,
                              void* const* dst, gn_dtype pdt) {
  const int64_t ntiles = (cols + GN_RTILE - 1) / GN_RTILE;
  const size_t pesz = gn_dtype_size(pdt);
  const int par = nchunks * cols >= GN_PAR_MIN_ELEMS && ntiles > 1;
  int64_t t;
  (void)par; /* unused without OpenMP */
  GN_PRAGMA(omp parallel for schedule(static) if (par))
  for (t = 0; t < ntiles; t++) {
    GN_T acc[GN_RTILE];
    const int64_t j0 = t * GN_RTILE, m = cols - j0 < GN_RTILE ? cols - j0 : GN_RTILE;
    int q;
    for (q = 0; q < nparts; q++) {
      int64_t c, j;
      if (dst[q] == NULL) continue;
      for (j = 0; j < m; j++) acc[j] = 0;
      for (c = 0; c < nchunks; c++) {
        const GN_T* part = ws + (c * nparts + q) * cols + j0;
        GN_PRAGMA(omp simd)
        for (j = 0; j < m; j++) acc[j] += part[j];
      }
      STORE((char*)dst[q] + j0 * (int64_t)pesz, acc, pdt, m);
    }
  }
}
