/* The chat-template builtins, part 1: Python's strings as templates use
 * them. The string helpers (case mapping, strip, split, replace, padding),
 * Python's %-formatting and str.format, the methods of str, dict and list
 * that templates call, and the binding of builtin arguments. Each behaves as
 * its Python counterpart, down to the quirks templates can observe (strip
 * and split use Unicode whitespace, "ß".upper() is "SS", rsplit with a
 * limit keeps the left part whole, ...). Strings are UTF-8; positions and
 * lengths count code points. Filters, tests and globals: jinja_filters.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat/jinja.h"
#include "common/log.h"

/* ---- argument binding ---- */

void jbind(jctx *c, const char *fn, const jargs *a, const char *const *params, size_t np, jval *out)
{
    for (size_t i = 0; i < np; i++)
        out[i] = jv_absent();
    if (a->npos > np)
        jfail(c, -SL_EFORMAT, "%s() takes at most %zu argument(s) (%zu given)", fn, np, a->npos);
    for (size_t i = 0; i < a->npos; i++)
        out[i] = a->pos[i];
    for (size_t k = 0; k < a->nkw; k++) {
        size_t i = 0;
        while (i < np && strcmp(params[i], a->kwname[k]))
            i++;
        if (i == np)
            jfail(c, -SL_EFORMAT, "%s() got an unexpected keyword argument '%s'", fn, a->kwname[k]);
        if (out[i].t != JT_ABSENT)
            jfail(c, -SL_EFORMAT, "%s() got multiple values for argument '%s'", fn, params[i]);
        out[i] = a->kw[k];
    }
}

int64_t jwant_int(jctx *c, jval v, const char *what)
{
    if (v.t == JT_INT)
        return v.u.i;
    if (v.t == JT_BOOL)
        return v.u.b;
    if (v.t == JT_UNDEF)
        jfail_undef(c, v);
    jfail(c, -SL_EFORMAT, "%s must be an integer, not %s", what, jv_type_name(v));
}

jval jwant_str(jctx *c, jval v, const char *what)
{
    if (v.t == JT_STR)
        return v;
    if (v.t == JT_UNDEF)
        jfail_undef(c, v);
    jfail(c, -SL_EFORMAT, "%s must be a string, not %s", what, jv_type_name(v));
}

static jval tuple2(jctx *c, jval a, jval b)
{
    jval t = jv_tuple(c, 2);
    jlist_push(c, t.u.l, a);
    jlist_push(c, t.u.l, b);
    return t;
}

/* ---- string helpers ---- */

jval jstr_case(jctx *c, jval s, int mode) /* 0 lower, 1 upper, 2 swap */
{
    jbuf b = {0};
    char enc[8];
    for (size_t i = 0; i < s.u.s.n;) {
        uint32_t cp;
        size_t k = jutf8_dec(s.u.s.p + i, s.u.s.n - i, &cp);
        uint32_t lo = jcase_lower(cp), up = jcase_upper(cp);
        uint32_t to = mode == 0 ? lo : mode == 1 ? up : (lo != cp ? lo : up);
        if (to == up && cp == 0xDF && mode != 0) {
            jbuf_put(c, &b, "SS", 2); /* Python's full case mapping */
        } else if (to == lo && cp == 0x130 && mode != 1) {
            jbuf_put(c, &b, "i\xcc\x87", 3);
        } else if (to == cp || (k == 1 && cp >= 0x80)) {
            jbuf_put(c, &b, s.u.s.p + i, k);
        } else {
            jbuf_put(c, &b, enc, jutf8_enc(to, enc));
        }
        i += k;
    }
    return jbuf_take(c, &b);
}

static void put_cp(jctx *c, jbuf *b, uint32_t cp)
{
    char enc[8];
    jbuf_put(c, b, enc, jutf8_enc(cp, enc));
}

/* Python's str.jstr_capitalize(): first character upper, the rest lower. */
jval jstr_capitalize(jctx *c, jval s)
{
    jbuf b = {0};
    for (size_t i = 0, idx = 0; i < s.u.s.n; idx++) {
        uint32_t cp;
        size_t k = jutf8_dec(s.u.s.p + i, s.u.s.n - i, &cp);
        jval one = jstr_case(c, jv_str(s.u.s.p + i, k), idx == 0 ? 1 : 0);
        jbuf_put(c, &b, one.u.s.p, one.u.s.n);
        i += k;
    }
    return jbuf_take(c, &b);
}

/* Python's str.title(): words of cased letters start upper, continue lower. */
static jval py_title(jctx *c, jval s)
{
    jbuf b = {0};
    bool prev_cased = false;
    for (size_t i = 0; i < s.u.s.n;) {
        uint32_t cp;
        size_t k = jutf8_dec(s.u.s.p + i, s.u.s.n - i, &cp);
        jval one = jstr_case(c, jv_str(s.u.s.p + i, k), prev_cased ? 0 : 1);
        jbuf_put(c, &b, one.u.s.p, one.u.s.n);
        prev_cased = jcase_isupper(cp) || jcase_islower(cp);
        i += k;
    }
    return jbuf_take(c, &b);
}

/* Jinja's `title` filter: words split at runs of - whitespace ( { [ <. */
jval jstr_title_words(jctx *c, jval s)
{
    jbuf b = {0};
    bool at_start = true;
    for (size_t i = 0; i < s.u.s.n;) {
        uint32_t cp;
        size_t k = jutf8_dec(s.u.s.p + i, s.u.s.n - i, &cp);
        bool sep = cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<' || jpy_isspace(cp);
        if (sep) {
            jbuf_put(c, &b, s.u.s.p + i, k);
            at_start = true;
        } else {
            jval one = jstr_case(c, jv_str(s.u.s.p + i, k), at_start ? 1 : 0);
            jbuf_put(c, &b, one.u.s.p, one.u.s.n);
            at_start = false;
        }
        i += k;
    }
    return jbuf_take(c, &b);
}

