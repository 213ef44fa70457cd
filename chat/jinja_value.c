/* Values of the chat-template interpreter and what Python does with them:
 * the render arena, output buffers, lists and insertion-ordered dicts,
 * truth, equality and ordering, str() and repr() (the way jinja2 prints
 * None, True, floats, lists and dicts), json.dumps for `tojson`, values
 * from a cJSON tree, and the UTF-8 / Unicode helpers (code points,
 * Python's whitespace, case mapping). */
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wctype.h>

#include <cjson/cJSON.h>

#include "chat/jinja.h"
#include "common/log.h"

#define MAX_VALUE_DEPTH 200 /* nesting of lists/dicts walked by eq, repr, tojson, conversion */

/* ---- arena ---- */

struct jchunk {
    jchunk *next;
    size_t size, used;
    _Alignas(16) unsigned char data[];
};

#define CHUNK_SIZE ((size_t)64 << 10)

void *jarena_alloc(jarena *a, size_t n)
{
    if (n > a->cap)
        return NULL;
    size_t n0 = n;
    n = (n + 15) & ~(size_t)15;
    jchunk *h = a->head;
    if (h && h->size - h->used >= n) {
        char *p = (char *)h->data + h->used;
        h->used += n;
        a->last = p;
        a->last_end = p + n0;
        return p;
    }
    size_t size = n > CHUNK_SIZE / 4 ? n : CHUNK_SIZE;
    size_t total = sizeof(jchunk) + size;
    if (a->used + total > a->cap)
        return NULL;
    jchunk *c = calloc(1, total); /* zeroed: arena memory is never reused */
    if (!c)
        return NULL;
    a->used += total;
    c->size = size;
    c->used = n;
    if (h && size != CHUNK_SIZE) { /* a large block: keep the current chunk's free space in front */
        c->next = h->next;
        h->next = c;
        a->last = a->last_end = NULL;
    } else {
        c->next = h;
        a->head = c;
        a->last = (char *)c->data;
        a->last_end = a->last + n0;
    }
    return c->data;
}

bool jarena_grow_last(jarena *a, const char *p, const char *end, size_t more)
{
    jchunk *h = a->head;
    if (!h || !a->last || p != a->last || end != a->last_end)
        return false;
    size_t start = (size_t)(a->last - (char *)h->data), len = (size_t)(end - p);
    if (more > h->size || len + more > h->size - start)
        return false;
    size_t need = (len + more + 15) & ~(size_t)15;
    if (start + need > h->used)
        h->used = start + need; /* the bytes past `used` are still zero: never handed out */
    a->last_end += more;
    return true;
}

void jarena_free(jarena *a)
{
    for (jchunk *c = a->head, *nx; c; c = nx) {
        nx = c->next;
        free(c);
    }
    a->head = NULL;
    a->used = 0;
    a->last = a->last_end = NULL;
}

void *jalloc(jctx *c, size_t n)
{
    void *p = jarena_alloc(&c->arena, n);
    if (!p) {
        if (n > c->arena.cap || c->arena.used + n + sizeof(jchunk) + CHUNK_SIZE > c->arena.cap)
            jfail(c, -SL_ERANGE, "the template needs more than %zu bytes of memory", c->arena.cap);
        jfail(c, -SL_ENOMEM, "out of memory");
    }
    return p;
}

void jstep(jctx *c)
{
    if (++c->steps > c->t->lim.max_steps)
        jfail(c, -SL_ERANGE, "the template ran more than %llu steps", (unsigned long long)c->t->lim.max_steps);
}

/* ---- output buffers ---- */

static void jbuf_reserve(jctx *c, jbuf *b, size_t more)
{
    if (more <= b->cap - b->n)
        return;
    if (b == c->top && b->n + more > c->t->lim.max_output)
        jfail(c, -SL_ERANGE, "the rendering passes %zu bytes", c->t->lim.max_output);
    if (more > SIZE_MAX / 4 - b->n)
        jfail(c, -SL_ERANGE, "string too long");
    size_t cap = b->cap ? b->cap * 2 : 256;
    if (cap < b->n + more)
        cap = b->n + more;
    if (b->heap) {
        char *p = realloc(b->p, cap);
        if (!p)
            jfail(c, -SL_ENOMEM, "out of memory");
        b->p = p;
    } else {
        char *p = jalloc(c, cap);
        if (b->n)
            memcpy(p, b->p, b->n);
        b->p = p;
    }
    b->cap = cap;
}

