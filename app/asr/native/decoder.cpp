// Whisper's text decoder for x86-64 CPUs with AVX2 (AVX-512 VNNI where there is one): one decoding step for a batch
// of windows x beams, the cross-attention keys/values of a window, and the per-step token choice (suppression,
// timestamp rules, log-softmax, top-k).
// Driven by app/asr/native/generate.py; the int8 products are kernels.h's (built by app/asr/native/library.py).
// Why hand-written (docs/benchmarks.md): CTranslate2's CPU decoder repacks its int8 weights at every call through
// oneDNN (48-72 % of a one-window step on Zen 3 / Zen 4) and gives every beam its own float32 copy of the window's
// audio keys/values. Here int8 weights are packed once and a window's keys/values are computed once, kept as
// float16 (keys transposed, so scores accumulate over frames without horizontal sums) and shared by its beams.
// (int8 keys/values halve what a step reads and made steps at 5-10 windows ~20 % faster, but the phone-call test
// clip lost its first words: not taken, see docs/benchmarks.md.)
// -ffast-math assumes no infinities, so a forbidden token's logit is kNeg (finite), never -inf.
#include "kernels.h"

namespace {

constexpr float kNeg = -1e30f;

struct Layer {
  const float *ln1_g = nullptr, *ln1_b = nullptr, *ln2_g = nullptr, *ln2_b = nullptr, *ln3_g = nullptr,
              *ln3_b = nullptr;
  Linear qkv, out, cross_q, cross_out, up, down, cross_k, cross_v;
};

struct Model {
  int width = 0, heads = 0, vocab = 0, layers = 0, ctx = 0;
  const float *embedding = nullptr, *positions = nullptr, *ln_g = nullptr, *ln_b = nullptr;
  Linear projection;
  std::vector<Layer> layer;
};

// Scratch buffers, one set per thread (several decoding workers call in at once); the hot loops use raw pointers
// taken once.
struct Scratch {
  std::vector<float> x, h, qkv, att, up, scores, kv;
};
thread_local Scratch scratch;

// How far ahead of its loads the attention loops prefetch, in float16 values: 8 KB. A step reads every window's
// keys and values once (9.2 MB a window for tiny), stream after stream of 192 KB; without the hint the hardware
// prefetcher restarts at each 4 KB page and the step ran at ~half the core's bandwidth (13.2 -> 11.1 ms a step at
// 8 windows x 3 beams, docs/benchmarks.md; the AVX2 kernels 24.3 -> 22.6-23.1 ms on the same Intel CPU, not yet
// measured on an AMD one). -DPODBRIEF_PREFETCH=N overrides it, for measuring.
#ifndef PODBRIEF_PREFETCH
#define PODBRIEF_PREFETCH 4096
#endif
constexpr size_t kPrefetchHalves = PODBRIEF_PREFETCH;

#ifdef PODBRIEF_AVX512
// Attention scores of NB beams' queries (pre-scaled, 64 each) against one head's keys, 16 frames at a time:
// K is [frames16 / 16][64][16] float16, scores [NB][frames16]. NB is a template argument so the accumulators
// stay in registers (with a runtime count the compiler spilled them to the stack), and even/odd dimensions go to
// separate accumulators: 2 * NB independent FMA chains. (Neither changed the measured step: it waits on memory.)
template <int NB>
void cross_scores(const uint16_t* K, const float (*qs)[64], int fp, float* scores) {
  for (int f = 0; f < fp; f += 16) {
    __m512 a0[NB], a1[NB];
    for (int b = 0; b < NB; ++b) a0[b] = _mm512_setzero_ps(), a1[b] = _mm512_setzero_ps();
    const uint16_t* Kf = K + (size_t)f * 64;
    for (int e = 0; e < 64; e += 2) {
      _mm_prefetch((const char*)(Kf + kPrefetchHalves + (size_t)e * 16), _MM_HINT_T0);
      const __m512 k0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(Kf + (size_t)e * 16)));
      const __m512 k1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(Kf + (size_t)(e + 1) * 16)));
      for (int b = 0; b < NB; ++b) {
        a0[b] = _mm512_fmadd_ps(_mm512_set1_ps(qs[b][e]), k0, a0[b]);
        a1[b] = _mm512_fmadd_ps(_mm512_set1_ps(qs[b][e + 1]), k1, a1[b]);
      }
    }
    for (int b = 0; b < NB; ++b) _mm512_storeu_ps(scores + (size_t)b * fp + f, _mm512_add_ps(a0[b], a1[b]));
  }
}