static bool in_chars(jval chars, uint32_t cp)
{
    for (size_t i = 0; i < chars.u.s.n;) {
        uint32_t x;
        i += jutf8_dec(chars.u.s.p + i, chars.u.s.n - i, &x);
        if (x == cp)
            return true;
    }
    return false;
}

/* strip / lstrip / rstrip: chars ABSENT or None means whitespace. */
jval jstr_strip(jctx *c, jval s, jval chars, bool left, bool right)
{
    bool ws = !jgiven(chars) || chars.t == JT_NONE;
    if (!ws)
        chars = jwant_str(c, chars, "strip chars");
    size_t a = 0, z = s.u.s.n;
    if (left)
        while (a < z) {
            uint32_t cp;
            size_t k = jutf8_dec(s.u.s.p + a, z - a, &cp);
            if (ws ? !jpy_isspace(cp) : !in_chars(chars, cp))
                break;
            a += k;
        }
    if (right) {
        /* Backwards, one character at a time: an ASCII byte is a character;
         * otherwise the character is decoded forwards from its lead byte
         * (a byte that is no part of a valid sequence stands for itself). */
        while (z > a) {
            unsigned char b = (unsigned char)s.u.s.p[z - 1];
            uint32_t cp = b;
            size_t start = z - 1;
            if (b >= 0x80) {
                size_t i = z - 1;
                for (int back = 0; i > a && back < 3 && ((unsigned char)s.u.s.p[i] & 0xC0) == 0x80; back++)
                    i--;
                uint32_t d;
                if (i + jutf8_dec(s.u.s.p + i, z - i, &d) == z) {
                    cp = d;
                    start = i;
                }
            }
            if (ws ? !jpy_isspace(cp) : !in_chars(chars, cp))
                break;
            z = start;
        }
    }
    return jv_str(s.u.s.p + a, z - a);
}

jval jstr_split(jctx *c, jval s, jval sepv, jval maxv, bool from_right)
{
    int64_t maxsplit = jgiven(maxv) ? jwant_int(c, maxv, "maxsplit") : -1;
    jval out = jv_list(c, 4);
    const char *p = s.u.s.p;
    size_t n = s.u.s.n;
    if (!jgiven(sepv) || sepv.t == JT_NONE) {
        /* runs of whitespace; ends ignored */
        size_t *starts = jalloc(c, (n / 2 + 2) * sizeof *starts), *ends = jalloc(c, (n / 2 + 2) * sizeof *ends);
        size_t nw = 0;
        for (size_t i = 0; i < n;) {
            uint32_t cp;
            size_t k = jutf8_dec(p + i, n - i, &cp);
            if (jpy_isspace(cp)) {
                i += k;
                continue;
            }
            starts[nw] = i;
            while (i < n) {
                k = jutf8_dec(p + i, n - i, &cp);
                if (jpy_isspace(cp))
                    break;
                i += k;
            }
            ends[nw++] = i;
        }
        if (maxsplit < 0 || (size_t)maxsplit + 1 >= nw) {
            for (size_t w = 0; w < nw; w++)
                jlist_push(c, out.u.l, jv_str(p + starts[w], ends[w] - starts[w]));
            return out;
        }
        size_t keep = (size_t)maxsplit;
        if (!from_right) {
            for (size_t w = 0; w < keep; w++)
                jlist_push(c, out.u.l, jv_str(p + starts[w], ends[w] - starts[w]));
            /* the rest, from the next word to the end, trailing whitespace kept */
            jlist_push(c, out.u.l, jv_str(p + starts[keep], n - starts[keep]));
        } else {
            size_t first = nw - keep; /* words kept whole at the right */
            jlist_push(c, out.u.l, jv_str(p, ends[first - 1]));
            for (size_t w = first; w < nw; w++)
                jlist_push(c, out.u.l, jv_str(p + starts[w], ends[w] - starts[w]));
        }
        return out;
    }
    jval sep = jwant_str(c, sepv, "separator");
    if (!sep.u.s.n)
        jfail(c, -SL_EFORMAT, "empty separator");
    if (!from_right) {
        size_t i = 0;
        int64_t done = 0;
        for (;;) {
            const char *hit = (maxsplit < 0 || done < maxsplit) ? memmem(p + i, n - i, sep.u.s.p, sep.u.s.n) : NULL;
            if (!hit) {
                jlist_push(c, out.u.l, jv_str(p + i, n - i));
                return out;
            }
            jlist_push(c, out.u.l, jv_str(p + i, (size_t)(hit - (p + i))));
            i = (size_t)(hit - p) + sep.u.s.n;
            done++;
        }
    }
    /* from the right: collect pieces backwards, then reverse */
    jval rev = jv_list(c, 4);
    size_t end = n;
    int64_t done = 0;
    while (maxsplit < 0 || done < maxsplit) {
        size_t found = SIZE_MAX;
        for (size_t i = end >= sep.u.s.n ? end - sep.u.s.n + 1 : 0; i-- > 0;)
            if (!memcmp(p + i, sep.u.s.p, sep.u.s.n)) {
                found = i;
                break;
            }
        if (found == SIZE_MAX)
            break;
        jlist_push(c, rev.u.l, jv_str(p + found + sep.u.s.n, end - found - sep.u.s.n));
        end = found;
        done++;
    }
    jlist_push(c, rev.u.l, jv_str(p, end));
    for (size_t i = rev.u.l->n; i-- > 0;)
        jlist_push(c, out.u.l, rev.u.l->v[i]);
    return out;
}

