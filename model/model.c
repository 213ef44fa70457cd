/* Model description from GGUF metadata and tensor directory; see model.h.
 *
 * Everything the forward pass relies on is checked here, once: the
 * architecture, every hyper-parameter's range, every tensor's presence,
 * shape, type and alignment, and that no tensor is left unexplained (a
 * tensor we do not know means a model variant we would compute wrongly). */
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "compute/kernels.h"

/* Bound on every dimension read from metadata. Far above real models, and
 * low enough that products of two or three of them cannot overflow 64 bits. */
#define MAX_DIM (1u << 24)

/* One of a layer's 3-D expert tensors: expert e's slice is the `slice`
 * bytes at offset + e * slice. */
typedef struct expert_src {
    uint64_t offset;
    uint64_t slice;
    uint32_t type;
    int64_t ne0, ne1;
} expert_src;

struct sl_model {
    sl_hparams hp;
    const sl_gguf *g;
    sl_gguf *owned; /* g when sl_model_open opened it */
    bool tied_output;
    sl_unit global;
    sl_unit head;      /* the global tensors the output step reads */
    sl_unit *layers;   /* n_layer */
    expert_src *exps;  /* n_layer * SL_EW_COUNT when n_expert > 0, else NULL */
};

typedef struct arch_info {
    const char *name;
    sl_arch arch;
    sl_rope_type rope;
    /* The reference toolchain (and the models' own configuration defaults)
     * use 10000 when a file has no rope.freq_base; released Qwen files
     * always carry theirs (1e6). */
    float default_freq_base;
    uint32_t required; /* bit per sl_layer_role */
    uint32_t allowed;  /* required plus the optional roles */
    /* Experts: 0 never (a file with expert_count is refused), 1 when the
     * file has expert_count, 2 always. With experts, the dense FFN roles
     * give way to the router (and, where allowed, the shared expert). */
    int experts;
    bool norm_topk; /* default of expert_weights_norm */
} arch_info;

#define BIT(r) (1u << (r))
#define ATTN_ROLES (BIT(SL_LW_ATTN_NORM) | BIT(SL_LW_Q) | BIT(SL_LW_K) | BIT(SL_LW_V) | BIT(SL_LW_O))
#define DENSE_FFN (BIT(SL_LW_GATE) | BIT(SL_LW_UP) | BIT(SL_LW_DOWN))
#define BASE_ROLES (ATTN_ROLES | BIT(SL_LW_FFN_NORM) | DENSE_FFN)
#define QKV_BIAS (BIT(SL_LW_Q_BIAS) | BIT(SL_LW_K_BIAS) | BIT(SL_LW_V_BIAS))
#define QK_NORM (BIT(SL_LW_Q_NORM) | BIT(SL_LW_K_NORM))
#define SHEXP_ROLES                                                                                          \
    (BIT(SL_LW_GATE_INP_SHEXP) | BIT(SL_LW_GATE_SHEXP) | BIT(SL_LW_UP_SHEXP) | BIT(SL_LW_DOWN_SHEXP))

static const arch_info k_archs[] = {
    /* Some llama-architecture conversions carry attention biases. */
    {"llama", SL_ARCH_LLAMA, SL_ROPE_NORM, 10000.0f, BASE_ROLES, BASE_ROLES | QKV_BIAS | BIT(SL_LW_O_BIAS), 1, true},
    {"qwen2", SL_ARCH_QWEN2, SL_ROPE_NEOX, 10000.0f, BASE_ROLES | QKV_BIAS, BASE_ROLES | QKV_BIAS, 0, false},
    {"qwen3", SL_ARCH_QWEN3, SL_ROPE_NEOX, 10000.0f, BASE_ROLES | QK_NORM, BASE_ROLES | QK_NORM, 0, false},
    /* Qwen1.5-MoE style: qwen2 attention, a shared expert beside the routed
     * ones (present in every released file, optional here). */
    {"qwen2moe", SL_ARCH_QWEN2MOE, SL_ROPE_NEOX, 10000.0f, BASE_ROLES | QKV_BIAS,
     BASE_ROLES | QKV_BIAS | SHEXP_ROLES, 2, false},
    {"qwen3moe", SL_ARCH_QWEN3MOE, SL_ROPE_NEOX, 10000.0f, BASE_ROLES | QK_NORM, BASE_ROLES | QK_NORM, 2, true},
};

/* Dimensions a tensor shape is made of. */
enum dim { D_1, D_EMBD, D_FF, D_HEAD_K, D_Q, D_KV_K, D_KV_V, D_ATT_OUT, D_EXPERT, D_FF_EXP, D_FF_SHEXP };

