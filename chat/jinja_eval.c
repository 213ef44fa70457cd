/* The chat-template evaluator: runs a parsed template (chat/jinja.h) with
 * Jinja's semantics.
 *
 * Scopes. A frame maps name ids to values; lookups walk the frame chain,
 * then the render's variables, then the globals. The template body, each
 * macro call and each `with` get a frame; each for-loop turn gets a fresh
 * one (reused from turn to turn), so that, as in Jinja, a `set` inside a
 * loop does not leak out of it (that is what namespace() is for) while a
 * `set` inside an `if` does. A macro keeps the frame it was defined in.
 *
 * Attribute and item access follow the sandbox: `a.b` tries Python's
 * attribute (methods of str/list/dict) and then the item, `a[b]` the item
 * then the attribute; anything missing is an undefined value that prints as
 * "" and fails, with Jinja's message, when it is used.
 *
 * Bounds: every node evaluated and every loop turn counts a step; nesting of
 * evaluation (and so C stack) is capped; all memory comes from the arena. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "chat/jinja.h"
#include "common/log.h"

struct jframe {
    jframe *parent;
    uint32_t n, cap;
    uint32_t *ids;
    jval *vals;
};

struct jmacro {
    const jnode *def; /* S_MACRO, or S_CALLBLOCK for a caller */
    jframe *closure;
};

struct jloop {
    jlist *items;
    size_t idx;
    uint32_t depth;
    const jnode *node; /* the for statement, for recursive calls */
    jframe *frame;     /* the scope the loop runs in */
    jval changed_last;
    bool changed_seen;
};

enum { R_NORMAL = 0, R_BREAK, R_CONTINUE };

static jval eval(jctx *c, jframe *f, const jnode *n);
static int exec_body(jctx *c, jframe *f, const jnode *body);

/* ---- errors ---- */

_Noreturn void jfail(jctx *c, int code, const char *fmt, ...)
{
    if (c->err && c->err_size) {
        int k = c->line ? snprintf(c->err, c->err_size, "line %u: ", c->line) : 0;
        if (k < 0 || (size_t)k >= c->err_size)
            k = 0;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err + k, c->err_size - (size_t)k, fmt, ap);
        va_end(ap);
    }
    c->err_code = code;
    longjmp(c->jb, 1);
}

_Noreturn void jraise(jctx *c, const char *msg, size_t n)
{
    if (c->err && c->err_size) {
        size_t k = n < c->err_size - 1 ? n : c->err_size - 1;
        memcpy(c->err, msg, k);
        c->err[k] = 0;
    }
    c->err_code = -SL_EINVAL;
    longjmp(c->jb, 1);
}

_Noreturn void jfail_undef(jctx *c, jval v)
{
    const jundef *u = v.t == JT_UNDEF ? v.u.u : NULL;
    if (!u)
        jfail(c, -SL_EFORMAT, "a value is undefined");
    if (u->hint)
        jfail(c, -SL_EFORMAT, "%s", u->hint);
    if (u->obj.t == JT_ABSENT)
        jfail(c, -SL_EFORMAT, "'%s' is undefined", u->name);
    if (u->key.t != JT_ABSENT) {
        jbuf b = {0};
        jv_repr_into(c, &b, u->key);
        jfail(c, -SL_EFORMAT, "%s has no element %.*s", jv_object_name(u->obj), (int)b.n, b.p);
    }
    jfail(c, -SL_EFORMAT, "'%s' has no attribute '%s'", jv_object_name(u->obj), u->name);
}

static void enter(jctx *c, const jnode *n)
{
    if (++c->depth > c->t->lim.max_depth)
        jfail(c, -SL_ERANGE, "evaluation nested more than %u levels deep", c->t->lim.max_depth);
    c->line = n->line;
    jstep(c);
}

/* ---- frames ---- */

static jframe *frame_new(jctx *c, jframe *parent)
{
    jframe *f = jalloc(c, sizeof *f);
    f->parent = parent;
    return f;
}

static void frame_set(jctx *c, jframe *f, uint32_t id, jval v)
{
    for (uint32_t i = 0; i < f->n; i++)
        if (f->ids[i] == id) {
            f->vals[i] = v;
            return;
        }
    if (f->n == f->cap) {
        uint32_t cap = f->cap ? f->cap * 2 : 4;
        uint32_t *ids = jalloc(c, cap * sizeof *ids);
        jval *vals = jalloc(c, cap * sizeof *vals);
        if (f->n) {
            memcpy(ids, f->ids, f->n * sizeof *ids);
            memcpy(vals, f->vals, f->n * sizeof *vals);
        }
        f->ids = ids;
        f->vals = vals;
        f->cap = cap;
    }
    f->ids[f->n] = id;
    f->vals[f->n++] = v;
}

static jval lookup(jctx *c, jframe *f, uint32_t id)
{
    for (; f; f = f->parent)
        for (uint32_t i = 0; i < f->n; i++)
            if (f->ids[i] == id)
                return f->vals[i];
    if (c->ctxvars[id].t != JT_ABSENT)
        return c->ctxvars[id];
    int32_t g = c->t->global_of[id];
    if (g >= 0) {
        jval v = {0};
        v.t = JT_FUNC;
        v.aux = (uint32_t)g;
        return v;
    }
    return jv_undef_name(c, c->t->names[id]);
}

/* ---- access ---- */

