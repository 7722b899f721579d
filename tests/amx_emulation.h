// The AMX tile intrinsics app/asr/native/kernels.h uses, in plain C++, so that its AMX path can be built and checked
// on a CPU without AMX (tests/test_asr_native_encoder.py; g++ -include this file, with tests/avx512_emulation.h too
// where the CPU has no AVX-512). Slow and exact: tiles as the instruction set reference defines them, one set per
// thread like the real registers. Only the operations kernels.h calls.
#pragma once
#include <immintrin.h>  // first, so that its own definitions of these names are in place before the macros below

#include <cstdint>
#include <cstring>

namespace emuamx {

struct Tile {
  int rows = 0, colsb = 0;
  uint8_t bytes[16][64] = {};
};
inline thread_local Tile tmm[8];

// ldtilecfg: palette byte 0, bytes per row (uint16) from byte 16, rows (uint8) from byte 48.
inline void loadconfig(const void* config) {
  const uint8_t* c = static_cast<const uint8_t*>(config);
  for (int t = 0; t < 8; ++t) {
    uint16_t colsb;
    std::memcpy(&colsb, c + 16 + 2 * t, 2);
    tmm[t].rows = c[48 + t], tmm[t].colsb = colsb;
  }
}
inline void release() {
  for (Tile& t : tmm) t = Tile();
}
inline void loadd(int t, const void* base, long stride) {
  for (int r = 0; r < tmm[t].rows; ++r) std::memcpy(tmm[t].bytes[r], static_cast<const char*>(base) + r * stride, tmm[t].colsb);
}
inline void stored(int t, void* base, long stride) {
  for (int r = 0; r < tmm[t].rows; ++r) std::memcpy(static_cast<char*>(base) + r * stride, tmm[t].bytes[r], tmm[t].colsb);
}
inline void zero(int t) { std::memset(tmm[t].bytes, 0, sizeof tmm[t].bytes); }
// tdpbusd: C[m][n] (int32) += sum over k of A[m][4k + i] (uint8) * B[k][4n + i] (int8), i = 0..3.
inline void dpbusd(int c, int a, int b) {
  Tile &C = tmm[c], &A = tmm[a], &B = tmm[b];
  for (int m = 0; m < C.rows; ++m)
    for (int n = 0; n < C.colsb / 4; ++n) {
      int32_t acc;
      std::memcpy(&acc, &C.bytes[m][4 * n], 4);
      for (int k = 0; k < A.colsb / 4; ++k)
        for (int i = 0; i < 4; ++i) acc += (int32_t)A.bytes[m][4 * k + i] * (int32_t)(int8_t)B.bytes[k][4 * n + i];
      std::memcpy(&C.bytes[m][4 * n], &acc, 4);
    }
}

}  // namespace emuamx

#undef _tile_loadd
#undef _tile_stored
#undef _tile_zero
#undef _tile_dpbusd
#define _tile_loadconfig emuamx::loadconfig
#define _tile_release emuamx::release
#define _tile_loadd(t, base, stride) emuamx::loadd(t, base, stride)
#define _tile_stored(t, base, stride) emuamx::stored(t, base, stride)
#define _tile_zero(t) emuamx::zero(t)
#define _tile_dpbusd(c, a, b) emuamx::dpbusd(c, a, b)
// kernels.h: take the AMX path although the compiler targets a CPU without AMX (and never ask Linux for it).
#define PODBRIEF_AMX_EMULATION 1
