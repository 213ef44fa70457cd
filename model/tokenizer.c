/* Tokenizers from GGUF metadata: loading and validation of the vocabulary,
 * special-token partitioning, SentencePiece and byte-level BPE encoding,
 * and decoding. See tokenizer.h for the behaviour; the pre-tokenizer
 * expressions live in pretok.c. */
#include "model/tokenizer.h"

#include "common/log.h"
#include "model/pretok.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A token text longer than this is not a vocabulary entry but a corrupt
 * file; the cap also keeps every length in 32 bits. */
#define MAX_TOKEN_BYTES ((uint64_t)1 << 20)
/* All token texts (or all merges) together; keeps offsets in 32 bits. */
#define MAX_ARENA_BYTES ((uint64_t)1 << 31)

/* Per-token flags beyond the type. */
enum {
    TF_LSTRIP = 1, /* when split off as a special token, white space before it is dropped */
    TF_RSTRIP = 2, /* ... white space after it is dropped */
    TF_EOG = 4,    /* generating it ends the turn */
};

typedef struct tok_entry {
    uint32_t text_off, text_len;   /* vocabulary entry, in tk->text */
    uint32_t piece_off, piece_len; /* decoded bytes, in tk->pieces */
    float score;
    uint8_t type; /* sl_token_type, after the reference's overrides */
    uint8_t flags;
} tok_entry;

/* Open-addressing hash set of indices (slot = index + 1, 0 = empty). */
typedef struct strmap {
    uint32_t *slots;
    uint32_t mask;
} strmap;

struct sl_tokenizer {
    sl_tokenizer_kind kind;
    int32_t n_vocab;
    tok_entry *toks;
    char *text;   /* all vocabulary entries */
    char *pieces; /* all decoded pieces */
    size_t max_piece;
    strmap vocab;

    /* BPE */
    uint32_t n_merges;
    uint32_t *merge_off, *merge_len;
    char *merge_text;
    strmap merges;
    sl_pretok *pretok;

    int32_t bos, eos, eot, eom, unk, pad, sep, mask;
    int32_t fim_pre, fim_suf, fim_mid, fim_pad, fim_rep, fim_sep;
    bool add_bos, add_eos, add_space_prefix, clean_spaces, ignore_merges;

    int32_t *special; /* ids split off before tokenizing, longest text first */
    size_t n_special;
    int32_t byte_tok[256]; /* SentencePiece byte fallback: <0xXX> (or the byte itself) */
};

/* ---------------------------------------------------------------------------
 * Hash maps: token text -> id, merge "left right" -> rank
 * ------------------------------------------------------------------------- */

#define FNV_SEED 0xcbf29ce484222325ULL

