/* Protocol tests: every message type packed and unpacked with ordinary and
 * edge values; bytes written by hand from the msgpack spec decoded; every
 * truncation of every message refused; each field replaced by a value of
 * every other msgpack family; unknown versions, types and fields; caps on
 * sizes, counts and nesting; the packer's refusals. Then the ZeroMQ side
 * over ipc:// in a temporary directory: DEALER/ROUTER and REQ/ROUTER round
 * trips, XPUB/SUB topics, a malformed message answered with an error, bad
 * frame shapes, an oversized message dropped by ZMQ_MAXMSGSIZE while one of
 * exactly SL_PROTO_MAX_MSG bytes gets through.
 *
 * msgpack-c is used here as the independent side: it checks that what
 * sl_msg_pack writes is ordinary msgpack, and builds the altered messages. */
#include "common/log.h"
#include "proto/endpoint.h"
#include "proto/msg.h"
#include "tests/testutil.h"

#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

/* The parsers log every refusal; the loops below refuse thousands of
 * inputs on purpose, so stderr goes to QUIET_LOG around them (in the
 * working directory: it keeps the last muted stretch, assertion messages
 * included, should one abort). Sanitizer reports still go to the real
 * stderr. */
#define QUIET_LOG "test_proto.quiet.log"
static int g_saved_stderr = -1;
static void quiet(void)
{
    fflush(stderr);
    g_saved_stderr = dup(2);
    int fd = open(QUIET_LOG, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        fd = open("/dev/null", O_WRONLY);
    dup2(fd, 2);
    close(fd);
}
static void loud(void)
{
    fflush(stderr);
    dup2(g_saved_stderr, 2);
    close(g_saved_stderr);
}

static uint8_t *g_buf;  /* SL_PROTO_MAX_MSG bytes */
static uint8_t *g_buf2; /* SL_PROTO_MAX_MSG bytes */

/* ------------------------------------------------------------ messages */

static const int32_t g_edge_ids[] = {0, 1, 127, 128, 255, 256, 65535, 65536, INT32_MAX};
static char g_long[SL_PROTO_MAX_ERRMSG];
static const char g_odd[] = {'a', 0, (char)0xff, (char)0xc0, 'z'}; /* bytes, not UTF-8 */

/* A message of `type`: variant 0 has only what is required (and small
 * values), variant 1 sets every field to an edge value. */
static void make_msg(sl_msg *m, sl_msg_type type, int variant)
{
    sl_msg_init(m, type);
    bool edge = variant == 1;
    m->id = edge ? UINT64_MAX : 7;
    switch (type) {
    case SL_MSG_GENERATE: {
        sl_msg_generate *g = &m->generate;
        g->n_predict = edge ? SL_PROTO_MAX_TOKENS : 16;
        if (edge) {
            g->tokens.ids = g_edge_ids;
            g->tokens.n = sizeof g_edge_ids / sizeof g_edge_ids[0];
            g->sampling.temperature = -0.0f;
            g->sampling.top_k = INT32_MIN;
            g->sampling.top_p = FLT_MAX;
            g->sampling.min_p = FLT_TRUE_MIN;
            g->sampling.repeat_penalty = INFINITY;
            g->sampling.penalty_last_n = INT32_MAX;
            g->sampling.presence_penalty = -FLT_MAX;
            g->sampling.frequency_penalty = 1e-30f;
            g->sampling.seed = UINT64_MAX;
            g->add_bos = false;
            g->resume_from = UINT64_MAX - 1;
        } else {
            g->prompt = sl_msg_cstr(""); /* present, empty */
        }
        break;
    }
    case SL_MSG_TOKENIZE:
        m->tokenize.text = edge ? (sl_msg_str){g_odd, sizeof g_odd} : sl_msg_cstr("Hello world");
        m->tokenize.add_bos = !edge;
        m->tokenize.special = edge;
        break;
    case SL_MSG_DETOKENIZE:
        m->detokenize.tokens.ids = g_edge_ids;
        m->detokenize.tokens.n = edge ? sizeof g_edge_ids / sizeof g_edge_ids[0] : 0;
        m->detokenize.special = edge;
        break;
    case SL_MSG_CANCEL:
    case SL_MSG_STATUS:
        m->id = edge ? UINT64_MAX : 1;
        break;
    case SL_MSG_TOKEN:
        m->token.seq = edge ? UINT64_MAX : 0;
        m->token.tok = edge ? -1 : 0;
        m->token.text = edge ? (sl_msg_str){g_odd, sizeof g_odd} : sl_msg_cstr("");
        if (edge) {
            m->token.finish = SL_FINISH_ERROR;
            m->token.n_prompt = UINT32_MAX;
            m->token.n_gen = 1;
        }
        break;
    case SL_MSG_TOKENS:
        m->tokens.ids = g_edge_ids;
        m->tokens.n = edge ? sizeof g_edge_ids / sizeof g_edge_ids[0] : 1;
        break;
    case SL_MSG_TEXT:
        m->text = edge ? (sl_msg_str){g_long, SL_PROTO_MAX_ERRMSG} : sl_msg_cstr("hi");
        break;
    case SL_MSG_STATUS_REPLY: {
        sl_msg_status_reply *s = &m->status_reply;
        s->model = edge ? (sl_msg_str){g_long, SL_PROTO_MAX_NAME} : sl_msg_cstr("stories260K");
        if (edge) {
            s->n_ctx = s->n_vocab = s->sessions = s->max_sessions = s->loaders = s->workers = UINT32_MAX;
            s->mem_budget = s->mem_used = s->pinned = s->epoch = UINT64_MAX;
        }
        break;
    }
    case SL_MSG_ERROR:
        m->id = edge ? 0 : 3;
        m->error.code = edge ? UINT32_MAX : SL_EVERSION;
        m->error.msg = edge ? (sl_msg_str){g_long, SL_PROTO_MAX_ERRMSG} : sl_msg_cstr("");
        break;
    case SL_MSG_REGISTER:
        m->id = 0;
        m->reg.role = edge ? SL_MSG_ROLE_COMPUTE : SL_MSG_ROLE_LOADER;
        m->reg.pid = edge ? INT32_MAX : 1;
        m->reg.name = edge ? (sl_msg_str){g_long, SL_PROTO_MAX_NAME} : sl_msg_cstr("");
        if (edge) {
            m->reg.threads = UINT32_MAX;
            m->reg.caps = UINT64_MAX;
            m->reg.wid = UINT32_MAX;
        }
        break;
    case SL_MSG_WELCOME:
        m->id = 0;
        m->welcome.wid = edge ? UINT32_MAX : 1;
        m->welcome.epoch = edge ? UINT64_MAX : 0;
        m->welcome.instance = edge ? (sl_msg_str){g_long, SL_PROTO_MAX_NAME} : sl_msg_cstr("i");
        m->welcome.n_segs = edge ? SL_PROTO_MAX_SEGS : 0;
        for (uint32_t k = 0; k < m->welcome.n_segs; k++)
            m->welcome.segs[k] = (sl_msg_str){g_long, k == 0 ? 0 : k == 1 ? SL_PROTO_MAX_NAME : k};
        m->welcome.hb_ms = edge ? 3600000 : 1;
        break;
    case SL_MSG_HEARTBEAT: {
        sl_msg_heartbeat *h = &m->heartbeat;
        m->id = 0;
        h->role = edge ? SL_MSG_ROLE_COORDINATOR : SL_MSG_ROLE_COMPUTE;
        h->pid = edge ? INT32_MAX : 2;
        if (edge) {
            h->wid = UINT32_MAX;
            h->epoch = h->jobs = h->bytes = h->errors = h->rss = UINT64_MAX;
        }
        break;
    }
    case SL_MSG_EVENT: {
        sl_msg_event *e = &m->event;
        m->id = 0;
        e->kind = edge ? (sl_msg_str){g_long, SL_PROTO_MAX_KIND} : sl_msg_cstr("token");
        if (!edge)
            break;
        e->seq = UINT64_MAX;
        e->ts = 1;
        static char names[SL_PROTO_MAX_FIELDS][8];
        e->n_fields = SL_PROTO_MAX_FIELDS;
        for (uint32_t k = 0; k < SL_PROTO_MAX_FIELDS; k++) {
            snprintf(names[k], sizeof names[k], "f%u", k);
            sl_msg_field *f = &e->fields[k];
            f->name = sl_msg_cstr(names[k]);
            switch (k % 9) {
            case 0:
                f->type = SL_VAL_NIL;
                break;
            case 1:
                f->type = SL_VAL_BOOL;
                f->val.b = k & 2;
                break;
            case 2:
                f->type = SL_VAL_INT;
                f->val.i = INT64_MIN;
                break;
            case 3:
                f->type = SL_VAL_INT;
                f->val.i = -1;
                break;
            case 4:
                f->type = SL_VAL_UINT;
                f->val.u = UINT64_MAX;
                break;
            case 5:
                f->type = SL_VAL_FLOAT;
                f->val.f = -0.0;
                break;
            case 6:
                f->type = SL_VAL_FLOAT;
                f->val.f = DBL_MAX;
                break;
            case 7:
                f->type = SL_VAL_STR;
                f->val.s = (sl_msg_str){g_long, SL_PROTO_MAX_NAME};
                break;
            case 8:
                f->type = SL_VAL_STR;
                f->val.s = sl_msg_cstr("");
                break;
            }
        }
        e->fields[SL_PROTO_MAX_FIELDS - 1].name = (sl_msg_str){g_long, SL_PROTO_MAX_KIND};
        break;
    }
    case SL_MSG_BUDGET:
        m->budget = edge ? UINT64_MAX : 1;
        break;
    case SL_MSG_BUDGET_REPLY:
        if (edge)
            m->budget_reply = (sl_msg_budget_reply){UINT64_MAX, UINT64_MAX, UINT64_MAX, UINT64_MAX, UINT64_MAX};
        else
            m->budget_reply.mem_budget = 1;
        break;
    default:
        SL_ASSERT(!"type");
    }
}

static bool str_same(sl_msg_str a, sl_msg_str b)
{
    return (a.ptr != NULL) == (b.ptr != NULL) && a.len == b.len && (!a.len || !memcmp(a.ptr, b.ptr, a.len));
}

static bool tokens_same(const sl_msg_tokens *a, const sl_msg_tokens *b)
{
    static int32_t x[64], y[64];
    if (a->n != b->n || a->n > 64)
        return false;
    sl_msg_tokens_get(a, x, 64);
    sl_msg_tokens_get(b, y, 64);
    return !memcmp(x, y, a->n * sizeof x[0]);
}

/* Field-by-field checks of the values that matter most (the byte-identical
 * re-pack in test_round_trip covers every field). */
static void check_same(const sl_msg *a, const sl_msg *b, const char *what)
{
    CHECK(a->type == b->type && a->id == b->id && b->version == SL_PROTO_VERSION, "%s: header", what);
    switch (a->type) {
    case SL_MSG_GENERATE:
        CHECK(str_same(a->generate.prompt, b->generate.prompt), "%s: prompt", what);
        CHECK(tokens_same(&a->generate.tokens, &b->generate.tokens), "%s: tokens", what);
        CHECK(!memcmp(&a->generate.sampling, &b->generate.sampling, sizeof a->generate.sampling),
              "%s: sampling", what);
        CHECK(a->generate.n_predict == b->generate.n_predict && a->generate.add_bos == b->generate.add_bos &&
                  a->generate.resume_from == b->generate.resume_from,
              "%s: scalars", what);
        break;
    case SL_MSG_TOKEN:
        CHECK(a->token.seq == b->token.seq && a->token.tok == b->token.tok &&
                  a->token.finish == b->token.finish && a->token.n_prompt == b->token.n_prompt &&
                  a->token.n_gen == b->token.n_gen,
              "%s: scalars", what);
        CHECK(str_same(a->token.text, b->token.text), "%s: text", what);
        break;
    case SL_MSG_TOKENS:
        CHECK(tokens_same(&a->tokens, &b->tokens), "%s: tokens", what);
        break;
    case SL_MSG_WELCOME:
        CHECK(a->welcome.n_segs == b->welcome.n_segs, "%s: n_segs", what);
        for (uint32_t k = 0; k < a->welcome.n_segs && k < b->welcome.n_segs; k++)
            CHECK(str_same(a->welcome.segs[k], b->welcome.segs[k]), "%s: seg %u", what, k);
        break;
    case SL_MSG_EVENT:
        CHECK(a->event.n_fields == b->event.n_fields, "%s: n_fields", what);
        for (uint32_t k = 0; k < a->event.n_fields && k < b->event.n_fields; k++) {
            const sl_msg_field *x = &a->event.fields[k], *y = &b->event.fields[k];
            bool same = str_same(x->name, y->name);
            if (x->type == SL_VAL_UINT && x->val.u <= INT64_MAX) /* documented: comes back as INT */
                same = same && y->type == SL_VAL_INT && (uint64_t)y->val.i == x->val.u;
            else if (x->type == SL_VAL_STR)
                same = same && y->type == SL_VAL_STR && str_same(x->val.s, y->val.s);
            else if (x->type == SL_VAL_FLOAT)
                same = same && y->type == SL_VAL_FLOAT && !memcmp(&x->val.f, &y->val.f, sizeof(double));
            else
                same = same && x->type == y->type && x->val.u == y->val.u;
            CHECK(same, "%s: field %u", what, k);
        }
        break;
    case SL_MSG_BUDGET:
        CHECK(a->budget == b->budget, "%s: bytes", what);
        break;
    case SL_MSG_BUDGET_REPLY:
        CHECK(!memcmp(&a->budget_reply, &b->budget_reply, sizeof a->budget_reply), "%s: fields", what);
        break;
    default:
        break;
    }
}

/* msgpack-c must read what we write as one map holding v = 1 and t. */
static void check_with_msgpack_c(const uint8_t *p, size_t n, sl_msg_type type)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int rc = msgpack_unpack_next(&u, (const char *)p, n, &off);
    CHECK(rc == MSGPACK_UNPACK_SUCCESS && off == n, "%s: msgpack-c reads it (rc %d, %zu of %zu)",
          sl_msg_type_name(type), rc, off, n);
    bool v_ok = false, t_ok = false;
    if (rc == MSGPACK_UNPACK_SUCCESS && u.data.type == MSGPACK_OBJECT_MAP) {
        for (uint32_t k = 0; k < u.data.via.map.size; k++) {
            msgpack_object_kv *kv = &u.data.via.map.ptr[k];
            if (kv->key.type != MSGPACK_OBJECT_STR)
                continue;
            if (kv->key.via.str.size == 1 && kv->key.via.str.ptr[0] == 'v')
                v_ok = kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER && kv->val.via.u64 == SL_PROTO_VERSION;
            if (kv->key.via.str.size == 1 && kv->key.via.str.ptr[0] == 't') {
                const char *name = sl_msg_type_name(type);
                t_ok = kv->val.type == MSGPACK_OBJECT_STR && kv->val.via.str.size == strlen(name) &&
                       !memcmp(kv->val.via.str.ptr, name, strlen(name));
            }
        }
    }
    CHECK(v_ok && t_ok, "%s: v and t as msgpack-c sees them", sl_msg_type_name(type));
    msgpack_unpacked_destroy(&u);
}

