/* The chat-template builtins, part 2: Jinja's filters and tests and the
 * globals (range, namespace, dict, joiner, cycler, raise_exception,
 * strftime_now), with the semantics of Python's jinja2 as the hubs configure
 * it (`tojson` is json.dumps without ASCII escaping, keys in order; `sort`
 * and `unique` ignore case by default; `indent` keeps a trailing newline;
 * ranges are capped as the sandbox caps them). String work is in
 * jinja_methods.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat/jinja.h"
#include "common/log.h"

/* The sandbox refuses ranges longer than this (jinja2.sandbox.MAX_RANGE). */
#define MAX_RANGE 100000

/* ---- filters ---- */

typedef jval (*jfilter_fn)(jctx *c, jval v, const jargs *a);

static jval as_text(jctx *c, jval v) { return jv_to_str(c, v); }

static size_t length_of(jctx *c, jval v)
{
    switch (v.t) {
    case JT_STR: return jstr_len(v);
    case JT_LIST:
    case JT_TUPLE: return v.u.l->n;
    case JT_DICT: return v.u.d->n;
    case JT_UNDEF: return 0;
    default: jfail(c, -SL_EFORMAT, "object of type '%s' has no len()", jv_type_name(v));
    }
}

/* item[attr] for a dotted attribute path ("a.b.0"), as Jinja's attribute getters. */
static jval attr_path(jctx *c, jval item, jval path)
{
    if (path.t == JT_INT)
        return jinja_getitem(c, item, path);
    jval p = jwant_str(c, path, "attribute");
    size_t i = 0;
    do {
        const char *dot = memchr(p.u.s.p + i, '.', p.u.s.n - i);
        size_t end = dot ? (size_t)(dot - p.u.s.p) : p.u.s.n;
        jval part = jv_str(p.u.s.p + i, end - i);
        bool digits = end > i;
        int64_t num = 0;
        for (size_t k = i; k < end && digits; k++) {
            digits = p.u.s.p[k] >= '0' && p.u.s.p[k] <= '9';
            num = num * 10 + (p.u.s.p[k] - '0');
            if (num > (int64_t)1 << 40)
                digits = false;
        }
        item = jinja_getitem(c, item, digits ? jv_int(num) : part);
        i = end + 1;
    } while (i <= p.u.s.n);
    return item;
}

/* The sort key of a value: an attribute of it, lowercased when not case sensitive. */
static jval sort_key(jctx *c, jval v, jval attribute, bool case_sensitive)
{
    if (jgiven(attribute) && attribute.t != JT_NONE)
        v = attr_path(c, v, attribute);
    if (!case_sensitive && v.t == JT_STR)
        v = jstr_case(c, v, 0);
    return v;
}

/* Stable merge sort of idx[0..n) by keys. */
static void merge_sort(jctx *c, size_t *idx, size_t n, const jval *keys, bool reverse)
{
    size_t *tmp = jalloc(c, (n + 1) * sizeof *tmp);
    for (size_t w = 1; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                jstep(c);
                int r = jv_cmp(c, keys[idx[j]], keys[idx[i]]);
                bool take_right = reverse ? r > 0 : r < 0;
                tmp[k++] = take_right ? idx[j++] : idx[i++];
            }
            while (i < mid)
                tmp[k++] = idx[i++];
            while (j < hi)
                tmp[k++] = idx[j++];
        }
        memcpy(idx, tmp, n * sizeof *idx);
    }
}

static jval sorted(jctx *c, jlist *items, jval attribute, bool case_sensitive, bool reverse)
{
    size_t n = items->n;
    jval *keys = jalloc(c, (n + 1) * sizeof *keys);
    size_t *idx = jalloc(c, (n + 1) * sizeof *idx);
    for (size_t i = 0; i < n; i++) {
        keys[i] = sort_key(c, items->v[i], attribute, case_sensitive);
        idx[i] = i;
    }
    merge_sort(c, idx, n, keys, reverse);
    jval out = jv_list(c, n);
    for (size_t i = 0; i < n; i++)
        jlist_push(c, out.u.l, items->v[idx[i]]);
    return out;
}

static jval f_abs(jctx *c, jval v, const jargs *a)
{
    jno_args(c, "abs", a);
    if (v.t == JT_FLOAT)
        return jv_float(fabs(v.u.f));
    if (v.t == JT_INT || v.t == JT_BOOL) {
        int64_t i = v.t == JT_BOOL ? v.u.b : v.u.i;
        if (i == INT64_MIN)
            jfail(c, -SL_ERANGE, "integer overflow");
        return jv_int(i < 0 ? -i : i);
    }
    if (v.t == JT_UNDEF)
        jfail_undef(c, v);
    jfail(c, -SL_EFORMAT, "bad operand type for abs(): '%s'", jv_type_name(v));
}

static jval f_attr(jctx *c, jval v, const jargs *a)
{
    jval p[1];
    BIND("attr", a, p, "name");
    jval name = jwant_str(c, p[0], "attr name");
    char *s = jalloc(c, name.u.s.n + 1);
    memcpy(s, name.u.s.p, name.u.s.n);
    if (v.t == JT_DICT) { /* attributes only: a dict's keys are items */
        jval m = s[0] == '_' ? jv_absent() : jinja_method_get(c, v, s);
        return m.t != JT_ABSENT ? m : jv_undef_attr(c, v, s);
    }
    return jinja_getattr(c, v, s);
}

static jval f_batch(jctx *c, jval v, const jargs *a)
{
    jval p[2];
    BIND("batch", a, p, "linecount", "fill_with");
    int64_t size = jwant_int(c, p[0], "linecount");
    if (size <= 0)
        jfail(c, -SL_EFORMAT, "batch size must be positive");
    jlist *items = jv_iterate(c, v);
    jval out = jv_list(c, 4), cur = jv_list(c, 0);
    for (size_t i = 0; i < items->n; i++) {
        if (cur.u.l->n == (size_t)size) {
            jlist_push(c, out.u.l, cur);
            cur = jv_list(c, 0);
        }
        jlist_push(c, cur.u.l, items->v[i]);
    }
    if (cur.u.l->n) {
        if (jgiven(p[1]) && p[1].t != JT_NONE)
            while (cur.u.l->n < (size_t)size)
                jlist_push(c, cur.u.l, p[1]);
        jlist_push(c, out.u.l, cur);
    }
    return out;
}