static jval loop_attr(jctx *c, jval lv, const char *name)
{
    jloop *lp = lv.u.lp;
    size_t n = lp->items->n, i = lp->idx;
    if (!strcmp(name, "index"))
        return jv_int((int64_t)i + 1);
    if (!strcmp(name, "index0"))
        return jv_int((int64_t)i);
    if (!strcmp(name, "revindex"))
        return jv_int((int64_t)(n - i));
    if (!strcmp(name, "revindex0"))
        return jv_int((int64_t)(n - i - 1));
    if (!strcmp(name, "first"))
        return jv_bool(i == 0);
    if (!strcmp(name, "last"))
        return jv_bool(i + 1 == n);
    if (!strcmp(name, "length"))
        return jv_int((int64_t)n);
    if (!strcmp(name, "depth"))
        return jv_int((int64_t)lp->depth + 1);
    if (!strcmp(name, "depth0"))
        return jv_int((int64_t)lp->depth);
    if (!strcmp(name, "previtem"))
        return i > 0 ? lp->items->v[i - 1] : jv_undef_hint(c, "there is no previous item");
    if (!strcmp(name, "nextitem"))
        return i + 1 < n ? lp->items->v[i + 1] : jv_undef_hint(c, "there is no next item");
    if (!strcmp(name, "cycle") || !strcmp(name, "changed")) {
        jval m = {0};
        m.t = JT_METHOD;
        m.u.bm = jalloc(c, sizeof *m.u.bm);
        m.u.bm->self = lv;
        m.u.bm->name = name[1] == 'y' ? "cycle" : "changed";
        return m;
    }
    return jv_undef_attr(c, lv, name);
}

jval jinja_getattr(jctx *c, jval obj, const char *name)
{
    char *cname = (char *)name;
    size_t n = strlen(name);
    if (n && cname[0] == '_')
        return jv_undef_hint(c, "access to attribute '%s' of '%s' object is unsafe.", cname, jv_type_name(obj));
    switch (obj.t) {
    case JT_ABSENT:
    case JT_UNDEF: jfail_undef(c, obj);
    case JT_DICT: {
        jval m = jinja_method_get(c, obj, cname);
        if (m.t != JT_ABSENT)
            return m;
        jval *v = jdict_get_str(obj.u.d, cname, n);
        return v ? *v : jv_undef_attr(c, obj, cname);
    }
    case JT_NS: {
        jval *v = jdict_get_str(obj.u.d, cname, n);
        return v ? *v : jv_undef_attr(c, obj, cname);
    }
    case JT_LOOP: return loop_attr(c, obj, cname);
    case JT_CYCLER: return jinja_cycler_attr(c, obj, cname);
    default: {
        jval m = jinja_method_get(c, obj, cname);
        return m.t != JT_ABSENT ? m : jv_undef_attr(c, obj, cname);
    }
    }
}

static bool as_index(jval k, int64_t *out)
{
    if (k.t == JT_INT || k.t == JT_BOOL) {
        *out = k.t == JT_BOOL ? k.u.b : k.u.i;
        return true;
    }
    return false;
}

/* Byte offset of code point `idx` in s (idx <= length). */
static size_t cp_offset(jval s, size_t idx)
{
    size_t i = 0;
    for (size_t k = 0; k < idx && i < s.u.s.n; k++) {
        uint32_t cp;
        i += jutf8_dec(s.u.s.p + i, s.u.s.n - i, &cp);
    }
    return i;
}

jval jinja_getitem(jctx *c, jval obj, jval key)
{
    int64_t idx;
    switch (obj.t) {
    case JT_ABSENT:
    case JT_UNDEF: jfail_undef(c, obj);
    case JT_DICT: {
        jval *v = jdict_get(c, obj.u.d, key);
        if (v)
            return *v;
        break;
    }
    case JT_LIST:
    case JT_TUPLE:
        if (as_index(key, &idx)) {
            int64_t n = (int64_t)obj.u.l->n;
            if (idx < 0)
                idx += n;
            if (idx >= 0 && idx < n)
                return obj.u.l->v[idx];
        }
        break;
    case JT_STR:
        if (as_index(key, &idx)) {
            int64_t n = (int64_t)jstr_len(obj);
            if (idx < 0)
                idx += n;
            if (idx >= 0 && idx < n) {
                size_t at = cp_offset(obj, (size_t)idx);
                uint32_t cp;
                return jv_str(obj.u.s.p + at, jutf8_dec(obj.u.s.p + at, obj.u.s.n - at, &cp));
            }
        }
        break;
    default: break;
    }
    if (key.t == JT_STR) {
        char *name = jalloc(c, key.u.s.n + 1);
        memcpy(name, key.u.s.p, key.u.s.n);
        if (obj.t == JT_DICT) { /* the item is known to be missing: only methods remain */
            jval m = name[0] == '_' ? jv_absent() : jinja_method_get(c, obj, name);
            return m.t != JT_ABSENT ? m : jv_undef_attr(c, obj, name);
        }
        return jinja_getattr(c, obj, name);
    }
    return jv_undef_item(c, obj, key);
}

static bool slice_bound(jctx *c, jval v, int64_t *out)
{
    if (v.t == JT_ABSENT || v.t == JT_NONE)
        return false;
    if (!as_index(v, out))
        jfail(c, -SL_EFORMAT, "slice indices must be integers or None or have an __index__ method");
    return true;
}

