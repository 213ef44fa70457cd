/* The model description: architecture, hyper-parameters and where every
 * weight tensor lies, read from a GGUF file and checked once, up front.
 *
 * Supported architectures: `llama` (also Mistral, and Mixtral-style mixture
 * of experts when the file has expert_count), `qwen2` (q/k/v biases),
 * `qwen3` (per-head q/k RMS norms), `qwen2moe` (qwen2 attention, experts and
 * a shared expert with a sigmoid gate) and `qwen3moe` (qwen3 attention,
 * experts). Anything else is refused at open with a message naming what is
 * missing, so that the forward pass (compute/forward.h, compute/moe.h) can
 * trust every shape and type it is handed.
 *
 * Weights are grouped into units, the pieces the streaming pipeline moves:
 * one unit per transformer layer (for a mixture-of-experts model, the layer
 * without its experts: attention, norms, router, shared expert), one unit
 * of non-layer tensors (token embeddings, final norm, output projection),
 * and for a mixture-of-experts model one unit per expert of each layer (its
 * gate, up and down matrices, each a slice of a 3-D tensor of the file).
 *
 * A unit records, for each of its tensors, the file offset and size, and the
 * file byte ranges that cover them: one range when the tensors are
 * contiguous (every unit of a dense model written in order), several when
 * other units' bytes lie between them (an expert's three matrices; the
 * non-expert tensors of a layer, which files interleave with the expert
 * tensors). The unit's *image* is what a loader places in memory: each range
 * widened to SL_UNIT_IO_ALIGN boundaries of the file (so that it can be read
 * with direct I/O), the ranges one after another, each at its
 * `image_offset`. The unit's *base* is image + (offset % SL_UNIT_IO_ALIGN):
 * where the file byte at `offset` lands. Whoever holds an image anywhere in
 * memory (a shared-memory slot, a test's buffer) binds views to its base
 * with sl_model_bind_*; for a one-range unit the image is just the span
 * widened, and tensor i's data is base + (tensor offset - unit offset). */
#ifndef SL_MODEL_MODEL_H
#define SL_MODEL_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "model/gguf.h"
#include "model/tensor.h"

/* Largest per-head dimension accepted; bounds the RoPE table and the
 * per-head work buffers. Larger than any model of these architectures. */
#define SL_MAX_HEAD_DIM 512

typedef enum sl_arch {
    SL_ARCH_LLAMA = 0,
    SL_ARCH_QWEN2 = 1,
    SL_ARCH_QWEN3 = 2,
    SL_ARCH_QWEN2MOE = 3,
    SL_ARCH_QWEN3MOE = 4
} sl_arch;

/* Most experts per layer, and most used per token. Above every released
 * model (DeepSeek-V3: 256, 8 used); bounds per-token routing buffers. */
#define SL_MAX_EXPERTS 512
#define SL_MAX_EXPERTS_USED 32

/* How RoPE pairs the dimensions of a head: NORM rotates adjacent pairs
 * (2i, 2i+1), NEOX rotates (i, i + n_rot/2). */
typedef enum sl_rope_type { SL_ROPE_NORM = 0, SL_ROPE_NEOX = 1 } sl_rope_type;