void jbuf_put(jctx *c, jbuf *b, const char *p, size_t n)
{
    if (!n)
        return;
    jbuf_reserve(c, b, n);
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

void jbuf_putc(jctx *c, jbuf *b, char ch) { jbuf_put(c, b, &ch, 1); }
void jbuf_puts(jctx *c, jbuf *b, const char *s) { jbuf_put(c, b, s, strlen(s)); }

void jbuf_printf(jctx *c, jbuf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k < 0)
        return;
    if ((size_t)k < sizeof tmp) {
        jbuf_put(c, b, tmp, (size_t)k);
        return;
    }
    jbuf_reserve(c, b, (size_t)k + 1);
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)k + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

jval jbuf_take(jctx *c, jbuf *b)
{
    if (b->heap)
        return jv_strdup(c, b->p, b->n);
    return jv_str(b->n ? b->p : "", b->n);
}

/* ---- constructors ---- */

jval jv_cstr(const char *s) { return jv_str(s, strlen(s)); }

jval jv_strdup(jctx *c, const char *p, size_t n)
{
    char *s = jalloc(c, n + 1);
    if (n)
        memcpy(s, p, n);
    return jv_str(s, n);
}

static jval undef_with(jctx *c, jundef u)
{
    jval v = jv_undef();
    v.u.u = jalloc(c, sizeof *v.u.u);
    *v.u.u = u;
    return v;
}

jval jv_undef_name(jctx *c, const char *name)
{
    return undef_with(c, (jundef){.name = name, .obj = jv_absent(), .key = jv_absent()});
}

jval jv_undef_attr(jctx *c, jval obj, const char *name)
{
    return undef_with(c, (jundef){.name = name, .obj = obj, .key = jv_absent()});
}

jval jv_undef_item(jctx *c, jval obj, jval key)
{
    return undef_with(c, (jundef){.obj = obj, .key = key});
}

jval jv_undef_hint(jctx *c, const char *fmt, ...)
{
    jbuf b = {0};
    va_list ap;
    va_start(ap, fmt);
    char tmp[512];
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    jbuf_puts(c, &b, tmp);
    jbuf_putc(c, &b, 0);
    return undef_with(c, (jundef){.hint = b.p, .obj = jv_absent(), .key = jv_absent()});
}

static jval new_seq(jctx *c, uint8_t t, size_t cap)
{
    jval v = {0};
    v.t = t;
    v.u.l = jalloc(c, sizeof *v.u.l);
    if (cap) {
        v.u.l->v = jalloc(c, cap * sizeof(jval));
        v.u.l->cap = cap;
    }
    return v;
}

jval jv_list(jctx *c, size_t cap) { return new_seq(c, JT_LIST, cap); }
jval jv_tuple(jctx *c, size_t cap) { return new_seq(c, JT_TUPLE, cap); }

void jlist_push(jctx *c, jlist *l, jval v)
{
    if (l->n == l->cap) {
        if (l->cap > SIZE_MAX / 4 / sizeof(jval))
            jfail(c, -SL_ERANGE, "list too long");
        size_t cap = l->cap ? l->cap * 2 : 4;
        jval *nv = jalloc(c, cap * sizeof *nv);
        if (l->n)
            memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = v;
}

jval jv_dict(jctx *c, size_t cap)
{
    jval v = {0};
    v.t = JT_DICT;
    v.u.d = jalloc(c, sizeof *v.u.d);
    if (cap) {
        v.u.d->k = jalloc(c, cap * sizeof(jval));
        v.u.d->v = jalloc(c, cap * sizeof(jval));
        v.u.d->cap = cap;
    }
    return v;
}

jval *jdict_get_str(const jdict *d, const char *p, size_t n)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->k[i].t == JT_STR && d->k[i].u.s.n == n && !memcmp(d->k[i].u.s.p, p, n))
            return &d->v[i];
    return NULL;
}

jval *jdict_get(jctx *c, const jdict *d, jval key)
{
    if (key.t == JT_STR)
        return jdict_get_str(d, key.u.s.p, key.u.s.n);
    for (size_t i = 0; i < d->n; i++)
        if (jv_eq(c, d->k[i], key))
            return &d->v[i];
    return NULL;
}