static void test_round_trip(void)
{
    for (int t = SL_MSG_GENERATE; t < SL_MSG_TYPE_COUNT; t++) {
        for (int variant = 0; variant < 2; variant++) {
            sl_msg m, back;
            make_msg(&m, (sl_msg_type)t, variant);
            size_t n = 0, n2 = 0;
            int rc = sl_msg_pack(&m, g_buf, SL_PROTO_MAX_MSG, &n);
            CHECK(rc == 0, "%s/%d: pack: %s", sl_msg_type_name(t), variant, sl_strerror(rc));
            if (rc)
                continue;
            check_with_msgpack_c(g_buf, n, (sl_msg_type)t);
            rc = sl_msg_unpack(g_buf, n, &back);
            CHECK(rc == 0, "%s/%d: unpack: %s", sl_msg_type_name(t), variant, sl_strerror(rc));
            if (rc)
                continue;
            char what[64];
            snprintf(what, sizeof what, "%s/%d", sl_msg_type_name(t), variant);
            check_same(&m, &back, what);
            /* Packing what was unpacked gives the same bytes: nothing was
             * lost or changed on the way (every field of variant 1 is set). */
            rc = sl_msg_pack(&back, g_buf2, SL_PROTO_MAX_MSG, &n2);
            CHECK(rc == 0 && n2 == n && !memcmp(g_buf, g_buf2, n), "%s: re-pack differs (%zu vs %zu bytes)",
                  what, n2, n);
            /* Every smaller output buffer is refused, never overrun. */
            quiet();
            int bad = 0;
            for (size_t cap = 0; cap < n; cap++) {
                size_t got = 1;
                if (sl_msg_pack(&m, g_buf2, cap, &got) != -SL_ERANGE || got != 0)
                    bad++;
            }
            loud();
            CHECK(bad == 0, "%s: %d short buffers not refused", what, bad);
        }
    }
}