/* Python's str.jstr_splitlines(). */
jval jstr_splitlines(jctx *c, jval s, bool keepends)
{
    jval out = jv_list(c, 4);
    const char *p = s.u.s.p;
    size_t n = s.u.s.n, start = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = jutf8_dec(p + i, n - i, &cp);
        bool br = cp == '\n' || cp == '\r' || cp == 0x0B || cp == 0x0C || (cp >= 0x1C && cp <= 0x1E) ||
                  cp == 0x85 || cp == 0x2028 || cp == 0x2029;
        if (!br) {
            i += k;
            continue;
        }
        size_t eol = i + k;
        if (cp == '\r' && eol < n && p[eol] == '\n')
            eol++;
        jlist_push(c, out.u.l, jv_str(p + start, (keepends ? eol : i) - start));
        start = i = eol;
    }
    if (start < n)
        jlist_push(c, out.u.l, jv_str(p + start, n - start));
    return out;
}

jval jstr_replace(jctx *c, jval s, jval oldv, jval newv, int64_t count)
{
    jval old = jwant_str(c, oldv, "jstr_replace() argument 1"), rep = jwant_str(c, newv, "jstr_replace() argument 2");
    jbuf b = {0};
    const char *p = s.u.s.p;
    size_t n = s.u.s.n;
    if (!old.u.s.n) { /* between every character, and at both ends */
        int64_t done = 0;
        for (size_t i = 0;; done++) {
            if (count >= 0 && done >= count) {
                jbuf_put(c, &b, p + i, n - i);
                break;
            }
            jbuf_put(c, &b, rep.u.s.p, rep.u.s.n);
            if (i >= n)
                break;
            uint32_t cp;
            size_t k = jutf8_dec(p + i, n - i, &cp);
            jbuf_put(c, &b, p + i, k);
            i += k;
        }
        return jbuf_take(c, &b);
    }
    size_t i = 0;
    for (int64_t done = 0; count < 0 || done < count; done++) {
        const char *hit = memmem(p + i, n - i, old.u.s.p, old.u.s.n);
        if (!hit)
            break;
        jbuf_put(c, &b, p + i, (size_t)(hit - (p + i)));
        jbuf_put(c, &b, rep.u.s.p, rep.u.s.n);
        i = (size_t)(hit - p) + old.u.s.n;
    }
    jbuf_put(c, &b, p + i, n - i);
    return jbuf_take(c, &b);
}

/* Code-point index of byte offset `off` in s. */
static int64_t cp_index(jval s, size_t off)
{
    int64_t idx = 0;
    for (size_t i = 0; i < off;) {
        uint32_t cp;
        i += jutf8_dec(s.u.s.p + i, s.u.s.n - i, &cp);
        idx++;
    }
    return idx;
}

/* s[start:end] (Python slice bounds) and its start as a code-point index. */
static jval sub_range(jctx *c, jval s, jval start, jval end, int64_t *base)
{
    jval r = jinja_slice(c, s, start, end, jv_absent());
    *base = cp_index(s, (size_t)(r.u.s.p - s.u.s.p));
    return r;
}

jval jstr_pad(jctx *c, jval s, int64_t width, jval fillv, int where) /* -1 ljust, 0 center, 1 rjust */
{
    uint32_t fill = ' ';
    if (jgiven(fillv)) {
        jval f = jwant_str(c, fillv, "fill character");
        if (jstr_len(f) != 1)
            jfail(c, -SL_EFORMAT, "The fill character must be exactly one character long");
        jutf8_dec(f.u.s.p, f.u.s.n, &fill);
    }
    int64_t len = (int64_t)jstr_len(s);
    if (width <= len)
        return s;
    if (width > (int64_t)1 << 28)
        jfail(c, -SL_ERANGE, "string too long");
    int64_t marg = width - len, left = where < 0 ? 0 : where > 0 ? marg : marg / 2 + (marg & width & 1);
    jbuf b = {0};
    for (int64_t i = 0; i < left; i++)
        put_cp(c, &b, fill);
    jbuf_put(c, &b, s.u.s.p, s.u.s.n);
    for (int64_t i = left; i < marg; i++)
        put_cp(c, &b, fill);
    return jbuf_take(c, &b);
}

static bool str_all(jval s, bool (*pred)(uint32_t))
{
    if (!s.u.s.n)
        return false;
    for (size_t i = 0; i < s.u.s.n;) {
        uint32_t cp;
        i += jutf8_dec(s.u.s.p + i, s.u.s.n - i, &cp);
        if (!pred(cp))
            return false;
    }
    return true;
}
static bool is_alnum(uint32_t cp) { return jis_alpha(cp) || jis_digit(cp); }
static bool is_space(uint32_t cp) { return jpy_isspace(cp); }

/* islower / isupper: some cased character, none of the other case. */
bool jstr_case_is(jval s, bool want_lower)
{
    bool any = false;
    for (size_t i = 0; i < s.u.s.n;) {
        uint32_t cp;
        i += jutf8_dec(s.u.s.p + i, s.u.s.n - i, &cp);
        bool up = jcase_isupper(cp), lo = jcase_islower(cp);
        if (want_lower ? up : lo)
            return false;
        any |= want_lower ? lo : up;
    }
    return any;
}

