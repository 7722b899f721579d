// The int8 matrix products, layer norm and softmax that the native Whisper decoder (decoder.cpp) and encoder
// (encoder.cpp) share; app/asr/native/library.py builds every .cpp in this folder into one library with
//   g++ -O3 -march=native -ffast-math -shared -fPIC kernels.cpp decoder.cpp encoder.cpp -lmvec
// Internal linkage (an anonymous namespace): each file gets its own copy, inlined where it is used.
// Activations are quantized per row to int8; the int8 products have these kernels:
// - AVX-512 VNNI (kAvx512): weights packed [n/16][k/4][16][4], one 64-byte load feeds one vpdpbusd per row.
//   vpdpbusd multiplies uint8 by int8, so activations are shifted to uint8:
//     y[i][o] = sx[i] * sw[o] * (sum_k xu8[i][k] * w[o][k] - 128 * sum_k w[o][k]) + bias[o].
// - AVX2 (Zen 1-3, older Intel): the same layout and uint8 activations, multiplied with vpmaddubsw (uint8 x int8,
//   each adjacent pair of products summed into int16) and widened by vpmaddwd with ones: 7 uops for 64 multiplies
//   (on AMD Zen 1, whose one vector multiplier is the bound, widened by a shift and adds instead: below).
//   vpmaddubsw saturates where a pair's sum passes 32,767, which uint8 x full-range int8 can (2 x 255 x 127), so
//   the weights are kept where no pair can:
//   - linear layers: 8-bit weights whose same-sign neighbours (k = 2p, 2p + 1) sum to at most 128 in magnitude
//     (at most 255 x 128 = 32,640; a pair of opposite signs is at most 255 x 127), a per-row scale of
//     max(|w|, |w[2p] + w[2p+1]|) / 127 (app/asr/native/model.py, quantize_rows). The row's scale is 1.1-1.3x
//     coarser than amax / 127, and the products' error 0.0164 against 0.0156 at full 8 bits (7-bit: 0.0205);
//     the sums are exact. Until 2026-12-06 these ran on an int16 kernel (vpmaddwd on sign-extended weights, exact at
//     full 8 bits): 8-10 % more CPU for the whole transcription (docs/benchmarks.md).
//   - attention's keys and values (weights made per window, encoder.cpp): 7-bit (kWeightMax = 63: at most
//     2 x 255 x 63 = 32,130), measured as good as 8-bit there.
//   Attention's probabilities are 0..127 with no offset (seven-bit activations, linear_blocks<true>): two k steps'
//   pair sums then fit one int16 together, so a vpmaddwd widens four products' pairs instead of two.
//   Where the CPU has AVX-VNNI (vpdpbusd on 256-bit vectors without AVX-512: Intel Alder Lake and later client
//   cores, Sapphire Rapids, AMD Zen 5), the same kernel multiplies with it: one instruction for the three, the
//   same weights, activations and int32 sums, so the same bits as the AVX2 kernel (kAvxVnni, dpbusd below).
// - AMX (Intel Sapphire Rapids and later, on top of AVX-512 VNNI): the same packed weights are AMX's B tiles as they
//   are (16 k-groups of 16 outputs x 4 bytes = one 16 x 64-byte tile), the uint8 activations its A tiles, and
//   tdpbusd the same uint8 x int8 -> int32 sums as vpdpbusd, 16 x 16 x 64 per instruction. Same integers, same
//   epilogue: bit-identical outputs (tests/test_asr_native_encoder.py), for products with k a multiple of 64.
#pragma once

#include <immintrin.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define PODBRIEF_AVX512 1
#elif !(defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
#error "the native Whisper kernels need AVX2, FMA and F16C (library.py checks before building)"
#endif

#if defined(PODBRIEF_AVX512) && ((defined(__AMX_TILE__) && defined(__AMX_INT8__)) || defined(PODBRIEF_AMX_EMULATION))
#define PODBRIEF_AMX 1
// One switch for the whole library: an inline variable outside the anonymous namespace is the same object in
// every file that includes this header.
namespace podbrief {
inline bool amx_on = true;
}
#endif

// Helper threads kept for the life of the process, one set for the whole library (outside the anonymous namespace:
// encoder.cpp and decoder.cpp share it). Why: a lone decoding worker (a short file, the last run of a long one)
// has the other cores to itself, but a step is ~30 products of 10-200 us each; threads started per product (~30 us
// each) would cost more than they save. A helper waits for work spinning for ~50 us (the gap between the products
// of one step), then asleep on a condition variable (between steps, when Python chooses the tokens, and whenever
// another worker has the core: spinning there would take it from that worker).
namespace podbrief {

class Pool {
 public:
  // run(ctx) on the caller and on up to `helpers` helpers at once; returns once every run that started has
  // finished. `run` takes its work from a shared counter (parallel(), below), so a helper that wakes late, or
  // not before the caller has taken everything, costs nothing: the caller withdraws what no helper took up.
  // false (nothing run) when another caller holds the helpers: one caller at a time, the others start threads.
  bool try_run(int helpers, void (*run)(void*), void* ctx) {
    std::unique_lock<std::mutex> hold(use_, std::try_to_lock);
    if (!hold.owns_lock()) return false;
    while ((int)helpers_.size() < helpers) {
      helpers_.push_back(std::make_unique<Helper>());
      Helper* h = helpers_.back().get();
      std::thread([this, h] { serve(*h); }).detach();  // lives as long as the process (never unloaded)
    }
    for (int t = 0; t < helpers; ++t) {
      Helper& h = *helpers_[t];
      h.run = run, h.ctx = ctx;
      h.state.store(kPosted, std::memory_order_seq_cst);
      if (h.sleeping.load(std::memory_order_seq_cst)) {  // Dekker with serve(): one of the two sees the other
        std::lock_guard<std::mutex> lock(sleep_);
        wake_.notify_all();
      }
    }
    run(ctx);
    for (int t = 0; t < helpers; ++t) {
      Helper& h = *helpers_[t];
      int posted = kPosted;
      if (h.state.compare_exchange_strong(posted, kIdle, std::memory_order_acq_rel)) continue;  // never took it
      while (h.state.load(std::memory_order_acquire) != kIdle) _mm_pause();                     // still running
    }
    return true;
  }

 private:
  static constexpr int kSpinMicroseconds = 50;
  enum : int { kIdle, kPosted, kRunning };

  struct alignas(64) Helper {
    std::atomic<int> state{kIdle};
    std::atomic<bool> sleeping{false};
    void (*run)(void*) = nullptr;
    void* ctx = nullptr;
  };

  void serve(Helper& h) {
    for (;;) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(kSpinMicroseconds);
      while (h.state.load(std::memory_order_acquire) != kPosted && std::chrono::steady_clock::now() < until)
        for (int i = 0; i < 16; ++i) _mm_pause();
      if (h.state.load(std::memory_order_acquire) != kPosted) {
        std::unique_lock<std::mutex> lock(sleep_);
        h.sleeping.store(true, std::memory_order_seq_cst);
        while (h.state.load(std::memory_order_seq_cst) != kPosted) wake_.wait(lock);
        h.sleeping.store(false, std::memory_order_relaxed);
      }
      int posted = kPosted;  // the caller may withdraw the work meanwhile (try_run)
      if (!h.state.compare_exchange_strong(posted, kRunning, std::memory_order_acq_rel)) continue;
      h.run(h.ctx);
      h.state.store(kIdle, std::memory_order_release);
    }
  }