static uint64_t fnv(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static uint32_t slot_of(uint64_t h, uint32_t mask)
{
    return (uint32_t)(h ^ (h >> 29)) & mask;
}

static int strmap_init(strmap *m, size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    m->slots = calloc(cap, sizeof *m->slots);
    m->mask = (uint32_t)(cap - 1);
    return m->slots ? 0 : -SL_ENOMEM;
}

static const char *tok_text(const sl_tokenizer *tk, int32_t id, size_t *len)
{
    *len = tk->toks[id].text_len;
    return tk->text + tk->toks[id].text_off;
}

int32_t sl_tokenizer_find(const sl_tokenizer *tk, const char *s, size_t n)
{
    for (uint32_t i = slot_of(fnv(FNV_SEED, s, n), tk->vocab.mask);; i = (i + 1) & tk->vocab.mask) {
        uint32_t v = tk->vocab.slots[i];
        if (v == 0)
            return -1;
        size_t tl;
        const char *t = tok_text(tk, (int32_t)(v - 1), &tl);
        if (tl == n && memcmp(t, s, n) == 0)
            return (int32_t)(v - 1);
    }
}

/* Inserts token id; returns the id already holding the same text, or -1. */
static int32_t vocab_insert(sl_tokenizer *tk, int32_t id)
{
    size_t n;
    const char *s = tok_text(tk, id, &n);
    uint32_t i = slot_of(fnv(FNV_SEED, s, n), tk->vocab.mask);
    for (;; i = (i + 1) & tk->vocab.mask) {
        uint32_t v = tk->vocab.slots[i];
        if (v == 0)
            break;
        size_t tl;
        const char *t = tok_text(tk, (int32_t)(v - 1), &tl);
        if (tl == n && memcmp(t, s, n) == 0)
            return (int32_t)(v - 1);
    }
    tk->vocab.slots[i] = (uint32_t)id + 1;
    return -1;
}

/* Rank of the merge "left right", or -1. Neither side contains a space
 * (the byte alphabet has none), so the first space of a stored merge is
 * the only possible separator and comparing the joined string is exact. */
static int32_t merge_rank(const sl_tokenizer *tk, const char *l, size_t ln, const char *r, size_t rn)
{
    uint64_t h = fnv(fnv(fnv(FNV_SEED, l, ln), " ", 1), r, rn);
    for (uint32_t i = slot_of(h, tk->merges.mask);; i = (i + 1) & tk->merges.mask) {
        uint32_t v = tk->merges.slots[i];
        if (v == 0)
            return -1;
        const char *m = tk->merge_text + tk->merge_off[v - 1];
        if (tk->merge_len[v - 1] == ln + 1 + rn && memcmp(m, l, ln) == 0 && m[ln] == ' ' &&
            memcmp(m + ln + 1, r, rn) == 0)
            return (int32_t)(v - 1);
    }
}

/* Inserts merge `rank` unless an identical merge came earlier (the first
 * one keeps its rank, as in the reference). */
static void merge_insert(sl_tokenizer *tk, uint32_t rank)
{
    const char *s = tk->merge_text + tk->merge_off[rank];
    size_t n = tk->merge_len[rank];
    uint32_t i = slot_of(fnv(FNV_SEED, s, n), tk->merges.mask);
    for (;; i = (i + 1) & tk->merges.mask) {
        uint32_t v = tk->merges.slots[i];
        if (v == 0)
            break;
        if (tk->merge_len[v - 1] == n && memcmp(tk->merge_text + tk->merge_off[v - 1], s, n) == 0)
            return;
    }
    tk->merges.slots[i] = rank + 1;
}

/* ---------------------------------------------------------------------------
 * Loading
 * ------------------------------------------------------------------------- */

static bool is_int_type(sl_gguf_vtype t)
{
    return t == SL_GGUF_U8 || t == SL_GGUF_I8 || t == SL_GGUF_U16 || t == SL_GGUF_I16 || t == SL_GGUF_U32 ||
           t == SL_GGUF_I32 || t == SL_GGUF_U64 || t == SL_GGUF_I64;
}

/* An optional array: 0 when present with `n` elements accepted by `ok`,
 * 1 when absent, -SL_EFORMAT (logged) otherwise. */
static int opt_array(const sl_gguf *g, const char *key, uint64_t n, bool (*ok)(sl_gguf_vtype), sl_gguf_arr *a)
{
    int rc = sl_gguf_get_arr(g, key, a);
    if (rc == -SL_ENOTFOUND)
        return 1;
    if (rc < 0) {
        SL_ERROR("%s is not an array", key);
        return -SL_EFORMAT;
    }
    if (!ok(a->type)) {
        SL_ERROR("%s has elements of type %d, which is not allowed here", key, (int)a->type);
        return -SL_EFORMAT;
    }
    if (a->count != n) {
        SL_ERROR("%s has %llu elements but tokenizer.ggml.tokens has %llu", key, (unsigned long long)a->count,
                 (unsigned long long)n);
        return -SL_EFORMAT;
    }
    return 0;
}

static bool is_float_type(sl_gguf_vtype t)
{
    return t == SL_GGUF_F32 || t == SL_GGUF_F64;
}

static int opt_bool(const sl_gguf *g, const char *key, bool *v)
{
    int rc = sl_gguf_get_bool(g, key, v);
    if (rc == -SL_ENOTFOUND)
        return 0;
    if (rc < 0) {
        SL_ERROR("%s is not a boolean", key);
        return -SL_EFORMAT;
    }
    return 0;
}

/* A token id from the metadata. Absent, -1 or UINT32_MAX (what converters
 * write for "none") leave *id at its default; anything else must be a
 * valid id. */
static int opt_id(const sl_gguf *g, const char *key, int32_t n_vocab, int32_t *id)
{
    int64_t v;
    int rc = sl_gguf_get_i64(g, key, &v);
    if (rc == -SL_ENOTFOUND)
        return 0;
    if (rc == -SL_ETYPE) {
        uint64_t u;
        if (sl_gguf_get_u64(g, key, &u) == 0 && u == UINT64_MAX)
            return 0;
        SL_ERROR("%s is not an integer", key);
        return -SL_EFORMAT;
    }
    if (rc < 0)
        return -SL_EFORMAT;
    if (v == -1 || v == (int64_t)UINT32_MAX)
        return 0;
    if (v < 0 || v >= n_vocab) {
        SL_ERROR("%s = %lld is outside the vocabulary of %d tokens", key, (long long)v, n_vocab);
        return -SL_EFORMAT;
    }
    *id = (int32_t)v;
    return 0;
}

static int load_kind(const sl_gguf *g, sl_tokenizer *tk)
{
    sl_str model;
    int rc = sl_gguf_get_str(g, "tokenizer.ggml.model", &model);
    if (rc == -SL_ENOTFOUND) {
        SL_ERROR("the file has no tokenizer (tokenizer.ggml.model is missing)");
        return -SL_EFORMAT;
    }
    if (rc < 0) {
        SL_ERROR("tokenizer.ggml.model is not a string");
        return -SL_EFORMAT;
    }
    if (sl_str_eq(model, "llama")) {
        tk->kind = SL_TOKENIZER_SPM;
    } else if (sl_str_eq(model, "gpt2")) {
        tk->kind = SL_TOKENIZER_BPE;
    } else {
        SL_ERROR("tokenizer model '%.*s' is not supported (sluice knows 'llama' and 'gpt2')",
                 (int)(model.len > 100 ? 100 : model.len), model.ptr);
        return -SL_EUNSUPPORTED;
    }
    return 0;
}

/* SentencePiece byte tokens are spelled <0xXX>; the byte is XX. */
static int parse_byte_token(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                       : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

static int load_tokens(const sl_gguf *g, sl_tokenizer *tk)
{
    sl_gguf_arr toks, scores, types;
    int rc = sl_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks);
    if (rc < 0 || toks.type != SL_GGUF_STRING) {
        SL_ERROR("tokenizer.ggml.tokens is %s", rc == -SL_ENOTFOUND ? "missing" : "not an array of strings");
        return -SL_EFORMAT;
    }
    if (toks.count == 0 || toks.count >= (uint64_t)INT32_MAX) {
        SL_ERROR("tokenizer.ggml.tokens has %llu entries", (unsigned long long)toks.count);
        return -SL_EFORMAT;
    }
    uint64_t n = toks.count;
    int has_scores = opt_array(g, "tokenizer.ggml.scores", n, is_float_type, &scores);
    if (has_scores < 0)
        return has_scores;
    int has_types = opt_array(g, "tokenizer.ggml.token_type", n, is_int_type, &types);
    if (has_types < 0)
        return has_types;

    tk->n_vocab = (int32_t)n;
    tk->toks = calloc(n, sizeof *tk->toks);
    if (!tk->toks)
        return -SL_ENOMEM;

    /* Sizes first, so that the text arena is allocated once. An empty
     * entry gets the reference's stand-in text "[EMPTY_<id>]". */
    uint64_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        sl_str s = sl_gguf_arr_str(&toks, i);
        if (s.len > MAX_TOKEN_BYTES) {
            SL_ERROR("token %llu is %llu bytes long (limit %llu)", (unsigned long long)i,
                     (unsigned long long)s.len, (unsigned long long)MAX_TOKEN_BYTES);
            return -SL_EFORMAT;
        }
        total += s.len ? s.len : 20;
    }
    if (total > MAX_ARENA_BYTES) {
        SL_ERROR("the vocabulary holds %llu bytes of text (limit %llu)", (unsigned long long)total,
                 (unsigned long long)MAX_ARENA_BYTES);
        return -SL_EFORMAT;
    }
    tk->text = malloc(total ? total : 1);
    if (!tk->text || strmap_init(&tk->vocab, n) < 0)
        return -SL_ENOMEM;

    uint32_t off = 0;
    uint64_t n_empty = 0;
    for (uint64_t i = 0; i < n; i++) {
        tok_entry *t = &tk->toks[i];
        sl_str s = sl_gguf_arr_str(&toks, i);
        if (s.len) {
            memcpy(tk->text + off, s.ptr, s.len);
            t->text_len = (uint32_t)s.len;
        } else {
            if (n_empty++ == 0) /* one line, however many there are */
                SL_WARN("token %llu is empty; it stands for '[EMPTY_%llu]' (and so on for any others)",
                        (unsigned long long)i, (unsigned long long)i);
            t->text_len = (uint32_t)snprintf(tk->text + off, 20, "[EMPTY_%llu]", (unsigned long long)i);
        }
        t->text_off = off;
        off += t->text_len;

        t->type = SL_TOKEN_NORMAL;
        if (has_types == 0) {
            int64_t ty = sl_gguf_arr_i64(&types, i);
            if (ty < SL_TOKEN_UNDEFINED || ty > SL_TOKEN_BYTE) {
                SL_ERROR("token %llu has type %lld (known types are 0..6)", (unsigned long long)i,
                         (long long)ty);
                return -SL_EFORMAT;
            }
            t->type = (uint8_t)ty;
        }
        if (has_scores == 0) {
            double sc = sl_gguf_arr_f64(&scores, i);
            if (isnan(sc)) {
                SL_ERROR("token %llu has a score that is not a number", (unsigned long long)i);
                return -SL_EFORMAT;
            }
            t->score = (float)sc;
        }
        int32_t dup = vocab_insert(tk, (int32_t)i);
        if (dup >= 0) {
            SL_ERROR("tokens %d and %llu are both '%.*s'", dup, (unsigned long long)i,
                     (int)(t->text_len > 100 ? 100 : t->text_len), tk->text + t->text_off);
            return -SL_EFORMAT;
        }
    }

    if (tk->kind == SL_TOKENIZER_SPM) {
        for (int32_t i = 0; i < tk->n_vocab; i++) {
            size_t len;
            const char *s = tok_text(tk, i, &len);
            if (tk->toks[i].type == SL_TOKEN_BYTE && parse_byte_token(s, len) < 0) {
                SL_ERROR("token %d has type 'byte' but reads '%.*s', not <0xXX>", i,
                         (int)(len > 100 ? 100 : len), s);
                return -SL_EFORMAT;
            }
        }
    }
    return 0;
}

