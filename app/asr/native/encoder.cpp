// Whisper's audio encoder for x86-64 CPUs with AVX2 (AVX-512 VNNI where there is one, AMX tiles on top where there
// are those): log-mel -> audio features, every matrix product on kernels.h's int8 kernels: the two convolutions (as
// products over 3 neighbouring frames), the linear layers, and both products of self-attention.
// Driven by app/asr/native/encoder.py; built by app/asr/native/library.py.
// Why hand-written (docs/benchmarks.md): ONNX Runtime's int8 export spent 60 % of a 30 s window in its fused
// float32 attention (1,500 x 1,500 scores per head); here the scores and the weighted sum of values are int8
// products too, at the int8 kernels' rate:
// - scores: keys are smoothed (their mean over frames subtracted: a constant per query row, which softmax ignores,
//   and what makes per-frame int8 keys accurate, as SageAttention does) and quantized per frame, queries per row;
// - values: probabilities quantized per row (its largest is 1 before normalising), values per dimension.
// Output 0.997-0.999 cosine-similar to openai-whisper's float32 encoder on real speech (ONNX int8: 0.994-0.999).
#include "kernels.h"

namespace {

struct EncoderLayer {
  const float *ln1_g = nullptr, *ln1_b = nullptr, *ln2_g = nullptr, *ln2_b = nullptr;
  Linear qkv, out, up, down;
};

struct Encoder {
  int width = 0, heads = 0, layers = 0, n_mels = 0, ctx = 0;
  const float *positions = nullptr, *ln_g = nullptr, *ln_b = nullptr;
  Linear conv1, conv2;  // weights [out][in * 3]: input channel-major, then the 3 taps
  std::vector<EncoderLayer> layer;
};

// A call's buffers, one set per calling thread (several decoding workers encode at once), kept from call to call:
// ~35 MB for a 30 s window, which a fresh allocation has the kernel map and zero again at every call.
struct Buffers {
  std::vector<float> cols, conv, x, h, qkv, att, up;
};
thread_local Buffers buffers;

// A head's attention buffers, one set per thread.
struct HeadScratch {
  std::vector<float> scale, scores, pv;
  std::vector<int8_t, CacheAligned<int8_t>> kpack, vpack;
  std::vector<int32_t> kcomp, vcomp;
  std::vector<Act> probs;
};
thread_local HeadScratch head_scratch;

// Query rows a pass: their scores (32 x 1,500 floats) stay in L2; a multiple of the kernels' row group (8, or 6).
constexpr int kQueryBlock = 32 / kRows * kRows;

#ifdef PODBRIEF_AVX512
// pack_head's keys (per_row), 64 values a vector: the same arithmetic (cvtps2dq rounds to nearest even, as
// nearbyint does), so the same bytes; a frame's 64 int8 are pack_weights' 16 groups of 4, one every 64 bytes (one
// scatter). The scalar loop spent 15-20 % of attention_head here.
void pack_keys(const float* rows, size_t stride, int T, const float* shift, int8_t* pack, int32_t* comp,
               float* scale) {
  __m512 sh[4];
  for (int c = 0; c < 4; ++c) sh[c] = _mm512_loadu_ps(shift + 16 * c);
  const __m512i lanes = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32(16));  // group j of a row: dword 16 j of its block
  for (int f = 0; f < T; ++f) {
    __m512 v[4];
    __m512 amax = _mm512_setzero_ps();
    for (int c = 0; c < 4; ++c) {
      v[c] = _mm512_sub_ps(_mm512_loadu_ps(rows + f * stride + 16 * c), sh[c]);
      amax = _mm512_max_ps(amax, _mm512_abs_ps(v[c]));
    }
    const float a = _mm512_reduce_max_ps(amax);
    scale[f] = a / 127.f;
    const __m512 inv = _mm512_set1_ps(a > 0 ? 127.f / a : 0.f);
    __m512i sum = _mm512_setzero_si512();
    __m512i bytes = _mm512_setzero_si512();
    for (int c = 0; c < 4; ++c) {
      const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(v[c], inv));
      sum = _mm512_add_epi32(sum, q);
      bytes = _mm512_inserti32x4(bytes, _mm512_cvtepi32_epi8(q), c);
    }
    comp[f] = 128 * _mm512_reduce_add_epi32(sum);
    int8_t* block = pack + (size_t)(f / 16) * 16 * 64 + (f % 16) * 4;
    _mm512_i32scatter_epi32(block, lanes, bytes, 4);
  }
}
#endif

