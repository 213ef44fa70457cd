/* Packing and hardened unpacking of protocol messages; see msg.h for the
 * wire format.
 *
 * Packing uses msgpack-c's packer over a fixed caller buffer. Unpacking does
 * not use msgpack-c's unpacker: that one builds a tree of msgpack_object in
 * a zone with no limit on element counts or memory (a message of 8 MiB of
 * one-byte elements costs some 200 MB of zone), while the protocol needs
 * views into the received bytes, no allocation, and a bound on every count.
 * The small reader below decodes the msgpack format (a public spec) one item
 * at a time, checking every length against the bytes that remain.
 *
 * Both directions are driven by one table of fields per message type, so
 * what is packed is exactly what is unpacked. */
#include "proto/msg.h"

#include <float.h>
#include <math.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"

/* ---------------------------------------------------------------- fields */

enum kind {
    K_U64, /* uint in [lo, hi] */
    K_U32, /* uint in [lo, hi] */
    K_I32, /* int in [lo, hi] */
    K_F32, /* float that fits a float */
    K_BOOL,
    K_STR,    /* str or bin, <= hi bytes; written as str */
    K_BYTES,  /* str or bin, <= hi bytes; written as bin */
    K_NAME,   /* str without NUL, <= hi bytes */
    K_IDS,    /* array of token ids, <= hi entries */
    K_ROLE,   /* enum sl_msg_role, lo .. hi allowed */
    K_FINISH, /* enum sl_msg_finish */
    K_SEGS,   /* welcome.segs: array of names */
    K_FIELDS, /* event.f */
};

#define F_REQ 1u    /* must be present */
#define F_ALWAYS 2u /* optional when reading, always written */

typedef struct fdesc {
    const char *key;
    uint8_t kind;
    uint8_t flags;
    uint16_t off; /* offset in sl_msg */
    int64_t lo;
    uint64_t hi;
} fdesc;

#define OFF(f) ((uint16_t)offsetof(sl_msg, f))
#define REQ_ID                                                                                               \
    {                                                                                                        \
        "id", K_U64, F_REQ, OFF(id), 1, UINT64_MAX                                                           \
    }
#define U32_ALL 0, UINT32_MAX
#define U64_ALL 0, UINT64_MAX
#define I32_ALL INT32_MIN, INT32_MAX

static const fdesc f_generate[] = {
    REQ_ID,
    {"prompt", K_STR, 0, OFF(generate.prompt), 0, SL_PROTO_MAX_TEXT},
    {"tokens", K_IDS, 0, OFF(generate.tokens), 0, SL_PROTO_MAX_TOKENS},
    {"n_predict", K_U32, F_REQ, OFF(generate.n_predict), 0, SL_PROTO_MAX_TOKENS},
    {"temperature", K_F32, F_ALWAYS, OFF(generate.sampling.temperature), 0, 0},
    {"top_k", K_I32, F_ALWAYS, OFF(generate.sampling.top_k), I32_ALL},
    {"top_p", K_F32, F_ALWAYS, OFF(generate.sampling.top_p), 0, 0},
    {"min_p", K_F32, F_ALWAYS, OFF(generate.sampling.min_p), 0, 0},
    {"repeat_penalty", K_F32, F_ALWAYS, OFF(generate.sampling.repeat_penalty), 0, 0},
    {"repeat_last_n", K_I32, F_ALWAYS, OFF(generate.sampling.penalty_last_n), I32_ALL},
    {"presence_penalty", K_F32, F_ALWAYS, OFF(generate.sampling.presence_penalty), 0, 0},
    {"frequency_penalty", K_F32, F_ALWAYS, OFF(generate.sampling.frequency_penalty), 0, 0},
    {"seed", K_U64, F_ALWAYS, OFF(generate.sampling.seed), U64_ALL},
    {"add_bos", K_BOOL, F_ALWAYS, OFF(generate.add_bos), 0, 0},
    {"resume_from", K_U64, 0, OFF(generate.resume_from), U64_ALL},
};
static const fdesc f_tokenize[] = {
    REQ_ID,
    {"text", K_STR, F_REQ, OFF(tokenize.text), 0, SL_PROTO_MAX_TEXT},
    {"add_bos", K_BOOL, F_ALWAYS, OFF(tokenize.add_bos), 0, 0},
    {"special", K_BOOL, 0, OFF(tokenize.special), 0, 0},
};
static const fdesc f_detokenize[] = {
    REQ_ID,
    {"tokens", K_IDS, F_REQ, OFF(detokenize.tokens), 0, SL_PROTO_MAX_TOKENS},
    {"special", K_BOOL, 0, OFF(detokenize.special), 0, 0},
};
static const fdesc f_id_only[] = {REQ_ID};
static const fdesc f_token[] = {
    REQ_ID,
    {"seq", K_U64, F_REQ, OFF(token.seq), U64_ALL},
    {"tok", K_I32, F_REQ, OFF(token.tok), -1, INT32_MAX},
    {"text", K_BYTES, F_REQ, OFF(token.text), 0, SL_PROTO_MAX_TEXT},
    {"finish", K_FINISH, 0, OFF(token.finish), SL_FINISH_STOP, SL_FINISH_ERROR},
    {"n_prompt", K_U32, 0, OFF(token.n_prompt), U32_ALL},
    {"n_gen", K_U32, 0, OFF(token.n_gen), U32_ALL},
};
static const fdesc f_tokens[] = {
    REQ_ID,
    {"tokens", K_IDS, F_REQ, OFF(tokens), 0, SL_PROTO_MAX_TOKENS},
};
static const fdesc f_text[] = {
    REQ_ID,
    {"text", K_BYTES, F_REQ, OFF(text), 0, SL_PROTO_MAX_TEXT},
};
static const fdesc f_status_reply[] = {
    REQ_ID,
    {"model", K_STR, F_REQ, OFF(status_reply.model), 0, SL_PROTO_MAX_NAME},
    {"n_ctx", K_U32, 0, OFF(status_reply.n_ctx), U32_ALL},
    {"n_vocab", K_U32, 0, OFF(status_reply.n_vocab), U32_ALL},
    {"sessions", K_U32, 0, OFF(status_reply.sessions), U32_ALL},
    {"max_sessions", K_U32, 0, OFF(status_reply.max_sessions), U32_ALL},
    {"loaders", K_U32, 0, OFF(status_reply.loaders), U32_ALL},
    {"workers", K_U32, 0, OFF(status_reply.workers), U32_ALL},
    {"mem_budget", K_U64, 0, OFF(status_reply.mem_budget), U64_ALL},
    {"mem_used", K_U64, 0, OFF(status_reply.mem_used), U64_ALL},
    {"pinned", K_U64, 0, OFF(status_reply.pinned), U64_ALL},
    {"epoch", K_U64, 0, OFF(status_reply.epoch), U64_ALL},
};
static const fdesc f_budget[] = {
    REQ_ID,
    {"bytes", K_U64, F_REQ, OFF(budget), 1, UINT64_MAX},
};
static const fdesc f_budget_reply[] = {
    REQ_ID,
    {"mem_budget", K_U64, 0, OFF(budget_reply.mem_budget), U64_ALL},
    {"mem_used", K_U64, 0, OFF(budget_reply.mem_used), U64_ALL},
    {"pinned", K_U64, 0, OFF(budget_reply.pinned), U64_ALL},
    {"streamed", K_U64, 0, OFF(budget_reply.streamed), U64_ALL},
    {"min_budget", K_U64, 0, OFF(budget_reply.min_budget), U64_ALL},
};
static const fdesc f_error[] = {
    {"id", K_U64, 0, OFF(id), U64_ALL},
    {"code", K_U32, F_REQ, OFF(error.code), 1, UINT32_MAX},
    {"msg", K_STR, F_REQ, OFF(error.msg), 0, SL_PROTO_MAX_ERRMSG},
};
static const fdesc f_register[] = {
    {"role", K_ROLE, F_REQ, OFF(reg.role), SL_MSG_ROLE_LOADER, SL_MSG_ROLE_COMPUTE},
    {"pid", K_U32, F_REQ, OFF(reg.pid), 1, INT32_MAX},
    {"name", K_NAME, F_REQ, OFF(reg.name), 0, SL_PROTO_MAX_NAME},
    {"threads", K_U32, 0, OFF(reg.threads), U32_ALL},
    {"caps", K_U64, 0, OFF(reg.caps), U64_ALL},
    {"wid", K_U32, 0, OFF(reg.wid), U32_ALL},
};
static const fdesc f_welcome[] = {
    {"wid", K_U32, F_REQ, OFF(welcome.wid), 1, UINT32_MAX},
    {"epoch", K_U64, F_REQ, OFF(welcome.epoch), U64_ALL},
    {"instance", K_NAME, F_REQ, OFF(welcome.instance), 0, SL_PROTO_MAX_NAME},
    {"segs", K_SEGS, F_REQ, OFF(welcome.n_segs), 0, SL_PROTO_MAX_SEGS},
    {"hb_ms", K_U32, F_ALWAYS, OFF(welcome.hb_ms), 1, 3600000},
};
static const fdesc f_heartbeat[] = {
    {"role", K_ROLE, F_REQ, OFF(heartbeat.role), SL_MSG_ROLE_LOADER, SL_MSG_ROLE_COORDINATOR},
    {"pid", K_U32, F_REQ, OFF(heartbeat.pid), 1, INT32_MAX},
    {"wid", K_U32, 0, OFF(heartbeat.wid), U32_ALL},
    {"epoch", K_U64, 0, OFF(heartbeat.epoch), U64_ALL},
    {"jobs", K_U64, 0, OFF(heartbeat.jobs), U64_ALL},
    {"bytes", K_U64, 0, OFF(heartbeat.bytes), U64_ALL},
    {"errors", K_U64, 0, OFF(heartbeat.errors), U64_ALL},
    {"rss", K_U64, 0, OFF(heartbeat.rss), U64_ALL},
};
static const fdesc f_event[] = {
    {"kind", K_NAME, F_REQ, OFF(event.kind), 0, SL_PROTO_MAX_KIND},
    {"seq", K_U64, 0, OFF(event.seq), U64_ALL},
    {"ts", K_U64, 0, OFF(event.ts), U64_ALL},
    {"f", K_FIELDS, 0, OFF(event.n_fields), 0, SL_PROTO_MAX_FIELDS},
};

