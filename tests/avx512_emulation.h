// The AVX-512 VNNI intrinsics app/asr/native/*.cpp use, in plain C++, so that their AVX-512 kernels can be built
// and checked on a CPU without AVX-512 (tests/test_asr_native.py; g++ -include this file).
// Slow and exact: each lane as the instruction set reference defines it. Only the operations the library calls.
#pragma once
#include <immintrin.h>  // first, so that its own definitions of these names are in place before the macros below

#include <cmath>
#include <cstdint>
#include <cstring>

namespace emu512 {

struct m512 {
  float v[16];
};
struct m512i {
  int32_t v[16];
};
using mask16 = uint16_t;

inline m512i setzero_si512() { return {}; }
inline m512 setzero_ps() { return {}; }
inline m512i loadu_si512(const void* p) {
  m512i r;
  std::memcpy(r.v, p, sizeof r.v);
  return r;
}
inline m512i set1_epi32(int32_t x) {
  m512i r;
  for (int32_t& v : r.v) v = x;
  return r;
}
inline m512 set1_ps(float x) {
  m512 r;
  for (float& v : r.v) v = x;
  return r;
}
// vpdpbusd: each 32-bit lane adds the four products of a's unsigned bytes and b's signed bytes.
inline m512i dpbusd_epi32(m512i acc, m512i a, m512i b) {
  for (int i = 0; i < 16; ++i) {
    uint8_t ua[4];
    int8_t sb[4];
    std::memcpy(ua, &a.v[i], 4);
    std::memcpy(sb, &b.v[i], 4);
    for (int t = 0; t < 4; ++t) acc.v[i] += (int32_t)ua[t] * (int32_t)sb[t];
  }
  return acc;
}
inline m512i maskz_loadu_epi32(mask16 k, const void* p) {
  m512i r = {};
  for (int i = 0; i < 16; ++i)
    if (k >> i & 1) std::memcpy(&r.v[i], static_cast<const char*>(p) + 4 * i, 4);
  return r;
}
inline m512 maskz_loadu_ps(mask16 k, const void* p) {
  m512 r = {};
  for (int i = 0; i < 16; ++i)
    if (k >> i & 1) std::memcpy(&r.v[i], static_cast<const char*>(p) + 4 * i, 4);
  return r;
}
inline void mask_storeu_ps(void* p, mask16 k, m512 a) {
  for (int i = 0; i < 16; ++i)
    if (k >> i & 1) std::memcpy(static_cast<char*>(p) + 4 * i, &a.v[i], 4);
}
inline void storeu_ps(void* p, m512 a) { std::memcpy(p, a.v, sizeof a.v); }
inline m512 loadu_ps(const void* p) {
  m512 r;
  std::memcpy(r.v, p, sizeof r.v);
  return r;
}
inline m512 max_ps(m512 a, m512 b) {
  for (int i = 0; i < 16; ++i) a.v[i] = a.v[i] > b.v[i] ? a.v[i] : b.v[i];
  return a;
}
inline float reduce_max_ps(m512 a) {
  float m = a.v[0];
  for (float v : a.v) m = v > m ? v : m;
  return m;
}
inline m512 add_ps(m512 a, m512 b) {
  for (int i = 0; i < 16; ++i) a.v[i] += b.v[i];
  return a;
}
inline m512 mul_ps(m512 a, m512 b) {
  for (int i = 0; i < 16; ++i) a.v[i] *= b.v[i];
  return a;
}
// Fused, one rounding, as vfmadd: a plain a * b + c may be fused in one caller and not in another (the compiler
// decides per loop), and two kernels with the same epilogue would then differ in the last bit.
inline m512 fmadd_ps(m512 a, m512 b, m512 c) {
  for (int i = 0; i < 16; ++i) c.v[i] = std::fma(a.v[i], b.v[i], c.v[i]);
  return c;
}
inline m512i sub_epi32(m512i a, m512i b) {
  for (int i = 0; i < 16; ++i) a.v[i] -= b.v[i];
  return a;
}
inline m512 cvtepi32_ps(m512i a) {
  m512 r;
  for (int i = 0; i < 16; ++i) r.v[i] = (float)a.v[i];
  return r;
}
inline m512 cvtph_ps(__m256i h) {
  uint16_t t[16];
  std::memcpy(t, &h, sizeof t);
  m512 r;
  for (int i = 0; i < 16; ++i) r.v[i] = _cvtsh_ss(t[i]);
  return r;
}
// Only the predicate the library uses: greater than, ordered.
inline mask16 mask_cmp_ps_mask(mask16 k, m512 a, m512 b, int predicate) {
  if (predicate != _CMP_GT_OQ) __builtin_trap();
  unsigned r = 0;
  for (int i = 0; i < 16; ++i) r |= (unsigned)((k >> i & 1) && a.v[i] > b.v[i]) << i;
  return (mask16)r;
}

inline m512 sub_ps(m512 a, m512 b) {
  for (int i = 0; i < 16; ++i) a.v[i] -= b.v[i];
  return a;
}
inline m512 abs_ps(m512 a) {
  for (float& v : a.v) v = std::fabs(v);
  return a;
}
inline m512 mask_add_ps(m512 src, mask16 k, m512 a, m512 b) {
  for (int i = 0; i < 16; ++i)
    if (k >> i & 1) src.v[i] = a.v[i] + b.v[i];
  return src;
}
inline m512 mask_sub_ps(m512 src, mask16 k, m512 a, m512 b) {
  for (int i = 0; i < 16; ++i)
    if (k >> i & 1) src.v[i] = a.v[i] - b.v[i];
  return src;
}
inline m512 fnmadd_ps(m512 a, m512 b, m512 c) {
  for (int i = 0; i < 16; ++i) c.v[i] = std::fma(-a.v[i], b.v[i], c.v[i]);
  return c;
}
inline float reduce_add_ps(m512 a) {
  float s = 0;
  for (float v : a.v) s += v;
  return s;
}
inline int32_t reduce_add_epi32(m512i a) {
  int32_t s = 0;
  for (int32_t v : a.v) s += v;
  return s;
}
// vscalefps: a * 2^floor(b).
inline m512 scalef_ps(m512 a, m512 b) {
  for (int i = 0; i < 16; ++i) a.v[i] = std::ldexp(a.v[i], (int)std::floor(b.v[i]));
  return a;
}
// Only the rounding the library uses: to nearest (even).
inline m512 roundscale_ps(m512 a, int imm) {
  if ((imm & 3) != _MM_FROUND_TO_NEAREST_INT) __builtin_trap();
  for (float& v : a.v) v = std::nearbyint(v);
  return a;
}
// vrcp14ps is within 2^-14 of 1 / x; exactly 1 / x here (the library refines it by a Newton step either way).
inline m512 rcp14_ps(m512 a) {
  for (float& v : a.v) v = 1.f / v;
  return a;
}
inline mask16 cmp_ps_mask(m512 a, m512 b, int predicate) {
  if (predicate != _CMP_LT_OQ) __builtin_trap();
  unsigned r = 0;
  for (int i = 0; i < 16; ++i) r |= (unsigned)(a.v[i] < b.v[i]) << i;
  return (mask16)r;
}
inline m512i cvtps_epi32(m512 a) {  // the current rounding mode: to nearest even
  m512i r;
  for (int i = 0; i < 16; ++i) r.v[i] = (int32_t)std::nearbyint(a.v[i]);
  return r;
}
inline __m128i cvtepi32_epi8(m512i a) {  // vpmovdb: the low byte of each lane
  int8_t b[16];
  for (int i = 0; i < 16; ++i) b[i] = (int8_t)a.v[i];
  __m128i r;
  std::memcpy(&r, b, sizeof b);
  return r;
}
inline m512i inserti32x4(m512i a, __m128i b, int lane) {
  std::memcpy(&a.v[4 * lane], &b, 16);
  return a;
}
inline m512i add_epi32(m512i a, m512i b) {
  for (int i = 0; i < 16; ++i) a.v[i] += b.v[i];
  return a;
}
inline m512i mullo_epi32(m512i a, m512i b) {
  for (int i = 0; i < 16; ++i) a.v[i] = (int32_t)((uint32_t)a.v[i] * (uint32_t)b.v[i]);
  return a;
}
inline m512i setr_epi32(int a0, int a1, int a2, int a3, int a4, int a5, int a6, int a7, int a8, int a9, int a10,
                        int a11, int a12, int a13, int a14, int a15) {
  return {{a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15}};
}
inline void i32scatter_epi32(void* base, m512i index, m512i a, int scale) {
  for (int i = 0; i < 16; ++i) std::memcpy(static_cast<char*>(base) + (ptrdiff_t)index.v[i] * scale, &a.v[i], 4);
}
inline m512 mask_i32gather_ps(m512 src, mask16 k, m512i index, const void* base, int scale) {
  for (int i = 0; i < 16; ++i)
    if (k >> i & 1) std::memcpy(&src.v[i], static_cast<const char*>(base) + (ptrdiff_t)index.v[i] * scale, 4);
  return src;
}
inline __m256i cvtps_ph(m512 a, int rounding) {
  uint16_t h[16];
  for (int i = 0; i < 16; ++i) h[i] = _cvtss_sh(a.v[i], rounding);
  __m256i r;
  std::memcpy(&r, h, sizeof h);
  return r;
}
// AVX-512 BW + VL's masked byte store, on 16 bytes.
inline void mask_storeu_epi8_128(void* p, mask16 k, __m128i a) {
  uint8_t b[16];
  std::memcpy(b, &a, sizeof b);
  for (int i = 0; i < 16; ++i)
    if (k >> i & 1) static_cast<uint8_t*>(p)[i] = b[i];
}

}  // namespace emu512

