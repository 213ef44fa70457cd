/* The chat-template lexer: splits Jinja source into template data and the
 * tokens inside {{ }} and {% %}, dropping {# #} comments.
 *
 * Whitespace is settled here, as Python's jinja2 does it in its lexer, with
 * the hubs' settings:
 *  - line breaks (\r\n, \r) become \n and one trailing \n is dropped
 *    (keep_trailing_newline off);
 *  - "{%-", "{{-", "{#-" strip all whitespace before the tag, "-%}", "-}}",
 *    "-#}" all whitespace after it;
 *  - trim_blocks: the first \n after "%}" or "#}" is dropped ("+%}" keeps it);
 *  - lstrip_blocks: spaces and tabs from the start of a line up to "{%" or
 *    "{#" are dropped ("{%+" keeps them);
 *  - {% raw %} ... {% endraw %} is data.
 * "Whitespace" is Python's str.isspace(), as the regular expressions there
 * use \s on str. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja.h"
#include "common/log.h"

typedef struct jlex {
    jpctx *px;
    const char *s; /* normalised source */
    size_t n, pos;
    uint32_t line;
    bool line_starting; /* the previous match ended with \n */
    jtoken *tok;
    size_t ntok, cap;
} jlex;

static jtoken *push(jlex *L, uint8_t type, uint32_t line)
{
    if (L->ntok == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 256;
        jtoken *t = jpalloc(L->px, cap * sizeof *t);
        if (L->ntok)
            memcpy(t, L->tok, L->ntok * sizeof *t);
        L->tok = t;
        L->cap = cap;
    }
    jtoken *t = &L->tok[L->ntok++];
    memset(t, 0, sizeof *t);
    t->type = type;
    t->line = line;
    return t;
}

/* Length of the Python-whitespace character at s[i] (0 when it is not one). */
static size_t space_at(const char *s, size_t n, size_t i)
{
    if (i >= n)
        return 0;
    unsigned char ch = (unsigned char)s[i];
    if (ch < 0x80)
        return jpy_isspace(ch) ? 1 : 0;
    uint32_t cp;
    size_t k = jutf8_dec(s + i, n - i, &cp);
    return jpy_isspace(cp) ? k : 0;
}

/* End of s[from, to) with trailing whitespace removed. */
static size_t rstrip_end(const char *s, size_t from, size_t to)
{
    /* Walk forward remembering the end of the last non-space character:
     * UTF-8 is not safely walked backwards byte by byte for multi-byte spaces. */
    size_t end = from, i = from;
    while (i < to) {
        size_t k = space_at(s, to, i);
        if (k) {
            i += k;
        } else {
            uint32_t cp;
            i += jutf8_dec(s + i, to - i, &cp);
            end = i;
        }
    }
    return end;
}

static size_t skip_space(jlex *L, size_t i)
{
    size_t k;
    while ((k = space_at(L->s, L->n, i))) {
        if (L->s[i] == '\n')
            L->line++;
        i += k;
    }
    return i;
}

static uint32_t count_nl(const char *s, size_t from, size_t to)
{
    uint32_t c = 0;
    for (size_t i = from; i < to; i++)
        c += s[i] == '\n';
    return c;
}

static void emit_text(jlex *L, size_t from, size_t to, uint32_t line)
{
    if (to <= from)
        return;
    jtoken *t = push(L, TK_TEXT, line);
    t->p = L->s + from;
    t->n = to - from;
}

/* The data before a tag at `tag` (from L->pos), with sign '-', '+' or 0;
 * lstrip applies to blocks and comments. Emits it and advances the line. */
static void emit_data_before(jlex *L, size_t tag, char sign, bool lstrip)
{
    size_t from = L->pos, to = tag;
    uint32_t line = L->line;
    if (sign == '-') {
        to = rstrip_end(L->s, from, tag);
    } else if (sign != '+' && lstrip) {
        size_t lp = from;
        bool has_nl = false;
        for (size_t i = from; i < tag; i++)
            if (L->s[i] == '\n') {
                lp = i + 1;
                has_nl = true;
            }
        if ((has_nl || L->line_starting) && lp < tag && rstrip_end(L->s, lp, tag) == lp)
            to = lp;
    }
    emit_text(L, from, to, line);
    L->line += count_nl(L->s, from, tag);
}

