/* Tokenizers built from GGUF metadata: SentencePiece-style vocabularies
 * (`tokenizer.ggml.model` = "llama") and byte-level BPE ("gpt2", with the
 * pre-tokenizer named by `tokenizer.ggml.pre`, see model/pretok.h).
 *
 * Behaviour follows the reference toolchain token for token, including its
 * choices where the original tokenizers leave room:
 *  - Text is first cut at special tokens. Control and unknown-type tokens
 *    are recognised in the text only when SL_TOK_PARSE_SPECIAL is given;
 *    user-defined tokens always are (they are "added tokens" that the
 *    original tokenizers split off before anything else). Longer token
 *    texts are looked for first.
 *  - SentencePiece: a space is put before the text at the start and after
 *    every special token when the vocabulary asks for it
 *    (tokenizer.ggml.add_space_prefix, default true), spaces become U+2581,
 *    the pair of adjacent pieces whose concatenation is the vocabulary entry
 *    with the highest score is merged first (the leftmost on ties), and a
 *    piece that is not in the vocabulary is written as its bytes <0xXX>.
 *  - BPE: the pre-tokenizer splits the text into words, each word's bytes
 *    are written in the GPT-2 byte alphabet, and the pair with the lowest
 *    merge rank is merged first (the leftmost on ties).
 *  - Tokens whose text looks like an end-of-turn marker (<|eot_id|>,
 *    <|im_end|>, <|endoftext|>, ...) are treated as control tokens and end
 *    generation, and fill in EOT/EOM/FIM ids the metadata does not give.
 *
 * A tokenizer copies what it needs out of the GGUF handle: the handle may be
 * closed afterwards. After sl_tokenizer_new it is immutable, and every
 * function here may be called from several threads at once. */
#ifndef SL_MODEL_TOKENIZER_H
#define SL_MODEL_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/gguf.h"

typedef struct sl_tokenizer sl_tokenizer;

typedef enum sl_tokenizer_kind {
    SL_TOKENIZER_SPM = 1, /* "llama": SentencePiece, scores and byte fallback */
    SL_TOKENIZER_BPE = 2, /* "gpt2": byte-level BPE with merges */
} sl_tokenizer_kind;

/* Token types, as stored in tokenizer.ggml.token_type. */
typedef enum sl_token_type {
    SL_TOKEN_UNDEFINED = 0,
    SL_TOKEN_NORMAL = 1,
    SL_TOKEN_UNKNOWN = 2,
    SL_TOKEN_CONTROL = 3,
    SL_TOKEN_USER_DEFINED = 4,
    SL_TOKEN_UNUSED = 5,
    SL_TOKEN_BYTE = 6,
} sl_token_type;

/* Encode flags. */
#define SL_TOK_ADD_SPECIAL 1u   /* add BOS (and EOS) when the vocabulary says to */
#define SL_TOK_PARSE_SPECIAL 2u /* recognise control tokens written in the text */

/* Decode flags. */
#define SL_TOK_RENDER_SPECIAL 1u /* control and unknown tokens give their text (else nothing) */
#define SL_TOK_REMOVE_SPECIAL 2u /* batch decode: drop a leading BOS / trailing EOS the vocabulary adds */

/* Limit on the text given to sl_tokenizer_encode (16 MiB, some four million
 * tokens): it bounds the temporary memory an encode call may take. */
#define SL_TOKENIZER_MAX_TEXT ((size_t)1 << 24)

/* Builds the tokenizer described by g's tokenizer.ggml.* metadata. Every
 * field is validated: arrays must have the right element types and equal
 * lengths, token ids must lie inside the vocabulary (UINT32_MAX or -1,
 * which converters write for "none", leave the model's default id), token
 * types must be known, SentencePiece byte tokens must read <0xXX>, token
 * texts must be distinct and at most 1 MiB long. Returns 0 and stores a
 * new handle in *out (owned by the caller: sl_tokenizer_free); on failure
 * leaves *out NULL and returns -SL_EFORMAT (bad or missing metadata), -SL_EUNSUPPORTED
 * (a tokenizer model or pre-tokenizer sluice does not implement; the log
 * line names it) or -SL_ENOMEM, after one log line that says why. Memory
 * used is bounded by the size of the metadata. Does not block. */
int sl_tokenizer_new(const sl_gguf *g, sl_tokenizer **out);

/* Releases the tokenizer. NULL is accepted. */
void sl_tokenizer_free(sl_tokenizer *tk);

/* Tokenizes `len` bytes of text (any bytes; invalid UTF-8 is accepted and
 * handled as the reference does). Like snprintf, returns the number of
 * tokens the text encodes to, and stores the first min(that, cap) of them in
 * out (out may be NULL when cap is 0): a result above cap means the buffer
 * was too small, and the call can be repeated with cap = the result. The
 * count never exceeds 6 * len + 5 (a space that SentencePiece must write as
 * bytes takes three tokens). Errors: -SL_EINVAL (len above
 * SL_TOKENIZER_MAX_TEXT), -SL_ENOMEM, -SL_ERANGE (the pre-tokenizer's
 * regular expression engine gave up), each logged. Allocates temporary
 * memory, about 70 bytes per input byte (100 for pathological input), and
 * frees it before returning. */
