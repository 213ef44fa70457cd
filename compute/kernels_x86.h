/* The x86-64 kernel tables (x86-64 builds only; kernels.c lists them in its
 * variants under #if defined(__x86_64__)).
 *
 * Each lives in its own file compiled with that file's target flags
 * (CMakeLists.txt), so the rest of the build stays baseline x86-64 and the
 * tables are only entered after their probe said yes:
 *   avx2:   AVX2, FMA and F16C (Haswell, Zen 1 and later);
 *   avx512: AVX-512 F, BW, DQ, VL, VNNI and VBMI, plus F16C and FMA (Ice
 *           Lake, Zen 4 and later). CPUs with AVX-512 but without VNNI or
 *           VBMI (Skylake-X, Cascade Lake) use avx2.
 * Both start from the generic table and replace what they specialise. */
#ifndef SL_COMPUTE_KERNELS_X86_H
#define SL_COMPUTE_KERNELS_X86_H

#include "compute/kernels.h"

/* The avx2 table, built on the first call (thread-safe). Static; never NULL.
 * Only call it once kernels.c's probe (compiled for baseline x86-64) said
 * the CPU and OS support the features above. */
const sl_kernels *sl_kernels_avx2(void);

/* The same for the avx512 table. */
const sl_kernels *sl_kernels_avx512(void);

#endif