/* Python's str.format with {}, {0}, {name} and {!r}/{!s}; no format specs. */
static jval str_format(jctx *c, jval fmt, const jargs *a)
{
    jbuf b = {0};
    size_t auto_idx = 0;
    const char *p = fmt.u.s.p;
    size_t n = fmt.u.s.n;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '}' ) {
            if (i + 1 < n && p[i + 1] == '}')
                i++;
            else
                jfail(c, -SL_EFORMAT, "Single '}' encountered in format string");
            jbuf_putc(c, &b, '}');
            continue;
        }
        if (p[i] != '{') {
            jbuf_putc(c, &b, p[i]);
            continue;
        }
        if (i + 1 < n && p[i + 1] == '{') {
            jbuf_putc(c, &b, '{');
            i++;
            continue;
        }
        const char *close = memchr(p + i, '}', n - i);
        if (!close)
            jfail(c, -SL_EFORMAT, "Single '{' encountered in format string");
        size_t fs = i + 1, fe = (size_t)(close - p);
        char conv = 's';
        size_t name_end = fe;
        for (size_t k = fs; k < fe; k++)
            if (p[k] == '!' || p[k] == ':') {
                if (p[k] == ':')
                    jfail(c, -SL_EUNSUPPORTED, "format specs in str.format() are not supported");
                if (k + 2 != fe || (p[k + 1] != 'r' && p[k + 1] != 's'))
                    jfail(c, -SL_EUNSUPPORTED, "this str.format() conversion is not supported");
                conv = p[k + 1];
                name_end = k;
                break;
            }
        jval v;
        if (name_end == fs) {
            if (auto_idx >= a->npos)
                jfail(c, -SL_EFORMAT, "Replacement index %zu out of range for positional args tuple", auto_idx);
            v = a->pos[auto_idx++];
        } else if (p[fs] >= '0' && p[fs] <= '9') {
            size_t idx = 0;
            for (size_t k = fs; k < name_end; k++) {
                if (p[k] < '0' || p[k] > '9')
                    jfail(c, -SL_EUNSUPPORTED, "this str.format() field is not supported");
                idx = idx * 10 + (size_t)(p[k] - '0');
                if (idx > 1000000)
                    break;
            }
            if (idx >= a->npos)
                jfail(c, -SL_EFORMAT, "Replacement index %zu out of range for positional args tuple", idx);
            v = a->pos[idx];
        } else {
            size_t k = 0;
            while (k < a->nkw && (strlen(a->kwname[k]) != name_end - fs || memcmp(a->kwname[k], p + fs, name_end - fs)))
                k++;
            if (k == a->nkw)
                jfail(c, -SL_EFORMAT, "KeyError: '%.*s'", (int)(name_end - fs), p + fs);
            v = a->kw[k];
        }
        if (conv == 'r')
            jv_repr_into(c, &b, v);
        else
            jv_str_into(c, &b, v);
        i = fe;
    }
    return jbuf_take(c, &b);
}

/* ---- %-formatting ---- */

jval jinja_percent_format(jctx *c, jval fmt, jval args)
{
    jval *items = &args;
    size_t nitems = 1, used = 0;
    bool mapping = args.t == JT_DICT;
    if (args.t == JT_TUPLE) {
        items = args.u.l->v;
        nitems = args.u.l->n;
    }
    jbuf b = {0};
    const char *p = fmt.u.s.p;
    size_t n = fmt.u.s.n;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '%') {
            jbuf_putc(c, &b, p[i]);
            continue;
        }
        if (++i >= n)
            jfail(c, -SL_EFORMAT, "incomplete format");
        jval v = jv_absent();
        if (p[i] == '(') {
            const char *close = memchr(p + i, ')', n - i);
            if (!close)
                jfail(c, -SL_EFORMAT, "incomplete format key");
            if (!mapping)
                jfail(c, -SL_EFORMAT, "format requires a mapping");
            jval *hit = jdict_get_str(args.u.d, p + i + 1, (size_t)(close - p) - i - 1);
            if (!hit)
                jfail(c, -SL_EFORMAT, "KeyError: '%.*s'", (int)((size_t)(close - p) - i - 1), p + i + 1);
            v = *hit;
            i = (size_t)(close - p) + 1;
        }
        char spec[32];
        size_t sk = 0;
        spec[sk++] = '%';
        while (i < n && strchr("-+ #0", p[i]) && sk < 8)
            spec[sk++] = p[i++];
        int width = -1, prec = -1;
        for (int pass = 0; pass < 2; pass++) {
            int *dst = pass ? &prec : &width;
            if (pass) {
                if (i >= n || p[i] != '.')
                    break;
                i++;
                prec = 0;
            }
            if (i < n && p[i] == '*') {
                if (used >= nitems || mapping)
                    jfail(c, -SL_EFORMAT, "not enough arguments for format string");
                int64_t w = jwant_int(c, items[used++], "* width");
                *dst = (int)(w < -4096 ? -4096 : w > 4096 ? 4096 : w);
                i++;
            } else {
                while (i < n && p[i] >= '0' && p[i] <= '9') {
                    *dst = (*dst < 0 ? 0 : *dst) * 10 + (p[i++] - '0');
                    if (*dst > 4096)
                        jfail(c, -SL_ERANGE, "format width too large");
                }
            }
        }
        while (i < n && (p[i] == 'h' || p[i] == 'l' || p[i] == 'L'))
            i++;
        if (i >= n)
            jfail(c, -SL_EFORMAT, "incomplete format");
        char conv = p[i];
        if (conv == '%') {
            jbuf_putc(c, &b, '%');
            continue;
        }
        if (v.t == JT_ABSENT) {
            if (mapping) {
                v = args;
            } else {
                if (used >= nitems)
                    jfail(c, -SL_EFORMAT, "not enough arguments for format string");
                v = items[used++];
            }
        }
        char tmp[4200];
        switch (conv) {
        case 's':
        case 'r':
        case 'a': {
            jbuf sb = {0};
            if (conv == 's')
                jv_str_into(c, &sb, v);
            else
                jv_repr_into(c, &sb, v);
            jval s = jbuf_take(c, &sb);
            if (prec >= 0 && (size_t)prec < jstr_len(s))
                s = jinja_slice(c, s, jv_absent(), jv_int(prec), jv_absent());
            bool left = memchr(spec, '-', sk) != NULL;
            s = width > 0 ? jstr_pad(c, s, width, jv_absent(), left ? -1 : 1) : s;
            jbuf_put(c, &b, s.u.s.p, s.u.s.n);
            break;
        }
        case 'd':
        case 'i':
        case 'u':
        case 'x':
        case 'X':
        case 'o':
        case 'c': {
            int64_t iv;
            if (conv == 'c' && v.t == JT_STR && jstr_len(v) == 1) {
                jbuf_put(c, &b, v.u.s.p, v.u.s.n);
                break;
            }
            if (v.t == JT_FLOAT && conv != 'c' && conv != 'x' && conv != 'X' && conv != 'o') {
                if (!isfinite(v.u.f) || fabs(v.u.f) >= 9.2e18)
                    jfail(c, -SL_ERANGE, "cannot convert float to integer");
                iv = (int64_t)v.u.f;
            } else if (v.t == JT_INT || v.t == JT_BOOL) {
                iv = v.t == JT_BOOL ? v.u.b : v.u.i;
            } else {
                jfail(c, -SL_EFORMAT, "%%%c format: a real number is required, not %s", conv, jv_type_name(v));
            }
            if (conv == 'c') {
                if (iv < 0 || iv > 0x10FFFF)
                    jfail(c, -SL_EFORMAT, "%%c arg not in range(0x110000)");
                put_cp(c, &b, (uint32_t)iv);
                break;
            }
            spec[sk] = 0;
            char f[48];
            char cc = conv == 'i' || conv == 'u' ? 'd' : conv;
            if (prec >= 0)
                snprintf(f, sizeof f, "%s%d.%dll%c", spec, width < 0 ? 0 : width, prec, cc);
            else
                snprintf(f, sizeof f, "%s%dll%c", spec, width < 0 ? 0 : width, cc);
            snprintf(tmp, sizeof tmp, f, (long long)iv);
            jbuf_puts(c, &b, tmp);
            break;
        }
        case 'e':
        case 'E':
        case 'f':
        case 'F':
        case 'g':
        case 'G': {
            if (!jv_is_num(v))
                jfail(c, -SL_EFORMAT, "must be real number, not %s", jv_type_name(v));
            spec[sk] = 0;
            char f[48];
            snprintf(f, sizeof f, "%s%d.%d%c", spec, width < 0 ? 0 : width, prec < 0 ? 6 : prec, conv);
            snprintf(tmp, sizeof tmp, f, jv_num(v));
            jbuf_puts(c, &b, tmp);
            break;
        }
        default: jfail(c, -SL_EFORMAT, "unsupported format character '%c'", conv);
        }
    }
    if (!mapping && used < nitems && args.t == JT_TUPLE)
        jfail(c, -SL_EFORMAT, "not all arguments converted during string formatting");
    if (!mapping && args.t != JT_TUPLE && used == 0)
        jfail(c, -SL_EFORMAT, "not all arguments converted during string formatting");
    return jbuf_take(c, &b);
}