void jdict_set(jctx *c, jdict *d, jval key, jval v)
{
    jval *slot = jdict_get(c, d, key);
    if (slot) {
        *slot = v;
        return;
    }
    if (d->n == d->cap) {
        if (d->cap > SIZE_MAX / 4 / sizeof(jval))
            jfail(c, -SL_ERANGE, "dict too large");
        size_t cap = d->cap ? d->cap * 2 : 4;
        jval *nk = jalloc(c, cap * sizeof *nk), *nv = jalloc(c, cap * sizeof *nv);
        if (d->n) {
            memcpy(nk, d->k, d->n * sizeof *nk);
            memcpy(nv, d->v, d->n * sizeof *nv);
        }
        d->k = nk;
        d->v = nv;
        d->cap = cap;
    }
    d->k[d->n] = key;
    d->v[d->n++] = v;
}

/* ---- truth, equality, ordering ---- */

bool jv_truthy(jval v)
{
    switch (v.t) {
    case JT_ABSENT:
    case JT_UNDEF:
    case JT_NONE: return false;
    case JT_BOOL: return v.u.b;
    case JT_INT: return v.u.i != 0;
    case JT_FLOAT: return v.u.f != 0.0;
    case JT_STR: return v.u.s.n != 0;
    case JT_LIST:
    case JT_TUPLE: return v.u.l->n != 0;
    case JT_DICT: return v.u.d->n != 0;
    default: return true;
    }
}

bool jv_is_num(jval v) { return v.t == JT_BOOL || v.t == JT_INT || v.t == JT_FLOAT; }

double jv_num(jval v)
{
    return v.t == JT_FLOAT ? v.u.f : v.t == JT_INT ? (double)v.u.i : v.t == JT_BOOL ? (double)v.u.b : 0.0;
}

static int64_t int_of(jval v) { return v.t == JT_BOOL ? (int64_t)v.u.b : v.u.i; }

static void check_depth(jctx *c, int depth)
{
    if (depth > MAX_VALUE_DEPTH)
        jfail(c, -SL_ERANGE, "a value is nested more than %d levels deep", MAX_VALUE_DEPTH);
}

static bool eq_rec(jctx *c, jval a, jval b, int depth)
{
    check_depth(c, depth);
    if (jv_is_num(a) && jv_is_num(b)) {
        if (a.t != JT_FLOAT && b.t != JT_FLOAT)
            return int_of(a) == int_of(b);
        return jv_num(a) == jv_num(b);
    }
    if (a.t != b.t)
        return false;
    switch (a.t) {
    case JT_ABSENT:
    case JT_UNDEF:
    case JT_NONE: return true;
    case JT_STR: return a.u.s.n == b.u.s.n && !memcmp(a.u.s.p, b.u.s.p, a.u.s.n);
    case JT_LIST:
    case JT_TUPLE:
        if (a.u.l->n != b.u.l->n)
            return false;
        for (size_t i = 0; i < a.u.l->n; i++)
            if (!eq_rec(c, a.u.l->v[i], b.u.l->v[i], depth + 1))
                return false;
        return true;
    case JT_DICT:
        if (a.u.d->n != b.u.d->n)
            return false;
        for (size_t i = 0; i < a.u.d->n; i++) {
            jval *o = jdict_get(c, b.u.d, a.u.d->k[i]);
            if (!o || !eq_rec(c, a.u.d->v[i], *o, depth + 1))
                return false;
        }
        return true;
    case JT_FUNC:
    case JT_METHOD: return a.aux == b.aux && a.u.ptr == b.u.ptr;
    default: return a.u.ptr == b.u.ptr;
    }
}

bool jv_eq(jctx *c, jval a, jval b) { return eq_rec(c, a, b, 0); }

