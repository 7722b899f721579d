// The native library's int8 product (kernels.h linear()) on the encoder's shapes, one thread, attention's
// probabilities x values product with uint8 (offset) and seven-bit activations, dense and mostly zero (skipped
// blocks, linear_blocks_nonzero), and the throughput of the instructions they are built from: what to run first
// on a new kind of CPU (docs/benchmarks.md). JSON out.
//   g++ -O3 -march=native -ffast-math -std=c++17 scripts/kernel_bench.cpp -o /tmp/kernel_bench -lmvec -lpthread
//   /tmp/kernel_bench
// Add -DPODBRIEF_WIDEN_BY_SHIFTS=0 or =1 to build the AVX2 kernel either way (kernels.h), -mno-avx512f for AVX2 on
// an AVX-512 CPU, -mno-avxvnni for the AVX2 kernel without vpdpbusd on a CPU with AVX-VNNI.
#include <chrono>
#include <cstdio>
#include <random>

#include "../app/asr/native/kernels.h"

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// 8 independent chains of one instruction (distinct starting values, or the compiler merges the chains): its
// throughput, in ns per instruction, when its latency is at most 8 of them.
template <class V, class Op>
__attribute__((noinline)) double per_instruction(V a, V b, Op op) {
  const long n = 20000000;
  // Named variables, not an array: GCC keeps an array of vectors on the stack, a store and a load per instruction.
  V x0 = a, x1 = op(x0, b), x2 = op(x1, b), x3 = op(x2, b), x4 = op(x3, b), x5 = op(x4, b), x6 = op(x5, b),
    x7 = op(x6, b);
  const double t = now();
  for (long i = 0; i < n; ++i) {
    x0 = op(x0, b), x1 = op(x1, b), x2 = op(x2, b), x3 = op(x3, b);
    x4 = op(x4, b), x5 = op(x5, b), x6 = op(x6, b), x7 = op(x7, b);
    asm volatile("" : "+x"(x0), "+x"(x1), "+x"(x2), "+x"(x3), "+x"(x4), "+x"(x5), "+x"(x6), "+x"(x7));
  }
  return (now() - t) / (n * 8.0) * 1e9;
}

// GMAC/s of linear() for m x k activations times an n x k weight matrix (weights within AVX2's pair bound).
// seven_bit: Linear::seven_bit (on AVX2, activations to seven bits with a zero point: the encoder's MLP down, second
// convolution and attention's scores; AVX-512 ignores it). Weights 64-byte aligned, as the library's are. `block`:
// rows per linear() call (attention's scores go kQueryBlock rows at a time; a k = 64 product over 1,500 rows at
// once reads its activations from L2 and runs slower, the seven-bit one more so).
double product_rate(int m, int k, int n, bool seven_bit = false, int block = 0) {
  std::mt19937 g(1);
  std::uniform_int_distribution<int> weight(-63, 63);
  std::vector<int8_t> w((size_t)n * k);
  for (auto& v : w) v = (int8_t)weight(g);
  std::vector<int8_t, CacheAligned<int8_t>> packed((size_t)(n + 15) / 16 * 16 * k);
  std::vector<int32_t> comp(n);
  std::vector<float> scale(n, 1.f), x((size_t)m * k), y((size_t)m * n);
  pack_weights(w.data(), n, k, packed.data(), comp.data());
  Linear L;
  L.w = packed.data(), L.comp = comp.data(), L.scale = scale.data(), L.k = k, L.n = n, L.seven_bit = seven_bit;
  std::normal_distribution<float> normal;
  for (auto& v : x) v = normal(g);
  linear(L, x.data(), m, y.data());  // warm: buffers allocated, weights in cache
  double best = 1e30;
  block = block > 0 ? block : m;
  for (int r = 0; r < 5; ++r) {
    const double t = now();
    for (int i0 = 0; i0 < m; i0 += block) linear(L, x.data() + (size_t)i0 * k, std::min(block, m - i0), y.data());
    best = std::min(best, now() - t);
  }
  return (double)m * k * n / best / 1e9;
}