/* Each layer tensor: GGUF name "blk.<N>.<suffix>" and shape [ne0, ne1]. */
static const struct {
    const char *suffix;
    enum dim ne0, ne1;
} k_layer_tensors[SL_LW_COUNT] = {
    [SL_LW_ATTN_NORM] = {"attn_norm.weight", D_EMBD, D_1},
    [SL_LW_Q] = {"attn_q.weight", D_EMBD, D_Q},
    [SL_LW_K] = {"attn_k.weight", D_EMBD, D_KV_K},
    [SL_LW_V] = {"attn_v.weight", D_EMBD, D_KV_V},
    [SL_LW_O] = {"attn_output.weight", D_ATT_OUT, D_EMBD},
    [SL_LW_Q_BIAS] = {"attn_q.bias", D_Q, D_1},
    [SL_LW_K_BIAS] = {"attn_k.bias", D_KV_K, D_1},
    [SL_LW_V_BIAS] = {"attn_v.bias", D_KV_V, D_1},
    [SL_LW_O_BIAS] = {"attn_output.bias", D_EMBD, D_1},
    [SL_LW_Q_NORM] = {"attn_q_norm.weight", D_HEAD_K, D_1},
    [SL_LW_K_NORM] = {"attn_k_norm.weight", D_HEAD_K, D_1},
    [SL_LW_FFN_NORM] = {"ffn_norm.weight", D_EMBD, D_1},
    [SL_LW_GATE] = {"ffn_gate.weight", D_EMBD, D_FF},
    [SL_LW_UP] = {"ffn_up.weight", D_EMBD, D_FF},
    [SL_LW_DOWN] = {"ffn_down.weight", D_FF, D_EMBD},
    [SL_LW_GATE_INP] = {"ffn_gate_inp.weight", D_EMBD, D_EXPERT},
    [SL_LW_GATE_INP_SHEXP] = {"ffn_gate_inp_shexp.weight", D_EMBD, D_1},
    [SL_LW_GATE_SHEXP] = {"ffn_gate_shexp.weight", D_EMBD, D_FF_SHEXP},
    [SL_LW_UP_SHEXP] = {"ffn_up_shexp.weight", D_EMBD, D_FF_SHEXP},
    [SL_LW_DOWN_SHEXP] = {"ffn_down_shexp.weight", D_FF_SHEXP, D_EMBD},
};

/* The 3-D expert tensors "blk.<N>.<suffix>": [ne0, ne1, n_expert]. */
static const struct {
    const char *suffix;
    enum dim ne0, ne1;
} k_expert_tensors[SL_EW_COUNT] = {
    [SL_EW_GATE] = {"ffn_gate_exps.weight", D_EMBD, D_FF_EXP},
    [SL_EW_UP] = {"ffn_up_exps.weight", D_EMBD, D_FF_EXP},
    [SL_EW_DOWN] = {"ffn_down_exps.weight", D_FF_EXP, D_EMBD},
};

static const char *const k_global_name[SL_GW_COUNT] = {
    [SL_GW_TOKEN_EMBD] = "token_embd.weight",
    [SL_GW_OUTPUT_NORM] = "output_norm.weight",
    [SL_GW_OUTPUT] = "output.weight",
};

#define ROPE_FREQS_NAME "rope_freqs.weight"

const char *sl_arch_name(sl_arch a)
{
    for (size_t i = 0; i < sizeof k_archs / sizeof k_archs[0]; i++)
        if (k_archs[i].arch == a)
            return k_archs[i].name;
    return "unknown";
}

/* ---- metadata ------------------------------------------------------------ */

/* Reads "<arch>.<key>" as u32. A missing key gives `def` when optional,
 * else -SL_ENOTFOUND; a value that is not a fitting integer (an array of
 * per-layer values, a negative number) gives -SL_ETYPE. Logs on error. */
static int get_u32(const sl_gguf *g, const char *arch, const char *key, bool required, uint32_t def,
                   uint32_t *out)
{
    char full[160];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    int rc = sl_gguf_get_u32(g, full, out);
    if (rc == -SL_ENOTFOUND && !required) {
        *out = def;
        return 0;
    }
    if (rc == -SL_ENOTFOUND)
        SL_ERROR("required key %s is missing", full);
    else if (rc < 0)
        SL_ERROR("key %s is not a single unsigned 32-bit integer (per-layer arrays are not supported)", full);
    return rc;
}

/* As get_u32 for floats; optional keys only. */
static int get_f32(const sl_gguf *g, const char *arch, const char *key, float def, float *out)
{
    char full[160];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    int rc = sl_gguf_get_f32(g, full, out);
    if (rc == -SL_ENOTFOUND) {
        *out = def;
        return 0;
    }
    if (rc < 0)
        SL_ERROR("key %s is not a number", full);
    return rc;
}

static int check_dim(const char *what, uint32_t v, uint32_t lo, uint32_t hi)
{
    if (v < lo || v > hi) {
        SL_ERROR("%s = %u is outside [%u, %u]", what, v, lo, hi);
        return -SL_ERANGE;
    }
    return 0;
}

static int read_rope_scaling(const sl_gguf *g, const char *arch, sl_hparams *hp)
{
    char key[160];
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    sl_str type = {"linear", 6};
    int rc = sl_gguf_get_str(g, key, &type);
    if (rc < 0 && rc != -SL_ENOTFOUND) {
        SL_ERROR("key %s is not a string", key);
        return rc;
    }
    hp->rope_freq_scale = 1.0f;
    if (sl_str_eq(type, "none"))
        return 0;
    if (!sl_str_eq(type, "linear")) {
        SL_ERROR("rope scaling type '%.*s' is not supported (only linear)", (int)type.len, type.ptr);
        return -SL_EUNSUPPORTED;
    }
    /* Absent type means linear, as in the reference toolchain; the factor
     * has had two key names over the format's history. */
    float factor = 0;
    if ((rc = get_f32(g, arch, "rope.scaling.factor", 0.0f, &factor)) < 0)
        return rc;
    if (factor == 0.0f && (rc = get_f32(g, arch, "rope.scale_linear", 0.0f, &factor)) < 0)
        return rc;
    if (factor == 0.0f)
        return 0;
    if (!(factor > 0.0f) || !isfinite(factor)) {
        SL_ERROR("%s.rope.scaling.factor = %g must be positive", arch, (double)factor);
        return -SL_ERANGE;
    }
    hp->rope_freq_scale = 1.0f / factor;
    return 0;
}

