/* The Arm NEON kernel table (aarch64 only; the build compiles
 * kernels_neon.c only for that architecture, and kernels.c lists it in its
 * variants under #if defined(__aarch64__); SL_CPU=neon forces it).
 *
 * Advanced SIMD is part of every aarch64 CPU, so the table always runs. It
 * specialises every entry of kernels.h: to_float and dot of every supported
 * type, the activation quantizers, the integer tiles of every quantized type
 * and the float vector operations; act[] stays the generic choice. The
 * integer tiles use the dot-product extension (SDOT, optional from Armv8.2,
 * FEAT_DotProd) when the kernel reports it in AT_HWCAP, and widening
 * multiplies otherwise; both give the same bits. */
#ifndef SL_COMPUTE_KERNELS_NEON_H
#define SL_COMPUTE_KERNELS_NEON_H

#include <stdbool.h>

#include "compute/kernels.h"

/* The NEON table, built on the first call (thread-safe). Static; never
 * NULL. */
const sl_kernels *sl_kernels_neon(void);

/* Whether sl_kernels_neon()'s integer tiles use SDOT: the running CPU has
 * the dot-product extension (HWCAP_ASIMDDP) and this build compiled those
 * tiles (GCC always does; see kernels_neon.c). Never fails, never blocks. */
bool sl_kernels_neon_uses_sdot(void);

#endif