jval jinja_slice(jctx *c, jval obj, jval vs, jval ve, jval vst)
{
    if (obj.t == JT_UNDEF)
        jfail_undef(c, obj);
    int64_t start = 0, stop = 0, step = 1;
    bool has_start = slice_bound(c, vs, &start), has_stop = slice_bound(c, ve, &stop);
    if (slice_bound(c, vst, &step) && step == 0)
        jfail(c, -SL_EFORMAT, "slice step cannot be zero");
    bool is_str = obj.t == JT_STR;
    if (!is_str && obj.t != JT_LIST && obj.t != JT_TUPLE)
        return jv_undef_hint(c, "%s has no element slice", jv_object_name(obj));
    int64_t len = is_str ? (int64_t)jstr_len(obj) : (int64_t)obj.u.l->n;
    /* Python's slice index adjustment */
    int64_t lower = step > 0 ? 0 : -1, upper = step > 0 ? len : len - 1;
    if (!has_start)
        start = step > 0 ? lower : upper;
    else {
        if (start < 0)
            start += len;
        start = start < lower ? lower : start > upper ? upper : start;
    }
    if (!has_stop)
        stop = step > 0 ? upper : lower;
    else {
        if (stop < 0)
            stop += len;
        stop = stop < lower ? lower : stop > upper ? upper : stop;
    }
    int64_t count = step > 0 ? (stop > start ? (stop - start - 1) / step + 1 : 0)
                             : (start > stop ? (start - stop - 1) / (-step) + 1 : 0);
    if (!is_str) {
        jval out = obj.t == JT_TUPLE ? jv_tuple(c, (size_t)count) : jv_list(c, (size_t)count);
        for (int64_t k = 0, i = start; k < count; k++, i += step)
            jlist_push(c, out.u.l, obj.u.l->v[i]);
        return out;
    }
    if (step == 1) {
        size_t a = cp_offset(obj, (size_t)start), b = a + cp_offset(jv_str(obj.u.s.p + a, obj.u.s.n - a),
                                                                    (size_t)(stop - start));
        return jv_str(obj.u.s.p + a, count ? b - a : 0); /* inside obj even when empty */
    }
    /* general step: byte offsets of every code point */
    size_t *offs = jalloc(c, ((size_t)len + 1) * sizeof *offs);
    for (size_t i = 0, k = 0; k <= (size_t)len; k++) {
        offs[k] = i;
        if (i < obj.u.s.n) {
            uint32_t cp;
            i += jutf8_dec(obj.u.s.p + i, obj.u.s.n - i, &cp);
        }
    }
    jbuf b = {0};
    for (int64_t k = 0, i = start; k < count; k++, i += step)
        jbuf_put(c, &b, obj.u.s.p + offs[i], offs[i + 1] - offs[i]);
    return jbuf_take(c, &b);
}

/* ---- operators ---- */

static void check_operand(jctx *c, jval v)
{
    if (v.t == JT_UNDEF || v.t == JT_ABSENT)
        jfail_undef(c, v);
}

static bool is_intlike(jval v) { return v.t == JT_INT || v.t == JT_BOOL; }
static int64_t ival(jval v) { return v.t == JT_BOOL ? (int64_t)v.u.b : v.u.i; }

static jval repeat(jctx *c, jval seq, int64_t times)
{
    if (times < 0)
        times = 0;
    if (seq.t == JT_STR) {
        if (seq.u.s.n && (uint64_t)times > (uint64_t)(SIZE_MAX / 4) / seq.u.s.n)
            jfail(c, -SL_ERANGE, "string too long");
        size_t total = seq.u.s.n * (size_t)times;
        char *p = jalloc(c, total + 1);
        for (int64_t i = 0; i < times; i++)
            memcpy(p + (size_t)i * seq.u.s.n, seq.u.s.p, seq.u.s.n);
        return jv_str(p, total);
    }
    size_t n = seq.u.l->n;
    if (n && (uint64_t)times > (uint64_t)(SIZE_MAX / 4 / sizeof(jval)) / n)
        jfail(c, -SL_ERANGE, "list too long");
    jval out = seq.t == JT_TUPLE ? jv_tuple(c, n * (size_t)times) : jv_list(c, n * (size_t)times);
    for (int64_t i = 0; i < times; i++)
        for (size_t k = 0; k < n; k++)
            jlist_push(c, out.u.l, seq.u.l->v[k]);
    return out;
}

