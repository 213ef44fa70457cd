/* Tensor type choices and conversions for re-quantizing a model; see
 * requant.h for the rules. */
#include "compute/requant.h"

#include <math.h>
#include <string.h>

#include "common/log.h"
#include "compute/quant.h"
#include "model/dtype.h"

bool sl_requant_can_encode(uint32_t t)
{
    return sl_quant_from_float(t) != NULL && sl_quant_to_float(t) != NULL;
}

/* Bits per weight of a type (block bytes * 8 / block). */
static double bpw(uint32_t t)
{
    const sl_dtype_info *info = sl_dtype_get(t);
    SL_ASSERT(info != NULL);
    return (double)info->block_bytes * 8.0 / (double)info->block;
}

static bool fits(uint32_t t, int64_t ne0)
{
    const sl_dtype_info *info = sl_dtype_get(t);
    return info && ne0 > 0 && ne0 % info->block == 0;
}

/* `want`, or the nearest type that divides rows of ne0 into whole blocks. */
static uint32_t fit_row(uint32_t want, int64_t ne0)
{
    const int bits = sl_lowbit_bits(want);
    if (bits) {
        const uint32_t t = sl_lowbit_type_for_row(bits, ne0, sl_lowbit_group(want));
        if (t != UINT32_MAX)
            return t;
    }
    if (fits(want, ne0))
        return want;
    /* The legacy type of a K-quant's kind: asymmetric 4-bit, 8-bit. */
    const uint32_t kin = want == SL_Q4_K ? SL_Q4_1 : want == SL_Q6_K ? SL_Q8_0 : UINT32_MAX;
    if (kin != UINT32_MAX && fits(kin, ne0))
        return kin;
    if (bpw(want) < 16.0 && fits(SL_Q8_0, ne0))
        return SL_Q8_0;
    return SL_F16;
}

static bool name_is(const char *name, const char *want)
{
    return strcmp(name, want) == 0;
}

uint32_t sl_requant_choose(const sl_requant_opts *o, const char *name, uint32_t n_dims, const int64_t *ne,
                           uint32_t src_type, bool tied)
{
    SL_ASSERT(sl_requant_can_encode(o->type));
    SL_ASSERT(o->output_type == SL_REQUANT_DEFAULT || sl_requant_can_encode(o->output_type));
    SL_ASSERT(o->embd_type == SL_REQUANT_DEFAULT || sl_requant_can_encode(o->embd_type));
    int64_t rows = 1;
    for (uint32_t d = 1; d < n_dims; d++)
        rows *= ne[d];
    if (n_dims < 2 || rows <= 1 || strstr(name, "ffn_gate_inp") != NULL)
        return src_type;
    uint32_t want = o->type;
    const bool output = name_is(name, "output.weight") || (tied && name_is(name, "token_embd.weight"));
    if (output)
        want = o->output_type != SL_REQUANT_DEFAULT ? o->output_type : bpw(o->type) < bpw(SL_Q8_0) ? SL_Q8_0 : o->type;
    else if (name_is(name, "token_embd.weight") && o->embd_type != SL_REQUANT_DEFAULT)
        want = o->embd_type;
    return fit_row(want, ne[0]);
}

int sl_requant_convert(uint32_t src_type, const void *src, uint32_t dst_type, void *dst, int64_t n,
                       sl_lowbit_fit fit, float *tmp)
{
    if (src_type == dst_type) {
        memcpy(dst, src, (size_t)sl_dtype_bytes(src_type, (uint64_t)n));
        return 0;
    }
    const sl_to_float_fn to_float = sl_quant_to_float(src_type);
    SL_ASSERT(to_float != NULL && sl_requant_can_encode(dst_type));
    to_float(src, tmp, n);
    /* Every encoded type but F32 and BF16 keeps f16 values or scales. */
    const bool f16 = dst_type != SL_F32 && dst_type != SL_BF16;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(tmp[i]) || (f16 && fabsf(tmp[i]) >= 65504.0f)) {
            SL_ERROR("element %lld is %g: cannot encode it as %s", (long long)i, (double)tmp[i],
                     sl_dtype_name(dst_type));
            return -SL_ERANGE;
        }
    }
    if (sl_lowbit_bits(dst_type))
        sl_lowbit_quantize(dst_type, fit, tmp, dst, n);
    else
        sl_quant_from_float(dst_type)(tmp, dst, n);
    return 0;
}