/* ---- str, dict and list methods ---- */

typedef jval (*jmethod_fn)(jctx *c, jval self, const jargs *a);

typedef struct jmethod {
    uint8_t type; /* JT_STR, JT_DICT or JT_LIST (lists and tuples) */
    const char *name;
    jmethod_fn fn; /* NULL: Python has it, sluice does not */
    bool unsafe;   /* modifies its object: the immutable sandbox refuses it */
} jmethod;

static jval m_startswith(jctx *c, jval s, const jargs *a)
{
    jval v[3];
    BIND("startswith", a, v, "prefix", "start", "end");
    int64_t base;
    jval sub = jgiven(v[1]) || jgiven(v[2]) ? sub_range(c, s, v[1], v[2], &base) : s;
    jval *cands = &v[0];
    size_t nc = 1;
    if (v[0].t == JT_TUPLE) {
        cands = v[0].u.l->v;
        nc = v[0].u.l->n;
    }
    for (size_t i = 0; i < nc; i++) {
        jval x = jwant_str(c, cands[i], "startswith first arg");
        if (x.u.s.n <= sub.u.s.n && !memcmp(sub.u.s.p, x.u.s.p, x.u.s.n))
            return jv_bool(true);
    }
    return jv_bool(false);
}

static jval m_endswith(jctx *c, jval s, const jargs *a)
{
    jval v[3];
    BIND("endswith", a, v, "suffix", "start", "end");
    int64_t base;
    jval sub = jgiven(v[1]) || jgiven(v[2]) ? sub_range(c, s, v[1], v[2], &base) : s;
    jval *cands = &v[0];
    size_t nc = 1;
    if (v[0].t == JT_TUPLE) {
        cands = v[0].u.l->v;
        nc = v[0].u.l->n;
    }
    for (size_t i = 0; i < nc; i++) {
        jval x = jwant_str(c, cands[i], "endswith first arg");
        if (x.u.s.n <= sub.u.s.n && !memcmp(sub.u.s.p + sub.u.s.n - x.u.s.n, x.u.s.p, x.u.s.n))
            return jv_bool(true);
    }
    return jv_bool(false);
}

static jval m_split(jctx *c, jval s, const jargs *a)
{
    jval v[2];
    BIND("split", a, v, "sep", "maxsplit");
    return jstr_split(c, s, v[0], v[1], false);
}

static jval m_rsplit(jctx *c, jval s, const jargs *a)
{
    jval v[2];
    BIND("rsplit", a, v, "sep", "maxsplit");
    return jstr_split(c, s, v[0], v[1], true);
}

static jval m_splitlines(jctx *c, jval s, const jargs *a)
{
    jval v[1];
    BIND("splitlines", a, v, "keepends");
    return jstr_splitlines(c, s, jv_truthy(v[0]));
}

static jval m_strip(jctx *c, jval s, const jargs *a)
{
    jval v[1];
    BIND("strip", a, v, "chars");
    return jstr_strip(c, s, v[0], true, true);
}