static bool is_string_type(sl_gguf_vtype t)
{
    return t == SL_GGUF_STRING;
}

static int load_merges(const sl_gguf *g, sl_tokenizer *tk)
{
    sl_gguf_arr m;
    int rc = sl_gguf_get_arr(g, "tokenizer.ggml.merges", &m);
    if (rc < 0 || !is_string_type(m.type)) {
        SL_ERROR("tokenizer.ggml.merges is %s",
                 rc == -SL_ENOTFOUND ? "missing (a 'gpt2' tokenizer needs it)" : "not an array of strings");
        return -SL_EFORMAT;
    }
    if (m.count >= (uint64_t)INT32_MAX) {
        SL_ERROR("tokenizer.ggml.merges has %llu entries", (unsigned long long)m.count);
        return -SL_EFORMAT;
    }
    uint64_t total = 0;
    for (uint64_t i = 0; i < m.count; i++)
        total += sl_gguf_arr_str(&m, i).len;
    if (total > MAX_ARENA_BYTES) {
        SL_ERROR("the merges hold %llu bytes of text (limit %llu)", (unsigned long long)total,
                 (unsigned long long)MAX_ARENA_BYTES);
        return -SL_EFORMAT;
    }
    tk->n_merges = (uint32_t)m.count;
    tk->merge_off = malloc((m.count + 1) * sizeof(uint32_t));
    tk->merge_len = malloc((m.count + 1) * sizeof(uint32_t));
    tk->merge_text = malloc(total ? total : 1);
    if (!tk->merge_off || !tk->merge_len || !tk->merge_text || strmap_init(&tk->merges, m.count) < 0)
        return -SL_ENOMEM;
    uint32_t off = 0;
    for (uint32_t i = 0; i < tk->n_merges; i++) {
        sl_str s = sl_gguf_arr_str(&m, i);
        if (s.len)
            memcpy(tk->merge_text + off, s.ptr, s.len);
        tk->merge_off[i] = off;
        tk->merge_len[i] = (uint32_t)s.len;
        off += (uint32_t)s.len;
        merge_insert(tk, i);
    }
    return 0;
}

static int load_flags_and_ids(const sl_gguf *g, sl_tokenizer *tk)
{
    int32_t n = tk->n_vocab;
    /* The reference's defaults per tokenizer model. */
    tk->bos = tk->eos = tk->eot = tk->eom = tk->unk = tk->pad = tk->sep = tk->mask = -1;
    tk->fim_pre = tk->fim_suf = tk->fim_mid = tk->fim_pad = tk->fim_rep = tk->fim_sep = -1;
    if (tk->kind == SL_TOKENIZER_SPM) {
        tk->bos = 1 < n ? 1 : -1;
        tk->eos = 2 < n ? 2 : -1;
        tk->unk = 0;
        tk->add_bos = true;
        tk->add_space_prefix = true;
    } else {
        tk->bos = tk->eos = 11 < n ? 11 : -1;
        const sl_pretok_traits *tr = sl_pretok_traits_get(tk->pretok);
        tk->add_bos = tr->add_bos;
        tk->clean_spaces = tr->clean_spaces;
        tk->ignore_merges = tr->ignore_merges;
    }

    int rc = 0;
    rc = rc ? rc : opt_bool(g, "tokenizer.ggml.add_space_prefix", &tk->add_space_prefix);
    rc = rc ? rc : opt_bool(g, "tokenizer.ggml.add_bos_token", &tk->add_bos);
    rc = rc ? rc : opt_bool(g, "tokenizer.ggml.add_eos_token", &tk->add_eos);

    static const struct {
        const char *key;
        size_t field;
    } ids[] = {
        {"tokenizer.ggml.bos_token_id", offsetof(sl_tokenizer, bos)},
        {"tokenizer.ggml.eos_token_id", offsetof(sl_tokenizer, eos)},
        {"tokenizer.ggml.eot_token_id", offsetof(sl_tokenizer, eot)},
        {"tokenizer.ggml.eom_token_id", offsetof(sl_tokenizer, eom)},
        {"tokenizer.ggml.unknown_token_id", offsetof(sl_tokenizer, unk)},
        {"tokenizer.ggml.seperator_token_id", offsetof(sl_tokenizer, sep)}, /* sic: the GGUF spelling */
        {"tokenizer.ggml.padding_token_id", offsetof(sl_tokenizer, pad)},
        {"tokenizer.ggml.mask_token_id", offsetof(sl_tokenizer, mask)},
        {"tokenizer.ggml.fim_pre_token_id", offsetof(sl_tokenizer, fim_pre)},
        {"tokenizer.ggml.fim_suf_token_id", offsetof(sl_tokenizer, fim_suf)},
        {"tokenizer.ggml.fim_mid_token_id", offsetof(sl_tokenizer, fim_mid)},
        {"tokenizer.ggml.fim_pad_token_id", offsetof(sl_tokenizer, fim_pad)},
        {"tokenizer.ggml.fim_rep_token_id", offsetof(sl_tokenizer, fim_rep)},
        {"tokenizer.ggml.fim_sep_token_id", offsetof(sl_tokenizer, fim_sep)},
        {"tokenizer.ggml.prefix_token_id", offsetof(sl_tokenizer, fim_pre)}, /* older names */
        {"tokenizer.ggml.suffix_token_id", offsetof(sl_tokenizer, fim_suf)},
        {"tokenizer.ggml.middle_token_id", offsetof(sl_tokenizer, fim_mid)},
    };
    for (size_t i = 0; !rc && i < sizeof ids / sizeof ids[0]; i++)
        rc = opt_id(g, ids[i].key, n, (int32_t *)((char *)tk + ids[i].field));
    return rc;
}

/* Texts that mark special tokens in vocabularies whose metadata does not
 * name them (the reference's list). A match becomes a control token. */
#define END_OF_SENTENCE_DS                                                                                   \
    "<\xEF\xBD\x9C"                                                                                          \
    "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"