static bool starts(const jlex *L, size_t i, const char *lit)
{
    size_t k = strlen(lit);
    return i + k <= L->n && !memcmp(L->s + i, lit, k);
}

static bool is_name_start(unsigned char ch)
{
    return ch == '_' || ((ch | 32) >= 'a' && (ch | 32) <= 'z') || ch >= 0x80;
}
static bool is_name_char(unsigned char ch) { return is_name_start(ch) || (ch >= '0' && ch <= '9'); }
static bool is_digit(char ch) { return ch >= '0' && ch <= '9'; }

/* If "{%" at q starts a raw block, returns the position after its "%}"
 * (and whitespace for "-%}"), else 0. */
static size_t raw_begin(jlex *L, size_t q)
{
    size_t i = q + 2;
    if (i < L->n && (L->s[i] == '-' || L->s[i] == '+'))
        i++;
    while (space_at(L->s, L->n, i))
        i += space_at(L->s, L->n, i);
    if (!starts(L, i, "raw"))
        return 0;
    i += 3;
    while (space_at(L->s, L->n, i))
        i += space_at(L->s, L->n, i);
    if (starts(L, i, "-%}")) {
        i += 3;
        while (space_at(L->s, L->n, i))
            i += space_at(L->s, L->n, i);
        return i;
    }
    return starts(L, i, "%}") ? i + 2 : 0;
}

/* Handles {% raw %}: data up to {% endraw %}. */
static void lex_raw(jlex *L, size_t q, size_t body)
{
    uint32_t line0 = L->line;
    for (size_t i = body; i + 1 < L->n; i++) {
        if (L->s[i] != '{' || L->s[i + 1] != '%')
            continue;
        size_t j = i + 2;
        char sign = 0;
        if (j < L->n && (L->s[j] == '-' || L->s[j] == '+'))
            sign = L->s[j++];
        while (space_at(L->s, L->n, j))
            j += space_at(L->s, L->n, j);
        if (!starts(L, j, "endraw"))
            continue;
        j += 6;
        while (space_at(L->s, L->n, j))
            j += space_at(L->s, L->n, j);
        size_t end;
        if (starts(L, j, "+%}")) {
            end = j + 3;
        } else if (starts(L, j, "-%}")) {
            end = j + 3;
            while (space_at(L->s, L->n, end))
                end += space_at(L->s, L->n, end);
        } else if (starts(L, j, "%}")) {
            end = j + 2;
            if (end < L->n && L->s[end] == '\n')
                end++;
        } else {
            continue;
        }
        L->line += count_nl(L->s, q, body);
        L->pos = body;
        L->line_starting = L->s[body - 1] == '\n';
        emit_data_before(L, i, sign, true);
        L->line += count_nl(L->s, i, end);
        L->pos = end;
        L->line_starting = L->s[end - 1] == '\n';
        return;
    }
    jpfail(L->px, -SL_EFORMAT, line0, "Missing end of raw directive");
}

/* A {# comment #} whose body starts at i. */
static void lex_comment(jlex *L, size_t i)
{
    uint32_t line0 = L->line;
    for (size_t q = i; q + 1 < L->n; q++) {
        if (L->s[q] != '#' || L->s[q + 1] != '}')
            continue;
        char mark = q > i ? L->s[q - 1] : 0;
        size_t end = q + 2;
        if (mark == '-') {
            while (space_at(L->s, L->n, end))
                end += space_at(L->s, L->n, end);
        } else if (mark != '+' && end < L->n && L->s[end] == '\n') {
            end++;
        }
        L->line += count_nl(L->s, i, end);
        L->pos = end;
        L->line_starting = L->s[end - 1] == '\n';
        return;
    }
    jpfail(L->px, -SL_EFORMAT, line0, "Missing end of comment tag");
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if ((ch | 32) >= 'a' && (ch | 32) <= 'f')
        return (ch | 32) - 'a' + 10;
    return -1;
}