// out[b][0..64) = sum_f p[b][f] * V[f][0..64) for NB beams; V is [frames16][64] float16, p [NB][frames16].
template <int NB>
void cross_values(const uint16_t* V, const float* p, int fp, int frames, float* const* out) {
  __m512 o[NB][4];
  for (int b = 0; b < NB; ++b)
    for (int c = 0; c < 4; ++c) o[b][c] = _mm512_setzero_ps();
  for (int f = 0; f < frames; ++f) {
    _mm_prefetch((const char*)(V + kPrefetchHalves + (size_t)f * 64), _MM_HINT_T0);
    _mm_prefetch((const char*)(V + kPrefetchHalves + (size_t)f * 64 + 32), _MM_HINT_T0);
    __m512 v[4];
    for (int c = 0; c < 4; ++c) v[c] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(V + (size_t)f * 64 + 16 * c)));
    for (int b = 0; b < NB; ++b) {
      const __m512 w = _mm512_set1_ps(p[(size_t)b * fp + f]);
      for (int c = 0; c < 4; ++c) o[b][c] = _mm512_fmadd_ps(w, v[c], o[b][c]);
    }
  }
  for (int b = 0; b < NB; ++b)
    for (int c = 0; c < 4; ++c) _mm512_storeu_ps(out[b] + 16 * c, o[b][c]);
}
#else
template <int NB>
void cross_scores(const uint16_t* K, const float (*qs)[64], int fp, float* scores) {
  for (int f = 0; f < fp; f += 16) {
    __m256 a0[NB], a1[NB];  // frames f..f+7, f+8..f+15
    for (int b = 0; b < NB; ++b) a0[b] = _mm256_setzero_ps(), a1[b] = _mm256_setzero_ps();
    const uint16_t* Kf = K + (size_t)f * 64;
    for (int e = 0; e < 64; ++e) {
      if (e % 2 == 0) _mm_prefetch((const char*)(Kf + kPrefetchHalves + (size_t)e * 16), _MM_HINT_T0);
      const __m256 k0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(Kf + (size_t)e * 16)));
      const __m256 k1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(Kf + (size_t)e * 16 + 8)));
      for (int b = 0; b < NB; ++b) {
        const __m256 q = _mm256_set1_ps(qs[b][e]);
        a0[b] = _mm256_fmadd_ps(q, k0, a0[b]);
        a1[b] = _mm256_fmadd_ps(q, k1, a1[b]);
      }
    }
    for (int b = 0; b < NB; ++b) {
      _mm256_storeu_ps(scores + (size_t)b * fp + f, a0[b]);
      _mm256_storeu_ps(scores + (size_t)b * fp + f + 8, a1[b]);
    }
  }
}

