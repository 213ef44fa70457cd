/* Pre-tokenizers for byte-level BPE: the regular expressions per
 * `tokenizer.ggml.pre`, the splitter that applies them, the GPT-2 byte
 * alphabet and a lenient UTF-8 codec. See pretok.h. */
#include "model/pretok.h"

#include "common/log.h"

#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* ---------------------------------------------------------------------------
 * The expressions. They are the reference toolchain's, written for PCRE2.
 * Non-ASCII characters are spelled as \x{...} so that no editor or
 * normalisation step can silently change a range end-point.
 * ------------------------------------------------------------------------- */

/* GPT-2's own expression; most other lists reuse it. */
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"

/* Llama 3 and Qwen2. The originals start with a case-insensitive group
 * (?i:'s|'t|...); spelling the cases out keeps the match to ASCII letters,
 * as the reference does (a caseless match would also take e.g. U+017F). */
#define RE_CONTRACTIONS "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
#define RE_LLAMA3                                                                                            \
    RE_CONTRACTIONS                                                                                          \
    "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"               \
    "\\s+(?!\\S)|\\s+"
#define RE_QWEN2                                                                                             \
    RE_CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"    \
                    "\\s+(?!\\S)|\\s+"

/* CJK ideographs, the range below them, and Hangul (DeepSeek). */
#define RE_DEEPSEEK_CJK "[\\x{4E00}-\\x{9FA5}\\x{0800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+"

/* DeepSeek LLM's letter class: ranges of cased letters, as the reference
 * lists them. */
#define RE_DEEPSEEK_LETTERS                                                                                  \
    "\\s?[A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}\\x{1C4}-\\x{293}"     \
    "\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}\\x{37F}\\x{386}\\x{388}-\\x{38A}"   \
    "\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}"          \
    "\\x{10A0}-\\x{10C5}\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}"        \
    "\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}\\x{1F18}-\\x{1F1D}"        \
    "\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}\\x{1F59}\\x{1F5B}\\x{1F5D}"                   \
    "\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}\\x{1FC2}-\\x{1FC4}"                  \
    "\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}"        \
    "\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}"          \
    "\\x{2126}\\x{2128}\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}"                   \
    "\\x{2145}-\\x{2149}\\x{214E}\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}"                   \
    "\\x{2CEB}-\\x{2CEE}\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}"         \
    "\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}"        \
    "\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}\\x{104B0}-\\x{104D3}"                       \
    "\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}"                   \
    "\\x{1E900}-\\x{1E943}]+"

/* ASCII punctuation and symbols, their full-width forms, curly quotes and
 * the CJK space, comma and full stop (DeepSeek LLM). The CJK space is seen
 * as U+000B (see subject_cp), so it never matches here, as in the
 * reference. */
#define RE_DEEPSEEK_PUNCT                                                                                    \
    "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+"

#define MAX_EXPRS 6

typedef struct family {
    const char *name;
    const char *exprs[MAX_EXPRS + 1]; /* NULL-terminated */
} family;

enum {
    FAM_DEFAULT,
    FAM_LLAMA3,
    FAM_DEEPSEEK_LLM,
    FAM_DEEPSEEK_CODER,
    FAM_FALCON,
    FAM_STARCODER,
    FAM_GPT2,
    FAM_QWEN2,
};