static const char *const eot_texts[] = {"<|eot_id|>",       "<|im_end|>",         "<|end|>", "<end_of_turn>",
                                        "<|endoftext|>",    "<|end_of_text|>",    "<EOT>",   "_<EOT>",
                                        END_OF_SENTENCE_DS, "<end_of_utterance>", NULL};
static const char *const eom_texts[] = {"<|eom_id|>", NULL};
static const char *const fim_pre_texts[] = {"<|fim_prefix|>",
                                            "<fim-prefix>",
                                            "<fim_prefix>",
                                            "<\xEF\xBD\x9C"
                                            "fim\xE2\x96\x81"
                                            "begin\xEF\xBD\x9C>",
                                            "<PRE>",
                                            "\xE2\x96\x81<PRE>",
                                            "<|code_prefix|>",
                                            NULL};
static const char *const fim_suf_texts[] = {"<|fim_suffix|>",
                                            "<fim-suffix>",
                                            "<fim_suffix>",
                                            "<\xEF\xBD\x9C"
                                            "fim\xE2\x96\x81hole\xEF\xBD\x9C>",
                                            "<SUF>",
                                            "\xE2\x96\x81<SUF>",
                                            "<|code_suffix|>",
                                            NULL};
static const char *const fim_mid_texts[] = {"<|fim_middle|>",
                                            "<fim-middle>",
                                            "<fim_middle>",
                                            "<\xEF\xBD\x9C"
                                            "fim\xE2\x96\x81"
                                            "end\xEF\xBD\x9C>",
                                            "<MID>",
                                            "\xE2\x96\x81<MID>",
                                            "<|code_middle|>",
                                            NULL};