/* The mixture-of-experts keys: counts, widths and the routing variant. */
static int read_experts(const sl_gguf *g, const arch_info *ai, sl_hparams *hp)
{
    const char *a = ai->name;
    int rc;
    if ((rc = check_dim("expert_count", hp->n_expert, 2, SL_MAX_EXPERTS)) < 0)
        return rc;
    if ((rc = get_u32(g, a, "expert_used_count", true, 0, &hp->n_expert_used)) < 0)
        return rc;
    uint32_t max_used = hp->n_expert < SL_MAX_EXPERTS_USED ? hp->n_expert : SL_MAX_EXPERTS_USED;
    if ((rc = check_dim("expert_used_count", hp->n_expert_used, 1, max_used)) < 0)
        return rc;
    /* The dense width: the experts' own when the file gives no
     * expert_feed_forward_length (Mixtral), and the shared expert's default
     * (qwen2moe files carry expert_shared_feed_forward_length). */
    uint32_t dense = 0;
    if ((rc = get_u32(g, a, "feed_forward_length", false, 0, &dense)) < 0 ||
        (rc = get_u32(g, a, "expert_feed_forward_length", dense == 0, dense, &hp->n_ff_exp)) < 0 ||
        (rc = get_u32(g, a, "expert_shared_feed_forward_length", false, dense, &hp->n_ff_shexp)) < 0)
        return rc;
    if ((rc = check_dim("expert_feed_forward_length", hp->n_ff_exp, 1, MAX_DIM)) < 0 ||
        (rc = check_dim("expert_shared_feed_forward_length", hp->n_ff_shexp, 0, MAX_DIM)) < 0)
        return rc;
    hp->n_ff = hp->n_ff_exp > hp->n_ff_shexp ? hp->n_ff_exp : hp->n_ff_shexp;

    char key[160];
    snprintf(key, sizeof key, "%s.expert_weights_norm", a);
    hp->expert_weights_norm = ai->norm_topk;
    rc = sl_gguf_get_bool(g, key, &hp->expert_weights_norm);
    if (rc < 0 && rc != -SL_ENOTFOUND) {
        SL_ERROR("key %s is not a boolean", key);
        return rc;
    }
    /* Variants of routing these architectures do not use: refuse rather
     * than route differently from what the file was trained with. */
    uint32_t gating = 1;
    if ((rc = get_u32(g, a, "expert_gating_func", false, 1, &gating)) < 0)
        return rc;
    if (gating != 1) {
        SL_ERROR("%s.expert_gating_func = %u is not supported (only 1, softmax)", a, gating);
        return -SL_EUNSUPPORTED;
    }
    float scale = 1.0f;
    if ((rc = get_f32(g, a, "expert_weights_scale", 1.0f, &scale)) < 0)
        return rc;
    if (scale != 1.0f) {
        SL_ERROR("%s.expert_weights_scale = %g is not supported (only 1)", a, (double)scale);
        return -SL_EUNSUPPORTED;
    }
    return 0;
}

