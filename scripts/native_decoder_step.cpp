// Probe, not part of the service (driven by scripts/decoder_step_probe.py, runtime "native"): one Whisper decoder
// step hand-written for AVX-512 VNNI, to measure what CTranslate2's decoder leaves on the table on AMD CPUs
// (docs/benchmarks.md). Two things differ from CTranslate2's CPU path:
// - int8 weights are packed once ([n/16][k/4][16][4], one 64-byte load feeds one vpdpbusd per row), where
//   oneDNN repacks them at every call (48-72 % of a one-window step on Zen 3 / Zen 4);
// - a window's cross-attention keys and values are computed once, stored as float16 (keys transposed, so scores
//   accumulate over frames without horizontal sums) and shared by its beams, where CTranslate2 keeps a float32
//   copy per beam.
// Activations are quantized per row to int8 and shifted to uint8 (vpdpbusd multiplies uint8 by int8):
//   y[i][o] = sx[i] * sw[o] * (sum_k xu8[i][k] * w[o][k] - 128 * sum_k w[o][k]) + bias[o].
// Build: g++ -O3 -march=native -ffast-math -shared -fPIC (libmvec vectorises expf). Needs AVX-512 F/VNNI, F16C.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

struct Linear {
  const int8_t* w;       // packed
  const int32_t* comp;   // 128 * sum_k w[o][k]
  const float* scale;    // per output row
  const float* bias;     // or null
  int k, n;
};

struct Layer {
  const float *ln1_g, *ln1_b, *ln2_g, *ln2_b, *ln3_g, *ln3_b;
  Linear qkv, out, cross_q, cross_out, up, down;
};

struct Model {
  int width = 0, heads = 0, vocab = 0, layers = 0, ctx = 0;
  const float *embedding = nullptr, *positions = nullptr, *ln_g = nullptr, *ln_b = nullptr;
  Linear projection{};
  Layer layer[8]{};
} model;

// Scratch buffers, one set per thread; the hot loops below use raw pointers taken once (a thread_local accessed
// inside a loop goes through __tls_get_addr at every access: 2.5x slower steps).
struct Scratch {
  std::vector<float> x, h, qkv, att, up, scores, row_scale;
  std::vector<uint8_t> xq;
};
thread_local Scratch scratch;

void linear(const Linear& L, const float* in, int m, float* y) {
  const int k = L.k, n = L.n;
  Scratch& S = scratch;
  S.xq.resize((size_t)m * k);
  S.row_scale.resize(m);
  uint8_t* xq = S.xq.data();
  float* row_scale = S.row_scale.data();
  for (int i = 0; i < m; ++i) {
    const float* r = in + (size_t)i * k;
    float amax = 1e-12f;
    for (int j = 0; j < k; ++j) amax = std::fmax(amax, std::fabs(r[j]));
    const float inv = 127.f / amax;
    row_scale[i] = amax / 127.f;
    for (int j = 0; j < k; ++j) xq[(size_t)i * k + j] = (uint8_t)((int)std::nearbyint(r[j] * inv) + 128);
  }
  constexpr int kRows = 8;  // accumulators per pass: 8 rows + the weight vector stay in registers
  for (int i0 = 0; i0 < m; i0 += kRows) {
    const int mb = std::min(kRows, m - i0);
    for (int ob = 0; ob < n; ob += 16) {
      __m512i acc[kRows];
      for (int i = 0; i < mb; ++i) acc[i] = _mm512_setzero_si512();
      const int8_t* wb = L.w + (size_t)ob * k;
      for (int j = 0; j < k; j += 4) {
        const __m512i wv = _mm512_loadu_si512((const void*)(wb + (size_t)j * 16));
        for (int i = 0; i < mb; ++i) {
          int32_t quad;
          std::memcpy(&quad, xq + (size_t)(i0 + i) * k + j, 4);
          acc[i] = _mm512_dpbusd_epi32(acc[i], _mm512_set1_epi32(quad), wv);
        }
      }
      const int rem = std::min(16, n - ob);
      const __mmask16 mask = (__mmask16)((1u << rem) - 1);
      const __m512i comp = _mm512_maskz_loadu_epi32(mask, L.comp + ob);
      const __m512 ws = _mm512_maskz_loadu_ps(mask, L.scale + ob);
      const __m512 bias = L.bias ? _mm512_maskz_loadu_ps(mask, L.bias + ob) : _mm512_setzero_ps();
      for (int i = 0; i < mb; ++i) {
        const __m512 s = _mm512_mul_ps(ws, _mm512_set1_ps(row_scale[i0 + i]));
        const __m512 r = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[i], comp)), s, bias);
        _mm512_mask_storeu_ps(y + (size_t)(i0 + i) * n + ob, mask, r);
      }
    }
  }
}