typedef struct tdesc {
    const char *name;
    const fdesc *fields;
    unsigned n_fields;
} tdesc;

#define T(name, f)                                                                                           \
    {                                                                                                        \
        name, f, sizeof f / sizeof f[0]                                                                      \
    }
static const tdesc g_types[SL_MSG_TYPE_COUNT] = {
    [SL_MSG_NONE] = {"?", NULL, 0},
    [SL_MSG_GENERATE] = T("generate", f_generate),
    [SL_MSG_TOKENIZE] = T("tokenize", f_tokenize),
    [SL_MSG_DETOKENIZE] = T("detokenize", f_detokenize),
    [SL_MSG_CANCEL] = T("cancel", f_id_only),
    [SL_MSG_STATUS] = T("status", f_id_only),
    [SL_MSG_TOKEN] = T("token", f_token),
    [SL_MSG_TOKENS] = T("tokens", f_tokens),
    [SL_MSG_TEXT] = T("text", f_text),
    [SL_MSG_STATUS_REPLY] = T("status_reply", f_status_reply),
    [SL_MSG_ERROR] = T("error", f_error),
    [SL_MSG_REGISTER] = T("register", f_register),
    [SL_MSG_WELCOME] = T("welcome", f_welcome),
    [SL_MSG_HEARTBEAT] = T("heartbeat", f_heartbeat),
    [SL_MSG_EVENT] = T("event", f_event),
    [SL_MSG_BUDGET] = T("budget", f_budget),
    [SL_MSG_BUDGET_REPLY] = T("budget_reply", f_budget_reply),
};
#undef T

static const char *const g_roles[] = {"", "loader", "compute", "coordinator"};
static const char *const g_finish[] = {"", "stop", "length", "cancel", "error"};

/* Fields per type fit the `seen` bitmask of the decoder. */
_Static_assert(sizeof f_generate / sizeof f_generate[0] <= 32, "too many fields");

const char *sl_msg_type_name(sl_msg_type type)
{
    return (unsigned)type < SL_MSG_TYPE_COUNT ? g_types[type].name : "?";
}

static bool str_eq(const char *ptr, size_t len, const char *lit)
{
    return strlen(lit) == len && memcmp(ptr, lit, len) == 0;
}

sl_msg_type sl_msg_type_from_name(const char *name, size_t len)
{
    for (unsigned t = 1; t < SL_MSG_TYPE_COUNT; t++)
        if (str_eq(name, len, g_types[t].name))
            return (sl_msg_type)t;
    return SL_MSG_NONE;
}

sl_msg_str sl_msg_cstr(const char *s)
{
    sl_msg_str r = {s, s ? strlen(s) : 0};
    return r;
}