static int read_hparams(const sl_gguf *g, const arch_info *ai, sl_hparams *hp)
{
    const char *a = ai->name;
    int rc;
    memset(hp, 0, sizeof *hp);
    hp->arch = ai->arch;
    hp->rope_type = ai->rope;

    if ((rc = get_u32(g, a, "expert_count", ai->experts == 2, 0, &hp->n_expert)) < 0)
        return rc;
    if (hp->n_expert > 0 && ai->experts == 0) {
        SL_ERROR("%s model with expert_count = %u: experts are supported in llama, qwen2moe and qwen3moe files",
                 a, hp->n_expert);
        return -SL_EUNSUPPORTED;
    }
    if (hp->n_expert > 0 && (rc = read_experts(g, ai, hp)) < 0)
        return rc;

    if ((rc = get_u32(g, a, "context_length", true, 0, &hp->n_ctx_train)) < 0 ||
        (rc = get_u32(g, a, "embedding_length", true, 0, &hp->n_embd)) < 0 ||
        (rc = get_u32(g, a, "block_count", true, 0, &hp->n_layer)) < 0 ||
        (rc = get_u32(g, a, "attention.head_count", true, 0, &hp->n_head)) < 0)
        return rc;
    if (hp->n_expert == 0 && (rc = get_u32(g, a, "feed_forward_length", true, 0, &hp->n_ff)) < 0)
        return rc;
    if ((rc = check_dim("context_length", hp->n_ctx_train, 1, MAX_DIM)) < 0 ||
        (rc = check_dim("embedding_length", hp->n_embd, 1, MAX_DIM)) < 0 ||
        (rc = check_dim("block_count", hp->n_layer, 1, 65536)) < 0 ||
        (rc = check_dim(hp->n_expert ? "expert FFN width" : "feed_forward_length", hp->n_ff, 1, MAX_DIM)) < 0 ||
        (rc = check_dim("attention.head_count", hp->n_head, 1, 65536)) < 0)
        return rc;
    if ((rc = get_u32(g, a, "attention.head_count_kv", false, hp->n_head, &hp->n_head_kv)) < 0)
        return rc;
    if (hp->n_head_kv == 0 || hp->n_head % hp->n_head_kv != 0) {
        SL_ERROR("attention.head_count = %u is not a multiple of head_count_kv = %u", hp->n_head,
                 hp->n_head_kv);
        return -SL_ERANGE;
    }
    uint32_t def_hd = hp->n_embd % hp->n_head == 0 ? hp->n_embd / hp->n_head : 0;
    if ((rc = get_u32(g, a, "attention.key_length", false, def_hd, &hp->head_dim_k)) < 0 ||
        (rc = get_u32(g, a, "attention.value_length", false, def_hd, &hp->head_dim_v)) < 0)
        return rc;
    if (hp->head_dim_k == 0 || hp->head_dim_v == 0) {
        SL_ERROR("embedding_length = %u is not a multiple of head_count = %u and no key_length is given",
                 hp->n_embd, hp->n_head);
        return -SL_ERANGE;
    }
    if ((rc = check_dim("attention.key_length", hp->head_dim_k, 2, SL_MAX_HEAD_DIM)) < 0 ||
        (rc = check_dim("attention.value_length", hp->head_dim_v, 1, SL_MAX_HEAD_DIM)) < 0)
        return rc;

    if ((rc = get_u32(g, a, "rope.dimension_count", false, hp->head_dim_k, &hp->n_rot)) < 0)
        return rc;
    if (hp->n_rot < 2 || hp->n_rot > hp->head_dim_k || hp->n_rot % 2 != 0) {
        SL_ERROR("rope.dimension_count = %u must be even and in [2, key_length = %u]", hp->n_rot,
                 hp->head_dim_k);
        return -SL_ERANGE;
    }

    char key[160];
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", a);
    if ((rc = sl_gguf_get_f32(g, key, &hp->rms_eps)) < 0) {
        SL_ERROR("required key %s is %s", key, rc == -SL_ENOTFOUND ? "missing" : "not a number");
        return rc;
    }
    if (!(hp->rms_eps > 0.0f) || !isfinite(hp->rms_eps)) {
        SL_ERROR("%s = %g must be positive", key, (double)hp->rms_eps);
        return -SL_ERANGE;
    }

    if ((rc = get_f32(g, a, "rope.freq_base", ai->default_freq_base, &hp->rope_freq_base)) < 0)
        return rc;
    if (!(hp->rope_freq_base > 1.0f) || !isfinite(hp->rope_freq_base)) {
        SL_ERROR("%s.rope.freq_base = %g must be finite and > 1", a, (double)hp->rope_freq_base);
        return -SL_ERANGE;
    }
    if ((rc = read_rope_scaling(g, a, hp)) < 0)
        return rc;
    for (uint32_t i = 0; i < hp->n_rot / 2; i++)
        hp->rope_inv_freq[i] = (float)pow((double)hp->rope_freq_base, -2.0 * i / (double)hp->n_rot);

    /* The vocabulary size is that of the token list when the file has one
     * (the embedding must then match it), else the embedding's. */
    sl_gguf_arr toks;
    rc = sl_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks);
    if (rc == 0) {
        if (toks.count == 0 || toks.count > MAX_DIM) {
            SL_ERROR("tokenizer.ggml.tokens has %llu entries", (unsigned long long)toks.count);
            return -SL_ERANGE;
        }
        hp->n_vocab = (uint32_t)toks.count;
    } else if (rc != -SL_ENOTFOUND) {
        SL_ERROR("tokenizer.ggml.tokens is not an array");
        return rc;
    } else {
        const sl_gguf_tensor *te = sl_gguf_tensor_find(g, k_global_name[SL_GW_TOKEN_EMBD]);
        if (!te) {
            SL_ERROR("required tensor %s is missing", k_global_name[SL_GW_TOKEN_EMBD]);
            return -SL_ENOTFOUND;
        }
        if (te->ne[1] < 1 || te->ne[1] > (int64_t)MAX_DIM) {
            SL_ERROR("%s has %lld rows", k_global_name[SL_GW_TOKEN_EMBD], (long long)te->ne[1]);
            return -SL_ERANGE;
        }
        hp->n_vocab = (uint32_t)te->ne[1];
    }
    return 0;
}

/* ---- tensors ------------------------------------------------------------- */

static int64_t dim_value(const sl_hparams *hp, enum dim d)
{
    switch (d) {
    case D_1:
        return 1;
    case D_EMBD:
        return hp->n_embd;
    case D_FF:
        return hp->n_ff;
    case D_HEAD_K:
        return hp->head_dim_k;
    case D_Q:
        return (int64_t)hp->n_head * hp->head_dim_k;
    case D_KV_K:
        return (int64_t)hp->n_head_kv * hp->head_dim_k;
    case D_KV_V:
        return (int64_t)hp->n_head_kv * hp->head_dim_v;
    case D_ATT_OUT:
        return (int64_t)hp->n_head * hp->head_dim_v;
    case D_EXPERT:
        return hp->n_expert;
    case D_FF_EXP:
        return hp->n_ff_exp;
    case D_FF_SHEXP:
        return hp->n_ff_shexp;
    }
    SL_ASSERT(!"unknown dimension");
}

static void layer_shape(const sl_hparams *hp, int role, int64_t ne[4])
{
    ne[0] = dim_value(hp, k_layer_tensors[role].ne0);
    ne[1] = dim_value(hp, k_layer_tensors[role].ne1);
    ne[2] = ne[3] = 1;
}

static void global_shape(const sl_hparams *hp, int role, int64_t ne[4])
{
    ne[0] = hp->n_embd;
    ne[1] = role == SL_GW_OUTPUT_NORM ? 1 : hp->n_vocab;
    ne[2] = ne[3] = 1;
}

/* Checks one tensor against its expected shape and the kernels: vectors
 * (norms, biases) must be F32 because the forward pass reads them as floats;
 * matrices must be of a type with a dequantizer and a dot product. */