/* Plain data (no pointers), so it can be copied into shared memory as is. */
typedef struct sl_hparams {
    sl_arch arch;
    sl_rope_type rope_type;
    uint32_t n_vocab;
    uint32_t n_ctx_train; /* context length the model was trained for */
    uint32_t n_embd;      /* residual stream width */
    uint32_t n_layer;
    uint32_t n_ff; /* FFN hidden width; for a mixture of experts the widest
                    * of n_ff_exp and n_ff_shexp (the file's dense width is
                    * not used) */
    uint32_t n_head;
    uint32_t n_head_kv;  /* n_head is a multiple of it (grouped-query attention) */
    uint32_t head_dim_k; /* per-head width of queries and keys */
    uint32_t head_dim_v; /* per-head width of values */
    uint32_t n_rot;      /* leading dims of each q/k head that RoPE rotates (even) */
    float rms_eps;
    float rope_freq_base;
    float rope_freq_scale; /* 1 / linear scaling factor */
    /* theta_i = pos * rope_freq_scale * rope_inv_freq[i] for i < n_rot / 2:
     * freq_base^(-2i/n_rot), divided by the file's per-dimension factors
     * (tensor rope_freqs.weight, Llama 3.1 style) when it has them. */
    float rope_inv_freq[SL_MAX_HEAD_DIM / 2];
    /* Mixture of experts; all 0 for a dense model. */
    uint32_t n_expert;      /* experts per layer (2..SL_MAX_EXPERTS) */
    uint32_t n_expert_used; /* experts each token is routed to (1..min(n_expert, SL_MAX_EXPERTS_USED)) */
    uint32_t n_ff_exp;      /* hidden width of one expert */
    uint32_t n_ff_shexp;    /* hidden width of the shared expert (qwen2moe); 0 when none */
    /* Routing: softmax over all experts' router logits, the n_expert_used
     * largest chosen; with expert_weights_norm their probabilities are
     * rescaled to sum to 1 (llama/Mixtral and qwen3moe by default; qwen2moe
     * not, unless the file's <arch>.expert_weights_norm says so). */
    bool expert_weights_norm;
} sl_hparams;

/* Tensor roles inside a layer. Optional ones are NULL views when absent. */
typedef enum sl_layer_role {
    SL_LW_ATTN_NORM = 0, /* attn_norm.weight   [n_embd] */
    SL_LW_Q,             /* attn_q.weight      [n_embd] x n_head*head_dim_k */
    SL_LW_K,             /* attn_k.weight      [n_embd] x n_head_kv*head_dim_k */
    SL_LW_V,             /* attn_v.weight      [n_embd] x n_head_kv*head_dim_v */
    SL_LW_O,             /* attn_output.weight [n_head*head_dim_v] x n_embd */
    SL_LW_Q_BIAS,        /* attn_q.bias (qwen2; optional for llama) */
    SL_LW_K_BIAS,        /* attn_k.bias */
    SL_LW_V_BIAS,        /* attn_v.bias */
    SL_LW_O_BIAS,        /* attn_output.bias (optional) */
    SL_LW_Q_NORM,        /* attn_q_norm.weight [head_dim_k] (qwen3) */
    SL_LW_K_NORM,        /* attn_k_norm.weight [head_dim_k] (qwen3) */
    SL_LW_FFN_NORM,      /* ffn_norm.weight    [n_embd] */
    SL_LW_GATE,          /* ffn_gate.weight    [n_embd] x n_ff */
    SL_LW_UP,            /* ffn_up.weight      [n_embd] x n_ff */
    SL_LW_DOWN,          /* ffn_down.weight    [n_ff] x n_embd */
    /* Mixture of experts (the experts themselves are expert units). */
    SL_LW_GATE_INP,       /* ffn_gate_inp.weight       [n_embd] x n_expert: the router */
    SL_LW_GATE_INP_SHEXP, /* ffn_gate_inp_shexp.weight [n_embd]: shared expert gate (qwen2moe) */
    SL_LW_GATE_SHEXP,     /* ffn_gate_shexp.weight     [n_embd] x n_ff_shexp */
    SL_LW_UP_SHEXP,       /* ffn_up_shexp.weight       [n_embd] x n_ff_shexp */
    SL_LW_DOWN_SHEXP,     /* ffn_down_shexp.weight     [n_ff_shexp] x n_embd */
    SL_LW_COUNT
} sl_layer_role;

/* One layer's weights as views, indexed by role. */
typedef struct sl_layer_weights {
    sl_tensor t[SL_LW_COUNT];
} sl_layer_weights;

typedef enum sl_global_role {
    SL_GW_TOKEN_EMBD = 0, /* token_embd.weight  [n_embd] x n_vocab */
    SL_GW_OUTPUT_NORM,    /* output_norm.weight [n_embd] */
    SL_GW_OUTPUT,         /* output.weight      [n_embd] x n_vocab; when the file has
                           * none it is the token embedding (tied) */
    SL_GW_COUNT
} sl_global_role;

