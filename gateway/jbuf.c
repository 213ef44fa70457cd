/* Growable output buffer and JSON string escaping; see jbuf.h. */
#include "gateway/jbuf.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool reserve(sl_jbuf *b, size_t more)
{
    if (b->failed)
        return false;
    if (b->len + more + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1) {
        if (cap > SIZE_MAX / 2) {
            b->failed = true;
            return false;
        }
        cap *= 2;
    }
    char *p = realloc(b->ptr, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    b->ptr = p;
    b->cap = cap;
    return true;
}

void sl_jbuf_add(sl_jbuf *b, const char *s, size_t len)
{
    if (!reserve(b, len))
        return;
    if (len)
        memcpy(b->ptr + b->len, s, len);
    b->len += len;
    b->ptr[b->len] = 0;
}

void sl_jbuf_puts(sl_jbuf *b, const char *s) { sl_jbuf_add(b, s, strlen(s)); }

void sl_jbuf_printf(sl_jbuf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        sl_jbuf_add(b, small, (size_t)n);
        return;
    }
    if (!reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->ptr + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when the bytes there
 * are not one (overlong forms, surrogates and values over U+10FFFF
 * included). */
static size_t utf8_seq(const unsigned char *s, size_t len)
{
    unsigned c = s[0];
    size_t n;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

size_t sl_utf8_complete(const char *s, size_t len)
{
    /* Only the last three bytes can begin an unfinished sequence. */
    size_t start = len > 3 ? len - 3 : 0;
    for (size_t i = start; i < len; i++) {
        unsigned c = (unsigned char)s[i];
        size_t need = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c <= 0xDF ? 2 : 0;
        if (c >= 0xF5)
            need = 0;
        if (need && i + need > len) {
            bool cont = true;
            for (size_t j = i + 1; j < len; j++)
                cont &= ((unsigned char)s[j] & 0xC0) == 0x80;
            if (cont)
                return i;
        }
    }
    return len;
}

void sl_jbuf_str(sl_jbuf *b, const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    if (!reserve(b, len + 2))
        return;
    b->ptr[b->len++] = '"';
    size_t i = 0;
    while (i < len) {
        /* Copy the longest run that needs no escaping in one go. */
        size_t run = i;
        while (run < len && u[run] >= 0x20 && u[run] < 0x80 && u[run] != '"' && u[run] != '\\')
            run++;
        if (run > i) {
            sl_jbuf_add(b, s + i, run - i);
            i = run;
            continue;
        }
        unsigned c = u[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            sl_jbuf_add(b, e, 2);
            i++;
        } else if (c < 0x20) {
            const char *e = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;
            if (e)
                sl_jbuf_add(b, e, 2);
            else
                sl_jbuf_printf(b, "\\u%04x", c);
            i++;
        } else {
            size_t n = utf8_seq(u + i, len - i);
            if (n) {
                sl_jbuf_add(b, s + i, n);
                i += n;
            } else {
                sl_jbuf_add(b, "\xEF\xBF\xBD", 3); /* U+FFFD for the bad byte */
                i++;
            }
        }
    }
    sl_jbuf_add(b, "\"", 1);
}

void sl_jbuf_cstr(sl_jbuf *b, const char *s)
{
    if (s)
        sl_jbuf_str(b, s, strlen(s));
    else
        sl_jbuf_puts(b, "null");
}

void sl_jbuf_num(sl_jbuf *b, double v)
{
    if (!isfinite(v))
        v = 0;
    if (v == (double)(long long)v && fabs(v) < 1e15)
        sl_jbuf_printf(b, "%lld", (long long)v);
    else
        sl_jbuf_printf(b, "%.17g", v);
}

void sl_jbuf_consume(sl_jbuf *b, size_t n)
{
    if (b->failed || !b->ptr)
        return;
    if (n > b->len)
        n = b->len;
    memmove(b->ptr, b->ptr + n, b->len - n);
    b->len -= n;
    b->ptr[b->len] = 0;
}

bool sl_jbuf_ok(const sl_jbuf *b) { return !b->failed; }

char *sl_jbuf_take(sl_jbuf *b, size_t *len)
{
    char *p = b->failed ? NULL : b->ptr;
    if (!p && !b->failed) {
        p = malloc(1);
        if (p)
            *p = 0;
    }
    if (len)
        *len = p ? b->len : 0;
    if (b->failed)
        free(b->ptr);
    *b = (sl_jbuf){0};
    return p;
}

void sl_jbuf_free(sl_jbuf *b)
{
    free(b->ptr);
    *b = (sl_jbuf){0};
}