static int check_tensor(const sl_gguf_tensor *t, const int64_t want[4], const sl_kernels *kern)
{
    const int nm = (int)t->name.len;
    if (memcmp(t->ne, want, sizeof t->ne) != 0) {
        SL_ERROR("tensor %.*s has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld, %lld, %lld]", nm,
                 t->name.ptr, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                 (long long)t->ne[3], (long long)want[0], (long long)want[1], (long long)want[2],
                 (long long)want[3]);
        return -SL_EFORMAT;
    }
    const sl_dtype_info *info = sl_dtype_get(t->type);
    bool vector = want[1] == 1;
    if (vector ? t->type != SL_F32
               : (!info || !info->supported || !kern->dot[t->type] || !kern->to_float[t->type])) {
        SL_ERROR("tensor %.*s has type %s, which is not supported%s", nm, t->name.ptr, sl_dtype_name(t->type),
                 vector ? " for a vector (norms and biases must be F32)" : "");
        return -SL_EUNSUPPORTED;
    }
    if (sl_dtype_bytes(t->type, (uint64_t)t->ne[0]) == 0) {
        SL_ERROR("tensor %.*s: row of %lld elements is not a whole number of %s blocks", nm, t->name.ptr,
                 (long long)t->ne[0], sl_dtype_name(t->type));
        return -SL_EFORMAT;
    }
    /* Views are read as floats and f16 fields: require 4-byte alignment,
     * which every GGUF writer gives (the format aligns data to >= 8). */
    if (t->offset % 4 != 0) {
        SL_ERROR("tensor %.*s at file offset %llu is not 4-byte aligned", nm, t->name.ptr,
                 (unsigned long long)t->offset);
        return -SL_EFORMAT;
    }
    return 0;
}

static void unit_add(sl_unit *u, uint32_t role, const sl_gguf_tensor *t)
{
    SL_ASSERT(u->n_tensors < SL_UNIT_MAX_TENSORS);
    sl_unit_tensor *ut = &u->tensors[u->n_tensors++];
    ut->role = role;
    ut->type = t->type;
    memcpy(ut->ne, t->ne, sizeof ut->ne);
    ut->offset = t->offset;
    ut->nbytes = t->nbytes;
}

static uint64_t io_down(uint64_t v) { return v / SL_UNIT_IO_ALIGN * SL_UNIT_IO_ALIGN; }
static uint64_t io_up(uint64_t v) { return io_down(v + SL_UNIT_IO_ALIGN - 1); }

/* Sorts the unit's tensors by file offset, groups them into ranges (a gap
 * of more than SL_UNIT_IO_ALIGN starts a new one) and lays out the image. */
static void unit_finish(sl_unit *u)
{
    for (uint32_t i = 1; i < u->n_tensors; i++) {
        sl_unit_tensor key = u->tensors[i];
        uint32_t j = i;
        for (; j > 0 && u->tensors[j - 1].offset > key.offset; j--)
            u->tensors[j] = u->tensors[j - 1];
        u->tensors[j] = key;
    }
    u->payload = 0;
    u->n_ranges = 0;
    for (uint32_t i = 0; i < u->n_tensors; i++) {
        sl_unit_tensor *t = &u->tensors[i];
        const uint64_t end = t->offset + t->nbytes;
        sl_unit_range *r = u->n_ranges ? &u->ranges[u->n_ranges - 1] : NULL;
        if (r && t->offset <= r->offset + r->nbytes + SL_UNIT_IO_ALIGN) {
            if (end > r->offset + r->nbytes)
                r->nbytes = end - r->offset;
        } else {
            SL_ASSERT(u->n_ranges < SL_UNIT_MAX_RANGES);
            u->ranges[u->n_ranges++] = (sl_unit_range){t->offset, t->nbytes, 0};
        }
        t->range = u->n_ranges - 1;
        u->payload += t->nbytes;
    }
    u->nbytes = 0;
    u->image_bytes = 0;
    for (uint32_t r = 0; r < u->n_ranges; r++) {
        sl_unit_range *rg = &u->ranges[r];
        rg->image_offset = u->image_bytes;
        u->image_bytes += io_up(rg->offset + rg->nbytes) - io_down(rg->offset);
        u->nbytes += rg->nbytes;
    }
    u->offset = u->n_ranges ? u->ranges[0].offset : 0;
}

/* Records one of layer il's 3-D expert tensors after checking it. */
static int add_expert_tensor(sl_model *m, uint32_t il, int role, const sl_gguf_tensor *t, const sl_kernels *kern)
{
    const sl_hparams *hp = &m->hp;
    const int64_t want[4] = {dim_value(hp, k_expert_tensors[role].ne0), dim_value(hp, k_expert_tensors[role].ne1),
                             hp->n_expert, 1};
    int rc = check_tensor(t, want, kern);
    if (rc < 0)
        return rc;
    const uint64_t slice = sl_dtype_bytes(t->type, (uint64_t)want[0]) * (uint64_t)want[1];
    /* Each expert is bound on its own: its slice must keep the alignment
     * the views need. */
    if (slice % 4 != 0 || slice * hp->n_expert != t->nbytes) {
        SL_ERROR("tensor %.*s: experts of %llu bytes cannot be bound separately", (int)t->name.len, t->name.ptr,
                 (unsigned long long)slice);
        return -SL_EFORMAT;
    }
    m->exps[(size_t)il * SL_EW_COUNT + (size_t)role] =
        (expert_src){t->offset, slice, t->type, want[0], want[1]};
    return 0;
}