typedef struct sl_global_weights {
    sl_tensor t[SL_GW_COUNT];
} sl_global_weights;

/* One expert's matrices: slice e of the layer's ffn_{gate,up,down}_exps
 * tensors ([n_embd, n_ff_exp, n_expert] and [n_ff_exp, n_embd, n_expert] in
 * the file), as 2-D views. */
typedef enum sl_expert_role {
    SL_EW_GATE = 0, /* [n_embd] x n_ff_exp */
    SL_EW_UP,       /* [n_embd] x n_ff_exp */
    SL_EW_DOWN,     /* [n_ff_exp] x n_embd */
    SL_EW_COUNT
} sl_expert_role;

typedef struct sl_expert_weights {
    sl_tensor t[SL_EW_COUNT];
} sl_expert_weights;

/* Where one tensor of a unit lies in the file. */
typedef struct sl_unit_tensor {
    uint32_t role; /* sl_layer_role, sl_global_role or sl_expert_role */
    uint32_t type;
    int64_t ne[4];
    uint64_t offset; /* from the start of the file */
    uint64_t nbytes;
    uint32_t range;  /* index of the unit range that holds it */
} sl_unit_tensor;

#define SL_UNIT_MAX_TENSORS SL_LW_COUNT
#define SL_UNIT_MAX_RANGES SL_UNIT_MAX_TENSORS
/* Alignment of the ranges in a unit's image: direct I/O's. */
#define SL_UNIT_IO_ALIGN 4096u

/* A contiguous run of file bytes of a unit. Tensors closer than
 * SL_UNIT_IO_ALIGN share a range (reading the padding between them costs
 * less than another request). */
typedef struct sl_unit_range {
    uint64_t offset;       /* file offset of its first byte */
    uint64_t nbytes;
    uint64_t image_offset; /* where its widened read, [offset rounded down, end
                            * rounded up), starts in the unit's image */
} sl_unit_range;

typedef enum sl_unit_kind { SL_UNIT_LAYER = 0, SL_UNIT_GLOBAL, SL_UNIT_HEAD, SL_UNIT_EXPERT } sl_unit_kind;

/* A unit: its tensors and ranges, both in file order. `offset` is the first
 * range's offset; `nbytes` the bytes of all ranges together (for a
 * one-range unit, the span [offset, offset + nbytes)); a range can include
 * bytes of no tensor of the unit (alignment padding). `payload` is the sum
 * of the unit's own tensor sizes; `image_bytes` the size of its image. */
typedef struct sl_unit {
    uint64_t offset;
    uint64_t nbytes;
    uint64_t payload;
    uint64_t image_bytes;
    uint32_t kind;  /* sl_unit_kind */
    uint32_t layer; /* SL_UNIT_LAYER and SL_UNIT_EXPERT */
    uint32_t expert; /* SL_UNIT_EXPERT */
    uint32_t n_tensors;
    uint32_t n_ranges;
    sl_unit_tensor tensors[SL_UNIT_MAX_TENSORS];
    sl_unit_range ranges[SL_UNIT_MAX_RANGES];
} sl_unit;

typedef struct sl_model sl_model;

/* Opens the GGUF file at `path` and builds the description. On success
 * stores a new handle in *out and returns 0. On failure leaves *out NULL and
 * returns the error of sl_gguf_open, or -SL_EUNSUPPORTED (architecture,
 * experts in a dense architecture, tensor type, rope scaling, gating), -SL_ENOTFOUND (a required
 * key or tensor is missing), -SL_ETYPE, -SL_EFORMAT or -SL_ERANGE (a value
 * or shape that does not fit), having logged one line naming the key or
 * tensor and the values. Blocks on file I/O. The caller owns the handle
 * (sl_model_close), which owns the mapping. */
int sl_model_open(const char *path, sl_model **out);

/* As sl_model_open, for a GGUF handle the caller already has. The model
 * borrows `g`: it must stay open until sl_model_close. */