static int cmp_rec(jctx *c, jval a, jval b, int depth)
{
    check_depth(c, depth);
    if (a.t == JT_UNDEF)
        jfail_undef(c, a);
    if (b.t == JT_UNDEF)
        jfail_undef(c, b);
    if (jv_is_num(a) && jv_is_num(b)) {
        if (a.t != JT_FLOAT && b.t != JT_FLOAT)
            return int_of(a) < int_of(b) ? -1 : int_of(a) > int_of(b);
        double x = jv_num(a), y = jv_num(b);
        return x < y ? -1 : x > y;
    }
    if (a.t == JT_STR && b.t == JT_STR) {
        /* UTF-8 byte order is code point order */
        size_t n = a.u.s.n < b.u.s.n ? a.u.s.n : b.u.s.n;
        int r = n ? memcmp(a.u.s.p, b.u.s.p, n) : 0;
        if (r)
            return r < 0 ? -1 : 1;
        return a.u.s.n < b.u.s.n ? -1 : a.u.s.n > b.u.s.n;
    }
    if ((a.t == JT_LIST || a.t == JT_TUPLE) && a.t == b.t) {
        size_t n = a.u.l->n < b.u.l->n ? a.u.l->n : b.u.l->n;
        for (size_t i = 0; i < n; i++)
            if (!eq_rec(c, a.u.l->v[i], b.u.l->v[i], depth + 1))
                return cmp_rec(c, a.u.l->v[i], b.u.l->v[i], depth + 1);
        return a.u.l->n < b.u.l->n ? -1 : a.u.l->n > b.u.l->n;
    }
    jfail(c, -SL_EFORMAT, "'<' not supported between instances of '%s' and '%s'", jv_type_name(a),
          jv_type_name(b));
}

int jv_cmp(jctx *c, jval a, jval b) { return cmp_rec(c, a, b, 0); }

const char *jv_type_name(jval v)
{
    switch (v.t) {
    case JT_ABSENT:
    case JT_UNDEF: return "Undefined";
    case JT_NONE: return "NoneType";
    case JT_BOOL: return "bool";
    case JT_INT: return "int";
    case JT_FLOAT: return "float";
    case JT_STR: return "str";
    case JT_LIST: return v.view == JV_VIEW_ITEMS ? "dict_items" : v.view == JV_VIEW_KEYS ? "dict_keys"
                         : v.view == JV_VIEW_VALUES ? "dict_values" : "list";
    case JT_TUPLE: return "tuple";
    case JT_DICT: return "dict";
    case JT_NS: return "Namespace";
    case JT_MACRO: return "Macro";
    case JT_FUNC: return "function";
    case JT_METHOD: return "builtin_function_or_method";
    case JT_LOOP: return "LoopContext";
    case JT_JOINER: return "Joiner";
    case JT_CYCLER: return "Cycler";
    }
    return "object";
}

const char *jv_object_name(jval v)
{
    switch (v.t) {
    case JT_NONE: return "None";
    case JT_BOOL: return "bool object";
    case JT_INT: return "int object";
    case JT_FLOAT: return "float object";
    case JT_STR: return "str object";
    case JT_LIST: return "list object";
    case JT_TUPLE: return "tuple object";
    case JT_DICT: return "dict object";
    case JT_NS: return "jinja2.utils.Namespace object";
    case JT_MACRO: return "jinja2.runtime.Macro object";
    case JT_LOOP: return "jinja2.runtime.LoopContext object";
    case JT_UNDEF: return "jinja2.runtime.Undefined object";
    case JT_JOINER: return "jinja2.utils.Joiner object";
    case JT_CYCLER: return "jinja2.utils.Cycler object";
    default: return "builtin_function_or_method object";
    }
}

/* ---- UTF-8 and Unicode ---- */

size_t jutf8_dec(const char *p, size_t n, uint32_t *cp)
{
    const unsigned char *s = (const unsigned char *)p;
    unsigned char b = s[0];
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    size_t k = b >= 0xF0 && b < 0xF5 ? 4 : b >= 0xE0 ? 3 : b >= 0xC2 && b < 0xE0 ? 2 : 0;
    if (k == 3 && b >= 0xF0)
        k = 0;
    if (!k || k > n) {
        *cp = b; /* a stray byte stands for itself */
        return 1;
    }
    uint32_t v = b & (0x7F >> k);
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *cp = b;
            return 1;
        }
        v = (v << 6) | (s[i] & 0x3F);
    }
    if ((k == 3 && v < 0x800) || (k == 4 && (v < 0x10000 || v > 0x10FFFF))) {
        *cp = b;
        return 1;
    }
    *cp = v;
    return k;
}

