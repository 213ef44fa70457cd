/* The chat-template parser: tokens (chat/jinja_lex.c) to a tree of nodes
 * (chat/jinja.h), following the grammar of Python's jinja2 rule for rule so
 * that precedence and its quirks match: `not` binds looser than comparisons,
 * filters and tests bind tighter than arithmetic (`'a' + x | trim` trims x),
 * `if` conditions and `for` iterables take no inline if-expression, a test's
 * single argument needs no parentheses (`x is divisibleby 3`).
 *
 * Names are interned to small ids so that scopes compare integers.
 * Recursion (nested expressions and statements) is bounded. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja.h"
#include "common/log.h"

#define MAX_NEST 200 /* nested expressions + statements; bounds parser and evaluator stack */

typedef struct jparser {
    jpctx *px;
    sl_template *t;
    jtoken *tk;
    size_t n, pos;
    int nest;
    int loop_depth;
    jnode *macro; /* innermost macro or call block being parsed */
    /* open statements and the end tags their bodies wait for, for messages */
    const char *tags[MAX_NEST + 2];
    int n_tags;
    const char *const *ends[MAX_NEST + 2];
    int n_ends;
} jparser;

void *jpalloc(jpctx *px, size_t n)
{
    void *p = jarena_alloc(&px->t->arena, n ? n : 1);
    if (!p)
        jpfail(px, -SL_ENOMEM, 0, "out of memory parsing the template");
    return p;
}

_Noreturn void jpfail(jpctx *px, int code, uint32_t line, const char *fmt, ...)
{
    if (px->err && px->err_size) {
        int k = line ? snprintf(px->err, px->err_size, "line %u: ", line) : 0;
        if (k < 0 || (size_t)k >= px->err_size)
            k = 0;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(px->err + k, px->err_size - (size_t)k, fmt, ap);
        va_end(ap);
    }
    px->code = code;
    longjmp(px->jb, 1);
}

/* ---- names ---- */

static uint32_t hash_name(const char *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)p[i]) * 16777619u;
    return h;
}

int64_t jinja_name_id(const sl_template *t, const char *p, size_t n)
{
    if (!t->hash_cap)
        return -1;
    for (uint32_t h = hash_name(p, n) & (t->hash_cap - 1);; h = (h + 1) & (t->hash_cap - 1)) {
        uint32_t id = t->hash[h];
        if (id == UINT32_MAX)
            return -1;
        if (strlen(t->names[id]) == n && !memcmp(t->names[id], p, n))
            return id;
    }
}

int64_t jinja_intern(sl_template *t, const char *p, size_t n)
{
    int64_t id = jinja_name_id(t, p, n);
    if (id >= 0)
        return id;
    if ((t->n_names + 1) * 2 > t->hash_cap) { /* grow the index, keep it at most half full */
        uint32_t cap = t->hash_cap ? t->hash_cap * 2 : 64;
        uint32_t *h = jarena_alloc(&t->arena, cap * sizeof *h);
        char **names = jarena_alloc(&t->arena, cap / 2 * sizeof *names);
        if (!h || !names)
            return -1;
        memset(h, 0xff, cap * sizeof *h);
        for (uint32_t i = 0; i < t->n_names; i++) {
            uint32_t k = hash_name(t->names[i], strlen(t->names[i])) & (cap - 1);
            while (h[k] != UINT32_MAX)
                k = (k + 1) & (cap - 1);
            h[k] = i;
            names[i] = t->names[i];
        }
        t->hash = h;
        t->hash_cap = cap;
        t->names = names;
        t->cap_names = cap / 2;
    }
    char *copy = jarena_alloc(&t->arena, n + 1);
    if (!copy)
        return -1;
    memcpy(copy, p, n);
    uint32_t nid = t->n_names++;
    t->names[nid] = copy;
    uint32_t k = hash_name(p, n) & (t->hash_cap - 1);
    while (t->hash[k] != UINT32_MAX)
        k = (k + 1) & (t->hash_cap - 1);
    t->hash[k] = nid;
    return nid;
}

static uint32_t intern(jparser *P, const char *p, size_t n)
{
    int64_t id = jinja_intern(P->t, p, n);
    if (id < 0)
        jpfail(P->px, -SL_ENOMEM, 0, "out of memory parsing the template");
    return (uint32_t)id;
}

/* ---- token stream ---- */

static jtoken *cur(jparser *P) { return &P->tk[P->pos]; }
static jtoken *peek(jparser *P, size_t k)
{
    return P->pos + k < P->n ? &P->tk[P->pos + k] : &P->tk[P->n - 1];
}
static jtoken *next(jparser *P)
{
    jtoken *t = cur(P);
    if (P->pos + 1 < P->n)
        P->pos++;
    return t;
}
static bool is_op(jtoken *t, uint16_t op) { return t->type == TK_OP && t->op == op; }
static bool is_name(jtoken *t, const char *s) { return t->type == TK_NAME && !strcmp(t->p, s); }

