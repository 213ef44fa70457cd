/* Internals of the chat-template interpreter, shared by chat/jinja_*.c and
 * chat/template.c. Not a public interface: chat/template.h is.
 *
 * The interpreter implements the part of Jinja that model chat templates
 * use, with the semantics of Python's jinja2 as the model hubs configure it
 * (sandboxed and immutable, trim_blocks and lstrip_blocks on, the
 * loopcontrols extension, tojson without ASCII escaping).
 *
 * Memory: everything a parse creates (tokens, nodes, interned names) lives in
 * the template's arena; everything a render creates (values, scopes,
 * captured output) lives in a per-render arena, freed in one go when the
 * render ends. No value is ever freed on its own, so values share freely
 * (strings point into the template, into the caller's cJSON tree or into
 * the arena) and no reference counting is needed. Each arena has a byte cap.
 *
 * Errors: the lexer, the parser and the evaluator report an error by
 * longjmp-ing back to their entry point (jinja_parse, jinja_render) with the
 * message in the context. This is safe because nothing between the entry
 * point and the failure owns memory outside the arena (the one malloc'd
 * output buffer is reachable from the context and freed at the entry point),
 * and it keeps the hundreds of evaluation paths free of error plumbing. */
#ifndef SL_CHAT_JINJA_H
#define SL_CHAT_JINJA_H

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat/template.h"

/* ---- arena ---------------------------------------------------------------- */

typedef struct jchunk jchunk;
typedef struct jarena {
    jchunk *head;
    size_t used; /* bytes taken from malloc, chunks included */
    size_t cap;  /* bound on `used` */
    char *last, *last_end; /* the newest allocation in the head chunk and the end of its bytes */
} jarena;

/* n bytes, 16-aligned, zeroed; NULL when the cap would be passed or malloc fails. */
void *jarena_alloc(jarena *a, size_t n);
/* Grows the newest allocation, whose bytes are [p, end), by `more` bytes in
 * place when the head chunk has room; false (nothing changed) otherwise.
 * This makes chains of string `+` linear instead of quadratic. */
bool jarena_grow_last(jarena *a, const char *p, const char *end, size_t more);
void jarena_free(jarena *a);

/* ---- values --------------------------------------------------------------- */

typedef enum jtype {
    JT_ABSENT = 0, /* an argument that was not given (never stored in data) */
    JT_UNDEF,      /* Jinja's Undefined: renders as "", fails when used */
    JT_NONE,
    JT_BOOL,
    JT_INT,
    JT_FLOAT,
    JT_STR,
    JT_LIST,
    JT_TUPLE,
    JT_DICT,
    JT_NS,     /* namespace(): a dict whose attributes `set` may assign */
    JT_MACRO,  /* a macro, or the caller of a call block */
    JT_FUNC,   /* a global function (aux: its index) */
    JT_METHOD, /* a bound method of a str, list or dict (aux: its index) */
    JT_LOOP,   /* the `loop` variable of a for loop */
    JT_JOINER,
    JT_CYCLER,
} jtype;

typedef struct jlist jlist;
typedef struct jdict jdict;
typedef struct jmacro jmacro;
typedef struct jundef jundef;
typedef struct jbound jbound;
typedef struct jloop jloop;

typedef struct jval {
    uint8_t t;    /* jtype */
    uint8_t view; /* lists: JV_VIEW_* (how Python would print them) */
    uint32_t aux; /* JT_FUNC / JT_METHOD: table index; JT_STR: 1 when known ASCII-only */
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            const char *p;
            size_t n;
        } s;
        jlist *l; /* JT_LIST, JT_TUPLE */
        jdict *d; /* JT_DICT, JT_NS */
        jmacro *m;
        jundef *u; /* NULL: plain undefined */
        jbound *bm;
        jloop *lp;
        void *ptr; /* JT_JOINER, JT_CYCLER state */
    } u;
} jval;

enum { JV_VIEW_NONE = 0, JV_VIEW_ITEMS, JV_VIEW_KEYS, JV_VIEW_VALUES };

struct jlist {
    size_t n, cap;
    jval *v;
};

/* Insertion-ordered; keys compare with Python equality. */
struct jdict {
    size_t n, cap;
    jval *k, *v;
};