/* Parses "blk.<N>.<suffix>": stores N and the suffix, or returns false. */
static bool parse_layer_name(sl_str name, uint32_t *layer, sl_str *suffix)
{
    if (name.len < 6 || memcmp(name.ptr, "blk.", 4) != 0)
        return false;
    uint64_t i = 4, n = 0;
    for (; i < name.len && name.ptr[i] >= '0' && name.ptr[i] <= '9'; i++) {
        n = n * 10 + (uint64_t)(name.ptr[i] - '0');
        if (n > 0xffffffffu)
            return false;
    }
    if (i == 4 || i >= name.len || name.ptr[i] != '.')
        return false;
    *layer = (uint32_t)n;
    suffix->ptr = name.ptr + i + 1;
    suffix->len = name.len - i - 1;
    return true;
}

/* rope_freqs.weight: per-dimension divisors of the RoPE frequencies. */
static int apply_rope_freqs(const sl_gguf *g, const sl_gguf_tensor *t, sl_hparams *hp)
{
    int64_t want[4] = {hp->n_rot / 2, 1, 1, 1};
    if (memcmp(t->ne, want, sizeof want) != 0 || t->type != SL_F32 || t->offset % 4 != 0) {
        SL_ERROR("tensor %s must be F32 [%u], found %s [%lld, %lld]", ROPE_FREQS_NAME, hp->n_rot / 2,
                 sl_dtype_name(t->type), (long long)t->ne[0], (long long)t->ne[1]);
        return -SL_EFORMAT;
    }
    const float *f = sl_gguf_tensor_data(g, t);
    for (uint32_t i = 0; i < hp->n_rot / 2; i++) {
        if (!(f[i] > 0.0f) || !isfinite(f[i])) {
            SL_ERROR("%s[%u] = %g must be positive", ROPE_FREQS_NAME, i, (double)f[i]);
            return -SL_ERANGE;
        }
        hp->rope_inv_freq[i] /= f[i];
    }
    return 0;
}

static int bind_tensors(sl_model *m, const arch_info *ai, const sl_kernels *kern)
{
    const sl_gguf *g = m->g;
    sl_hparams *hp = &m->hp;
    uint64_t n = sl_gguf_tensor_count(g);
    /* Which roles each layer has found, to catch duplicates and gaps: bit
     * per sl_layer_role, then bit SL_LW_COUNT + r per sl_expert_role. */
    uint32_t *seen = calloc(hp->n_layer, sizeof *seen);
    uint32_t gseen = 0;
    int rc = 0;
    if (!seen) {
        SL_ERROR("out of memory for %u layers", hp->n_layer);
        return -SL_ENOMEM;
    }
    _Static_assert(SL_LW_COUNT + SL_EW_COUNT <= 32, "role bits");
    const uint32_t all_experts = ((1u << SL_EW_COUNT) - 1) << SL_LW_COUNT;
    uint32_t required = ai->required, allowed = ai->allowed;
    if (hp->n_expert) {
        /* The routed experts replace the dense FFN. */
        required = (required & ~DENSE_FFN) | BIT(SL_LW_GATE_INP) | all_experts;
        allowed = (allowed & ~DENSE_FFN) | BIT(SL_LW_GATE_INP) | all_experts;
    } else {
        allowed &= ~SHEXP_ROLES;
    }

    for (uint64_t i = 0; i < n && rc == 0; i++) {
        const sl_gguf_tensor *t = sl_gguf_tensor_at(g, i);
        const int nm = (int)t->name.len;
        int64_t want[4];
        uint32_t il;
        sl_str suffix;
        if (parse_layer_name(t->name, &il, &suffix)) {
            int role = -1;
            for (int r = 0; r < SL_LW_COUNT; r++)
                if (sl_str_eq(suffix, k_layer_tensors[r].suffix))
                    role = r;
            for (int r = 0; r < SL_EW_COUNT; r++)
                if (sl_str_eq(suffix, k_expert_tensors[r].suffix))
                    role = SL_LW_COUNT + r;
            if (role < 0 || !(allowed & BIT(role))) {
                SL_ERROR("tensor %.*s is not part of a %s model: not supported", nm, t->name.ptr, ai->name);
                rc = -SL_EUNSUPPORTED;
            } else if (il >= hp->n_layer) {
                SL_ERROR("tensor %.*s: layer %u but block_count = %u", nm, t->name.ptr, il, hp->n_layer);
                rc = -SL_EFORMAT;
            } else if (seen[il] & BIT(role)) {
                SL_ERROR("tensor %.*s appears twice", nm, t->name.ptr);
                rc = -SL_EFORMAT;
            } else if (role >= SL_LW_COUNT) {
                if ((rc = add_expert_tensor(m, il, role - SL_LW_COUNT, t, kern)) == 0)
                    seen[il] |= BIT(role);
            } else {
                layer_shape(hp, role, want);
                if ((rc = check_tensor(t, want, kern)) == 0) {
                    seen[il] |= BIT(role);
                    unit_add(&m->layers[il], (uint32_t)role, t);
                }
            }
            continue;
        }
        if (sl_str_eq(t->name, ROPE_FREQS_NAME)) {
            rc = apply_rope_freqs(g, t, hp);
            continue;
        }
        int role = -1;
        for (int r = 0; r < SL_GW_COUNT; r++)
            if (sl_str_eq(t->name, k_global_name[r]))
                role = r;
        if (role < 0) {
            SL_ERROR("tensor %.*s is not part of a %s model: not supported", nm, t->name.ptr, ai->name);
            rc = -SL_EUNSUPPORTED;
        } else if (gseen & BIT(role)) {
            SL_ERROR("tensor %.*s appears twice", nm, t->name.ptr);
            rc = -SL_EFORMAT;
        } else {
            global_shape(hp, role, want);
            if ((rc = check_tensor(t, want, kern)) == 0) {
                gseen |= BIT(role);
                unit_add(&m->global, (uint32_t)role, t);
            }
        }
    }

    for (uint32_t il = 0; il < hp->n_layer && rc == 0; il++) {
        uint32_t missing = required & ~seen[il];
        if (missing) {
            int r = __builtin_ctz(missing);
            SL_ERROR("required tensor blk.%u.%s is missing", il,
                     r >= SL_LW_COUNT ? k_expert_tensors[r - SL_LW_COUNT].suffix : k_layer_tensors[r].suffix);
            rc = -SL_ENOTFOUND;
        }
        /* A bias without its siblings would be a variant we do not know;
         * so would a shared expert in some layers only, or in part. */
        uint32_t bias = seen[il] & QKV_BIAS, shexp = seen[il] & SHEXP_ROLES;
        if (rc == 0 && bias && bias != QKV_BIAS) {
            SL_ERROR("layer %u has only some of the q/k/v biases", il);
            rc = -SL_EFORMAT;
        }
        if (rc == 0 && shexp && shexp != SHEXP_ROLES) {
            SL_ERROR("layer %u has only some of the shared expert's tensors", il);
            rc = -SL_EFORMAT;
        } else if (rc == 0 && shexp != (seen[0] & SHEXP_ROLES)) {
            SL_ERROR("layer %u %s a shared expert but layer 0 %s", il, shexp ? "has" : "has no",
                     shexp ? "has none" : "has one");
            rc = -SL_EFORMAT;
        }
        if (rc == 0) {
            m->layers[il].kind = SL_UNIT_LAYER;
            m->layers[il].layer = il;
            unit_finish(&m->layers[il]);
        }
    }
    if (rc == 0 && hp->n_expert && !(seen[0] & SHEXP_ROLES)) {
        hp->n_ff_shexp = 0;
        hp->n_ff = hp->n_ff_exp;
    }
    for (int r = SL_GW_TOKEN_EMBD; r <= SL_GW_OUTPUT_NORM && rc == 0; r++) {
        if (!(gseen & BIT(r))) {
            SL_ERROR("required tensor %s is missing", k_global_name[r]);
            rc = -SL_ENOTFOUND;
        }
    }
    if (rc == 0) {
        m->tied_output = !(gseen & BIT(SL_GW_OUTPUT));
        m->global.kind = SL_UNIT_GLOBAL;
        m->head.kind = SL_UNIT_HEAD;
        unit_finish(&m->global);
        /* The head: output norm and projection, which is the embedding
         * itself when the two are tied. */
        for (uint32_t i = 0; i < m->global.n_tensors; i++) {
            const sl_unit_tensor *ut = &m->global.tensors[i];
            if (ut->role != SL_GW_TOKEN_EMBD || m->tied_output)
                m->head.tensors[m->head.n_tensors++] = *ut;
        }
        unit_finish(&m->head);
    }
    free(seen);
    return rc;
}