void layer_norm(const float* in, int m, int d, const float* g, const float* b, float* out) {
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

void softmax(float* s, int n) {
  float mx = -1e30f, sum = 0;
  for (int i = 0; i < n; ++i) mx = std::max(mx, s[i]);
  for (int i = 0; i < n; ++i) sum += (s[i] = expf(s[i] - mx));
  const float inv = 1.f / sum;
  for (int i = 0; i < n; ++i) s[i] *= inv;
}

}  // namespace

extern "C" {

// w: n x k int8, row-major, k a multiple of 4 -> out: (n rounded up to 16) x k packed; comp: n.
void pack(const int8_t* w, int n, int k, int8_t* out, int32_t* comp) {
  for (int o = 0; o < n; ++o) {
    int32_t s = 0;
    for (int j = 0; j < k; ++j) s += w[(size_t)o * k + j];
    comp[o] = 128 * s;
  }
  size_t p = 0;
  for (int ob = 0; ob < n; ob += 16)
    for (int j = 0; j < k; j += 4)
      for (int r = 0; r < 16; ++r)
        for (int t = 0; t < 4; ++t) out[p++] = (ob + r < n) ? w[(size_t)(ob + r) * k + j + t] : 0;
}

void set_model(int width, int heads, int vocab, int layers, int ctx, const float* embedding, const float* positions,
               const float* ln_g, const float* ln_b) {
  model.width = width, model.heads = heads, model.vocab = vocab, model.layers = layers, model.ctx = ctx;
  model.embedding = embedding, model.positions = positions, model.ln_g = ln_g, model.ln_b = ln_b;
}

// which: 0 query|key|value, 1 self out, 2 cross query, 3 cross out, 4 MLP up, 5 MLP down, 6 vocabulary projection.
void set_linear(int layer, int which, const int8_t* w, const int32_t* comp, const float* scale, const float* bias,
                int k, int n) {
  const Linear l{w, comp, scale, bias, k, n};
  Layer& L = model.layer[layer];
  Linear* slots[] = {&L.qkv, &L.out, &L.cross_q, &L.cross_out, &L.up, &L.down, &model.projection};
  *slots[which] = l;
}

void set_layer_norms(int layer, const float* g1, const float* b1, const float* g2, const float* b2, const float* g3,
                     const float* b3) {
  Layer& L = model.layer[layer];
  L.ln1_g = g1, L.ln1_b = b1, L.ln2_g = g2, L.ln2_b = b2, L.ln3_g = g3, L.ln3_b = b3;
}

// One step for `rows` = windows x beams rows at position `pos`.
// cache: float32 [layers][2][rows][heads][ctx][64] (self-attention keys, values).
// cross: float16 [layers][2][windows][heads][...]: keys as [64][frames16], values as [frames16][64], frames16 =
// frames rounded up to 16 (zero padded). logits: float32 [rows][vocab].
void step(const int32_t* tokens, int rows, int windows, int frames, int pos, float* cache, const uint16_t* cross,
          float* logits) {
  const int d = model.width, H = model.heads, hd = d / H, ctx = model.ctx, beams = rows / windows;
  const int fp = (frames + 15) / 16 * 16;
  const float scale = 1.f / std::sqrt((float)hd);
  Scratch& S = scratch;
  S.x.resize((size_t)rows * d), S.h.resize((size_t)rows * d), S.qkv.resize((size_t)rows * 3 * d);
  S.att.resize((size_t)rows * d), S.up.resize((size_t)rows * 4 * d);
  S.scores.resize((size_t)std::max(ctx, fp) * beams);
  float *x = S.x.data(), *h = S.h.data(), *qkv = S.qkv.data(), *att = S.att.data(), *up = S.up.data();
  float* scores = S.scores.data();
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < d; ++j)
      x[(size_t)r * d + j] = model.embedding[(size_t)tokens[r] * d + j] + model.positions[(size_t)pos * d + j];
  for (int l = 0; l < model.layers; ++l) {
    const Layer& L = model.layer[l];
    // Self-attention over positions 0..pos.
    layer_norm(x, rows, d, L.ln1_g, L.ln1_b, h);
    linear(L.qkv, h, rows, qkv);
    float* keys = cache + (size_t)l * 2 * rows * H * ctx * hd;
    float* values = keys + (size_t)rows * H * ctx * hd;
    for (int r = 0; r < rows; ++r)
      for (int hh = 0; hh < H; ++hh) {
        float* kr = keys + ((size_t)r * H + hh) * ctx * hd;
        float* vr = values + ((size_t)r * H + hh) * ctx * hd;
        const float* q = &qkv[(size_t)r * 3 * d + hh * hd];
        std::memcpy(kr + (size_t)pos * hd, q + d, hd * sizeof(float));
        std::memcpy(vr + (size_t)pos * hd, q + 2 * d, hd * sizeof(float));
        for (int t = 0; t <= pos; ++t) {
          float s = 0;
          for (int e = 0; e < hd; ++e) s += q[e] * kr[(size_t)t * hd + e];
          scores[t] = s * scale;
        }
        softmax(scores, pos + 1);
        float* o = &att[(size_t)r * d + hh * hd];
        std::fill(o, o + hd, 0.f);
        for (int t = 0; t <= pos; ++t)
          for (int e = 0; e < hd; ++e) o[e] += scores[t] * vr[(size_t)t * hd + e];
      }
    linear(L.out, att, rows, h);
    for (size_t i = 0; i < (size_t)rows * d; ++i) x[i] += h[i];
    // Cross-attention: one pass over a window's keys and one over its values for all of its beams.
    layer_norm(x, rows, d, L.ln2_g, L.ln2_b, h);
    linear(L.cross_q, h, rows, qkv);
    const uint16_t* xk = cross + (size_t)l * 2 * windows * H * fp * hd;
    const uint16_t* xv = xk + (size_t)windows * H * fp * hd;
    for (int w = 0; w < windows; ++w)
      for (int hh = 0; hh < H; ++hh) {
        const uint16_t* K = xk + ((size_t)w * H + hh) * hd * fp;
        const uint16_t* V = xv + ((size_t)w * H + hh) * fp * hd;
        for (int b0 = 0; b0 < beams; b0 += 8) {
          const int nb = std::min(8, beams - b0);
          for (int f = 0; f < fp; f += 16) {
            __m512 acc[8];
            for (int b = 0; b < nb; ++b) acc[b] = _mm512_setzero_ps();
            for (int e = 0; e < hd; ++e) {
              const __m512 k16 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(K + (size_t)e * fp + f)));
              for (int b = 0; b < nb; ++b)
                acc[b] = _mm512_fmadd_ps(_mm512_set1_ps(qkv[(size_t)(w * beams + b0 + b) * d + hh * hd + e] * scale),
                                         k16, acc[b]);
            }
            for (int b = 0; b < nb; ++b) _mm512_storeu_ps(&scores[(size_t)(b0 + b) * fp + f], acc[b]);
          }
        }
        for (int b = 0; b < beams; ++b) {
          softmax(&scores[(size_t)b * fp], frames);
          std::fill(&scores[(size_t)b * fp + frames], &scores[(size_t)(b + 1) * fp], 0.f);
        }
        for (int b0 = 0; b0 < beams; b0 += 4) {
          const int nb = std::min(4, beams - b0);
          __m512 o[4][4];
          for (int b = 0; b < nb; ++b)
            for (int c = 0; c < 4; ++c) o[b][c] = _mm512_setzero_ps();
          for (int f = 0; f < frames; ++f) {
            __m512 v[4];
            for (int c = 0; c < 4; ++c)
              v[c] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(V + (size_t)f * hd + 16 * c)));
            for (int b = 0; b < nb; ++b) {
              const __m512 p = _mm512_set1_ps(scores[(size_t)(b0 + b) * fp + f]);
              for (int c = 0; c < 4; ++c) o[b][c] = _mm512_fmadd_ps(p, v[c], o[b][c]);
            }
          }
          for (int b = 0; b < nb; ++b)
            for (int c = 0; c < 4; ++c) _mm512_storeu_ps(&att[(size_t)(w * beams + b0 + b) * d + hh * hd + 16 * c], o[b][c]);
        }
      }
    linear(L.cross_out, att, rows, h);
    for (size_t i = 0; i < (size_t)rows * d; ++i) x[i] += h[i];
    // MLP with the exact (erf) GELU Whisper uses.
    layer_norm(x, rows, d, L.ln3_g, L.ln3_b, h);
    linear(L.up, h, rows, up);
    for (size_t i = 0; i < (size_t)rows * 4 * d; ++i) up[i] = 0.5f * up[i] * (1.f + erff(up[i] * 0.70710678f));
    linear(L.down, up, rows, h);
    for (size_t i = 0; i < (size_t)rows * d; ++i) x[i] += h[i];
  }
  layer_norm(x, rows, d, model.ln_g, model.ln_b, h);
  linear(model.projection, h, rows, logits);
}

}  // extern "C"