#ifndef PODBRIEF_AVX512
// AVX2: 64 scaled floats (8 vectors) -> 64 int8 in order, rounded to nearest even as nearbyint (cvtps2dq), each
// added into sum[c] as int32 unless sum is null (the saturating packs never saturate: |q| <= kWeightMax).
inline void quantize64(const __m256* scaled, int8_t* out, __m256i* sum) {
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  __m256i q[8];
  for (int c = 0; c < 8; ++c) {
    q[c] = _mm256_cvtps_epi32(scaled[c]);
    if (sum) sum[c] = _mm256_add_epi32(sum[c], q[c]);
  }
  for (int h = 0; h < 2; ++h) {  // packs work within 128-bit lanes: permuted back to order, as quantize_activations
    const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(q[4 * h], q[4 * h + 1]),
                                         _mm256_packs_epi32(q[4 * h + 2], q[4 * h + 3]));
    _mm256_storeu_si256((__m256i*)(out + 32 * h), _mm256_permutevar8x32_epi32(b, order));
  }
}

// pack_head's keys on AVX2 (a scale per frame), 64 values at a time: nearbyint(v * kWeightMax / amax) as the scalar
// loop had it (cvtps2dq rounds to nearest even), so the same bytes; a frame's 16 groups of 4 go one every 64 bytes
// (pack_weights' layout with the frame as output). The scalar loops were ~3 % of the AVX2 encoder.
void pack_keys(const float* rows, size_t stride, int T, const float* shift, int8_t* pack, int32_t* comp,
               float* scale) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (int f = 0; f < T; ++f) {
    __m256 v[8];
    __m256 amax8 = _mm256_setzero_ps();
    for (int c = 0; c < 8; ++c) {
      v[c] = _mm256_sub_ps(_mm256_loadu_ps(rows + f * stride + 8 * c), _mm256_loadu_ps(shift + 8 * c));
      amax8 = _mm256_max_ps(amax8, _mm256_and_ps(v[c], abs_mask));
    }
    const float amax = max8(amax8);
    scale[f] = amax / kWeightMax;
    __m256i sum[8];
    for (auto& x : sum) x = _mm256_setzero_si256();
    alignas(32) int8_t q[64];
    const __m256 inv = _mm256_set1_ps(amax > 0 ? (float)kWeightMax / amax : 0.f);
    for (auto& x : v) x = _mm256_mul_ps(x, inv);
    quantize64(v, q, sum);
    __m256i total = sum[0];
    for (int c = 1; c < 8; ++c) total = _mm256_add_epi32(total, sum[c]);
    alignas(32) int32_t lanes[8];
    _mm256_store_si256((__m256i*)lanes, total);
    int32_t t = 0;
    for (int32_t x : lanes) t += x;
    comp[f] = 128 * t;
    int8_t* block = pack + (size_t)(f / 16) * 16 * 64 + (f % 16) * 4;
    for (int j = 0; j < 16; ++j) std::memcpy(block + (size_t)j * 64, q + 4 * j, 4);
  }
}