static jval m_lstrip(jctx *c, jval s, const jargs *a)
{
    jval v[1];
    BIND("lstrip", a, v, "chars");
    return jstr_strip(c, s, v[0], true, false);
}

static jval m_rstrip(jctx *c, jval s, const jargs *a)
{
    jval v[1];
    BIND("rstrip", a, v, "chars");
    return jstr_strip(c, s, v[0], false, true);
}

void jno_args(jctx *c, const char *name, const jargs *a)
{
    if (a->npos || a->nkw)
        jfail(c, -SL_EFORMAT, "%s() takes no arguments", name);
}

static jval m_upper(jctx *c, jval s, const jargs *a) { jno_args(c, "upper", a); return jstr_case(c, s, 1); }
static jval m_lower(jctx *c, jval s, const jargs *a) { jno_args(c, "lower", a); return jstr_case(c, s, 0); }
static jval m_swapcase(jctx *c, jval s, const jargs *a) { jno_args(c, "swapcase", a); return jstr_case(c, s, 2); }
static jval m_title(jctx *c, jval s, const jargs *a) { jno_args(c, "title", a); return py_title(c, s); }
static jval m_capitalize(jctx *c, jval s, const jargs *a) { jno_args(c, "capitalize", a); return jstr_capitalize(c, s); }

static jval m_replace(jctx *c, jval s, const jargs *a)
{
    jval v[3];
    BIND("replace", a, v, "old", "new", "count");
    if (!jgiven(v[0]) || !jgiven(v[1]))
        jfail(c, -SL_EFORMAT, "jstr_replace() expected at least 2 arguments");
    return jstr_replace(c, s, v[0], v[1], jgiven(v[2]) ? jwant_int(c, v[2], "count") : -1);
}

/* find / rfind / index / rindex / count */
static jval search(jctx *c, jval s, const jargs *a, const char *name)
{
    jval v[3];
    BIND(name, a, v, "sub", "start", "end");
    jval sub = jwant_str(c, v[0], "substring");
    int64_t base = 0;
    jval hay = jgiven(v[1]) || jgiven(v[2]) ? sub_range(c, s, v[1], v[2], &base) : s;
    bool right = name[0] == 'r';
    if (!strcmp(name, "count")) {
        if (!sub.u.s.n)
            return jv_int((int64_t)jstr_len(hay) + 1);
        int64_t cnt = 0;
        for (size_t i = 0;;) {
            const char *hit = memmem(hay.u.s.p + i, hay.u.s.n - i, sub.u.s.p, sub.u.s.n);
            if (!hit)
                return jv_int(cnt);
            cnt++;
            i = (size_t)(hit - hay.u.s.p) + sub.u.s.n;
        }
    }
    size_t found = SIZE_MAX;
    if (sub.u.s.n <= hay.u.s.n) {
        if (!right) {
            const char *hit = memmem(hay.u.s.p, hay.u.s.n, sub.u.s.p, sub.u.s.n);
            if (hit)
                found = (size_t)(hit - hay.u.s.p);
        } else {
            for (size_t i = hay.u.s.n - sub.u.s.n + 1; i-- > 0;)
                if (!memcmp(hay.u.s.p + i, sub.u.s.p, sub.u.s.n)) {
                    found = i;
                    break;
                }
        }
    }
    if (found == SIZE_MAX) {
        if (strstr(name, "index"))
            jfail(c, -SL_EFORMAT, "substring not found");
        return jv_int(-1);
    }
    return jv_int(base + cp_index(hay, found));
}

static jval m_find(jctx *c, jval s, const jargs *a) { return search(c, s, a, "find"); }
static jval m_rfind(jctx *c, jval s, const jargs *a) { return search(c, s, a, "rfind"); }
static jval m_index(jctx *c, jval s, const jargs *a) { return search(c, s, a, "index"); }
static jval m_rindex(jctx *c, jval s, const jargs *a) { return search(c, s, a, "rindex"); }
static jval m_count(jctx *c, jval s, const jargs *a) { return search(c, s, a, "count"); }

static jval m_join(jctx *c, jval s, const jargs *a)
{
    jval v[1];
    BIND("join", a, v, "iterable");
    if (!jgiven(v[0]))
        jfail(c, -SL_EFORMAT, "join() takes exactly one argument (0 given)");
    jlist *items = jv_iterate(c, v[0]);
    jbuf b = {0};
    for (size_t i = 0; i < items->n; i++) {
        if (items->v[i].t != JT_STR)
            jfail(c, -SL_EFORMAT, "sequence item %zu: expected str instance, %s found", i, jv_type_name(items->v[i]));
        if (i)
            jbuf_put(c, &b, s.u.s.p, s.u.s.n);
        jbuf_put(c, &b, items->v[i].u.s.p, items->v[i].u.s.n);
    }
    return jbuf_take(c, &b);
}

static jval m_format(jctx *c, jval s, const jargs *a) { return str_format(c, s, a); }

static jval partition(jctx *c, jval s, const jargs *a, bool right)
{
    jval v[1];
    BIND(right ? "rpartition" : "partition", a, v, "sep");
    jval sep = jwant_str(c, v[0], "separator");
    if (!sep.u.s.n)
        jfail(c, -SL_EFORMAT, "empty separator");
    jval parts = jstr_split(c, s, sep, jv_int(1), right);
    jval out = jv_tuple(c, 3);
    if (parts.u.l->n == 2) {
        jlist_push(c, out.u.l, parts.u.l->v[0]);
        jlist_push(c, out.u.l, sep);
        jlist_push(c, out.u.l, parts.u.l->v[1]);
    } else if (!right) {
        jlist_push(c, out.u.l, s);
        jlist_push(c, out.u.l, jv_str("", 0));
        jlist_push(c, out.u.l, jv_str("", 0));
    } else {
        jlist_push(c, out.u.l, jv_str("", 0));
        jlist_push(c, out.u.l, jv_str("", 0));
        jlist_push(c, out.u.l, s);
    }
    return out;
}