int sl_msg_str_copy(sl_msg_str s, char *buf, size_t cap)
{
    if (cap == 0)
        return -SL_ERANGE;
    buf[0] = 0;
    if (s.len >= cap || (s.len && memchr(s.ptr, 0, s.len)))
        return -SL_ERANGE;
    if (s.len)
        memcpy(buf, s.ptr, s.len);
    buf[s.len] = 0;
    return 0;
}

void sl_msg_init(sl_msg *m, sl_msg_type type)
{
    SL_ASSERT(type > SL_MSG_NONE && type < SL_MSG_TYPE_COUNT);
    memset(m, 0, sizeof *m);
    m->type = type;
    m->version = SL_PROTO_VERSION;
    switch (type) {
    case SL_MSG_GENERATE:
        sl_sampler_params_default(&m->generate.sampling);
        m->generate.add_bos = true;
        break;
    case SL_MSG_TOKENIZE:
        m->tokenize.add_bos = true;
        break;
    case SL_MSG_WELCOME:
        m->welcome.hb_ms = SL_PROTO_HEARTBEAT_MS;
        break;
    default:
        break;
    }
}

void sl_msg_error_init(sl_msg *m, uint64_t id, int err, const char *msg)
{
    sl_msg_init(m, SL_MSG_ERROR);
    m->id = id;
    m->error.code = (uint32_t)(err < 0 ? -err : err);
    if (m->error.code == 0)
        m->error.code = SL_EINVAL;
    m->error.msg = sl_msg_cstr(msg ? msg : "");
    if (m->error.msg.len > SL_PROTO_MAX_ERRMSG)
        m->error.msg.len = SL_PROTO_MAX_ERRMSG;
}

/* ---------------------------------------------------------------- reader */

enum tag { T_NIL, T_BOOL, T_INT, T_FLOAT, T_STR, T_BIN, T_ARRAY, T_MAP, T_EXT };

static const char *const g_tag_names[] = {"nil", "bool", "int", "float", "str", "bin", "array", "map", "ext"};

typedef struct item {
    enum tag tag;
    bool neg;           /* T_INT: the value is i (< 0); else u */
    bool b;             /* T_BOOL */
    uint64_t u;         /* T_INT, >= 0 */
    int64_t i;          /* T_INT, < 0 */
    double f;           /* T_FLOAT */
    const uint8_t *ptr; /* T_STR, T_BIN, T_EXT: the bytes */
    uint32_t len;       /* T_STR, T_BIN, T_EXT: byte count; T_ARRAY: elements; T_MAP: pairs */
} item;

typedef struct rd {
    const uint8_t *p, *end;
} rd;

static uint64_t be(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned k = 0; k < n; k++)
        v = v << 8 | p[k];
    return v;
}

/* Reads one item: scalars and the payload of str/bin/ext whole, arrays and
 * maps only their header (their count checked against what remains: every
 * element takes at least one byte). -SL_EFORMAT when truncated or invalid. */
static int rd_item(rd *r, item *it)
{
    size_t left = (size_t)(r->end - r->p);
    if (left < 1)
        return -SL_EFORMAT;
    uint8_t b = *r->p++;
    left--;
    memset(it, 0, sizeof *it);
    unsigned n = 0; /* size of the big-endian length or value that follows */
    if (b <= 0x7f) {
        it->tag = T_INT;
        it->u = b;
        return 0;
    }
    if (b >= 0xe0) {
        it->tag = T_INT;
        it->neg = true;
        it->i = (int8_t)b;
        return 0;
    }
    uint64_t len;
    if (b <= 0x8f || (b >= 0xde && b <= 0xdf)) {
        it->tag = T_MAP;
        if (b <= 0x8f)
            len = b & 0x0f;
        else {
            n = b == 0xde ? 2 : 4;
            if (left < n)
                return -SL_EFORMAT;
            len = be(r->p, n);
            r->p += n;
            left -= n;
        }
        if (len > left / 2)
            return -SL_EFORMAT;
        it->len = (uint32_t)len;
        return 0;
    }
    if (b <= 0x9f || (b >= 0xdc && b <= 0xdd)) {
        it->tag = T_ARRAY;
        if (b <= 0x9f)
            len = b & 0x0f;
        else {
            n = b == 0xdc ? 2 : 4;
            if (left < n)
                return -SL_EFORMAT;
            len = be(r->p, n);
            r->p += n;
            left -= n;
        }
        if (len > left)
            return -SL_EFORMAT;
        it->len = (uint32_t)len;
        return 0;
    }
    bool ext = false;
    if (b <= 0xbf) {
        it->tag = T_STR;
        len = b & 0x1f;
        goto payload;
    }
    switch (b) {
    case 0xc0:
        it->tag = T_NIL;
        return 0;
    case 0xc2:
    case 0xc3:
        it->tag = T_BOOL;
        it->b = b == 0xc3;
        return 0;
    case 0xc4:
    case 0xc5:
    case 0xc6:
        it->tag = T_BIN;
        n = 1u << (b - 0xc4);
        break;
    case 0xc7:
    case 0xc8:
    case 0xc9:
        it->tag = T_EXT;
        n = 1u << (b - 0xc7);
        ext = true;
        break;
    case 0xd9:
    case 0xda:
    case 0xdb:
        it->tag = T_STR;
        n = 1u << (b - 0xd9);
        break;
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
        it->tag = T_EXT;
        len = 1u << (b - 0xd4);
        ext = true;
        goto payload;
    case 0xca:
    case 0xcb: {
        n = b == 0xca ? 4 : 8;
        if (left < n)
            return -SL_EFORMAT;
        uint64_t bits = be(r->p, n);
        r->p += n;
        it->tag = T_FLOAT;
        if (n == 4) {
            uint32_t w = (uint32_t)bits;
            float f;
            memcpy(&f, &w, 4);
            it->f = f;
        } else
            memcpy(&it->f, &bits, 8);
        return 0;
    }
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf:
        n = 1u << (b - 0xcc);
        if (left < n)
            return -SL_EFORMAT;
        it->tag = T_INT;
        it->u = be(r->p, n);
        r->p += n;
        return 0;
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3: {
        n = 1u << (b - 0xd0);
        if (left < n)
            return -SL_EFORMAT;
        uint64_t raw = be(r->p, n);
        r->p += n;
        /* Sign-extend from n bytes without shifting into the sign bit. */
        int64_t v;
        if (n == 8)
            memcpy(&v, &raw, 8);
        else if (raw >> (8 * n - 1))
            v = (int64_t)raw - ((int64_t)1 << (8 * n));
        else
            v = (int64_t)raw;
        it->tag = T_INT;
        if (v < 0) {
            it->neg = true;
            it->i = v;
        } else
            it->u = (uint64_t)v;
        return 0;
    }
    default: /* 0xc1: never used */
        return -SL_EFORMAT;
    }
    if (left < n)
        return -SL_EFORMAT;
    len = be(r->p, n);
    r->p += n;
    left -= n;
payload:
    if (ext) { /* the type byte comes before the data */
        if (left < 1)
            return -SL_EFORMAT;
        r->p++;
        left--;
    }
    if (len > left)
        return -SL_EFORMAT;
    it->ptr = r->p;
    it->len = (uint32_t)len;
    r->p += len;
    return 0;
}