size_t jutf8_enc(uint32_t cp, char *out)
{
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

bool jpy_isspace(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
           cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

size_t jstr_len(jval s)
{
    size_t n = 0;
    for (size_t i = 0; i < s.u.s.n; n++) {
        unsigned char b = (unsigned char)s.u.s.p[i];
        if (b < 0x80) {
            i++;
        } else {
            uint32_t cp;
            i += jutf8_dec(s.u.s.p + i, s.u.s.n - i, &cp);
        }
    }
    return n;
}

/* Case mapping and classes from the C library's Unicode tables (the built-in
 * C.UTF-8 locale); plain ASCII if that locale cannot be had. */
static locale_t g_utf8_locale;
static pthread_once_t g_locale_once = PTHREAD_ONCE_INIT;
static void locale_init(void) { g_utf8_locale = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0); }
static locale_t utf8_locale(void)
{
    pthread_once(&g_locale_once, locale_init);
    return g_utf8_locale;
}

uint32_t jcase_upper(uint32_t cp)
{
    if (cp < 0x80)
        return cp >= 'a' && cp <= 'z' ? cp - 32 : cp;
    locale_t l = utf8_locale();
    return l ? (uint32_t)towupper_l((wint_t)cp, l) : cp;
}

uint32_t jcase_lower(uint32_t cp)
{
    if (cp < 0x80)
        return cp >= 'A' && cp <= 'Z' ? cp + 32 : cp;
    locale_t l = utf8_locale();
    return l ? (uint32_t)towlower_l((wint_t)cp, l) : cp;
}

bool jcase_isupper(uint32_t cp) { return jcase_lower(cp) != cp; }
bool jcase_islower(uint32_t cp) { return jcase_upper(cp) != cp; }

bool jis_alpha(uint32_t cp)
{
    if (cp < 0x80)
        return (cp | 32) >= 'a' && (cp | 32) <= 'z';
    locale_t l = utf8_locale();
    return l && iswalpha_l((wint_t)cp, l);
}

bool jis_digit(uint32_t cp)
{
    if (cp < 0x80)
        return cp >= '0' && cp <= '9';
    locale_t l = utf8_locale();
    return l && iswdigit_l((wint_t)cp, l);
}

/* ---- printing ---- */

void jfmt_float(double d, char *buf, size_t size)
{
    if (isnan(d)) {
        snprintf(buf, size, "nan");
        return;
    }
    if (isinf(d)) {
        snprintf(buf, size, d < 0 ? "-inf" : "inf");
        return;
    }
    /* shortest digits that read back to d */
    char e[40];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec - 1, d);
        if (strtod(e, NULL) == d)
            break;
    }
    char digits[24];
    size_t nd = 0;
    const char *p = e;
    bool neg = *p == '-';
    if (neg)
        p++;
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9' && nd < sizeof digits - 1)
            digits[nd++] = *p;
    int exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = 0;
    int decpt = exp10 + 1;
    char out[64];
    size_t o = 0;
    if (neg)
        out[o++] = '-';
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            out[o++] = '0';
            out[o++] = '.';
            for (int i = 0; i < -decpt; i++)
                out[o++] = '0';
            memcpy(out + o, digits, nd);
            o += nd;
        } else if ((size_t)decpt >= nd) {
            memcpy(out + o, digits, nd);
            o += nd;
            for (size_t i = nd; i < (size_t)decpt; i++)
                out[o++] = '0';
            out[o++] = '.';
            out[o++] = '0';
        } else {
            memcpy(out + o, digits, (size_t)decpt);
            o += (size_t)decpt;
            out[o++] = '.';
            memcpy(out + o, digits + decpt, nd - (size_t)decpt);
            o += nd - (size_t)decpt;
        }
        out[o] = 0;
    } else {
        out[o++] = digits[0];
        if (nd > 1) {
            out[o++] = '.';
            memcpy(out + o, digits + 1, nd - 1);
            o += nd - 1;
        }
        snprintf(out + o, sizeof out - o, "e%c%02d", decpt - 1 < 0 ? '-' : '+', abs(decpt - 1));
    }
    snprintf(buf, size, "%s", out);
}

/* Whether Python's str.isprintable() holds for cp (approximately: controls,
 * separators other than space, format characters, surrogates and private use
 * are not printable). */
static bool py_printable(uint32_t cp)
{
    if (cp < 0x20 || (cp >= 0x7F && cp < 0xA1) || cp == 0xAD)
        return false;
    if (cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200F) || (cp >= 0x2028 && cp <= 0x202F) ||
        (cp >= 0x205F && cp <= 0x206F) || cp == 0x3000 || cp == 0xFEFF || cp == 0x061C || cp == 0x180E)
        return false;
    if ((cp >= 0xD800 && cp <= 0xF8FF) || (cp >= 0xFFF9 && cp <= 0xFFFB) || cp >= 0xF0000)
        return false;
    return true;
}

