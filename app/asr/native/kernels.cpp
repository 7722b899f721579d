// The library's entry points that are neither the decoder's nor the encoder's (kernels.h).
#include "kernels.h"

extern "C" {

// Which int8 kernels this build has: "avx512-vnni" or "avx2".
const char* kernels() { return kKernels; }

// 1 where the AVX2 kernel widens its int16 pair sums by shifts rather than vpmaddwd (kernels.h: AMD Zen 1), else 0.
int widen_by_shifts() { return kWidenByShifts ? 1 : 0; }

// 1 where the AVX2 kernel multiplies with AVX-VNNI's vpdpbusd (kernels.h: Alder Lake and later, Zen 5), else 0.
int avx_vnni() { return kAvxVnni ? 1 : 0; }

// Whether products run on AMX tiles (where built and permitted), after switching them on (1) or off (0) for the
// whole process; -1 only asks. For the tests and benchmarks that compare both paths.
int set_amx(int on) {
#ifdef PODBRIEF_AMX
  if (on >= 0) podbrief::amx_on = on != 0;
#else
  (void)on;
#endif
  return amx_active() ? 1 : 0;
}

// w: n x k int8, row-major, k a multiple of 4 -> out: (n rounded up to 16) x k packed as the kernels read it;
// comp: 128 * the row sums (the uint8 activations' shift). AVX2 builds need weights whose same-sign neighbours sum
// to at most 128 in magnitude (kernels.h; model.py quantize_rows).
void pack(const int8_t* w, int n, int k, int8_t* out, int32_t* comp) { pack_weights(w, n, k, out, comp); }

// For the tests: y[m][n] = x[m][k] x w^T (w: n x k int8, row-major; every weight scale 1, no bias) through linear(),
// with seven-bit activations where seven_bit is 1 (Linear::seven_bit: seven bits with a zero point on AVX2).
void product_of(const int8_t* w, int n, int k, const float* x, int m, float* y, int seven_bit) {
  std::vector<int8_t, CacheAligned<int8_t>> packed((size_t)(n + 15) / 16 * 16 * k);
  std::vector<int32_t> comp(n);
  std::vector<float> scale(n, 1.f);
  pack_weights(w, n, k, packed.data(), comp.data());
  Linear L;
  L.w = packed.data(), L.comp = comp.data(), L.scale = scale.data(), L.k = k, L.n = n, L.seven_bit = seven_bit != 0;
  linear(L, x, m, y);
}

void product(const int8_t* w, int n, int k, const float* x, int m, float* y) { product_of(w, n, k, x, m, y, 0); }

// For the tests: y[m][n] = x[m][k] x w^T for activations x already in 0..127 (uint8, no offset: the seven-bit
// activations of linear_blocks<true>, as attention's probabilities), k a multiple of 16, every scale 1; as the
// encoder multiplies its probabilities, each group of rows' columns of zeros skipped (linear_blocks_nonzero).
void product_seven_bit(const int8_t* w, int n, int k, const uint8_t* x, int m, float* y) {
  std::vector<int8_t, CacheAligned<int8_t>> packed((size_t)(n + 15) / 16 * 16 * k);
  std::vector<int32_t> comp(n);
  std::vector<float> scale(n, 1.f), row_scale(m, 1.f);
  std::vector<Act> xq(padded_rows(m) * k, 0);
  std::copy(x, x + (size_t)m * k, xq.begin());
  pack_weights(w, n, k, packed.data(), comp.data());
  std::fill(comp.begin(), comp.end(), 0);  // no offset to take off
  Linear L;
  L.w = packed.data(), L.comp = comp.data(), L.scale = scale.data(), L.k = k, L.n = n;
  linear_blocks_nonzero(L, xq.data(), row_scale.data(), m, y);
}

}  // extern "C"