static jval binop(jctx *c, int op, jval a, jval b)
{
    static const char *const sym[] = {"", "+", "-", "*", "/", "//", "%", "**"};
    if (op == OP_MOD && a.t == JT_STR)
        return jinja_percent_format(c, a, b);
    check_operand(c, a);
    check_operand(c, b);
    bool nums = jv_is_num(a) && jv_is_num(b), ints = is_intlike(a) && is_intlike(b);
    int64_t x = ints ? ival(a) : 0, y = ints ? ival(b) : 0, r;
    double fx = jv_num(a), fy = jv_num(b);
    switch (op) {
    case OP_ADD:
        if (ints) {
            if (__builtin_add_overflow(x, y, &r))
                jfail(c, -SL_ERANGE, "integer overflow");
            return jv_int(r);
        }
        if (nums)
            return jv_float(fx + fy);
        if (a.t == JT_STR && b.t == JT_STR) {
            /* the left side is often the string just built: extend it (strings are immutable,
             * and nothing can refer to bytes past its end) */
            if (a.u.s.n && jarena_grow_last(&c->arena, a.u.s.p, a.u.s.p + a.u.s.n, b.u.s.n)) {
                memcpy((char *)a.u.s.p + a.u.s.n, b.u.s.p, b.u.s.n);
                return jv_str(a.u.s.p, a.u.s.n + b.u.s.n);
            }
            char *p = jalloc(c, a.u.s.n + b.u.s.n);
            memcpy(p, a.u.s.p, a.u.s.n);
            memcpy(p + a.u.s.n, b.u.s.p, b.u.s.n);
            return jv_str(p, a.u.s.n + b.u.s.n);
        }
        if ((a.t == JT_LIST || a.t == JT_TUPLE) && a.t == b.t) {
            jval out = a.t == JT_TUPLE ? jv_tuple(c, a.u.l->n + b.u.l->n) : jv_list(c, a.u.l->n + b.u.l->n);
            for (size_t i = 0; i < a.u.l->n; i++)
                jlist_push(c, out.u.l, a.u.l->v[i]);
            for (size_t i = 0; i < b.u.l->n; i++)
                jlist_push(c, out.u.l, b.u.l->v[i]);
            return out;
        }
        if (a.t == JT_STR || a.t == JT_LIST || a.t == JT_TUPLE)
            jfail(c, -SL_EFORMAT, "can only concatenate %s (not \"%s\") to %s", jv_type_name(a), jv_type_name(b),
                  jv_type_name(a));
        break;
    case OP_SUB:
        if (ints) {
            if (__builtin_sub_overflow(x, y, &r))
                jfail(c, -SL_ERANGE, "integer overflow");
            return jv_int(r);
        }
        if (nums)
            return jv_float(fx - fy);
        break;
    case OP_MUL:
        if (ints) {
            if (__builtin_mul_overflow(x, y, &r))
                jfail(c, -SL_ERANGE, "integer overflow");
            return jv_int(r);
        }
        if (nums)
            return jv_float(fx * fy);
        if ((a.t == JT_STR || a.t == JT_LIST || a.t == JT_TUPLE) && is_intlike(b))
            return repeat(c, a, ival(b));
        if ((b.t == JT_STR || b.t == JT_LIST || b.t == JT_TUPLE) && is_intlike(a))
            return repeat(c, b, ival(a));
        break;
    case OP_DIV:
        if (nums) {
            if (fy == 0)
                jfail(c, -SL_EFORMAT, ints ? "division by zero" : "float division by zero");
            return jv_float(fx / fy);
        }
        break;
    case OP_FLOORDIV:
    case OP_MOD:
        if (ints) {
            if (y == 0)
                jfail(c, -SL_EFORMAT, "integer division or modulo by zero");
            if (x == INT64_MIN && y == -1)
                jfail(c, -SL_ERANGE, "integer overflow");
            int64_t q = x / y, m = x % y;
            if (m != 0 && ((m < 0) != (y < 0))) {
                q--;
                m += y;
            }
            return jv_int(op == OP_MOD ? m : q);
        }
        if (nums) { /* Python's float floor division and modulo */
            if (fy == 0)
                jfail(c, -SL_EFORMAT, op == OP_MOD ? "float modulo" : "float floor division by zero");
            double m = fmod(fx, fy), div = (fx - m) / fy;
            if (m != 0 && ((fy < 0) != (m < 0))) {
                m += fy;
                div -= 1.0;
            }
            if (op == OP_MOD)
                return jv_float(m == 0 ? copysign(0.0, fy) : m);
            double fd = copysign(0.0, fx / fy);
            if (div != 0) {
                fd = floor(div);
                if (div - fd > 0.5)
                    fd += 1.0;
            }
            return jv_float(fd);
        }
        break;
    case OP_POW:
        if (ints && y >= 0) {
            int64_t acc = 1, base = x;
            for (int64_t e = y; e > 0; e >>= 1) {
                if ((e & 1) && __builtin_mul_overflow(acc, base, &acc))
                    jfail(c, -SL_ERANGE, "integer overflow");
                if (e > 1 && __builtin_mul_overflow(base, base, &base))
                    jfail(c, -SL_ERANGE, "integer overflow");
            }
            return jv_int(acc);
        }
        if (nums) {
            if (fx == 0 && fy < 0)
                jfail(c, -SL_EFORMAT, "0.0 cannot be raised to a negative power");
            return jv_float(pow(fx, fy));
        }
        break;
    default: break;
    }
    jfail(c, -SL_EFORMAT, "unsupported operand type(s) for %s: '%s' and '%s'", sym[op], jv_type_name(a),
          jv_type_name(b));
}

bool jinja_contains(jctx *c, jval container, jval item)
{
    switch (container.t) {
    case JT_STR:
        if (item.t != JT_STR)
            jfail(c, -SL_EFORMAT, "'in <string>' requires string as left operand, not %s", jv_type_name(item));
        return !item.u.s.n || memmem(container.u.s.p, container.u.s.n, item.u.s.p, item.u.s.n) != NULL;
    case JT_LIST:
    case JT_TUPLE:
        for (size_t i = 0; i < container.u.l->n; i++)
            if (jv_eq(c, container.u.l->v[i], item))
                return true;
        return false;
    case JT_DICT: return jdict_get(c, container.u.d, item) != NULL;
    case JT_UNDEF: return false;
    default: jfail(c, -SL_EFORMAT, "argument of type '%s' is not iterable", jv_type_name(container));
    }
}