  std::mutex use_, sleep_;
  std::condition_variable wake_;
  std::vector<std::unique_ptr<Helper>> helpers_;
};

// The process's pool, never destroyed (its helpers run until the process ends). A child forked from a process
// with helpers (Celery's prefork pool, multiprocessing) has none of its parent's threads and may have inherited a
// locked mutex: it starts a pool of its own (the parent's is left as it is, a few hundred bytes).
inline Pool*& pool_slot() {
  static Pool* p = nullptr;
  return p;
}
inline Pool& pool() {
  static std::once_flag once;
  std::call_once(once, [] {
    pool_slot() = new Pool();
    pthread_atfork(nullptr, nullptr, [] { pool_slot() = new Pool(); });
  });
  return *pool_slot();
}

}  // namespace podbrief

namespace {

#ifdef PODBRIEF_AVX512
constexpr const char* kKernels = "avx512-vnni";
constexpr int kRows = 8;  // rows a pass: their accumulators + the weight vector stay in registers
constexpr bool kWidenByShifts = false;  // vpdpbusd sums into int32 itself
constexpr bool kAvxVnni = false;        // AVX-VNNI is the AVX2 kernel's (below)
constexpr int kWeightMax = 127;
#else
constexpr const char* kKernels = "avx2";
// How the AVX2 kernel widens vpmaddubsw's int16 pair sums to int32 (linear_rows, below). vpmaddwd by ones is half
// of the kernel's multiplies; where one 128-bit pipe does every vector integer multiply (AMD Zen 1: a 256-bit
// multiply takes it 2 cycles) they bound the kernel at 8 multiply-adds a cycle, so there the pairs are widened by
// a shift and adds that run on the other pipes (the same integers). -march=native defines __znver1__ there;
// -DPODBRIEF_WIDEN_BY_SHIFTS=1 (or 0) chooses on any AVX2 CPU, for the tests that compare both.
#ifndef PODBRIEF_WIDEN_BY_SHIFTS
#ifdef __znver1__
#define PODBRIEF_WIDEN_BY_SHIFTS 1
#else
#define PODBRIEF_WIDEN_BY_SHIFTS 0
#endif
#endif
constexpr bool kWidenByShifts = PODBRIEF_WIDEN_BY_SHIFTS;
#if (defined(__AVXVNNI__) || defined(PODBRIEF_AVX_VNNI_EMULATION)) && !PODBRIEF_WIDEN_BY_SHIFTS
constexpr bool kAvxVnni = true;
#else
constexpr bool kAvxVnni = false;
#endif
// Rows a pass: 6 rows x 2 accumulators + 2 weight vectors + ones + the broadcast = AVX2's 16 registers; widening
// by shifts, 3 rows x 4 accumulators + 2 weight vectors + the bit to flip + the broadcast.
constexpr int kRows = kWidenByShifts ? 3 : 6;
constexpr int kWeightMax = 63;  // attention's keys and values: vpmaddubsw's int16 pair sums stay exact (above)
#endif
constexpr int kPairs = 4;  // k values per output in a uint8 kernel's packed group: [n/16][k/kPairs][16][kPairs]
using Act = uint8_t;       // an activation as the uint8 kernels multiply it: int8 shifted to uint8
inline Act to_act(float q) { return (uint8_t)((int)std::nearbyint(q) + 128); }

struct Linear {
  const int8_t* w = nullptr;      // packed
  const int32_t* comp = nullptr;  // 128 * sum_k w[o][k]
  const float* scale = nullptr;   // per output row
  const float* bias = nullptr;    // or null
  int k = 0, n = 0;
  // On AVX2, linear() quantizes its input to seven bits with a zero point per row (quantize_seven_bit) for the
  // seven-bit kernel (a quarter fewer multiplies). Set where that costs no precision (encoder.cpp): a GELU's
  // outputs (>= -0.17, so 8-bit symmetric left their negative half nearly unused) and attention's queries (the
  // features came out closer to float32 with it: a zero point follows a row's offset). AVX-512 ignores it
  // (vpdpbusd gains nothing; its 8-bit symmetric activations are kept). Not set in the decoder, whose MLP is ~1 %
  // of a transcription: there both families stay the same integer arithmetic, which
  // test_the_avx512_and_avx2_kernels_compute_the_same_steps holds them to.
  bool seven_bit = false;
};

// A run [lo, hi) of a product's k (activations' columns): linear_rows sums over the runs it is given, and a group of
// rows whose activations are zero outside some runs (attention's probabilities: nonzero_runs) is given only those.
struct KRun {
  int lo, hi;
};

// The activations of a product, quantized per row; one set per thread (several decoding workers call in at once).
// Hot loops use raw pointers taken once (a thread_local touched inside a loop goes through __tls_get_addr at every
// access: 2.5x slower).
struct Activations {
  std::vector<Act> xq;
  std::vector<float> row_scale;
  std::vector<int32_t> row_zero;  // seven-bit activations' zero points (quantize_seven_bit)
};
thread_local Activations activations;

#ifndef PODBRIEF_AVX512
// The sum / largest of a vector's 8 floats (lane order, as a scalar loop over them).
inline float sum8(__m256 v) {
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, v);
  float s = 0;
  for (float x : lanes) s += x;
  return s;
}
inline float max8(__m256 v) {
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, v);
  return *std::max_element(lanes, lanes + 8);
}

// The largest |r[j]| of a row of k, at least 1e-12 (a row of zeros quantizes to zeros): its quantization scale.
inline float row_amax(const float* r, int k) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 amax8 = _mm256_set1_ps(1e-12f);
  int j = 0;
  for (; j + 8 <= k; j += 8) amax8 = _mm256_max_ps(amax8, _mm256_and_ps(_mm256_loadu_ps(r + j), abs_mask));
  float amax = max8(amax8);
  for (; j < k; ++j) amax = std::fmax(amax, std::fabs(r[j]));
  return amax;
}
#endif