static const char *const fim_pad_texts[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", NULL};
static const char *const fim_rep_texts[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
                                            "<REPO>",       "<reponame>",    NULL};
static const char *const fim_sep_texts[] = {"<|file_sep|>", NULL};
static const char *const eog_texts[] = {
    "<|eot_id|>",      "<|im_end|>",         "<|end|>",    "<|return|>", "<|call|>",
    "<end_of_turn>",   "<|endoftext|>",      "<|eom_id|>", "<EOT>",      "_<EOT>",
    "<|end_of_text|>", "<end_of_utterance>", NULL};

static int32_t find_cstr(const sl_tokenizer *tk, const char *s)
{
    return sl_tokenizer_find(tk, s, strlen(s));
}

static void make_control(sl_tokenizer *tk, int32_t id)
{
    if (tk->toks[id].type != SL_TOKEN_CONTROL) {
        size_t n;
        const char *s = tok_text(tk, id, &n);
        SL_WARN("token %d '%.*s' looks like a control token but has type %d; treating it as control", id,
                (int)n, s, tk->toks[id].type);
        tk->toks[id].type = SL_TOKEN_CONTROL;
    }
}

/* Fills *id from the first text of `texts` that is in the vocabulary, when
 * the metadata left it unset. The reference takes whichever its hash map
 * yields first; the order of the list decides here. */
static void detect(sl_tokenizer *tk, int32_t *id, const char *const *texts)
{
    if (*id >= 0)
        return;
    for (int i = 0; texts[i]; i++) {
        int32_t t = find_cstr(tk, texts[i]);
        if (t >= 0) {
            *id = t;
            make_control(tk, t);
            return;
        }
    }
}

static void set_eog(sl_tokenizer *tk, int32_t id)
{
    if (id >= 0)
        tk->toks[id].flags |= TF_EOG;
}

static void detect_special(sl_tokenizer *tk)
{
    detect(tk, &tk->eot, eot_texts);
    detect(tk, &tk->eom, eom_texts);
    detect(tk, &tk->fim_pre, fim_pre_texts);
    detect(tk, &tk->fim_suf, fim_suf_texts);
    detect(tk, &tk->fim_mid, fim_mid_texts);
    detect(tk, &tk->fim_pad, fim_pad_texts);
    detect(tk, &tk->fim_rep, fim_rep_texts);
    detect(tk, &tk->fim_sep, fim_sep_texts);

    set_eog(tk, tk->fim_pad);
    set_eog(tk, tk->fim_rep);
    set_eog(tk, tk->fim_sep);
    for (int i = 0; eog_texts[i]; i++) {
        int32_t t = find_cstr(tk, eog_texts[i]);
        if (t >= 0) {
            set_eog(tk, t);
            make_control(tk, t);
        }
    }
    set_eog(tk, tk->eos);
    set_eog(tk, tk->eot);
    set_eog(tk, tk->eom);

    /* gpt-oss (o200k_harmony): these are rendered as text, and "<|end|>"
     * does not end generation when "<|return|>" and "<|call|>" exist. */
    static const char *const harmony[] = {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"};
    for (size_t i = 0; i < sizeof harmony / sizeof harmony[0]; i++) {
        int32_t t = find_cstr(tk, harmony[i]);
        if (t >= 0)
            tk->toks[t].type = SL_TOKEN_USER_DEFINED;
    }
    int32_t ret = find_cstr(tk, "<|return|>"), call = find_cstr(tk, "<|call|>"),
            end = find_cstr(tk, "<|end|>");
    if (ret >= 0 && call >= 0 && end >= 0 &&
        (tk->toks[ret].flags & tk->toks[call].flags & tk->toks[end].flags & TF_EOG)) {
        tk->toks[end].flags &= (uint8_t)~TF_EOG;
        tk->toks[end].type = SL_TOKEN_USER_DEFINED;
    }
}

typedef struct len_id {
    uint32_t len;
    int32_t id;
} len_id;

static int cmp_len_id(const void *a, const void *b)
{
    const len_id *x = a, *y = b;
    if (x->len != y->len)
        return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Tokens split off before tokenizing, longest text first (the reference
 * sorts by length only, with an unstable sort; ties go by id here). */
static int build_special(sl_tokenizer *tk)
{
    size_t n = 0;
    for (int32_t i = 0; i < tk->n_vocab; i++) {
        uint8_t t = tk->toks[i].type;
        n += t == SL_TOKEN_CONTROL || t == SL_TOKEN_USER_DEFINED || t == SL_TOKEN_UNKNOWN;
    }
    len_id *v = malloc((n ? n : 1) * sizeof *v);
    tk->special = malloc((n ? n : 1) * sizeof *tk->special);
    if (!v || !tk->special) {
        free(v);
        return -SL_ENOMEM;
    }
    size_t k = 0;
    for (int32_t i = 0; i < tk->n_vocab; i++) {
        uint8_t t = tk->toks[i].type;
        if (t == SL_TOKEN_CONTROL || t == SL_TOKEN_USER_DEFINED || t == SL_TOKEN_UNKNOWN)
            v[k++] = (len_id){tk->toks[i].text_len, i};
    }
    qsort(v, n, sizeof *v, cmp_len_id);
    for (size_t i = 0; i < n; i++)
        tk->special[i] = v[i].id;
    tk->n_special = n;
    free(v);
    return 0;
}

/* The reference's per-model attributes: Phi-3's special tokens swallow the
 * white space after them, except <unk>, <s> and <|endoftext|>. */
static void apply_model_quirks(const sl_gguf *g, sl_tokenizer *tk)
{
    sl_str name;
    if (sl_gguf_get_str(g, "general.name", &name) < 0)
        return;
    char low[256];
    size_t n = name.len < sizeof low - 1 ? name.len : sizeof low - 1;
    for (size_t i = 0; i < n; i++) {
        char c = name.ptr[i];
        low[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
    low[n] = 0;
    if (!strstr(low, "phi-3") && !strstr(low, "phi3"))
        return;
    for (size_t i = 0; i < tk->n_special; i++)
        tk->toks[tk->special[i]].flags |= TF_RSTRIP;
    int32_t t = find_cstr(tk, "</s>");
    if (t >= 0)
        tk->toks[t].flags |= TF_RSTRIP;
    static const char *const keep[] = {"<unk>", "<s>", "<|endoftext|>"};
    for (size_t i = 0; i < 3; i++) {
        t = find_cstr(tk, keep[i]);
        if (t >= 0)
            tk->toks[t].flags &= (uint8_t)~TF_RSTRIP;
    }
}

/* Writes the decoded bytes of token id to out (when out is not NULL) and
 * returns their count. This is the piece with special tokens rendered;
 * sl_tokenizer_piece hides control tokens when asked. */
static size_t make_piece(const sl_tokenizer *tk, int32_t id, char *out)
{
    size_t n;
    const char *s = tok_text(tk, id, &n);
    uint8_t type = tk->toks[id].type;
    if (type == SL_TOKEN_CONTROL || type == SL_TOKEN_UNKNOWN || type == SL_TOKEN_USER_DEFINED) {
        if (out)
            memcpy(out, s, n);
        return n;
    }
    size_t w = 0;
    if (tk->kind == SL_TOKENIZER_SPM) {
        if (type == SL_TOKEN_BYTE) {
            if (out)
                out[0] = (char)parse_byte_token(s, n);
            return 1;
        }
        if (type != SL_TOKEN_NORMAL)
            return 0;
        for (size_t i = 0; i < n;) {
            if (i + 3 <= n && memcmp(s + i, "\xE2\x96\x81", 3) == 0) {
                if (out)
                    out[w] = ' ';
                w++;
                i += 3;
            } else {
                if (out)
                    out[w] = s[i];
                w++;
                i++;
            }
        }
        return w;
    }
    /* BPE: only normal tokens are written in the byte alphabet; byte,
     * unused and undefined tokens decode to nothing, as in the reference. */
    if (type != SL_TOKEN_NORMAL)
        return 0;
    for (size_t off = 0; off < n;) {
        uint32_t cp = sl_pretok_utf8_next(s, n, &off);
        int b = sl_pretok_cp_to_byte(cp);
        if (b >= 0) {
            if (out)
                out[w] = (char)b;
            w++;
        } else {
            /* Not a byte-alphabet character: kept as UTF-8 (the reference
             * writes a "[UNK_BYTE_0x...]" marker instead). */
            char tmp[4];
            size_t k = sl_pretok_utf8_put(cp, tmp);
            if (out)
                memcpy(out + w, tmp, k);
            w += k;
        }
    }
    return w;
}

static int build_pieces(sl_tokenizer *tk)
{
    size_t total = 0;
    for (int32_t i = 0; i < tk->n_vocab; i++)
        total += make_piece(tk, i, NULL);
    /* A piece is at most 3 bytes per text byte (an invalid byte in a BPE
     * entry decodes to U+FFFD), so this bounds it by the metadata size. */
    if (total > UINT32_MAX) {
        SL_ERROR("the decoded pieces would take %zu bytes", total);
        return -SL_EFORMAT;
    }
    tk->pieces = malloc(total ? total : 1);
    if (!tk->pieces)
        return -SL_ENOMEM;
    size_t off = 0;
    for (int32_t i = 0; i < tk->n_vocab; i++) {
        size_t n = make_piece(tk, i, tk->pieces + off);
        tk->toks[i].piece_off = (uint32_t)off;
        tk->toks[i].piece_len = (uint32_t)n;
        off += n;
        if (n > tk->max_piece)
            tk->max_piece = n;
    }
    return 0;
}

/* The reference looks up <0xXX> and then the byte as a one-byte text. */
static void build_byte_tokens(sl_tokenizer *tk)
{
    for (int b = 0; b < 256; b++) {
        char buf[7];
        snprintf(buf, sizeof buf, "<0x%02X>", b);
        int32_t id = sl_tokenizer_find(tk, buf, 6);
        if (id < 0) {
            char c = (char)b;
            id = sl_tokenizer_find(tk, &c, 1);
        }
        tk->byte_tok[b] = id;
    }
}

static int load_pretok(const sl_gguf *g, sl_tokenizer *tk)
{
    sl_str pre;
    int rc = sl_gguf_get_str(g, "tokenizer.ggml.pre", &pre);
    if (rc == -SL_ENOTFOUND) {
        SL_WARN("tokenizer.ggml.pre is missing; using the 'default' pre-tokenizer");
        pre.ptr = "default";
        pre.len = 7;
    } else if (rc < 0) {
        SL_ERROR("tokenizer.ggml.pre is not a string");
        return -SL_EFORMAT;
    }
    return sl_pretok_new(pre.ptr, pre.len, &tk->pretok);
}

int sl_tokenizer_new(const sl_gguf *g, sl_tokenizer **out)
{
    *out = NULL;
    sl_tokenizer *tk = calloc(1, sizeof *tk);
    if (!tk)
        return -SL_ENOMEM;
    int rc = load_kind(g, tk);
    if (!rc && tk->kind == SL_TOKENIZER_BPE)
        rc = load_pretok(g, tk);
    if (!rc)
        rc = load_tokens(g, tk);
    if (!rc && tk->kind == SL_TOKENIZER_BPE)
        rc = load_merges(g, tk);
    if (!rc)
        rc = load_flags_and_ids(g, tk);
    if (!rc) {
        detect_special(tk);
        if (tk->add_bos && tk->bos < 0) {
            SL_ERROR("tokenizer.ggml.add_bos_token is set but the vocabulary has no BOS token");
            rc = -SL_EFORMAT;
        } else if (tk->add_eos && tk->eos < 0) {
            SL_ERROR("tokenizer.ggml.add_eos_token is set but the vocabulary has no EOS token");
            rc = -SL_EFORMAT;
        }
    }
    if (!rc)
        rc = build_special(tk);
    if (!rc) {
        apply_model_quirks(g, tk);
        rc = build_pieces(tk);
    }
    if (rc) {
        if (rc == -SL_ENOMEM)
            SL_ERROR("out of memory loading a vocabulary of %d tokens", tk->n_vocab);
        sl_tokenizer_free(tk);
        return rc;
    }
    if (tk->kind == SL_TOKENIZER_SPM)
        build_byte_tokens(tk);
    SL_DEBUG("%s tokenizer: %d tokens, %u merges, %zu special, bos %d eos %d",
             tk->kind == SL_TOKENIZER_SPM ? "SPM" : "BPE", tk->n_vocab, tk->n_merges, tk->n_special, tk->bos,
             tk->eos);
    *out = tk;
    return 0;
}

void sl_tokenizer_free(sl_tokenizer *tk)
{
    if (!tk)
        return;
    free(tk->toks);
    free(tk->text);
    free(tk->pieces);
    free(tk->vocab.slots);
    free(tk->merge_off);
    free(tk->merge_len);
    free(tk->merge_text);
    free(tk->merges.slots);
    sl_pretok_free(tk->pretok);
    free(tk->special);
    free(tk);
}

/* ---------------------------------------------------------------------------
 * Encoding
 * ------------------------------------------------------------------------- */

/* Output in snprintf style: everything is counted, what fits is stored. */
typedef struct outbuf {
    int32_t *ids;
    size_t cap, n;
} outbuf;

static void emit(outbuf *o, int32_t id)
{
    if (o->n < o->cap)
        o->ids[o->n] = id;
    o->n++;
}

/* A stretch of the input: raw text (id < 0) or a special token. */
typedef struct frag {
    int32_t id;
    uint32_t off, len;
} frag;

typedef struct fragvec {
    frag *v;
    size_t n, cap;
} fragvec;

static int frag_push(fragvec *f, int32_t id, size_t off, size_t len)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 16;
        frag *v = realloc(f->v, cap * sizeof *v);
        if (!v)
            return -SL_ENOMEM;
        f->v = v;
        f->cap = cap;
    }
    f->v[f->n++] = (frag){id, (uint32_t)off, (uint32_t)len};
    return 0;
}

static bool c_space(char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* Splits one raw stretch [bo, bo+bl) at every occurrence of special token
 * `sid` (leftmost first) into `dst`, honouring its strip flags. */
static int split_stretch(const sl_tokenizer *tk, const char *text, size_t bo, size_t bl, int32_t sid,
                         fragvec *dst)
{
    const tok_entry *te = &tk->toks[sid];
    const char *st = tk->text + te->text_off;
    size_t sn = te->text_len;
    for (;;) {
        const char *m = bl ? memmem(text + bo, bl, st, sn) : NULL;
        if (!m)
            return bl ? frag_push(dst, -1, bo, bl) : 0;
        size_t mo = (size_t)(m - text);
        size_t ll = mo - bo;
        if (te->flags & TF_LSTRIP)
            while (ll > 0 && c_space(text[bo + ll - 1]))
                ll--;
        if (ll && frag_push(dst, -1, bo, ll) < 0)
            return -SL_ENOMEM;
        if (frag_push(dst, sid, mo, sn) < 0)
            return -SL_ENOMEM;
        size_t end = mo + sn;
        if (end >= bo + bl)
            return 0;
        size_t ro = end, rl = bo + bl - end;
        if (te->flags & TF_RSTRIP)
            while (rl > 0 && c_space(text[ro])) {
                ro++;
                rl--;
            }
        bo = ro;
        bl = rl;
    }
}

/* Cuts the text at special tokens, longest token text first: each token is
 * split out of every raw stretch the longer ones left, as the reference
 * does. The result is in *fv; *tmp is work space. */
static int partition(const sl_tokenizer *tk, const char *text, size_t len, bool parse_special, fragvec *fv,
                     fragvec *tmp)
{
    fv->n = 0;
    if (frag_push(fv, -1, 0, len) < 0)
        return -SL_ENOMEM;
    for (size_t k = 0; k < tk->n_special; k++) {
        int32_t sid = tk->special[k];
        const tok_entry *te = &tk->toks[sid];
        if (!parse_special && (te->type == SL_TOKEN_CONTROL || te->type == SL_TOKEN_UNKNOWN))
            continue;
        /* Most tokens occur nowhere: check before rebuilding the list. */
        bool found = false;
        for (size_t i = 0; !found && i < fv->n; i++)
            found = fv->v[i].id < 0 &&
                    memmem(text + fv->v[i].off, fv->v[i].len, tk->text + te->text_off, te->text_len) != NULL;
        if (!found)
            continue;
        tmp->n = 0;
        for (size_t i = 0; i < fv->n; i++) {
            frag f = fv->v[i];
            int rc = f.id >= 0 ? frag_push(tmp, f.id, f.off, f.len)
                               : split_stretch(tk, text, f.off, f.len, sid, tmp);
            if (rc < 0)
                return rc;
        }
        fragvec t = *fv;
        *fv = *tmp;
        *tmp = t;
    }
    return 0;
}

/* Work space for the merge loops, grown to the largest fragment or word. */
typedef struct sym {
    int32_t prev, next;
    uint32_t off, n; /* bytes in the work buffer; n == 0 once merged away */
} sym;

typedef struct bigram {
    double key; /* SPM: score; BPE: -rank. Higher first. */
    int32_t left;
    uint32_t size; /* bytes of both sides when queued: detects stale entries */
} bigram;

typedef struct scratch {
    char *buf;
    size_t buf_cap;
    sym *syms;
    size_t syms_cap;
    bigram *heap;
    size_t heap_cap, heap_n;
} scratch;

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q)
        return -SL_ENOMEM;
    *p = q;
    *cap = c;
    return 0;
}

/* Room for `n_bytes` of work text. */
static int reserve_buf(scratch *ws, size_t n_bytes)
{
    return grow((void **)&ws->buf, &ws->buf_cap, n_bytes + 1, 1);
}

/* Room for `n_syms` symbols; every merge queues at most two bigrams, so 3
 * per symbol bounds the queue. */
static int reserve_syms(scratch *ws, size_t n_syms)
{
    int rc = grow((void **)&ws->syms, &ws->syms_cap, n_syms + 1, sizeof(sym));
    rc = rc ? rc : grow((void **)&ws->heap, &ws->heap_cap, 3 * n_syms + 1, sizeof(bigram));
    ws->heap_n = 0;
    return rc;
}

static void scratch_free(scratch *ws)
{
    free(ws->buf);
    free(ws->syms);
    free(ws->heap);
}

/* Priority queue order: higher key first, then the leftmost pair. Only one
 * live bigram exists per left symbol, so this order is total where it
 * matters and any heap gives the reference's merge sequence. */
static bool before(const bigram *a, const bigram *b)
{
    return a->key > b->key || (a->key == b->key && a->left < b->left);
}

static void heap_push(scratch *ws, bigram b)
{
    SL_ASSERT(ws->heap_n < ws->heap_cap);
    size_t i = ws->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(&b, &ws->heap[p]))
            break;
        ws->heap[i] = ws->heap[p];
        i = p;
    }
    ws->heap[i] = b;
}