/* Skips the elements of an array or map whose header `it` was just read. */
static int rd_skip_body(rd *r, const item *it, int depth)
{
    if (it->tag != T_ARRAY && it->tag != T_MAP)
        return 0;
    if (depth >= SL_PROTO_MAX_DEPTH)
        return -SL_EFORMAT;
    uint64_t n = it->tag == T_MAP ? 2ull * it->len : it->len;
    for (uint64_t k = 0; k < n; k++) {
        item sub;
        int rc = rd_item(r, &sub);
        if (rc == 0)
            rc = rd_skip_body(r, &sub, depth + 1);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int rd_skip(rd *r, int depth)
{
    item it;
    int rc = rd_item(r, &it);
    return rc < 0 ? rc : rd_skip_body(r, &it, depth);
}

uint32_t sl_msg_tokens_get(const sl_msg_tokens *t, int32_t *out, size_t cap)
{
    size_t n = t->n < cap ? t->n : cap;
    if (t->ids) {
        if (n)
            memcpy(out, t->ids, n * sizeof *out);
    } else if (t->packed) {
        rd r = {t->packed, t->packed + t->packed_len}; /* checked by the unpacker */
        for (size_t k = 0; k < n; k++) {
            item it;
            int rc = rd_item(&r, &it);
            SL_ASSERT(rc == 0 && it.tag == T_INT && !it.neg && it.u <= INT32_MAX);
            out[k] = (int32_t)it.u;
        }
    }
    return t->n;
}

/* ---------------------------------------------------------------- decoder */

typedef struct dctx {
    const char *type; /* for messages */
    const char *key;  /* the field being decoded */
    char why[200];
} dctx;

__attribute__((format(printf, 3, 4))) static int fail(dctx *c, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->why, sizeof c->why, fmt, ap);
    va_end(ap);
    return err;
}

static int want(dctx *c, const item *it, enum tag tag)
{
    if (it->tag == tag)
        return 0;
    return fail(c, -SL_ETYPE, "%s.%s: expected %s, got %s", c->type, c->key, g_tag_names[tag],
                g_tag_names[it->tag]);
}

static int get_bytes(dctx *c, const item *it, const fdesc *d, bool str_only, sl_msg_str *out)
{
    if (it->tag != T_STR && (str_only || it->tag != T_BIN))
        return want(c, it, T_STR);
    if (it->len > d->hi)
        return fail(c, -SL_ERANGE, "%s.%s: %u bytes, at most %llu allowed", c->type, c->key, it->len,
                    (unsigned long long)d->hi);
    if (str_only && memchr(it->ptr, 0, it->len))
        return fail(c, -SL_EFORMAT, "%s.%s: a name must not contain a NUL byte", c->type, c->key);
    /* A zero-length string at the very end of the message still needs a
     * non-NULL pointer: presence is ptr != NULL. */
    out->ptr = (const char *)it->ptr;
    out->len = it->len;
    return 0;
}

static int get_int(dctx *c, const item *it, int64_t lo, uint64_t hi, bool is_signed, uint64_t *u, int64_t *s)
{
    int rc = want(c, it, T_INT);
    if (rc < 0)
        return rc;
    if (is_signed) {
        if (!it->neg && it->u > (uint64_t)INT64_MAX)
            goto range;
        int64_t v = it->neg ? it->i : (int64_t)it->u;
        if (v < lo || v > (int64_t)hi)
            goto range;
        *s = v;
        return 0;
    }
    if (it->neg || it->u < (uint64_t)lo || it->u > hi)
        goto range;
    *u = it->u;
    return 0;
range:
    if (it->neg)
        return fail(c, -SL_ERANGE, "%s.%s: %lld is outside [%lld, %llu]", c->type, c->key, (long long)it->i,
                    (long long)lo, (unsigned long long)hi);
    return fail(c, -SL_ERANGE, "%s.%s: %llu is outside [%lld, %llu]", c->type, c->key,
                (unsigned long long)it->u, (long long)lo, (unsigned long long)hi);
}

static int get_enum(dctx *c, const item *it, const fdesc *d, const char *const *words, int *out)
{
    int rc = want(c, it, T_STR);
    if (rc < 0)
        return rc;
    for (int64_t k = d->lo; k <= (int64_t)d->hi; k++) {
        if (str_eq((const char *)it->ptr, it->len, words[k])) {
            *out = (int)k;
            return 0;
        }
    }
    return fail(c, -SL_ERANGE, "%s.%s: \"%.*s\" is not an allowed value", c->type, c->key,
                (int)(it->len < 40 ? it->len : 40), (const char *)it->ptr);
}

static int get_ids(dctx *c, rd *r, const item *it, const fdesc *d, sl_msg_tokens *out)
{
    int rc = want(c, it, T_ARRAY);
    if (rc < 0)
        return rc;
    if (it->len > d->hi)
        return fail(c, -SL_ERANGE, "%s.%s: %u tokens, at most %llu allowed", c->type, c->key, it->len,
                    (unsigned long long)d->hi);
    out->packed = r->p;
    out->n = it->len;
    for (uint32_t k = 0; k < it->len; k++) {
        item e;
        if (rd_item(r, &e) < 0)
            return fail(c, -SL_EFORMAT, "%s.%s: truncated at token %u", c->type, c->key, k);
        if (e.tag != T_INT)
            return fail(c, -SL_ETYPE, "%s.%s[%u]: expected int, got %s", c->type, c->key, k,
                        g_tag_names[e.tag]);
        if (e.neg || e.u > INT32_MAX)
            return fail(c, -SL_ERANGE, "%s.%s[%u]: not a token id", c->type, c->key, k);
    }
    out->packed_len = (size_t)(r->p - out->packed);
    return 0;
}

static int get_segs(dctx *c, rd *r, const item *it, const fdesc *d, sl_msg_welcome *w)
{
    int rc = want(c, it, T_ARRAY);
    if (rc < 0)
        return rc;
    if (it->len > d->hi)
        return fail(c, -SL_ERANGE, "%s.%s: %u names, at most %llu allowed", c->type, c->key, it->len,
                    (unsigned long long)d->hi);
    const fdesc name = {"segs", K_NAME, 0, 0, 0, SL_PROTO_MAX_NAME};
    for (uint32_t k = 0; k < it->len; k++) {
        item e;
        if (rd_item(r, &e) < 0)
            return fail(c, -SL_EFORMAT, "%s.%s: truncated at entry %u", c->type, c->key, k);
        if ((rc = get_bytes(c, &e, &name, true, &w->segs[k])) < 0)
            return rc;
    }
    w->n_segs = it->len;
    return 0;
}

static int get_fields(dctx *c, rd *r, const item *it, sl_msg_event *ev)
{
    int rc = want(c, it, T_MAP);
    if (rc < 0)
        return rc;
    const fdesc name = {"f", K_NAME, 0, 0, 0, SL_PROTO_MAX_KIND};
    const fdesc sval = {"f", K_NAME, 0, 0, 0, SL_PROTO_MAX_NAME};
    for (uint32_t k = 0; k < it->len; k++) {
        item key, val;
        if (rd_item(r, &key) < 0)
            return fail(c, -SL_EFORMAT, "%s.f: truncated at entry %u", c->type, k);
        sl_msg_str nm = {0};
        if ((rc = get_bytes(c, &key, &name, true, &nm)) < 0)
            return rc;
        if (rd_item(r, &val) < 0)
            return fail(c, -SL_EFORMAT, "%s.f: truncated at entry %u", c->type, k);
        sl_msg_field f = {.name = nm};
        switch (val.tag) {
        case T_NIL:
            f.type = SL_VAL_NIL;
            break;
        case T_BOOL:
            f.type = SL_VAL_BOOL;
            f.val.b = val.b;
            break;
        case T_FLOAT:
            f.type = SL_VAL_FLOAT;
            f.val.f = val.f;
            break;
        case T_INT:
            if (val.neg) {
                f.type = SL_VAL_INT;
                f.val.i = val.i;
            } else if (val.u <= (uint64_t)INT64_MAX) {
                f.type = SL_VAL_INT;
                f.val.i = (int64_t)val.u;
            } else {
                f.type = SL_VAL_UINT;
                f.val.u = val.u;
            }
            break;
        case T_STR:
            f.type = SL_VAL_STR;
            if ((rc = get_bytes(c, &val, &sval, false, &f.val.s)) < 0)
                return rc;
            break;
        default: /* a later version's structured value: skipped */
            if (rd_skip_body(r, &val, 2) < 0)
                return fail(c, -SL_EFORMAT, "%s.f.%.*s: malformed or too deeply nested value", c->type,
                            (int)nm.len, nm.ptr);
            continue;
        }
        for (uint32_t j = 0; j < ev->n_fields; j++)
            if (ev->fields[j].name.len == nm.len && memcmp(ev->fields[j].name.ptr, nm.ptr, nm.len) == 0)
                return fail(c, -SL_EFORMAT, "%s.f: field \"%.*s\" given twice", c->type, (int)nm.len, nm.ptr);
        if (ev->n_fields == SL_PROTO_MAX_FIELDS)
            return fail(c, -SL_ERANGE, "%s.f: more than %d fields", c->type, SL_PROTO_MAX_FIELDS);
        ev->fields[ev->n_fields++] = f;
    }
    return 0;
}

/* Decodes the value of field d (its first item already read into it). */
static int get_field(dctx *c, rd *r, const item *it, const fdesc *d, sl_msg *m)
{
    uint8_t *at = (uint8_t *)m + d->off;
    uint64_t u = 0;
    int64_t s = 0;
    int e = 0, rc;
    c->key = d->key;
    switch ((enum kind)d->kind) {
    case K_U64:
        if ((rc = get_int(c, it, d->lo, d->hi, false, &u, &s)) < 0)
            return rc;
        memcpy(at, &u, sizeof(uint64_t));
        return 0;
    case K_U32: {
        if ((rc = get_int(c, it, d->lo, d->hi, false, &u, &s)) < 0)
            return rc;
        uint32_t v = (uint32_t)u;
        memcpy(at, &v, sizeof v);
        return 0;
    }
    case K_I32: {
        if ((rc = get_int(c, it, d->lo, d->hi, true, &u, &s)) < 0)
            return rc;
        int32_t v = (int32_t)s;
        memcpy(at, &v, sizeof v);
        return 0;
    }
    case K_F32: {
        double v;
        if (it->tag == T_FLOAT)
            v = it->f;
        else if (it->tag == T_INT)
            v = it->neg ? (double)it->i : (double)it->u;
        else
            return want(c, it, T_FLOAT);
        if (isfinite(v) && fabs(v) > FLT_MAX)
            return fail(c, -SL_ERANGE, "%s.%s: %g does not fit a float", c->type, c->key, v);
        float f = (float)v;
        memcpy(at, &f, sizeof f);
        return 0;
    }
    case K_BOOL: {
        if ((rc = want(c, it, T_BOOL)) < 0)
            return rc;
        bool v = it->b;
        memcpy(at, &v, sizeof v);
        return 0;
    }
    case K_STR:
    case K_BYTES:
    case K_NAME:
        return get_bytes(c, it, d, d->kind == K_NAME, (sl_msg_str *)(void *)at);
    case K_IDS:
        return get_ids(c, r, it, d, (sl_msg_tokens *)(void *)at);
    case K_ROLE:
    case K_FINISH:
        if ((rc = get_enum(c, it, d, d->kind == K_ROLE ? g_roles : g_finish, &e)) < 0)
            return rc;
        memcpy(at, &e, sizeof e); /* enums are int-sized */
        return 0;
    case K_SEGS:
        return get_segs(c, r, it, d, &m->welcome);
    case K_FIELDS:
        return get_fields(c, r, it, &m->event);
    }
    SL_ASSERT(!"unknown field kind");
    return -SL_EFORMAT;
}

/* Checks between fields that the table cannot express; shared by pack and
 * unpack. Returns 0 or an error with c->why set. */
static int check_message(dctx *c, const sl_msg *m)
{
    if (m->type == SL_MSG_GENERATE) {
        bool has_prompt = m->generate.prompt.ptr != NULL;
        bool has_tokens = m->generate.tokens.ids || m->generate.tokens.packed;
        if (has_prompt == has_tokens)
            return fail(c, -SL_EFORMAT, "generate: exactly one of prompt and tokens must be given (%s)",
                        has_prompt ? "both are" : "neither is");
    }
    return 0;
}

_Static_assert(sizeof(sl_msg_role) == sizeof(int) && sizeof(sl_msg_finish) == sizeof(int),
               "enums are stored as int");

/* Pass 1: walks the whole map (so that syntax errors surface first) and
 * picks out `v`, `t` and a top-level unsigned `id`. A `v` or `t` of the
 * wrong type does not stop the walk, so that the id is still found for the
 * error reply. */
static int scan_header(dctx *c, const uint8_t *buf, size_t len, uint64_t *v, bool *has_v, sl_msg_str *t,
                       uint64_t *id)
{
    rd r = {buf, buf + len};
    item map;
    if (rd_item(&r, &map) < 0 || map.tag != T_MAP)
        return fail(c, -SL_EFORMAT, "not a msgpack map (%zu bytes, first byte 0x%02x)", len,
                    len ? buf[0] : 0);
    bool has_t = false;
    int type_err = 0;
    for (uint32_t k = 0; k < map.len; k++) {
        item key, val;
        if (rd_item(&r, &key) < 0)
            return fail(c, -SL_EFORMAT, "truncated at entry %u of %u (byte %zu of %zu)", k, map.len,
                        (size_t)(r.p - buf), len);
        if (key.tag != T_STR)
            return fail(c, -SL_EFORMAT, "entry %u: key is %s, not str", k, g_tag_names[key.tag]);
        const char *kp = (const char *)key.ptr;
        bool is_v = str_eq(kp, key.len, "v"), is_t = str_eq(kp, key.len, "t"),
             is_id = str_eq(kp, key.len, "id");
        if (is_v || is_t || is_id) {
            if (rd_item(&r, &val) < 0)
                return fail(c, -SL_EFORMAT, "truncated in field %.*s", (int)key.len, kp);
            if ((is_v && *has_v) || (is_t && has_t))
                return fail(c, -SL_EFORMAT, "field %.*s given twice", (int)key.len, kp);
            if (is_v) {
                *has_v = true;
                if (val.tag == T_INT)
                    *v = val.neg ? UINT64_MAX : val.u;
                else if (!type_err)
                    type_err = fail(c, -SL_ETYPE, "v: expected int, got %s", g_tag_names[val.tag]);
            } else if (is_t) {
                has_t = true;
                if (val.tag == T_STR) {
                    t->ptr = (const char *)val.ptr;
                    t->len = val.len;
                } else if (!type_err) {
                    type_err = fail(c, -SL_ETYPE, "t: expected str, got %s", g_tag_names[val.tag]);
                }
            } else if (val.tag == T_INT && !val.neg) {
                *id = val.u;
            }
            if (rd_skip_body(&r, &val, 1) < 0)
                return fail(c, -SL_EFORMAT, "malformed value of %.*s", (int)key.len, kp);
        } else if (rd_skip(&r, 1) < 0) {
            return fail(c, -SL_EFORMAT, "malformed, truncated or too deeply nested value of \"%.*s\"",
                        (int)(key.len < 40 ? key.len : 40), kp);
        }
    }
    if (r.p != r.end)
        return fail(c, -SL_EFORMAT, "%zu bytes after the message", (size_t)(r.end - r.p));
    if (type_err)
        return type_err;
    if (!*has_v)
        return fail(c, -SL_EFORMAT, "no protocol version (field v)");
    if (!has_t)
        return fail(c, -SL_EFORMAT, "no message type (field t)");
    return 0;
}

/* Pass 2: decodes the fields of a message whose type is known. */
static int decode_fields(dctx *c, const uint8_t *buf, size_t len, sl_msg *m)
{
    const tdesc *td = &g_types[m->type];
    rd r = {buf, buf + len};
    item map;
    SL_ASSERT(rd_item(&r, &map) == 0 && map.tag == T_MAP); /* pass 1 checked it */
    uint32_t seen = 0;
    for (uint32_t k = 0; k < map.len; k++) {
        item key, val;
        SL_ASSERT(rd_item(&r, &key) == 0 && key.tag == T_STR);
        const fdesc *d = NULL;
        unsigned idx = 0;
        for (; idx < td->n_fields; idx++) {
            if (str_eq((const char *)key.ptr, key.len, td->fields[idx].key)) {
                d = &td->fields[idx];
                break;
            }
        }
        if (!d) { /* v, t, or a field this version does not know */
            SL_ASSERT(rd_skip(&r, 1) == 0);
            continue;
        }
        if (seen & (1u << idx))
            return fail(c, -SL_EFORMAT, "%s.%s given twice", td->name, d->key);
        seen |= 1u << idx;
        SL_ASSERT(rd_item(&r, &val) == 0);
        int rc = get_field(c, &r, &val, d, m);
        if (rc < 0)
            return rc;
    }
    for (unsigned idx = 0; idx < td->n_fields; idx++)
        if ((td->fields[idx].flags & F_REQ) && !(seen & (1u << idx)))
            return fail(c, -SL_EFORMAT, "%s: required field %s missing", td->name, td->fields[idx].key);
    return check_message(c, m);
}

int sl_msg_unpack(const uint8_t *buf, size_t len, sl_msg *m)
{
    memset(m, 0, sizeof *m);
    dctx c = {.type = "?", .key = "?", .why = ""};
    if (len > SL_PROTO_MAX_MSG) {
        SL_ERROR("message of %zu bytes, at most %zu allowed", len, (size_t)SL_PROTO_MAX_MSG);
        return -SL_ERANGE;
    }
    if (!buf || len == 0) {
        SL_ERROR("empty message");
        return -SL_EFORMAT;
    }
    uint64_t v = 0, id = 0;
    bool has_v = false;
    sl_msg_str t = {0};
    int rc = scan_header(&c, buf, len, &v, &has_v, &t, &id);
    m->id = id;
    if (has_v)
        m->version = v <= 255 ? (uint8_t)v : 255;
    if (rc < 0) {
        SL_ERROR("%s", c.why);
        return rc;
    }
    if (v != SL_PROTO_VERSION) {
        SL_ERROR("protocol version %llu, this is version %d", (unsigned long long)v, SL_PROTO_VERSION);
        return -SL_EVERSION;
    }
    sl_msg_type type = sl_msg_type_from_name(t.ptr, t.len);
    if (type == SL_MSG_NONE) {
        SL_ERROR("unknown message type \"%.*s\"", (int)(t.len < 40 ? t.len : 40), t.ptr);
        return -SL_EUNSUPPORTED;
    }
    sl_msg_init(m, type);
    c.type = g_types[type].name;
    rc = decode_fields(&c, buf, len, m);
    if (rc < 0) {
        SL_ERROR("%s", c.why);
        memset(m, 0, sizeof *m);
        m->type = type;
        m->version = SL_PROTO_VERSION;
        m->id = id;
    }
    return rc;
}

/* ---------------------------------------------------------------- packer */

typedef struct wbuf {
    uint8_t *buf;
    size_t cap, len;
    bool overflow;
} wbuf;

static int wbuf_write(void *data, const char *p, size_t n)
{
    wbuf *w = data;
    if (n == 0) /* msgpack-c passes (NULL, 0) for empty bodies */
        return 0;
    if (w->overflow || n > w->cap - w->len) {
        w->overflow = true;
        return -1;
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
    return 0;
}

static bool all_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t k = 0; k < n; k++)
        if (b[k])
            return false;
    return true;
}