static jval f_capitalize(jctx *c, jval v, const jargs *a) { jno_args(c, "capitalize", a); return jstr_capitalize(c, as_text(c, v)); }

static jval f_center(jctx *c, jval v, const jargs *a)
{
    jval p[1];
    BIND("center", a, p, "width");
    return jstr_pad(c, as_text(c, v), jgiven(p[0]) ? jwant_int(c, p[0], "width") : 80, jv_absent(), 0);
}

static jval f_length(jctx *c, jval v, const jargs *a)
{
    jno_args(c, "length", a);
    return jv_int((int64_t)length_of(c, v));
}

static jval f_default(jctx *c, jval v, const jargs *a)
{
    jval p[2];
    BIND("default", a, p, "default_value", "boolean");
    jval dflt = jgiven(p[0]) ? p[0] : jv_str("", 0);
    if (v.t == JT_UNDEF || (jv_truthy(p[1]) && !jv_truthy(v)))
        return dflt;
    return v;
}

static jval f_dictsort(jctx *c, jval v, const jargs *a)
{
    jval p[3];
    BIND("dictsort", a, p, "case_sensitive", "by", "reverse");
    if (v.t != JT_DICT)
        jfail(c, -SL_EFORMAT, "dictsort needs a mapping, not %s", jv_type_name(v));
    int pos = 0;
    if (jgiven(p[1])) {
        jval by = jwant_str(c, p[1], "by");
        if (by.u.s.n == 5 && !memcmp(by.u.s.p, "value", 5))
            pos = 1;
        else if (!(by.u.s.n == 3 && !memcmp(by.u.s.p, "key", 3)))
            jfail(c, -SL_EFORMAT, "You can only sort by either \"key\" or \"value\"");
    }
    jval items = jdict_view(c, v, JV_VIEW_ITEMS);
    items.view = JV_VIEW_NONE;
    return sorted(c, items.u.l, jv_int(pos), jv_truthy(p[0]), jv_truthy(p[2]));
}

static jval f_escape(jctx *c, jval v, const jargs *a)
{
    jno_args(c, "escape", a);
    jval s = as_text(c, v);
    jbuf b = {0};
    for (size_t i = 0; i < s.u.s.n; i++) {
        switch (s.u.s.p[i]) {
        case '&': jbuf_puts(c, &b, "&amp;"); break;
        case '<': jbuf_puts(c, &b, "&lt;"); break;
        case '>': jbuf_puts(c, &b, "&gt;"); break;
        case '"': jbuf_puts(c, &b, "&#34;"); break;
        case '\'': jbuf_puts(c, &b, "&#39;"); break;
        default: jbuf_putc(c, &b, s.u.s.p[i]);
        }
    }
    return jbuf_take(c, &b);
}

static jval f_first(jctx *c, jval v, const jargs *a)
{
    jno_args(c, "first", a);
    jlist *items = jv_iterate(c, v);
    return items->n ? items->v[0] : jv_undef_hint(c, "No first item, sequence was empty.");
}

static jval f_last(jctx *c, jval v, const jargs *a)
{
    jno_args(c, "last", a);
    jlist *items = jv_iterate(c, v);
    return items->n ? items->v[items->n - 1] : jv_undef_hint(c, "No last item, sequence was empty.");
}

/* Python's float(str): optional whitespace, a decimal number, inf or nan. */
static bool parse_float(jval s, double *out)
{
    jval t = s;
    size_t a = 0, z = t.u.s.n;
    while (a < z && jpy_isspace((unsigned char)t.u.s.p[a]))
        a++;
    while (z > a && jpy_isspace((unsigned char)t.u.s.p[z - 1]))
        z--;
    if (a == z || z - a > 64)
        return false;
    char buf[72];
    size_t k = 0;
    for (size_t i = a; i < z; i++) {
        char ch = t.u.s.p[i];
        if (ch == '_') {
            bool ok = i > a && i + 1 < z && t.u.s.p[i - 1] >= '0' && t.u.s.p[i - 1] <= '9' && t.u.s.p[i + 1] >= '0' &&
                      t.u.s.p[i + 1] <= '9';
            if (!ok)
                return false;
            continue;
        }
        if (!strchr("0123456789+-.eEinfatyINFATY", ch))
            return false;
        buf[k++] = ch;
    }
    buf[k] = 0;
    char *end;
    *out = strtod(buf, &end);
    if (*end)
        return false;
    /* strtod also reads hex and "infinity" spellings Python accepts; refuse hex */
    return !strpbrk(buf, "xX");
}