// pack_head's values on AVX2 (a scale per dimension, `inv` its reciprocal; the product is 64 x Tp): 4 frames at a
// time, each 16-dimension group's 4 x 16 bytes transposed into 16 dimensions x 4 frames (pack_weights' 64-byte
// group). Returns the first frame left for the scalar loop (pack_head): T rounded down to a multiple of 4.
int pack_values(const float* rows, size_t stride, int T, int Tp, const float* shift, const float* inv,
                int8_t* pack) {
  __m256 inv8[8], shift8[8];
  for (int c = 0; c < 8; ++c) inv8[c] = _mm256_loadu_ps(inv + 8 * c), shift8[c] = _mm256_loadu_ps(shift + 8 * c);
  int f = 0;
  for (; f + 4 <= T; f += 4) {
    alignas(32) int8_t q[4][64];
    for (int r = 0; r < 4; ++r) {
      __m256 v[8];
      for (int c = 0; c < 8; ++c)
        v[c] = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(rows + (f + r) * stride + 8 * c), shift8[c]), inv8[c]);
      quantize64(v, q[r], nullptr);
    }
    for (int g = 0; g < 4; ++g) {  // dimensions 16 g .. 16 g + 15
      __m128i r[4];
      for (int i = 0; i < 4; ++i) r[i] = _mm_load_si128((const __m128i*)(q[i] + 16 * g));
      const __m128i t0 = _mm_unpacklo_epi8(r[0], r[1]), t1 = _mm_unpackhi_epi8(r[0], r[1]);
      const __m128i t2 = _mm_unpacklo_epi8(r[2], r[3]), t3 = _mm_unpackhi_epi8(r[2], r[3]);
      __m128i* block = (__m128i*)(pack + ((size_t)g * (Tp / 4) + f / 4) * 64);
      _mm_storeu_si128(block, _mm_unpacklo_epi16(t0, t2));
      _mm_storeu_si128(block + 1, _mm_unpackhi_epi16(t0, t2));
      _mm_storeu_si128(block + 2, _mm_unpacklo_epi16(t1, t3));
      _mm_storeu_si128(block + 3, _mm_unpackhi_epi16(t1, t3));
    }
  }
  return f;
}
#endif

// p[f] = nearbyint(exp(s[f] - mx) * 127) for f < T: a row of unnormalised probabilities, quantized as they are
// computed to 0..127 with no offset (the seven-bit activations linear_blocks<true> takes: the AVX2 kernel adds two
// k steps in int16, and the values' comp is zero); returns the sum of the exponentials (all of them: the many small
// ones that round to 0 still weigh in the normaliser).
inline float exp_quantize(const float* s, int T, float mx, Act* p) {
#ifdef PODBRIEF_AVX512
  // Hand-vectorised: the compiler's loop (256-bit, a call into libmvec, int32 -> uint8 through two permutes) was
  // ~40 % of attention_head.
  const __m512 m = _mm512_set1_ps(mx), k127 = _mm512_set1_ps(127.f);
  __m512 sum = _mm512_setzero_ps();
  for (int f = 0; f < T; f += 16) {
    const __mmask16 valid = T - f >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (T - f)) - 1);
    const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(valid, s + f), m));
    sum = _mm512_mask_add_ps(sum, valid, sum, e);
    const __m128i q = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(e, k127)));
    _mm_mask_storeu_epi8(p + f, valid, q);
  }
  return _mm512_reduce_add_ps(sum);
#else
  // 32 at a time, narrowed as quantize_activations narrows (kernels.h): libmvec's expf and a scalar narrowing were
  // 10 % of the AVX2 encoder.
  const __m256 m = _mm256_set1_ps(mx), k127 = _mm256_set1_ps(127.f);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  __m256 acc = _mm256_setzero_ps();
  int f = 0;
  for (; f + 32 <= T; f += 32) {
    __m256i q[4];
    for (int c = 0; c < 4; ++c) {
      const __m256 e = exp_nonpositive8(_mm256_sub_ps(_mm256_loadu_ps(s + f + 8 * c), m));
      acc = _mm256_add_ps(acc, e);
      q[c] = _mm256_cvtps_epi32(_mm256_mul_ps(e, k127));
    }
    const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    _mm256_storeu_si256((__m256i*)(p + f), _mm256_permutevar8x32_epi32(b, order));
  }
  float sum = sum8(acc);
  for (; f < T; ++f) {
    const float e = expf(s[f] - mx);
    sum += e;
    p[f] = (Act)std::nearbyint(e * 127.f);
  }
  return sum;