/* Decodes a string literal's body as Python's unicode_escape does. */
static void decode_string(jlex *L, jtoken *t, const char *s, size_t n)
{
    char *out = jpalloc(L->px, n + 1), *o = out;
    for (size_t i = 0; i < n;) {
        if (s[i] != '\\' || i + 1 >= n) {
            *o++ = s[i++];
            continue;
        }
        char e = s[i + 1];
        i += 2;
        uint32_t cp = 0;
        int digits = 0;
        switch (e) {
        case '\n': continue; /* line continuation */
        case '\\': *o++ = '\\'; continue;
        case '\'': *o++ = '\''; continue;
        case '"': *o++ = '"'; continue;
        case 'a': *o++ = '\a'; continue;
        case 'b': *o++ = '\b'; continue;
        case 'f': *o++ = '\f'; continue;
        case 'n': *o++ = '\n'; continue;
        case 'r': *o++ = '\r'; continue;
        case 't': *o++ = '\t'; continue;
        case 'v': *o++ = '\v'; continue;
        case 'x': digits = 2; break;
        case 'u': digits = 4; break;
        case 'U': digits = 8; break;
        case 'N': jpfail(L->px, -SL_EUNSUPPORTED, t->line, "\\N{...} escapes are not supported");
        default:
            if (e >= '0' && e <= '7') {
                cp = (uint32_t)(e - '0');
                for (int k = 0; k < 2 && i < n && s[i] >= '0' && s[i] <= '7'; k++)
                    cp = cp * 8 + (uint32_t)(s[i++] - '0');
                digits = -1;
                break;
            }
            *o++ = '\\';
            *o++ = e;
            continue;
        }
        if (digits > 0) {
            for (int k = 0; k < digits; k++) {
                int h = i < n ? hexval(s[i]) : -1;
                if (h < 0)
                    jpfail(L->px, -SL_EFORMAT, t->line, "truncated \\%c escape in a string", e);
                cp = cp * 16 + (uint32_t)h;
                i++;
            }
            if (cp > 0x10FFFF)
                jpfail(L->px, -SL_EFORMAT, t->line, "illegal Unicode character in a string");
        }
        /* A surrogate pair written as two escapes is one character. */
        if (cp >= 0xD800 && cp < 0xDC00 && i + 6 <= n && s[i] == '\\' && s[i + 1] == 'u') {
            uint32_t lo = 0;
            bool ok = true;
            for (int k = 0; k < 4; k++) {
                int h = hexval(s[i + 2 + k]);
                ok = ok && h >= 0;
                lo = lo * 16 + (uint32_t)(h < 0 ? 0 : h);
            }
            if (ok && lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                i += 6;
            }
        }
        o += jutf8_enc(cp, o);
    }
    *o = 0;
    t->p = out;
    t->n = (size_t)(o - out);
}

/* Digits with single underscores between them, from i; returns the end (i when none). */
static size_t digits_end(const jlex *L, size_t i, int base)
{
    size_t j = i;
    bool any = false;
    while (j < L->n) {
        char ch = L->s[j];
        int v = hexval(ch);
        if (v >= 0 && v < base && (base == 16 || is_digit(ch))) {
            any = true;
            j++;
        } else if (ch == '_' && any && j + 1 < L->n && hexval(L->s[j + 1]) >= 0 &&
                   hexval(L->s[j + 1]) < base && (base == 16 || is_digit(L->s[j + 1]))) {
            j++;
        } else {
            break;
        }
    }
    return any ? j : i;
}

/* Copies s[from, to) without underscores into buf (size >= 64). */
static void strip_us(const jlex *L, size_t from, size_t to, char *buf, size_t size)
{
    size_t k = 0;
    for (size_t i = from; i < to && k + 1 < size; i++)
        if (L->s[i] != '_')
            buf[k++] = L->s[i];
    buf[k] = 0;
}