/* Bytes written by hand from the msgpack spec, not by msgpack-c. */
static void test_hand_written(void)
{
    static const uint8_t cancel[] = {0x83, 0xa1, 'v', 0x01, 0xa1, 't', 0xa6, 'c', 'a', 'n', 'c',  'e', 'l',
                                     0xa2, 'i',  'd', 0xcf, 0,    0,   0,    0,   0,   0,   0x01, 0x00};
    sl_msg m;
    CHECK(sl_msg_unpack(cancel, sizeof cancel, &m) == 0 && m.type == SL_MSG_CANCEL && m.id == 256, "cancel");
    /* tokens with ids as uint8, uint16, int8 (positive), int32, uint32,
     * keys in another order, and an unknown nil field. */
    static const uint8_t tokens[] = {
        0x84, 0xa6, 't',  'o',  'k',  'e',  'n',  's',  0x95, 0xcc, 0xff, 0xcd, 0x01, 0x00, 0xd0, 0x05, 0xd2,
        0x7f, 0xff, 0xff, 0xff, 0xce, 0x00, 0x01, 0x00, 0x00, 0xa1, 't',  0xa6, 't',  'o',  'k',  'e',  'n',
        's',  0xa1, 'v',  0xd3, 0,    0,    0,    0,    0,    0,    0,    1,    0xa2, 'i',  'd',  0x2a};
    static const uint8_t tokens_unknown[] = {0x85, 0xa2, 'z', 'z', 0xc0};
    uint8_t buf[sizeof tokens + 4];
    memcpy(buf, tokens_unknown, sizeof tokens_unknown);
    memcpy(buf + sizeof tokens_unknown, tokens + 1, sizeof tokens - 1);
    size_t n = sizeof tokens_unknown + sizeof tokens - 1;
    int rc = sl_msg_unpack(buf, n, &m);
    int32_t ids[5] = {0};
    CHECK(rc == 0 && m.type == SL_MSG_TOKENS && m.id == 42 && sl_msg_tokens_get(&m.tokens, ids, 5) == 5,
          "tokens: %s", sl_strerror(rc));
    CHECK(ids[0] == 255 && ids[1] == 256 && ids[2] == 5 && ids[3] == INT32_MAX && ids[4] == 65536,
          "tokens: %d %d %d %d %d", ids[0], ids[1], ids[2], ids[3], ids[4]);
    /* sl_msg_tokens_get with a short buffer copies what fits and says how
     * many there are. */
    int32_t two[2];
    CHECK(sl_msg_tokens_get(&m.tokens, two, 2) == 5 && two[0] == 255 && two[1] == 256, "short get");
}

/* ------------------------------------------------- refusals of all kinds */

static void test_truncations(void)
{
    int bad = 0, total = 0;
    quiet();
    for (int t = SL_MSG_GENERATE; t < SL_MSG_TYPE_COUNT; t++) {
        for (int variant = 0; variant < 2; variant++) {
            sl_msg m, back;
            make_msg(&m, (sl_msg_type)t, variant);
            size_t n;
            if (sl_msg_pack(&m, g_buf, SL_PROTO_MAX_MSG, &n) != 0) {
                bad++;
                continue;
            }
            for (size_t cut = 0; cut < n; cut++) {
                /* A copy of exactly `cut` bytes, so ASan sees any read past it. */
                uint8_t *p = malloc(cut ? cut : 1);
                memcpy(p, g_buf, cut);
                int rc = sl_msg_unpack(p, cut, &back);
                total++;
                if (rc != -SL_EFORMAT || back.type != SL_MSG_NONE)
                    bad++;
                free(p);
            }
            /* Trailing bytes are refused too. */
            g_buf[n] = 0xc0;
            if (sl_msg_unpack(g_buf, n + 1, &back) != -SL_EFORMAT)
                bad++;
        }
    }
    loud();
    CHECK(bad == 0, "%d of %d truncated messages not refused with -SL_EFORMAT", bad, total);
}

/* Test-side copy of the header's field families (the spec, not msg.c's
 * table): u = uint, U = uint whose smallest value is 1, i = int, f = float,
 * b = bool, s = str or bin, n = name (str only), a = ids / names (array),
 * e = enum, m = map. */
static char family_of(sl_msg_type type, const char *key, size_t len)
{
    static const struct {
        const char *key;
        char fam;
    } fams[] = {
        {"prompt", 's'},
        {"tokens", 'a'},
        {"n_predict", 'u'},
        {"temperature", 'f'},
        {"top_k", 'i'},
        {"top_p", 'f'},
        {"min_p", 'f'},
        {"repeat_penalty", 'f'},
        {"repeat_last_n", 'i'},
        {"presence_penalty", 'f'},
        {"frequency_penalty", 'f'},
        {"seed", 'u'},
        {"add_bos", 'b'},
        {"resume_from", 'u'},
        {"text", 's'},
        {"special", 'b'},
        {"seq", 'u'},
        {"tok", 'i'},
        {"finish", 'e'},
        {"n_prompt", 'u'},
        {"n_gen", 'u'},
        {"model", 's'},
        {"n_ctx", 'u'},
        {"n_vocab", 'u'},
        {"sessions", 'u'},
        {"max_sessions", 'u'},
        {"loaders", 'u'},
        {"workers", 'u'},
        {"mem_budget", 'u'},
        {"mem_used", 'u'},
        {"pinned", 'u'},
        {"epoch", 'u'},
        {"code", 'U'},
        {"msg", 's'},
        {"role", 'e'},
        {"pid", 'U'},
        {"name", 'n'},
        {"threads", 'u'},
        {"caps", 'u'},
        {"wid", 'u'},
        {"instance", 'n'},
        {"segs", 'a'},
        {"hb_ms", 'U'},
        {"jobs", 'u'},
        {"bytes", 'u'},
        {"errors", 'u'},
        {"rss", 'u'},
        {"kind", 'n'},
        {"ts", 'u'},
        {"f", 'm'},
        {"streamed", 'u'},
        {"min_budget", 'u'},
    };
    if (len == 2 && !memcmp(key, "id", 2))
        return type == SL_MSG_ERROR ? 'u' : 'U';
    if (len == 3 && !memcmp(key, "wid", 3) && type == SL_MSG_WELCOME)
        return 'U';
    if (len == 5 && !memcmp(key, "bytes", 5) && type == SL_MSG_BUDGET)
        return 'U';
    for (size_t k = 0; k < sizeof fams / sizeof fams[0]; k++)
        if (strlen(fams[k].key) == len && !memcmp(fams[k].key, key, len))
            return fams[k].fam;
    return '?';
}

enum { R_NIL, R_TRUE, R_ZERO, R_MINUS1, R_FLOAT, R_STR, R_BIN, R_ARRAY, R_MAP, R_COUNT };
static const char *const g_repl_names[] = {"nil", "true", "0", "-1", "1.5", "\"x\"", "bin", "[]", "{}"};

static void pack_repl(msgpack_packer *pk, int r)
{
    switch (r) {
    case R_NIL:
        msgpack_pack_nil(pk);
        break;
    case R_TRUE:
        msgpack_pack_true(pk);
        break;
    case R_ZERO:
        msgpack_pack_int(pk, 0);
        break;
    case R_MINUS1:
        msgpack_pack_int(pk, -1);
        break;
    case R_FLOAT:
        msgpack_pack_double(pk, 1.5);
        break;
    case R_STR:
        msgpack_pack_str_with_body(pk, "x", 1);
        break;
    case R_BIN:
        msgpack_pack_bin_with_body(pk, "x", 1);
        break;
    case R_ARRAY:
        msgpack_pack_array(pk, 0);
        break;
    case R_MAP:
        msgpack_pack_map(pk, 0);
        break;
    }
}

/* What the spec says unpacking gives when key (of family fam) holds r. */
static int expected_rc(char fam, const char *key, size_t len, int r)
{
    bool is_v = len == 1 && key[0] == 'v', is_t = len == 1 && key[0] == 't';
    if (is_v)
        return r == R_ZERO || r == R_MINUS1 ? -SL_EVERSION : -SL_ETYPE;
    if (is_t)
        return r == R_STR ? -SL_EUNSUPPORTED : -SL_ETYPE;
    switch (fam) {
    case 'u':
        return r == R_ZERO ? 0 : r == R_MINUS1 ? -SL_ERANGE : -SL_ETYPE;
    case 'U':
        return r == R_ZERO || r == R_MINUS1 ? -SL_ERANGE : -SL_ETYPE;
    case 'i':
        return r == R_ZERO || r == R_MINUS1 ? 0 : -SL_ETYPE;
    case 'f':
        return r == R_ZERO || r == R_MINUS1 || r == R_FLOAT ? 0 : -SL_ETYPE;
    case 'b':
        return r == R_TRUE ? 0 : -SL_ETYPE;
    case 's':
        return r == R_STR || r == R_BIN ? 0 : -SL_ETYPE;
    case 'n':
        return r == R_STR ? 0 : -SL_ETYPE;
    case 'a':
        return r == R_ARRAY ? 0 : -SL_ETYPE;
    case 'e':
        return r == R_STR ? -SL_ERANGE : -SL_ETYPE;
    case 'm':
        return r == R_MAP ? 0 : -SL_ETYPE;
    }
    return 1; /* unknown key: the check below fails */
}