static bigram heap_pop(scratch *ws)
{
    bigram top = ws->heap[0], last = ws->heap[--ws->heap_n];
    size_t n = ws->heap_n, i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && before(&ws->heap[c + 1], &ws->heap[c]))
            c++;
        if (!before(&ws->heap[c], &last))
            break;
        ws->heap[i] = ws->heap[c];
        i = c;
    }
    if (n)
        ws->heap[i] = last;
    return top;
}

/* Splits ws->buf[0..n) into one symbol per UTF-8 character (by the lead
 * byte, clipped at the end, as the reference does), first making room for
 * them. Returns the count, or -SL_ENOMEM. */
static long make_symbols(scratch *ws, size_t n)
{
    size_t count = 0;
    for (size_t off = 0; off < n; count++) {
        size_t l = sl_pretok_utf8_len((uint8_t)ws->buf[off]);
        off += l < n - off ? l : n - off;
    }
    if (reserve_syms(ws, count) < 0)
        return -SL_ENOMEM;
    size_t k = 0;
    for (size_t off = 0; off < n; k++) {
        size_t l = sl_pretok_utf8_len((uint8_t)ws->buf[off]);
        if (l > n - off)
            l = n - off;
        ws->syms[k] = (sym){(int32_t)k - 1, -1, (uint32_t)off, (uint32_t)l};
        if (k > 0)
            ws->syms[k - 1].next = (int32_t)k;
        off += l;
    }
    return (long)k;
}