static bool compare(jctx *c, int op, jval a, jval b)
{
    switch (op) {
    case CMP_EQ: return jv_eq(c, a, b);
    case CMP_NE: return !jv_eq(c, a, b);
    case CMP_LT: return jv_cmp(c, a, b) < 0;
    case CMP_LE: return jv_cmp(c, a, b) <= 0;
    case CMP_GT: return jv_cmp(c, a, b) > 0;
    case CMP_GE: return jv_cmp(c, a, b) >= 0;
    case CMP_IN: return jinja_contains(c, b, a);
    default: return !jinja_contains(c, b, a);
    }
}

/* ---- calls ---- */

static jargs eval_args(jctx *c, jframe *f, const jnode *n)
{
    jargs a = {0};
    a.npos = n->npos;
    a.nkw = n->nkids - n->npos;
    if (n->nkids) {
        a.pos = jalloc(c, n->nkids * sizeof *a.pos);
        for (uint32_t i = 0; i < n->nkids; i++)
            a.pos[i] = eval(c, f, n->kids[i]);
        a.kw = a.pos + a.npos;
        a.kwname = jalloc(c, (a.nkw + 1) * sizeof *a.kwname);
        for (size_t i = 0; i < a.nkw; i++)
            a.kwname[i] = c->t->names[n->names[i]];
    }
    return a;
}

static int run_loop(jctx *c, jframe *f, const jnode *n, jval iterable, uint32_t depth);

/* Output goes to b (in the arena) until capture_end. */
static void capture_begin(jctx *c, jbuf *b, jbuf **saved)
{
    *saved = c->out;
    memset(b, 0, sizeof *b);
    c->out = b;
}

static jval capture_end(jctx *c, jbuf *b, jbuf *saved)
{
    c->out = saved;
    return jbuf_take(c, b);
}

static __attribute__((noinline)) jval call_macro(jctx *c, const jmacro *m, const jargs *a, jval caller)
{
    const jnode *d = m->def;
    const sl_template *t = c->t;
    const char *mname = d->str ? d->str : "caller";
    jframe *mf = frame_new(c, m->closure);
    uint32_t np = d->nkids;
    bool *bound = jalloc(c, (np + 1) * sizeof *bound);
    jval varargs = jv_tuple(c, 0), kwargs = jv_dict(c, 0);
    for (size_t i = 0; i < a->npos; i++) {
        if (i < np) {
            frame_set(c, mf, d->names[i], a->pos[i]);
            bound[i] = true;
        } else if (d->flags & JN_USES_VARARGS) {
            jlist_push(c, varargs.u.l, a->pos[i]);
        } else {
            jfail(c, -SL_EFORMAT, "macro '%s' takes not more than %u argument(s)", mname, np);
        }
    }
    for (size_t k = 0; k < a->nkw; k++) {
        uint32_t i = 0;
        while (i < np && strcmp(t->names[d->names[i]], a->kwname[k]))
            i++;
        if (i < np) {
            if (bound[i])
                jfail(c, -SL_EFORMAT, "macro '%s' got multiple values for argument '%s'", mname, a->kwname[k]);
            frame_set(c, mf, d->names[i], a->kw[k]);
            bound[i] = true;
        } else if (d->flags & JN_USES_KWARGS) {
            jdict_set(c, kwargs.u.d, jv_cstr(a->kwname[k]), a->kw[k]);
        } else {
            jfail(c, -SL_EFORMAT, "macro '%s' takes no keyword argument '%s'", mname, a->kwname[k]);
        }
    }
    for (uint32_t i = 0; i < np; i++) {
        if (bound[i])
            continue;
        const char *pname = t->names[d->names[i]];
        jval v = d->kids[i] ? eval(c, mf, d->kids[i]) : jv_undef_hint(c, "parameter '%s' was not provided", pname);
        frame_set(c, mf, d->names[i], v);
    }
    if (d->flags & JN_USES_VARARGS)
        frame_set(c, mf, t->id_varargs, varargs);
    if (d->flags & JN_USES_KWARGS)
        frame_set(c, mf, t->id_kwargs, kwargs);
    if (caller.t == JT_MACRO)
        frame_set(c, mf, t->id_caller, caller);
    jbuf b, *saved;
    capture_begin(c, &b, &saved);
    exec_body(c, mf, d->body);
    return capture_end(c, &b, saved);
}

static jval call_loop_method(jctx *c, jval m, const jargs *a)
{
    jloop *lp = m.u.bm->self.u.lp;
    if (a->nkw)
        jfail(c, -SL_EFORMAT, "loop.%s() takes no keyword arguments", m.u.bm->name);
    if (!strcmp(m.u.bm->name, "cycle")) {
        if (!a->npos)
            jfail(c, -SL_EFORMAT, "no items for cycling given");
        return a->pos[lp->idx % a->npos];
    }
    jval v = a->npos == 1 ? a->pos[0] : jv_tuple(c, a->npos);
    if (a->npos != 1)
        for (size_t i = 0; i < a->npos; i++)
            jlist_push(c, v.u.l, a->pos[i]);
    bool changed = !lp->changed_seen || !jv_eq(c, v, lp->changed_last);
    lp->changed_seen = true;
    lp->changed_last = v;
    return jv_bool(changed);
}