int sl_model_from_gguf(const sl_gguf *g, sl_model **out);

/* As sl_model_from_gguf, but the model takes `g` over: sl_model_close
 * closes it, and so does this function when it fails. For GGUF images
 * made elsewhere (a packed model, model/source.h). */
int sl_model_adopt_gguf(sl_gguf *g, sl_model **out);

/* Releases the model (and the GGUF handle when sl_model_open made it).
 * NULL is accepted. */
void sl_model_close(sl_model *m);

/* The hyper-parameters; valid until close. Never fails. */
const sl_hparams *sl_model_hparams(const sl_model *m);

/* The GGUF handle the model reads (for tokenizer metadata and the like). */
const sl_gguf *sl_model_gguf(const sl_model *m);

/* Layer `il`'s unit (il < n_layer, asserted) and the non-layer unit. Valid
 * until close. */
const sl_unit *sl_model_layer_unit(const sl_model *m, uint32_t il);
const sl_unit *sl_model_global_unit(const sl_model *m);

/* The head unit: what the output step reads (output_norm and output, or
 * output_norm and token_embd when they are tied). A pipeline streams this
 * unit and looks up embedding rows separately, so the embedding table of an
 * untied model is never streamed whole. Valid until close. */
const sl_unit *sl_model_head_unit(const sl_model *m);

/* Expert e of layer il (il < n_layer, e < n_expert; asserted) as a unit of
 * kind SL_UNIT_EXPERT with three tensors (roles sl_expert_role), written to
 * *out. Computed on demand (a model can have thousands of experts); never
 * fails or allocates. Dense models have none (n_expert == 0). */
void sl_model_expert_unit(const sl_model *m, uint32_t il, uint32_t e, sl_unit *out);

/* The unit's base inside an image that starts at `image`: image +
 * (offset % SL_UNIT_IO_ALIGN). */
static inline const void *sl_unit_base(const sl_unit *u, const void *image)
{
    return (const unsigned char *)image + u->offset % SL_UNIT_IO_ALIGN;
}

/* Writes the unit's image to `image` (u->image_bytes bytes) from `file`, a
 * copy of the whole file (the mapping): what a loader does with reads.
 * Bytes of a widened range past the end of the file are zeroed. For tests
 * and tools; never fails. */
void sl_unit_image_copy(const sl_unit *u, const void *file, uint64_t file_size, void *image);

/* Binds layer il's views to `base`, the base of a copy of the layer unit's
 * image (for a one-range unit: base[0] is the file byte at unit->offset and
 * the unit's bytes follow). `base` must be 4-byte aligned (asserted);
 * sluice's slots and the mapping are page-aligned. Never fails or
 * allocates; cheap enough to call per layer per token. */
void sl_model_bind_layer(const sl_model *m, uint32_t il, const void *base, sl_layer_weights *out);

/* Binds expert e of layer il's views to the base of a copy of its unit's
 * image. As cheap and infallible as sl_model_bind_layer. */
void sl_model_bind_expert(const sl_model *m, uint32_t il, uint32_t e, const void *base, sl_expert_weights *out);

/* The same for the non-layer unit. The tied output view, if any, points at
 * the token embedding inside the same span. */
void sl_model_bind_globals(const sl_model *m, const void *base, sl_global_weights *out);

/* Binds the head unit's views (SL_GW_OUTPUT_NORM and SL_GW_OUTPUT; with
 * tied embeddings SL_GW_TOKEN_EMBD too) to a copy of its span. */
void sl_model_bind_head(const sl_model *m, const void *base, sl_global_weights *out);

/* Views straight into the mapped file (bind to the file image). */
void sl_model_layer_weights(const sl_model *m, uint32_t il, sl_layer_weights *out);
void sl_model_global_weights(const sl_model *m, sl_global_weights *out);
void sl_model_expert_weights(const sl_model *m, uint32_t il, uint32_t e, sl_expert_weights *out);

/* "llama", "qwen2", "qwen3", "qwen2moe", "qwen3moe". Static string. */
const char *sl_arch_name(sl_arch a);

#endif