/* Re-packs the map in obj with entry `which` replaced by r (or with an
 * extra entry appended when which == size). */
static size_t rebuild(const msgpack_object *obj, uint32_t which, int r, msgpack_sbuffer *sb)
{
    msgpack_sbuffer_clear(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    uint32_t n = obj->via.map.size;
    msgpack_pack_map(&pk, which == n ? n + 1 : n);
    for (uint32_t k = 0; k < n; k++) {
        msgpack_pack_object(&pk, obj->via.map.ptr[k].key);
        if (k == which)
            pack_repl(&pk, r);
        else
            msgpack_pack_object(&pk, obj->via.map.ptr[k].val);
    }
    return sb->size;
}

static void test_wrong_types(void)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    int cases = 0;
    for (int t = SL_MSG_GENERATE; t < SL_MSG_TYPE_COUNT; t++) {
        for (int variant = 0; variant < 2; variant++) {
            sl_msg m, back;
            make_msg(&m, (sl_msg_type)t, variant);
            size_t n;
            if (sl_msg_pack(&m, g_buf, SL_PROTO_MAX_MSG, &n) != 0)
                continue;
            msgpack_unpacked u;
            msgpack_unpacked_init(&u);
            size_t off = 0;
            SL_ASSERT(msgpack_unpack_next(&u, (const char *)g_buf, n, &off) == MSGPACK_UNPACK_SUCCESS);
            const msgpack_object *obj = &u.data;
            for (uint32_t k = 0; k < obj->via.map.size; k++) {
                const msgpack_object *key = &obj->via.map.ptr[k].key;
                const char *kp = key->via.str.ptr;
                size_t kl = key->via.str.size;
                char fam = family_of((sl_msg_type)t, kp, kl);
                for (int r = 0; r < R_COUNT; r++) {
                    int want = expected_rc(fam, kp, kl, r);
                    size_t len = rebuild(obj, k, r, &sb);
                    quiet();
                    int rc = sl_msg_unpack((const uint8_t *)sb.data, len, &back);
                    loud();
                    cases++;
                    CHECK(rc == want, "%s/%d: %.*s = %s gave %d (%s), expected %d", sl_msg_type_name(t),
                          variant, (int)kl, kp, g_repl_names[r], rc, sl_strerror(rc), want);
                    /* After a refusal the id is still there to reply to. */
                    if (rc < 0 && rc != want)
                        continue;
                    if (rc < 0 && !(kl == 2 && !memcmp(kp, "id", 2)))
                        CHECK(back.id == m.id, "%s: id kept after refusal", sl_msg_type_name(t));
                }
            }
            /* Unknown fields of every family are skipped. */
            for (int r = 0; r < R_COUNT; r++) {
                msgpack_sbuffer_clear(&sb);
                msgpack_packer pk;
                msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
                msgpack_pack_map(&pk, obj->via.map.size + 2);
                msgpack_pack_str_with_body(&pk, "zz_new", 6);
                pack_repl(&pk, r);
                for (uint32_t k = 0; k < obj->via.map.size; k++) {
                    msgpack_pack_object(&pk, obj->via.map.ptr[k].key);
                    msgpack_pack_object(&pk, obj->via.map.ptr[k].val);
                }
                msgpack_pack_str_with_body(&pk, "zz_nested", 9);
                msgpack_pack_map(&pk, 2);
                msgpack_pack_str_with_body(&pk, "a", 1);
                msgpack_pack_array(&pk, 2);
                msgpack_pack_ext_with_body(&pk, "abcd", 4, 5);
                msgpack_pack_array(&pk, 1);
                msgpack_pack_double(&pk, 2.0);
                msgpack_pack_int(&pk, 1);
                msgpack_pack_float(&pk, 3.0f);
                int rc = sl_msg_unpack((const uint8_t *)sb.data, sb.size, &back);
                CHECK(rc == 0, "%s/%d: unknown field %s refused: %s", sl_msg_type_name(t), variant,
                      g_repl_names[r], sl_strerror(rc));
                if (rc == 0)
                    check_same(&m, &back, "with unknown fields");
            }
            /* A known field twice, and `v` twice. */
            for (uint32_t k = 0; k < obj->via.map.size; k++) {
                msgpack_sbuffer_clear(&sb);
                msgpack_packer pk;
                msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
                msgpack_pack_map(&pk, obj->via.map.size + 1);
                for (uint32_t j = 0; j < obj->via.map.size; j++) {
                    msgpack_pack_object(&pk, obj->via.map.ptr[j].key);
                    msgpack_pack_object(&pk, obj->via.map.ptr[j].val);
                }
                msgpack_pack_object(&pk, obj->via.map.ptr[k].key);
                msgpack_pack_object(&pk, obj->via.map.ptr[k].val);
                quiet();
                int rc = sl_msg_unpack((const uint8_t *)sb.data, sb.size, &back);
                loud();
                CHECK(rc == -SL_EFORMAT, "%s: duplicate %.*s: %d", sl_msg_type_name(t),
                      (int)obj->via.map.ptr[k].key.via.str.size, obj->via.map.ptr[k].key.via.str.ptr, rc);
            }
            /* Each required field left out (found by trying each). */
            for (uint32_t k = 0; k < obj->via.map.size; k++) {
                msgpack_sbuffer_clear(&sb);
                msgpack_packer pk;
                msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
                msgpack_pack_map(&pk, obj->via.map.size - 1);
                for (uint32_t j = 0; j < obj->via.map.size; j++) {
                    if (j == k)
                        continue;
                    msgpack_pack_object(&pk, obj->via.map.ptr[j].key);
                    msgpack_pack_object(&pk, obj->via.map.ptr[j].val);
                }
                quiet();
                int rc = sl_msg_unpack((const uint8_t *)sb.data, sb.size, &back);
                loud();
                CHECK(rc == 0 || rc == -SL_EFORMAT, "%s: without %.*s: %d", sl_msg_type_name(t),
                      (int)obj->via.map.ptr[k].key.via.str.size, obj->via.map.ptr[k].key.via.str.ptr, rc);
                /* v, t and id (where it is required) must be there. */
                const msgpack_object *key = &obj->via.map.ptr[k].key;
                const char *kp = key->via.str.ptr;
                size_t kl = key->via.str.size;
                if ((kl == 1 && (kp[0] == 'v' || kp[0] == 't')) ||
                    (kl == 2 && !memcmp(kp, "id", 2) && t != SL_MSG_ERROR))
                    CHECK(rc == -SL_EFORMAT, "%s: without %.*s accepted", sl_msg_type_name(t),
                          (int)key->via.str.size, key->via.str.ptr);
            }
            msgpack_unpacked_destroy(&u);
        }
    }
    msgpack_sbuffer_destroy(&sb);
    CHECK(cases > 500, "only %d replacement cases", cases);
}

/* Packs a map of `n` entries with msgpack-c: v, t, then fields given by fn. */
typedef void (*fill_fn)(msgpack_packer *pk, void *arg);
static size_t build(msgpack_sbuffer *sb, uint64_t v, const char *type, uint32_t n_more, fill_fn fn, void *arg)
{
    msgpack_sbuffer_clear(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2 + n_more);
    msgpack_pack_str_with_body(&pk, "v", 1);
    msgpack_pack_uint64(&pk, v);
    msgpack_pack_str_with_body(&pk, "t", 1);
    msgpack_pack_str_with_body(&pk, type, strlen(type));
    if (fn)
        fn(&pk, arg);
    return sb->size;
}

static void kv_u(msgpack_packer *pk, const char *k, uint64_t v)
{
    msgpack_pack_str_with_body(pk, k, strlen(k));
    msgpack_pack_uint64(pk, v);
}
static void kv_s(msgpack_packer *pk, const char *k, const void *p, size_t n)
{
    msgpack_pack_str_with_body(pk, k, strlen(k));
    msgpack_pack_str_with_body(pk, p, n);
}