/* ---- open / close -------------------------------------------------------- */

int sl_model_from_gguf(const sl_gguf *g, sl_model **out)
{
    *out = NULL;
    const sl_kernels *kern = sl_kernels_get();
    if (!kern)
        return -SL_EUNSUPPORTED; /* sl_kernels_get logged why */

    sl_str arch;
    int rc = sl_gguf_get_str(g, "general.architecture", &arch);
    if (rc < 0) {
        SL_ERROR("general.architecture is %s", rc == -SL_ENOTFOUND ? "missing" : "not a string");
        return rc;
    }
    const arch_info *ai = NULL;
    for (size_t i = 0; i < sizeof k_archs / sizeof k_archs[0]; i++)
        if (sl_str_eq(arch, k_archs[i].name))
            ai = &k_archs[i];
    if (!ai) {
        SL_ERROR("architecture '%.*s' is not supported (supported: llama, qwen2, qwen3, qwen2moe, qwen3moe)",
                 (int)arch.len, arch.ptr);
        return -SL_EUNSUPPORTED;
    }

    sl_model *m = calloc(1, sizeof *m);
    if (!m) {
        SL_ERROR("out of memory");
        return -SL_ENOMEM;
    }
    m->g = g;
    if ((rc = read_hparams(g, ai, &m->hp)) < 0)
        goto fail;
    m->layers = calloc(m->hp.n_layer, sizeof *m->layers);
    if (m->hp.n_expert)
        m->exps = calloc((size_t)m->hp.n_layer * SL_EW_COUNT, sizeof *m->exps);
    if (!m->layers || (m->hp.n_expert && !m->exps)) {
        SL_ERROR("out of memory for %u layer units", m->hp.n_layer);
        rc = -SL_ENOMEM;
        goto fail;
    }
    if ((rc = bind_tensors(m, ai, kern)) < 0)
        goto fail;
    *out = m;
    return 0;
fail:
    free(m->layers);
    free(m->exps);
    free(m);
    return rc;
}

int sl_model_open(const char *path, sl_model **out)
{
    *out = NULL;
    sl_gguf *g = NULL;
    int rc = sl_gguf_open(path, &g);
    if (rc < 0)
        return rc;
    if ((rc = sl_model_from_gguf(g, out)) < 0) {
        SL_ERROR("cannot use %s as a model: %s", path, sl_strerror(rc));
        sl_gguf_close(g);
        return rc;
    }
    (*out)->owned = g;
    return 0;
}