#endif
}

// Quantizes rows[f][0..64) (row stride `stride`; f < T, rows T..Tp zero) to kWeightMax (127; 63 for AVX2's uint8
// kernel: kernels.h) straight into pack_weights' layout, for a
// product with n x k = (per_row ? Tp x 64 : 64 x Tp): keys are weights with a frame per output (a scale per
// frame), values transposed, a dimension per output (a scale per dimension). comp and scale: per output; comp is
// 128 x the keys' sums (the queries' offset) and zero for values (the probabilities have none: exp_quantize).
void pack_head(const float* rows, size_t stride, int T, int Tp, bool per_row, const float* shift, int8_t* pack,
               int32_t* comp, float* scale) {
  constexpr int hd = 64;
  const int n = per_row ? Tp : hd, k = per_row ? hd : Tp;
  float inv[hd];
  if (!per_row) {  // one scale per dimension, over every frame
    float amax[hd];
    std::fill(amax, amax + hd, 1e-12f);
    for (int f = 0; f < T; ++f)
      for (int e = 0; e < hd; ++e) amax[e] = std::fmax(amax[e], std::fabs(rows[f * stride + e] - shift[e]));
    for (int e = 0; e < hd; ++e) scale[e] = amax[e] / kWeightMax, inv[e] = kWeightMax / amax[e];
  }
  std::fill(comp, comp + n, 0);
  std::memset(pack, 0, (size_t)(n + 15) / 16 * 16 * k);
  if (per_row) {
    pack_keys(rows, stride, T, shift, pack, comp, scale);
    std::fill(scale + T, scale + Tp, 0.f);
    return;
  }
  int f = 0;
#ifndef PODBRIEF_AVX512
  f = pack_values(rows, stride, T, Tp, shift, inv, pack);  // all but the last T % 4 frames
#endif
  for (; f < T; ++f)
    for (int e = 0; e < hd; ++e) {
      const int8_t q = (int8_t)std::nearbyint((rows[f * stride + e] - shift[e]) * inv[e]);
      pack[packed_index(e, f, k)] = q;
    }
}