// GMAC/s of attention's second product as attention_head runs it (a 30 s window: 1,500 query rows in blocks of
// kQueryBlock, probabilities x 1,504 frames x 64 dimensions of 7-bit values): probabilities as uint8 with the
// offset of 128 (every product's activations before 2026-12-06) or as they are now, 0..127 without one
// (linear_blocks<true>: on AVX2 two k steps share an int16 before widening).
// banded: each query row's probabilities are zero but for 640 frames around its own (43 %, the share of blocks
// the encoder's attention visits on dev speech), multiplied as the encoder does, skipping the zero blocks
// (linear_blocks_nonzero); the rate counts every frame, as if dense.
template <bool kSevenBit, bool kBanded = false>
double probabilities_rate() {
  const int rows = 30, m = 1500, k = 1504, n = 64;
  std::mt19937 g(2);
  std::uniform_int_distribution<int> weight(-kWeightMax, kWeightMax), prob(0, 127);
  std::vector<int8_t> w((size_t)n * k);
  std::vector<int8_t, CacheAligned<int8_t>> packed((size_t)n * k);  // as attention_head's (encoder.cpp)
  for (auto& v : w) v = (int8_t)weight(g);
  std::vector<int32_t> comp(n);
  std::vector<float> scale(n, 1.f), row_scale(rows, 1.f / 127), y((size_t)rows * n);
  pack_weights(w.data(), n, k, packed.data(), comp.data());
  if (kSevenBit) std::fill(comp.begin(), comp.end(), 0);
  Linear L;
  L.w = packed.data(), L.comp = comp.data(), L.scale = scale.data(), L.k = k, L.n = n;
  std::vector<Act> p(padded_rows(rows) * k);
  for (auto& v : p) v = (Act)(prob(g) + (kSevenBit ? 0 : 128));
  std::vector<std::vector<Act>> bands;  // per block of rows, when banded
  for (int i0 = 0; kBanded && i0 < m; i0 += rows) {
    std::vector<Act> b(p);
    for (int i = 0; i < rows; ++i)
      for (int f = 0; f < k; ++f)
        if (std::abs(f - (i0 + i)) > 320) b[(size_t)i * k + f] = 0;
    bands.push_back(std::move(b));
  }
  double best = 1e30;
  for (int r = 0; r < 5; ++r) {
    const double t = now();
    for (int i0 = 0; i0 < m; i0 += rows)
      if constexpr (kBanded)
        linear_blocks_nonzero(L, bands[i0 / rows].data(), row_scale.data(), rows, y.data());
      else
        linear_blocks<kSevenBit>(L, p.data(), row_scale.data(), rows, y.data(), 0, n);
    best = std::min(best, now() - t);
  }
  return (double)m * k * n / best / 1e9;
}

}  // namespace

int main() {
  const __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(1);
  const __m256 f = _mm256_set1_ps(0.5f);
  std::printf("{\"kernels\": \"%s\", \"widen_by_shifts\": %d, \"avx_vnni\": %d,\n", kKernels, kWidenByShifts ? 1 : 0,
              kAvxVnni ? 1 : 0);
  std::printf(" \"ns_per_instruction\": {\"vpmaddubsw_ymm\": %.3f, \"vpmaddwd_ymm\": %.3f, \"vfmadd_ymm\": %.3f},\n",
              per_instruction(a, b, [](__m256i u, __m256i v) { return _mm256_maddubs_epi16(u, v); }),
              per_instruction(a, b, [](__m256i u, __m256i v) { return _mm256_madd_epi16(u, v); }),
              per_instruction(f, f, [](__m256 u, __m256 v) { return _mm256_fmadd_ps(u, v, v); }));
  // The encoder's linear layers at a 30 s window (1,500 frames: width 384, MLP 1,536) and attention's scores.
  std::printf(" \"gmac_per_s\": {\"1500x384x1536\": %.1f, \"1500x1536x384\": %.1f, \"1500x64x1500\": %.1f,\n",
              product_rate(1500, 384, 1536), product_rate(1500, 1536, 384), product_rate(1500, 64, 1500));
  std::printf("  \"1500x1536x384_seven_bit\": %.1f, \"scores_1500x64x1504_8bit\": %.1f, "
              "\"scores_1500x64x1504_seven_bit\": %.1f,\n",
              product_rate(1500, 1536, 384, true), product_rate(1500, 64, 1504, false, 30),
              product_rate(1500, 64, 1504, true, 30));
  std::printf("  \"probabilities_1500x1504x64_offset\": %.1f, \"probabilities_1500x1504x64_seven_bit\": %.1f,\n",
              probabilities_rate<false>(), probabilities_rate<true>());
  std::printf("  \"probabilities_1500x1504x64_banded_skipping_zeros\": %.1f}}\n", probabilities_rate<true, true>());
}
