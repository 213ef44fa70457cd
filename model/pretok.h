/* Pre-tokenizers for byte-level BPE vocabularies (`tokenizer.ggml.model` =
 * "gpt2"), chosen by the GGUF key `tokenizer.ggml.pre`.
 *
 * A pre-tokenizer cuts text into words before BPE merges run; merges never
 * cross a word boundary. Each named pre-tokenizer is an ordered list of
 * regular expressions. The first is applied to the whole text; every later
 * one is applied to each piece the previous ones produced. Inside a piece,
 * both the matches and the stretches between them become pieces, so no
 * byte is ever dropped.
 *
 * The expressions are those of the reference toolchain, and so is the
 * treatment of the text before matching: invalid UTF-8 bytes are decoded
 * leniently (each becomes U+FFFD), and every non-ASCII white-space code
 * point is matched as if it were U+000B, so that `\s` means exactly the
 * reference's set of white space while the words keep the original
 * characters.
 *
 * Also here: the GPT-2 byte-to-code-point table that byte-level BPE
 * vocabularies are written in, and the lenient UTF-8 codec the tokenizer
 * shares with the splitter. */
#ifndef SL_MODEL_PRETOK_H
#define SL_MODEL_PRETOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sl_pretok sl_pretok;

/* Behaviour that the reference toolchain ties to a pre-tokenizer name. */
typedef struct sl_pretok_traits {
    bool clean_spaces;  /* batch decoding removes the space before , . ! ? and some contractions */
    bool ignore_merges; /* a word that is itself a vocabulary entry is one token, merges skipped */
    bool add_bos;       /* default of tokenizer.ggml.add_bos_token when the file does not say */
} sl_pretok_traits;

/* Called for each word in text order with the word's UTF-8 bytes (not yet
 * byte-mapped). Return 0 to go on; a negative value stops the split, which
 * returns it. */
typedef int (*sl_pretok_word_fn)(void *ctx, const char *word, size_t len);

/* Compiles the pre-tokenizer named `name` (the value of tokenizer.ggml.pre,
 * `len` bytes, not NUL-terminated). Returns 0 and a new handle in *out
 * (owned by the caller: sl_pretok_free); -SL_EUNSUPPORTED with a log line
 * naming it when the name is unknown; -SL_ENOMEM. Does not block. */
int sl_pretok_new(const char *name, size_t len, sl_pretok **out);

/* Releases the handle. NULL is accepted. */
void sl_pretok_free(sl_pretok *p);

/* The traits of the pre-tokenizer (valid while the handle lives). */
const sl_pretok_traits *sl_pretok_traits_get(const sl_pretok *p);

/* Canonical name of the regular-expression family in use (static string). */
const char *sl_pretok_family(const sl_pretok *p);

/* Splits `len` bytes of text into words and calls fn(ctx, word, n) for each,
 * in order; an empty text produces no call. Allocates temporary memory of
 * about 40 bytes per input byte and frees it before returning. Returns 0,
 * the callback's negative value, -SL_EINVAL when len exceeds
 * SL_PRETOK_MAX_TEXT, -SL_ENOMEM, or -SL_ERANGE (logged) when the regular
 * expression engine gives up on the input. Thread-safe: a handle may be
 * used by several threads at once. */
#define SL_PRETOK_MAX_TEXT ((size_t)1 << 30)
int sl_pretok_split(const sl_pretok *p, const char *text, size_t len, sl_pretok_word_fn fn, void *ctx);

/* GPT-2 byte-level alphabet: the code point that stands for byte b in a
 * vocabulary entry, and back (-1 for a code point that stands for no byte). */
uint32_t sl_pretok_byte_to_cp(uint8_t b);
int sl_pretok_cp_to_byte(uint32_t cp);

/* Lenient UTF-8 decoding as the reference does it: decodes the sequence at
 * s[*off] (*off < len), advances *off and returns the code point. A byte
 * that cannot start a sequence, or a sequence cut short or with a bad
 * continuation byte, yields U+FFFD and advances one byte. Overlong forms and
 * surrogates are accepted as they are. */
uint32_t sl_pretok_utf8_next(const char *s, size_t len, size_t *off);

/* Writes the UTF-8 form of cp to out (room for 4 bytes) and returns its
 * length; code points above U+10FFFF are written as U+FFFD. */
size_t sl_pretok_utf8_put(uint32_t cp, char *out);

/* Byte length of the UTF-8 sequence that starts with byte c, from its high
 * four bits (1 for ASCII and for continuation bytes). */
size_t sl_pretok_utf8_len(uint8_t c);

#endif