static void fill_id(msgpack_packer *pk, void *arg)
{
    (void)arg;
    kv_u(pk, "id", 99);
}
static void fill_tokenize_big(msgpack_packer *pk, void *arg)
{
    kv_u(pk, "id", 5);
    kv_s(pk, "text", g_buf2, *(size_t *)arg);
}
static void fill_detok_n(msgpack_packer *pk, void *arg)
{
    uint32_t n = *(uint32_t *)arg;
    kv_u(pk, "id", 5);
    msgpack_pack_str_with_body(pk, "tokens", 6);
    msgpack_pack_array(pk, n);
    for (uint32_t k = 0; k < n; k++)
        msgpack_pack_int(pk, 1);
}
static void fill_generate_both(msgpack_packer *pk, void *arg)
{
    int which = *(int *)arg; /* 0 neither, 1 both, 2 float64 and int for floats */
    kv_u(pk, "id", 5);
    kv_u(pk, "n_predict", 3);
    if (which == 1) {
        kv_s(pk, "prompt", "a", 1);
        msgpack_pack_str_with_body(pk, "tokens", 6);
        msgpack_pack_array(pk, 0);
    } else if (which == 2) {
        msgpack_pack_str_with_body(pk, "prompt", 6);
        msgpack_pack_bin_with_body(pk, "ab", 2);
        msgpack_pack_str_with_body(pk, "temperature", 11);
        msgpack_pack_double(pk, 0.25);
        msgpack_pack_str_with_body(pk, "top_p", 5);
        msgpack_pack_int(pk, -3);
    } else if (which == 3) {
        kv_s(pk, "prompt", "a", 1);
        msgpack_pack_str_with_body(pk, "temperature", 11);
        msgpack_pack_double(pk, 1e300);
    }
}
static void fill_nested(msgpack_packer *pk, void *arg)
{
    int depth = *(int *)arg;
    kv_u(pk, "id", 5);
    msgpack_pack_str_with_body(pk, "zz", 2);
    for (int k = 0; k < depth - 1; k++)
        msgpack_pack_array(pk, 1);
    msgpack_pack_nil(pk);
}
static void fill_event(msgpack_packer *pk, void *arg)
{
    int which = *(int *)arg;
    kv_s(pk, "kind", "mem", 3);
    msgpack_pack_str_with_body(pk, "f", 1);
    if (which == 0) { /* one field over the cap */
        msgpack_pack_map(pk, SL_PROTO_MAX_FIELDS + 1);
        for (int k = 0; k <= SL_PROTO_MAX_FIELDS; k++) {
            char name[8];
            int n = snprintf(name, sizeof name, "x%d", k);
            msgpack_pack_str_with_body(pk, name, (size_t)n);
            msgpack_pack_int(pk, k);
        }
    } else if (which == 1) { /* a name twice */
        msgpack_pack_map(pk, 2);
        kv_u(pk, "a", 1);
        kv_u(pk, "a", 2);
    } else if (which == 2) { /* structured and bin values are skipped, not counted */
        msgpack_pack_map(pk, SL_PROTO_MAX_FIELDS + 2);
        for (int k = 0; k < SL_PROTO_MAX_FIELDS; k++) {
            char name[8];
            int n = snprintf(name, sizeof name, "x%d", k);
            msgpack_pack_str_with_body(pk, name, (size_t)n);
            msgpack_pack_int(pk, -k);
        }
        msgpack_pack_str_with_body(pk, "later", 5);
        msgpack_pack_array(pk, 1);
        msgpack_pack_map(pk, 0);
        msgpack_pack_str_with_body(pk, "raw", 3);
        msgpack_pack_bin_with_body(pk, "r", 1);
    } else if (which == 3) { /* a name with a NUL */
        msgpack_pack_map(pk, 1);
        msgpack_pack_str_with_body(pk, "a\0b", 3);
        msgpack_pack_nil(pk);
    } else { /* a key that is not a string */
        msgpack_pack_map(pk, 1);
        msgpack_pack_int(pk, 1);
        msgpack_pack_nil(pk);
    }
}
static void fill_welcome_segs(msgpack_packer *pk, void *arg)
{
    uint32_t n = *(uint32_t *)arg;
    kv_u(pk, "wid", 1);
    kv_u(pk, "epoch", 1);
    kv_s(pk, "instance", "i", 1);
    msgpack_pack_str_with_body(pk, "segs", 4);
    msgpack_pack_array(pk, n);
    for (uint32_t k = 0; k < n; k++)
        msgpack_pack_str_with_body(pk, "/sluice-i-slots", 15);
}

