/* The model description: architecture, hyper-parameters and where every
 * weight tensor lies, read from a GGUF file and checked once, up front.
 *
 * Supported architectures: `llama` (also Mistral; dense only), `qwen2`
 * (q/k/v biases) and `qwen3` (per-head q/k RMS norms). Anything else, and
 * mixture-of-experts llama files, are refused at open with a message naming
 * what is missing, so that the forward pass (compute/forward.h) can trust
 * every shape and type it is handed.
 *
 * Weights are grouped into units, the pieces the streaming pipeline moves:
 * one unit per transformer layer plus one unit of non-layer tensors (token
 * embeddings, final norm, output projection). A unit records, for each of its
 * tensors, the file offset and size, and the contiguous file byte span that
 * covers them all. Whoever holds a copy of that span anywhere in memory (the
 * mapped file, a shared-memory slot) binds views to it with
 * sl_model_bind_layer / sl_model_bind_globals: tensor i's data is then
 * base + (tensor offset - span offset). */
#ifndef SL_MODEL_MODEL_H
#define SL_MODEL_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "model/gguf.h"
#include "model/tensor.h"

/* Largest per-head dimension accepted; bounds the RoPE table and the
 * per-head work buffers. Larger than any model of these architectures. */
#define SL_MAX_HEAD_DIM 512

typedef enum sl_arch { SL_ARCH_LLAMA = 0, SL_ARCH_QWEN2 = 1, SL_ARCH_QWEN3 = 2 } sl_arch;

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
    uint32_t n_ff; /* FFN hidden width */
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

/* Where one tensor of a unit lies in the file. */
typedef struct sl_unit_tensor {
    uint32_t role; /* sl_layer_role or sl_global_role */
    uint32_t type;
    int64_t ne[4];
    uint64_t offset; /* from the start of the file */
    uint64_t nbytes;
} sl_unit_tensor;

#define SL_UNIT_MAX_TENSORS SL_LW_COUNT

/* A unit: its tensors, in file order, and the byte span [offset,
 * offset + nbytes) of the file that covers them. The span can include bytes
 * of no tensor of the unit (alignment padding, or in an oddly ordered file
 * other tensors); `payload` is the sum of the unit's own tensor sizes. */
typedef struct sl_unit {
    uint64_t offset;
    uint64_t nbytes;
    uint64_t payload;
    uint32_t n_tensors;
    sl_unit_tensor tensors[SL_UNIT_MAX_TENSORS];
} sl_unit;

typedef struct sl_model sl_model;

/* Opens the GGUF file at `path` and builds the description. On success
 * stores a new handle in *out and returns 0. On failure leaves *out NULL and
 * returns the error of sl_gguf_open, or -SL_EUNSUPPORTED (architecture,
 * mixture of experts, tensor type, rope scaling), -SL_ENOTFOUND (a required
 * key or tensor is missing), -SL_ETYPE, -SL_EFORMAT or -SL_ERANGE (a value
 * or shape that does not fit), having logged one line naming the key or
 * tensor and the values. Blocks on file I/O. The caller owns the handle
 * (sl_model_close), which owns the mapping. */
int sl_model_open(const char *path, sl_model **out);

/* As sl_model_open, for a GGUF handle the caller already has. The model
 * borrows `g`: it must stay open until sl_model_close. */
int sl_model_from_gguf(const sl_gguf *g, sl_model **out);

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

/* Binds layer il's views to `base`, which holds a copy of the layer unit's
 * byte span (base[0] is the file byte at unit->offset). `base` must be
 * 4-byte aligned (asserted); sluice's slots and the mapping are page-aligned.
 * Never fails or allocates; cheap enough to call per layer per token. */
void sl_model_bind_layer(const sl_model *m, uint32_t il, const void *base, sl_layer_weights *out);

/* The same for the non-layer unit. The tied output view, if any, points at
 * the token embedding inside the same span. */
void sl_model_bind_globals(const sl_model *m, const void *base, sl_global_weights *out);

/* Binds the head unit's views (SL_GW_OUTPUT_NORM and SL_GW_OUTPUT; with
 * tied embeddings SL_GW_TOKEN_EMBD too) to a copy of its span. */
void sl_model_bind_head(const sl_model *m, const void *base, sl_global_weights *out);

/* Views straight into the mapped file (bind to the file image). */
void sl_model_layer_weights(const sl_model *m, uint32_t il, sl_layer_weights *out);
void sl_model_global_weights(const sl_model *m, sl_global_weights *out);

/* "llama", "qwen2", "qwen3". Static string. */
const char *sl_arch_name(sl_arch a);

#endif