static const family families[] = {
    [FAM_DEFAULT] = {"default", {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]", NULL}},
    [FAM_LLAMA3] = {"llama3", {RE_LLAMA3, NULL}},
    [FAM_DEEPSEEK_LLM] = {"deepseek-llm",
                          {"[\r\n]", RE_DEEPSEEK_LETTERS, RE_DEEPSEEK_PUNCT, "\\s+$", RE_DEEPSEEK_CJK,
                           "\\p{N}+", NULL}},
    [FAM_DEEPSEEK_CODER] = {"deepseek-coder",
                            {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", RE_DEEPSEEK_CJK, "\\p{N}", NULL}},
    [FAM_FALCON] = {"falcon", {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]", NULL}},
    [FAM_STARCODER] = {"starcoder", {"\\p{N}", RE_GPT2, NULL}},
    [FAM_GPT2] = {"gpt-2", {RE_GPT2, NULL}},
    [FAM_QWEN2] = {"qwen2", {RE_QWEN2, NULL}},
};

/* `tokenizer.ggml.pre` values and what they mean, as the reference maps them. */
typedef struct pre_name {
    const char *name;
    int fam;
    sl_pretok_traits traits; /* clean_spaces, ignore_merges, add_bos */
} pre_name;

static const pre_name pre_names[] = {
    {"default", FAM_DEFAULT, {true, false, false}},
    {"llama3", FAM_LLAMA3, {true, true, true}},
    {"llama-v3", FAM_LLAMA3, {true, true, true}},
    {"llama-bpe", FAM_LLAMA3, {true, true, true}},
    {"falcon3", FAM_LLAMA3, {true, true, true}},
    {"falcon-h1", FAM_LLAMA3, {true, true, true}},
    {"pixtral", FAM_LLAMA3, {true, true, true}},
    {"dbrx", FAM_LLAMA3, {true, false, false}},
    {"smaug-bpe", FAM_LLAMA3, {true, false, false}},
    {"deepseek-llm", FAM_DEEPSEEK_LLM, {false, false, false}},
    {"deepseek-coder", FAM_DEEPSEEK_CODER, {false, false, false}},
    {"falcon", FAM_FALCON, {true, false, false}},
    {"starcoder", FAM_STARCODER, {true, false, false}},
    {"refact", FAM_STARCODER, {true, false, false}},
    {"codeshell", FAM_STARCODER, {true, false, false}},
    {"exaone", FAM_STARCODER, {true, false, false}},
    {"minerva-7b", FAM_STARCODER, {true, false, false}},
    {"command-r", FAM_STARCODER, {false, false, false}},
    {"smollm", FAM_STARCODER, {false, false, false}},
    {"gpt-2", FAM_GPT2, {true, false, false}},
    {"phi-2", FAM_GPT2, {true, false, false}},
    {"jina-es", FAM_GPT2, {true, false, false}},
    {"jina-de", FAM_GPT2, {true, false, false}},
    {"jina-v1-en", FAM_GPT2, {true, false, false}},
    {"jina-v2-es", FAM_GPT2, {true, false, false}},
    {"jina-v2-de", FAM_GPT2, {true, false, false}},
    {"jina-v2-code", FAM_GPT2, {true, false, false}},
    {"roberta-bpe", FAM_GPT2, {true, false, false}},
    {"gigachat", FAM_GPT2, {true, false, false}},
    {"exaone4", FAM_GPT2, {true, false, false}},
    {"mpt", FAM_GPT2, {true, false, false}},
    {"olmo", FAM_GPT2, {true, false, false}},
    {"jais", FAM_GPT2, {true, false, false}},
    {"trillion", FAM_GPT2, {false, false, false}},
    {"qwen2", FAM_QWEN2, {false, false, false}},
    {"deepseek-r1-qwen", FAM_QWEN2, {false, false, false}},
    {"hunyuan", FAM_QWEN2, {false, false, false}},
    {"stablelm2", FAM_QWEN2, {true, false, false}},
    {"megrez", FAM_QWEN2, {true, false, false}},
};

struct sl_pretok {
    int fam;
    sl_pretok_traits traits;
    int n_codes;
    pcre2_code *codes[MAX_EXPRS];
};

/* ---------------------------------------------------------------------------
 * UTF-8 and the byte alphabet
 * ------------------------------------------------------------------------- */

size_t sl_pretok_utf8_len(uint8_t c)
{
    static const uint8_t lens[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lens[c >> 4];
}

uint32_t sl_pretok_utf8_next(const char *s, size_t len, size_t *off)
{
    const uint8_t *p = (const uint8_t *)s + *off;
    size_t left = len - *off;
    SL_ASSERT(*off < len);
    uint8_t c = p[0];
    size_t n;
    uint32_t cp;
    if (c < 0x80) {
        *off += 1;
        return c;
    } else if ((c & 0xE0) == 0xC0) {
        n = 2;
        cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3;
        cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4;
        cp = c & 0x07;
    } else {
        *off += 1; /* a continuation byte or 0xF8..0xFF cannot start a sequence */
        return 0xFFFD;
    }
    if (left < n) {
        *off += 1;
        return 0xFFFD;
    }
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) {
            *off += 1;
            return 0xFFFD;
        }
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    *off += n;
    return cp;
}

size_t sl_pretok_utf8_put(uint32_t cp, char *out)
{
    uint8_t *o = (uint8_t *)out;
    if (cp < 0x80) {
        o[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (uint8_t)(0xC0 | (cp >> 6));
        o[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xE0 | (cp >> 12));
        o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    if (cp > 0x10FFFF)
        return sl_pretok_utf8_put(0xFFFD, out);
    o[0] = (uint8_t)(0xF0 | (cp >> 18));
    o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* GPT-2 keeps the printable bytes 0x21..0x7E, 0xA1..0xAC and 0xAE..0xFF as
 * the code points of the same value and moves the other 68 bytes, in
 * order, to U+0100..U+0143, so that every byte has a visible character. */
uint32_t sl_pretok_byte_to_cp(uint8_t b)
{
    if (b <= 0x20)
        return 0x100u + b;
    if (b >= 0x7F && b <= 0xA0)
        return 0x100u + 33 + (b - 0x7Fu);
    if (b == 0xAD)
        return 0x100u + 67;
    return b;
}

int sl_pretok_cp_to_byte(uint32_t cp)
{
    if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF))
        return (int)cp;
    if (cp >= 0x100 && cp <= 0x120)
        return (int)(cp - 0x100);
    if (cp >= 0x121 && cp <= 0x142)
        return (int)(cp - 0x121 + 0x7F);
    if (cp == 0x143)
        return 0xAD;
    return -1;
}

/* The reference's white space: the Unicode White_Space property. */
static bool is_white_space(uint32_t cp)
{
    if (cp < 0x80)
        return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20;
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
           cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/* The code point the expressions see in place of cp. Non-ASCII white space
 * becomes U+000B, as in the reference, which lets `\s` stay the six ASCII
 * spaces. PCRE2's `\s` also takes U+180E (white space in old Unicode, a
 * format character now): it becomes U+200B, another format character that
 * is not white space. Code points PCRE2 cannot take in UTF-8 (surrogates,
 * beyond U+10FFFF) become U+FFFD; none of the expressions tells them apart. */
static uint32_t subject_cp(uint32_t cp)
{
    if (cp < 0x80)
        return cp;
    if (is_white_space(cp))
        return 0x0B;
    if (cp == 0x180E)
        return 0x200B;
    if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
        return 0xFFFD;
    return cp;
}

/* ---------------------------------------------------------------------------
 * Handles
 * ------------------------------------------------------------------------- */

int sl_pretok_new(const char *name, size_t len, sl_pretok **out)
{
    *out = NULL;
    const pre_name *pn = NULL;
    for (size_t i = 0; i < sizeof pre_names / sizeof pre_names[0]; i++) {
        if (strlen(pre_names[i].name) == len && memcmp(pre_names[i].name, name, len) == 0) {
            pn = &pre_names[i];
            break;
        }
    }
    if (!pn) {
        SL_ERROR("pre-tokenizer '%.*s' (tokenizer.ggml.pre) is not supported", (int)(len > 200 ? 200 : len),
                 name);
        return -SL_EUNSUPPORTED;
    }
    sl_pretok *p = calloc(1, sizeof *p);
    if (!p)
        return -SL_ENOMEM;
    p->fam = pn->fam;
    p->traits = pn->traits;
    const family *f = &families[pn->fam];
    for (int i = 0; f->exprs[i]; i++) {
        int err;
        PCRE2_SIZE eoff;
        /* DOLLAR_ENDONLY: `$` must mean the end of the piece, not also
         * "before a final newline", to match the reference's engine. */
        p->codes[i] = pcre2_compile((PCRE2_SPTR)f->exprs[i], PCRE2_ZERO_TERMINATED,
                                    PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &err, &eoff, NULL);
        /* The expressions are constants of this file: one that does not
         * compile is a bug here, not bad input. */
        SL_ASSERT(p->codes[i] != NULL);
        p->n_codes = i + 1;
        /* JIT is an optimisation only: without it PCRE2 interprets. */
        (void)pcre2_jit_compile(p->codes[i], PCRE2_JIT_COMPLETE);
    }
    *out = p;
    return 0;
}

void sl_pretok_free(sl_pretok *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->n_codes; i++)
        pcre2_code_free(p->codes[i]);
    free(p);
}

const sl_pretok_traits *sl_pretok_traits_get(const sl_pretok *p)
{
    return &p->traits;
}

const char *sl_pretok_family(const sl_pretok *p)
{
    return families[p->fam].name;
}

/* ---------------------------------------------------------------------------
 * Splitting
 * ------------------------------------------------------------------------- */

typedef struct span {
    size_t b, e; /* byte range in the subject */
} span;

/* Splits every piece of `in` with one expression into `out` (matches and
 * the gaps between them, in order). Returns the number of pieces or a
 * negative error. `out` has room for one piece per subject code point. */
static long split_pass(const pcre2_code *code, pcre2_match_data *md, const char *subj, const span *in,
                       size_t n_in, span *out)
{
    size_t n = 0;
    for (size_t k = 0; k < n_in; k++) {
        const char *s = subj + in[k].b;
        size_t len = in[k].e - in[k].b, pos = 0, last = 0;
        while (pos < len) {
            /* The piece alone is the subject: look-ahead and `$` stop at
             * its end, as they do in the reference. The subject was built
             * as valid UTF-8, so the per-call UTF check (linear in the
             * piece) is skipped. PCRE2_NOTEMPTY: an empty match would make
             * no progress and no piece. */
            int rc =
                pcre2_match(code, (PCRE2_SPTR)s, len, pos, PCRE2_NO_UTF_CHECK | PCRE2_NOTEMPTY, md, NULL);
            if (rc == PCRE2_ERROR_NOMATCH)
                break;
            if (rc < 0) {
                PCRE2_UCHAR msg[120];
                pcre2_get_error_message(rc, msg, sizeof msg);
                SL_ERROR("regular expression failed on a piece of %zu bytes: %s", len, (const char *)msg);
                return -SL_ERANGE;
            }
            const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            size_t mb = ov[0], me = ov[1];
            SL_ASSERT(mb >= pos && me > mb && me <= len);
            if (mb > last)
                out[n++] = (span){in[k].b + last, in[k].b + mb};
            out[n++] = (span){in[k].b + mb, in[k].b + me};
            last = pos = me;
        }
        if (last < len)
            out[n++] = (span){in[k].b + last, in[k].e};
    }
    return (long)n;
}

int sl_pretok_split(const sl_pretok *p, const char *text, size_t len, sl_pretok_word_fn fn, void *ctx)
{
    if (len == 0)
        return 0;
    if (len > SL_PRETOK_MAX_TEXT) {
        SL_ERROR("text of %zu bytes is longer than the limit of %zu", len, SL_PRETOK_MAX_TEXT);
        return -SL_EINVAL;
    }
    /* One code point per input byte at most; a subject code point takes at
     * most 3 bytes per input byte it came from (a lone bad byte becomes
     * U+FFFD); a re-encoded word likewise. */
    size_t n_cp_max = len;
    size_t bytes = n_cp_max * sizeof(uint32_t) + 2 * n_cp_max * sizeof(span) + 3 * len + 3 * len + 8;
    char *mem = malloc(bytes);
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    if (!mem || !md) {
        free(mem);
        pcre2_match_data_free(md);
        return -SL_ENOMEM;
    }
    /* Widest alignment first. */
    span *pa = (span *)mem;
    span *pb = pa + n_cp_max;
    uint32_t *cps = (uint32_t *)(pb + n_cp_max);
    char *subj = (char *)(cps + n_cp_max);
    char *word = subj + 3 * len + 4;

    size_t n_cp = 0, sl = 0;
    for (size_t off = 0; off < len;) {
        uint32_t cp = sl_pretok_utf8_next(text, len, &off);
        cps[n_cp++] = cp;
        sl += sl_pretok_utf8_put(subject_cp(cp), subj + sl);
    }

    int rc = 0;
    size_t n_pieces = 1;
    pa[0] = (span){0, sl};
    for (int i = 0; i < p->n_codes; i++) {
        long n = split_pass(p->codes[i], md, subj, pa, n_pieces, pb);
        if (n < 0) {
            rc = (int)n;
            goto done;
        }
        n_pieces = (size_t)n;
        span *t = pa;
        pa = pb;
        pb = t;
    }

    /* Pieces are contiguous and in order: walk the code points alongside,
     * counting the lead bytes of each piece, and hand out the original
     * characters (not the substitutes the expressions saw). */
    size_t ci = 0;
    for (size_t k = 0; k < n_pieces; k++) {
        size_t wl = 0;
        for (size_t b = pa[k].b; b < pa[k].e; b++) {
            if (((uint8_t)subj[b] & 0xC0) != 0x80)
                wl += sl_pretok_utf8_put(cps[ci++], word + wl);
        }
        rc = fn(ctx, word, wl);
        if (rc < 0)
            goto done;
    }
    SL_ASSERT(ci == n_cp);
    rc = 0;
done:
    pcre2_match_data_free(md);
    free(mem);
    return rc;
}