static jval m_partition(jctx *c, jval s, const jargs *a) { return partition(c, s, a, false); }
static jval m_rpartition(jctx *c, jval s, const jargs *a) { return partition(c, s, a, true); }

static jval m_removeprefix(jctx *c, jval s, const jargs *a)
{
    jval v[1];
    BIND("removeprefix", a, v, "prefix");
    jval x = jwant_str(c, v[0], "prefix");
    if (x.u.s.n <= s.u.s.n && !memcmp(s.u.s.p, x.u.s.p, x.u.s.n))
        return jv_str(s.u.s.p + x.u.s.n, s.u.s.n - x.u.s.n);
    return s;
}

static jval m_removesuffix(jctx *c, jval s, const jargs *a)
{
    jval v[1];
    BIND("removesuffix", a, v, "suffix");
    jval x = jwant_str(c, v[0], "suffix");
    if (x.u.s.n && x.u.s.n <= s.u.s.n && !memcmp(s.u.s.p + s.u.s.n - x.u.s.n, x.u.s.p, x.u.s.n))
        return jv_str(s.u.s.p, s.u.s.n - x.u.s.n);
    return s;
}

static jval m_center(jctx *c, jval s, const jargs *a)
{
    jval v[2];
    BIND("center", a, v, "width", "fillchar");
    return jstr_pad(c, s, jwant_int(c, v[0], "width"), v[1], 0);
}

static jval m_ljust(jctx *c, jval s, const jargs *a)
{
    jval v[2];
    BIND("ljust", a, v, "width", "fillchar");
    return jstr_pad(c, s, jwant_int(c, v[0], "width"), v[1], -1);
}

static jval m_rjust(jctx *c, jval s, const jargs *a)
{
    jval v[2];
    BIND("rjust", a, v, "width", "fillchar");
    return jstr_pad(c, s, jwant_int(c, v[0], "width"), v[1], 1);
}

static jval m_zfill(jctx *c, jval s, const jargs *a)
{
    jval v[1];
    BIND("zfill", a, v, "width");
    int64_t width = jwant_int(c, v[0], "width"), len = (int64_t)jstr_len(s);
    if (width <= len)
        return s;
    if (width > (int64_t)1 << 28)
        jfail(c, -SL_ERANGE, "string too long");
    jbuf b = {0};
    size_t at = 0;
    if (s.u.s.n && (s.u.s.p[0] == '+' || s.u.s.p[0] == '-')) {
        jbuf_putc(c, &b, s.u.s.p[0]);
        at = 1;
    }
    for (int64_t i = len; i < width; i++)
        jbuf_putc(c, &b, '0');
    jbuf_put(c, &b, s.u.s.p + at, s.u.s.n - at);
    return jbuf_take(c, &b);
}

static jval m_isalnum(jctx *c, jval s, const jargs *a) { jno_args(c, "isalnum", a); return jv_bool(str_all(s, is_alnum)); }
static jval m_isalpha(jctx *c, jval s, const jargs *a) { jno_args(c, "isalpha", a); return jv_bool(str_all(s, jis_alpha)); }
static jval m_isdigit(jctx *c, jval s, const jargs *a) { jno_args(c, "isdigit", a); return jv_bool(str_all(s, jis_digit)); }
static jval m_isspace(jctx *c, jval s, const jargs *a) { jno_args(c, "isspace", a); return jv_bool(str_all(s, is_space)); }
static jval m_islower(jctx *c, jval s, const jargs *a) { jno_args(c, "islower", a); return jv_bool(jstr_case_is(s, true)); }
static jval m_isupper(jctx *c, jval s, const jargs *a) { jno_args(c, "isupper", a); return jv_bool(jstr_case_is(s, false)); }

static jval m_get(jctx *c, jval d, const jargs *a)
{
    jval v[2];
    BIND("get", a, v, "key", "default");
    if (!jgiven(v[0]))
        jfail(c, -SL_EFORMAT, "get expected at least 1 argument, got 0");
    jval *hit = jdict_get(c, d.u.d, v[0]);
    return hit ? *hit : jgiven(v[1]) ? v[1] : jv_none();
}

jval jdict_view(jctx *c, jval d, int view)
{
    jval l = jv_list(c, d.u.d->n);
    l.view = (uint8_t)view;
    for (size_t i = 0; i < d.u.d->n; i++)
        jlist_push(c, l.u.l, view == JV_VIEW_KEYS ? d.u.d->k[i] : view == JV_VIEW_VALUES ? d.u.d->v[i]
                                                                  : tuple2(c, d.u.d->k[i], d.u.d->v[i]));
    return l;
}

static jval m_items(jctx *c, jval d, const jargs *a) { jno_args(c, "items", a); return jdict_view(c, d, JV_VIEW_ITEMS); }
static jval m_keys(jctx *c, jval d, const jargs *a) { jno_args(c, "keys", a); return jdict_view(c, d, JV_VIEW_KEYS); }
static jval m_values(jctx *c, jval d, const jargs *a) { jno_args(c, "values", a); return jdict_view(c, d, JV_VIEW_VALUES); }

static jval m_dict_copy(jctx *c, jval d, const jargs *a)
{
    jno_args(c, "copy", a);
    jval o = jv_dict(c, d.u.d->n);
    for (size_t i = 0; i < d.u.d->n; i++)
        jdict_set(c, o.u.d, d.u.d->k[i], d.u.d->v[i]);
    return o;
}

static jval m_list_count(jctx *c, jval l, const jargs *a)
{
    jval v[1];
    BIND("count", a, v, "value");
    int64_t n = 0;
    for (size_t i = 0; i < l.u.l->n; i++)
        n += jv_eq(c, l.u.l->v[i], v[0]);
    return jv_int(n);
}