/* Why a value is undefined, for the message when it is used. */
struct jundef {
    const char *hint; /* a complete message, or NULL */
    const char *name; /* the missing name or attribute (NUL-terminated) */
    jval obj;         /* JT_ABSENT: a missing variable; else the object lacking it */
    jval key;         /* a missing non-string key (an index) */
};

/* A method bound to its object. */
struct jbound {
    jval self;
    const char *name; /* for messages */
};

/* ---- templates: tokens, nodes ------------------------------------------------ */

typedef struct jnode jnode;

typedef enum jkind {
    /* expressions */
    E_CONST = 1, /* lit */
    E_NAME,      /* id */
    E_LIST,      /* kids */
    E_TUPLE,     /* kids */
    E_DICT,      /* kids: key0, value0, key1, ... */
    E_ATTR,      /* a.str */
    E_ITEM,      /* a[b] (b may be E_SLICE) */
    E_SLICE,     /* kids[0..2]: start, stop, step, each possibly NULL */
    E_CALL,      /* a(kids...): npos positional, then keyword values named by names[] */
    E_FILTER,    /* a | id(kids...) (a NULL: the block's captured text); id < 0: unknown */
    E_TEST,      /* a is id(kids...); op: 1 when negated ("is not") */
    E_NOT,
    E_NEG,
    E_POS,
    E_BIN,    /* a op b; op: jbinop */
    E_AND,    /* a and b */
    E_OR,     /* a or b */
    E_CONCAT, /* kids joined with ~ */
    E_CMP,    /* a ops[i] kids[i] ... (chained) */
    E_COND,   /* b if a else c (c may be NULL) */
    E_BLOCKVAL, /* the captured body of a filter block / set block */
    /* assignment targets */
    T_NAME,  /* id */
    T_TUPLE, /* kids */
    T_NSATTR, /* id . str */
    /* statements */
    S_BODY,   /* kids */
    S_TEXT,   /* str */
    S_OUTPUT, /* a */
    S_IF,     /* if a: body, else: orelse (an elif is an S_IF alone in orelse) */
    S_FOR,    /* for a in b [if c]: body, else orelse; op: 1 when recursive */
    S_SET,    /* a = b */
    S_SETBLOCK, /* a = body, through filter chain c (may be NULL) */
    S_MACRO,  /* id(names[] with defaults kids[] (NULL: none)): body */
    S_CALLBLOCK, /* call(names[] defaults kids[]) a: body */
    S_FILTERBLOCK, /* filter chain a over body */
    S_WITH,   /* names[i] = kids[i] ...: body */
    S_BREAK,
    S_CONTINUE,
} jkind;

typedef enum jbinop { OP_ADD = 1, OP_SUB, OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, OP_POW } jbinop;
typedef enum jcmpop { CMP_EQ = 1, CMP_NE, CMP_LT, CMP_LE, CMP_GT, CMP_GE, CMP_IN, CMP_NOTIN } jcmpop;

struct jnode {
    uint8_t kind;  /* jkind */
    uint8_t op;    /* jbinop, negation, recursion flag */
    uint16_t flags; /* S_MACRO / S_CALLBLOCK: JN_USES_* */
    uint32_t line;
    int32_t id;   /* name id, filter or test index */
    uint32_t nkids;
    uint32_t npos; /* E_CALL, E_FILTER, E_TEST: positional arguments among kids */
    jnode *a, *b, *c;
    jnode **kids;
    uint32_t *names; /* E_CALL, E_FILTER, E_TEST: keyword names; macro / with: parameter names */
    uint8_t *ops;    /* E_CMP: one jcmpop per kid */
    jnode *body, *orelse;
    const char *str; /* E_ATTR / T_NSATTR attribute, S_TEXT text (NUL-terminated) */
    size_t slen;
    jval lit;        /* E_CONST */
};

enum { JN_USES_VARARGS = 1, JN_USES_KWARGS = 2, JN_USES_CALLER = 4 };

/* A parsed template (the public sl_template). */
struct sl_template {
    jarena arena;
    jnode *root; /* S_BODY */
    /* interned identifiers: names[id], NUL-terminated, with a hash index */
    char **names;
    uint32_t n_names, cap_names;
    uint32_t *hash; /* open addressing, hash_cap slots, UINT32_MAX = empty */
    uint32_t hash_cap;
    int32_t *global_of; /* per id: global function index or -1 (filled after parsing) */
    /* ids of the names the evaluator binds itself */
    uint32_t id_loop, id_varargs, id_kwargs, id_caller;
    sl_template_limits lim;
};