static bool lex_number(jlex *L)
{
    size_t i = L->pos;
    if (!is_digit(L->s[i]))
        return false;
    char buf[128];
    /* float: digits ((. digits)? e[+-]digits | . digits), not right after a '.' */
    if (!(i > 0 && L->s[i - 1] == '.')) {
        size_t j = digits_end(L, i, 10), frac = j, end = 0;
        if (frac < L->n && L->s[frac] == '.') {
            size_t k = digits_end(L, frac + 1, 10);
            if (k > frac + 1)
                frac = k;
        }
        size_t e = frac;
        if (e < L->n && (L->s[e] | 32) == 'e') {
            size_t k = e + 1;
            if (k < L->n && (L->s[k] == '+' || L->s[k] == '-'))
                k++;
            size_t d = digits_end(L, k, 10);
            if (d > k)
                end = d;
        }
        if (!end && frac > j)
            end = frac;
        if (end) {
            if (end - i >= sizeof buf)
                jpfail(L->px, -SL_EFORMAT, L->line, "number literal too long");
            strip_us(L, i, end, buf, sizeof buf);
            jtoken *t = push(L, TK_FLOAT, L->line);
            t->f = strtod(buf, NULL);
            L->pos = end;
            return true;
        }
    }
    int base = 10;
    size_t start = i;
    if (L->s[i] == '0' && i + 1 < L->n) {
        char p = (char)(L->s[i + 1] | 32);
        base = p == 'b' ? 2 : p == 'o' ? 8 : p == 'x' ? 16 : 10;
        if (base != 10) {
            /* the prefix may be followed by "_" before the first digit */
            start = i + 2;
            if (start < L->n && L->s[start] == '_')
                start++;
        }
    }
    size_t end;
    if (base == 10) {
        if (L->s[i] == '0') { /* 0(_?0)* */
            end = i + 1;
            while (end < L->n && (L->s[end] == '0' || (L->s[end] == '_' && end + 1 < L->n && L->s[end + 1] == '0')))
                end++;
        } else {
            end = digits_end(L, i, 10);
        }
    } else {
        end = digits_end(L, start, base);
        if (end == start) { /* "0x" without digits: just the 0 */
            base = 10;
            start = i;
            end = i + 1;
        }
    }
    if (end - i >= sizeof buf)
        jpfail(L->px, -SL_EFORMAT, L->line, "number literal too long");
    strip_us(L, start, end, buf, sizeof buf);
    uint64_t v = 0;
    for (const char *c = buf; *c; c++) {
        uint64_t d = (uint64_t)hexval(*c);
        if (v > (UINT64_MAX - d) / (uint64_t)base || v * (uint64_t)base + d > (uint64_t)INT64_MAX)
            jpfail(L->px, -SL_ERANGE, L->line, "integer literal too large (sluice's integers are 64-bit)");
        v = v * (uint64_t)base + d;
    }
    jtoken *t = push(L, TK_INT, L->line);
    t->i = (int64_t)v;
    L->pos = end;
    return true;
}