static jval call_value(jctx *c, jval fn, const jargs *a, jval caller)
{
    switch (fn.t) {
    case JT_MACRO: return call_macro(c, fn.u.m, a, caller);
    case JT_FUNC: return jinja_global_call(c, (int)fn.aux, a);
    case JT_METHOD:
        if (fn.u.bm->self.t == JT_LOOP)
            return call_loop_method(c, fn, a);
        if (fn.u.bm->self.t == JT_CYCLER)
            return jinja_cycler_call(c, fn, a);
        return jinja_method_call(c, fn, a);
    case JT_LOOP: {
        jloop *lp = fn.u.lp;
        if (!lp->node->op)
            jfail(c, -SL_EFORMAT, "Tried to call non recursive loop. Maybe you forgot the 'recursive' modifier.");
        if (a->npos != 1 || a->nkw)
            jfail(c, -SL_EFORMAT, "loop() takes exactly one argument");
        jbuf b, *saved;
        capture_begin(c, &b, &saved);
        run_loop(c, lp->frame, lp->node, a->pos[0], lp->depth + 1);
        return capture_end(c, &b, saved);
    }
    case JT_JOINER: return jinja_joiner_call(c, fn, a);
    case JT_UNDEF:
    case JT_ABSENT: jfail_undef(c, fn);
    default: jfail(c, -SL_EFORMAT, "'%s' object is not callable", jv_type_name(fn));
    }
}

jval jinja_call_value(jctx *c, jval fn, const jargs *a) { return call_value(c, fn, a, jv_none()); }

/* ---- expressions ---- */

static __attribute__((noinline)) jval eval_filter(jctx *c, jframe *f, const jnode *n)
{
    jval v = n->a->kind == E_BLOCKVAL ? c->blockval : eval(c, f, n->a);
    jargs a = eval_args(c, f, n);
    c->line = n->line;
    if (n->id < 0) {
        if (jinja_filter_known(n->str))
            jfail(c, -SL_EUNSUPPORTED, "the filter '%s' is not supported by sluice", n->str);
        jfail(c, -SL_EFORMAT, "No filter named '%s'.", n->str);
    }
    return jinja_filter_call(c, n->id, v, &a);
}

/* The cases of eval() with locals of their own, kept out of line so that
 * eval's frame, which every nesting level pays for, stays small. */
#define COLD __attribute__((noinline))

static COLD jval eval_seq(jctx *c, jframe *f, const jnode *n)
{
    jval r;
    if (n->kind == E_DICT) {
        r = jv_dict(c, n->nkids / 2);
        for (uint32_t i = 0; i + 1 < n->nkids; i += 2) {
            jval k = eval(c, f, n->kids[i]);
            jdict_set(c, r.u.d, k, eval(c, f, n->kids[i + 1]));
        }
        return r;
    }
    r = n->kind == E_LIST ? jv_list(c, n->nkids) : jv_tuple(c, n->nkids);
    for (uint32_t i = 0; i < n->nkids; i++)
        jlist_push(c, r.u.l, eval(c, f, n->kids[i]));
    return r;
}

static COLD jval eval_item(jctx *c, jframe *f, const jnode *n)
{
    jval obj = eval(c, f, n->a);
    if (n->b->kind == E_SLICE) {
        jval s[3];
        for (int i = 0; i < 3; i++)
            s[i] = n->b->kids[i] ? eval(c, f, n->b->kids[i]) : jv_absent();
        c->line = n->line;
        return jinja_slice(c, obj, s[0], s[1], s[2]);
    }
    jval key = eval(c, f, n->b);
    c->line = n->line;
    return jinja_getitem(c, obj, key);
}

static COLD jval eval_call(jctx *c, jframe *f, const jnode *n)
{
    jval fn = eval(c, f, n->a);
    jargs a = eval_args(c, f, n);
    c->line = n->line;
    return call_value(c, fn, &a, jv_none());
}

static COLD jval eval_test(jctx *c, jframe *f, const jnode *n)
{
    jval v = eval(c, f, n->a);
    jargs a = eval_args(c, f, n);
    c->line = n->line;
    if (n->id < 0)
        jfail(c, -SL_EFORMAT, "No test named '%s'.", n->str);
    return jv_bool(jinja_test_call(c, n->id, v, &a) != (n->op != 0));
}

static COLD jval eval_unary(jctx *c, jframe *f, const jnode *n)
{
    jval v = eval(c, f, n->a);
    c->line = n->line;
    check_operand(c, v);
    if (n->kind == E_POS && jv_is_num(v))
        return v.t == JT_BOOL ? jv_int(v.u.b) : v;
    if (v.t == JT_FLOAT)
        return jv_float(-v.u.f);
    if (is_intlike(v)) {
        if (ival(v) == INT64_MIN)
            jfail(c, -SL_ERANGE, "integer overflow");
        return jv_int(-ival(v));
    }
    jfail(c, -SL_EFORMAT, "bad operand type for unary %c: '%s'", n->kind == E_NEG ? '-' : '+', jv_type_name(v));
}

static COLD jval eval_binary(jctx *c, jframe *f, const jnode *n)
{
    jval a = eval(c, f, n->a), b = eval(c, f, n->b);
    c->line = n->line;
    return binop(c, n->op, a, b);
}

static COLD jval eval_concat(jctx *c, jframe *f, const jnode *n)
{
    jbuf b = {0};
    for (uint32_t i = 0; i < n->nkids; i++)
        jv_str_into(c, &b, eval(c, f, n->kids[i]));
    return jbuf_take(c, &b);
}

static COLD jval eval_compare(jctx *c, jframe *f, const jnode *n)
{
    jval left = eval(c, f, n->a);
    for (uint32_t i = 0; i < n->nkids; i++) {
        jval right = eval(c, f, n->kids[i]);
        c->line = n->line;
        if (!compare(c, n->ops[i], left, right))
            return jv_bool(false);
        left = right;
    }
    return jv_bool(true);
}