static void repr_str(jctx *c, jbuf *b, const char *p, size_t n)
{
    bool has_sq = memchr(p, '\'', n) != NULL, has_dq = memchr(p, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    jbuf_putc(c, b, q);
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = jutf8_dec(p + i, n - i, &cp);
        bool stray = k == 1 && (unsigned char)p[i] >= 0x80;
        if (cp == (uint32_t)q || cp == '\\') {
            jbuf_putc(c, b, '\\');
            jbuf_putc(c, b, (char)cp);
        } else if (cp == '\n') {
            jbuf_puts(c, b, "\\n");
        } else if (cp == '\r') {
            jbuf_puts(c, b, "\\r");
        } else if (cp == '\t') {
            jbuf_puts(c, b, "\\t");
        } else if (stray || !py_printable(cp)) {
            if (cp < 0x100)
                jbuf_printf(c, b, "\\x%02x", cp);
            else if (cp < 0x10000)
                jbuf_printf(c, b, "\\u%04x", cp);
            else
                jbuf_printf(c, b, "\\U%08x", cp);
        } else {
            jbuf_put(c, b, p + i, k);
        }
        i += k;
    }
    jbuf_putc(c, b, q);
}

static void print_rec(jctx *c, jbuf *b, jval v, bool repr, int depth)
{
    check_depth(c, depth);
    char tmp[64];
    switch (v.t) {
    case JT_ABSENT:
    case JT_UNDEF:
        if (repr)
            jbuf_puts(c, b, "Undefined");
        return;
    case JT_NONE: jbuf_puts(c, b, "None"); return;
    case JT_BOOL: jbuf_puts(c, b, v.u.b ? "True" : "False"); return;
    case JT_INT: jbuf_printf(c, b, "%lld", (long long)v.u.i); return;
    case JT_FLOAT:
        jfmt_float(v.u.f, tmp, sizeof tmp);
        jbuf_puts(c, b, tmp);
        return;
    case JT_STR:
        if (repr)
            repr_str(c, b, v.u.s.p, v.u.s.n);
        else
            jbuf_put(c, b, v.u.s.p, v.u.s.n);
        return;
    case JT_LIST:
    case JT_TUPLE: {
        const char *open = v.t == JT_TUPLE ? "(" : v.view == JV_VIEW_ITEMS ? "dict_items(["
                         : v.view == JV_VIEW_KEYS ? "dict_keys([" : v.view == JV_VIEW_VALUES ? "dict_values([" : "[";
        jbuf_puts(c, b, open);
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i)
                jbuf_puts(c, b, ", ");
            print_rec(c, b, v.u.l->v[i], true, depth + 1);
        }
        if (v.t == JT_TUPLE)
            jbuf_puts(c, b, v.u.l->n == 1 ? ",)" : ")");
        else
            jbuf_puts(c, b, v.view ? "])" : "]");
        return;
    }
    case JT_DICT:
    case JT_NS:
        if (v.t == JT_NS)
            jbuf_puts(c, b, "<Namespace ");
        jbuf_putc(c, b, '{');
        for (size_t i = 0; i < v.u.d->n; i++) {
            if (i)
                jbuf_puts(c, b, ", ");
            print_rec(c, b, v.u.d->k[i], true, depth + 1);
            jbuf_puts(c, b, ": ");
            print_rec(c, b, v.u.d->v[i], true, depth + 1);
        }
        jbuf_putc(c, b, '}');
        if (v.t == JT_NS)
            jbuf_putc(c, b, '>');
        return;
    case JT_MACRO: jbuf_puts(c, b, "<Macro>"); return;
    case JT_LOOP: jbuf_puts(c, b, "<LoopContext>"); return;
    default: jbuf_printf(c, b, "<%s>", jv_type_name(v)); return;
    }
}

void jv_str_into(jctx *c, jbuf *b, jval v) { print_rec(c, b, v, false, 0); }
void jv_repr_into(jctx *c, jbuf *b, jval v) { print_rec(c, b, v, true, 0); }