// Self-attention of head hh over T frames: qkv [T][3 * width] (query | key | value) -> att[:, hh * 64 : + 64].
void attention_head(const Encoder& E, const float* qkv, int T, int hh, float* att) {
  // Frames padded to 16 (a block of keys as outputs), or 64 for AMX (frames are the values' product's k).
  const int pad = amx_active() ? 64 : 16;
  const int d = E.width, hd = d / E.heads, Tp = (T + pad - 1) / pad * pad;
  HeadScratch& S = head_scratch;
  S.kpack.resize((size_t)Tp * hd), S.vpack.resize((size_t)hd * Tp), S.kcomp.resize(Tp), S.vcomp.resize(hd);
  S.scale.resize(Tp + hd), S.scores.resize((size_t)kQueryBlock * Tp), S.pv.resize((size_t)kQueryBlock * hd);
  S.probs.resize((size_t)kQueryBlock * Tp);
  float *scores = S.scores.data(), *kscale = S.scale.data(), *vscale = kscale + Tp;
  const size_t stride = (size_t)3 * d;
  const float* qin = qkv + hh * hd;
  const float* kin = qkv + d + hh * hd;
  const float* vin = qkv + 2 * d + hh * hd;

  // Keys: mean over frames subtracted, int8 per frame; padding frames (T..Tp) are zero with scale 0, so their
  // scores come out 0 and are dropped before the softmax.
  float mean[64] = {}, zero[64] = {};
  for (int f = 0; f < T; ++f)
    for (int e = 0; e < hd; ++e) mean[e] += kin[f * stride + e];
  for (int e = 0; e < hd; ++e) mean[e] /= (float)T;
  pack_head(kin, stride, T, Tp, true, mean, S.kpack.data(), S.kcomp.data(), kscale);
  Linear KL;
  KL.w = S.kpack.data(), KL.comp = S.kcomp.data(), KL.scale = kscale, KL.k = hd, KL.n = Tp;
  KL.seven_bit = true;  // the queries, seven bits with a zero point on AVX2 (Linear::seven_bit)
  // Values as the "weights" of the probabilities' product ([dimension][frame]), int8 per dimension.
  pack_head(vin, stride, T, Tp, false, zero, S.vpack.data(), S.vcomp.data(), vscale);
  Linear VL;
  VL.w = S.vpack.data(), VL.comp = S.vcomp.data(), VL.scale = vscale, VL.k = Tp, VL.n = hd;

  const float scale = 1.f / std::sqrt((float)hd);
  float q[kQueryBlock * 64], prob_scale[kQueryBlock], inv_sum[kQueryBlock];
  std::fill(prob_scale, prob_scale + kQueryBlock, 1.f / 127.f);
  for (int i0 = 0; i0 < T; i0 += kQueryBlock) {
    const int rows = std::min(kQueryBlock, T - i0);
    for (int i = 0; i < rows; ++i)
      for (int e = 0; e < hd; ++e) q[i * hd + e] = qin[(i0 + i) * stride + e] * scale;
    linear(KL, q, rows, scores);  // [rows][Tp]
    // Unnormalised probabilities quantized as they are computed: the largest is exp(0) = 1, so every row's scale
    // is 1/127 and no pass looks for it; normalised after the product.
    for (int i = 0; i < rows; ++i) {
      const float* s = scores + (size_t)i * Tp;
      Act* p = S.probs.data() + (size_t)i * Tp;
      const float sum = exp_quantize(s, T, max_of(s, T), p);
      std::fill(p + T, p + Tp, (Act)0);
      inv_sum[i] = 1.f / sum;
    }
    linear_blocks_nonzero(VL, S.probs.data(), prob_scale, rows, S.pv.data());  // [rows][hd], zero blocks skipped
    for (int i = 0; i < rows; ++i) {
      float* o = att + (size_t)(i0 + i) * d + hh * hd;
      for (int e = 0; e < hd; ++e) o[e] = S.pv[(size_t)i * hd + e] * inv_sum[i];
    }
  }
}

}  // namespace