#ifdef PODBRIEF_AVX512
// Outputs ob..ob+15 of MB (<= 8) rows: y[i][o] = sx[i] * sw[o] * (sum_k xu8[i][k] * w[o][k] - comp[o]) + bias[o].
// The accumulators are named variables, not an array: GCC 12 keeps an array of them on the stack, a 64-byte load
// and store around every vpdpbusd.
// kSevenBit (activations 0..127 without an offset, linear_blocks) changes nothing here: vpdpbusd sums into int32.
// row_zero: AVX2's seven-bit zero points, never made on AVX-512 (linear()); must be null.
template <int MB, bool kSevenBit = false>
// noinline: a function of its own keeps its accumulators in registers; inlined into a caller with live values of
// its own (linear()'s parallel lambda) the AVX2 one spilled them, and a step ran 15 % slower.
__attribute__((noinline)) void linear_rows(const Linear& L, const Act* xq, const float* row_scale, int ob, float* y,
                                           [[maybe_unused]] const int32_t* row_zero = nullptr,
                                           const KRun* runs = nullptr, int n_runs = 0) {
  assert(row_zero == nullptr);
  const int k = L.k, n = L.n;
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  const int8_t* wb = L.w + (size_t)ob * k;
  const KRun whole{0, k};
  if (runs == nullptr) runs = &whole, n_runs = 1;
  for (int r = 0; r < n_runs; ++r) {
    for (int j = runs[r].lo; j < runs[r].hi; j += 4) {
      const __m512i wv = _mm512_loadu_si512((const void*)(wb + (size_t)j * 16));
#define PODBRIEF_ROW(I)                                                 \
  if constexpr (MB > I) {                                               \
    int32_t quad;                                                       \
    std::memcpy(&quad, xq + (size_t)I * k + j, 4);                      \
    a##I = _mm512_dpbusd_epi32(a##I, _mm512_set1_epi32(quad), wv);      \
  }
      PODBRIEF_ROW(0) PODBRIEF_ROW(1) PODBRIEF_ROW(2) PODBRIEF_ROW(3)
      PODBRIEF_ROW(4) PODBRIEF_ROW(5) PODBRIEF_ROW(6) PODBRIEF_ROW(7)
#undef PODBRIEF_ROW
    }
  }
  const __m512i acc[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
  const int rem = std::min(16, n - ob);
  const __mmask16 mask = (__mmask16)((1u << rem) - 1);
  const __m512i comp = _mm512_maskz_loadu_epi32(mask, L.comp + ob);
  const __m512 ws = _mm512_maskz_loadu_ps(mask, L.scale + ob);
  const __m512 bias = L.bias ? _mm512_maskz_loadu_ps(mask, L.bias + ob) : _mm512_setzero_ps();
  for (int i = 0; i < MB; ++i) {
    const __m512 s = _mm512_mul_ps(ws, _mm512_set1_ps(row_scale[i]));
    const __m512 r = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[i], comp)), s, bias);
    _mm512_mask_storeu_ps(y + (size_t)i * n + ob, mask, r);
  }
}

#else
// acc + the sums of four u8 x s8 products per int32 lane: AVX-VNNI's vpdpbusd on 256-bit vectors (Intel Alder Lake
// and later client cores, Sapphire Rapids, AMD Zen 5), one instruction for vpmaddubsw + vpmaddwd + vpaddd and never
// saturating. Elsewhere the same integers by two vpmaddwd of the bytes widened to int16 (each product at most
// 255 x 128 in magnitude): only the tests build that (-DPODBRIEF_AVX_VNNI_EMULATION=1), to check the kernel's
// AVX-VNNI branch on any AVX2 CPU.
inline __m256i dpbusd(__m256i acc, __m256i a, __m256i b) {
#ifdef __AVXVNNI__
  return _mm256_dpbusd_avx_epi32(acc, a, b);
#else
  const __m256i low = _mm256_set1_epi16(0x00ff);
  const __m256i even = _mm256_madd_epi16(_mm256_and_si256(a, low), _mm256_srai_epi16(_mm256_slli_epi16(b, 8), 8));
  const __m256i odd = _mm256_madd_epi16(_mm256_srli_epi16(a, 8), _mm256_srai_epi16(b, 8));
  return _mm256_add_epi32(acc, _mm256_add_epi32(even, odd));
#endif
}