static void test_limits(void)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    sl_msg m;
    quiet();

    /* Unknown version: refused distinctly, version and id reported. */
    size_t n = build(&sb, 2, "status", 1, fill_id, NULL);
    int rc = sl_msg_unpack((const uint8_t *)sb.data, n, &m);
    int rc_v2 = rc;
    bool v2_ok = m.version == 2 && m.id == 99;
    n = build(&sb, 1u << 20, "no_such_type", 1, fill_id, NULL);
    int rc_vbig = sl_msg_unpack((const uint8_t *)sb.data, n, &m);
    /* Unknown type. */
    n = build(&sb, 1, "status_v2", 1, fill_id, NULL);
    int rc_t = sl_msg_unpack((const uint8_t *)sb.data, n, &m);
    bool t_ok = m.id == 99 && m.version == 1 && m.type == SL_MSG_NONE;
    /* No v, no t. */
    msgpack_sbuffer_clear(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    kv_s(&pk, "t", "status", 6);
    int rc_nov = sl_msg_unpack((const uint8_t *)sb.data, sb.size, &m);
    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 1);
    kv_u(&pk, "v", 1);
    int rc_not = sl_msg_unpack((const uint8_t *)sb.data, sb.size, &m);
    /* Not a map at all; the never-used byte 0xc1; empty input. */
    static const uint8_t arr[] = {0x91, 0x01}, c1[] = {0x81, 0xa1, 'v', 0xc1};
    int rc_arr = sl_msg_unpack(arr, sizeof arr, &m);
    int rc_c1 = sl_msg_unpack(c1, sizeof c1, &m);
    int rc_empty = sl_msg_unpack(arr, 0, &m);
    if (sl_msg_unpack(NULL, 0, &m) != -SL_EFORMAT)
        rc_empty = 0;
    /* A map32 claiming 2^32-1 entries in a few bytes: refused at once. */
    static const uint8_t huge[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'v', 0x01};
    int rc_huge = sl_msg_unpack(huge, sizeof huge, &m);
    static const uint8_t huge_arr[] = {0x82, 0xa1, 'v', 0x01, 0xa1, 'x', 0xdd, 0xff, 0xff, 0xff, 0xff, 0x00};
    int rc_huge_arr = sl_msg_unpack(huge_arr, sizeof huge_arr, &m);
    /* A str32 whose length runs past the end. */
    static const uint8_t long_str[] = {0x81, 0xa1, 'x', 0xdb, 0x7f, 0xff, 0xff, 0xff, 'a'};
    int rc_long_str = sl_msg_unpack(long_str, sizeof long_str, &m);

    /* Whole message over the cap. */
    int rc_big = sl_msg_unpack(g_buf, SL_PROTO_MAX_MSG + 1, &m);
    /* Text at the cap and one byte over. */
    memset(g_buf2, 'a', SL_PROTO_MAX_TEXT + 1);
    size_t tl = SL_PROTO_MAX_TEXT;
    n = build(&sb, 1, "tokenize", 2, fill_tokenize_big, &tl);
    int rc_text_max = sl_msg_unpack((const uint8_t *)sb.data, n, &m);
    bool text_ok = rc_text_max == 0 && m.tokenize.text.len == SL_PROTO_MAX_TEXT;
    tl++;
    n = build(&sb, 1, "tokenize", 2, fill_tokenize_big, &tl);
    int rc_text_over = sl_msg_unpack((const uint8_t *)sb.data, n, &m);
    /* Token arrays at the cap and over. */
    uint32_t nt = SL_PROTO_MAX_TOKENS;
    n = build(&sb, 1, "detokenize", 2, fill_detok_n, &nt);
    int rc_tok_max = sl_msg_unpack((const uint8_t *)sb.data, n, &m);
    bool tok_ok = rc_tok_max == 0 && m.detokenize.tokens.n == SL_PROTO_MAX_TOKENS;
    nt++;
    n = build(&sb, 1, "detokenize", 2, fill_detok_n, &nt);
    int rc_tok_over = sl_msg_unpack((const uint8_t *)sb.data, n, &m);
    /* generate: neither or both of prompt and tokens; other encodings of
     * float fields and a bin prompt; a float that does not fit. */
    int which = 0;
    n = build(&sb, 1, "generate", 2, fill_generate_both, &which);
    int rc_neither = sl_msg_unpack((const uint8_t *)sb.data, n, &m);
    which = 1;
    n = build(&sb, 1, "generate", 4, fill_generate_both, &which);
    int rc_both = sl_msg_unpack((const uint8_t *)sb.data, n, &m);
    which = 2;
    n = build(&sb, 1, "generate", 5, fill_generate_both, &which);
    int rc_enc = sl_msg_unpack((const uint8_t *)sb.data, n, &m);
    bool enc_ok = rc_enc == 0 && m.generate.sampling.temperature == 0.25f &&
                  m.generate.sampling.top_p == -3.0f && m.generate.prompt.len == 2 &&
                  m.generate.sampling.top_k == 40 && m.generate.add_bos;
    which = 3;
    n = build(&sb, 1, "generate", 4, fill_generate_both, &which);
    int rc_f32 = sl_msg_unpack((const uint8_t *)sb.data, n, &m);
    /* Nesting of an unknown value: the top map and SL_PROTO_MAX_DEPTH - 1
     * arrays pass, one more array is refused. */
    int depth = SL_PROTO_MAX_DEPTH;
    n = build(&sb, 1, "status", 2, fill_nested, &depth);
    int rc_deep_ok = sl_msg_unpack((const uint8_t *)sb.data, n, &m);
    depth = SL_PROTO_MAX_DEPTH + 1;
    n = build(&sb, 1, "status", 2, fill_nested, &depth);
    int rc_deep = sl_msg_unpack((const uint8_t *)sb.data, n, &m);
    /* Event maps. */
    int rc_ev[5];
    bool ev_skip_ok = false;
    for (int k = 0; k < 5; k++) {
        n = build(&sb, 1, "event", 2, fill_event, &k);
        rc_ev[k] = sl_msg_unpack((const uint8_t *)sb.data, n, &m);
        if (k == 2)
            ev_skip_ok = rc_ev[k] == 0 && m.event.n_fields == SL_PROTO_MAX_FIELDS;
    }
    /* Segments at the cap and over. */
    uint32_t ns = SL_PROTO_MAX_SEGS;
    n = build(&sb, 1, "welcome", 4, fill_welcome_segs, &ns);
    int rc_segs_max = sl_msg_unpack((const uint8_t *)sb.data, n, &m);
    bool segs_ok = rc_segs_max == 0 && m.welcome.n_segs == SL_PROTO_MAX_SEGS &&
                   m.welcome.segs[15].len == 15 && m.welcome.hb_ms == SL_PROTO_HEARTBEAT_MS;
    ns++;
    n = build(&sb, 1, "welcome", 4, fill_welcome_segs, &ns);
    int rc_segs_over = sl_msg_unpack((const uint8_t *)sb.data, n, &m);
    loud();

    CHECK(rc_v2 == -SL_EVERSION && v2_ok, "v=2: %d, version %u, id %llu", rc_v2, m.version, 0ull);
    CHECK(rc_vbig == -SL_EVERSION, "v=2^20 with an unknown type: %d (version wins)", rc_vbig);
    CHECK(rc_t == -SL_EUNSUPPORTED && t_ok, "unknown type: %d", rc_t);
    CHECK(rc_nov == -SL_EFORMAT && rc_not == -SL_EFORMAT, "no v: %d, no t: %d", rc_nov, rc_not);
    CHECK(rc_arr == -SL_EFORMAT && rc_c1 == -SL_EFORMAT && rc_empty == -SL_EFORMAT,
          "array %d, 0xc1 %d, empty %d", rc_arr, rc_c1, rc_empty);
    CHECK(rc_huge == -SL_EFORMAT && rc_huge_arr == -SL_EFORMAT && rc_long_str == -SL_EFORMAT,
          "huge counts: %d %d %d", rc_huge, rc_huge_arr, rc_long_str);
    CHECK(rc_big == -SL_ERANGE, "over SL_PROTO_MAX_MSG: %d", rc_big);
    CHECK(text_ok, "text at the cap: %d", rc_text_max);
    CHECK(rc_text_over == -SL_ERANGE, "text over the cap: %d", rc_text_over);
    CHECK(tok_ok, "tokens at the cap: %d", rc_tok_max);
    CHECK(rc_tok_over == -SL_ERANGE, "tokens over the cap: %d", rc_tok_over);
    CHECK(rc_neither == -SL_EFORMAT && rc_both == -SL_EFORMAT, "generate neither %d both %d", rc_neither,
          rc_both);
    CHECK(enc_ok, "float64 / int floats, bin prompt: %d", rc_enc);
    CHECK(rc_f32 == -SL_ERANGE, "1e300 as a float: %d", rc_f32);
    CHECK(rc_deep_ok == 0 && rc_deep == -SL_EFORMAT, "nesting: %d %d", rc_deep_ok, rc_deep);
    CHECK(rc_ev[0] == -SL_ERANGE, "33 event fields: %d", rc_ev[0]);
    CHECK(rc_ev[1] == -SL_EFORMAT, "event field twice: %d", rc_ev[1]);
    CHECK(ev_skip_ok, "structured event values skipped: %d", rc_ev[2]);
    CHECK(rc_ev[3] == -SL_EFORMAT, "NUL in a field name: %d", rc_ev[3]);
    CHECK(rc_ev[4] == -SL_ETYPE, "integer field name: %d", rc_ev[4]);
    CHECK(segs_ok, "16 segments: %d", rc_segs_max);
    CHECK(rc_segs_over == -SL_ERANGE, "17 segments: %d", rc_segs_over);
    msgpack_sbuffer_destroy(&sb);
}

static void test_pack_refusals(void)
{
    sl_msg m;
    size_t n;
    int rc[12];
    quiet();
    sl_msg_init(&m, SL_MSG_GENERATE);
    m.id = 1;
    rc[0] = sl_msg_pack(&m, g_buf, SL_PROTO_MAX_MSG, &n); /* neither prompt nor tokens */
    m.generate.prompt = sl_msg_cstr("x");
    m.generate.n_predict = SL_PROTO_MAX_TOKENS + 1;
    rc[1] = sl_msg_pack(&m, g_buf, SL_PROTO_MAX_MSG, &n);
    m.generate.n_predict = 1;
    m.id = 0;
    rc[2] = sl_msg_pack(&m, g_buf, SL_PROTO_MAX_MSG, &n); /* request id 0 */
    m.id = 1;
    static const int32_t neg[] = {1, -2};
    m.generate.prompt = (sl_msg_str){0};
    m.generate.tokens.ids = neg;
    m.generate.tokens.n = 2;
    rc[3] = sl_msg_pack(&m, g_buf, SL_PROTO_MAX_MSG, &n);
    sl_msg_init(&m, SL_MSG_TOKENIZE);
    m.id = 1;
    rc[4] = sl_msg_pack(&m, g_buf, SL_PROTO_MAX_MSG, &n); /* text absent */
    sl_msg_init(&m, SL_MSG_REGISTER);
    m.reg.role = SL_MSG_ROLE_COORDINATOR; /* not allowed in register */
    m.reg.pid = 1;
    m.reg.name = sl_msg_cstr("i");
    rc[5] = sl_msg_pack(&m, g_buf, SL_PROTO_MAX_MSG, &n);
    m.reg.role = SL_MSG_ROLE_LOADER;
    m.reg.name = (sl_msg_str){"a\0b", 3};
    rc[6] = sl_msg_pack(&m, g_buf, SL_PROTO_MAX_MSG, &n);
    sl_msg_init(&m, SL_MSG_TOKEN);
    m.id = 1;
    m.token.text = sl_msg_cstr("");
    m.token.finish = (sl_msg_finish)9;
    rc[7] = sl_msg_pack(&m, g_buf, SL_PROTO_MAX_MSG, &n);
    sl_msg_init(&m, SL_MSG_EVENT);
    m.event.kind = sl_msg_cstr("k");
    m.event.n_fields = 2;
    m.event.fields[0].name = sl_msg_cstr("a");
    m.event.fields[1].name = sl_msg_cstr("a");
    rc[8] = sl_msg_pack(&m, g_buf, SL_PROTO_MAX_MSG, &n); /* a name twice */
    m.type = SL_MSG_NONE;
    rc[9] = sl_msg_pack(&m, g_buf, SL_PROTO_MAX_MSG, &n);
    /* Text of the cap fits the message cap; the buffer is what limits. */
    sl_msg_init(&m, SL_MSG_TEXT);
    m.id = 1;
    m.text = (sl_msg_str){(const char *)g_buf2, SL_PROTO_MAX_TEXT + 1};
    rc[10] = sl_msg_pack(&m, g_buf, SL_PROTO_MAX_MSG, &n);
    m.text.len = SL_PROTO_MAX_TEXT;
    rc[11] = sl_msg_pack(&m, g_buf, SL_PROTO_MAX_MSG, &n);
    loud();
    for (int k = 0; k <= 10; k++)
        CHECK(rc[k] == -SL_EINVAL, "pack refusal %d gave %d", k, rc[k]);
    CHECK(rc[11] == 0 && n > SL_PROTO_MAX_TEXT, "text at the cap: %d", rc[11]);

    /* sl_msg_error_init */
    sl_msg_error_init(&m, 12, -SL_EVERSION, "speak v1");
    CHECK(m.type == SL_MSG_ERROR && m.id == 12 && m.error.code == SL_EVERSION && m.error.msg.len == 8,
          "error_init");
    sl_msg_error_init(&m, 0, 0, NULL);
    CHECK(m.error.code == SL_EINVAL && m.error.msg.ptr && m.error.msg.len == 0, "error_init defaults");
    CHECK(sl_msg_pack(&m, g_buf, SL_PROTO_MAX_MSG, &n) == 0, "error_init packs");

    /* Small helpers. */
    char s[4];
    CHECK(sl_msg_str_copy(sl_msg_cstr("abc"), s, 4) == 0 && !strcmp(s, "abc"), "str_copy");
    CHECK(sl_msg_str_copy(sl_msg_cstr("abcd"), s, 4) == -SL_ERANGE && s[0] == 0, "str_copy short");
    CHECK(sl_msg_str_copy((sl_msg_str){"a\0", 2}, s, 4) == -SL_ERANGE, "str_copy NUL");
    for (int t = 1; t < SL_MSG_TYPE_COUNT; t++) {
        const char *name = sl_msg_type_name((sl_msg_type)t);
        CHECK((int)sl_msg_type_from_name(name, strlen(name)) == t, "type name %s", name);
    }
    CHECK(sl_msg_type_from_name("statu", 5) == SL_MSG_NONE &&
              !strcmp(sl_msg_type_name(SL_MSG_TYPE_COUNT), "?"),
          "bad type names");
}