/* Tokens of one {{ }} or {% %} tag, from L->pos to its end. */
static void lex_tag(jlex *L, bool block)
{
    char stack[256]; /* open brackets; deeper than the parser accepts */
    size_t depth = 0;
    for (;;) {
        size_t i = L->pos;
        if (i >= L->n)
            return; /* the parser reports the unfinished tag */
        if (depth == 0) {
            const char *close = block ? "%}" : "}}";
            if (block && L->s[i] == '+' && starts(L, i + 1, close)) {
                push(L, TK_BLOCK_END, L->line);
                L->pos = i + 3;
                L->line_starting = false;
                return;
            }
            if (L->s[i] == '-' && starts(L, i + 1, close)) {
                push(L, block ? TK_BLOCK_END : TK_VAR_END, L->line);
                size_t end = skip_space(L, i + 3);
                L->pos = end;
                L->line_starting = L->s[end - 1] == '\n';
                return;
            }
            if (starts(L, i, close)) {
                push(L, block ? TK_BLOCK_END : TK_VAR_END, L->line);
                size_t end = i + 2;
                if (block && end < L->n && L->s[end] == '\n') {
                    end++;
                    L->line++;
                }
                L->pos = end;
                L->line_starting = L->s[end - 1] == '\n';
                return;
            }
        }
        if (space_at(L->s, L->n, i)) {
            L->pos = skip_space(L, i);
            continue;
        }
        unsigned char ch = (unsigned char)L->s[i];
        if (lex_number(L))
            continue;
        if (is_name_start(ch)) {
            size_t j = i;
            while (j < L->n && is_name_char((unsigned char)L->s[j]))
                j++;
            jtoken *t = push(L, TK_NAME, L->line);
            char *name = jpalloc(L->px, j - i + 1);
            memcpy(name, L->s + i, j - i);
            t->p = name;
            t->n = j - i;
            L->pos = j;
            continue;
        }
        if (ch == '\'' || ch == '"') {
            size_t j = i + 1;
            while (j < L->n && L->s[j] != (char)ch)
                j += L->s[j] == '\\' && j + 1 < L->n ? 2 : 1;
            if (j >= L->n)
                jpfail(L->px, -SL_EFORMAT, L->line, "unexpected char '%c' (a string that is never closed)", ch);
            jtoken *t = push(L, TK_STRING, L->line);
            decode_string(L, t, L->s + i + 1, j - i - 1);
            L->line += count_nl(L->s, i, j);
            L->pos = j + 1;
            continue;
        }
        static const struct { const char *s; uint16_t op; } two[] = {
            {"//", TOP_FLOORDIV}, {"**", TOP_POW}, {"==", TOP_EQ}, {"!=", TOP_NE}, {"<=", TOP_LE}, {">=", TOP_GE}};
        uint16_t op = 0;
        size_t len = 1;
        for (size_t k = 0; k < sizeof two / sizeof two[0]; k++)
            if (starts(L, i, two[k].s)) {
                op = two[k].op;
                len = 2;
                break;
            }
        if (!op && strchr("+-/*%~[](){}<>=.:|,;", ch) && ch)
            op = ch;
        if (!op)
            jpfail(L->px, -SL_EFORMAT, L->line, "unexpected char '%c'", ch >= 0x20 && ch < 0x7f ? ch : '?');
        if (op == '(' || op == '[' || op == '{') {
            if (depth == sizeof stack)
                jpfail(L->px, -SL_ERANGE, L->line, "brackets nested too deeply");
            stack[depth++] = op == '(' ? ')' : op == '[' ? ']' : '}';
        } else if (op == ')' || op == ']' || op == '}') {
            if (!depth)
                jpfail(L->px, -SL_EFORMAT, L->line, "unexpected '%c'", ch);
            if (stack[--depth] != (char)op)
                jpfail(L->px, -SL_EFORMAT, L->line, "unexpected '%c', expected '%c'", ch, stack[depth]);
        }
        jtoken *t = push(L, TK_OP, L->line);
        t->op = op;
        L->pos = i + len;
    }
}

void jinja_lex(jpctx *px, const char *src, size_t len, jtoken **toks, size_t *ntoks)
{
    jlex L = {.px = px, .line = 1, .line_starting = true};
    /* Normalise line breaks; drop one trailing newline. */
    char *s = jpalloc(px, len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            s[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n')
                i++;
        } else {
            s[n++] = src[i];
        }
    }
    if (n && s[n - 1] == '\n')
        n--;
    s[n] = 0;
    L.s = s;
    L.n = n;

    while (L.pos < L.n) {
        size_t q = L.pos;
        const char *hit = NULL;
        while (q + 1 < L.n) {
            hit = memchr(L.s + q, '{', L.n - q - 1);
            if (!hit)
                break;
            q = (size_t)(hit - L.s);
            char k = L.s[q + 1];
            if (k == '{' || k == '%' || k == '#')
                break;
            q++;
            hit = NULL;
        }
        if (!hit) {
            emit_text(&L, L.pos, L.n, L.line);
            break;
        }
        char kind = L.s[q + 1];
        char sign = q + 2 < L.n && (L.s[q + 2] == '-' || L.s[q + 2] == '+') ? L.s[q + 2] : 0;
        size_t body = q + 2 + (sign ? 1 : 0);
        size_t raw = kind == '%' ? raw_begin(&L, q) : 0;
        emit_data_before(&L, q, sign, kind != '{');
        if (raw) {
            lex_raw(&L, q, raw);
            continue;
        }
        L.pos = body;
        L.line_starting = false;
        if (kind == '#') {
            lex_comment(&L, body);
            continue;
        }
        push(&L, kind == '%' ? TK_BLOCK_BEGIN : TK_VAR_BEGIN, L.line);
        lex_tag(&L, kind == '%');
    }
    push(&L, TK_EOF, L.line);
    *toks = L.tok;
    *ntoks = L.ntok;
}