static size_t kind_size(enum kind k)
{
    switch (k) {
    case K_U64:
        return 8;
    case K_U32:
    case K_I32:
    case K_F32:
    case K_SEGS:
    case K_FIELDS:
        return 4; /* the count */
    case K_BOOL:
        return sizeof(bool);
    case K_STR:
    case K_BYTES:
    case K_NAME:
        return sizeof(sl_msg_str);
    case K_IDS:
        return sizeof(sl_msg_tokens);
    case K_ROLE:
    case K_FINISH:
        return sizeof(int);
    }
    return 0;
}

/* Whether field d of m is written. */
static bool is_written(const fdesc *d, const sl_msg *m)
{
    const uint8_t *at = (const uint8_t *)m + d->off;
    if (d->flags & (F_REQ | F_ALWAYS))
        return true;
    if (d->kind == K_STR || d->kind == K_BYTES || d->kind == K_NAME)
        return ((const sl_msg_str *)(const void *)at)->ptr != NULL;
    if (d->kind == K_IDS) {
        const sl_msg_tokens *t = (const void *)at;
        return t->ids || t->packed || t->n;
    }
    return !all_zero(at, kind_size((enum kind)d->kind));
}

/* Checks field d of m as the unpacker would. */
static int check_field(dctx *c, const fdesc *d, const sl_msg *m)
{
    const uint8_t *at = (const uint8_t *)m + d->off;
    c->key = d->key;
    switch ((enum kind)d->kind) {
    case K_U64: {
        uint64_t v;
        memcpy(&v, at, 8);
        if (v < (uint64_t)d->lo || v > d->hi)
            return fail(c, -SL_EINVAL, "%s.%s: %llu outside [%lld, %llu]", c->type, d->key,
                        (unsigned long long)v, (long long)d->lo, (unsigned long long)d->hi);
        return 0;
    }
    case K_U32: {
        uint32_t v;
        memcpy(&v, at, 4);
        if (v < (uint64_t)d->lo || v > d->hi)
            return fail(c, -SL_EINVAL, "%s.%s: %u outside [%lld, %llu]", c->type, d->key, v, (long long)d->lo,
                        (unsigned long long)d->hi);
        return 0;
    }
    case K_I32: {
        int32_t v;
        memcpy(&v, at, 4);
        if (v < d->lo || (int64_t)v > (int64_t)d->hi)
            return fail(c, -SL_EINVAL, "%s.%s: %d outside [%lld, %llu]", c->type, d->key, v, (long long)d->lo,
                        (unsigned long long)d->hi);
        return 0;
    }
    case K_F32:
    case K_BOOL:
        return 0;
    case K_STR:
    case K_BYTES:
    case K_NAME: {
        const sl_msg_str *s = (const void *)at;
        if (!s->ptr)
            return fail(c, -SL_EINVAL, "%s.%s: required but absent", c->type, d->key);
        if (s->len > d->hi)
            return fail(c, -SL_EINVAL, "%s.%s: %zu bytes, at most %llu allowed", c->type, d->key, s->len,
                        (unsigned long long)d->hi);
        if (d->kind == K_NAME && memchr(s->ptr, 0, s->len))
            return fail(c, -SL_EINVAL, "%s.%s: a name must not contain a NUL byte", c->type, d->key);
        return 0;
    }
    case K_IDS: {
        const sl_msg_tokens *t = (const void *)at;
        if (!t->ids && !t->packed)
            return fail(c, -SL_EINVAL, "%s.%s: required but absent (or n without ids)", c->type, d->key);
        if (t->n > d->hi)
            return fail(c, -SL_EINVAL, "%s.%s: %u tokens, at most %llu allowed", c->type, d->key, t->n,
                        (unsigned long long)d->hi);
        if (t->ids)
            for (uint32_t k = 0; k < t->n; k++)
                if (t->ids[k] < 0)
                    return fail(c, -SL_EINVAL, "%s.%s[%u]: %d is not a token id", c->type, d->key, k,
                                t->ids[k]);
        return 0;
    }
    case K_ROLE:
    case K_FINISH: {
        int v;
        memcpy(&v, at, sizeof v);
        if (v < d->lo || v > (int64_t)d->hi)
            return fail(c, -SL_EINVAL, "%s.%s: %d is not an allowed value", c->type, d->key, v);
        return 0;
    }
    case K_SEGS: {
        const sl_msg_welcome *w = &m->welcome;
        if (w->n_segs > d->hi)
            return fail(c, -SL_EINVAL, "%s.%s: %u names, at most %llu allowed", c->type, d->key, w->n_segs,
                        (unsigned long long)d->hi);
        const fdesc name = {"segs", K_NAME, 0, 0, 0, SL_PROTO_MAX_NAME};
        for (uint32_t k = 0; k < w->n_segs; k++) {
            const sl_msg_str *s = &w->segs[k];
            if (!s->ptr || s->len > name.hi || memchr(s->ptr, 0, s->len))
                return fail(c, -SL_EINVAL, "%s.%s[%u]: absent, longer than %d bytes or holds a NUL", c->type,
                            d->key, k, SL_PROTO_MAX_NAME);
        }
        return 0;
    }
    case K_FIELDS: {
        const sl_msg_event *ev = &m->event;
        if (ev->n_fields > d->hi)
            return fail(c, -SL_EINVAL, "%s.f: %u fields, at most %d allowed", c->type, ev->n_fields,
                        SL_PROTO_MAX_FIELDS);
        for (uint32_t k = 0; k < ev->n_fields; k++) {
            const sl_msg_field *f = &ev->fields[k];
            if (!f->name.ptr || f->name.len > SL_PROTO_MAX_KIND || memchr(f->name.ptr, 0, f->name.len))
                return fail(c, -SL_EINVAL, "%s.f[%u]: name absent, longer than %d bytes or holds a NUL",
                            c->type, k, SL_PROTO_MAX_KIND);
            if ((unsigned)f->type > SL_VAL_STR)
                return fail(c, -SL_EINVAL, "%s.f[%u]: value type %d unknown", c->type, k, (int)f->type);
            if (f->type == SL_VAL_STR &&
                ((!f->val.s.ptr && f->val.s.len) || f->val.s.len > SL_PROTO_MAX_NAME))
                return fail(c, -SL_EINVAL, "%s.f[%u]: string value over %d bytes", c->type, k,
                            SL_PROTO_MAX_NAME);
            for (uint32_t j = 0; j < k; j++)
                if (ev->fields[j].name.len == f->name.len &&
                    memcmp(ev->fields[j].name.ptr, f->name.ptr, f->name.len) == 0)
                    return fail(c, -SL_EINVAL, "%s.f[%u]: name given twice", c->type, k);
        }
        return 0;
    }
    }
    SL_ASSERT(!"unknown field kind");
    return -SL_EINVAL;
}