typedef enum jtok {
    TK_EOF = 0,
    TK_TEXT,        /* template data, whitespace control already applied */
    TK_VAR_BEGIN,   /* {{ */
    TK_VAR_END,     /* }} */
    TK_BLOCK_BEGIN, /* {% */
    TK_BLOCK_END,   /* %} */
    TK_NAME,
    TK_STRING, /* p/n: the decoded value */
    TK_INT,
    TK_FLOAT,
    TK_OP, /* op: one of the characters below, or a two-character code */
} jtok;

/* Two-character operators as TK_OP codes (single characters stand for themselves). */
enum { TOP_FLOORDIV = 256, TOP_POW, TOP_EQ, TOP_NE, TOP_LE, TOP_GE };

typedef struct jtoken {
    uint8_t type;
    uint16_t op;
    uint32_t line;
    const char *p; /* text, name or decoded string (NUL-terminated) */
    size_t n;
    int64_t i;
    double f;
} jtoken;

/* Parse-time context: the template under construction and where errors go. */
typedef struct jpctx {
    sl_template *t;
    jmp_buf jb;
    int code;
    char *err;
    size_t err_size;
} jpctx;

/* Fails the parse with "line N: message". */
_Noreturn void jpfail(jpctx *px, int code, uint32_t line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void *jpalloc(jpctx *px, size_t n);

/* Splits the source into tokens (the array lives in the template's arena),
 * applying the hub's whitespace rules. Fails through px. */
void jinja_lex(jpctx *px, const char *src, size_t len, jtoken **toks, size_t *ntoks);

/* Parses `src`; fills t (whose arena and limits are set up). Returns 0, or
 * a negative sl_err with the message in err. */
int jinja_parse(sl_template *t, const char *src, size_t len, char *err, size_t err_size);

/* Interns a name into t (parse time). Returns its id. NULL on arena overflow. */
int64_t jinja_intern(sl_template *t, const char *p, size_t n);
/* Id of a name, or -1 when the template never mentions it. */
int64_t jinja_name_id(const sl_template *t, const char *p, size_t n);

/* ---- rendering -------------------------------------------------------------- */

/* An output buffer. Top-level output grows with realloc (freed by the
 * render entry point); captures grow inside the arena. */
typedef struct jbuf {
    char *p;
    size_t n, cap;
    bool heap;
} jbuf;

typedef struct jframe jframe;

typedef struct jctx {
    const sl_template *t;
    jarena arena;
    jmp_buf jb;
    int err_code;
    char *err;
    size_t err_size;
    uint32_t line; /* of the node being evaluated, for messages */
    uint64_t steps;
    uint32_t depth;
    jval *ctxvars; /* per name id: the render's variables (JT_ABSENT when not given) */
    jbuf *out;     /* where output goes now */
    jbuf *top;     /* the render's result */
    jval blockval; /* the captured body a filter block's chain applies to */
} jctx;

/* Fails the render: formats the message (prefixed with the line for
 * runtime errors) and unwinds to the entry point with `code`. */
_Noreturn void jfail(jctx *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* raise_exception(): the message exactly, -SL_EINVAL. */
_Noreturn void jraise(jctx *c, const char *msg, size_t n);
/* Fails with the message an undefined value gives when it is used. */
_Noreturn void jfail_undef(jctx *c, jval v);

/* Renders t with the variables of vars into a malloc'd string. */
int jinja_render(const sl_template *t, const void *vars_cjson, char **out, size_t *out_len, char *err,
                 size_t err_size);

/* ---- value helpers (jinja_value.c) ------------------------------------------------ */

void *jalloc(jctx *c, size_t n); /* fails the render when the memory cap is hit */
void jstep(jctx *c);             /* counts an evaluation step; fails past the cap */

void jbuf_put(jctx *c, jbuf *b, const char *p, size_t n);
void jbuf_putc(jctx *c, jbuf *b, char ch);
void jbuf_puts(jctx *c, jbuf *b, const char *s);
void jbuf_printf(jctx *c, jbuf *b, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
jval jbuf_take(jctx *c, jbuf *b); /* the buffer's bytes as a string value */

static inline jval jv_absent(void) { jval v = {0}; v.t = JT_ABSENT; return v; }
static inline jval jv_none(void) { jval v = {0}; v.t = JT_NONE; return v; }
static inline jval jv_bool(bool b) { jval v = {0}; v.t = JT_BOOL; v.u.b = b; return v; }
static inline jval jv_int(int64_t i) { jval v = {0}; v.t = JT_INT; v.u.i = i; return v; }
static inline jval jv_float(double f) { jval v = {0}; v.t = JT_FLOAT; v.u.f = f; return v; }
static inline jval jv_str(const char *p, size_t n) { jval v = {0}; v.t = JT_STR; v.u.s.p = p; v.u.s.n = n; return v; }
static inline jval jv_undef(void) { jval v = {0}; v.t = JT_UNDEF; return v; }
jval jv_cstr(const char *s);
jval jv_strdup(jctx *c, const char *p, size_t n);
/* An undefined value that remembers what was missing. */
jval jv_undef_name(jctx *c, const char *name);
jval jv_undef_attr(jctx *c, jval obj, const char *name);
jval jv_undef_item(jctx *c, jval obj, jval key);
jval jv_undef_hint(jctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

jval jv_list(jctx *c, size_t cap);          /* empty list */
jval jv_tuple(jctx *c, size_t cap);         /* empty tuple */
void jlist_push(jctx *c, jlist *l, jval v);
jval jv_dict(jctx *c, size_t cap);
jval *jdict_get(jctx *c, const jdict *d, jval key); /* NULL when absent */
jval *jdict_get_str(const jdict *d, const char *p, size_t n);
void jdict_set(jctx *c, jdict *d, jval key, jval v);

bool jv_truthy(jval v);
bool jv_is_num(jval v); /* bool, int or float */
double jv_num(jval v);  /* as a double (bool, int, float) */
bool jv_eq(jctx *c, jval a, jval b);
/* Python ordering: <0, 0, >0; fails for types that do not order. */
int jv_cmp(jctx *c, jval a, jval b);
/* Python's type name ("str", "int", "NoneType", "dict", ...). */
const char *jv_type_name(jval v);
/* "str object", "None", ... as Jinja prints in undefined-value messages. */
const char *jv_object_name(jval v);

/* Python str(v) appended to b. */
void jv_str_into(jctx *c, jbuf *b, jval v);
/* Python repr(v) appended to b. */
void jv_repr_into(jctx *c, jbuf *b, jval v);
/* str(v) as a string value (strings return themselves). */
jval jv_to_str(jctx *c, jval v);

typedef struct jjson_opts {
    const char *indent; /* NULL: one line */
    const char *item_sep, *key_sep;
    bool sort_keys, ensure_ascii;
} jjson_opts;
/* json.dumps(v) appended to b. */
void jv_tojson_into(jctx *c, jbuf *b, jval v, const jjson_opts *o);

/* A cJSON tree as values (strings point into the tree). */
jval jv_from_cjson(jctx *c, const void *cjson);

/* Iteration as Python's iter(): the items (dict: keys; str: characters) as a list. */
jlist *jv_iterate(jctx *c, jval v);

/* Python float repr ("0.1", "1e-05", "1.0", "inf") into buf (>= 32 bytes). */
void jfmt_float(double d, char *buf, size_t size);

/* ---- UTF-8 / Unicode (jinja_value.c) ---- */
/* Decodes one code point at p (n > 0 bytes); an invalid byte decodes as
 * itself with length 1. Returns the length. */
size_t jutf8_dec(const char *p, size_t n, uint32_t *cp);
size_t jutf8_enc(uint32_t cp, char *out); /* 1..4 bytes */
bool jpy_isspace(uint32_t cp);
size_t jstr_len(jval s); /* code points */
uint32_t jcase_upper(uint32_t cp);
uint32_t jcase_lower(uint32_t cp);
bool jcase_isupper(uint32_t cp);
bool jcase_islower(uint32_t cp);
bool jis_alpha(uint32_t cp);
bool jis_digit(uint32_t cp);

/* ---- builtins (jinja_filters.c, jinja_methods.c) ------------------------------------- */

typedef struct jargs {
    size_t npos, nkw;
    jval *pos;
    const char **kwname;
    jval *kw;
} jargs;

/* Index of the filter / test / global named so, or -1. */
int jinja_filter_index(const char *name);
int jinja_test_index(const char *name);
int jinja_global_index(const char *name);
/* Whether `name` is a filter / test Python's jinja2 has (for the message
 * when sluice lacks it). */
bool jinja_filter_known(const char *name);

jval jinja_filter_call(jctx *c, int idx, jval v, const jargs *a);
bool jinja_test_call(jctx *c, int idx, jval v, const jargs *a);
jval jinja_global_call(jctx *c, int idx, const jargs *a);
/* v.name for the attributes Python objects have (methods of str, list and
 * dict; a dict's keys are looked up by the caller). Returns JT_ABSENT when v
 * has no such attribute. */
jval jinja_method_get(jctx *c, jval v, const char *name);
jval jinja_method_call(jctx *c, jval m, const jargs *a);
jval jinja_joiner_call(jctx *c, jval j, const jargs *a);
jval jinja_cycler_attr(jctx *c, jval cy, const char *name);
/* Calls a cycler's next() or reset() (a JT_METHOD bound to the cycler). */
jval jinja_cycler_call(jctx *c, jval m, const jargs *a);

/* Binds a builtin's arguments to its parameter names: out[i] is the i-th
 * parameter's value or JT_ABSENT. Fails on unknown keywords or extra
 * positional arguments, naming `fn`. */
void jbind(jctx *c, const char *fn, const jargs *a, const char *const *params, size_t np, jval *out);
#define BIND(fn, a, out, ...)                                                                  \
    do {                                                                                       \
        static const char *const params_[] = {__VA_ARGS__};                                    \
        jbind(c, fn, a, params_, sizeof params_ / sizeof params_[0], out);                     \
    } while (0)
static inline bool jgiven(jval v) { return v.t != JT_ABSENT; }
/* An argument that must be an int (bool counts) / a str; fails naming `what`. */
int64_t jwant_int(jctx *c, jval v, const char *what);
jval jwant_str(jctx *c, jval v, const char *what);
/* Fails when a builtin that takes no arguments got some. */
void jno_args(jctx *c, const char *name, const jargs *a);

/* ---- Python's str (jinja_methods.c) ---- */
jval jstr_case(jctx *c, jval s, int mode); /* 0 lower, 1 upper, 2 swapcase */
jval jstr_capitalize(jctx *c, jval s);      /* str.capitalize() */
jval jstr_title_words(jctx *c, jval s);     /* Jinja's `title` filter */
/* strip / lstrip / rstrip; chars JT_ABSENT or None: whitespace. */
jval jstr_strip(jctx *c, jval s, jval chars, bool left, bool right);
jval jstr_split(jctx *c, jval s, jval sep, jval maxsplit, bool from_right); /* split / rsplit */
jval jstr_splitlines(jctx *c, jval s, bool keepends);
jval jstr_replace(jctx *c, jval s, jval old, jval rep, int64_t count); /* count < 0: all */
jval jstr_pad(jctx *c, jval s, int64_t width, jval fill, int where); /* -1 ljust, 0 center, 1 rjust */
bool jstr_case_is(jval s, bool want_lower); /* islower / isupper */
/* d.items() / keys() / values() as a list printed the way Python prints the view. */
jval jdict_view(jctx *c, jval d, int view);

/* Python's `%` on a string (jinja_methods.c). */
jval jinja_percent_format(jctx *c, jval fmt, jval args);

/* ---- evaluator services used by builtins (jinja_eval.c) ---------------------------- */
/* obj.name (name NUL-terminated). */
jval jinja_getattr(jctx *c, jval obj, const char *name);
jval jinja_getitem(jctx *c, jval obj, jval key);
/* obj[start:stop:step] with Python's rules (JT_ABSENT or None: omitted). */
jval jinja_slice(jctx *c, jval obj, jval start, jval stop, jval step);
/* Python's `item in container`. */
bool jinja_contains(jctx *c, jval container, jval item);
/* Calls any callable value. */
jval jinja_call_value(jctx *c, jval fn, const jargs *a);

#endif