static const char *describe(jtoken *t, char *buf, size_t size)
{
    switch (t->type) {
    case TK_EOF: return "end of template";
    case TK_TEXT: return "template data";
    case TK_VAR_BEGIN: return "begin of print statement";
    case TK_VAR_END: return "end of print statement";
    case TK_BLOCK_BEGIN: return "begin of statement block";
    case TK_BLOCK_END: return "end of statement block";
    case TK_NAME: snprintf(buf, size, "%s", t->p); return buf;
    case TK_STRING: return "string";
    case TK_INT: return "integer";
    case TK_FLOAT: return "float";
    default:
        if (t->op < 256)
            snprintf(buf, size, "%c", (char)t->op);
        else
            snprintf(buf, size, "%s", t->op == TOP_FLOORDIV ? "//" : t->op == TOP_POW ? "**" : t->op == TOP_EQ ? "=="
                                      : t->op == TOP_NE ? "!=" : t->op == TOP_LE ? "<=" : ">=");
        return buf;
    }
}

_Noreturn static void fail_unexpected(jparser *P)
{
    char buf[64];
    jtoken *t = cur(P);
    jpfail(P->px, -SL_EFORMAT, t->line, "unexpected '%s'", describe(t, buf, sizeof buf));
}

/* As jinja2's TokenStream.expect: `what` names the token that was wanted. */
_Noreturn static void fail_expected(jparser *P, const char *what)
{
    char buf[64];
    jtoken *t = cur(P);
    if (t->type == TK_EOF)
        jpfail(P->px, -SL_EFORMAT, t->line, "unexpected end of template, expected '%s'.", what);
    jpfail(P->px, -SL_EFORMAT, t->line, "expected token '%s', got '%s'", what, describe(t, buf, sizeof buf));
}

static void expect_op(jparser *P, uint16_t op)
{
    if (!is_op(cur(P), op)) {
        char buf[8];
        snprintf(buf, sizeof buf, "%c", (char)op);
        fail_expected(P, buf);
    }
    next(P);
}

static void expect_type(jparser *P, uint8_t type, const char *what)
{
    if (cur(P)->type != type)
        fail_expected(P, what);
    next(P);
}

static jtoken *expect_name(jparser *P, const char *name)
{
    if (cur(P)->type != TK_NAME || (name && strcmp(cur(P)->p, name)))
        fail_expected(P, name ? name : "name");
    return next(P);
}

/* The message jinja2 gives for an unknown tag (name) or the end of the
 * template (name NULL) inside open blocks. */
_Noreturn static void fail_tag(jparser *P, const char *name, uint32_t line)
{
    char msg[512];
    size_t k = 0;
    if (name)
        k += (size_t)snprintf(msg, sizeof msg, "Encountered unknown tag '%s'.", name);
    else
        k += (size_t)snprintf(msg, sizeof msg, "Unexpected end of template.");
    if (P->n_ends && k < sizeof msg) {
        const char *const *want = P->ends[P->n_ends - 1];
        bool nesting = false;
        for (int i = 0; name && i < P->n_ends; i++)
            for (const char *const *e = P->ends[i]; *e; e++)
                nesting |= !strcmp(*e, name);
        k += (size_t)snprintf(msg + k, sizeof msg - k, nesting ? " You probably made a nesting mistake. Jinja is "
                                                                 "expecting this tag, but currently looking for "
                                                               : " Jinja was looking for the following tags: ");
        for (const char *const *e = want; *e && k < sizeof msg; e++)
            k += (size_t)snprintf(msg + k, sizeof msg - k, "%s'%s'", e == want ? "" : " or ", *e);
        if (k < sizeof msg)
            k += (size_t)snprintf(msg + k, sizeof msg - k, ".");
    }
    if (P->n_tags && k < sizeof msg)
        snprintf(msg + k, sizeof msg - k, " The innermost block that needs to be closed is '%s'.",
                 P->tags[P->n_tags - 1]);
    jpfail(P->px, -SL_EFORMAT, line, "%s", msg);
}

/* ---- nodes ---- */

static jnode *node(jparser *P, uint8_t kind, uint32_t line)
{
    jnode *n = jpalloc(P->px, sizeof *n);
    n->kind = kind;
    n->line = line;
    n->id = -1;
    return n;
}

/* A growable array of node pointers in the arena. */
typedef struct nvec {
    jnode **v;
    uint32_t n, cap;
} nvec;