/* Python's int(str, base). */
static bool parse_int(jval s, int base, int64_t *out)
{
    size_t a = 0, z = s.u.s.n;
    while (a < z && jpy_isspace((unsigned char)s.u.s.p[a]))
        a++;
    while (z > a && jpy_isspace((unsigned char)s.u.s.p[z - 1]))
        z--;
    bool neg = false;
    if (a < z && (s.u.s.p[a] == '+' || s.u.s.p[a] == '-'))
        neg = s.u.s.p[a++] == '-';
    if (base == 0 || base == 16 || base == 8 || base == 2) {
        if (z - a > 2 && s.u.s.p[a] == '0') {
            char p = (char)(s.u.s.p[a + 1] | 32);
            int pb = p == 'x' ? 16 : p == 'o' ? 8 : p == 'b' ? 2 : 0;
            if (pb && (base == 0 || base == pb)) {
                base = pb;
                a += 2;
            }
        }
        if (base == 0)
            base = 10;
    }
    if (a == z || base < 2 || base > 36)
        return false;
    uint64_t v = 0;
    for (size_t i = a; i < z; i++) {
        char ch = s.u.s.p[i];
        if (ch == '_' && i > a && i + 1 < z)
            continue;
        int d = ch >= '0' && ch <= '9' ? ch - '0' : (ch | 32) >= 'a' && (ch | 32) <= 'z' ? (ch | 32) - 'a' + 10 : 99;
        if (d >= base)
            return false;
        if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base)
            return false;
        v = v * (uint64_t)base + (uint64_t)d;
        if (v > (uint64_t)INT64_MAX + neg)
            return false;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

static jval f_float(jctx *c, jval v, const jargs *a)
{
    jval p[1];
    BIND("float", a, p, "default");
    jval dflt = jgiven(p[0]) ? p[0] : jv_float(0.0);
    double d;
    if (jv_is_num(v))
        return jv_float(jv_num(v));
    if (v.t == JT_STR && parse_float(v, &d))
        return jv_float(d);
    return dflt;
}

static jval f_int(jctx *c, jval v, const jargs *a)
{
    jval p[2];
    BIND("int", a, p, "default", "base");
    jval dflt = jgiven(p[0]) ? p[0] : jv_int(0);
    int64_t base = jgiven(p[1]) ? jwant_int(c, p[1], "base") : 10, i;
    double d;
    if (v.t == JT_INT || v.t == JT_BOOL)
        return jv_int(v.t == JT_BOOL ? v.u.b : v.u.i);
    if (v.t == JT_FLOAT)
        return isfinite(v.u.f) && fabs(v.u.f) < 9.2e18 ? jv_int((int64_t)v.u.f) : dflt;
    if (v.t == JT_STR) {
        if (parse_int(v, (int)base, &i))
            return jv_int(i);
        if (parse_float(v, &d) && isfinite(d) && fabs(d) < 9.2e18)
            return jv_int((int64_t)d);
    }
    return dflt;
}

static jval f_format(jctx *c, jval v, const jargs *a)
{
    if (a->npos && a->nkw)
        jfail(c, -SL_EFORMAT, "can't handle positional and keyword arguments at the same time");
    jval args;
    if (a->nkw) {
        args = jv_dict(c, a->nkw);
        for (size_t i = 0; i < a->nkw; i++)
            jdict_set(c, args.u.d, jv_cstr(a->kwname[i]), a->kw[i]);
    } else {
        args = jv_tuple(c, a->npos);
        for (size_t i = 0; i < a->npos; i++)
            jlist_push(c, args.u.l, a->pos[i]);
    }
    return jinja_percent_format(c, as_text(c, v), args);
}

static jval f_indent(jctx *c, jval v, const jargs *a)
{
    jval p[3];
    BIND("indent", a, p, "width", "first", "blank");
    jval ind;
    if (jgiven(p[0]) && p[0].t == JT_STR) {
        ind = p[0];
    } else {
        int64_t w = jgiven(p[0]) ? jwant_int(c, p[0], "width") : 4;
        if (w < 0)
            w = 0;
        if (w > 4096)
            jfail(c, -SL_ERANGE, "indent width too large");
        char *sp = jalloc(c, (size_t)w + 1);
        memset(sp, ' ', (size_t)w);
        ind = jv_str(sp, (size_t)w);
    }
    jval s = as_text(c, v);
    jval s2 = jv_strdup(c, s.u.s.p, s.u.s.n + 1); /* Jinja appends "\n" before splitting lines */
    ((char *)s2.u.s.p)[s.u.s.n] = '\n';
    jlist *lines = jstr_splitlines(c, s2, false).u.l;
    jbuf b = {0};
    if (jv_truthy(p[1]))
        jbuf_put(c, &b, ind.u.s.p, ind.u.s.n);
    for (size_t i = 0; i < lines->n; i++) {
        jval ln = lines->v[i];
        if (i) {
            jbuf_putc(c, &b, '\n');
            if (ln.u.s.n || jv_truthy(p[2]))
                jbuf_put(c, &b, ind.u.s.p, ind.u.s.n);
        }
        jbuf_put(c, &b, ln.u.s.p, ln.u.s.n);
    }
    return jbuf_take(c, &b);
}

static jval f_items(jctx *c, jval v, const jargs *a)
{
    jno_args(c, "items", a);
    if (v.t == JT_UNDEF)
        return jv_list(c, 0);
    if (v.t != JT_DICT)
        jfail(c, -SL_EFORMAT, "Can only get item pairs from a mapping.");
    jval l = jdict_view(c, v, JV_VIEW_ITEMS);
    l.view = JV_VIEW_NONE;
    return l;
}

static jval f_join(jctx *c, jval v, const jargs *a)
{
    jval p[2];
    BIND("join", a, p, "d", "attribute");
    jval sep = jgiven(p[0]) ? as_text(c, p[0]) : jv_str("", 0);
    jlist *items = jv_iterate(c, v);
    jbuf b = {0};
    for (size_t i = 0; i < items->n; i++) {
        jstep(c);
        if (i)
            jbuf_put(c, &b, sep.u.s.p, sep.u.s.n);
        jval x = jgiven(p[1]) && p[1].t != JT_NONE ? attr_path(c, items->v[i], p[1]) : items->v[i];
        jv_str_into(c, &b, x);
    }
    return jbuf_take(c, &b);
}

static jval f_list(jctx *c, jval v, const jargs *a)
{
    jno_args(c, "list", a);
    jlist *items = jv_iterate(c, v);
    jval out = jv_list(c, items->n);
    for (size_t i = 0; i < items->n; i++)
        jlist_push(c, out.u.l, items->v[i]);
    return out;
}

static jval f_lower(jctx *c, jval v, const jargs *a) { jno_args(c, "lower", a); return jstr_case(c, as_text(c, v), 0); }
static jval f_upper(jctx *c, jval v, const jargs *a) { jno_args(c, "upper", a); return jstr_case(c, as_text(c, v), 1); }

/* Arguments after the first `skip` positional ones, for a filter or test applied by name. */
static jargs rest_args(const jargs *a, size_t skip)
{
    jargs r = *a;
    r.npos = a->npos > skip ? a->npos - skip : 0;
    r.pos = a->pos ? a->pos + (a->npos > skip ? skip : a->npos) : NULL;
    return r;
}

static jval f_map(jctx *c, jval v, const jargs *a)
{
    jlist *items = jv_iterate(c, v);
    jval out = jv_list(c, items->n);
    jval attribute = jv_absent(), dflt = jv_absent();
    for (size_t k = 0; k < a->nkw; k++) {
        if (!strcmp(a->kwname[k], "attribute"))
            attribute = a->kw[k];
        else if (!strcmp(a->kwname[k], "default"))
            dflt = a->kw[k];
    }
    if (jgiven(attribute)) {
        for (size_t i = 0; i < items->n; i++) {
            jval x = attr_path(c, items->v[i], attribute);
            jlist_push(c, out.u.l, x.t == JT_UNDEF && jgiven(dflt) ? dflt : x);
        }
        return out;
    }
    if (!a->npos)
        jfail(c, -SL_EFORMAT, "map requires a filter argument");
    jval name = jwant_str(c, a->pos[0], "map filter name");
    char *nm = jalloc(c, name.u.s.n + 1);
    memcpy(nm, name.u.s.p, name.u.s.n);
    int idx = jinja_filter_index(nm);
    if (idx < 0)
        jfail(c, jinja_filter_known(nm) ? -SL_EUNSUPPORTED : -SL_EFORMAT, "No filter named '%s'.", nm);
    jargs rest = rest_args(a, 1);
    for (size_t i = 0; i < items->n; i++) {
        jstep(c);
        jlist_push(c, out.u.l, jinja_filter_call(c, idx, items->v[i], &rest));
    }
    return out;
}

static jval minmax(jctx *c, jval v, const jargs *a, bool want_max)
{
    jval p[2];
    BIND(want_max ? "max" : "min", a, p, "case_sensitive", "attribute");
    jlist *items = jv_iterate(c, v);
    if (!items->n)
        return jv_undef_hint(c, "No aggregated item, sequence was empty.");
    size_t best = 0;
    jval bk = sort_key(c, items->v[0], p[1], jv_truthy(p[0]));
    for (size_t i = 1; i < items->n; i++) {
        jval k = sort_key(c, items->v[i], p[1], jv_truthy(p[0]));
        int r = jv_cmp(c, k, bk);
        if (want_max ? r > 0 : r < 0) {
            best = i;
            bk = k;
        }
    }
    return items->v[best];
}

static jval f_max(jctx *c, jval v, const jargs *a) { return minmax(c, v, a, true); }
static jval f_min(jctx *c, jval v, const jargs *a) { return minmax(c, v, a, false); }

/* select / reject / selectattr / rejectattr */
static jval select_common(jctx *c, jval v, const jargs *a, bool with_attr, bool keep)
{
    jlist *items = jv_iterate(c, v);
    size_t skip = with_attr ? 1 : 0;
    jval attribute = jv_absent();
    if (with_attr) {
        if (!a->npos)
            jfail(c, -SL_EFORMAT, "Missing parameter for attribute name");
        attribute = a->pos[0];
    }
    int test = -1;
    jargs rest = rest_args(a, skip + 1);
    if (a->npos > skip) {
        jval name = jwant_str(c, a->pos[skip], "test name");
        char *nm = jalloc(c, name.u.s.n + 1);
        memcpy(nm, name.u.s.p, name.u.s.n);
        test = jinja_test_index(nm);
        if (test < 0)
            jfail(c, -SL_EFORMAT, "No test named '%s'.", nm);
    }
    jval out = jv_list(c, items->n);
    for (size_t i = 0; i < items->n; i++) {
        jstep(c);
        jval x = with_attr ? attr_path(c, items->v[i], attribute) : items->v[i];
        bool ok = test >= 0 ? jinja_test_call(c, test, x, &rest) : jv_truthy(x);
        if (ok == keep)
            jlist_push(c, out.u.l, items->v[i]);
    }
    return out;
}

static jval f_select(jctx *c, jval v, const jargs *a) { return select_common(c, v, a, false, true); }
static jval f_reject(jctx *c, jval v, const jargs *a) { return select_common(c, v, a, false, false); }
static jval f_selectattr(jctx *c, jval v, const jargs *a) { return select_common(c, v, a, true, true); }
static jval f_rejectattr(jctx *c, jval v, const jargs *a) { return select_common(c, v, a, true, false); }

static jval f_replace(jctx *c, jval v, const jargs *a)
{
    jval p[3];
    BIND("replace", a, p, "old", "new", "count");
    if (!jgiven(p[0]) || !jgiven(p[1]))
        jfail(c, -SL_EFORMAT, "jstr_replace() missing required arguments");
    int64_t count = jgiven(p[2]) && p[2].t != JT_NONE ? jwant_int(c, p[2], "count") : -1;
    return jstr_replace(c, as_text(c, v), as_text(c, p[0]), as_text(c, p[1]), count);
}

static jval f_reverse(jctx *c, jval v, const jargs *a)
{
    jno_args(c, "reverse", a);
    if (v.t == JT_STR)
        return jinja_slice(c, v, jv_absent(), jv_absent(), jv_int(-1));
    jlist *items = jv_iterate(c, v);
    jval out = jv_list(c, items->n);
    for (size_t i = items->n; i-- > 0;)
        jlist_push(c, out.u.l, items->v[i]);
    return out;
}

static jval f_round(jctx *c, jval v, const jargs *a)
{
    jval p[2];
    BIND("round", a, p, "precision", "method");
    int64_t prec = jgiven(p[0]) ? jwant_int(c, p[0], "precision") : 0;
    const char *method = "common";
    if (jgiven(p[1])) {
        jval m = jwant_str(c, p[1], "method");
        method = m.u.s.n == 4 && !memcmp(m.u.s.p, "ceil", 4) ? "ceil" : m.u.s.n == 5 && !memcmp(m.u.s.p, "floor", 5)
               ? "floor" : m.u.s.n == 6 && !memcmp(m.u.s.p, "common", 6) ? "common" : NULL;
        if (!method)
            jfail(c, -SL_EFORMAT, "method must be common, ceil or floor");
    }
    if (!jv_is_num(v))
        jfail(c, -SL_EFORMAT, "type %s doesn't define __round__ method", jv_type_name(v));
    if (prec < -308 || prec > 308)
        jfail(c, -SL_ERANGE, "round precision out of range");
    double x = jv_num(v);
    if (!strcmp(method, "common")) {
        if (v.t != JT_FLOAT && prec >= 0)
            return jv_int(v.t == JT_BOOL ? v.u.b : v.u.i);
        if (!isfinite(x) || prec < 0) {
            double s = pow(10.0, (double)-prec);
            return jv_float(prec < 0 ? nearbyint(x / s) * s : x);
        }
        char buf[400];
        snprintf(buf, sizeof buf, "%.*f", (int)prec, x); /* correctly rounded, ties to even */
        return jv_float(strtod(buf, NULL));
    }
    double s = pow(10.0, (double)prec);
    return jv_float((method[0] == 'c' ? ceil(x * s) : floor(x * s)) / s);
}

static jval f_safe(jctx *c, jval v, const jargs *a) { jno_args(c, "safe", a); return as_text(c, v); }

static jval f_sort(jctx *c, jval v, const jargs *a)
{
    jval p[3];
    BIND("sort", a, p, "reverse", "case_sensitive", "attribute");
    return sorted(c, jv_iterate(c, v), p[2], jv_truthy(p[1]), jv_truthy(p[0]));
}

static jval f_string(jctx *c, jval v, const jargs *a) { jno_args(c, "string", a); return as_text(c, v); }

static jval f_sum(jctx *c, jval v, const jargs *a)
{
    jval p[2];
    BIND("sum", a, p, "attribute", "start");
    jval acc = jgiven(p[1]) ? p[1] : jv_int(0);
    jlist *items = jv_iterate(c, v);
    for (size_t i = 0; i < items->n; i++) {
        jval x = jgiven(p[0]) && p[0].t != JT_NONE ? attr_path(c, items->v[i], p[0]) : items->v[i];
        if (!jv_is_num(x) || !jv_is_num(acc))
            jfail(c, -SL_EFORMAT, "unsupported operand type(s) for +: '%s' and '%s'", jv_type_name(acc),
                  jv_type_name(x));
        if (acc.t != JT_FLOAT && x.t != JT_FLOAT) {
            int64_t r, ai = acc.t == JT_BOOL ? acc.u.b : acc.u.i, xi = x.t == JT_BOOL ? x.u.b : x.u.i;
            if (__builtin_add_overflow(ai, xi, &r))
                jfail(c, -SL_ERANGE, "integer overflow");
            acc = jv_int(r);
        } else {
            acc = jv_float(jv_num(acc) + jv_num(x));
        }
    }
    return acc;
}

static jval f_title(jctx *c, jval v, const jargs *a) { jno_args(c, "title", a); return jstr_title_words(c, as_text(c, v)); }

static jval f_tojson(jctx *c, jval v, const jargs *a)
{
    jval p[5];
    BIND("tojson", a, p, "ensure_ascii", "indent", "separators", "sort_keys", "default");
    if (jgiven(p[4]))
        jfail(c, -SL_EUNSUPPORTED, "tojson(default=...) is not supported");
    jjson_opts o = {0};
    o.ensure_ascii = jv_truthy(p[0]);
    o.sort_keys = jv_truthy(p[3]);
    if (jgiven(p[1]) && p[1].t != JT_NONE) {
        if (p[1].t == JT_STR) {
            char *s = jalloc(c, p[1].u.s.n + 1);
            memcpy(s, p[1].u.s.p, p[1].u.s.n);
            o.indent = s;
        } else {
            int64_t w = jwant_int(c, p[1], "indent");
            if (w > 256)
                jfail(c, -SL_ERANGE, "indent too large");
            char *s = jalloc(c, (size_t)(w < 0 ? 0 : w) + 1);
            memset(s, ' ', (size_t)(w < 0 ? 0 : w));
            o.indent = s;
        }
    }
    o.item_sep = o.indent ? "," : ", ";
    o.key_sep = ": ";
    if (jgiven(p[2]) && p[2].t != JT_NONE) {
        if ((p[2].t != JT_TUPLE && p[2].t != JT_LIST) || p[2].u.l->n != 2)
            jfail(c, -SL_EFORMAT, "separators must be a pair of strings");
        jval s0 = jwant_str(c, p[2].u.l->v[0], "separator"), s1 = jwant_str(c, p[2].u.l->v[1], "separator");
        o.item_sep = jv_strdup(c, s0.u.s.p, s0.u.s.n).u.s.p;
        o.key_sep = jv_strdup(c, s1.u.s.p, s1.u.s.n).u.s.p;
    }
    jbuf b = {0};
    jv_tojson_into(c, &b, v, &o);
    return jbuf_take(c, &b);
}

static jval f_trim(jctx *c, jval v, const jargs *a)
{
    jval p[1];
    BIND("trim", a, p, "chars");
    return jstr_strip(c, as_text(c, v), p[0], true, true);
}

static jval f_truncate(jctx *c, jval v, const jargs *a)
{
    jval p[4];
    BIND("truncate", a, p, "length", "killwords", "end", "leeway");
    jval s = as_text(c, v);
    int64_t length = jgiven(p[0]) ? jwant_int(c, p[0], "length") : 255;
    jval end = jgiven(p[2]) ? jwant_str(c, p[2], "end") : jv_cstr("...");
    int64_t leeway = jgiven(p[3]) && p[3].t != JT_NONE ? jwant_int(c, p[3], "leeway") : 5;
    int64_t elen = (int64_t)jstr_len(end);
    if (length < elen)
        jfail(c, -SL_EFORMAT, "expected length >= %lld, got %lld", (long long)elen, (long long)length);
    if (leeway < 0)
        jfail(c, -SL_EFORMAT, "expected leeway >= 0, got %lld", (long long)leeway);
    if ((int64_t)jstr_len(s) <= length + leeway)
        return s;
    jval head = jinja_slice(c, s, jv_absent(), jv_int(length - elen), jv_absent());
    if (!jv_truthy(p[1])) {
        jval parts = jstr_split(c, head, jv_cstr(" "), jv_int(1), true);
        head = parts.u.l->v[0];
    }
    jbuf b = {0};
    jbuf_put(c, &b, head.u.s.p, head.u.s.n);
    jbuf_put(c, &b, end.u.s.p, end.u.s.n);
    return jbuf_take(c, &b);
}

static jval f_unique(jctx *c, jval v, const jargs *a)
{
    jval p[2];
    BIND("unique", a, p, "case_sensitive", "attribute");
    jlist *items = jv_iterate(c, v);
    jval out = jv_list(c, items->n), seen = jv_list(c, items->n);
    for (size_t i = 0; i < items->n; i++) {
        jstep(c);
        jval k = sort_key(c, items->v[i], p[1], jv_truthy(p[0]));
        if (jinja_contains(c, seen, k))
            continue;
        jlist_push(c, seen.u.l, k);
        jlist_push(c, out.u.l, items->v[i]);
    }
    return out;
}

static jval f_wordcount(jctx *c, jval v, const jargs *a)
{
    jno_args(c, "wordcount", a);
    jval s = as_text(c, v);
    int64_t words = 0;
    bool in_word = false;
    for (size_t i = 0; i < s.u.s.n;) {
        uint32_t cp;
        i += jutf8_dec(s.u.s.p + i, s.u.s.n - i, &cp);
        bool w = cp == '_' || jis_alpha(cp) || jis_digit(cp);
        words += w && !in_word;
        in_word = w;
    }
    return jv_int(words);
}

static const struct {
    const char *name;
    jfilter_fn fn;
} k_filters[] = {
    {"abs", f_abs},           {"attr", f_attr},         {"batch", f_batch},         {"capitalize", f_capitalize},
    {"center", f_center},     {"count", f_length},      {"d", f_default},           {"default", f_default},
    {"dictsort", f_dictsort}, {"e", f_escape},          {"escape", f_escape},       {"first", f_first},
    {"float", f_float},       {"forceescape", f_escape}, {"format", f_format},      {"indent", f_indent},
    {"int", f_int},           {"items", f_items},       {"join", f_join},           {"last", f_last},
    {"length", f_length},     {"list", f_list},         {"lower", f_lower},         {"map", f_map},
    {"max", f_max},           {"min", f_min},           {"reject", f_reject},       {"rejectattr", f_rejectattr},
    {"replace", f_replace},   {"reverse", f_reverse},   {"round", f_round},         {"safe", f_safe},
    {"select", f_select},     {"selectattr", f_selectattr}, {"sort", f_sort},       {"string", f_string},
    {"sum", f_sum},           {"title", f_title},       {"tojson", f_tojson},       {"trim", f_trim},
    {"truncate", f_truncate}, {"unique", f_unique},     {"upper", f_upper},         {"wordcount", f_wordcount},
};

/* Filters Python's jinja2 has that sluice does not. */
static const char *const k_filters_missing[] = {"filesizeformat", "groupby", "pprint", "random", "slice",
                                                "striptags", "urlencode", "urlize", "wordwrap", "xmlattr"};

int jinja_filter_index(const char *name)
{
    for (size_t i = 0; i < sizeof k_filters / sizeof k_filters[0]; i++)
        if (!strcmp(k_filters[i].name, name))
            return (int)i;
    return -1;
}

bool jinja_filter_known(const char *name)
{
    for (size_t i = 0; i < sizeof k_filters_missing / sizeof k_filters_missing[0]; i++)
        if (!strcmp(k_filters_missing[i], name))
            return true;
    return jinja_filter_index(name) >= 0;
}

jval jinja_filter_call(jctx *c, int idx, jval v, const jargs *a)
{
    jstep(c);
    return k_filters[idx].fn(c, v, a);
}

/* ---- tests ---- */

typedef bool (*jtest_fn)(jctx *c, jval v, const jargs *a);

static jval one_arg(jctx *c, const char *name, const jargs *a)
{
    if (a->npos != 1 || a->nkw)
        jfail(c, -SL_EFORMAT, "the test '%s' takes one argument", name);
    return a->pos[0];
}

static bool t_defined(jctx *c, jval v, const jargs *a) { (void)c; (void)a; return v.t != JT_UNDEF; }
static bool t_undefined(jctx *c, jval v, const jargs *a) { (void)c; (void)a; return v.t == JT_UNDEF; }
static bool t_none(jctx *c, jval v, const jargs *a) { (void)c; (void)a; return v.t == JT_NONE; }
static bool t_boolean(jctx *c, jval v, const jargs *a) { (void)c; (void)a; return v.t == JT_BOOL; }
static bool t_false(jctx *c, jval v, const jargs *a) { (void)c; (void)a; return v.t == JT_BOOL && !v.u.b; }
static bool t_true(jctx *c, jval v, const jargs *a) { (void)c; (void)a; return v.t == JT_BOOL && v.u.b; }
static bool t_integer(jctx *c, jval v, const jargs *a) { (void)c; (void)a; return v.t == JT_INT; }
static bool t_float(jctx *c, jval v, const jargs *a) { (void)c; (void)a; return v.t == JT_FLOAT; }
static bool t_number(jctx *c, jval v, const jargs *a) { (void)c; (void)a; return jv_is_num(v); }
static bool t_string(jctx *c, jval v, const jargs *a) { (void)c; (void)a; return v.t == JT_STR; }
static bool t_mapping(jctx *c, jval v, const jargs *a) { (void)c; (void)a; return v.t == JT_DICT; }
static bool t_escaped(jctx *c, jval v, const jargs *a) { (void)c; (void)a; (void)v; return false; }

static bool t_iterable(jctx *c, jval v, const jargs *a)
{
    (void)c;
    (void)a;
    return v.t == JT_STR || v.t == JT_LIST || v.t == JT_TUPLE || v.t == JT_DICT || v.t == JT_UNDEF;
}

static bool t_sequence(jctx *c, jval v, const jargs *a) { return t_iterable(c, v, a); }

static bool t_callable(jctx *c, jval v, const jargs *a)
{
    (void)c;
    (void)a;
    return v.t == JT_MACRO || v.t == JT_FUNC || v.t == JT_METHOD || v.t == JT_LOOP || v.t == JT_JOINER;
}

static bool t_sameas(jctx *c, jval v, const jargs *a)
{
    jval o = one_arg(c, "sameas", a);
    if (v.t != o.t)
        return false;
    switch (v.t) {
    case JT_NONE:
    case JT_UNDEF: return v.t == JT_NONE || v.u.u == o.u.u;
    case JT_BOOL: return v.u.b == o.u.b;
    case JT_INT: return v.u.i == o.u.i && v.u.i >= -5 && v.u.i <= 256; /* CPython's small-int cache */
    case JT_FLOAT: return false;
    case JT_STR: return v.u.s.p == o.u.s.p && v.u.s.n == o.u.s.n;
    default: return v.u.ptr == o.u.ptr && v.aux == o.aux;
    }
}

static bool t_in(jctx *c, jval v, const jargs *a) { return jinja_contains(c, one_arg(c, "in", a), v); }
static bool t_lower(jctx *c, jval v, const jargs *a) { (void)a; return jstr_case_is(as_text(c, v), true); }
static bool t_upper(jctx *c, jval v, const jargs *a) { (void)a; return jstr_case_is(as_text(c, v), false); }

static int64_t test_int(jctx *c, jval v, const char *name)
{
    if (v.t == JT_INT || v.t == JT_BOOL)
        return v.t == JT_BOOL ? v.u.b : v.u.i;
    if (v.t == JT_UNDEF)
        jfail_undef(c, v);
    jfail(c, -SL_EFORMAT, "the test '%s' needs an integer, not %s", name, jv_type_name(v));
}

static bool t_odd(jctx *c, jval v, const jargs *a) { (void)a; return (test_int(c, v, "odd") & 1) != 0; }
static bool t_even(jctx *c, jval v, const jargs *a) { (void)a; return (test_int(c, v, "even") & 1) == 0; }

static bool t_divisibleby(jctx *c, jval v, const jargs *a)
{
    int64_t n = test_int(c, one_arg(c, "divisibleby", a), "divisibleby"), x = test_int(c, v, "divisibleby");
    if (n == 0)
        jfail(c, -SL_EFORMAT, "integer division or modulo by zero");
    return n == -1 || x % n == 0;
}

static bool t_eq(jctx *c, jval v, const jargs *a) { return jv_eq(c, v, one_arg(c, "eq", a)); }
static bool t_ne(jctx *c, jval v, const jargs *a) { return !jv_eq(c, v, one_arg(c, "ne", a)); }
static bool t_lt(jctx *c, jval v, const jargs *a) { return jv_cmp(c, v, one_arg(c, "lt", a)) < 0; }
static bool t_le(jctx *c, jval v, const jargs *a) { return jv_cmp(c, v, one_arg(c, "le", a)) <= 0; }
static bool t_gt(jctx *c, jval v, const jargs *a) { return jv_cmp(c, v, one_arg(c, "gt", a)) > 0; }
static bool t_ge(jctx *c, jval v, const jargs *a) { return jv_cmp(c, v, one_arg(c, "ge", a)) >= 0; }

static bool name_is(jctx *c, jval v, int (*index)(const char *))
{
    if (v.t != JT_STR)
        return false;
    char *s = jalloc(c, v.u.s.n + 1);
    memcpy(s, v.u.s.p, v.u.s.n);
    return index(s) >= 0;
}

static bool t_filter(jctx *c, jval v, const jargs *a) { (void)a; return name_is(c, v, jinja_filter_index); }
static bool t_test(jctx *c, jval v, const jargs *a) { (void)a; return name_is(c, v, jinja_test_index); }

static const struct {
    const char *name;
    jtest_fn fn;
} k_tests[] = {
    {"defined", t_defined},   {"undefined", t_undefined}, {"none", t_none},         {"boolean", t_boolean},
    {"false", t_false},       {"true", t_true},           {"integer", t_integer},   {"float", t_float},
    {"number", t_number},     {"string", t_string},       {"mapping", t_mapping},   {"iterable", t_iterable},
    {"sequence", t_sequence}, {"callable", t_callable},   {"sameas", t_sameas},     {"escaped", t_escaped},
    {"in", t_in},             {"lower", t_lower},         {"upper", t_upper},       {"odd", t_odd},
    {"even", t_even},         {"divisibleby", t_divisibleby}, {"eq", t_eq},         {"equalto", t_eq},
    {"==", t_eq},             {"ne", t_ne},               {"!=", t_ne},             {"lt", t_lt},
    {"lessthan", t_lt},       {"<", t_lt},                {"le", t_le},             {"<=", t_le},
    {"gt", t_gt},             {"greaterthan", t_gt},      {">", t_gt},              {"ge", t_ge},
    {">=", t_ge},             {"filter", t_filter},       {"test", t_test},
};

int jinja_test_index(const char *name)
{
    for (size_t i = 0; i < sizeof k_tests / sizeof k_tests[0]; i++)
        if (!strcmp(k_tests[i].name, name))
            return (int)i;
    return -1;
}

bool jinja_test_call(jctx *c, int idx, jval v, const jargs *a)
{
    jstep(c);
    return k_tests[idx].fn(c, v, a);
}

/* ---- globals ---- */

typedef struct jjoiner {
    jval sep;
    bool used;
} jjoiner;

typedef struct jcycler {
    jlist *items;
    size_t pos;
} jcycler;

static jval g_range(jctx *c, const jargs *a)
{
    if (a->nkw)
        jfail(c, -SL_EFORMAT, "range() takes no keyword arguments");
    if (a->npos < 1 || a->npos > 3)
        jfail(c, -SL_EFORMAT, "range expected 1 to 3 arguments, got %zu", a->npos);
    int64_t start = 0, stop, step = 1;
    if (a->npos == 1) {
        stop = jwant_int(c, a->pos[0], "range() argument");
    } else {
        start = jwant_int(c, a->pos[0], "range() argument");
        stop = jwant_int(c, a->pos[1], "range() argument");
        if (a->npos == 3)
            step = jwant_int(c, a->pos[2], "range() argument");
    }
    if (step == 0)
        jfail(c, -SL_EFORMAT, "range() arg 3 must not be zero");
    /* the count without overflow: work in unsigned 128-bit */
    __int128 span = step > 0 ? (__int128)stop - start : (__int128)start - stop;
    __int128 st = step > 0 ? step : -(__int128)step;
    __int128 count = span > 0 ? (span - 1) / st + 1 : 0;
    if (count > MAX_RANGE)
        jfail(c, -SL_ERANGE, "Range too big. The sandbox blocks ranges larger than MAX_RANGE (%d).", MAX_RANGE);
    jval out = jv_list(c, (size_t)count);
    for (int64_t i = 0; i < (int64_t)count; i++)
        jlist_push(c, out.u.l, jv_int(start + i * step));
    return out;
}

static jval kw_dict(jctx *c, const jargs *a, uint8_t type, const char *fn)
{
    jval d = jv_dict(c, a->nkw);
    d.t = type;
    if (a->npos > 1)
        jfail(c, -SL_EFORMAT, "%s expected at most 1 positional argument, got %zu", fn, a->npos);
    if (a->npos == 1) {
        jval init = a->pos[0];
        if (init.t == JT_DICT || init.t == JT_NS) {
            for (size_t i = 0; i < init.u.d->n; i++)
                jdict_set(c, d.u.d, init.u.d->k[i], init.u.d->v[i]);
        } else {
            jlist *pairs = jv_iterate(c, init);
            for (size_t i = 0; i < pairs->n; i++) {
                jval pr = pairs->v[i];
                if ((pr.t != JT_LIST && pr.t != JT_TUPLE) || pr.u.l->n != 2)
                    jfail(c, -SL_EFORMAT, "dictionary update sequence element #%zu has the wrong length", i);
                jdict_set(c, d.u.d, pr.u.l->v[0], pr.u.l->v[1]);
            }
        }
    }
    for (size_t i = 0; i < a->nkw; i++)
        jdict_set(c, d.u.d, jv_cstr(a->kwname[i]), a->kw[i]);
    return d;
}

static jval g_namespace(jctx *c, const jargs *a) { return kw_dict(c, a, JT_NS, "namespace"); }
static jval g_dict(jctx *c, const jargs *a) { return kw_dict(c, a, JT_DICT, "dict"); }

static jval g_joiner(jctx *c, const jargs *a)
{
    jval p[1];
    BIND("joiner", a, p, "sep");
    jjoiner *j = jalloc(c, sizeof *j);
    j->sep = jgiven(p[0]) ? as_text(c, p[0]) : jv_cstr(", ");
    jval v = {0};
    v.t = JT_JOINER;
    v.u.ptr = j;
    return v;
}

jval jinja_joiner_call(jctx *c, jval jv, const jargs *a)
{
    jno_args(c, "joiner", a);
    jjoiner *j = jv.u.ptr;
    if (!j->used) {
        j->used = true;
        return jv_str("", 0);
    }
    return j->sep;
}

static jval g_cycler(jctx *c, const jargs *a)
{
    if (a->nkw)
        jfail(c, -SL_EFORMAT, "cycler() takes no keyword arguments");
    if (!a->npos)
        jfail(c, -SL_EFORMAT, "at least one item has to be provided");
    jcycler *cy = jalloc(c, sizeof *cy);
    jval l = jv_list(c, a->npos);
    for (size_t i = 0; i < a->npos; i++)
        jlist_push(c, l.u.l, a->pos[i]);
    cy->items = l.u.l;
    jval v = {0};
    v.t = JT_CYCLER;
    v.u.ptr = cy;
    return v;
}

jval jinja_cycler_attr(jctx *c, jval v, const char *name)
{
    jcycler *cy = v.u.ptr;
    if (!strcmp(name, "current"))
        return cy->items->v[cy->pos];
    if (!strcmp(name, "next") || !strcmp(name, "reset")) {
        jval m = {0};
        m.t = JT_METHOD;
        m.u.bm = jalloc(c, sizeof *m.u.bm);
        m.u.bm->self = v;
        m.u.bm->name = name[0] == 'n' ? "next" : "reset";
        return m;
    }
    return jv_undef_attr(c, v, name);
}

jval jinja_cycler_call(jctx *c, jval m, const jargs *a)
{
    jcycler *cy = m.u.bm->self.u.ptr;
    jno_args(c, m.u.bm->name, a);
    if (m.u.bm->name[0] == 'r') {
        cy->pos = 0;
        return jv_none();
    }
    jval v = cy->items->v[cy->pos];
    cy->pos = (cy->pos + 1) % cy->items->n;
    return v;
}

static jval g_raise(jctx *c, const jargs *a)
{
    jval msg = a->npos ? jv_to_str(c, a->pos[0]) : jv_str("", 0);
    jraise(c, msg.u.s.p, msg.u.s.n);
}

static jval g_strftime_now(jctx *c, const jargs *a)
{
    jval p[1];
    BIND("strftime_now", a, p, "format");
    jval fmt = jwant_str(c, p[0], "strftime_now format");
    if (fmt.u.s.n > 256)
        jfail(c, -SL_ERANGE, "strftime_now format too long");
    char f[260], out[1024];
    memcpy(f, fmt.u.s.p, fmt.u.s.n);
    f[fmt.u.s.n] = 0;
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    size_t k = strftime(out, sizeof out, f, &tm);
    return jv_strdup(c, out, k);
}

static const struct {
    const char *name;
    jval (*fn)(jctx *c, const jargs *a);
} k_globals[] = {
    {"range", g_range},   {"namespace", g_namespace}, {"dict", g_dict},
    {"joiner", g_joiner}, {"cycler", g_cycler},       {"raise_exception", g_raise},
    {"strftime_now", g_strftime_now},
};

int jinja_global_index(const char *name)
{
    for (size_t i = 0; i < sizeof k_globals / sizeof k_globals[0]; i++)
        if (!strcmp(k_globals[i].name, name))
            return (int)i;
    return -1;
}

jval jinja_global_call(jctx *c, int idx, const jargs *a)
{
    jstep(c);
    return k_globals[idx].fn(c, a);
}