// Outputs ob..ob+15 of MB (<= kRows) rows, the same sums as the AVX-512 kernel: 4 k values a step, outputs
// ob..ob+7 in the packed group's low 32 bytes, ob+8..ob+15 in its high 32. The accumulators are named variables,
// not an array: GCC 12 keeps an array of more than three on the stack (half the speed).
//
// Widening by shifts (kWidenByShifts): a vpmaddubsw result p, read as 8 int32 lanes, is 65536 H + u per lane, where
// H is the high pair's sum (signed) and u the low pair's sum l as 16 unsigned bits. Flipping bit 15 turns u into
// l + 32768 (0..65535), so over the k / 4 steps
//   A = sum (p ^ 0x8000) = 65536 sum H + sum l + 32768 k / 4,   B = sum (p >> 16, arithmetic) = sum H,
//   sum H + sum l = A - 65535 B - 32768 k / 4,
// all modulo 2^32, where the result (an int32 sum) is exact. Per vector a xor, a shift and two adds, which run on
// Zen 1's other vector pipes, instead of a vpmaddwd (on its one multiplier) and an add: 1.15-1.21x the products
// there (scripts/kernel_bench.cpp), 1.07-1.11x a whole transcription (docs/benchmarks.md).
//
// kSevenBit: activations in 0..127 (attention's probabilities with no offset; others with a zero point per row,
// row_zero: quantize_seven_bit). A pair's sum is then at most 127 x 128 = 16,256 in magnitude for any
// weights the AVX2 kernels are given (pair-bounded or 7-bit: same-sign neighbours sum to at most 128, and a pair
// of opposite signs is at most 127 x 127), so the pair sums of two k steps add up in int16 exactly (<= 32,512)
// before one widening: a quarter fewer multiplies, 1.23-1.25x the product (scripts/kernel_bench.cpp). The weights
// are read again for each row (the accumulators take the registers): they must not straddle cache lines
// (CacheAligned; model.py aligns its packs), or half the loads split and the gain is gone. The offset taken off
// is z[i] x sum_k w[o][k] (comp / 128) where row_zero is given, else none (comp is not read).
template <int MB, bool kSevenBit = false>
// noinline: a function of its own keeps its accumulators in registers; inlined into a caller with live values of
// its own (linear()'s parallel lambda) the AVX2 one spilled them, and a step ran 15 % slower.
__attribute__((noinline)) void linear_rows(const Linear& L, const Act* xq, const float* row_scale, int ob, float* y,
                                           const int32_t* row_zero = nullptr, const KRun* runs = nullptr,
                                           int n_runs = 0) {
  static_assert(MB <= kRows);
  const int k = L.k, n = L.n;
  __m256i l0 = _mm256_setzero_si256(), h0 = l0, l1 = l0, h1 = l0, l2 = l0, h2 = l0, l3 = l0, h3 = l0, l4 = l0,
          h4 = l0, l5 = l0, h5 = l0;  // outputs ob..ob+7 (l) and ob+8..ob+15 (h) of each row (A, widening by shifts)
  // B, widening by shifts (its 3 rows; the names exist for all 6, as the macro below names them in both branches)
  __m256i bl0 = l0, bh0 = l0, bl1 = l0, bh1 = l0, bl2 = l0, bh2 = l0, bl3 = l0, bh3 = l0, bl4 = l0, bh4 = l0,
          bl5 = l0, bh5 = l0;
  const __m256i ones = _mm256_set1_epi16(1), flip = _mm256_set1_epi32(0x8000);
  const int8_t* wb = L.w + (size_t)ob * k;
  // Two k steps' pair sums added in int16 before one widening (kSevenBit, above); vpdpbusd needs no widening.
  constexpr bool kPresum = kSevenBit && !kAvxVnni;
  constexpr int kStep = kPresum ? 2 * kPairs : kPairs;  // k values a widening (runs are multiples of it)
  const KRun whole{0, k};
  if (runs == nullptr) runs = &whole, n_runs = 1;
  int widenings = 0;
  for (int r = 0; r < n_runs; ++r) {
    widenings += (runs[r].hi - runs[r].lo) / kStep;
    for (int j = runs[r].lo; j < runs[r].hi; j += kStep) {
      const __m256i wl = _mm256_loadu_si256((const __m256i*)(wb + (size_t)j * 16));
      const __m256i wh = _mm256_loadu_si256((const __m256i*)(wb + (size_t)j * 16 + 32));
      __m256i wl2 = wl, wh2 = wh;  // the next k step's, with kPresum
      if constexpr (kPresum) {
        wl2 = _mm256_loadu_si256((const __m256i*)(wb + (size_t)j * 16 + 64));
        wh2 = _mm256_loadu_si256((const __m256i*)(wb + (size_t)j * 16 + 96));
      }
#define PODBRIEF_ROW(I)                                                                     \
  if constexpr (MB > I) {                                                                   \
    int32_t quad;                                                                           \
    std::memcpy(&quad, xq + (size_t)I * k + j, 4);                                          \
    const __m256i xv = _mm256_set1_epi32(quad);                                             \
    if constexpr (kAvxVnni) {                                                               \
      l##I = dpbusd(l##I, xv, wl), h##I = dpbusd(h##I, xv, wh);                             \
    } else {                                                                                \
      __m256i pl = _mm256_maddubs_epi16(xv, wl), ph = _mm256_maddubs_epi16(xv, wh);         \
      if constexpr (kPresum) {                                                              \
        std::memcpy(&quad, xq + (size_t)I * k + j + kPairs, 4);                             \
        const __m256i xv2 = _mm256_set1_epi32(quad);                                        \
        pl = _mm256_add_epi16(pl, _mm256_maddubs_epi16(xv2, wl2));                          \
        ph = _mm256_add_epi16(ph, _mm256_maddubs_epi16(xv2, wh2));                          \
      }                                                                                     \
      if constexpr (kWidenByShifts) {                                                       \
        l##I = _mm256_add_epi32(l##I, _mm256_xor_si256(pl, flip));                          \
        bl##I = _mm256_add_epi32(bl##I, _mm256_srai_epi32(pl, 16));                         \
        h##I = _mm256_add_epi32(h##I, _mm256_xor_si256(ph, flip));                          \
        bh##I = _mm256_add_epi32(bh##I, _mm256_srai_epi32(ph, 16));                         \
      } else {                                                                              \
        l##I = _mm256_add_epi32(l##I, _mm256_madd_epi16(pl, ones));                         \
        h##I = _mm256_add_epi32(h##I, _mm256_madd_epi16(ph, ones));                         \
      }                                                                                     \
    }                                                                                       \
  }
      PODBRIEF_ROW(0) PODBRIEF_ROW(1) PODBRIEF_ROW(2) PODBRIEF_ROW(3) PODBRIEF_ROW(4) PODBRIEF_ROW(5)
#undef PODBRIEF_ROW
    }
  }
  __m256i acc[6][2] = {{l0, h0}, {l1, h1}, {l2, h2}, {l3, h3}, {l4, h4}, {l5, h5}};
  if constexpr (kWidenByShifts) {
    const __m256i b[6][2] = {{bl0, bh0}, {bl1, bh1}, {bl2, bh2}, {bl3, bh3}, {bl4, bh4}, {bl5, bh5}};
    const __m256i steps = _mm256_set1_epi32((int32_t)(32768u * (uint32_t)widenings));
    for (int i = 0; i < MB; ++i)
      for (int half = 0; half < 2; ++half) {
        const __m256i bb = b[i][half];  // 65535 B = 65536 B - B
        const __m256i b65535 = _mm256_sub_epi32(_mm256_slli_epi32(bb, 16), bb);
        acc[i][half] = _mm256_sub_epi32(_mm256_sub_epi32(acc[i][half], b65535), steps);
      }
  }
  const int rem = std::min(16, n - ob);
  // A full block reads its constants straight from the arrays (copying them to the stack first, zeroed, cost QK^T's
  // k = 64 product ~20 %); only the last, partial block reads zero-padded copies.
  alignas(32) float ws_pad[16], bias_pad[16], out[16];
  alignas(32) int32_t comp_pad[16];
  const float *ws = L.scale + ob, *bias = L.bias ? L.bias + ob : nullptr;
  const int32_t* comp = L.comp + ob;
  if (rem < 16) {
    std::fill(ws_pad, ws_pad + 16, 0.f), std::fill(bias_pad, bias_pad + 16, 0.f), std::fill(comp_pad, comp_pad + 16, 0);
    std::memcpy(ws_pad, ws, rem * sizeof(float)), ws = ws_pad;
    std::memcpy(comp_pad, comp, rem * sizeof(int32_t)), comp = comp_pad;
    if (bias) std::memcpy(bias_pad, bias, rem * sizeof(float)), bias = bias_pad;
  }
  const __m256i c0 = _mm256_loadu_si256((const __m256i*)comp), c1 = _mm256_loadu_si256((const __m256i*)(comp + 8));
  const __m256 w0 = _mm256_loadu_ps(ws), w1 = _mm256_loadu_ps(ws + 8);
  const __m256 b0 = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
  const __m256 b1 = bias ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
  const __m256i sums0 = _mm256_srai_epi32(c0, 7), sums1 = _mm256_srai_epi32(c1, 7);  // sum_k w[o][k], exactly
  for (int i = 0; i < MB; ++i) {
    const __m256 s = _mm256_set1_ps(row_scale[i]);
    __m256i off0 = c0, off1 = c1;  // the offset to take off: 128 x the weights' sums for uint8 activations
    if constexpr (kSevenBit) {
      const __m256i z = _mm256_set1_epi32(row_zero ? row_zero[i] : 0);
      off0 = _mm256_mullo_epi32(sums0, z), off1 = _mm256_mullo_epi32(sums1, z);
    }
    const __m256 r0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(acc[i][0], off0)), _mm256_mul_ps(w0, s), b0);
    const __m256 r1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(acc[i][1], off1)), _mm256_mul_ps(w1, s), b1);
    float* dst = y + (size_t)i * n + ob;
    if (rem == 16) {
      _mm256_storeu_ps(dst, r0), _mm256_storeu_ps(dst + 8, r1);
    } else {
      _mm256_store_ps(out, r0), _mm256_store_ps(out + 8, r1);
      std::memcpy(dst, out, rem * sizeof(float));
    }
  }
}

#endif

// linear_rows<mb> for a group of mb <= MB rows: the row count must be a template argument (registers).
template <int MB, bool kSevenBit = false>
inline void linear_group(const Linear& L, const Act* xq, const float* row_scale, int ob, float* y, int mb,
                         const int32_t* row_zero = nullptr, const KRun* runs = nullptr, int n_runs = 0) {
  if constexpr (MB > 0) {
    if (mb == MB)
      linear_rows<MB, kSevenBit>(L, xq, row_scale, ob, y, row_zero, runs, n_runs);
    else
      linear_group<MB - 1, kSevenBit>(L, xq, row_scale, ob, y, mb, row_zero, runs, n_runs);
  }
}