static COLD jval eval_attr(jctx *c, jframe *f, const jnode *n)
{
    jval obj = eval(c, f, n->a);
    c->line = n->line;
    return jinja_getattr(c, obj, n->str);
}

static jval eval(jctx *c, jframe *f, const jnode *n)
{
    enter(c, n);
    jval r;
    switch (n->kind) {
    case E_CONST: r = n->lit; break;
    case E_NAME: r = lookup(c, f, (uint32_t)n->id); break;
    case E_LIST:
    case E_TUPLE:
    case E_DICT: r = eval_seq(c, f, n); break;
    case E_ATTR: r = eval_attr(c, f, n); break;
    case E_ITEM: r = eval_item(c, f, n); break;
    case E_CALL: r = eval_call(c, f, n); break;
    case E_FILTER: r = eval_filter(c, f, n); break;
    case E_TEST: r = eval_test(c, f, n); break;
    case E_NOT: r = jv_bool(!jv_truthy(eval(c, f, n->a))); break;
    case E_NEG:
    case E_POS: r = eval_unary(c, f, n); break;
    case E_BIN: r = eval_binary(c, f, n); break;
    case E_AND:
        r = eval(c, f, n->a);
        if (jv_truthy(r))
            r = eval(c, f, n->b);
        break;
    case E_OR:
        r = eval(c, f, n->a);
        if (!jv_truthy(r))
            r = eval(c, f, n->b);
        break;
    case E_CONCAT: r = eval_concat(c, f, n); break;
    case E_CMP: r = eval_compare(c, f, n); break;
    case E_COND:
        if (jv_truthy(eval(c, f, n->a)))
            r = eval(c, f, n->b);
        else if (n->c)
            r = eval(c, f, n->c);
        else
            r = jv_undef_hint(c, "the inline if-expression on line %u evaluated to false and no else section was "
                                 "defined.", n->line);
        break;
    case E_BLOCKVAL: r = c->blockval; break;
    default: jfail(c, -SL_EFORMAT, "internal error: node %d is not an expression", n->kind);
    }
    c->depth--;
    return r;
}

/* ---- statements ---- */

static void assign(jctx *c, jframe *f, const jnode *t, jval v)
{
    switch (t->kind) {
    case T_NAME: frame_set(c, f, (uint32_t)t->id, v); return;
    case T_NSATTR: {
        jval ns = lookup(c, f, (uint32_t)t->id);
        c->line = t->line;
        if (ns.t != JT_NS)
            jfail(c, -SL_EFORMAT, "cannot assign attribute on non-namespace object");
        jdict_set(c, ns.u.d, jv_str(t->str, t->slen), v);
        return;
    }
    case T_TUPLE: {
        c->line = t->line;
        if (v.t == JT_UNDEF)
            jfail_undef(c, v);
        jlist *items = jv_iterate(c, v);
        if (items->n < t->nkids)
            jfail(c, -SL_EFORMAT, "not enough values to unpack (expected %u, got %zu)", t->nkids, items->n);
        if (items->n > t->nkids)
            jfail(c, -SL_EFORMAT, "too many values to unpack (expected %u)", t->nkids);
        for (uint32_t i = 0; i < t->nkids; i++)
            assign(c, f, t->kids[i], items->v[i]);
        return;
    }
    default: jfail(c, -SL_EFORMAT, "internal error: bad assignment target");
    }
}

/* Runs for-loop `n` over `iterable` in scope f. Returns whether it iterated. */
static int run_loop(jctx *c, jframe *f, const jnode *n, jval iterable, uint32_t depth)
{
    if (++c->depth > c->t->lim.max_depth)
        jfail(c, -SL_ERANGE, "evaluation nested more than %u levels deep", c->t->lim.max_depth);
    c->line = n->line;
    jlist *items = jv_iterate(c, iterable);
    if (n->c) { /* the loop's `if`: filter first, so that loop.length and loop.last count what remains */
        jval kept = jv_list(c, items->n);
        jframe *ff = frame_new(c, f);
        for (size_t i = 0; i < items->n; i++) {
            jstep(c);
            ff->n = 0;
            assign(c, ff, n->a, items->v[i]);
            if (jv_truthy(eval(c, ff, n->c)))
                jlist_push(c, kept.u.l, items->v[i]);
        }
        items = kept.u.l;
    }
    jframe *lf = frame_new(c, f);
    jloop *lp = jalloc(c, sizeof *lp);
    lp->items = items;
    lp->depth = depth;
    lp->node = n;
    lp->frame = f;
    jval lv = {0};
    lv.t = JT_LOOP;
    lv.u.lp = lp;
    for (size_t i = 0; i < items->n; i++) {
        jstep(c);
        lf->n = 0;
        lp->idx = i;
        assign(c, lf, n->a, items->v[i]);
        frame_set(c, lf, c->t->id_loop, lv);
        if (exec_body(c, lf, n->body) == R_BREAK)
            break;
    }
    c->depth--;
    return items->n != 0;
}

static jval capture_body(jctx *c, jframe *f, const jnode *body)
{
    jbuf b, *saved;
    capture_begin(c, &b, &saved);
    exec_body(c, f, body);
    return capture_end(c, &b, saved);
}

