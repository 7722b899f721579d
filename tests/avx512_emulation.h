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
// kernels.h: take the AVX-512 kernels although the compiler targets a CPU without AVX-512.
#define PODBRIEF_AVX512 1