/* ------------------------------------------------------------ ZeroMQ */

/* Waits up to ms for sock to become readable; 1 when it is. */
static int wait_readable(void *sock, int ms)
{
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    return zmq_poll(&it, 1, ms) == 1;
}

static void test_zmq(void)
{
    char dir[] = "/tmp/sluice-test-proto.XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp");
        return;
    }
    char addr[256], pub_addr[256];
    snprintf(addr, sizeof addr, "ipc://%s/c.sock", dir);
    snprintf(pub_addr, sizeof pub_addr, "ipc://%s/m.sock", dir);
    void *ctx = zmq_ctx_new();
    void *router = NULL, *dealer = NULL, *req = NULL, *xpub = NULL, *sub = NULL;
    CHECK(sl_endpoint_open(ctx, ZMQ_ROUTER, addr, true, &router) == 0, "router");
    CHECK(sl_endpoint_open(ctx, ZMQ_DEALER, addr, false, &dealer) == 0, "dealer");
    CHECK(sl_endpoint_open(ctx, ZMQ_REQ, addr, false, &req) == 0, "req");
    CHECK(sl_endpoint_open(ctx, ZMQ_XPUB, pub_addr, true, &xpub) == 0, "xpub");
    CHECK(sl_endpoint_open(ctx, ZMQ_SUB, pub_addr, false, &sub) == 0, "sub");
    if (!router || !dealer || !req || !xpub || !sub)
        goto out;
    int64_t maxmsg = 0;
    size_t optlen = sizeof maxmsg;
    zmq_getsockopt(router, ZMQ_MAXMSGSIZE, &maxmsg, &optlen);
    CHECK(maxmsg == (int64_t)SL_PROTO_MAX_MSG, "ZMQ_MAXMSGSIZE %lld", (long long)maxmsg);
    int timeout = 10000; /* a bound on a hang, not a timing check */
    zmq_setsockopt(router, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(dealer, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(req, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(sub, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(xpub, ZMQ_RCVTIMEO, &timeout, sizeof timeout);

    sl_msg m, got;
    sl_envelope env;
    size_t n;
    /* Nothing there yet. */
    CHECK(sl_endpoint_recv_msg(router, &env, g_buf, SL_PROTO_MAX_MSG, &got, SL_EP_DONTWAIT) == -SL_EAGAIN,
          "empty router");

    /* DEALER -> ROUTER: a generate; ROUTER -> DEALER: a stream of tokens. */
    make_msg(&m, SL_MSG_GENERATE, 1);
    m.id = 41;
    CHECK(sl_endpoint_send_msg(dealer, NULL, &m, g_buf2, SL_PROTO_MAX_MSG, 0) == 0, "send generate");
    int rc = sl_endpoint_recv_msg(router, &env, g_buf, SL_PROTO_MAX_MSG, &got, 0);
    CHECK(rc == 0 && got.type == SL_MSG_GENERATE && got.id == 41 && env.id_len > 0 && !env.delim,
          "router got generate: %s", sl_strerror(rc));
    if (rc == 0)
        check_same(&m, &got, "over zmq");
    sl_envelope client = env;
    for (int k = 0; k < 3; k++) {
        sl_msg_init(&m, SL_MSG_TOKEN);
        m.id = 41;
        m.token.seq = (uint64_t)k;
        m.token.tok = 100 + k;
        m.token.text = sl_msg_cstr(k == 1 ? "" : " x");
        if (k == 2) {
            m.token.finish = SL_FINISH_LENGTH;
            m.token.n_prompt = 9;
            m.token.n_gen = 3;
        }
        CHECK(sl_endpoint_send_msg(router, &client, &m, g_buf2, SL_PROTO_MAX_MSG, SL_EP_DONTWAIT) == 0,
              "send token");
    }
    for (int k = 0; k < 3; k++) {
        rc = sl_endpoint_recv_msg(dealer, NULL, g_buf, SL_PROTO_MAX_MSG, &got, 0);
        CHECK(rc == 0 && got.type == SL_MSG_TOKEN && got.id == 41 && got.token.seq == (uint64_t)k &&
                  got.token.tok == 100 + k &&
                  got.token.finish == (k == 2 ? SL_FINISH_LENGTH : SL_FINISH_NONE),
              "token %d: %s", k, sl_strerror(rc));
    }
    CHECK(got.token.n_prompt == 9 && got.token.n_gen == 3, "usage on the last token");

    /* A malformed message: the ROUTER learns who sent it and replies with an
     * error; then it keeps serving. */
    static const uint8_t junk[] = {0x82, 0xa1, 'v', 0x01, 0xa1};
    CHECK(sl_endpoint_send(dealer, NULL, junk, sizeof junk, 0) == 0, "send junk");
    quiet();
    rc = sl_endpoint_recv_msg(router, &env, g_buf, SL_PROTO_MAX_MSG, &got, 0);
    loud();
    CHECK(rc == -SL_EFORMAT && env.id_len == client.id_len && !memcmp(env.id, client.id, env.id_len),
          "junk: %d, sender known", rc);
    sl_msg_error_init(&m, got.id, rc, "malformed message");
    CHECK(sl_endpoint_send_msg(router, &env, &m, g_buf2, SL_PROTO_MAX_MSG, 0) == 0, "send error");
    rc = sl_endpoint_recv_msg(dealer, NULL, g_buf, SL_PROTO_MAX_MSG, &got, 0);
    CHECK(rc == 0 && got.type == SL_MSG_ERROR && got.error.code == SL_EFORMAT && got.id == 0,
          "error reply: %d", rc);
    /* A version this side does not speak: the id comes back. */
    {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        n = build(&sb, 7, "status", 1, fill_id, NULL);
        CHECK(sl_endpoint_send(dealer, NULL, (const uint8_t *)sb.data, n, 0) == 0, "send v7");
        msgpack_sbuffer_destroy(&sb);
        quiet();
        rc = sl_endpoint_recv_msg(router, &env, g_buf, SL_PROTO_MAX_MSG, &got, 0);
        loud();
        CHECK(rc == -SL_EVERSION && got.id == 99 && got.version == 7, "v7: %d", rc);
    }

    /* Two frames from a DEALER: refused whole, the next message is fine. */
    zmq_send(dealer, "a", 1, ZMQ_SNDMORE);
    zmq_send(dealer, "b", 1, 0);
    quiet();
    rc = sl_endpoint_recv(router, &env, g_buf, SL_PROTO_MAX_MSG, &n, 0);
    loud();
    CHECK(rc == -SL_EFORMAT && env.id_len == client.id_len, "two frames: %d", rc);
    sl_msg_init(&m, SL_MSG_STATUS);
    m.id = 5;
    sl_endpoint_send_msg(dealer, NULL, &m, g_buf2, SL_PROTO_MAX_MSG, 0);
    rc = sl_endpoint_recv_msg(router, &env, g_buf, SL_PROTO_MAX_MSG, &got, 0);
    CHECK(rc == 0 && got.type == SL_MSG_STATUS && got.id == 5, "after two frames: %d", rc);
    /* A buffer too small for the message: refused and drained. */
    sl_endpoint_send_msg(dealer, NULL, &m, g_buf2, SL_PROTO_MAX_MSG, 0);
    quiet();
    rc = sl_endpoint_recv(router, &env, g_buf, 4, &n, 0);
    loud();
    CHECK(rc == -SL_ERANGE, "small buffer: %d", rc);

    /* A REQ client puts an empty delimiter; the reply keeps it. */
    sl_msg_init(&m, SL_MSG_STATUS);
    m.id = 6;
    CHECK(sl_endpoint_send_msg(req, NULL, &m, g_buf2, SL_PROTO_MAX_MSG, 0) == 0, "req send");
    rc = sl_endpoint_recv_msg(router, &env, g_buf, SL_PROTO_MAX_MSG, &got, 0);
    CHECK(rc == 0 && env.delim && got.id == 6, "router from req: %d delim %d", rc, env.delim);
    sl_msg_init(&m, SL_MSG_STATUS_REPLY);
    m.id = 6;
    m.status_reply.model = sl_msg_cstr("m");
    m.status_reply.sessions = 2;
    CHECK(sl_endpoint_send_msg(router, &env, &m, g_buf2, SL_PROTO_MAX_MSG, 0) == 0, "reply to req");
    rc = sl_endpoint_recv_msg(req, NULL, g_buf, SL_PROTO_MAX_MSG, &got, 0);
    CHECK(rc == 0 && got.type == SL_MSG_STATUS_REPLY && got.status_reply.sessions == 2, "req got reply: %d",
          rc);

    /* A routing id nobody has. */
    sl_envelope nobody;
    sl_envelope_set(&nobody, "nobody");
    CHECK(sl_endpoint_send_msg(router, &nobody, &m, g_buf2, SL_PROTO_MAX_MSG, 0) == -SL_ENOTFOUND,
          "unknown peer");

    /* XPUB -> SUB: the kind is the topic frame. Wait for the subscription
     * to reach the XPUB (it delivers it as a message) before publishing. */
    rc = zmq_recv(xpub, g_buf, 16, 0);
    CHECK(rc == 1 && g_buf[0] == 1, "subscription seen: %d", rc);
    make_msg(&m, SL_MSG_EVENT, 1);
    m.event.kind = sl_msg_cstr("slot");
    sl_envelope topic;
    sl_envelope_set(&topic, "slot");
    CHECK(sl_endpoint_send_msg(xpub, &topic, &m, g_buf2, SL_PROTO_MAX_MSG, SL_EP_DONTWAIT) == 0, "publish");
    rc = sl_endpoint_recv_msg(sub, &env, g_buf, SL_PROTO_MAX_MSG, &got, 0);
    CHECK(rc == 0 && got.type == SL_MSG_EVENT && env.id_len == 4 && !memcmp(env.id, "slot", 4) &&
              got.event.n_fields == SL_PROTO_MAX_FIELDS,
          "event: %d", rc);

    /* Exactly SL_PROTO_MAX_MSG bytes: a text reply padded with an unknown
     * bin field up to the cap arrives and unpacks. */
    {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 5);
        kv_u(&pk, "v", 1);
        kv_s(&pk, "t", "text", 4);
        kv_u(&pk, "id", 77);
        msgpack_pack_str_with_body(&pk, "text", 4);
        msgpack_pack_bin_with_body(&pk, "hi", 2);
        msgpack_pack_str_with_body(&pk, "pad", 3);
        size_t pad = SL_PROTO_MAX_MSG - sb.size - 5; /* bin32 header is 5 bytes */
        msgpack_pack_bin(&pk, pad);
        memset(g_buf2, 0x5a, pad);
        msgpack_pack_bin_body(&pk, g_buf2, pad);
        CHECK(sb.size == SL_PROTO_MAX_MSG, "padded to %zu", sb.size);
        CHECK(sl_endpoint_send(router, &client, (const uint8_t *)sb.data, sb.size, 0) == 0, "send max");
        rc = sl_endpoint_recv_msg(dealer, NULL, g_buf, SL_PROTO_MAX_MSG, &got, 0);
        CHECK(rc == 0 && got.type == SL_MSG_TEXT && got.id == 77 && got.text.len == 2, "max-size message: %d",
              rc);
        msgpack_sbuffer_destroy(&sb);
    }

    /* One byte more: libzmq drops it (and the connection; the DEALER
     * reconnects). The ROUTER keeps serving: pings sent after it arrive,
     * and nothing big ever does. */
    {
        memset(g_buf2, 0x5a, SL_PROTO_MAX_MSG + 1);
        CHECK(zmq_send(dealer, g_buf2, SL_PROTO_MAX_MSG + 1, 0) == (int)(SL_PROTO_MAX_MSG + 1),
              "send oversized");
        bool ping_seen = false, big_seen = false;
        for (int k = 0; k < 100 && !ping_seen; k++) {
            sl_msg_init(&m, SL_MSG_STATUS);
            m.id = 1000 + (uint64_t)k;
            sl_endpoint_send_msg(dealer, NULL, &m, g_buf2 + SL_PROTO_MAX_MSG / 2, SL_PROTO_MAX_MSG / 2,
                                 SL_EP_DONTWAIT);
            while (wait_readable(router, 100)) {
                quiet();
                rc = sl_endpoint_recv(router, &env, g_buf, SL_PROTO_MAX_MSG, &n, 0);
                loud();
                if (rc == -SL_ERANGE || (rc == 0 && n > 1000))
                    big_seen = true;
                if (rc == 0 && sl_msg_unpack(g_buf, n, &got) == 0 && got.type == SL_MSG_STATUS)
                    ping_seen = true;
            }
        }
        CHECK(ping_seen && !big_seen, "after an oversized message: ping %d, big %d", ping_seen, big_seen);
    }
    /* The sender's own check: sl_endpoint_send refuses over the cap. */
    quiet();
    rc = sl_endpoint_send(dealer, NULL, g_buf2, SL_PROTO_MAX_MSG + 1, 0);
    loud();
    CHECK(rc == -SL_ERANGE, "send over the cap: %d", rc);

    /* A bad address. */
    void *bad = NULL;
    char longaddr[300] = "ipc:///tmp/";
    memset(longaddr + 11, 'a', 200);
    longaddr[211] = 0;
    quiet();
    rc = sl_endpoint_open(ctx, ZMQ_ROUTER, longaddr, true, &bad);
    int rc2 = sl_endpoint_open(ctx, ZMQ_ROUTER, "nonsense", true, &bad);
    loud();
    CHECK(rc < 0 && rc2 == -SL_EINVAL && bad == NULL, "bad addresses: %d %d", rc, rc2);

out:
    sl_endpoint_close(router);
    sl_endpoint_close(dealer);
    sl_endpoint_close(req);
    sl_endpoint_close(xpub);
    sl_endpoint_close(sub);
    zmq_ctx_term(ctx);
    char path[300];
    snprintf(path, sizeof path, "%s/c.sock", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/m.sock", dir);
    unlink(path);
    CHECK(rmdir(dir) == 0, "temp dir removed");
}

#if defined(__SANITIZE_ADDRESS__)
#define SL_HAVE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SL_HAVE_ASAN 1
#endif
#endif
#ifdef SL_HAVE_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

int main(void)
{
#ifdef SL_HAVE_ASAN
    __sanitizer_set_report_fd((void *)(intptr_t)dup(2));
#endif
    g_buf = malloc(SL_PROTO_MAX_MSG + 16);
    g_buf2 = malloc(SL_PROTO_MAX_MSG + 16);
    SL_ASSERT(g_buf && g_buf2);
    for (size_t k = 0; k < sizeof g_long; k++)
        g_long[k] = (char)('a' + k % 26);
    test_round_trip();
    test_hand_written();
    test_truncations();
    test_wrong_types();
    test_limits();
    test_pack_refusals();
    test_zmq();
    free(g_buf);
    free(g_buf2);
    unlink(QUIET_LOG);
    return sl_test_finish();
}