// 64 dimensions in passes of C x 8 (C = 2 or 4), so NB x C accumulators fit in 16 registers.
template <int NB>
void cross_values(const uint16_t* V, const float* p, int fp, int frames, float* const* out) {
  constexpr int C = NB <= 2 ? 4 : 2;
  for (int c0 = 0; c0 < 8; c0 += C) {
    __m256 o[NB][C];
    for (int b = 0; b < NB; ++b)
      for (int c = 0; c < C; ++c) o[b][c] = _mm256_setzero_ps();
    for (int f = 0; f < frames; ++f) {
      if (c0 == 0) {  // the first pass over the frames brings them in (the second reads them from cache)
        _mm_prefetch((const char*)(V + kPrefetchHalves + (size_t)f * 64), _MM_HINT_T0);
        _mm_prefetch((const char*)(V + kPrefetchHalves + (size_t)f * 64 + 32), _MM_HINT_T0);
      }
      __m256 v[C];
      for (int c = 0; c < C; ++c)
        v[c] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(V + (size_t)f * 64 + 8 * (c0 + c))));
      for (int b = 0; b < NB; ++b) {
        const __m256 w = _mm256_set1_ps(p[(size_t)b * fp + f]);
        for (int c = 0; c < C; ++c) o[b][c] = _mm256_fmadd_ps(w, v[c], o[b][c]);
      }
    }
    for (int b = 0; b < NB; ++b)
      for (int c = 0; c < C; ++c) _mm256_storeu_ps(out[b] + 8 * (c0 + c), o[b][c]);
  }
}
#endif

void cross_scores_n(int nb, const uint16_t* K, const float (*qs)[64], int fp, float* scores) {
  switch (nb) {
    case 1: return cross_scores<1>(K, qs, fp, scores);
    case 2: return cross_scores<2>(K, qs, fp, scores);
    case 3: return cross_scores<3>(K, qs, fp, scores);
    default: return cross_scores<4>(K, qs, fp, scores);
  }
}

void cross_values_n(int nb, const uint16_t* V, const float* p, int fp, int frames, float* const* out) {
  switch (nb) {
    case 1: return cross_values<1>(V, p, fp, frames, out);
    case 2: return cross_values<2>(V, p, fp, frames, out);
    case 3: return cross_values<3>(V, p, fp, frames, out);
    default: return cross_values<4>(V, p, fp, frames, out);
  }
}

// Positions of the self-attention cache, rounded up to the 16 that the attention kernels take at a time.
int ctx16(const Model& M) { return (M.ctx + 15) / 16 * 16; }

// uint16 (float16) values in one slot of the self-attention cache: [layers][key|value][heads][ctx16 * head_dim],
// keys and values of a head in the cross-attention layouts (keys [ctx16 / 16][64][16], values [ctx16][64]), so the
// same kernels read them: half the bytes of float32 and 16 positions a vector, where a float32 row a position
// summed each dot product across the vector (that was 25 % of a step at 100 tokens, 8 windows x 3 beams).
size_t slot_halves(const Model& M) { return (size_t)M.layers * 2 * M.width * ctx16(M); }

// uint16 (float16) values in one window slot of the cross cache: [layers][key|value][heads][frames16 * head_dim].
size_t cross_slot_halves(const Model& M, int frames) {
  return (size_t)M.layers * 2 * M.width * ((frames + 15) / 16 * 16);
}

// Bit i set where v[i] > threshold, for the first n (<= 16) of v.
inline unsigned beats(const float* v, int n, float threshold) {
#ifdef PODBRIEF_AVX512
  const __mmask16 valid = n == 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
  return _mm512_mask_cmp_ps_mask(valid, _mm512_maskz_loadu_ps(valid, v), _mm512_set1_ps(threshold), _CMP_GT_OQ);
#else
  if (n < 16) {
    unsigned bits = 0;
    for (int i = 0; i < n; ++i) bits |= (unsigned)(v[i] > threshold) << i;
    return bits;
  }
  const __m256 t = _mm256_set1_ps(threshold);
  const unsigned lo = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(v), t, _CMP_GT_OQ));
  const unsigned hi = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(v + 8), t, _CMP_GT_OQ));
  return lo | hi << 8;
#endif
}