extern "C" {

// For the tests: pack_head as attention_head calls it (keys: per_row 1, shift their mean; values: per_row 0).
void pack_attention_head(const float* rows, int stride, int T, int Tp, int per_row, const float* shift, int8_t* pack,
                         int32_t* comp, float* scale) {
  pack_head(rows, (size_t)stride, T, Tp, per_row != 0, shift, pack, comp, scale);
}

void* create_encoder(int width, int heads, int layers, int n_mels, int ctx, const float* positions, const float* ln_g,
                     const float* ln_b) {
  Encoder* E = new Encoder();
  E->width = width, E->heads = heads, E->layers = layers, E->n_mels = n_mels, E->ctx = ctx;
  E->positions = positions, E->ln_g = ln_g, E->ln_b = ln_b;
  E->layer.resize(layers);
  return E;
}

void free_encoder(void* encoder) { delete static_cast<Encoder*>(encoder); }

// which: 0 self query|key|value, 1 self out, 2 MLP up, 3 MLP down, 4 first convolution, 5 second (layer ignored).
void set_encoder_linear(void* encoder, int layer, int which, const int8_t* w, const int32_t* comp, const float* scale,
                        const float* bias, int k, int n) {
  Encoder& E = *static_cast<Encoder*>(encoder);
  Linear l;
  l.w = w, l.comp = comp, l.scale = scale, l.bias = bias, l.k = k, l.n = n;
  EncoderLayer& L = E.layer[layer];
  Linear* slots[] = {&L.qkv, &L.out, &L.up, &L.down, &E.conv1, &E.conv2};
  // On AVX2 the MLP's second layer and the second convolution take seven-bit activations (Linear::seven_bit): their
  // inputs are a GELU's outputs. The layers after a layer norm keep 8 bits (seven cost 0.0002-0.0004 of the
  // features' cosine to float32 each, on 8 dev windows).
  l.seven_bit = which == 3 || which == 5;
  *slots[which] = l;
}

void set_encoder_norms(void* encoder, int layer, const float* g1, const float* b1, const float* g2, const float* b2) {
  EncoderLayer& L = static_cast<Encoder*>(encoder)->layer[layer];
  L.ln1_g = g1, L.ln1_b = b1, L.ln2_g = g2, L.ln2_b = b2;
}

// mel float32 [n_mels][frames] (frames even, <= 2 * ctx) -> out float32 [frames / 2][width], on `threads` threads.
void encode(const void* encoder, const float* mel, int frames, float* out, int threads) {
  const Encoder& E = *static_cast<const Encoder*>(encoder);
  const int d = E.width, C = E.n_mels, T = frames / 2;
  Buffers& B = buffers;
  grow(B.cols, std::max((size_t)frames * 3 * C, (size_t)T * 3 * d)), grow(B.conv, (size_t)frames * d);
  grow(B.x, (size_t)T * d), grow(B.h, (size_t)T * d), grow(B.qkv, (size_t)T * 3 * d), grow(B.att, (size_t)T * d);
  grow(B.up, (size_t)T * 4 * d);
  float *cols = B.cols.data(), *conv = B.conv.data(), *x = B.x.data(), *h = B.h.data();

  // Convolutions (kernel 3, padding 1) as products: row t holds its 3 neighbouring frames of every channel.
  for (int t = 0; t < frames; ++t)
    for (int c = 0; c < C; ++c)
      for (int j = 0; j < 3; ++j) {
        const int s = t + j - 1;
        cols[((size_t)t * C + c) * 3 + j] = (s >= 0 && s < frames) ? mel[(size_t)c * frames + s] : 0.f;
      }
  linear(E.conv1, cols, frames, conv, threads, true);
  for (int t = 0; t < T; ++t)  // stride 2
    for (int c = 0; c < d; ++c)
      for (int j = 0; j < 3; ++j) {
        const int s = 2 * t + j - 1;
        cols[((size_t)t * d + c) * 3 + j] = (s >= 0 && s < frames) ? conv[(size_t)s * d + c] : 0.f;
      }
  linear(E.conv2, cols, T, x, threads, true);
  for (int t = 0; t < T; ++t)
    for (int c = 0; c < d; ++c) x[(size_t)t * d + c] += E.positions[(size_t)t * d + c];

  for (int l = 0; l < E.layers; ++l) {
    const EncoderLayer& L = E.layer[l];
    layer_norm(x, T, d, L.ln1_g, L.ln1_b, h);
    linear(L.qkv, h, T, B.qkv.data(), threads);
    parallel(threads, E.heads, [&](int h0, int h1) {
      for (int hh = h0; hh < h1; ++hh) attention_head(E, B.qkv.data(), T, hh, B.att.data());
    });
    linear(L.out, B.att.data(), T, h, threads);
    for (size_t i = 0; i < (size_t)T * d; ++i) x[i] += h[i];
    layer_norm(x, T, d, L.ln2_g, L.ln2_b, h);
    linear(L.up, h, T, B.up.data(), threads, true);
    linear(L.down, B.up.data(), T, h, threads);
    for (size_t i = 0; i < (size_t)T * d; ++i) x[i] += h[i];
  }
  layer_norm(x, T, d, E.ln_g, E.ln_b, out);
}

}  // extern "C"