/* Writes field d's value. Returns msgpack-c's status (< 0: out of room). */
static int put_field(msgpack_packer *pk, const fdesc *d, const sl_msg *m)
{
    const uint8_t *at = (const uint8_t *)m + d->off;
    int rc = 0;
    switch ((enum kind)d->kind) {
    case K_U64: {
        uint64_t v;
        memcpy(&v, at, 8);
        return msgpack_pack_uint64(pk, v);
    }
    case K_U32: {
        uint32_t v;
        memcpy(&v, at, 4);
        return msgpack_pack_uint32(pk, v);
    }
    case K_I32: {
        int32_t v;
        memcpy(&v, at, 4);
        return msgpack_pack_int32(pk, v);
    }
    case K_F32: {
        float v;
        memcpy(&v, at, 4);
        return msgpack_pack_float(pk, v);
    }
    case K_BOOL: {
        bool v;
        memcpy(&v, at, sizeof v);
        return v ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
    }
    case K_STR:
    case K_NAME:
    case K_BYTES: {
        const sl_msg_str *s = (const void *)at;
        if (d->kind == K_BYTES)
            return msgpack_pack_bin_with_body(pk, s->ptr, s->len);
        return msgpack_pack_str_with_body(pk, s->ptr, s->len);
    }
    case K_IDS: {
        const sl_msg_tokens *t = (const void *)at;
        rc = msgpack_pack_array(pk, t->n);
        rd r = {NULL, NULL}; /* for an unpacked list being re-packed */
        if (!t->ids)
            r = (rd){t->packed, t->packed + t->packed_len};
        for (uint32_t k = 0; k < t->n && rc == 0; k++) {
            if (t->ids) {
                rc = msgpack_pack_int32(pk, t->ids[k]);
            } else {
                item it;
                SL_ASSERT(rd_item(&r, &it) == 0 && it.tag == T_INT && !it.neg && it.u <= INT32_MAX);
                rc = msgpack_pack_int32(pk, (int32_t)it.u);
            }
        }
        return rc;
    }
    case K_ROLE:
    case K_FINISH: {
        int v;
        memcpy(&v, at, sizeof v);
        const char *w = (d->kind == K_ROLE ? g_roles : g_finish)[v];
        return msgpack_pack_str_with_body(pk, w, strlen(w));
    }
    case K_SEGS: {
        const sl_msg_welcome *w = &m->welcome;
        rc = msgpack_pack_array(pk, w->n_segs);
        for (uint32_t k = 0; k < w->n_segs && rc == 0; k++)
            rc = msgpack_pack_str_with_body(pk, w->segs[k].ptr, w->segs[k].len);
        return rc;
    }
    case K_FIELDS: {
        const sl_msg_event *ev = &m->event;
        rc = msgpack_pack_map(pk, ev->n_fields);
        for (uint32_t k = 0; k < ev->n_fields && rc == 0; k++) {
            const sl_msg_field *f = &ev->fields[k];
            rc = msgpack_pack_str_with_body(pk, f->name.ptr, f->name.len);
            if (rc < 0)
                break;
            switch (f->type) {
            case SL_VAL_NIL:
                rc = msgpack_pack_nil(pk);
                break;
            case SL_VAL_BOOL:
                rc = f->val.b ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
                break;
            case SL_VAL_INT:
                rc = msgpack_pack_int64(pk, f->val.i);
                break;
            case SL_VAL_UINT:
                rc = msgpack_pack_uint64(pk, f->val.u);
                break;
            case SL_VAL_FLOAT:
                rc = msgpack_pack_double(pk, f->val.f);
                break;
            case SL_VAL_STR:
                rc = msgpack_pack_str_with_body(pk, f->val.s.ptr, f->val.s.len);
                break;
            }
        }
        return rc;
    }
    }
    SL_ASSERT(!"unknown field kind");
    return -1;
}