/* Queues the pair (left, right) when the tokenizer would merge it. */
static void try_pair(const sl_tokenizer *tk, scratch *ws, int32_t left, int32_t right)
{
    if (left < 0 || right < 0)
        return;
    const sym *l = &ws->syms[left], *r = &ws->syms[right];
    const char *s = ws->buf + l->off;
    double key;
    if (tk->kind == SL_TOKENIZER_SPM) {
        int32_t id = sl_tokenizer_find(tk, s, l->n + r->n);
        if (id < 0)
            return;
        key = tk->toks[id].score;
    } else {
        int32_t rank = merge_rank(tk, s, l->n, ws->buf + r->off, r->n);
        if (rank < 0)
            return;
        key = -(double)rank;
    }
    heap_push(ws, (bigram){key, left, l->n + r->n});
}

/* The merge loop shared by both models: repeatedly merges the best queued
 * pair that is still current. */
static void merge_all(const sl_tokenizer *tk, scratch *ws, size_t n_syms)
{
    for (size_t i = 1; i < n_syms; i++)
        try_pair(tk, ws, (int32_t)i - 1, (int32_t)i);
    while (ws->heap_n) {
        bigram b = heap_pop(ws);
        sym *l = &ws->syms[b.left];
        if (l->n == 0 || l->next < 0)
            continue;
        sym *r = &ws->syms[l->next];
        /* Both sides unchanged since queued iff the sizes still add up:
         * the left side can only grow by swallowing this right side, and
         * the right side only by swallowing its own right neighbour. */
        if (l->n + r->n != b.size)
            continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (l->next >= 0)
            ws->syms[l->next].prev = b.left;
        try_pair(tk, ws, l->prev, b.left);
        try_pair(tk, ws, b.left, l->next);
    }
}

/* SentencePiece on one raw fragment. */
static int spm_fragment(const sl_tokenizer *tk, const char *s, size_t n, bool prefix, scratch *ws, outbuf *o)
{
    size_t spaces = 0;
    for (size_t i = 0; i < n; i++)
        spaces += s[i] == ' ';
    size_t elen = (prefix ? 3 : 0) + n + 2 * spaces;
    if (reserve_buf(ws, elen) < 0)
        return -SL_ENOMEM;
    size_t w = 0;
    if (prefix) {
        memcpy(ws->buf, "\xE2\x96\x81", 3);
        w = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(ws->buf + w, "\xE2\x96\x81", 3);
            w += 3;
        } else {
            ws->buf[w++] = s[i];
        }
    }
    long n_syms = make_symbols(ws, w);
    if (n_syms <= 0)
        return (int)n_syms;
    merge_all(tk, ws, (size_t)n_syms);
    for (int32_t i = 0; i >= 0; i = ws->syms[i].next) {
        const sym *y = &ws->syms[i];
        int32_t id = sl_tokenizer_find(tk, ws->buf + y->off, y->n);
        if (id >= 0) {
            emit(o, id);
            continue;
        }
        /* Not in the vocabulary: its bytes. A vocabulary without byte
         * tokens makes the reference throw; the unknown token stands in. */
        for (uint32_t j = 0; j < y->n; j++) {
            int32_t bt = tk->byte_tok[(uint8_t)ws->buf[y->off + j]];
            if (bt < 0)
                bt = tk->unk;
            if (bt >= 0)
                emit(o, bt);
        }
    }
    return 0;
}

typedef struct bpe_ctx {
    const sl_tokenizer *tk;
    scratch *ws;
    outbuf *o;
} bpe_ctx;

/* BPE on one word from the pre-tokenizer. */
static int bpe_word(void *vctx, const char *word, size_t n)
{
    bpe_ctx *c = vctx;
    const sl_tokenizer *tk = c->tk;
    scratch *ws = c->ws;
    if (reserve_buf(ws, 2 * n) < 0)
        return -SL_ENOMEM;
    size_t w = 0;
    for (size_t i = 0; i < n; i++)
        w += sl_pretok_utf8_put(sl_pretok_byte_to_cp((uint8_t)word[i]), ws->buf + w);
    if (tk->ignore_merges) {
        int32_t id = sl_tokenizer_find(tk, ws->buf, w);
        if (id >= 0) {
            emit(c->o, id);
            return 0;
        }
    }
    long n_syms = make_symbols(ws, w);
    if (n_syms <= 0)
        return (int)n_syms;
    merge_all(tk, ws, (size_t)n_syms);
    for (int32_t i = 0; i >= 0; i = ws->syms[i].next) {
        const sym *y = &ws->syms[i];
        int32_t id = sl_tokenizer_find(tk, ws->buf + y->off, y->n);
        if (id >= 0) {
            emit(c->o, id);
            continue;
        }
        /* A merge result missing from the vocabulary: the reference looks
         * each byte up as a one-byte text, which finds only ASCII. */
        for (uint32_t j = 0; j < y->n; j++) {
            id = sl_tokenizer_find(tk, ws->buf + y->off + j, 1);
            if (id >= 0)
                emit(c->o, id);
        }
    }
    return 0;
}