jval jv_to_str(jctx *c, jval v)
{
    if (v.t == JT_STR)
        return v;
    jbuf b = {0};
    jv_str_into(c, &b, v);
    return jbuf_take(c, &b);
}

/* ---- json.dumps ---- */

static void json_str(jctx *c, jbuf *b, const char *p, size_t n, bool ascii)
{
    jbuf_putc(c, b, '"');
    size_t run = 0; /* start of bytes copied as they are */
    for (size_t i = 0; i < n;) {
        unsigned char ch = (unsigned char)p[i];
        const char *esc = NULL;
        char tmp[16];
        size_t k = 1;
        if (ch == '"')
            esc = "\\\"";
        else if (ch == '\\')
            esc = "\\\\";
        else if (ch == '\n')
            esc = "\\n";
        else if (ch == '\r')
            esc = "\\r";
        else if (ch == '\t')
            esc = "\\t";
        else if (ch == '\b')
            esc = "\\b";
        else if (ch == '\f')
            esc = "\\f";
        else if (ch < 0x20 || (ascii && ch == 0x7F)) {
            snprintf(tmp, sizeof tmp, "\\u%04x", ch);
            esc = tmp;
        } else if (ascii && ch >= 0x80) {
            uint32_t cp;
            k = jutf8_dec(p + i, n - i, &cp);
            if (cp >= 0x10000)
                snprintf(tmp, sizeof tmp, "\\u%04x\\u%04x", 0xD800 + ((cp - 0x10000) >> 10),
                         0xDC00 + ((cp - 0x10000) & 0x3FF));
            else
                snprintf(tmp, sizeof tmp, "\\u%04x", cp);
            esc = tmp;
        }
        if (esc) {
            jbuf_put(c, b, p + run, i - run);
            jbuf_puts(c, b, esc);
            i += k;
            run = i;
        } else {
            i++;
        }
    }
    jbuf_put(c, b, p + run, n - run);
    jbuf_putc(c, b, '"');
}

static void json_float(jctx *c, jbuf *b, double d)
{
    if (isnan(d)) {
        jbuf_puts(c, b, "NaN");
    } else if (isinf(d)) {
        jbuf_puts(c, b, d < 0 ? "-Infinity" : "Infinity");
    } else {
        char tmp[64];
        jfmt_float(d, tmp, sizeof tmp);
        jbuf_puts(c, b, tmp);
    }
}

static void json_newline(jctx *c, jbuf *b, const jjson_opts *o, int level)
{
    jbuf_putc(c, b, '\n');
    for (int i = 0; i < level; i++)
        jbuf_puts(c, b, o->indent);
}

/* A dict key as json.dumps writes it (before quoting). */
static jval json_key(jctx *c, jval k)
{
    char tmp[64];
    switch (k.t) {
    case JT_STR: return k;
    case JT_INT: snprintf(tmp, sizeof tmp, "%lld", (long long)k.u.i); return jv_strdup(c, tmp, strlen(tmp));
    case JT_FLOAT:
        if (isnan(k.u.f))
            return jv_cstr("NaN");
        if (isinf(k.u.f))
            return jv_cstr(k.u.f < 0 ? "-Infinity" : "Infinity");
        jfmt_float(k.u.f, tmp, sizeof tmp);
        return jv_strdup(c, tmp, strlen(tmp));
    case JT_BOOL: return jv_cstr(k.u.b ? "true" : "false");
    case JT_NONE: return jv_cstr("null");
    default:
        jfail(c, -SL_EFORMAT, "keys must be str, int, float, bool or None, not %s", jv_type_name(k));
    }
}