// One head's keys (which 0) or values (1) of kv [frames][width] (float32) into `head` (float16, zero padded to fp
// frames): keys as [fp / 16][64][16], values as [fp][64] (cross_kv).
void convert_head(const float* kv, int frames, int fp, int d, int h, int which, uint16_t* head) {
  constexpr int hd = 64;
#ifdef PODBRIEF_AVX512
  // 16 values a conversion (one at a time was ~5 ms a window); padding frames written as zeros.
  const __m512i rows16 = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32(d));
  if (which == 0) {  // keys [fp / 16][64][16]: 16 frames of one dimension, gathered down the column
    for (int f0 = 0; f0 < fp; f0 += 16) {
      const int n = std::min(16, frames - f0);
      const __mmask16 valid = n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << std::max(n, 0)) - 1);
      for (int e = 0; e < hd; ++e) {
        const __m512 v =
            _mm512_mask_i32gather_ps(_mm512_setzero_ps(), valid, rows16, kv + (size_t)f0 * d + h * hd + e, 4);
        _mm256_storeu_si256((__m256i*)(head + ((size_t)(f0 / 16) * hd + e) * 16), _mm512_cvtps_ph(v, 0));
      }
    }
  } else {  // values [fp][64]
    for (int f = 0; f < frames; ++f)
      for (int c = 0; c < hd; c += 16)
        _mm256_storeu_si256((__m256i*)(head + (size_t)f * hd + c),
                            _mm512_cvtps_ph(_mm512_loadu_ps(kv + (size_t)f * d + h * hd + c), 0));
    std::memset(head + (size_t)frames * hd, 0, (size_t)(fp - frames) * hd * sizeof(uint16_t));
  }
#else
  std::memset(head, 0, (size_t)fp * hd * sizeof(uint16_t));
  for (int f = 0; f < frames; ++f)
    for (int e = 0; e < hd; ++e) {
      const uint16_t v = _cvtss_sh(kv[(size_t)f * d + h * hd + e], 0);
      if (which == 0)
        head[((size_t)(f / 16) * hd + e) * 16 + f % 16] = v;
      else
        head[(size_t)f * hd + e] = v;
    }
#endif
}

}  // namespace