// in[m][k] -> xq (m x k activations as the kernels multiply them) and row_scale (amax / 127 per row).
inline void quantize_activations(const float* in, int m, int k, Act* xq, float* row_scale) {
  for (int i = 0; i < m; ++i) {
    const float* r = in + (size_t)i * k;
    Act* q = xq + (size_t)i * k;
    int j = 0;
#ifdef PODBRIEF_AVX512
    // 16 at a time by hand, the same bytes (cvtps2dq rounds to nearest even as nearbyint does; vpmovdb keeps the
    // low byte; + 128 is a flip of the top bit for -127..127): the compiler's loop ran at 256 bits and narrowed
    // through two permutes, 5 % of the encoder.
    __m512 amax16 = _mm512_set1_ps(1e-12f);
    for (; j + 16 <= k; j += 16) amax16 = _mm512_max_ps(amax16, _mm512_abs_ps(_mm512_loadu_ps(r + j)));
    float amax = _mm512_reduce_max_ps(amax16);
    for (; j < k; ++j) amax = std::fmax(amax, std::fabs(r[j]));
    const float inv = 127.f / amax;
    const __m512 inv16 = _mm512_set1_ps(inv);
    const __m128i top = _mm_set1_epi8((char)0x80);
    for (j = 0; j + 16 <= k; j += 16) {
      const __m128i b = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(r + j), inv16)));
      _mm_storeu_si128((__m128i*)(q + j), _mm_xor_si128(b, top));
    }
#else
    // 32 at a time, the same bytes as the scalar tail (cvtps2dq rounds to nearest even as nearbyint does; the
    // saturating packs never saturate -127..127): the compiler's loop went through libm's nearbyint.
    const float amax = row_amax(r, k), inv = 127.f / amax;
    const __m256 inv8 = _mm256_set1_ps(inv);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7), top = _mm256_set1_epi8((char)0x80);
    for (j = 0; j + 32 <= k; j += 32) {
      __m256i v[4];
      for (int c = 0; c < 4; ++c) v[c] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(r + j + 8 * c), inv8));
      // packs work within 128-bit lanes: dwords 0-3 of each vector land in the low lane, 4-7 in the high one.
      const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
      _mm256_storeu_si256((__m256i*)(q + j), _mm256_xor_si256(_mm256_permutevar8x32_epi32(b, order), top));
    }
#endif
    row_scale[i] = amax / 127.f;
    for (; j < k; ++j) q[j] = to_act(r[j] * inv);
  }
}

#ifndef PODBRIEF_AVX512
// in[m][k] -> xq in 0..127 with row_scale s and row_zero z per row: in ~= s * (xq - z), over [min(0, lo),
// max(0, hi)] (zero lands on an integer, z). For a GELU's outputs (>= -0.17), whose negative half 8-bit symmetric
// activations left nearly unused, the step is about the same ((hi + 0.17) / 127 against hi / 127), and the
// seven-bit kernel (linear_rows) then needs a quarter fewer multiplies (Linear::seven_bit says where).
inline void quantize_seven_bit(const float* in, int m, int k, Act* xq, float* row_scale, int32_t* row_zero) {
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7), top = _mm256_set1_epi8(127);
  for (int i = 0; i < m; ++i) {
    const float* r = in + (size_t)i * k;
    Act* q = xq + (size_t)i * k;
    __m256 lo8 = _mm256_setzero_ps(), hi8 = lo8;
    int j = 0;
    for (; j + 8 <= k; j += 8) {
      const __m256 v = _mm256_loadu_ps(r + j);
      lo8 = _mm256_min_ps(lo8, v), hi8 = _mm256_max_ps(hi8, v);
    }
    float lo = -max8(_mm256_sub_ps(_mm256_setzero_ps(), lo8)), hi = max8(hi8);
    for (; j < k; ++j) lo = std::fmin(lo, r[j]), hi = std::fmax(hi, r[j]);
    const float range = std::fmax(hi - lo, 1e-12f), inv = 127.f / range;
    const int32_t z = (int32_t)std::nearbyint(-lo * inv);
    row_scale[i] = range / 127.f, row_zero[i] = z;
    const __m256 inv8 = _mm256_set1_ps(inv);
    const __m256i z8 = _mm256_set1_epi32(z);
    for (j = 0; j + 32 <= k; j += 32) {
      __m256i v[4];
      for (int c = 0; c < 4; ++c)
        v[c] = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(r + j + 8 * c), inv8)), z8);
      // packs within 128-bit lanes (as quantize_activations), then unsigned saturation to 0..255 and at most 127.
      const __m256i b = _mm256_packus_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
      _mm256_storeu_si256((__m256i*)(q + j), _mm256_min_epu8(_mm256_permutevar8x32_epi32(b, order), top));
    }
    for (; j < k; ++j) q[j] = (Act)std::clamp((int)std::nearbyint(r[j] * inv) + z, 0, 127);
  }
}
#endif

#ifdef PODBRIEF_AMX
// Linux gives a process AMX's tile registers only once it asks (arch_prctl ARCH_REQ_XCOMP_PERM, XTILEDATA).
inline bool amx_permitted() {
#ifdef PODBRIEF_AMX_EMULATION
  return true;
#else
  static const bool ok = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
  return ok;
#endif
}

// Whether products take the AMX path: where the kernel is built and permitted, unless switched off (set_amx in
// kernels.cpp: the tests and benchmarks compare both paths in one process).
inline bool amx_active() { return podbrief::amx_on && amx_permitted(); }

// Palette 1, all 8 tiles 16 rows x 64 bytes: C 0-3 (2 row groups x 2 output blocks), A 4-5, B 6-7.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {64, 64, 64, 64, 64, 64, 64, 64};
  uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
};

// y[i][o] for rows [i0, i0 + mb) x outputs [ob, ob + 16) from a 16 x 16 int32 tile: the AVX-512 kernel's epilogue.
inline void amx_epilogue(const Linear& L, const int32_t (*acc)[16], const float* row_scale, int i0, int mb, int ob,
                         float* y) {
  const int rem = std::min(16, L.n - ob);
  const __mmask16 mask = (__mmask16)((1u << rem) - 1);
  const __m512i comp = _mm512_maskz_loadu_epi32(mask, L.comp + ob);
  const __m512 ws = _mm512_maskz_loadu_ps(mask, L.scale + ob);
  const __m512 bias = L.bias ? _mm512_maskz_loadu_ps(mask, L.bias + ob) : _mm512_setzero_ps();
  for (int i = 0; i < mb; ++i) {
    const __m512 s = _mm512_mul_ps(ws, _mm512_set1_ps(row_scale[i0 + i]));
    const __m512i a = _mm512_loadu_si512((const void*)acc[i]);
    const __m512 r = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(a, comp)), s, bias);
    _mm512_mask_storeu_ps(y + (size_t)(i0 + i) * L.n + ob, mask, r);
  }
}