static void nvec_push(jparser *P, nvec *a, jnode *x)
{
    if (a->n == a->cap) {
        uint32_t cap = a->cap ? a->cap * 2 : 4;
        jnode **v = jpalloc(P->px, cap * sizeof *v);
        if (a->n)
            memcpy(v, a->v, a->n * sizeof *v);
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = x;
}

typedef struct uvec {
    uint32_t *v;
    uint32_t n, cap;
} uvec;

static void uvec_push(jparser *P, uvec *a, uint32_t x)
{
    if (a->n == a->cap) {
        uint32_t cap = a->cap ? a->cap * 2 : 4;
        uint32_t *v = jpalloc(P->px, cap * sizeof *v);
        if (a->n)
            memcpy(v, a->v, a->n * sizeof *v);
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = x;
}

static void enter(jparser *P)
{
    if (++P->nest > MAX_NEST)
        jpfail(P->px, -SL_ERANGE, cur(P)->line, "template nested too deeply (more than %d levels)", MAX_NEST);
}
static void leave(jparser *P) { P->nest--; }

/* ---- expressions ---- */

static jnode *parse_expression(jparser *P, bool with_condexpr);
static jnode *parse_tuple(jparser *P, bool simplified, bool with_condexpr, const char *const *extra_end,
                          bool explicit_parens, bool with_namespace);
static jnode *parse_unary(jparser *P, bool with_filter);
static jnode *parse_primary(jparser *P, bool with_namespace);
static jnode *parse_postfix(jparser *P, jnode *n);
static jnode *parse_filter(jparser *P, jnode *n, bool start_inline);

/* Call arguments "(a, b, k=v)" into n->kids / n->names / n->npos. */
static void parse_call_args(jparser *P, jnode *n)
{
    uint32_t line = cur(P)->line;
    expect_op(P, '(');
    nvec pos = {0}, kwv = {0};
    uvec kwn = {0};
    bool need_comma = false;
    while (!is_op(cur(P), ')')) {
        if (need_comma) {
            expect_op(P, ',');
            if (is_op(cur(P), ')'))
                break;
        }
        if (is_op(cur(P), '*') || is_op(cur(P), TOP_POW))
            jpfail(P->px, -SL_EUNSUPPORTED, line, "*args and **kwargs in calls are not supported");
        if (cur(P)->type == TK_NAME && is_op(peek(P, 1), '=')) {
            jtoken *k = next(P);
            next(P);
            uvec_push(P, &kwn, intern(P, k->p, k->n));
            nvec_push(P, &kwv, parse_expression(P, true));
        } else {
            if (kwn.n)
                jpfail(P->px, -SL_EFORMAT, line, "invalid syntax for function call expression");
            nvec_push(P, &pos, parse_expression(P, true));
        }
        need_comma = true;
    }
    expect_op(P, ')');
    n->npos = pos.n;
    n->nkids = pos.n + kwv.n;
    n->kids = jpalloc(P->px, (n->nkids + 1) * sizeof *n->kids);
    for (uint32_t i = 0; i < pos.n; i++)
        n->kids[i] = pos.v[i];
    for (uint32_t i = 0; i < kwv.n; i++)
        n->kids[pos.n + i] = kwv.v[i];
    n->names = kwn.v;
}

static jnode *parse_call(jparser *P, jnode *callee)
{
    jnode *n = node(P, E_CALL, cur(P)->line);
    n->a = callee;
    parse_call_args(P, n);
    return n;
}

/* A filter or test name: NAME(.NAME)*, NUL-terminated in the arena. */
static const char *dotted_name(jparser *P)
{
    jtoken *t = expect_name(P, NULL);
    size_t len = t->n;
    const char *first = t->p;
    size_t start = P->pos;
    while (is_op(cur(P), '.') && peek(P, 1)->type == TK_NAME) {
        next(P);
        len += 1 + next(P)->n;
    }
    if (P->pos == start)
        return first;
    char *s = jpalloc(P->px, len + 1), *o = s;
    memcpy(o, first, t->n);
    o += t->n;
    for (size_t i = start; i < P->pos; i += 2) {
        *o++ = '.';
        memcpy(o, P->tk[i + 1].p, P->tk[i + 1].n);
        o += P->tk[i + 1].n;
    }
    *o = 0;
    return s;
}

static jnode *parse_filter(jparser *P, jnode *n, bool start_inline)
{
    while (is_op(cur(P), '|') || start_inline) {
        if (!start_inline)
            next(P);
        uint32_t line = cur(P)->line;
        const char *name = dotted_name(P);
        jnode *f = node(P, E_FILTER, line);
        f->a = n;
        f->str = name;
        f->id = jinja_filter_index(name);
        if (is_op(cur(P), '('))
            parse_call_args(P, f);
        n = f;
        start_inline = false;
    }
    return n;
}

static jnode *parse_test(jparser *P, jnode *n)
{
    uint32_t line = next(P)->line; /* "is" */
    bool negated = false;
    if (is_name(cur(P), "not")) {
        next(P);
        negated = true;
    }
    const char *name = dotted_name(P);
    jnode *t = node(P, E_TEST, line);
    t->a = n;
    t->str = name;
    t->id = jinja_test_index(name);
    t->op = negated;
    jtoken *c = cur(P);
    if (is_op(c, '(')) {
        parse_call_args(P, t);
    } else if ((c->type == TK_NAME || c->type == TK_STRING || c->type == TK_INT || c->type == TK_FLOAT ||
                is_op(c, '[') || is_op(c, '{')) &&
               !is_name(c, "else") && !is_name(c, "or") && !is_name(c, "and")) {
        if (is_name(c, "is"))
            jpfail(P->px, -SL_EFORMAT, c->line, "You cannot chain multiple tests with is");
        enter(P);
        jnode *arg = parse_postfix(P, parse_primary(P, false));
        leave(P);
        t->kids = jpalloc(P->px, sizeof *t->kids);
        t->kids[0] = arg;
        t->nkids = t->npos = 1;
    }
    return t;
}

static jnode *parse_subscribed(jparser *P)
{
    uint32_t line = cur(P)->line;
    jnode *args[3] = {NULL, NULL, NULL};
    if (is_op(cur(P), ':')) {
        next(P);
    } else {
        jnode *e = parse_expression(P, true);
        if (!is_op(cur(P), ':'))
            return e;
        next(P);
        args[0] = e;
    }
    if (!is_op(cur(P), ':') && !is_op(cur(P), ']') && !is_op(cur(P), ','))
        args[1] = parse_expression(P, true);
    if (is_op(cur(P), ':')) {
        next(P);
        if (!is_op(cur(P), ']') && !is_op(cur(P), ','))
            args[2] = parse_expression(P, true);
    }
    jnode *s = node(P, E_SLICE, line);
    s->kids = jpalloc(P->px, 3 * sizeof *s->kids);
    memcpy(s->kids, args, sizeof args);
    s->nkids = 3;
    return s;
}

static jnode *parse_subscript(jparser *P, jnode *obj)
{
    jtoken *t = next(P);
    if (t->type == TK_OP && t->op == '.') {
        jtoken *a = cur(P);
        if (a->type == TK_NAME) {
            next(P);
            jnode *n = node(P, E_ATTR, t->line);
            n->a = obj;
            n->str = a->p;
            n->slen = a->n;
            return n;
        }
        if (a->type != TK_INT)
            jpfail(P->px, -SL_EFORMAT, a->line, "expected name or number");
        next(P);
        jnode *k = node(P, E_CONST, a->line);
        k->lit = jv_int(a->i);
        jnode *n = node(P, E_ITEM, t->line);
        n->a = obj;
        n->b = k;
        return n;
    }
    /* '[' */
    nvec args = {0};
    while (!is_op(cur(P), ']')) {
        if (args.n)
            expect_op(P, ',');
        nvec_push(P, &args, parse_subscribed(P));
    }
    expect_op(P, ']');
    jnode *n = node(P, E_ITEM, t->line);
    n->a = obj;
    if (args.n == 1) {
        n->b = args.v[0];
    } else {
        jnode *tup = node(P, E_TUPLE, t->line);
        tup->kids = args.v;
        tup->nkids = args.n;
        n->b = tup;
    }
    return n;
}

static jnode *parse_postfix(jparser *P, jnode *n)
{
    for (;;) {
        if (is_op(cur(P), '.') || is_op(cur(P), '['))
            n = parse_subscript(P, n);
        else if (is_op(cur(P), '('))
            n = parse_call(P, n);
        else
            return n;
    }
}

static jnode *parse_filter_expr(jparser *P, jnode *n)
{
    for (;;) {
        if (is_op(cur(P), '|'))
            n = parse_filter(P, n, false);
        else if (is_name(cur(P), "is"))
            n = parse_test(P, n);
        else if (is_op(cur(P), '('))
            n = parse_call(P, n);
        else
            return n;
    }
}

static jnode *parse_list(jparser *P)
{
    uint32_t line = next(P)->line;
    nvec items = {0};
    while (!is_op(cur(P), ']')) {
        if (items.n)
            expect_op(P, ',');
        if (is_op(cur(P), ']'))
            break;
        nvec_push(P, &items, parse_expression(P, true));
    }
    expect_op(P, ']');
    jnode *n = node(P, E_LIST, line);
    n->kids = items.v;
    n->nkids = items.n;
    return n;
}

static jnode *parse_dict(jparser *P)
{
    uint32_t line = next(P)->line;
    nvec items = {0};
    while (!is_op(cur(P), '}')) {
        if (items.n)
            expect_op(P, ',');
        if (is_op(cur(P), '}'))
            break;
        nvec_push(P, &items, parse_expression(P, true));
        expect_op(P, ':');
        nvec_push(P, &items, parse_expression(P, true));
    }
    expect_op(P, '}');
    jnode *n = node(P, E_DICT, line);
    n->kids = items.v;
    n->nkids = items.n;
    return n;
}

static void note_name(jparser *P, uint32_t id)
{
    if (!P->macro)
        return;
    if (id == P->t->id_varargs)
        P->macro->flags |= JN_USES_VARARGS;
    else if (id == P->t->id_kwargs)
        P->macro->flags |= JN_USES_KWARGS;
    else if (id == P->t->id_caller)
        P->macro->flags |= JN_USES_CALLER;
}

static jnode *parse_primary(jparser *P, bool with_namespace)
{
    jtoken *t = cur(P);
    jnode *n;
    switch (t->type) {
    case TK_NAME:
        next(P);
        if (!strcmp(t->p, "true") || !strcmp(t->p, "True") || !strcmp(t->p, "false") || !strcmp(t->p, "False")) {
            n = node(P, E_CONST, t->line);
            n->lit = jv_bool(t->p[0] == 't' || t->p[0] == 'T');
        } else if (!strcmp(t->p, "none") || !strcmp(t->p, "None")) {
            n = node(P, E_CONST, t->line);
            n->lit = jv_none();
        } else if (with_namespace && is_op(cur(P), '.')) {
            next(P);
            jtoken *a = expect_name(P, NULL);
            n = node(P, T_NSATTR, t->line);
            n->id = (int32_t)intern(P, t->p, t->n);
            n->str = a->p;
            n->slen = a->n;
        } else {
            n = node(P, E_NAME, t->line);
            n->id = (int32_t)intern(P, t->p, t->n);
            note_name(P, (uint32_t)n->id);
        }
        return n;
    case TK_STRING: {
        next(P);
        n = node(P, E_CONST, t->line);
        if (cur(P)->type != TK_STRING) {
            n->lit = jv_str(t->p, t->n);
        } else { /* adjacent literals concatenate */
            size_t total = t->n, start = P->pos - 1;
            while (cur(P)->type == TK_STRING)
                total += next(P)->n;
            char *s = jpalloc(P->px, total + 1), *o = s;
            for (size_t i = start; i < P->pos; i++) {
                memcpy(o, P->tk[i].p, P->tk[i].n);
                o += P->tk[i].n;
            }
            n->lit = jv_str(s, total);
        }
        return n;
    }
    case TK_INT:
    case TK_FLOAT:
        next(P);
        n = node(P, E_CONST, t->line);
        n->lit = t->type == TK_INT ? jv_int(t->i) : jv_float(t->f);
        return n;
    case TK_OP:
        if (t->op == '(') {
            next(P);
            n = parse_tuple(P, false, true, NULL, true, false);
            expect_op(P, ')');
            return n;
        }
        if (t->op == '[')
            return parse_list(P);
        if (t->op == '{')
            return parse_dict(P);
        break;
    default:
        break;
    }
    fail_unexpected(P);
}

static jnode *parse_unary(jparser *P, bool with_filter)
{
    enter(P);
    jtoken *t = cur(P);
    jnode *n;
    if (is_op(t, '-') || is_op(t, '+')) {
        next(P);
        n = node(P, is_op(t, '-') ? E_NEG : E_POS, t->line);
        n->a = parse_unary(P, false);
    } else {
        n = parse_primary(P, false);
    }
    n = parse_postfix(P, n);
    if (with_filter)
        n = parse_filter_expr(P, n);
    leave(P);
    return n;
}

static jnode *binary(jparser *P, uint8_t kind, uint8_t op, jnode *a, jnode *b, uint32_t line)
{
    jnode *n = node(P, kind, line);
    n->op = op;
    n->a = a;
    n->b = b;
    return n;
}

static jnode *parse_pow(jparser *P)
{
    jnode *l = parse_unary(P, true);
    while (is_op(cur(P), TOP_POW)) {
        uint32_t line = next(P)->line;
        l = binary(P, E_BIN, OP_POW, l, parse_unary(P, true), line);
    }
    return l;
}

static jnode *parse_math2(jparser *P)
{
    jnode *l = parse_pow(P);
    for (;;) {
        jtoken *t = cur(P);
        uint8_t op = is_op(t, '*') ? OP_MUL : is_op(t, '/') ? OP_DIV : is_op(t, TOP_FLOORDIV) ? OP_FLOORDIV
                   : is_op(t, '%') ? OP_MOD : 0;
        if (!op)
            return l;
        next(P);
        l = binary(P, E_BIN, op, l, parse_pow(P), t->line);
    }
}

static jnode *parse_concat(jparser *P)
{
    jnode *first = parse_math2(P);
    if (!is_op(cur(P), '~'))
        return first;
    nvec args = {0};
    nvec_push(P, &args, first);
    uint32_t line = cur(P)->line;
    while (is_op(cur(P), '~')) {
        next(P);
        nvec_push(P, &args, parse_math2(P));
    }
    jnode *n = node(P, E_CONCAT, line);
    n->kids = args.v;
    n->nkids = args.n;
    return n;
}

static jnode *parse_math1(jparser *P)
{
    jnode *l = parse_concat(P);
    for (;;) {
        jtoken *t = cur(P);
        uint8_t op = is_op(t, '+') ? OP_ADD : is_op(t, '-') ? OP_SUB : 0;
        if (!op)
            return l;
        next(P);
        l = binary(P, E_BIN, op, l, parse_concat(P), t->line);
    }
}

static jnode *parse_compare(jparser *P)
{
    uint32_t line = cur(P)->line;
    jnode *first = parse_math1(P);
    nvec operands = {0};
    uint8_t ops[64];
    for (;;) {
        jtoken *t = cur(P);
        uint8_t op = is_op(t, TOP_EQ) ? CMP_EQ : is_op(t, TOP_NE) ? CMP_NE : is_op(t, '<') ? CMP_LT
                   : is_op(t, TOP_LE) ? CMP_LE : is_op(t, '>') ? CMP_GT : is_op(t, TOP_GE) ? CMP_GE : 0;
        if (op) {
            next(P);
        } else if (is_name(t, "in")) {
            next(P);
            op = CMP_IN;
        } else if (is_name(t, "not") && is_name(peek(P, 1), "in")) {
            next(P);
            next(P);
            op = CMP_NOTIN;
        } else {
            break;
        }
        if (operands.n == sizeof ops)
            jpfail(P->px, -SL_ERANGE, t->line, "too many chained comparisons");
        ops[operands.n] = op;
        nvec_push(P, &operands, parse_math1(P));
    }
    if (!operands.n)
        return first;
    jnode *n = node(P, E_CMP, line);
    n->a = first;
    n->kids = operands.v;
    n->nkids = operands.n;
    n->ops = jpalloc(P->px, operands.n);
    memcpy(n->ops, ops, operands.n);
    return n;
}

static jnode *parse_not(jparser *P)
{
    if (is_name(cur(P), "not")) {
        uint32_t line = next(P)->line;
        enter(P);
        jnode *n = node(P, E_NOT, line);
        n->a = parse_not(P);
        leave(P);
        return n;
    }
    return parse_compare(P);
}

static jnode *parse_and(jparser *P)
{
    jnode *l = parse_not(P);
    while (is_name(cur(P), "and")) {
        uint32_t line = next(P)->line;
        l = binary(P, E_AND, 0, l, parse_not(P), line);
    }
    return l;
}

static jnode *parse_or(jparser *P)
{
    jnode *l = parse_and(P);
    while (is_name(cur(P), "or")) {
        uint32_t line = next(P)->line;
        l = binary(P, E_OR, 0, l, parse_and(P), line);
    }
    return l;
}

static jnode *parse_condexpr(jparser *P)
{
    jnode *e1 = parse_or(P);
    while (is_name(cur(P), "if")) {
        uint32_t line = next(P)->line;
        enter(P);
        jnode *n = node(P, E_COND, line);
        n->b = e1;
        n->a = parse_or(P);
        if (is_name(cur(P), "else")) {
            next(P);
            n->c = parse_condexpr(P);
        }
        leave(P);
        e1 = n;
    }
    return e1;
}

static jnode *parse_expression(jparser *P, bool with_condexpr)
{
    enter(P);
    jnode *n = with_condexpr ? parse_condexpr(P) : parse_or(P);
    leave(P);
    return n;
}

static bool is_tuple_end(jparser *P, const char *const *extra_end)
{
    jtoken *t = cur(P);
    if (t->type == TK_VAR_END || t->type == TK_BLOCK_END || t->type == TK_EOF || is_op(t, ')'))
        return true;
    for (; extra_end && *extra_end; extra_end++)
        if (is_name(t, *extra_end))
            return true;
    return false;
}

static jnode *parse_tuple(jparser *P, bool simplified, bool with_condexpr, const char *const *extra_end,
                          bool explicit_parens, bool with_namespace)
{
    uint32_t line = cur(P)->line;
    nvec args = {0};
    bool is_tuple = false;
    for (;;) {
        if (args.n)
            expect_op(P, ',');
        if (is_tuple_end(P, extra_end))
            break;
        if (simplified) {
            enter(P);
            nvec_push(P, &args, parse_primary(P, with_namespace));
            leave(P);
        } else {
            nvec_push(P, &args, parse_expression(P, with_condexpr));
        }
        if (is_op(cur(P), ','))
            is_tuple = true;
        else
            break;
    }
    if (!is_tuple) {
        if (args.n)
            return args.v[0];
        if (!explicit_parens) {
            char buf[64];
            jpfail(P->px, -SL_EFORMAT, cur(P)->line, "Expected an expression, got '%s'",
                   describe(cur(P), buf, sizeof buf));
        }
    }
    jnode *n = node(P, E_TUPLE, line);
    n->kids = args.v;
    n->nkids = args.n;
    return n;
}

/* ---- statements ---- */

static jnode *subparse(jparser *P, const char *const *end_tags);

/* Turns a parsed expression into an assignment target. */
static jnode *to_target(jparser *P, jnode *n, bool allow_ns)
{
    switch (n->kind) {
    case E_NAME: n->kind = T_NAME; return n;
    case T_NSATTR:
        if (allow_ns)
            return n;
        break;
    case E_TUPLE:
        for (uint32_t i = 0; i < n->nkids; i++)
            n->kids[i] = to_target(P, n->kids[i], false);
        n->kind = T_TUPLE;
        return n;
    default: break;
    }
    jpfail(P->px, -SL_EFORMAT, n->line, "can't assign to this expression");
}

static jnode *parse_assign_target(jparser *P, const char *const *extra_end, bool with_namespace)
{
    jnode *n = parse_tuple(P, true, true, extra_end, false, with_namespace);
    return to_target(P, n, with_namespace);
}

/* "%}" then the body up to one of end_tags (left as the current token). */
static jnode *parse_statements(jparser *P, const char *const *end_tags, bool drop_needle)
{
    if (is_op(cur(P), ':'))
        next(P);
    expect_type(P, TK_BLOCK_END, "end of statement block");
    P->ends[P->n_ends++] = end_tags;
    jnode *body = subparse(P, end_tags);
    if (cur(P)->type == TK_EOF)
        fail_tag(P, NULL, cur(P)->line);
    P->n_ends--;
    if (drop_needle)
        next(P);
    return body;
}

static void parse_signature(jparser *P, jnode *n)
{
    expect_op(P, '(');
    uvec names = {0};
    nvec defaults = {0};
    bool any_default = false;
    while (!is_op(cur(P), ')')) {
        if (names.n)
            expect_op(P, ',');
        jtoken *a = expect_name(P, NULL);
        uvec_push(P, &names, intern(P, a->p, a->n));
        if (is_op(cur(P), '=')) {
            next(P);
            nvec_push(P, &defaults, parse_expression(P, true));
            any_default = true;
        } else {
            if (any_default)
                jpfail(P->px, -SL_EFORMAT, a->line, "non-default argument follows default argument");
            nvec_push(P, &defaults, NULL);
        }
    }
    expect_op(P, ')');
    n->names = names.v;
    n->kids = defaults.v;
    n->nkids = names.n;
}

static jnode *parse_for(jparser *P, uint32_t line)
{
    static const char *const in_end[] = {"in", NULL}, *const rec_end[] = {"recursive", NULL};
    static const char *const body_end[] = {"endfor", "else", NULL}, *const else_end[] = {"endfor", NULL};
    jnode *n = node(P, S_FOR, line);
    n->a = parse_assign_target(P, in_end, false);
    expect_name(P, "in");
    n->b = parse_tuple(P, false, false, rec_end, false, false);
    if (is_name(cur(P), "if")) {
        next(P);
        n->c = parse_expression(P, true);
    }
    if (is_name(cur(P), "recursive")) {
        next(P);
        n->op = 1;
    }
    P->loop_depth++;
    n->body = parse_statements(P, body_end, false);
    P->loop_depth--;
    if (!strcmp(next(P)->p, "else"))
        n->orelse = parse_statements(P, else_end, true);
    return n;
}

static jnode *parse_if(jparser *P, uint32_t line)
{
    static const char *const body_end[] = {"elif", "else", "endif", NULL}, *const else_end[] = {"endif", NULL};
    jnode *top = node(P, S_IF, line), *n = top;
    for (;;) {
        n->a = parse_tuple(P, false, false, NULL, false, false);
        n->body = parse_statements(P, body_end, false);
        jtoken *t = next(P);
        if (!strcmp(t->p, "elif")) {
            jnode *e = node(P, S_IF, t->line);
            jnode *wrap = node(P, S_BODY, t->line);
            wrap->kids = jpalloc(P->px, sizeof *wrap->kids);
            wrap->kids[0] = e;
            wrap->nkids = 1;
            n->orelse = wrap;
            n = e;
            continue;
        }
        if (!strcmp(t->p, "else"))
            n->orelse = parse_statements(P, else_end, true);
        return top;
    }
}

static jnode *parse_set(jparser *P, uint32_t line)
{
    static const char *const end[] = {"endset", NULL};
    jnode *target = parse_assign_target(P, NULL, true);
    if (is_op(cur(P), '=')) {
        next(P);
        jnode *n = node(P, S_SET, line);
        n->a = target;
        n->b = parse_tuple(P, false, true, NULL, false, false);
        return n;
    }
    jnode *n = node(P, S_SETBLOCK, line);
    n->a = target;
    if (is_op(cur(P), '|')) {
        jnode *leaf = node(P, E_BLOCKVAL, line);
        n->c = parse_filter(P, leaf, false);
    }
    n->body = parse_statements(P, end, true);
    return n;
}

/* Parses a macro or call-block body with its own loop and caller context. */
static jnode *parse_scoped_body(jparser *P, jnode *owner, const char *const *end)
{
    jnode *saved_macro = P->macro;
    int saved_loops = P->loop_depth;
    P->macro = owner;
    P->loop_depth = 0;
    jnode *body = parse_statements(P, end, true);
    P->macro = saved_macro;
    P->loop_depth = saved_loops;
    return body;
}

static jnode *parse_macro(jparser *P, uint32_t line)
{
    static const char *const end[] = {"endmacro", NULL};
    jnode *n = node(P, S_MACRO, line);
    jtoken *name = expect_name(P, NULL);
    n->id = (int32_t)intern(P, name->p, name->n);
    n->str = name->p;
    /* defaults see the macro's scope (earlier parameters) */
    jnode *saved = P->macro;
    P->macro = n;
    parse_signature(P, n);
    P->macro = saved;
    n->body = parse_scoped_body(P, n, end);
    return n;
}

static jnode *parse_call_block(jparser *P, uint32_t line)
{
    static const char *const end[] = {"endcall", NULL};
    jnode *n = node(P, S_CALLBLOCK, line);
    n->str = "caller";
    if (is_op(cur(P), '('))
        parse_signature(P, n);
    n->a = parse_expression(P, true);
    if (n->a->kind != E_CALL)
        jpfail(P->px, -SL_EFORMAT, line, "expected call");
    n->body = parse_scoped_body(P, n, end);
    return n;
}

static jnode *parse_with(jparser *P, uint32_t line)
{
    static const char *const end[] = {"endwith", NULL};
    jnode *n = node(P, S_WITH, line);
    uvec names = {0};
    nvec values = {0};
    while (cur(P)->type != TK_BLOCK_END) {
        if (names.n)
            expect_op(P, ',');
        jtoken *a = expect_name(P, NULL);
        uvec_push(P, &names, intern(P, a->p, a->n));
        expect_op(P, '=');
        nvec_push(P, &values, parse_expression(P, true));
    }
    n->names = names.v;
    n->kids = values.v;
    n->nkids = names.n;
    n->body = parse_statements(P, end, true);
    return n;
}

static jnode *parse_statement(jparser *P)
{
    jtoken *t = cur(P);
    if (t->type != TK_NAME)
        jpfail(P->px, -SL_EFORMAT, t->line, "tag name expected");
    uint32_t line = t->line;
    const char *tag = t->p;
    enter(P);
    jnode *n = NULL;
    next(P);
    P->tags[P->n_tags++] = tag;
    if (!strcmp(tag, "for")) {
        n = parse_for(P, line);
    } else if (!strcmp(tag, "if")) {
        n = parse_if(P, line);
    } else if (!strcmp(tag, "set")) {
        n = parse_set(P, line);
    } else if (!strcmp(tag, "macro")) {
        n = parse_macro(P, line);
    } else if (!strcmp(tag, "call")) {
        n = parse_call_block(P, line);
    } else if (!strcmp(tag, "filter")) {
        static const char *const end[] = {"endfilter", NULL};
        n = node(P, S_FILTERBLOCK, line);
        n->a = parse_filter(P, node(P, E_BLOCKVAL, line), true);
        n->body = parse_statements(P, end, true);
    } else if (!strcmp(tag, "with")) {
        n = parse_with(P, line);
    } else if (!strcmp(tag, "block")) {
        static const char *const end[] = {"endblock", NULL};
        expect_name(P, NULL);
        if (is_name(cur(P), "scoped"))
            next(P);
        if (is_name(cur(P), "required"))
            next(P);
        n = node(P, S_WITH, line); /* a block renders in place, in its own scope */
        n->body = parse_statements(P, end, true);
        if (cur(P)->type == TK_NAME)
            next(P);
    } else if (!strcmp(tag, "generation")) {
        static const char *const end[] = {"endgeneration", NULL};
        n = node(P, S_WITH, line);
        n->body = parse_statements(P, end, true);
    } else if (!strcmp(tag, "print")) {
        n = node(P, S_BODY, line);
        nvec outs = {0};
        while (cur(P)->type != TK_BLOCK_END) {
            if (outs.n)
                expect_op(P, ',');
            jnode *o = node(P, S_OUTPUT, cur(P)->line);
            o->a = parse_expression(P, true);
            nvec_push(P, &outs, o);
        }
        n->kids = outs.v;
        n->nkids = outs.n;
    } else if (!strcmp(tag, "break") || !strcmp(tag, "continue")) {
        if (!P->loop_depth)
            jpfail(P->px, -SL_EFORMAT, line, "'%s' outside of a for loop", tag);
        n = node(P, tag[0] == 'b' ? S_BREAK : S_CONTINUE, line);
    } else if (!strcmp(tag, "include") || !strcmp(tag, "import") || !strcmp(tag, "from") ||
               !strcmp(tag, "extends")) {
        jpfail(P->px, -SL_EUNSUPPORTED, line, "'%s' is not supported: a chat template cannot load others", tag);
    } else {
        P->n_tags--;
        fail_tag(P, tag, line);
    }
    P->n_tags--;
    leave(P);
    return n;
}

static jnode *subparse(jparser *P, const char *const *end_tags)
{
    jnode *body = node(P, S_BODY, cur(P)->line);
    nvec kids = {0};
    for (;;) {
        jtoken *t = cur(P);
        if (t->type == TK_EOF)
            break;
        if (t->type == TK_TEXT) {
            next(P);
            jnode *n = node(P, S_TEXT, t->line);
            n->str = t->p;
            n->slen = t->n;
            nvec_push(P, &kids, n);
        } else if (t->type == TK_VAR_BEGIN) {
            next(P);
            jnode *n = node(P, S_OUTPUT, t->line);
            n->a = parse_tuple(P, false, true, NULL, false, false);
            expect_type(P, TK_VAR_END, "end of print statement");
            nvec_push(P, &kids, n);
        } else if (t->type == TK_BLOCK_BEGIN) {
            next(P);
            jtoken *name = cur(P);
            bool is_end = false;
            for (const char *const *e = end_tags; e && *e && name->type == TK_NAME; e++)
                is_end |= !strcmp(name->p, *e);
            if (is_end)
                break;
            nvec_push(P, &kids, parse_statement(P));
            expect_type(P, TK_BLOCK_END, "end of statement block");
        } else {
            fail_unexpected(P);
        }
    }
    body->kids = kids.v;
    body->nkids = kids.n;
    return body;
}

int jinja_parse(sl_template *t, const char *src, size_t len, char *err, size_t err_size)
{
    jpctx px = {.t = t, .err = err, .err_size = err_size};
    if (setjmp(px.jb))
        return px.code;
    jparser P = {.px = &px, .t = t};
    t->id_loop = intern(&P, "loop", 4);
    t->id_varargs = intern(&P, "varargs", 7);
    t->id_kwargs = intern(&P, "kwargs", 6);
    t->id_caller = intern(&P, "caller", 6);
    jinja_lex(&px, src, len, &P.tk, &P.n);
    t->root = subparse(&P, NULL);
    if (cur(&P)->type != TK_EOF)
        fail_unexpected(&P);
    /* the globals a name may refer to, resolved once */
    t->global_of = jpalloc(&px, (t->n_names + 1) * sizeof *t->global_of);
    for (uint32_t i = 0; i < t->n_names; i++)
        t->global_of[i] = jinja_global_index(t->names[i]);
    return 0;
}