extern "C" {

void* create_model(int width, int heads, int vocab, int layers, int ctx, const float* embedding,
                   const float* positions, const float* ln_g, const float* ln_b) {
  Model* M = new Model();
  M->width = width, M->heads = heads, M->vocab = vocab, M->layers = layers, M->ctx = ctx;
  M->embedding = embedding, M->positions = positions, M->ln_g = ln_g, M->ln_b = ln_b;
  M->layer.resize(layers);
  return M;
}

void free_model(void* model) { delete static_cast<Model*>(model); }

// which: 0 self query|key|value, 1 self out, 2 cross query, 3 cross out, 4 MLP up, 5 MLP down,
// 6 vocabulary projection (layer ignored), 7 cross key, 8 cross value.
void set_linear(void* model, int layer, int which, const int8_t* w, const int32_t* comp, const float* scale,
                const float* bias, int k, int n) {
  Model& M = *static_cast<Model*>(model);
  Linear l;
  l.w = w, l.comp = comp, l.scale = scale, l.bias = bias, l.k = k, l.n = n;
  if (which == 6) {
    M.projection = l;
    return;
  }
  Layer& L = M.layer[layer];
  Linear* slots[] = {&L.qkv, &L.out, &L.cross_q, &L.cross_out, &L.up, &L.down, nullptr, &L.cross_k, &L.cross_v};
  *slots[which] = l;
}

void set_layer_norms(void* model, int layer, const float* g1, const float* b1, const float* g2, const float* b2,
                     const float* g3, const float* b3) {
  Layer& L = static_cast<Model*>(model)->layer[layer];
  L.ln1_g = g1, L.ln1_b = b1, L.ln2_g = g2, L.ln2_b = b2, L.ln3_g = g3, L.ln3_b = b3;
}

size_t self_slot_size(const void* model) { return slot_halves(*static_cast<const Model*>(model)); }
size_t cross_slot_size(const void* model, int frames) {
  return cross_slot_halves(*static_cast<const Model*>(model), frames);
}

// A window's audio keys and values for every layer: features float32 [frames][width] (the encoder's output) ->
// cross slot `out` (float16, cross_slot_halves values): keys as [head][frames16 / 16][64][16] (each block of 16
// frames one contiguous 2 KB run, read front to back), values as [head][frames16][64], frames16 = frames rounded
// up to 16, zero padded. `threads` share the products and the conversion (heads), as in step().
void cross_kv(const void* model, const float* features, int frames, uint16_t* out, int threads) {
  const Model& M = *static_cast<const Model*>(model);
  const int d = M.width, H = M.heads, hd = d / H, fp = (frames + 15) / 16 * 16;
  Scratch& S = scratch;
  if (S.kv.size() < (size_t)frames * d) S.kv.resize((size_t)frames * d);
  float* kv = S.kv.data();
  for (int l = 0; l < M.layers; ++l)
    for (int which = 0; which < 2; ++which) {
      linear(which == 0 ? M.layer[l].cross_k : M.layer[l].cross_v, features, frames, kv, threads);
      uint16_t* dst = out + ((size_t)l * 2 + which) * d * fp;
      parallel(threads, H, [&](int h0, int h1) {
        for (int h = h0; h < h1; ++h) convert_head(kv, frames, fp, d, h, which, dst + (size_t)h * hd * fp);
      });
    }
}

// Positions [0, length) of self-attention slot src copied into slot dst (a beam taking over another's history):
// whole blocks of 16 positions (the keys' layout), values past `length` along with them, never read.
void copy_slot(const void* model, uint16_t* cache, int dst, int src, int length) {
  const Model& M = *static_cast<const Model*>(model);
  const size_t hd = M.width / M.heads, region = (size_t)ctx16(M) * hd, per = slot_halves(M);
  const size_t n = std::min((size_t)(length + 15) / 16 * 16, (size_t)ctx16(M)) * hd;
  for (int lk = 0; lk < M.layers * 2 * M.heads; ++lk)
    std::memcpy(cache + dst * per + lk * region, cache + src * per + lk * region, n * sizeof(uint16_t));
}

// One decoding step at position `pos` for rows = windows x beams (a window's beams are consecutive rows).
// row_slot[r]: row r's slot in `cache` (float16, self_slot_size per slot); window_slot[w]: window w's slot in
// `cross` (cross_slot_size(frames) per slot). logits: float32 [rows][vocab]. `threads` share the step: every
// product's output blocks, the attention's (row or window, head) pairs. More than one only for a decoding worker
// alone on the CPU (a short file, the last run of a long one; app/asr/cores.py): workers side by side take a core
// each. Each output and pair is computed the same whichever thread takes it: the logits do not depend on `threads`.
void step(const void* model, const int32_t* tokens, int rows, int windows, const int32_t* row_slot,
          const int32_t* window_slot, int frames, int pos, uint16_t* cache, const uint16_t* cross, float* logits,
          int threads) {
  const Model& M = *static_cast<const Model*>(model);
  const int d = M.width, H = M.heads, hd = d / H, ctx = ctx16(M), beams = rows / windows;
  const int fp = (frames + 15) / 16 * 16;
  const size_t self_per = slot_halves(M), cross_per = cross_slot_halves(M, frames);
  const float scale = 1.f / std::sqrt((float)hd);
  Scratch& S = scratch;
  S.x.resize((size_t)rows * d), S.h.resize((size_t)rows * d), S.qkv.resize((size_t)rows * 3 * d);
  S.att.resize((size_t)rows * d), S.up.resize((size_t)rows * 4 * d);
  float *x = S.x.data(), *h = S.h.data(), *qkv = S.qkv.data(), *att = S.att.data(), *up = S.up.data();
  // Each thread's attention scores in its own (thread-local) scratch: at most 4 beams of a window at once.
  auto scores_of = [&](size_t n) {
    Scratch& T = scratch;
    grow(T.scores, n);
    return T.scores.data();
  };
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < d; ++j)
      x[(size_t)r * d + j] = M.embedding[(size_t)tokens[r] * d + j] + M.positions[(size_t)pos * d + j];
  for (int l = 0; l < M.layers; ++l) {
    const Layer& L = M.layer[l];
    // Self-attention over positions 0..pos.
    layer_norm(x, rows, d, L.ln1_g, L.ln1_b, h);
    linear(L.qkv, h, rows, qkv, threads);
    const int seen = pos + 1, seen16 = (seen + 15) / 16 * 16;
    parallel(threads, rows * H, [&](int p0, int p1) {
      float* scores = scores_of((size_t)ctx);
      for (int p = p0; p < p1; ++p) {
        const int r = p / H, hh = p % H;
        uint16_t* keys = cache + row_slot[r] * self_per + (size_t)l * 2 * d * ctx;
        uint16_t* values = keys + (size_t)d * ctx;
        uint16_t* K = keys + (size_t)hh * ctx * hd;
        uint16_t* V = values + (size_t)hh * ctx * hd;
        const float* q = &qkv[(size_t)r * 3 * d + hh * hd];
        uint16_t* kb = K + (size_t)(pos / 16) * 16 * hd + pos % 16;  // this position's lane of its key block
        for (int e = 0; e < hd; ++e) kb[(size_t)e * 16] = _cvtss_sh(q[d + e], 0);
        for (int e = 0; e < hd; ++e) V[(size_t)pos * hd + e] = _cvtss_sh(q[2 * d + e], 0);
        float qs[1][64];
        for (int e = 0; e < hd; ++e) qs[0][e] = q[e] * scale;
        float* o = &att[(size_t)r * d + hh * hd];
        cross_scores_n(1, K, qs, seen16, scores);
        softmax(scores, seen);
        cross_values_n(1, V, scores, seen16, seen, &o);
      }
    });
    linear(L.out, att, rows, h, threads);
    for (size_t i = 0; i < (size_t)rows * d; ++i) x[i] += h[i];
    // Cross-attention: one pass over a window's keys and one over its values for all of its beams.
    layer_norm(x, rows, d, L.ln2_g, L.ln2_b, h);
    linear(L.cross_q, h, rows, qkv, threads);
    parallel(threads, windows * H, [&](int p0, int p1) {
      float* scores = scores_of((size_t)4 * fp);
      for (int p = p0; p < p1; ++p) {
        const int w = p / H, hh = p % H;
        const uint16_t* xk = cross + window_slot[w] * cross_per + (size_t)l * 2 * d * fp;
        const uint16_t* xv = xk + (size_t)d * fp;
        const uint16_t* K = xk + (size_t)hh * hd * fp;
        const uint16_t* V = xv + (size_t)hh * fp * hd;
        // Beams four at a time (register budget of the kernels above).
        for (int b0 = 0; b0 < beams; b0 += 4) {
          const int nb = std::min(4, beams - b0);
          float qs[4][64];  // the beams' queries for this head, pre-scaled
          float* outs[4];
          for (int b = 0; b < nb; ++b) {
            const size_t row = (size_t)(w * beams + b0 + b);
            for (int e = 0; e < hd; ++e) qs[b][e] = qkv[row * d + hh * hd + e] * scale;
            outs[b] = &att[row * d + hh * hd];
          }
          cross_scores_n(nb, K, qs, fp, scores);
          for (int b = 0; b < nb; ++b) {
            softmax(&scores[(size_t)b * fp], frames);
            std::fill(&scores[(size_t)b * fp + frames], &scores[(size_t)(b + 1) * fp], 0.f);
          }
          cross_values_n(nb, V, scores, fp, frames, outs);
        }
      }
    });
    linear(L.cross_out, att, rows, h, threads);
    for (size_t i = 0; i < (size_t)rows * d; ++i) x[i] += h[i];
    // MLP with the exact (erf) GELU Whisper uses.
    layer_norm(x, rows, d, L.ln3_g, L.ln3_b, h);
    linear(L.up, h, rows, up, threads, true);
    linear(L.down, up, rows, h, threads);
    for (size_t i = 0; i < (size_t)rows * d; ++i) x[i] += h[i];
  }
  layer_norm(x, rows, d, M.ln_g, M.ln_b, h);
  linear(M.projection, h, rows, logits, threads);
}