// linear_blocks on AMX tiles: 32 rows x 32 outputs a pass (4 accumulator tiles), k in steps of 64. Rows outside:
// their activations (32 x k) stay in L1 while the weights stream from L2, and the outputs are written a band of
// rows at a time; 1.2-1.8x faster than outputs outside (1,500 x 384 x 1,152: 506 vs 294 GMAC/s on an Emerald
// Rapids core; vpdpbusd: 203). A tiles read 16 rows, so xq must hold m rounded up to 16 rows (the rows past m are
// never written out).
inline void linear_blocks_amx(const Linear& L, const Act* xq, const float* row_scale, int m, float* y, int ob0,
                              int ob1) {
  const int k = L.k;
  const TileConfig config;
  _tile_loadconfig(&config);
  __asm__ volatile("" ::: "memory");  // the activations' stores land before the tile loads (asm without inputs)
  alignas(64) int32_t acc[4][16][16];
  for (int i0 = 0; i0 < m; i0 += 32) {
    const bool rows2 = i0 + 16 < m;
    const Act* x0 = xq + (size_t)i0 * k;
    const Act* x1 = x0 + (size_t)16 * k;
    for (int ob = ob0; ob < ob1; ob += 32) {
      const bool two = ob + 16 < ob1;
      const int8_t* w0 = L.w + (size_t)ob * k;  // one block: (k / 4) rows of 64 bytes, B tiles as they lie
      const int8_t* w1 = w0 + (size_t)16 * k;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (int j = 0; j < k; j += 64) {
        _tile_loadd(4, x0 + j, k);
        _tile_loadd(6, w0 + (size_t)j * 16, 64);
        _tile_dpbusd(0, 4, 6);
        if (two) {
          _tile_loadd(7, w1 + (size_t)j * 16, 64);
          _tile_dpbusd(1, 4, 7);
        }
        if (rows2) {
          _tile_loadd(5, x1 + j, k);
          _tile_dpbusd(2, 5, 6);
          if (two) _tile_dpbusd(3, 5, 7);
        }
      }
      _tile_stored(0, acc[0], 64);
      _tile_stored(1, acc[1], 64);
      _tile_stored(2, acc[2], 64);
      _tile_stored(3, acc[3], 64);
      const int mb0 = std::min(16, m - i0), mb1 = rows2 ? std::min(16, m - i0 - 16) : 0;
      amx_epilogue(L, acc[0], row_scale, i0, mb0, ob, y);
      if (two) amx_epilogue(L, acc[1], row_scale, i0, mb0, ob + 16, y);
      if (rows2) amx_epilogue(L, acc[2], row_scale, i0 + 16, mb1, ob, y);
      if (rows2 && two) amx_epilogue(L, acc[3], row_scale, i0 + 16, mb1, ob + 16, y);
    }
  }
  _tile_release();
}
#else
inline bool amx_active() { return false; }
#endif

// Whether a product of m rows over k goes on AMX tiles (linear_blocks_amx): fewer than 16 rows would leave most of a
// tile idle (the decoder's steps), and k must fill whole 64-byte tile rows; vpdpbusd does the rest.
inline bool amx_takes(int k, int m) { return k % 64 == 0 && m >= 16 && amx_active(); }

// Rows a product's activations must have room for: A tiles read whole groups of 16.
inline size_t padded_rows(int m) { return (size_t)(m + 15) / 16 * 16; }

// Outputs [ob0, ob1) (multiples of 16, or n) of y[m][n] = xq x W^T + bias from quantized activations.
// With vpdpbusd (AMX tiles take the other order, linear_blocks_amx): output blocks outside, rows inside: a block's
// weights (16 x k int8, 6 KB for tiny's width) are read from memory once and stay in L1 for every group of rows.
// (Rows outside streamed the whole matrix, 20 MB for the vocabulary projection, once per group of rows.) Many rows
// (the encoder's 1,500 frames) go in tiles whose activations stay in L2 while every output block passes over them.
// kSevenBit: the activations are 0..127, with no offset (attention's probabilities) or, on AVX2, a zero point per
// row (row_zero: quantize_seven_bit), which lets the AVX2 kernel add two k steps' pair sums in int16
// (linear_rows); k must then be a multiple of 8.
template <bool kSevenBit = false>
inline void linear_blocks(const Linear& L, const Act* xq, const float* row_scale, int m, float* y, int ob0, int ob1,
                          const int32_t* row_zero = nullptr) {
  const int k = L.k, n = L.n;
  if constexpr (kSevenBit) assert(k % (2 * kPairs) == 0);
  if constexpr (!kSevenBit) assert(row_zero == nullptr);
#ifdef PODBRIEF_AMX
  if (amx_takes(k, m)) {
    assert(row_zero == nullptr);  // AVX-512 builds make no zero points
    return linear_blocks_amx(L, xq, row_scale, m, y, ob0, ob1);
  }
#endif
  const int tile = std::max(kRows, (int)(96 * 1024 / k) / kRows * kRows);
  for (int t0 = 0; t0 < m; t0 += tile) {
    const int t1 = std::min(m, t0 + tile);
    for (int ob = ob0; ob < ob1; ob += 16)
      for (int i0 = t0; i0 < t1; i0 += kRows)
        linear_group<kRows, kSevenBit>(L, xq + (size_t)i0 * k, row_scale + i0, ob, y + (size_t)i0 * n,
                                       std::min(kRows, t1 - i0), row_zero ? row_zero + i0 : nullptr);
  }
}

inline void gelu(float* v, size_t n);  // below, with the other AVX-512 float loops

// An allocator for weights the AVX2 kernels read 32 bytes at a time: 64-byte aligned, so no load splits a cache line.
// malloc (and numpy, for large arrays) gives 16 mod 64, which splits every other 32-byte load: the seven-bit kernel,
// which reloads its weights for each row, ran attention's probabilities x values at 107 GMAC/s on such a buffer and
// 138 on an aligned one (Zen 4, AVX2 build); the linear layers' kernel keeps its weights in registers (1-2 %).
template <class T>
struct CacheAligned {
  using value_type = T;
  CacheAligned() = default;
  template <class U>
  CacheAligned(const CacheAligned<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(64)); }
  template <class U>
  bool operator==(const CacheAligned<U>&) const { return true; }
  template <class U>
  bool operator!=(const CacheAligned<U>&) const { return false; }
};

// v.size() >= n, without shrinking (a shorter window after a longer one reuses what is there).
template <class T>
void grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

// Columns a test for zeros covers (nonzero_runs): a multiple of every kernel's k step (AVX2's seven-bit 8).
constexpr int kZeroBlock = 16;

// The runs of columns, in blocks of kZeroBlock, where any of `rows` rows of xq (k columns, a multiple of the block)
// has a nonzero activation; returns how many (at most k / kZeroBlock / 2 + 1).
inline int nonzero_runs(const Act* xq, int rows, int k, KRun* runs) {
  int n = 0;
  for (int j = 0; j < k; j += kZeroBlock) {
    __m128i any = _mm_setzero_si128();
    for (int i = 0; i < rows; ++i) any = _mm_or_si128(any, _mm_loadu_si128((const __m128i*)(xq + (size_t)i * k + j)));
    if (_mm_testz_si128(any, any)) continue;
    if (n > 0 && runs[n - 1].hi == j)
      runs[n - 1].hi = j + kZeroBlock;
    else
      runs[n++] = KRun{j, j + kZeroBlock};
  }
  return n;
}