int sl_model_adopt_gguf(sl_gguf *g, sl_model **out)
{
    int rc = sl_model_from_gguf(g, out);
    if (rc < 0) {
        sl_gguf_close(g);
        return rc;
    }
    (*out)->owned = g;
    return 0;
}

void sl_model_close(sl_model *m)
{
    if (!m)
        return;
    sl_gguf_close(m->owned);
    free(m->layers);
    free(m->exps);
    free(m);
}

const sl_hparams *sl_model_hparams(const sl_model *m)
{
    return &m->hp;
}
const sl_gguf *sl_model_gguf(const sl_model *m)
{
    return m->g;
}

const sl_unit *sl_model_layer_unit(const sl_model *m, uint32_t il)
{
    SL_ASSERT(il < m->hp.n_layer);
    return &m->layers[il];
}

const sl_unit *sl_model_global_unit(const sl_model *m)
{
    return &m->global;
}

const sl_unit *sl_model_head_unit(const sl_model *m)
{
    return &m->head;
}

/* ---- binding ------------------------------------------------------------- */

/* Binds the unit's views to the base of its image, or, with `file`, to a
 * whole copy of the file (then `base` is the file's first byte). */
static void bind_unit(const sl_unit *u, const void *base, bool file, sl_tensor *views, int n_views)
{
    SL_ASSERT(base != NULL && (uintptr_t)base % 4 == 0);
    memset(views, 0, (size_t)n_views * sizeof *views);
    const uint8_t *image = (const uint8_t *)base - u->offset % SL_UNIT_IO_ALIGN;
    for (uint32_t i = 0; i < u->n_tensors; i++) {
        const sl_unit_tensor *ut = &u->tensors[i];
        const sl_unit_range *r = &u->ranges[ut->range];
        SL_ASSERT((int)ut->role < n_views && ut->range < u->n_ranges);
        sl_tensor *v = &views[ut->role];
        v->type = ut->type;
        memcpy(v->ne, ut->ne, sizeof v->ne);
        v->data = file ? (const uint8_t *)base + ut->offset
                       : image + r->image_offset + (ut->offset - io_down(r->offset));
    }
}

void sl_unit_image_copy(const sl_unit *u, const void *file, uint64_t file_size, void *image)
{
    for (uint32_t r = 0; r < u->n_ranges; r++) {
        const sl_unit_range *rg = &u->ranges[r];
        const uint64_t lo = io_down(rg->offset), hi = io_up(rg->offset + rg->nbytes);
        const uint64_t have = hi < file_size ? hi - lo : file_size - lo;
        uint8_t *dst = (uint8_t *)image + rg->image_offset;
        memcpy(dst, (const uint8_t *)file + lo, have);
        memset(dst + have, 0, hi - lo - have);
    }
}

void sl_model_bind_layer(const sl_model *m, uint32_t il, const void *base, sl_layer_weights *out)
{
    bind_unit(sl_model_layer_unit(m, il), base, false, out->t, SL_LW_COUNT);
}

void sl_model_expert_unit(const sl_model *m, uint32_t il, uint32_t e, sl_unit *out)
{
    SL_ASSERT(il < m->hp.n_layer && e < m->hp.n_expert);
    out->kind = SL_UNIT_EXPERT;
    out->layer = il;
    out->expert = e;
    out->n_tensors = SL_EW_COUNT;
    for (uint32_t r = 0; r < SL_EW_COUNT; r++) {
        const expert_src *x = &m->exps[(size_t)il * SL_EW_COUNT + r];
        out->tensors[r] = (sl_unit_tensor){
            .role = r, .type = x->type, .ne = {x->ne0, x->ne1, 1, 1}, .offset = x->offset + e * x->slice,
            .nbytes = x->slice};
    }
    unit_finish(out);
}

void sl_model_bind_expert(const sl_model *m, uint32_t il, uint32_t e, const void *base, sl_expert_weights *out)
{
    sl_unit u;
    sl_model_expert_unit(m, il, e, &u);
    bind_unit(&u, base, false, out->t, SL_EW_COUNT);
}

void sl_model_expert_weights(const sl_model *m, uint32_t il, uint32_t e, sl_expert_weights *out)
{
    sl_unit u;
    sl_model_expert_unit(m, il, e, &u);
    bind_unit(&u, sl_gguf_base(m->g), true, out->t, SL_EW_COUNT);
}

void sl_model_bind_globals(const sl_model *m, const void *base, sl_global_weights *out)
{
    bind_unit(&m->global, base, false, out->t, SL_GW_COUNT);
    if (m->tied_output)
        out->t[SL_GW_OUTPUT] = out->t[SL_GW_TOKEN_EMBD];
}

void sl_model_bind_head(const sl_model *m, const void *base, sl_global_weights *out)
{
    bind_unit(&m->head, base, false, out->t, SL_GW_COUNT);
    if (m->tied_output)
        out->t[SL_GW_OUTPUT] = out->t[SL_GW_TOKEN_EMBD];
}

void sl_model_layer_weights(const sl_model *m, uint32_t il, sl_layer_weights *out)
{
    bind_unit(sl_model_layer_unit(m, il), sl_gguf_base(m->g), true, out->t, SL_LW_COUNT);
}

void sl_model_global_weights(const sl_model *m, sl_global_weights *out)
{
    bind_unit(&m->global, sl_gguf_base(m->g), true, out->t, SL_GW_COUNT);
    if (m->tied_output)
        out->t[SL_GW_OUTPUT] = out->t[SL_GW_TOKEN_EMBD];
}