int sl_tokenizer_encode(const sl_tokenizer *tk, const char *text, size_t len, unsigned flags, int32_t *out,
                        size_t cap);

/* Decodes a sequence of tokens to bytes as the reference's batch
 * detokenizer does: each token's piece (see sl_tokenizer_piece), where the
 * first token loses one leading space when the vocabulary adds a space
 * prefix, unless SL_TOK_REMOVE_SPECIAL removed a BOS in front of it; then,
 * for vocabularies that ask for it, the spaces before , . ! ? and before
 * 's 'm 're 've are removed and " ' " becomes "'". When the text fits in
 * cap, returns its byte count (no NUL terminator is written). When it does
 * not, writes a prefix and returns an upper bound on the count (the space
 * clean-up needs the whole text): call again with at least that much room,
 * and use the second result. -SL_ERANGE (logged) for an id outside the
 * vocabulary. Allocates nothing. */
long sl_tokenizer_decode(const sl_tokenizer *tk, const int32_t *ids, size_t n, unsigned flags, char *out,
                         size_t cap);

/* The bytes token `id` stands for, with flags as for decode (only
 * SL_TOK_RENDER_SPECIAL matters): SentencePiece pieces have U+2581 turned
 * into spaces and <0xXX> into the byte; BPE pieces are mapped back from the
 * byte alphabet; user-defined tokens give their text; unused, undefined and
 * (without RENDER_SPECIAL) control and unknown tokens give nothing. Stores a
 * pointer into the tokenizer (valid until sl_tokenizer_free) and the length;
 * returns 0 or -SL_ERANGE (not logged) for an id outside the vocabulary.
 * A piece may be an incomplete UTF-8 sequence: see model/detok.h. */
int sl_tokenizer_piece(const sl_tokenizer *tk, int32_t id, unsigned flags, const char **bytes, size_t *len);

/* Length of the longest piece (bytes), for sizing stream buffers. */
size_t sl_tokenizer_max_piece(const sl_tokenizer *tk);

/* --- accessors: none fails, allocates or blocks --- */

/* Which of the two tokenizer models this is. */
sl_tokenizer_kind sl_tokenizer_kind_get(const sl_tokenizer *tk);
/* Number of tokens in the vocabulary; valid ids are 0 .. n_vocab-1. */
int32_t sl_tokenizer_n_vocab(const sl_tokenizer *tk);
/* Beginning-of-sequence token, or -1 when the vocabulary has none. */
int32_t sl_tokenizer_bos(const sl_tokenizer *tk);
/* End-of-sequence token, or -1. */
int32_t sl_tokenizer_eos(const sl_tokenizer *tk);
/* End-of-turn token (from the metadata, else found by its text), or -1. */
int32_t sl_tokenizer_eot(const sl_tokenizer *tk);
/* End-of-message token (Llama 3.1 tool calls), or -1. */
int32_t sl_tokenizer_eom(const sl_tokenizer *tk);
/* Unknown token, or -1. */
int32_t sl_tokenizer_unk(const sl_tokenizer *tk);
/* Padding token, or -1. */
int32_t sl_tokenizer_pad(const sl_tokenizer *tk);
/* Whether encoding with SL_TOK_ADD_SPECIAL puts BOS first. */
bool sl_tokenizer_add_bos(const sl_tokenizer *tk);
/* Whether encoding with SL_TOK_ADD_SPECIAL puts EOS last. */
bool sl_tokenizer_add_eos(const sl_tokenizer *tk);
/* True when generating `id` ends the turn (EOS, EOT, EOM and the other
 * end-of-generation tokens); false for ids outside the vocabulary. */
bool sl_tokenizer_is_eog(const sl_tokenizer *tk, int32_t id);
/* The vocabulary entry of `id` as stored (not decoded; for BPE in the byte
 * alphabet), its length in *len; NULL for an id outside the vocabulary.
 * Points into the tokenizer, valid until sl_tokenizer_free. */
const char *sl_tokenizer_token_text(const sl_tokenizer *tk, int32_t id, size_t *len);
/* The token's type (after the reference's overrides: end-of-turn texts
 * count as control); SL_TOKEN_UNDEFINED for an id outside the vocabulary. */
sl_token_type sl_tokenizer_token_type(const sl_tokenizer *tk, int32_t id);
/* The id whose vocabulary entry is exactly `len` bytes at text, or -1. */
int32_t sl_tokenizer_find(const sl_tokenizer *tk, const char *text, size_t len);

#endif
