/* sl-shmslots: what the slot arena costs per streamed unit (shm/slots.h).
 *
 * Two figures, to set against a layer's compute time:
 *   1. bookkeeping: one unit's whole cycle of transitions (want, claim_fill,
 *      fill_done, acquire, release) in one process, no waiting: the cost of
 *      the compare-and-swaps and change counting alone;
 *   2. hand-off: a loader process and a worker process pass units through a
 *      ring of two slots, sleeping on the futex whenever they have to wait.
 *      The worker wants unit u+1 when it releases unit u, so each unit costs
 *      two cross-process wake-ups; reported as microseconds per unit. The
 *      slots' bytes are not touched (that is storage and memory bandwidth,
 *      measured elsewhere).
 * Segments live under the instance "bench-<pid>" and are removed at exit.
 *
 * usage: sl-shmslots [--units N] */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "shm/proc.h"
#include "shm/segment.h"
#include "shm/slots.h"

static sl_slots *open_arena(const char *inst, sl_seg **seg)
{
    sl_slots *a = NULL;
    if (sl_seg_attach(inst, "ctl", 1, 0, seg) != 0)
        return NULL;
    uint64_t cs, ds;
    void *c = sl_seg_region_get(*seg, "slots", &cs);
    void *d = sl_seg_region_get(*seg, "data", &ds);
    if (!c || !d || sl_slots_open(c, cs, d, ds, &a) != 0)
        return NULL;
    return a;
}

static int loader(const char *inst, uint32_t units)
{
    sl_seg *seg;
    sl_slots *a = open_arena(inst, &seg);
    if (!a)
        return 1;
    for (uint32_t done = 0; done < units;) {
        uint32_t seen = sl_slots_seq(a), slot, unit, gen;
        if (sl_slots_claim_fill(a, 1, &slot, &unit, &gen) != SL_SLOTS_OK) {
            sl_slots_wait_change(a, seen, 1000000000);
            continue;
        }
        if (sl_slots_fill_done(a, slot, 1, gen) != SL_SLOTS_OK)
            return 2;
        done++;
    }
    sl_slots_close(a);
    sl_seg_close(seg);
    return 0;
}

int main(int argc, char **argv)
{
    uint32_t units = 200000;
    static const struct option opts[] = {{"units", required_argument, NULL, 'u'}, {NULL, 0, NULL, 0}};
    for (int c; (c = getopt_long(argc, argv, "u:", opts, NULL)) != -1;) {
        if (c == 'u' && atoi(optarg) > 0)
            units = (uint32_t)atoi(optarg);
        else {
            fprintf(stderr, "usage: sl-shmslots [--units N]\n");
            return 2;
        }
    }
    char inst[32];
    snprintf(inst, sizeof inst, "bench-%d", (int)getpid());
    enum { N_SLOTS = 2 };
    const sl_seg_region r[2] = {{"slots", sl_slots_ctl_size(N_SLOTS)}, {"data", N_SLOTS * 4096}};
    sl_seg *seg = NULL;
    if (sl_seg_create(inst, "ctl", 1, r, 2, sl_seg_new_epoch(), &seg) != 0)
        return 1;
    uint64_t cs, ds;
    void *c = sl_seg_region_get(seg, "slots", &cs);
    void *d = sl_seg_region_get(seg, "data", &ds);
    sl_slots *a = NULL;
    if (sl_slots_format(c, cs, N_SLOTS, 4096) || sl_seg_publish(seg) || sl_slots_open(c, cs, d, ds, &a)) {
        sl_seg_close(seg);
        return 1;
    }

    /* 1. One process, every transition of a unit's cycle. */
    uint64_t t0 = sl_proc_clock_ns();
    for (uint32_t u = 0; u < units; u++) {
        uint32_t slot, unit, gen;
        SL_ASSERT(sl_slots_want(a, 0, u & 0xffff, NULL) == SL_SLOTS_OK);
        SL_ASSERT(sl_slots_claim_fill(a, 1, &slot, &unit, &gen) == SL_SLOTS_OK);
        SL_ASSERT(sl_slots_fill_done(a, slot, 1, gen) == SL_SLOTS_OK);
        SL_ASSERT(sl_slots_try_acquire(a, 0, unit, &slot, &gen) == SL_SLOTS_OK);
        SL_ASSERT(sl_slots_release(a, 0, slot) == SL_SLOTS_OK);
    }
    double cycle_ns = (double)(sl_proc_clock_ns() - t0) / units;
    SL_ASSERT(sl_slots_evict(a, 0) == SL_SLOTS_OK);

    /* 2. Loader and worker in two processes; this one is the worker and
     *    the scheduler. */
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0)
        _exit(loader(inst, units));
    t0 = sl_proc_clock_ns();
    SL_ASSERT(sl_slots_want(a, 0, 0, NULL) == SL_SLOTS_OK);
    SL_ASSERT(sl_slots_want(a, 1, 1, NULL) == SL_SLOTS_OK);
    int rc = 0;
    for (uint32_t u = 0; u < units; u++) {
        uint32_t slot, gen;
        if (sl_slots_acquire(a, 0, u & 0xfffff, 10 * 1000000000ll, &slot, &gen) != SL_SLOTS_OK) {
            fprintf(stderr, "unit %u never arrived\n", u);
            rc = 1;
            break;
        }
        SL_ASSERT(sl_slots_release(a, 0, slot) == SL_SLOTS_OK);
        if (u + 2 < units)
            SL_ASSERT(sl_slots_want(a, slot, (u + 2) & 0xfffff, NULL) == SL_SLOTS_OK);
    }
    double handoff_ns = (double)(sl_proc_clock_ns() - t0) / units;
    if (rc)
        kill(pid, SIGKILL);
    int st = 0;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        rc = 1;
    sl_slots_close(a);
    sl_seg_remove(seg);
    if (rc)
        return 1;
    printf("units: %u\n", units);
    printf("bookkeeping per unit (want, claim, done, acquire, release; one process): %.0f ns\n", cycle_ns);
    printf("hand-off per unit (loader and worker processes, ring of 2, futex sleeps): %.2f us\n", handoff_ns / 1000);
    return 0;
}
