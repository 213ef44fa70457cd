/* Writes a seed corpus for fuzz_proto: every message type packed by
 * sl_msg_pack, with few and with many fields set, so that the fuzzer starts
 * from valid messages and spends its time on the field decoders rather than
 * on finding the map header.
 *
 * Usage: make_proto_corpus DIR   (DIR must exist; files are DIR/seed-NN.msgpack) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "proto/msg.h"

static int g_failed;
static int g_n;
static uint8_t g_buf[1 << 16];

static void save(const sl_msg *m, const char *dir)
{
    size_t len = 0;
    int rc = sl_msg_pack(m, g_buf, sizeof g_buf, &len);
    if (rc < 0) {
        fprintf(stderr, "make_proto_corpus: packing a %s: %s\n", sl_msg_type_name(m->type), sl_strerror(rc));
        g_failed = 1;
        return;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/seed-%02d.msgpack", dir, g_n++);
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(g_buf, 1, len, f) == len;
    if (f && fclose(f) != 0)
        ok = 0;
    if (!ok) {
        fprintf(stderr, "make_proto_corpus: cannot write %s\n", path);
        g_failed = 1;
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    static const int32_t ids[] = {1, 127, 128, 40000, 70000, 2147483647};
    sl_msg m;

    sl_msg_init(&m, SL_MSG_GENERATE);
    m.id = 1;
    m.generate.prompt = sl_msg_cstr("Once upon a time");
    m.generate.n_predict = 32;
    m.generate.resume_from = 3;
    save(&m, dir);
    m.generate.prompt = (sl_msg_str){0};
    m.generate.tokens = (sl_msg_tokens){.n = 6, .ids = ids};
    m.generate.sampling.temperature = 0;
    m.generate.sampling.seed = 0xfedcba9876543210ull;
    save(&m, dir);

    sl_msg_init(&m, SL_MSG_TOKENIZE);
    m.id = 2;
    m.tokenize.text = sl_msg_cstr("Hello world");
    m.tokenize.special = true;
    save(&m, dir);

    sl_msg_init(&m, SL_MSG_DETOKENIZE);
    m.id = 3;
    m.detokenize.tokens = (sl_msg_tokens){.n = 6, .ids = ids};
    save(&m, dir);

    sl_msg_init(&m, SL_MSG_CANCEL);
    m.id = 1;
    save(&m, dir);
    sl_msg_init(&m, SL_MSG_STATUS);
    m.id = 4;
    save(&m, dir);

    sl_msg_init(&m, SL_MSG_TOKEN);
    m.id = 1;
    m.token.seq = 5;
    m.token.tok = 128;
    m.token.text = sl_msg_cstr(" time");
    save(&m, dir);
    m.token.tok = -1;
    m.token.text = sl_msg_cstr("");
    m.token.finish = SL_FINISH_CANCEL;
    m.token.n_prompt = 4;
    m.token.n_gen = 5;
    save(&m, dir);

    sl_msg_init(&m, SL_MSG_TOKENS);
    m.id = 2;
    m.tokens = (sl_msg_tokens){.n = 6, .ids = ids};
    save(&m, dir);
    sl_msg_init(&m, SL_MSG_TEXT);
    m.id = 3;
    m.text = sl_msg_cstr("text \xe2\x82");
    save(&m, dir);

    sl_msg_init(&m, SL_MSG_STATUS_REPLY);
    m.id = 4;
    m.status_reply.model = sl_msg_cstr("stories260K");
    m.status_reply.n_ctx = 512;
    m.status_reply.n_vocab = 512;
    m.status_reply.sessions = 1;
    m.status_reply.mem_budget = 1ull << 30;
    m.status_reply.mem_used = 12345678;
    m.status_reply.epoch = 7;
    save(&m, dir);

    sl_msg_error_init(&m, 9, -SL_EVERSION, "protocol version 2, this is version 1");
    save(&m, dir);

    sl_msg_init(&m, SL_MSG_REGISTER);
    m.reg.role = SL_MSG_ROLE_LOADER;
    m.reg.pid = 4242;
    m.reg.name = sl_msg_cstr("ci");
    m.reg.threads = 4;
    m.reg.caps = SL_CAP_DIRECT_IO | SL_CAP_AVX2;
    save(&m, dir);

    sl_msg_init(&m, SL_MSG_WELCOME);
    m.welcome.wid = 3;
    m.welcome.epoch = 7;
    m.welcome.instance = sl_msg_cstr("ci");
    m.welcome.n_segs = 3;
    m.welcome.segs[0] = sl_msg_cstr("/sluice-ci-ctl");
    m.welcome.segs[1] = sl_msg_cstr("/sluice-ci-slots");
    m.welcome.segs[2] = sl_msg_cstr("/sluice-ci-kv");
    save(&m, dir);

    sl_msg_init(&m, SL_MSG_HEARTBEAT);
    m.heartbeat.role = SL_MSG_ROLE_COMPUTE;
    m.heartbeat.pid = 4243;
    m.heartbeat.wid = 3;
    m.heartbeat.epoch = 7;
    m.heartbeat.jobs = 100;
    m.heartbeat.bytes = 1ull << 33;
    m.heartbeat.rss = 1ull << 28;
    save(&m, dir);

    sl_msg_init(&m, SL_MSG_EVENT);
    m.event.kind = sl_msg_cstr("token");
    m.event.seq = 11;
    m.event.ts = 1700000000000000000ull;
    static const char *names[] = {"id", "ms", "bytes", "hit", "note", "none", "neg"};
    m.event.n_fields = 7;
    for (uint32_t k = 0; k < 7; k++)
        m.event.fields[k].name = sl_msg_cstr(names[k]);
    m.event.fields[0].type = SL_VAL_INT, m.event.fields[0].val.i = 1;
    m.event.fields[1].type = SL_VAL_FLOAT, m.event.fields[1].val.f = 12.5;
    m.event.fields[2].type = SL_VAL_UINT, m.event.fields[2].val.u = UINT64_MAX;
    m.event.fields[3].type = SL_VAL_BOOL, m.event.fields[3].val.b = true;
    m.event.fields[4].type = SL_VAL_STR, m.event.fields[4].val.s = sl_msg_cstr("pinned");
    m.event.fields[5].type = SL_VAL_NIL;
    m.event.fields[6].type = SL_VAL_INT, m.event.fields[6].val.i = -70000;
    save(&m, dir);

    sl_msg_init(&m, SL_MSG_BUDGET);
    m.id = 12;
    m.budget = 768ull << 20;
    save(&m, dir);
    sl_msg_init(&m, SL_MSG_BUDGET_REPLY);
    m.id = 12;
    m.budget_reply = (sl_msg_budget_reply){768ull << 20, 700ull << 20, 500ull << 20, 3ull << 30, 300ull << 20};
    save(&m, dir);

    if (!g_failed)
        printf("make_proto_corpus: %d seeds in %s\n", g_n, dir);
    return g_failed;
}