// linear_blocks<true> (all outputs) for activations that are mostly zero in blocks: each group of rows is summed
// only over the columns where one of them is not zero. The same integer sums, since a zero activation adds nothing
// whatever the encoding's offset (that is taken off from comp and row_zero, not from the columns visited), so the
// same bits. For attention's probabilities: quantized to 0..127 against each row's largest, most are 0 (a score
// 5.5 below the row's best), and in the encoder's heads, most of them local, 57 % of the blocks of 16 frames x 6
// query rows are zero for all six (8 windows of dev speech, openai-whisper's float32 encoder). AMX tiles take the
// whole product (linear_blocks).
inline void linear_blocks_nonzero(const Linear& L, const Act* xq, const float* row_scale, int m, float* y) {
  const int k = L.k, n = L.n;
  assert(k % kZeroBlock == 0);
  if (amx_takes(k, m)) return linear_blocks<true>(L, xq, row_scale, m, y, 0, n);
  thread_local std::vector<KRun> run_store;
  thread_local std::vector<int> count_store;
  const int groups = (m + kRows - 1) / kRows, most = k / kZeroBlock / 2 + 1;
  grow(run_store, (size_t)groups * most), grow(count_store, (size_t)groups);
  KRun* runs = run_store.data();
  int* count = count_store.data();
  for (int g = 0; g < groups; ++g)
    count[g] = nonzero_runs(xq + (size_t)g * kRows * k, std::min(kRows, m - g * kRows), k, runs + (size_t)g * most);
  // As linear_blocks: a block of outputs' weights stays in L1 while the groups of rows in a tile pass over it.
  const int tile = std::max(kRows, (int)(96 * 1024 / k) / kRows * kRows);
  for (int t0 = 0; t0 < m; t0 += tile) {
    const int t1 = std::min(m, t0 + tile);
    for (int ob = 0; ob < n; ob += 16)
      for (int i0 = t0; i0 < t1; i0 += kRows) {
        const int g = i0 / kRows;
        linear_group<kRows, true>(L, xq + (size_t)i0 * k, row_scale + i0, ob, y + (size_t)i0 * n,
                                  std::min(kRows, t1 - i0), nullptr, runs + (size_t)g * most, count[g]);
      }
  }
}

// f(begin, end) over [0, n) on `threads` threads: the calling thread and the process's helper threads
// (podbrief::Pool, above) when no other caller holds them, else threads started for the call (~30 us each). Each
// thread takes contiguous pieces of ~n / (4 threads) from a shared counter until none are left, so a helper that
// wakes late (a futex wake in a VM can take longer than a decoder step's product) leaves its share to the others.
// f must give the same result whichever thread runs which piece (each output computed the same way).
template <class F>
void parallel(int threads, int n, F&& f) {
  threads = std::max(1, std::min(threads, n));
  if (threads == 1) return f(0, n);
  const int piece = std::max(1, n / (4 * threads));
  std::atomic<int> next{0};
  auto work = [&] {
    for (int b = next.fetch_add(piece, std::memory_order_relaxed); b < n;
         b = next.fetch_add(piece, std::memory_order_relaxed))
      f(b, std::min(n, b + piece));
  };
  using Work = decltype(work);
  if (podbrief::pool().try_run(threads - 1, [](void* c) { (*static_cast<Work*>(c))(); }, &work)) return;
  std::vector<std::thread> started;
  for (int t = 1; t < threads; ++t) started.emplace_back(work);
  work();
  for (auto& th : started) th.join();
}

// y[m][n] = in[m][k] x W^T + bias (GELU after, with `gelu_after`), activations quantized per row to int8 (scale
// amax / 127; on AVX2 to seven bits with a zero point where L.seven_bit) by the calling thread, output blocks shared
// among `threads`.
inline void linear(const Linear& L, const float* in, int m, float* y, int threads = 1, bool gelu_after = false) {
  Activations& A = activations;
  grow(A.row_scale, (size_t)m);
  grow(A.xq, padded_rows(m) * L.k);
#ifndef PODBRIEF_AVX512
  const bool seven_bit = L.seven_bit && L.k % (2 * kPairs) == 0;
#else
  const bool seven_bit = false;
#endif
  if (seven_bit) {
#ifndef PODBRIEF_AVX512
    grow(A.row_zero, (size_t)m);
    quantize_seven_bit(in, m, L.k, A.xq.data(), A.row_scale.data(), A.row_zero.data());
#endif
  } else {
    quantize_activations(in, m, L.k, A.xq.data(), A.row_scale.data());
  }
  const Act* xq = A.xq.data();
  const float* row_scale = A.row_scale.data();
  const int32_t* row_zero = seven_bit ? A.row_zero.data() : nullptr;
  parallel(threads, (L.n + 15) / 16, [&](int b0, int b1) {
    const int ob0 = b0 * 16, ob1 = std::min(L.n, b1 * 16);
    if (seven_bit)
      linear_blocks<true>(L, xq, row_scale, m, y, ob0, ob1, row_zero);
    else
      linear_blocks(L, xq, row_scale, m, y, ob0, ob1);
    if (gelu_after)
      for (int i = 0; i < m; ++i) gelu(y + (size_t)i * L.n + ob0, ob1 - ob0);
  });
}

inline void layer_norm(const float* in, int m, int d, const float* g, const float* b, float* out) {
  for (int i = 0; i < m; ++i) {
    const float* r = in + (size_t)i * d;
    float mean = 0, var = 0;
    for (int j = 0; j < d; ++j) mean += r[j];
    mean /= d;
    for (int j = 0; j < d; ++j) var += (r[j] - mean) * (r[j] - mean);
    const float inv = 1.f / std::sqrt(var / d + 1e-5f);
    for (int j = 0; j < d; ++j) out[(size_t)i * d + j] = (r[j] - mean) * inv * g[j] + b[j];
  }
}

// Where weight (o, j) of an n x k matrix lies in pack_weights' layout [n/16][k/kPairs][16][kPairs].
inline size_t packed_index(int o, int j, int k) {
  return ((size_t)(o / 16) * (k / kPairs) + j / kPairs) * 16 * kPairs + (o % 16) * kPairs + j % kPairs;
}

// The largest of v[0..n): four independent vector maxima (a single chain waits ~4 cycles on each vmaxps; the
// compiler does not split a max reduction by itself).
inline float max_of(const float* v, int n) {
  int i = 0;
  float m = -INFINITY;
#ifdef PODBRIEF_AVX512
  __m512 a = _mm512_set1_ps(-INFINITY), b = a, c = a, d = a;
  for (; i + 64 <= n; i += 64) {
    a = _mm512_max_ps(a, _mm512_loadu_ps(v + i)), b = _mm512_max_ps(b, _mm512_loadu_ps(v + i + 16));
    c = _mm512_max_ps(c, _mm512_loadu_ps(v + i + 32)), d = _mm512_max_ps(d, _mm512_loadu_ps(v + i + 48));
  }
  m = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(a, b), _mm512_max_ps(c, d)));
#else
  __m256 a = _mm256_set1_ps(-INFINITY), b = a, c = a, d = a;
  for (; i + 32 <= n; i += 32) {
    a = _mm256_max_ps(a, _mm256_loadu_ps(v + i)), b = _mm256_max_ps(b, _mm256_loadu_ps(v + i + 8));
    c = _mm256_max_ps(c, _mm256_loadu_ps(v + i + 16)), d = _mm256_max_ps(d, _mm256_loadu_ps(v + i + 24));
  }
  m = std::max(m, max8(_mm256_max_ps(_mm256_max_ps(a, b), _mm256_max_ps(c, d))));
#endif
  for (; i < n; ++i) m = std::max(m, v[i]);
  return m;
}

// 2^r for r in [-1/2, 1/2]: its Taylor polynomial of degree 6, highest power first (exp_nonpositive, both widths).
constexpr float kExp2Taylor[7] = {1.5403530e-4f, 1.3333558e-3f, 9.6181291e-3f, 5.5504109e-2f,
                                  2.4022651e-1f, 6.9314718e-1f, 1.f};
// erf(x) by Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7, float32's own order next to 1):
// 1 - t (a1 + t (a2 + ...)) exp(-x^2) with t = 1 / (1 + p |x|); kErfPoly = a5..a1 (Horner's order).
constexpr float kErfP = 0.3275911f;
constexpr float kErfPoly[5] = {1.061405429f, -1.453152027f, 1.421413741f, -0.284496736f, 0.254829592f};