static jval apply_block_filter(jctx *c, jframe *f, const jnode *chain, jval text)
{
    jval saved = c->blockval;
    c->blockval = text;
    jval r = eval(c, f, chain);
    c->blockval = saved;
    return r;
}

static COLD void exec_macro_def(jctx *c, jframe *f, const jnode *n)
{
    jval m = {0};
    m.t = JT_MACRO;
    m.u.m = jalloc(c, sizeof *m.u.m);
    m.u.m->def = n;
    m.u.m->closure = f;
    frame_set(c, f, (uint32_t)n->id, m);
}

static COLD void exec_call_block(jctx *c, jframe *f, const jnode *n)
{
    jval caller = {0};
    caller.t = JT_MACRO;
    caller.u.m = jalloc(c, sizeof *caller.u.m);
    caller.u.m->def = n;
    caller.u.m->closure = f;
    const jnode *call = n->a;
    jval fn = eval(c, f, call->a);
    jargs a = eval_args(c, f, call);
    c->line = n->line;
    jv_str_into(c, c->out, call_value(c, fn, &a, caller));
}

static COLD void exec_set_block(jctx *c, jframe *f, const jnode *n)
{
    jval v = capture_body(c, f, n->body);
    if (n->c)
        v = apply_block_filter(c, f, n->c, v);
    assign(c, f, n->a, v);
}

static COLD int exec_with(jctx *c, jframe *f, const jnode *n)
{
    jframe *wf = frame_new(c, f);
    for (uint32_t i = 0; i < n->nkids; i++)
        frame_set(c, wf, n->names[i], eval(c, f, n->kids[i]));
    return exec_body(c, wf, n->body);
}

static COLD void exec_output(jctx *c, jframe *f, const jnode *n)
{
    jval v = eval(c, f, n->a);
    if (v.t == JT_STR)
        jbuf_put(c, c->out, v.u.s.p, v.u.s.n);
    else
        jv_str_into(c, c->out, v);
}

static int exec_stmt(jctx *c, jframe *f, const jnode *n)
{
    enter(c, n);
    int r = R_NORMAL;
    switch (n->kind) {
    case S_TEXT: jbuf_put(c, c->out, n->str, n->slen); break;
    case S_OUTPUT: exec_output(c, f, n); break;
    case S_BODY: r = exec_body(c, f, n); break;
    case S_IF:
        if (jv_truthy(eval(c, f, n->a)))
            r = exec_body(c, f, n->body);
        else if (n->orelse)
            r = exec_body(c, f, n->orelse);
        break;
    case S_FOR:
        if (!run_loop(c, f, n, eval(c, f, n->b), 0) && n->orelse)
            r = exec_body(c, f, n->orelse);
        break;
    case S_SET: assign(c, f, n->a, eval(c, f, n->b)); break;
    case S_SETBLOCK: exec_set_block(c, f, n); break;
    case S_MACRO: exec_macro_def(c, f, n); break;
    case S_CALLBLOCK: exec_call_block(c, f, n); break;
    case S_FILTERBLOCK: jv_str_into(c, c->out, apply_block_filter(c, f, n->a, capture_body(c, f, n->body))); break;
    case S_WITH: r = exec_with(c, f, n); break;
    case S_BREAK: r = R_BREAK; break;
    case S_CONTINUE: r = R_CONTINUE; break;
    default: jfail(c, -SL_EFORMAT, "internal error: node %d is not a statement", n->kind);
    }
    c->depth--;
    return r;
}

static int exec_body(jctx *c, jframe *f, const jnode *body)
{
    for (uint32_t i = 0; i < body->nkids; i++) {
        int r = exec_stmt(c, f, body->kids[i]);
        if (r != R_NORMAL)
            return r;
    }
    return R_NORMAL;
}

/* ---- entry ---- */

int jinja_render(const sl_template *t, const void *vars_cjson, char **out, size_t *out_len, char *err,
                 size_t err_size)
{
    *out = NULL;
    *out_len = 0;
    /* On the heap: its fields change between setjmp and longjmp. */
    jctx *c = calloc(1, sizeof *c);
    jbuf *top = calloc(1, sizeof *top);
    if (!c || !top) {
        free(c);
        free(top);
        snprintf(err, err_size, "out of memory");
        return -SL_ENOMEM;
    }
    c->t = t;
    c->arena.cap = t->lim.max_memory;
    c->err = err;
    c->err_size = err_size;
    top->heap = true;
    c->top = c->out = top;
    if (setjmp(c->jb)) {
        int rc = c->err_code;
        free(top->p);
        free(top);
        jarena_free(&c->arena);
        free(c);
        return rc;
    }
    const cJSON *vars = vars_cjson;
    c->ctxvars = jalloc(c, (t->n_names + 1) * sizeof *c->ctxvars); /* zeroed: JT_ABSENT */
    if (vars && !cJSON_IsObject(vars))
        jfail(c, -SL_EFORMAT, "the template's variables must be a JSON object");
    for (const cJSON *e = vars ? vars->child : NULL; e; e = e->next) {
        int64_t id = e->string ? jinja_name_id(t, e->string, strlen(e->string)) : -1;
        if (id >= 0)
            c->ctxvars[id] = jv_from_cjson(c, e);
    }
    jframe *root = frame_new(c, NULL);
    exec_body(c, root, t->root);
    jbuf_putc(c, top, 0);
    *out = top->p;
    *out_len = top->n - 1;
    free(top);
    jarena_free(&c->arena);
    free(c);
    return 0;
}
