/* `sluice ctl`: run-time commands to a running coordinator, over its client
 * endpoint (proto/msg.h): `budget SIZE` changes the memory budget without
 * stopping generation; `status` prints the coordinator's state. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "cli/cli.h"
#include "common/log.h"
#include "coordinator/plan.h"
#include "proto/endpoint.h"

static void help(FILE *out)
{
    fprintf(out, "usage: sluice ctl --connect ENDPOINT [--timeout S] [--json] COMMAND [ARG]\n\n"
                 "Commands to a running coordinator (its client endpoint, e.g. ipc:///tmp/x/client):\n\n"
                 "  budget SIZE   run under SIZE of memory (e.g. 512M, 1.5G): the coordinator\n"
                 "                re-plans the pinned set and the ring and switches between two\n"
                 "                steps, without stopping generation or changing its output;\n"
                 "                prints the new plan. Growing reads the newly pinned layers\n"
                 "                back (the pipeline pauses for those reads).\n"
                 "  status        print the coordinator's state\n\n"
                 "  --connect EP  the coordinator's client endpoint (required)\n"
                 "  --timeout S   seconds to wait for the answer (default 30)\n"
                 "  --json        print the answer as one JSON object\n"
                 "  -h, --help    this text\n");
}

static double mib(uint64_t b) { return b / 1048576.0; }

/* s as a JSON string (quotes, backslashes and control bytes escaped). */
static void json_str(sl_msg_str s)
{
    putchar('"');
    for (size_t i = 0; i < s.len; i++) {
        unsigned char ch = (unsigned char)s.ptr[i];
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

int sl_cmd_ctl(int argc, char **argv)
{
    enum { OPT_CONNECT = 256, OPT_TIMEOUT, OPT_JSON };
    static const struct option opts[] = {{"connect", required_argument, 0, OPT_CONNECT},
                                         {"timeout", required_argument, 0, OPT_TIMEOUT},
                                         {"json", no_argument, 0, OPT_JSON},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    const char *connect = NULL;
    double timeout = 30;
    bool json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_CONNECT: connect = optarg; break;
        case OPT_TIMEOUT:
            if (sl_cli_float("--timeout", optarg, 0.1, 86400, &timeout))
                return 2;
            break;
        case OPT_JSON: json = true; break;
        case 'h': help(stdout); return 0;
        default: help(stderr); return 2;
        }
    }
    const int nargs = argc - optind;
    const char *cmd = nargs > 0 ? argv[optind] : NULL;
    sl_msg m;
    if (cmd && !strcmp(cmd, "budget") && nargs == 2) {
        sl_msg_init(&m, SL_MSG_BUDGET);
        if (sl_plan_parse_size(argv[optind + 1], &m.budget)) {
            fprintf(stderr, "sluice ctl: budget expects a size like 512M or 2G, got '%s'\n", argv[optind + 1]);
            return 2;
        }
    } else if (cmd && !strcmp(cmd, "status") && nargs == 1) {
        sl_msg_init(&m, SL_MSG_STATUS);
    } else {
        fprintf(stderr, "sluice ctl: %s\n", cmd ? "unknown command or wrong arguments" : "no command given");
        help(stderr);
        return 2;
    }
    if (!connect) {
        fprintf(stderr, "sluice ctl: --connect ENDPOINT is required\n");
        return 2;
    }
    m.id = ((uint64_t)getpid() << 20) | 1;

    int status = 1;
    void *zctx = zmq_ctx_new(), *sock = NULL;
    uint8_t *buf = malloc(SL_PROTO_MAX_MSG);
    if (!zctx || !buf || sl_endpoint_open(zctx, ZMQ_DEALER, connect, false, &sock))
        goto done;
    if (sl_endpoint_send_msg(sock, NULL, &m, buf, SL_PROTO_MAX_MSG, 0))
        goto done;
    const uint64_t id = m.id;
    for (;;) {
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, (long)(timeout * 1000)) <= 0) {
            fprintf(stderr, "sluice ctl: no answer from the coordinator at %s within %.0f s\n", connect, timeout);
            goto done;
        }
        if (sl_endpoint_recv_msg(sock, NULL, buf, SL_PROTO_MAX_MSG, &m, 0) == 0 && m.id == id)
            break;
    }
    if (m.type == SL_MSG_ERROR) {
        fprintf(stderr, "sluice ctl: the coordinator refused: %.*s\n", (int)m.error.msg.len, m.error.msg.ptr);
        goto done;
    }
    if (m.type == SL_MSG_BUDGET_REPLY) {
        const sl_msg_budget_reply *r = &m.budget_reply;
        if (json)
            printf("{\"mem_budget\": %llu, \"mem_used\": %llu, \"pinned\": %llu, \"streamed\": %llu, "
                   "\"min_budget\": %llu}\n",
                   (unsigned long long)r->mem_budget, (unsigned long long)r->mem_used,
                   (unsigned long long)r->pinned, (unsigned long long)r->streamed,
                   (unsigned long long)r->min_budget);
        else
            printf("budget %.1f MiB: %.1f MiB in use, %.1f MiB of weights pinned, %.1f MiB streamed per step "
                   "(minimum budget %.1f MiB)\n",
                   mib(r->mem_budget), mib(r->mem_used), mib(r->pinned), mib(r->streamed), mib(r->min_budget));
        status = 0;
    } else if (m.type == SL_MSG_STATUS_REPLY) {
        const sl_msg_status_reply *r = &m.status_reply;
        if (json) {
            printf("{\"model\": ");
            json_str(r->model);
            printf(", \"n_ctx\": %u, \"n_vocab\": %u, \"sessions\": %u, \"max_sessions\": %u, "
                   "\"loaders\": %u, \"workers\": %u, \"mem_budget\": %llu, \"mem_used\": %llu, \"pinned\": %llu, "
                   "\"epoch\": %llu}\n",
                   r->n_ctx, r->n_vocab, r->sessions, r->max_sessions, r->loaders,
                   r->workers, (unsigned long long)r->mem_budget, (unsigned long long)r->mem_used,
                   (unsigned long long)r->pinned, (unsigned long long)r->epoch);
        } else {
            printf("model %.*s: %u of %u sessions, %u loaders, %u workers, context %u; memory %.1f MiB in use "
                   "of a %.1f MiB budget, %.1f MiB pinned; epoch %llu\n",
                   (int)r->model.len, r->model.ptr, r->sessions, r->max_sessions, r->loaders, r->workers, r->n_ctx,
                   mib(r->mem_used), mib(r->mem_budget), mib(r->pinned), (unsigned long long)r->epoch);
        }
        status = 0;
    } else {
        fprintf(stderr, "sluice ctl: unexpected %s from the coordinator\n", sl_msg_type_name(m.type));
    }
done:
    sl_endpoint_close(sock);
    if (zctx)
        zmq_ctx_term(zctx);
    free(buf);
    return status;
}
