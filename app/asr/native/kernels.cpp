// The library's entry points that are neither the decoder's nor the encoder's (kernels.h).
#include "kernels.h"

extern "C" {

// Which int8 kernels this build has: "avx512-vnni" or "avx2".
const char* kernels() { return kKernels; }

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
// comp: 128 * the row sums (the AVX-512 kernel's uint8 shift).
void pack(const int8_t* w, int n, int k, int8_t* out, int32_t* comp) { pack_weights(w, n, k, out, comp); }

}  // extern "C"
