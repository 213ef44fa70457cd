/* Tensor type table; see dtype.h. Sizes are the GGUF block layouts. */
#include "model/dtype.h"

#include <stddef.h>

static const sl_dtype_info k_types[SL_DTYPE_COUNT] = {
    [SL_F32] = {"F32", 1, 4, true},
    [SL_F16] = {"F16", 1, 2, true},
    [SL_Q4_0] = {"Q4_0", 32, 18, true},
    [SL_Q4_1] = {"Q4_1", 32, 20, true},
    [SL_Q5_0] = {"Q5_0", 32, 22, true},
    [SL_Q5_1] = {"Q5_1", 32, 24, true},
    [SL_Q8_0] = {"Q8_0", 32, 34, true},
    [SL_Q8_1] = {"Q8_1", 32, 36, false},
    [SL_Q2_K] = {"Q2_K", 256, 84, true},
    [SL_Q3_K] = {"Q3_K", 256, 110, true},
    [SL_Q4_K] = {"Q4_K", 256, 144, true},
    [SL_Q5_K] = {"Q5_K", 256, 176, true},
    [SL_Q6_K] = {"Q6_K", 256, 210, true},
    [SL_Q8_K] = {"Q8_K", 256, 292, false},
    [SL_IQ2_XXS] = {"IQ2_XXS", 256, 66, false},
    [SL_IQ2_XS] = {"IQ2_XS", 256, 74, false},
    [SL_IQ3_XXS] = {"IQ3_XXS", 256, 98, false},
    [SL_IQ1_S] = {"IQ1_S", 256, 50, false},
    [SL_IQ4_NL] = {"IQ4_NL", 32, 18, false},
    [SL_IQ3_S] = {"IQ3_S", 256, 110, false},
    [SL_IQ2_S] = {"IQ2_S", 256, 82, false},
    [SL_IQ4_XS] = {"IQ4_XS", 256, 136, false},
    [SL_I8] = {"I8", 1, 1, false},
    [SL_I16] = {"I16", 1, 2, false},
    [SL_I32] = {"I32", 1, 4, false},
    [SL_I64] = {"I64", 1, 8, false},
    [SL_F64] = {"F64", 1, 8, false},
    [SL_IQ1_M] = {"IQ1_M", 256, 56, false},
    [SL_BF16] = {"BF16", 1, 2, true},
    [SL_TQ1_0] = {"TQ1_0", 256, 54, false},
    [SL_TQ2_0] = {"TQ2_0", 256, 66, false},
    [SL_MXFP4] = {"MXFP4", 32, 17, false},
    /* sluice's grouped low-bit types: 4 bytes of f16 scale and zero point,
     * then G * bits / 8 bytes of quants (compute/lowbit.h) */
    [SL_G2_128] = {"G2_128", 128, 36, true},
    [SL_G3_128] = {"G3_128", 128, 52, true},
    [SL_G4_128] = {"G4_128", 128, 68, true},
    [SL_G2_64] = {"G2_64", 64, 20, true},
    [SL_G3_64] = {"G3_64", 64, 28, true},
    [SL_G4_64] = {"G4_64", 64, 36, true},
    [SL_G2_32] = {"G2_32", 32, 12, true},
    [SL_G3_32] = {"G3_32", 32, 16, true},
    [SL_G4_32] = {"G4_32", 32, 20, true},
};

const sl_dtype_info *sl_dtype_get(uint32_t t)
{
    if (t >= SL_DTYPE_COUNT || k_types[t].name == NULL)
        return NULL;
    return &k_types[t];
}

const char *sl_dtype_name(uint32_t t)
{
    const sl_dtype_info *info = sl_dtype_get(t);
    return info ? info->name : "unknown";
}

uint64_t sl_dtype_bytes(uint32_t t, uint64_t n)
{
    const sl_dtype_info *info = sl_dtype_get(t);
    if (!info || n % info->block != 0)
        return 0;
    uint64_t blocks = n / info->block;
    if (blocks > UINT64_MAX / info->block_bytes)
        return 0;
    return blocks * info->block_bytes;
}
