/* libFuzzer target for protocol messages (proto/msg.h). For each input:
 *  - sl_msg_unpack must accept it or refuse it with one of the documented
 *    codes;
 *  - when it accepts, every pointer the message holds is read end to end
 *    (so AddressSanitizer checks it lies inside the input), msgpack-c must
 *    also read the input as exactly one object (the reader accepts only
 *    real msgpack), the message must pack again (the packer accepts all
 *    that the unpacker does), and unpacking and packing that again must
 *    give the same bytes.
 * Seeds come from make_proto_corpus; tests/fuzz/run.sh drives it. */
#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "proto/msg.h"

static volatile uint64_t g_sink;
static uint8_t *g_pack1, *g_pack2; /* SL_PROTO_MAX_MSG each */
static int32_t *g_ids;             /* SL_PROTO_MAX_TOKENS */

#define REQUIRE(cond)                                                                                        \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "fuzz_proto: %s:%d: %s\n", __FILE__, __LINE__, #cond);                           \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

static void touch(sl_msg_str s)
{
    if (s.len)
        g_sink += (uint8_t)s.ptr[0] + (uint8_t)s.ptr[s.len - 1];
}

static void touch_tokens(const sl_msg_tokens *t)
{
    uint32_t n = sl_msg_tokens_get(t, g_ids, SL_PROTO_MAX_TOKENS);
    REQUIRE(n == t->n && n <= SL_PROTO_MAX_TOKENS);
    for (uint32_t k = 0; k < n; k++) {
        REQUIRE(g_ids[k] >= 0);
        g_sink += (uint32_t)g_ids[k];
    }
}

static void walk(const sl_msg *m)
{
    switch (m->type) {
    case SL_MSG_GENERATE:
        touch(m->generate.prompt);
        touch_tokens(&m->generate.tokens);
        REQUIRE((m->generate.prompt.ptr != NULL) != (m->generate.tokens.packed != NULL));
        break;
    case SL_MSG_TOKENIZE:
        touch(m->tokenize.text);
        break;
    case SL_MSG_DETOKENIZE:
        touch_tokens(&m->detokenize.tokens);
        break;
    case SL_MSG_TOKEN:
        touch(m->token.text);
        break;
    case SL_MSG_TOKENS:
        touch_tokens(&m->tokens);
        break;
    case SL_MSG_TEXT:
        touch(m->text);
        break;
    case SL_MSG_STATUS_REPLY:
        touch(m->status_reply.model);
        break;
    case SL_MSG_ERROR:
        touch(m->error.msg);
        break;
    case SL_MSG_REGISTER:
        touch(m->reg.name);
        break;
    case SL_MSG_WELCOME:
        touch(m->welcome.instance);
        REQUIRE(m->welcome.n_segs <= SL_PROTO_MAX_SEGS);
        for (uint32_t k = 0; k < m->welcome.n_segs; k++)
            touch(m->welcome.segs[k]);
        break;
    case SL_MSG_EVENT:
        touch(m->event.kind);
        REQUIRE(m->event.n_fields <= SL_PROTO_MAX_FIELDS);
        for (uint32_t k = 0; k < m->event.n_fields; k++) {
            touch(m->event.fields[k].name);
            if (m->event.fields[k].type == SL_VAL_STR)
                touch(m->event.fields[k].val.s);
        }
        break;
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_pack1) {
        g_pack1 = malloc(SL_PROTO_MAX_MSG);
        g_pack2 = malloc(SL_PROTO_MAX_MSG);
        g_ids = malloc(SL_PROTO_MAX_TOKENS * sizeof *g_ids);
        REQUIRE(g_pack1 && g_pack2 && g_ids);
    }
    sl_msg m;
    int rc = sl_msg_unpack(data, size, &m);
    if (rc < 0) {
        REQUIRE(rc == -SL_EFORMAT || rc == -SL_ETYPE || rc == -SL_ERANGE || rc == -SL_EVERSION ||
                rc == -SL_EUNSUPPORTED);
        REQUIRE(rc != -SL_EUNSUPPORTED || m.type == SL_MSG_NONE);
        return 0;
    }
    REQUIRE(m.type > SL_MSG_NONE && m.type < SL_MSG_TYPE_COUNT && m.version == SL_PROTO_VERSION);
    walk(&m);

    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int mrc = msgpack_unpack_next(&u, (const char *)data, size, &off);
    REQUIRE(mrc == MSGPACK_UNPACK_SUCCESS && off == size && u.data.type == MSGPACK_OBJECT_MAP);
    msgpack_unpacked_destroy(&u);

    size_t n1 = 0, n2 = 0;
    REQUIRE(sl_msg_pack(&m, g_pack1, SL_PROTO_MAX_MSG, &n1) == 0);
    sl_msg again;
    REQUIRE(sl_msg_unpack(g_pack1, n1, &again) == 0);
    REQUIRE(sl_msg_pack(&again, g_pack2, SL_PROTO_MAX_MSG, &n2) == 0);
    REQUIRE(n1 == n2 && memcmp(g_pack1, g_pack2, n1) == 0);
    return 0;
}