#define __m512 emu512::m512
#define __m512i emu512::m512i
#define __mmask16 emu512::mask16
#define _mm512_setzero_si512 emu512::setzero_si512
#define _mm512_setzero_ps emu512::setzero_ps
#define _mm512_loadu_si512 emu512::loadu_si512
#define _mm512_set1_epi32 emu512::set1_epi32
#define _mm512_set1_ps emu512::set1_ps
#define _mm512_dpbusd_epi32 emu512::dpbusd_epi32
#define _mm512_maskz_loadu_epi32 emu512::maskz_loadu_epi32
#define _mm512_maskz_loadu_ps emu512::maskz_loadu_ps
#define _mm512_mask_storeu_ps emu512::mask_storeu_ps
#define _mm512_storeu_ps emu512::storeu_ps
#define _mm512_loadu_ps emu512::loadu_ps
#define _mm512_max_ps emu512::max_ps
#define _mm512_reduce_max_ps emu512::reduce_max_ps
#define _mm512_add_ps emu512::add_ps
#define _mm512_mul_ps emu512::mul_ps
#define _mm512_fmadd_ps emu512::fmadd_ps
#define _mm512_sub_epi32 emu512::sub_epi32
#define _mm512_cvtepi32_ps emu512::cvtepi32_ps
#define _mm512_cvtph_ps emu512::cvtph_ps
#define _mm512_mask_cmp_ps_mask emu512::mask_cmp_ps_mask
#define _mm512_sub_ps emu512::sub_ps
#define _mm512_abs_ps emu512::abs_ps
#define _mm512_mask_add_ps emu512::mask_add_ps
#define _mm512_mask_sub_ps emu512::mask_sub_ps
#define _mm512_fnmadd_ps emu512::fnmadd_ps
#define _mm512_reduce_add_ps emu512::reduce_add_ps
#define _mm512_reduce_add_epi32 emu512::reduce_add_epi32
#define _mm512_scalef_ps emu512::scalef_ps
#define _mm512_roundscale_ps emu512::roundscale_ps
#define _mm512_rcp14_ps emu512::rcp14_ps
#define _mm512_cmp_ps_mask emu512::cmp_ps_mask
#define _mm512_cvtps_epi32 emu512::cvtps_epi32
#define _mm512_cvtepi32_epi8 emu512::cvtepi32_epi8
#define _mm512_inserti32x4 emu512::inserti32x4
#define _mm512_add_epi32 emu512::add_epi32
#define _mm512_mullo_epi32 emu512::mullo_epi32
#define _mm512_setr_epi32 emu512::setr_epi32
#define _mm512_i32scatter_epi32 emu512::i32scatter_epi32
#define _mm512_mask_i32gather_ps emu512::mask_i32gather_ps
#define _mm512_cvtps_ph emu512::cvtps_ph
#define _mm_mask_storeu_epi8 emu512::mask_storeu_epi8_128
// kernels.h: take the AVX-512 kernels although the compiler targets a CPU without AVX-512.
#define PODBRIEF_AVX512 1