static void json_rec(jctx *c, jbuf *b, jval v, const jjson_opts *o, int level)
{
    check_depth(c, level);
    jstep(c);
    switch (v.t) {
    case JT_NONE: jbuf_puts(c, b, "null"); return;
    case JT_BOOL: jbuf_puts(c, b, v.u.b ? "true" : "false"); return;
    case JT_INT: jbuf_printf(c, b, "%lld", (long long)v.u.i); return;
    case JT_FLOAT: json_float(c, b, v.u.f); return;
    case JT_STR: json_str(c, b, v.u.s.p, v.u.s.n, o->ensure_ascii); return;
    case JT_LIST:
    case JT_TUPLE:
        if (!v.u.l->n) {
            jbuf_puts(c, b, "[]");
            return;
        }
        jbuf_putc(c, b, '[');
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i)
                jbuf_puts(c, b, o->item_sep);
            if (o->indent)
                json_newline(c, b, o, level + 1);
            json_rec(c, b, v.u.l->v[i], o, level + 1);
        }
        if (o->indent)
            json_newline(c, b, o, level);
        jbuf_putc(c, b, ']');
        return;
    case JT_DICT: {
        size_t n = v.u.d->n;
        if (!n) {
            jbuf_puts(c, b, "{}");
            return;
        }
        jval *keys = jalloc(c, n * sizeof *keys);
        size_t *order = jalloc(c, n * sizeof *order);
        for (size_t i = 0; i < n; i++) {
            keys[i] = json_key(c, v.u.d->k[i]);
            order[i] = i;
        }
        if (o->sort_keys) /* insertion sort: stable, and dicts here are small */
            for (size_t i = 1; i < n; i++)
                for (size_t j = i; j > 0 && jv_cmp(c, keys[order[j - 1]], keys[order[j]]) > 0; j--) {
                    size_t t = order[j];
                    order[j] = order[j - 1];
                    order[j - 1] = t;
                }
        jbuf_putc(c, b, '{');
        for (size_t i = 0; i < n; i++) {
            if (i)
                jbuf_puts(c, b, o->item_sep);
            if (o->indent)
                json_newline(c, b, o, level + 1);
            json_str(c, b, keys[order[i]].u.s.p, keys[order[i]].u.s.n, o->ensure_ascii);
            jbuf_puts(c, b, o->key_sep);
            json_rec(c, b, v.u.d->v[order[i]], o, level + 1);
        }
        if (o->indent)
            json_newline(c, b, o, level);
        jbuf_putc(c, b, '}');
        return;
    }
    default: jfail(c, -SL_EFORMAT, "Object of type %s is not JSON serializable", jv_type_name(v));
    }
}

void jv_tojson_into(jctx *c, jbuf *b, jval v, const jjson_opts *o) { json_rec(c, b, v, o, 0); }

/* ---- values from cJSON ---- */

static jval from_cjson_rec(jctx *c, const cJSON *j, int depth)
{
    check_depth(c, depth);
    if (cJSON_IsObject(j)) {
        jval d = jv_dict(c, 0);
        for (const cJSON *e = j->child; e; e = e->next)
            jdict_set(c, d.u.d, jv_cstr(e->string ? e->string : ""), from_cjson_rec(c, e, depth + 1));
        return d;
    }
    if (cJSON_IsArray(j)) {
        jval l = jv_list(c, (size_t)cJSON_GetArraySize(j));
        for (const cJSON *e = j->child; e; e = e->next)
            jlist_push(c, l.u.l, from_cjson_rec(c, e, depth + 1));
        return l;
    }
    if (cJSON_IsString(j) || cJSON_IsRaw(j))
        return jv_cstr(j->valuestring ? j->valuestring : "");
    if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        if (d == floor(d) && fabs(d) < 9007199254740992.0)
            return jv_int((int64_t)d);
        return jv_float(d);
    }
    if (cJSON_IsBool(j))
        return jv_bool(cJSON_IsTrue(j));
    return jv_none();
}

jval jv_from_cjson(jctx *c, const void *cjson) { return from_cjson_rec(c, cjson, 0); }

/* ---- iteration ---- */

jlist *jv_iterate(jctx *c, jval v)
{
    switch (v.t) {
    case JT_LIST:
    case JT_TUPLE: return v.u.l;
    case JT_DICT: {
        jval l = jv_list(c, v.u.d->n);
        for (size_t i = 0; i < v.u.d->n; i++)
            jlist_push(c, l.u.l, v.u.d->k[i]);
        return l.u.l;
    }
    case JT_STR: {
        jval l = jv_list(c, v.u.s.n);
        for (size_t i = 0; i < v.u.s.n;) {
            uint32_t cp;
            size_t k = jutf8_dec(v.u.s.p + i, v.u.s.n - i, &cp);
            jval ch = jv_str(v.u.s.p + i, k);
            jlist_push(c, l.u.l, ch);
            i += k;
        }
        return l.u.l;
    }
    case JT_UNDEF:
    case JT_ABSENT: return jv_list(c, 0).u.l;
    default: jfail(c, -SL_EFORMAT, "'%s' object is not iterable", jv_type_name(v));
    }
}