int sl_tokenizer_encode(const sl_tokenizer *tk, const char *text, size_t len, unsigned flags, int32_t *out,
                        size_t cap)
{
    if (len > SL_TOKENIZER_MAX_TEXT) {
        SL_ERROR("text of %zu bytes is longer than the limit of %zu", len, SL_TOKENIZER_MAX_TEXT);
        return -SL_EINVAL;
    }
    if (!out && cap) {
        SL_ERROR("no output buffer for %zu tokens", cap);
        return -SL_EINVAL;
    }
    outbuf o = {out, cap, 0};
    fragvec fv = {0}, tmp = {0};
    scratch ws = {0};
    int rc = 0;
    if (len)
        rc = partition(tk, text, len, flags & SL_TOK_PARSE_SPECIAL, &fv, &tmp);
    bool add = flags & SL_TOK_ADD_SPECIAL;
    if (!rc && add && tk->add_bos)
        emit(&o, tk->bos);
    bool prev_special = true; /* SentencePiece: the text starts a word */
    for (size_t i = 0; !rc && i < fv.n; i++) {
        const frag *f = &fv.v[i];
        if (f->id >= 0) {
            emit(&o, f->id);
            prev_special = true;
        } else if (tk->kind == SL_TOKENIZER_SPM) {
            rc = spm_fragment(tk, text + f->off, f->len, tk->add_space_prefix && prev_special, &ws, &o);
            prev_special = false;
        } else {
            bpe_ctx c = {tk, &ws, &o};
            rc = sl_pretok_split(tk->pretok, text + f->off, f->len, bpe_word, &c);
        }
    }
    if (!rc && add && tk->add_eos)
        emit(&o, tk->eos);
    free(fv.v);
    free(tmp.v);
    scratch_free(&ws);
    if (rc == -SL_ENOMEM)
        SL_ERROR("out of memory tokenizing %zu bytes", len);
    return rc ? rc : (int)o.n;
}

/* ---------------------------------------------------------------------------
 * Decoding
 * ------------------------------------------------------------------------- */

int sl_tokenizer_piece(const sl_tokenizer *tk, int32_t id, unsigned flags, const char **bytes, size_t *len)
{
    if (id < 0 || id >= tk->n_vocab)
        return -SL_ERANGE;
    const tok_entry *t = &tk->toks[id];
    if (!(flags & SL_TOK_RENDER_SPECIAL) && (t->type == SL_TOKEN_CONTROL || t->type == SL_TOKEN_UNKNOWN)) {
        *bytes = tk->pieces;
        *len = 0;
        return 0;
    }
    *bytes = tk->pieces + t->piece_off;
    *len = t->piece_len;
    return 0;
}

/* The reference's clean-up of tokenization spaces, in place over t[0..n);
 * returns the new length. Three passes, each reading the text as the
 * previous pass left it. */
static size_t clean_spaces(char *t, size_t n)
{
    /* " ?", " !", " .", " ," lose the space. */
    size_t w = n ? 1 : 0;
    for (size_t i = 1; i < n; i++) {
        char x = t[i];
        if (t[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ','))
            w--;
        t[w++] = x;
    }
    /* " ' " becomes "'"; the space after is consumed, and the next
     * character then counts as following a non-space. */
    n = w;
    w = n ? 1 : 0;
    for (size_t i = 1; i < n; i++) {
        char x = t[i];
        if (x == '\'' && i + 1 < n && t[i - 1] == ' ' && t[i + 1] == ' ') {
            w--;
            t[++i] = '\0';
        }
        t[w++] = x;
    }
    /* " 's", " 'm", " 're", " 've" lose the space (" 't", " 'd", " 'll" keep it). */
    n = w;
    w = n ? 1 : 0;
    for (size_t i = 1; i < n; i++) {
        char x = t[i];
        if (t[i - 1] == ' ' && x == '\'' && i + 1 < n) {
            char x1 = t[i + 1];
            if (x1 == 's' || x1 == 'm')
                w--;
            else if (x1 != 't' && x1 != 'd' && i + 2 < n) {
                char x2 = t[i + 2];
                if ((x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e'))
                    w--;
            }
        }
        t[w++] = x;
    }
    return w;
}

long sl_tokenizer_decode(const sl_tokenizer *tk, const int32_t *ids, size_t n, unsigned flags, char *out,
                         size_t cap)
{
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= tk->n_vocab) {
            SL_ERROR("token %d at position %zu is outside the vocabulary of %d", ids[i], i, tk->n_vocab);
            return -SL_ERANGE;
        }
    }
    bool remove_space = tk->add_space_prefix;
    if ((flags & SL_TOK_REMOVE_SPECIAL) && tk->add_bos && n > 0 && ids[0] == tk->bos) {
        remove_space = false; /* sic: the reference keeps the space after a removed BOS */
        ids++;
        n--;
    }
    if ((flags & SL_TOK_REMOVE_SPECIAL) && tk->add_eos && n > 0 && ids[n - 1] == tk->eos)
        n--;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = NULL;
        size_t pl = 0;
        sl_tokenizer_piece(tk, ids[i], flags, &p, &pl); /* ids were checked above */
        if (remove_space && pl > 0 && p[0] == ' ') {
            p++;
            pl--;
        }
        remove_space = false;
        if (total < cap)
            memcpy(out + total, p, pl < cap - total ? pl : cap - total);
        total += pl;
    }
    /* Cleaning needs the whole text; when it did not fit, the count is an
     * upper bound and the caller retries with that much room. */
    if (tk->clean_spaces && total <= cap && total)
        total = clean_spaces(out, total);
    return (long)total;
}

/* ---------------------------------------------------------------------------
 * Accessors
 * ------------------------------------------------------------------------- */

size_t sl_tokenizer_max_piece(const sl_tokenizer *tk)
{
    return tk->max_piece;
}
sl_tokenizer_kind sl_tokenizer_kind_get(const sl_tokenizer *tk)
{
    return tk->kind;
}
int32_t sl_tokenizer_n_vocab(const sl_tokenizer *tk)
{
    return tk->n_vocab;
}
int32_t sl_tokenizer_bos(const sl_tokenizer *tk)
{
    return tk->bos;
}
int32_t sl_tokenizer_eos(const sl_tokenizer *tk)
{
    return tk->eos;
}
int32_t sl_tokenizer_eot(const sl_tokenizer *tk)
{
    return tk->eot;
}
int32_t sl_tokenizer_eom(const sl_tokenizer *tk)
{
    return tk->eom;
}
int32_t sl_tokenizer_unk(const sl_tokenizer *tk)
{
    return tk->unk;
}
int32_t sl_tokenizer_pad(const sl_tokenizer *tk)
{
    return tk->pad;
}
bool sl_tokenizer_add_bos(const sl_tokenizer *tk)
{
    return tk->add_bos;
}
bool sl_tokenizer_add_eos(const sl_tokenizer *tk)
{
    return tk->add_eos;
}

bool sl_tokenizer_is_eog(const sl_tokenizer *tk, int32_t id)
{
    return id >= 0 && id < tk->n_vocab && (tk->toks[id].flags & TF_EOG);
}

const char *sl_tokenizer_token_text(const sl_tokenizer *tk, int32_t id, size_t *len)
{
    if (id < 0 || id >= tk->n_vocab)
        return NULL;
    return tok_text(tk, id, len);
}

sl_token_type sl_tokenizer_token_type(const sl_tokenizer *tk, int32_t id)
{
    if (id < 0 || id >= tk->n_vocab)
        return SL_TOKEN_UNDEFINED;
    return (sl_token_type)tk->toks[id].type;
}