static jval m_list_index(jctx *c, jval l, const jargs *a)
{
    jval v[1];
    BIND("index", a, v, "value");
    for (size_t i = 0; i < l.u.l->n; i++)
        if (jv_eq(c, l.u.l->v[i], v[0]))
            return jv_int((int64_t)i);
    jfail(c, -SL_EFORMAT, "value is not in list");
}

static jval m_list_copy(jctx *c, jval l, const jargs *a)
{
    jno_args(c, "copy", a);
    jval o = jv_list(c, l.u.l->n);
    for (size_t i = 0; i < l.u.l->n; i++)
        jlist_push(c, o.u.l, l.u.l->v[i]);
    return o;
}

static const jmethod k_methods[] = {
    {JT_STR, "startswith", m_startswith, false},   {JT_STR, "endswith", m_endswith, false},
    {JT_STR, "split", m_split, false},             {JT_STR, "rsplit", m_rsplit, false},
    {JT_STR, "splitlines", m_splitlines, false},   {JT_STR, "strip", m_strip, false},
    {JT_STR, "lstrip", m_lstrip, false},           {JT_STR, "rstrip", m_rstrip, false},
    {JT_STR, "upper", m_upper, false},             {JT_STR, "lower", m_lower, false},
    {JT_STR, "title", m_title, false},             {JT_STR, "capitalize", m_capitalize, false},
    {JT_STR, "swapcase", m_swapcase, false},       {JT_STR, "replace", m_replace, false},
    {JT_STR, "find", m_find, false},               {JT_STR, "rfind", m_rfind, false},
    {JT_STR, "index", m_index, false},             {JT_STR, "rindex", m_rindex, false},
    {JT_STR, "count", m_count, false},             {JT_STR, "join", m_join, false},
    {JT_STR, "format", m_format, false},           {JT_STR, "partition", m_partition, false},
    {JT_STR, "rpartition", m_rpartition, false},   {JT_STR, "removeprefix", m_removeprefix, false},
    {JT_STR, "removesuffix", m_removesuffix, false}, {JT_STR, "center", m_center, false},
    {JT_STR, "ljust", m_ljust, false},             {JT_STR, "rjust", m_rjust, false},
    {JT_STR, "zfill", m_zfill, false},             {JT_STR, "isalnum", m_isalnum, false},
    {JT_STR, "isalpha", m_isalpha, false},         {JT_STR, "isdigit", m_isdigit, false},
    {JT_STR, "isspace", m_isspace, false},         {JT_STR, "islower", m_islower, false},
    {JT_STR, "isupper", m_isupper, false},
    /* str methods Python has and sluice does not */
    {JT_STR, "casefold", NULL, false},             {JT_STR, "encode", NULL, false},
    {JT_STR, "expandtabs", NULL, false},           {JT_STR, "format_map", NULL, false},
    {JT_STR, "isascii", NULL, false},              {JT_STR, "isdecimal", NULL, false},
    {JT_STR, "isidentifier", NULL, false},         {JT_STR, "isnumeric", NULL, false},
    {JT_STR, "isprintable", NULL, false},          {JT_STR, "istitle", NULL, false},
    {JT_STR, "maketrans", NULL, false},            {JT_STR, "translate", NULL, false},
    {JT_DICT, "get", m_get, false},                {JT_DICT, "items", m_items, false},
    {JT_DICT, "keys", m_keys, false},              {JT_DICT, "values", m_values, false},
    {JT_DICT, "copy", m_dict_copy, false},         {JT_DICT, "clear", NULL, true},
    {JT_DICT, "pop", NULL, true},                  {JT_DICT, "popitem", NULL, true},
    {JT_DICT, "setdefault", NULL, true},           {JT_DICT, "update", NULL, true},
    {JT_DICT, "fromkeys", NULL, false},
    {JT_LIST, "count", m_list_count, false},       {JT_LIST, "index", m_list_index, false},
    {JT_LIST, "copy", m_list_copy, false},         {JT_LIST, "append", NULL, true},
    {JT_LIST, "clear", NULL, true},                {JT_LIST, "extend", NULL, true},
    {JT_LIST, "insert", NULL, true},               {JT_LIST, "pop", NULL, true},
    {JT_LIST, "remove", NULL, true},               {JT_LIST, "reverse", NULL, true},
    {JT_LIST, "sort", NULL, true},
};

jval jinja_method_get(jctx *c, jval v, const char *name)
{
    uint8_t t = v.t == JT_TUPLE ? JT_LIST : v.t;
    if (t != JT_STR && t != JT_DICT && t != JT_LIST)
        return jv_absent();
    for (size_t i = 0; i < sizeof k_methods / sizeof k_methods[0]; i++) {
        const jmethod *m = &k_methods[i];
        if (m->type != t || strcmp(m->name, name))
            continue;
        if (v.t == JT_TUPLE && strcmp(name, "count") && strcmp(name, "index"))
            return jv_absent(); /* tuples have only count and index */
        if (m->unsafe)
            return jv_undef_hint(c, "access to attribute '%s' of '%s' object is unsafe.", name, jv_type_name(v));
        jval r = {0};
        r.t = JT_METHOD;
        r.aux = (uint32_t)i;
        r.u.bm = jalloc(c, sizeof *r.u.bm);
        r.u.bm->self = v;
        r.u.bm->name = m->name;
        return r;
    }
    return jv_absent();
}

jval jinja_method_call(jctx *c, jval m, const jargs *a)
{
    const jmethod *md = &k_methods[m.aux];
    if (!md->fn)
        jfail(c, -SL_EUNSUPPORTED, "the method %s.%s() is not supported by sluice", jv_type_name(m.u.bm->self),
              md->name);
    return md->fn(c, m.u.bm->self, a);
}