// The token choice of one step, per row, as openai-whisper's logit filters and decoder make it:
// - forbidden: `suppress` (every step), ids in [0, text_end[r]) (text, when the timestamp rules forbid it), timestamp
//   ids outside [ts_lo[r], ts_hi[r]), and `blank` ids where first[r] (suppress_blank at the first sampled token);
// - timestamp rule: if the timestamps' total probability beats every single text token, text is forbidden too;
// - log-softmax over what is left, then the k most likely (ids, log-probabilities), best first.
// `logits` is overwritten (masked). `threads` share the rows.
void choose(float* logits, int rows, int vocab, const int32_t* suppress, int n_suppress, const int32_t* blank,
            int n_blank, const int32_t* text_end, const int32_t* ts_lo, const int32_t* ts_hi, const int32_t* first,
            int ts_begin, int k, int32_t* out_ids, float* out_logprobs, int threads) {
  parallel(threads, rows, [&](int r0, int r1) {
    for (int r = r0; r < r1; ++r) {
      float* z = logits + (size_t)r * vocab;
      for (int i = 0; i < n_suppress; ++i) z[suppress[i]] = kNeg;
      if (first[r])
        for (int i = 0; i < n_blank; ++i) z[blank[i]] = kNeg;
      for (int i = 0; i < text_end[r]; ++i) z[i] = kNeg;
      for (int i = ts_begin; i < std::min(ts_lo[r], vocab); ++i) z[i] = kNeg;
      for (int i = std::max(ts_hi[r], ts_begin); i < vocab; ++i) z[i] = kNeg;
      // Separate simple loops: each vectorises (float maxima under -ffast-math; the exponentials by kernels.h's
      // exp_nonpositive: libmvec's expf was 1.5 % of a transcription on a Zen 3).
      float mx = kNeg, text_max = kNeg;
      for (int i = 0; i < ts_begin; ++i) text_max = std::max(text_max, z[i]);
      for (int i = ts_begin; i < vocab; ++i) mx = std::max(mx, z[i]);
      mx = std::max(mx, text_max);
      const float text = sum_exp<false>(z, ts_begin, mx), ts = sum_exp<false>(z + ts_begin, vocab - ts_begin, mx);
      // log P(any timestamp) > log P(best text token) <=> sum exp(ts) > exp(text_max) (same normaliser).
      const bool ts_wins = ts > 0 && std::log(ts) + mx > text_max;
      if (ts_wins)
        for (int i = 0; i < ts_begin; ++i) z[i] = kNeg;
      const float lse = mx + std::log(ts_wins ? ts : text + ts);
      int32_t* ids = out_ids + (size_t)r * k;
      float* lp = out_logprobs + (size_t)r * k;
      for (int j = 0; j < k; ++j) ids[j] = -1, lp[j] = kNeg;
      // Top k: 16 logits at a time against the current k-th best; the few that beat it are inserted one by one.
      for (int i0 = 0; i0 < vocab; i0 += 16) {
        unsigned better = beats(z + i0, std::min(16, vocab - i0), lp[k - 1]);
        while (better) {
          const int i = i0 + __builtin_ctz(better);
          better &= better - 1;
          const float x = z[i];
          if (x <= lp[k - 1] || x <= kNeg) continue;
          int j = k - 1;
          while (j > 0 && lp[j - 1] < x) {
            lp[j] = lp[j - 1], ids[j] = ids[j - 1];
            --j;
          }
          lp[j] = x, ids[j] = i;
        }
      }
      for (int j = 0; j < k; ++j)
        if (ids[j] >= 0) lp[j] -= lse;
    }
  });
}

}  // extern "C"