#ifdef PODBRIEF_AVX512
// exp(x) for x <= 0, 16 at a time: 2^(x log2 e) = 2^n 2^r, r in [-1/2, 1/2] by its Taylor polynomial of degree 6
// (relative error < 2e-7, expf's own order), 2^n by vscalefps. x is clamped at -87 (exp = 1.6e-38, a normal
// float): nothing below rounds to anything but 0 after x 127, and no denormal reaches a multiply.
inline __m512 exp_nonpositive(__m512 x) {
  const __m512 t = _mm512_mul_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.f)), _mm512_set1_ps(1.44269504f));
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 r = _mm512_sub_ps(t, n);
  __m512 p = _mm512_set1_ps(kExp2Taylor[0]);
  for (int i = 1; i < 7; ++i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExp2Taylor[i]));
  return _mm512_scalef_ps(p, n);
}

// Sum of exp(s[i] - mx) over [0, n), each written back to s when `store` (masked 16 at a time).
template <bool store>
inline float sum_exp(float* s, int n, float mx) {
  const __m512 m = _mm512_set1_ps(mx);
  __m512 sum = _mm512_setzero_ps();
  for (int i = 0; i < n; i += 16) {
    const __mmask16 valid = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
    const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(valid, s + i), m));
    if (store) _mm512_mask_storeu_ps(s + i, valid, e);
    sum = _mm512_mask_add_ps(sum, valid, sum, e);
  }
  return _mm512_reduce_add_ps(sum);
}

// erf(x), 16 at a time: Abramowitz & Stegun 7.1.26 (kErfPoly, above).
inline __m512 erf16(__m512 x) {
  const __m512 a = _mm512_abs_ps(x);
  const __m512 d = _mm512_fmadd_ps(a, _mm512_set1_ps(kErfP), _mm512_set1_ps(1.f));
  __m512 t = _mm512_rcp14_ps(d);  // 14 bits, and one Newton step: ~28
  t = _mm512_mul_ps(t, _mm512_fnmadd_ps(d, t, _mm512_set1_ps(2.f)));
  __m512 p = _mm512_set1_ps(kErfPoly[0]);
  for (int i = 1; i < 5; ++i) p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(kErfPoly[i]));
  p = _mm512_mul_ps(p, t);
  const __m512 y = _mm512_fnmadd_ps(p, exp_nonpositive(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), a), a)),
                                    _mm512_set1_ps(1.f));
  return _mm512_mask_sub_ps(y, _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ), _mm512_setzero_ps(), y);
}
#else
// exp(x) for x <= 0, 8 at a time: exp_nonpositive's polynomial, 2^n built in the exponent bits (AVX2 has no scalef;
// x >= -87 keeps n >= -126, a normal float).
inline __m256 exp_nonpositive8(__m256 x) {
  const __m256 t = _mm256_mul_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.f)), _mm256_set1_ps(1.44269504f));
  const __m256 n = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 r = _mm256_sub_ps(t, n);
  __m256 p = _mm256_set1_ps(kExp2Taylor[0]);
  for (int i = 1; i < 7; ++i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExp2Taylor[i]));
  const __m256i two_n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(two_n));
}

// erf16's formula 8 at a time (AVX2). 1 / d by a division, where AVX-512 refines vrcp14ps by a Newton step: the
// same value but for a rare last bit. (Before: libmvec's erff, whose values differ from erf16's in the last bits
// often enough to move an activation to the neighbouring int8 step, so the AVX2 and AVX-512 builds parted ways.)
inline __m256 erf8(__m256 x) {
  const __m256 a = _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
  const __m256 d = _mm256_fmadd_ps(a, _mm256_set1_ps(kErfP), _mm256_set1_ps(1.f));
  const __m256 t = _mm256_div_ps(_mm256_set1_ps(1.f), d);
  __m256 p = _mm256_set1_ps(kErfPoly[0]);
  for (int i = 1; i < 5; ++i) p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(kErfPoly[i]));
  p = _mm256_mul_ps(p, t);
  const __m256 y = _mm256_fnmadd_ps(p, exp_nonpositive8(_mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), a), a)),
                                    _mm256_set1_ps(1.f));
  return _mm256_blendv_ps(y, _mm256_sub_ps(_mm256_setzero_ps(), y), _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ));
}

// Sum of exp(s[i] - mx) over [0, n), each written back to s when `store`: 8 at a time, the tail by expf.
template <bool store>
inline float sum_exp(float* s, int n, float mx) {
  const __m256 m = _mm256_set1_ps(mx);
  __m256 acc = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp_nonpositive8(_mm256_sub_ps(_mm256_loadu_ps(s + i), m));
    if (store) _mm256_storeu_ps(s + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  float sum = sum8(acc);
  for (; i < n; ++i) {
    const float e = expf(s[i] - mx);
    if (store) s[i] = e;
    sum += e;
  }
  return sum;
}
#endif

inline void softmax(float* s, int n) {
  const float mx = max_of(s, n);
  // exp by exp_nonpositive (the compiler's loop went through libmvec at 256 bits: -march's tuning prefers those).
  const float sum = sum_exp<true>(s, n, mx);
  const float inv = 1.f / sum;
  for (int i = 0; i < n; ++i) s[i] *= inv;
}

// Whisper's GELU (the exact, erf one), in place.
inline void gelu(float* v, size_t n) {
  size_t i = 0;
#ifdef PODBRIEF_AVX512
  for (; i + 16 <= n; i += 16) {
    const __m512 x = _mm512_loadu_ps(v + i);
    const __m512 e = erf16(_mm512_mul_ps(x, _mm512_set1_ps(0.70710678f)));
    const __m512 half_x = _mm512_mul_ps(_mm512_set1_ps(0.5f), x);
    _mm512_storeu_ps(v + i, _mm512_mul_ps(half_x, _mm512_add_ps(e, _mm512_set1_ps(1.f))));
  }
#else
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(v + i);
    const __m256 e = erf8(_mm256_mul_ps(x, _mm256_set1_ps(0.70710678f)));
    const __m256 half_x = _mm256_mul_ps(_mm256_set1_ps(0.5f), x);
    _mm256_storeu_ps(v + i, _mm256_mul_ps(half_x, _mm256_add_ps(e, _mm256_set1_ps(1.f))));
  }
#endif
  for (; i < n; ++i) v[i] = 0.5f * v[i] * (1.f + erff(v[i] * 0.70710678f));
}

// w: n x k int8, row-major, k a multiple of kPairs -> out: (n rounded up to 16) x k packed as the kernels read it
// ([n/16][k/kPairs][16][kPairs], zero rows past n); comp: 128 * the row sums (the uint8 activations' shift).
inline void pack_weights(const int8_t* w, int n, int k, int8_t* out, int32_t* comp) {
  for (int o = 0; o < n; ++o) {
    int32_t s = 0;
    for (int j = 0; j < k; ++j) s += w[(size_t)o * k + j];
    comp[o] = 128 * s;
  }
  size_t p = 0;
  for (int ob = 0; ob < n; ob += 16)
    for (int j = 0; j < k; j += kPairs)
      for (int r = 0; r < 16; ++r)
        for (int t = 0; t < kPairs; ++t) out[p++] = (ob + r < n) ? w[(size_t)(ob + r) * k + j + t] : 0;
}

}  // namespace