int sl_msg_pack(const sl_msg *m, uint8_t *buf, size_t cap, size_t *len)
{
    *len = 0;
    if ((unsigned)m->type <= SL_MSG_NONE || (unsigned)m->type >= SL_MSG_TYPE_COUNT) {
        SL_ERROR("invalid message type %d", (int)m->type);
        return -SL_EINVAL;
    }
    const tdesc *td = &g_types[m->type];
    dctx c = {.type = td->name, .key = "?", .why = ""};
    unsigned n_entries = 2;
    for (unsigned k = 0; k < td->n_fields; k++) {
        const fdesc *d = &td->fields[k];
        if (!is_written(d, m))
            continue;
        int rc = check_field(&c, d, m);
        if (rc < 0) {
            SL_ERROR("%s", c.why);
            return rc;
        }
        n_entries++;
    }
    int rc = check_message(&c, m);
    if (rc < 0) {
        SL_ERROR("%s", c.why);
        return -SL_EINVAL;
    }

    wbuf w = {buf, cap < SL_PROTO_MAX_MSG ? cap : SL_PROTO_MAX_MSG, 0, false};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &w, wbuf_write);
    rc = msgpack_pack_map(&pk, n_entries);
    if (rc == 0)
        rc = msgpack_pack_str_with_body(&pk, "v", 1);
    if (rc == 0)
        rc = msgpack_pack_uint8(&pk, SL_PROTO_VERSION);
    if (rc == 0)
        rc = msgpack_pack_str_with_body(&pk, "t", 1);
    if (rc == 0)
        rc = msgpack_pack_str_with_body(&pk, td->name, strlen(td->name));
    for (unsigned k = 0; k < td->n_fields && rc == 0; k++) {
        const fdesc *d = &td->fields[k];
        if (!is_written(d, m))
            continue;
        rc = msgpack_pack_str_with_body(&pk, d->key, strlen(d->key));
        if (rc == 0)
            rc = put_field(&pk, d, m);
    }
    if (rc < 0 || w.overflow) {
        SL_ERROR("%s message does not fit in %zu bytes", td->name, w.cap);
        return -SL_ERANGE;
    }
    *len = w.len;
    return 0;
}
