/* Conversions between 16-bit floats (IEEE half, bfloat16) and float.
 * Exact: every half and bfloat16 value is representable as a float. */
#ifndef SL_COMMON_HALF_H
#define SL_COMMON_HALF_H

#include <stdint.h>
#include <string.h>

static inline float sl_bits_to_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint32_t sl_f32_to_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* IEEE 754 binary16 -> binary32, including subnormals, infinities and NaN. */
static inline float sl_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0x1f)
        return sl_bits_to_f32(sign | 0x7f800000u | (mant << 13));
    if (exp == 0) {
        if (mant == 0)
            return sl_bits_to_f32(sign);
        /* subnormal: value = mant * 2^-24 */
        float v = (float)mant * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return sl_bits_to_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

/* binary32 -> binary16 with round-to-nearest-even; overflow gives infinity. */
static inline uint16_t sl_f32_to_f16(float f)
{
    uint32_t x = sl_f32_to_bits(f);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
    if (ax >= 0x477ff000u) /* rounds to >= 65520: overflow */
        return (uint16_t)(sign | 0x7c00);
    if (ax < 0x38800000u) { /* result is subnormal or zero */
        float v = sl_bits_to_f32(ax) * 16777216.0f; /* scale so 1 ulp = 1 */
        uint32_t m = (uint32_t)v;
        float rem = v - (float)m;
        if (rem > 0.5f || (rem == 0.5f && (m & 1)))
            m++;
        return (uint16_t)(sign | m);
    }
    uint32_t mant = ax & 0x7fffff;
    uint32_t exp = (ax >> 23) - 112;
    uint32_t h = (exp << 10) | (mant >> 13);
    uint32_t rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1)))
        h++;
    return (uint16_t)(sign | h);
}

static inline float sl_bf16_to_f32(uint16_t b) { return sl_bits_to_f32((uint32_t)b << 16); }

/* float -> bfloat16 with round-to-nearest-even; NaN stays NaN. */
static inline uint16_t sl_f32_to_bf16(float f)
{
    uint32_t x = sl_f32_to_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40);
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

#endif
