/* The shared-memory runtime (shm/): segments (create, publish, attach,
 * header validation with its messages, adoption, stale clean-up), the
 * process table (registration, reaping, hung-process detection) and the
 * slot arena, first as a state machine in one process, then across forked
 * loader and worker processes, including ones that are SIGKILLed mid-fill
 * or mid-use and one that is paused and resumes after its slot was
 * reclaimed. Every wait is bounded; nothing asserts on timing. The run uses
 * its own instance name and checks that /dev/shm holds nothing of it at
 * the end. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "shm/proc.h"
#include "shm/proctab.h"
#include "shm/segment.h"
#include "shm/slots.h"
#include "tests/testutil.h"

#define SEC 1000000000ll

static char g_inst[SL_SEG_INSTANCE_MAX + 1];

/* ---- helpers ---------------------------------------------------------- */

/* Entries of /dev/shm that belong to this run's instance. */
static int count_segments(void)
{
    char prefix[80];
    int plen = snprintf(prefix, sizeof prefix, "sluice-%s-", g_inst);
    DIR *d = opendir("/dev/shm");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, prefix, (size_t)plen) == 0)
            n++;
    closedir(d);
    return n;
}

static bool segment_exists(const char *kind)
{
    char path[128];
    snprintf(path, sizeof path, "/dev/shm/sluice-%s-%s", g_inst, kind);
    struct stat st;
    return stat(path, &st) == 0;
}

/* stderr capture, to check that refusals say why. */
static FILE *g_cap;
static int g_saved_err = -1;

static void capture_begin(void)
{
    fflush(stderr);
    g_cap = tmpfile();
    g_saved_err = dup(STDERR_FILENO);
    dup2(fileno(g_cap), STDERR_FILENO);
}

static const char *capture_end(void)
{
    static char buf[4096];
    fflush(stderr);
    dup2(g_saved_err, STDERR_FILENO);
    close(g_saved_err);
    rewind(g_cap);
    size_t n = fread(buf, 1, sizeof buf - 1, g_cap);
    buf[n] = 0;
    fclose(g_cap);
    return buf;
}

/* Writes len bytes at off into the published object of `kind`. */
static void poke(const char *kind, size_t off, const void *bytes, size_t len)
{
    char name[96];
    snprintf(name, sizeof name, "/sluice-%s-%s", g_inst, kind);
    int fd = shm_open(name, O_RDWR, 0);
    SL_ASSERT(fd >= 0);
    SL_ASSERT(pwrite(fd, bytes, len, (off_t)off) == (ssize_t)len);
    close(fd);
}

static void resize(const char *kind, off_t size)
{
    char name[96];
    snprintf(name, sizeof name, "/sluice-%s-%s", g_inst, kind);
    int fd = shm_open(name, O_RDWR, 0);
    SL_ASSERT(fd >= 0);
    SL_ASSERT(ftruncate(fd, size) == 0);
    close(fd);
}

static void unlink_kind(const char *kind)
{
    char name[96];
    snprintf(name, sizeof name, "/sluice-%s-%s", g_inst, kind);
    shm_unlink(name);
}

/* Creates and publishes a small two-region segment of `kind`, owned by
 * the calling process, and closes the handle (the segment stays). */
static int make_segment(const char *kind)
{
    sl_seg_region r[2] = {{"alpha", 100}, {"beta", 5000}};
    sl_seg *s = NULL;
    int rc = sl_seg_create(g_inst, kind, 1, r, 2, sl_seg_new_epoch(), &s);
    if (rc == 0)
        rc = sl_seg_publish(s);
    sl_seg_close(s);
    return rc;
}

/* Children die with the test, so a failed run leaves no processes. */
static pid_t fork_child(void)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    SL_ASSERT(pid >= 0);
    if (pid == 0)
        prctl(PR_SET_PDEATHSIG, SIGKILL);
    return pid;
}

/* Waits for a child to exit and returns its exit status (or 128+signal). */
static int reap_child(pid_t pid)
{
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* Waits until the child has exited, leaving it a zombie (not reaped). */
static void wait_exited_not_reaped(pid_t pid)
{
    siginfo_t info;
    while (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOWAIT) < 0 && errno == EINTR)
        ;
}

static void wait_stopped(pid_t pid)
{
    int st = 0;
    while (waitpid(pid, &st, WUNTRACED) < 0 && errno == EINTR)
        ;
    SL_ASSERT(WIFSTOPPED(st));
}

/* Unit contents: a pseudo-random stream seeded by the unit id, so any
 * process can produce or check any unit. */
static void unit_bytes(uint8_t *p, size_t n, uint32_t unit)
{
    uint64_t x = (uint64_t)unit * 0x9e3779b97f4a7c15ull + 0x2545f4914f6cdd1dull;
    for (size_t i = 0; i + 8 <= n; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(p + i, &x, 8);
    }
}

static uint64_t checksum(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t unit_checksum(uint32_t unit, size_t n)
{
    uint8_t *b = malloc(n);
    unit_bytes(b, n, unit);
    uint64_t c = checksum(b, n);
    free(b);
    return c;
}

/* ---- segments --------------------------------------------------------- */

static void test_segment_roundtrip(void)
{
    const sl_seg_region r[2] = {{"procs", 100}, {"slots", 5000}};
    sl_seg *c = NULL, *a = NULL;
    const uint64_t epoch = sl_seg_new_epoch();
    CHECK(epoch != 0, "epoch");
    CHECK(sl_seg_create(g_inst, "rt", 7, r, 2, epoch, &c) == 0 && c, "create");
    if (!c)
        return;
    CHECK(!segment_exists("rt"), "not visible under its name before publish");
    CHECK(count_segments() == 1, "the temporary exists: %d", count_segments());
    CHECK(sl_seg_attach(g_inst, "rt", 7, 0, &a) == -SL_ENOTFOUND && !a, "attach before publish");
    uint64_t sz = 0;
    uint8_t *cp = sl_seg_region_get(c, "slots", &sz);
    CHECK(cp && sz == 5000 && ((uintptr_t)cp & 4095) == 0, "region before publish");
    if (cp)
        memset(cp, 0xab, 5000); /* formatted before publication */
    CHECK(sl_seg_publish(c) == 0, "publish");
    capture_begin();
    CHECK(sl_seg_publish(c) == -SL_EINVAL, "publish twice");
    capture_end();
    CHECK(segment_exists("rt") && count_segments() == 1, "published, temporary gone: %d", count_segments());

    CHECK(sl_seg_attach(g_inst, "rt", 7, 0, &a) == 0 && a, "attach");
    if (!a) {
        sl_seg_remove(c);
        return;
    }
    const sl_seg_header *h = sl_seg_info(a);
    CHECK(h->version == SL_SEG_VERSION && h->header_size == SL_SEG_HEADER_SIZE, "version/header size");
    CHECK(h->total_size == 4096 + 4096 + 8192, "total size %llu", (unsigned long long)h->total_size);
    CHECK(strcmp(h->kind, "rt") == 0 && strcmp(h->instance, g_inst) == 0 && h->kind_version == 7, "names");
    CHECK(h->epoch == epoch && h->owner_epoch == epoch, "epoch");
    CHECK(h->creator_pid == getpid() && h->owner == sl_proc_self(), "creator and owner");
    CHECK(h->n_regions == 2 && h->regions[0].offset == 4096 && h->regions[1].offset == 8192, "directory");
    uint8_t *ap = sl_seg_region_get(a, "slots", &sz);
    uint64_t psz = 0;
    void *pp = sl_seg_region_get(a, "procs", &psz);
    CHECK(ap && sz == 5000 && ap[0] == 0xab && ap[4999] == 0xab, "contents formatted before publish seen");
    CHECK(pp && psz == 100, "procs region");
    CHECK(sl_seg_region_get(a, "nope", NULL) == NULL, "unknown region");
    if (ap && cp) {
        ap[1] = 0x12;
        CHECK(cp[1] == 0x12, "the two mappings share memory");
    }
    CHECK(sl_seg_adopt(a, epoch + 1) == 0, "adopting one's own segment is a no-op");

    /* Another create under the same name is refused and says by whom. */
    sl_seg *d = NULL;
    CHECK(sl_seg_create(g_inst, "rt", 7, r, 2, epoch, &d) == 0, "second create");
    capture_begin();
    int rc = sl_seg_publish(d);
    const char *msg = capture_end();
    CHECK(rc == -SL_EIO && strstr(msg, "already exists") && strstr(msg, "running"), "duplicate publish: %d %s",
          rc, msg);
    sl_seg_close(d);
    CHECK(count_segments() == 1, "the failed one left nothing: %d", count_segments());

    /* Read-only attachers can read but not adopt. */
    sl_seg *ro = NULL;
    CHECK(sl_seg_attach(g_inst, "rt", 7, SL_SEG_READONLY, &ro) == 0 && ro, "read-only attach");
    if (ro) {
        const uint8_t *rp = sl_seg_region_get(ro, "slots", NULL);
        CHECK(rp && rp[0] == 0xab, "read-only contents");
        capture_begin();
        rc = sl_seg_adopt(ro, 5);
        capture_end();
        CHECK(rc == -SL_EINVAL, "read-only adopt refused");
        sl_seg_close(ro);
    }

    /* Clean shutdown: retired, unlinked; the other handle sees it. */
    CHECK(!sl_seg_retired(a), "live");
    CHECK(sl_seg_remove(c) == 0, "remove");
    CHECK(sl_seg_retired(a), "retired seen by an attached process");
    CHECK(!segment_exists("rt"), "name gone");
    sl_seg *again = NULL;
    CHECK(sl_seg_attach(g_inst, "rt", 7, 0, &again) == -SL_ENOTFOUND, "attach after remove");
    sl_seg_close(a);

    /* Unpublished segments vanish when closed. */
    CHECK(sl_seg_create(g_inst, "tmp", 1, r, 1, epoch, &d) == 0, "create unpublished");
    sl_seg_close(d);
    CHECK(count_segments() == 0, "closing an unpublished segment deletes it: %d", count_segments());

    /* Bad arguments. */
    capture_begin();
    CHECK(sl_seg_create("bad/name", "rt", 1, r, 2, epoch, &d) == -SL_EINVAL, "instance with '/'");
    CHECK(sl_seg_create(g_inst, "CTL", 1, r, 2, epoch, &d) == -SL_EINVAL, "kind in capitals");
    CHECK(sl_seg_create(g_inst, "rt", 1, r, 0, epoch, &d) == -SL_EINVAL, "no regions");
    const sl_seg_region dup[2] = {{"x", 1}, {"x", 1}};
    CHECK(sl_seg_create(g_inst, "rt", 1, dup, 2, epoch, &d) == -SL_EINVAL, "duplicate region");
    const sl_seg_region zero[1] = {{"x", 0}};
    CHECK(sl_seg_create(g_inst, "rt", 1, zero, 1, epoch, &d) == -SL_EINVAL, "empty region");
    CHECK(sl_seg_create(g_inst, "rt", 1, r, 2, 0, &d) == -SL_EINVAL, "epoch 0");
    CHECK(sl_seg_attach(g_inst, "Rt", 1, 0, &d) == -SL_EINVAL, "attach with a bad kind");
    capture_end();
    CHECK(count_segments() == 0, "no leftovers: %d", count_segments());
}

/* One corrupted header: the attach result and a word the message must
 * contain. */
static void expect_refusal(const char *what, int want_rc, const char *needle)
{
    sl_seg *s = NULL;
    capture_begin();
    int rc = sl_seg_attach(g_inst, "hdr", 1, 0, &s);
    const char *msg = capture_end();
    CHECK(rc == want_rc && s == NULL, "%s: rc %d, expected %d", what, rc, want_rc);
    CHECK(strstr(msg, needle) != NULL, "%s: message '%s' lacks '%s'", what, msg, needle);
    sl_seg_close(s);
}

static void test_header_validation(void)
{
    struct {
        const char *what;
        size_t off;
        uint64_t value;
        size_t len;
        int rc;
        const char *needle;
    } cases[] = {
        {"foreign magic", 0, 0x1122334455667788ull, 8, -SL_EFORMAT, "not a sluice segment"},
        {"magic 0", 0, 0, 8, -SL_EFORMAT, "magic 0"},
        {"other byte order", 0, SL_SEG_MAGIC_SWAPPED, 8, -SL_EFORMAT, "byte order"},
        {"newer version", 8, 2, 4, -SL_EVERSION, "version 2"},
        {"header size", 12, 8192, 4, -SL_EFORMAT, "header size"},
        {"total size", 16, 4096 * 9, 8, -SL_EFORMAT, "truncated or resized"},
        {"kind layout version", 60, 3, 4, -SL_EVERSION, "layout version 3"},
        {"kind", 64, 0x746361 /* "act" */, 4, -SL_EFORMAT, "holds kind 'act'"},
        {"instance", 80, 0x6f6e /* "no" */, 8, -SL_EFORMAT, "belongs to instance 'no'"},
        {"region count", 128, 17, 4, -SL_EFORMAT, "17 regions"},
        {"region offset", 160 + 16, 4097, 8, -SL_EFORMAT, "does not fit"},
        {"region size", 160 + 24, 1ull << 40, 8, -SL_EFORMAT, "does not fit"},
        {"region overlap", 160 + 32 + 16, 4096, 8, -SL_EFORMAT, "does not fit"},
        {"region name", 160, 0x21, 1, -SL_EFORMAT, "invalid name"},
        {"duplicate region", 160 + 32, 0x6168706c61 /* "alpha" */, 8, -SL_EFORMAT, "listed twice"},
        {"retired", 56, 1, 4, -SL_ENOTFOUND, "retired"},
    };
    sl_log_set_level(SL_LOG_DEBUG); /* the retired case logs at debug */
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (make_segment("hdr") != 0) {
            CHECK(0, "make segment for %s", cases[i].what);
            continue;
        }
        sl_seg *s = NULL;
        CHECK(sl_seg_attach(g_inst, "hdr", 1, 0, &s) == 0, "%s: intact segment attaches", cases[i].what);
        sl_seg_close(s);
        poke("hdr", cases[i].off, &cases[i].value, cases[i].len);
        expect_refusal(cases[i].what, cases[i].rc, cases[i].needle);
        unlink_kind("hdr");
    }
    sl_log_set_level(SL_LOG_WARN);

    /* Truncations: below the stable prefix, inside the header, inside a
     * region. Attach must refuse without touching memory past the end. */
    const struct {
        off_t size;
        const char *needle;
    } cuts[] = {{0, "32-byte header prefix"}, {10, "32-byte header prefix"}, {2000, "4096-byte header"},
                {4096 * 2, "truncated or resized"}};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        SL_ASSERT(make_segment("hdr") == 0);
        resize("hdr", cuts[i].size);
        char what[48];
        snprintf(what, sizeof what, "truncated to %lld", (long long)cuts[i].size);
        expect_refusal(what, -SL_EFORMAT, cuts[i].needle);
        unlink_kind("hdr");
    }
    /* Grown behind our back. */
    SL_ASSERT(make_segment("hdr") == 0);
    resize("hdr", 4096 * 16);
    expect_refusal("grown", -SL_EFORMAT, "truncated or resized");
    unlink_kind("hdr");

    /* A kind_version the caller does not read. */
    SL_ASSERT(make_segment("hdr") == 0);
    sl_seg *s = NULL;
    capture_begin();
    int rc = sl_seg_attach(g_inst, "hdr", 2, 0, &s);
    const char *msg = capture_end();
    CHECK(rc == -SL_EVERSION && strstr(msg, "layout version 1; this build reads version 2"), "kind version: %s",
          msg);
    unlink_kind("hdr");
    CHECK(count_segments() == 0, "no leftovers: %d", count_segments());
}

/* A child creates a published and an unpublished segment and dies. */
static pid_t spawn_dying_creator(void)
{
    pid_t pid = fork_child();
    if (pid == 0) {
        int rc = make_segment("stale");
        const sl_seg_region r[1] = {{"x", 10}};
        sl_seg *s = NULL;
        rc |= sl_seg_create(g_inst, "unfinished", 1, r, 1, sl_seg_new_epoch(), &s);
        _exit(rc ? 1 : 0); /* the handle is not closed: the temporary stays */
    }
    return pid;
}

static void test_stale_cleanup(void)
{
    /* A live segment of ours, and an object under the instance's names
     * that is not a segment. */
    CHECK(make_segment("live") == 0, "live segment");
    char junk[96];
    snprintf(junk, sizeof junk, "/sluice-%s-junk", g_inst);
    int jfd = shm_open(junk, O_RDWR | O_CREAT | O_EXCL, 0600);
    CHECK(jfd >= 0 && ftruncate(jfd, 10) == 0, "junk object");
    close(jfd);

    pid_t pid = spawn_dying_creator();
    wait_exited_not_reaped(pid); /* a zombie counts as dead */
    CHECK(segment_exists("stale") && count_segments() == 4, "before clean: %d", count_segments());
    capture_begin();
    int removed = sl_seg_clean(g_inst, 0);
    const char *msg = capture_end();
    CHECK(removed == 2, "removed %d (the dead creator's segment and temporary)", removed);
    CHECK(strstr(msg, "junk") && strstr(msg, "not a sluice segment"), "junk reported: %s", msg);
    CHECK(reap_child(pid) == 0, "dying creator");
    CHECK(!segment_exists("stale") && segment_exists("live") && segment_exists("junk"), "what stays");
    CHECK(count_segments() == 2, "after clean: %d", count_segments());
    capture_begin();
    removed = sl_seg_clean(g_inst, 0);
    capture_end();
    CHECK(removed == 0, "nothing more to clean");

    /* Adoption: a restarted coordinator takes over a dead one's segment. */
    pid = fork_child();
    if (pid == 0)
        _exit(make_segment("adopt") ? 1 : 0);
    CHECK(reap_child(pid) == 0, "creator of 'adopt'");
    sl_seg *s = NULL;
    CHECK(sl_seg_attach(g_inst, "adopt", 1, 0, &s) == 0, "attach a dead coordinator's segment");
    if (s) {
        const uint64_t old_epoch = sl_seg_info(s)->epoch;
        CHECK(!sl_proc_alive(sl_seg_info(s)->owner), "owner dead");
        const uint64_t e = sl_seg_new_epoch();
        CHECK(sl_seg_adopt(s, e) == 0, "adopt");
        CHECK(sl_seg_info(s)->owner == sl_proc_self() && sl_seg_info(s)->owner_epoch == e &&
                  sl_seg_info(s)->epoch == old_epoch,
              "owner and epochs after adopt");
        capture_begin(); /* the junk object is reported each time */
        removed = sl_seg_clean(g_inst, 0);
        capture_end();
        CHECK(removed == 0 && segment_exists("adopt"), "an adopted segment is not stale");
        sl_seg_close(s);
    }

    /* Adoption is refused while the owner runs. */
    int go[2];
    SL_ASSERT(pipe(go) == 0);
    pid = fork_child();
    if (pid == 0) {
        close(go[1]);
        int rc = make_segment("busy");
        char c;
        if (read(go[0], &c, 1) < 0)
            rc = 1;
        _exit(rc ? 1 : 0);
    }
    close(go[0]);
    s = NULL;
    for (int i = 0; i < 2000 && !segment_exists("busy"); i++)
        usleep(1000);
    CHECK(sl_seg_attach(g_inst, "busy", 1, 0, &s) == 0, "attach a live coordinator's segment");
    if (s) {
        capture_begin();
        int rc = sl_seg_adopt(s, 9);
        msg = capture_end();
        CHECK(rc == -SL_EINVAL && strstr(msg, "running"), "adopt while the owner runs: %s", msg);
    }
    capture_begin();
    removed = sl_seg_clean(g_inst, 0);
    capture_end();
    CHECK(removed == 0 && segment_exists("busy"), "a live owner's segment stays");
    SL_ASSERT(write(go[1], "x", 1) == 1);
    close(go[1]);
    CHECK(reap_child(pid) == 0, "owner of 'busy'");
    if (s) {
        CHECK(sl_seg_adopt(s, 9) == 0, "adopt once the owner is gone");
        sl_seg_close(s);
    }

    /* Operator stop: everything of the instance goes, junk excepted. */
    capture_begin();
    removed = sl_seg_clean(g_inst, SL_SEG_CLEAN_ALL);
    capture_end();
    CHECK(removed == 3, "clean all removed %d (live, adopt, busy)", removed);
    shm_unlink(junk);
    CHECK(count_segments() == 0, "no leftovers: %d", count_segments());
}

/* ---- process table ---------------------------------------------------- */

typedef struct dead_log {
    int calls;
    enum sl_role role;
    uint32_t rid, owner;
    sl_slots *arena; /* when set, release what the dead process held */
} dead_log;

static void on_dead(void *ctx, enum sl_role role, uint32_t rid, uint32_t owner)
{
    dead_log *d = ctx;
    d->calls++;
    d->role = role;
    d->rid = rid;
    d->owner = owner;
    if (d->arena && role == SL_ROLE_LOADER)
        sl_slots_reclaim_loader(d->arena, owner);
    if (d->arena && role == SL_ROLE_WORKER)
        sl_slots_reclaim_holder(d->arena, rid);
}

static void test_proctab(void)
{
    uint64_t size = sl_proctab_size();
    void *mem = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    SL_ASSERT(mem != MAP_FAILED);
    sl_proctab *t = NULL;
    capture_begin();
    CHECK(sl_proctab_format(mem, size - 1) == -SL_EINVAL, "format too small");
    CHECK(sl_proctab_open(mem, size, &t) == -SL_EFORMAT && !t, "open unformatted");
    capture_end();
    CHECK(sl_proctab_format(mem, size) == 0, "format");
    CHECK(sl_proctab_open(mem, size, &t) == 0 && t, "open");
    if (!t)
        return;
    uint32_t crid = 99, wrid = 99, lrid = 99;
    CHECK(sl_proctab_register(t, SL_ROLE_COORDINATOR, &crid) == 0 && crid == 0, "coordinator");
    CHECK(sl_proctab_register(t, SL_ROLE_WORKER, &wrid) == 0 && wrid == 0, "worker");
    CHECK(sl_proctab_register(t, SL_ROLE_LOADER, &lrid) == 0 && lrid == 0, "loader");
    CHECK(sl_proctab_owner_id(t, SL_ROLE_LOADER, lrid) == 0 && sl_proctab_owner_id(t, SL_ROLE_WORKER, wrid) == 0,
          "first owner ids");
    CHECK(sl_proctab_heartbeat(t, SL_ROLE_LOADER, lrid) == 0, "heartbeat");
    uint64_t now = sl_proc_clock_ns();
    sl_proc_ident id = 0;
    CHECK(sl_proctab_check(t, SL_ROLE_LOADER, lrid, now, 0, &id) == SL_PROC_ALIVE && id == sl_proc_self(),
          "alive");
    CHECK(sl_proctab_check(t, SL_ROLE_LOADER, 1, now, 0, NULL) == SL_PROC_FREE, "free");
    CHECK(sl_proctab_live(t, SL_ROLE_LOADER, 0) && !sl_proctab_live(t, SL_ROLE_LOADER, 1), "live by owner id");
    CHECK(sl_proctab_deregister(t, SL_ROLE_LOADER, lrid) == 0, "deregister");
    capture_begin();
    CHECK(sl_proctab_deregister(t, SL_ROLE_LOADER, lrid) == -SL_ENOTFOUND, "deregister twice");
    CHECK(sl_proctab_heartbeat(t, SL_ROLE_LOADER, lrid) == -SL_ENOTFOUND, "heartbeat after losing the entry");
    capture_end();
    CHECK(sl_proctab_register(t, SL_ROLE_LOADER, &lrid) == 0 && lrid == 0, "re-register");
    CHECK(sl_proctab_owner_id(t, SL_ROLE_LOADER, lrid) == (1u << 6), "incarnation moved on: %u",
          sl_proctab_owner_id(t, SL_ROLE_LOADER, lrid));
    CHECK(!sl_proctab_live(t, SL_ROLE_LOADER, 0), "the old owner id is not live");
    sl_proctab_deregister(t, SL_ROLE_LOADER, lrid);

    /* Full table. */
    uint32_t rids[SL_PROCTAB_WORKERS + 1];
    int got = 0;
    while (got <= (int)SL_PROCTAB_WORKERS) {
        capture_begin();
        int rc = sl_proctab_register(t, SL_ROLE_WORKER, &rids[got]);
        capture_end();
        if (rc)
            break;
        got++;
    }
    CHECK(got == (int)SL_PROCTAB_WORKERS - 1, "worker entries until full: %d", got);
    for (int i = 0; i < got; i++)
        sl_proctab_deregister(t, SL_ROLE_WORKER, rids[i]);

    /* A dead registrant is reaped, with its owner id reported. */
    pid_t pid = fork_child();
    if (pid == 0) {
        uint32_t r;
        _exit(sl_proctab_register(t, SL_ROLE_LOADER, &r) == 0 && r == 0 ? 0 : 1);
    }
    wait_exited_not_reaped(pid);
    CHECK(sl_proctab_check(t, SL_ROLE_LOADER, 0, sl_proc_clock_ns(), 0, NULL) == SL_PROC_DEAD, "dead child");
    uint32_t owner = sl_proctab_owner_id(t, SL_ROLE_LOADER, 0);
    dead_log dl = {0};
    uint32_t killed = 9;
    int freed = sl_proctab_reap(t, 0, on_dead, &dl, &killed);
    CHECK(freed == 1 && killed == 0 && dl.calls == 1 && dl.role == SL_ROLE_LOADER && dl.rid == 0 && dl.owner == owner,
          "reap: freed %d, calls %d", freed, dl.calls);
    CHECK(sl_proctab_check(t, SL_ROLE_LOADER, 0, sl_proc_clock_ns(), 0, NULL) == SL_PROC_FREE, "freed");
    CHECK(reap_child(pid) == 0, "child");
    CHECK(sl_proctab_reap(t, 0, on_dead, &dl, NULL) == 0 && dl.calls == 1, "our own entries are never reaped");

    /* A hung registrant (stopped, heartbeat ages) is killed, then reaped. */
    pid = fork_child();
    if (pid == 0) {
        uint32_t r;
        if (sl_proctab_register(t, SL_ROLE_WORKER, &r) != 0)
            _exit(1);
        raise(SIGSTOP);
        _exit(0);
    }
    wait_stopped(pid);
    capture_begin();
    freed = sl_proctab_reap(t, 1 /* ns: any heartbeat is too old */, on_dead, &dl, &killed);
    const char *msg = capture_end();
    CHECK(freed == 0 && killed == 1, "hung worker killed: freed %d killed %u", freed, killed);
    CHECK(strstr(msg, "no heartbeat") != NULL, "kill logged: %s", msg);
    wait_exited_not_reaped(pid);
    freed = sl_proctab_reap(t, 1, on_dead, &dl, &killed);
    CHECK(freed == 1 && dl.calls == 2 && dl.role == SL_ROLE_WORKER, "killed worker reaped");
    CHECK(reap_child(pid) == 128 + SIGKILL, "it died of SIGKILL");

    sl_proctab_deregister(t, SL_ROLE_WORKER, wrid);
    sl_proctab_deregister(t, SL_ROLE_COORDINATOR, crid);
    sl_proctab_close(t);
    munmap(mem, (size_t)size);
}

/* ---- slot arena, one process ------------------------------------------ */

static bool alive_except(void *ctx, enum sl_slots_owner kind, uint32_t id)
{
    const uint32_t *dead = ctx; /* {loader owner id, holder id} */
    return kind == SL_SLOTS_LOADER ? id != dead[0] : id != dead[1];
}

static void test_slots_states(void)
{
    const uint32_t n = 3;
    const uint64_t ssz = sl_slots_round(5000);
    CHECK(ssz == 8192 && sl_slots_round(4096) == 4096 && sl_slots_round(1) == 4096, "rounding");
    uint64_t csz = sl_slots_ctl_size(n);
    uint8_t *ctl = aligned_alloc(4096, 4096 * 2);
    uint8_t *data = aligned_alloc(4096, (size_t)(n * ssz));
    memset(ctl, 0, 8192);
    capture_begin();
    CHECK(sl_slots_format(ctl, csz, 0, ssz) == -SL_EINVAL, "0 slots");
    CHECK(sl_slots_format(ctl, csz, n, 5000) == -SL_EINVAL, "unaligned slot size");
    CHECK(sl_slots_format(ctl, csz - 1, n, ssz) == -SL_EINVAL, "small region");
    capture_end();
    CHECK(sl_slots_format(ctl, csz, n, ssz) == 0, "format");
    sl_slots *a = NULL;
    capture_begin();
    CHECK(sl_slots_open(ctl, csz, data, n * ssz - 1, &a) == -SL_EFORMAT && !a, "data too small");
    CHECK(sl_slots_open(ctl, csz, data + 8, n * ssz, &a) == -SL_EFORMAT && !a, "data unaligned");
    CHECK(sl_slots_open(ctl, 32, data, n * ssz, &a) == -SL_EFORMAT && !a, "control region too small");
    capture_end();
    CHECK(sl_slots_open(ctl, csz, data, n * ssz, &a) == 0 && a, "open");
    if (!a)
        return;
    CHECK(sl_slots_count(a) == n && sl_slots_slot_size(a) == ssz, "geometry");
    for (uint32_t i = 0; i < n; i++)
        CHECK(((uintptr_t)sl_slots_data(a, i) & 4095) == 0, "slot %u aligned", i);

    /* Word encoding at the field limits. */
    uint32_t s, u, g, g2;
    sl_slot_view v = sl_slots_view(a, 0);
    CHECK(v.state == SL_SLOT_FREE && v.gen == 0 && v.unit == 0, "fresh slot");

    /* FREE: only want. */
    CHECK(sl_slots_claim_fill(a, 3, &s, &u, &g) == SL_SLOTS_NONE, "FREE: nothing to claim");
    CHECK(sl_slots_fill_done(a, 0, 3, 0) == SL_SLOTS_REFUSED, "FREE: fill_done");
    CHECK(sl_slots_fill_fail(a, 0, 3, 0) == SL_SLOTS_REFUSED, "FREE: fill_fail");
    CHECK(sl_slots_try_acquire(a, 0, 0, &s, &g) == SL_SLOTS_NONE, "FREE: acquire");
    CHECK(sl_slots_release(a, 0, 0) == SL_SLOTS_REFUSED, "FREE: release");
    CHECK(sl_slots_evict(a, 0) == SL_SLOTS_REFUSED, "FREE: evict");
    capture_begin();
    CHECK(sl_slots_want(a, 0, SL_SLOTS_MAX_UNIT + 1, &g) == -SL_ERANGE, "unit out of range");
    capture_end();
    uint32_t seq0 = sl_slots_seq(a);
    CHECK(sl_slots_want(a, 0, 7, &g) == SL_SLOTS_OK && g == 1, "FREE -> WANTED(7, 1)");
    CHECK(sl_slots_seq(a) != seq0, "transition counted");
    CHECK(sl_slots_wait_change(a, seq0, SEC) == SL_SLOTS_OK, "wait returns at once after a change");
    CHECK(sl_slots_wait_change(a, sl_slots_seq(a), 1000000) == SL_SLOTS_TIMEOUT, "wait times out");

    /* WANTED: retarget, claim; not acquirable, not completable. */
    CHECK(sl_slots_want(a, 0, 8, &g) == SL_SLOTS_OK && g == 2, "WANTED -> WANTED(8, 2)");
    v = sl_slots_view(a, 0);
    CHECK(v.state == SL_SLOT_WANTED && v.unit == 8 && v.gen == 2, "view %d %u %u", v.state, v.unit, v.gen);
    CHECK(sl_slots_try_acquire(a, 0, 8, &s, &g) == SL_SLOTS_NONE, "WANTED: not acquirable");
    CHECK(sl_slots_fill_done(a, 0, 3, 2) == SL_SLOTS_REFUSED, "WANTED: fill_done");
    CHECK(sl_slots_want(a, 1, 9, &g2) == SL_SLOTS_OK, "slot 1 WANTED(9) after slot 0");
    CHECK(sl_slots_claim_fill(a, 3, &s, &u, &g) == SL_SLOTS_OK && s == 0 && u == 8 && g == 2,
          "claim takes the oldest want: slot %u unit %u gen %u", s, u, g);
    v = sl_slots_view(a, 0);
    CHECK(v.state == SL_SLOT_FILLING && v.loader == 3 && v.unit == 8 && v.gen == 2, "FILLING(3, 8, 2)");

    /* FILLING: only its loader, with its generation, completes it. */
    CHECK(sl_slots_want(a, 0, 5, NULL) == SL_SLOTS_REFUSED, "FILLING: want");
    CHECK(sl_slots_evict(a, 0) == SL_SLOTS_REFUSED, "FILLING: evict");
    CHECK(sl_slots_try_acquire(a, 0, 8, &s, &g2) == SL_SLOTS_NONE, "FILLING: not acquirable");
    CHECK(sl_slots_fill_done(a, 0, 4, 2) == SL_SLOTS_REFUSED, "FILLING: other loader");
    CHECK(sl_slots_fill_done(a, 0, 3, 1) == SL_SLOTS_REFUSED, "FILLING: stale generation");
    CHECK(sl_slots_fill_check(a, 0, 3, 2) == SL_SLOTS_OK && sl_slots_fill_check(a, 0, 3, 1) == SL_SLOTS_REFUSED,
          "fill_check");
    memset(sl_slots_data(a, 0), 0x5a, (size_t)ssz);
    CHECK(sl_slots_fill_done(a, 0, 3, 2) == SL_SLOTS_OK, "FILLING -> READY");
    CHECK(sl_slots_fill_done(a, 0, 3, 2) == SL_SLOTS_REFUSED, "fill_done twice");
    uint64_t fills = 0;
    sl_slots_stats(a, 0, &fills, NULL);
    CHECK(fills == 1, "fill counted");
    v = sl_slots_view(a, 0);
    CHECK(v.state == SL_SLOT_READY && v.unit == 8 && v.gen == 2 && v.holders == 0, "READY(8, 2)");

    /* READY: acquire by several holders; held slots cannot be reused. */
    CHECK(sl_slots_claim_fill(a, 4, &s, &u, &g) == SL_SLOTS_OK && s == 1 && u == 9, "slot 1 claimed by 4");
    const uint32_t g1 = g;
    CHECK(sl_slots_try_acquire(a, 0, 8, &s, &g) == SL_SLOTS_OK && s == 0 && g == 2, "holder 0 acquires");
    CHECK(sl_slots_try_acquire(a, 0, 8, &s, &g) == SL_SLOTS_REFUSED, "holder 0 twice");
    CHECK(sl_slots_acquire(a, SL_SLOTS_MAX_HOLDERS - 1, 8, SEC, &s, &g) == SL_SLOTS_OK && s == 0,
          "last holder acquires");
    v = sl_slots_view(a, 0);
    CHECK(v.holders == (1u | 1u << (SL_SLOTS_MAX_HOLDERS - 1)), "holder mask %x", v.holders);
    CHECK(((const uint8_t *)sl_slots_data(a, s))[100] == 0x5a, "data");
    CHECK(sl_slots_want(a, 0, 5, NULL) == SL_SLOTS_REFUSED, "IN_USE: want");
    CHECK(sl_slots_evict(a, 0) == SL_SLOTS_REFUSED, "IN_USE: evict");
    CHECK(sl_slots_release(a, 1, 0) == SL_SLOTS_REFUSED, "release by a non-holder");
    CHECK(sl_slots_release(a, 0, 0) == SL_SLOTS_OK, "release 0");
    CHECK(sl_slots_release(a, 0, 0) == SL_SLOTS_REFUSED, "release 0 twice");
    CHECK(sl_slots_release(a, SL_SLOTS_MAX_HOLDERS - 1, 0) == SL_SLOTS_OK, "release last");
    v = sl_slots_view(a, 0);
    CHECK(v.state == SL_SLOT_READY && v.holders == 0 && v.unit == 8, "READY again, unit kept");
    CHECK(sl_slots_acquire(a, 2, 8, 0, &s, &g) == SL_SLOTS_OK, "a READY unit is reusable (pinned)");
    sl_slots_release(a, 2, s);
    CHECK(sl_slots_acquire(a, 2, 42, 1000000, &s, &g) == SL_SLOTS_TIMEOUT, "acquire of an absent unit times out");

    /* Reclaim: a dead loader's slot is wanted again with a new generation;
     * a dead holder's reference is dropped, a live one's kept. */
    CHECK(sl_slots_try_acquire(a, 5, 8, &s, &g) == SL_SLOTS_OK, "holder 5");
    CHECK(sl_slots_try_acquire(a, 6, 8, &s, &g) == SL_SLOTS_OK, "holder 6");
    uint32_t dead[2] = {4, 6};
    CHECK(sl_slots_reclaim(a, alive_except, dead) == 2, "two reclaims");
    v = sl_slots_view(a, 1);
    CHECK(v.state == SL_SLOT_WANTED && v.unit == 9 && v.gen == g1 + 1, "dead loader's slot WANTED again, gen+1");
    CHECK(sl_slots_fill_done(a, 1, 4, g1) == SL_SLOTS_REFUSED, "the dead loader's late completion refused");
    v = sl_slots_view(a, 0);
    CHECK(v.holders == 1u << 5, "only the dead holder's reference dropped: %x", v.holders);
    CHECK(sl_slots_reclaim(a, alive_except, dead) == 0, "reclaim is idempotent");
    CHECK(sl_slots_reclaim_holder(a, 5) == 1 && sl_slots_view(a, 0).holders == 0, "targeted holder reclaim");

    /* fill_fail puts the unit back for another loader. */
    CHECK(sl_slots_claim_fill(a, 7, &s, &u, &g) == SL_SLOTS_OK && s == 1, "claim slot 1");
    CHECK(sl_slots_fill_fail(a, 1, 7, g) == SL_SLOTS_OK, "fill_fail");
    v = sl_slots_view(a, 1);
    CHECK(v.state == SL_SLOT_WANTED && v.gen == g + 1, "WANTED again after fill_fail");
    CHECK(sl_slots_claim_fill(a, 8, &s, &u, &g) == SL_SLOTS_OK && s == 1, "claimed by 8");
    CHECK(sl_slots_reclaim_loader(a, 7) == 0 && sl_slots_reclaim_loader(a, 8) == 1, "targeted loader reclaim");

    /* READY without holders: want another unit, or evict. */
    CHECK(sl_slots_want(a, 0, 10, &g) == SL_SLOTS_OK && g == 3, "READY -> WANTED(10, 3)");
    CHECK(sl_slots_evict(a, 0) == SL_SLOTS_OK, "WANTED -> FREE");
    v = sl_slots_view(a, 0);
    CHECK(v.state == SL_SLOT_FREE && v.gen == 4, "FREE keeps counting generations: %u", v.gen);
    CHECK(sl_slots_evict(a, 1) == SL_SLOTS_OK, "evict the reclaimed WANTED slot 1");
    CHECK(sl_slots_want(a, 2, SL_SLOTS_MAX_UNIT, &g) == SL_SLOTS_OK, "largest unit");
    CHECK(sl_slots_claim_fill(a, SL_SLOTS_MAX_OWNER, &s, &u, &g) == SL_SLOTS_OK, "largest owner");
    v = sl_slots_view(a, s);
    CHECK(s == 2 && v.unit == SL_SLOTS_MAX_UNIT && v.loader == SL_SLOTS_MAX_OWNER, "fields at their limits");

    /* Generation wrap-around. */
    sl_slot_view w = sl_slots_decode(((uint64_t)SL_SLOT_READY << 62) | ((uint64_t)SL_SLOTS_GEN_MASK << 40) |
                                     ((uint64_t)5 << 20) | 3u);
    CHECK(w.state == SL_SLOT_READY && w.gen == SL_SLOTS_GEN_MASK && w.unit == 5 && w.holders == 3, "decode");

    sl_slots_close(a);
    free(ctl);
    free(data);
}

/* ---- slot arena across processes -------------------------------------- */

/* Shared test state, a region of the ctl segment. */
typedef struct ring_shared {
    _Atomic uint32_t stop;
    _Atomic uint32_t bad;       /* checksum failures seen by workers */
    _Atomic uint32_t discarded; /* fills refused at completion */
    _Atomic uint32_t fills[8];  /* completed fills per loader */
    _Atomic uint32_t progress[2]; /* units consumed per worker */
} ring_shared;

enum { CTL_VERSION = 1, DATA_VERSION = 1 };

typedef struct rig {
    sl_seg *ctl, *data;
    sl_proctab *procs;
    sl_slots *arena;
    ring_shared *sh;
} rig;

static int rig_create(rig *r, const char *ctl_kind, const char *data_kind, uint32_t n, uint64_t unit)
{
    memset(r, 0, sizeof *r);
    const uint64_t ssz = sl_slots_round(unit);
    const sl_seg_region cr[3] = {
        {"procs", sl_proctab_size()}, {"slots", sl_slots_ctl_size(n)}, {"test", sizeof(ring_shared)}};
    const sl_seg_region dr[1] = {{"data", n * ssz}};
    const uint64_t epoch = sl_seg_new_epoch();
    int rc = sl_seg_create(g_inst, ctl_kind, CTL_VERSION, cr, 3, epoch, &r->ctl);
    if (rc == 0)
        rc = sl_seg_create(g_inst, data_kind, DATA_VERSION, dr, 1, epoch, &r->data);
    if (rc)
        return rc;
    uint64_t psz, ssz2;
    void *p = sl_seg_region_get(r->ctl, "procs", &psz);
    void *s = sl_seg_region_get(r->ctl, "slots", &ssz2);
    rc = sl_proctab_format(p, psz);
    if (rc == 0)
        rc = sl_slots_format(s, ssz2, n, ssz);
    if (rc == 0)
        rc = sl_seg_publish(r->ctl);
    if (rc == 0)
        rc = sl_seg_publish(r->data);
    return rc;
}

/* What every process does to use the segments: attach by name, open. */
static int rig_attach(rig *r, const char *ctl_kind, const char *data_kind)
{
    memset(r, 0, sizeof *r);
    int rc = sl_seg_attach(g_inst, ctl_kind, CTL_VERSION, 0, &r->ctl);
    if (rc == 0)
        rc = sl_seg_attach(g_inst, data_kind, DATA_VERSION, 0, &r->data);
    if (rc)
        return rc;
    uint64_t psz, ssz, dsz, tsz;
    void *p = sl_seg_region_get(r->ctl, "procs", &psz);
    void *s = sl_seg_region_get(r->ctl, "slots", &ssz);
    void *d = sl_seg_region_get(r->data, "data", &dsz);
    r->sh = sl_seg_region_get(r->ctl, "test", &tsz);
    if (!p || !s || !d || !r->sh || tsz < sizeof(ring_shared))
        return -SL_EFORMAT;
    rc = sl_proctab_open(p, psz, &r->procs);
    if (rc == 0)
        rc = sl_slots_open(s, ssz, d, dsz, &r->arena);
    return rc;
}

static void rig_close(rig *r)
{
    sl_slots_close(r->arena);
    sl_proctab_close(r->procs);
    sl_seg_close(r->ctl);
    sl_seg_close(r->data);
}

static void rig_remove(rig *r)
{
    sl_slots_close(r->arena);
    sl_proctab_close(r->procs);
    CHECK(sl_seg_remove(r->ctl) == 0 && sl_seg_remove(r->data) == 0, "remove segments");
}

/* Loader process: fills whatever is wanted, in chunks, checking its claim
 * between chunks, until told to stop. */
static int loader_main(const char *ck, const char *dk, uint32_t index, size_t unit)
{
    rig r;
    if (rig_attach(&r, ck, dk))
        return 2;
    uint32_t rid;
    if (sl_proctab_register(r.procs, SL_ROLE_LOADER, &rid))
        return 3;
    const uint32_t me = sl_proctab_owner_id(r.procs, SL_ROLE_LOADER, rid);
    uint8_t *buf = malloc(unit);
    while (!atomic_load(&r.sh->stop)) {
        sl_proctab_heartbeat(r.procs, SL_ROLE_LOADER, rid);
        uint32_t seen = sl_slots_seq(r.arena);
        uint32_t slot, u, gen;
        if (sl_slots_claim_fill(r.arena, me, &slot, &u, &gen) != SL_SLOTS_OK) {
            sl_slots_wait_change(r.arena, seen, 50000000);
            continue;
        }
        unit_bytes(buf, unit, u);
        uint8_t *dst = sl_slots_data(r.arena, slot);
        bool valid = true;
        const size_t chunk = unit / 4;
        for (size_t off = 0; off < unit && valid; off += chunk) {
            if (sl_slots_fill_check(r.arena, slot, me, gen) != SL_SLOTS_OK) {
                valid = false;
                break;
            }
            memcpy(dst + off, buf + off, off + chunk <= unit ? chunk : unit - off);
            if ((off / chunk) % 2)
                sched_yield(); /* let others interleave mid-fill */
        }
        if (valid && sl_slots_fill_done(r.arena, slot, me, gen) == SL_SLOTS_OK)
            atomic_fetch_add(&r.sh->fills[index], 1);
        else
            atomic_fetch_add(&r.sh->discarded, 1);
    }
    free(buf);
    sl_proctab_deregister(r.procs, SL_ROLE_LOADER, rid);
    rig_close(&r);
    return 0;
}

/* Worker process: consumes units 0..n_units-1 in order, verifying each. */
static int worker_main(const char *ck, const char *dk, uint32_t index, uint32_t n_units, size_t unit,
                       const uint64_t *sums)
{
    rig r;
    if (rig_attach(&r, ck, dk))
        return 2;
    uint32_t rid;
    if (sl_proctab_register(r.procs, SL_ROLE_WORKER, &rid))
        return 3;
    int rc = 0;
    for (uint32_t u = 0; u < n_units; u++) {
        sl_proctab_heartbeat(r.procs, SL_ROLE_WORKER, rid);
        uint32_t slot, gen;
        if (sl_slots_acquire(r.arena, rid, u, 20 * SEC, &slot, &gen) != SL_SLOTS_OK) {
            fprintf(stderr, "worker %u: unit %u never became READY\n", index, u);
            rc = 4;
            break;
        }
        if (checksum(sl_slots_data(r.arena, slot), unit) != sums[u])
            atomic_fetch_add(&r.sh->bad, 1);
        /* Progress before release: the scheduler, woken by the release,
         * then sees that the unit is done. */
        atomic_store(&r.sh->progress[index], u + 1);
        if (sl_slots_release(r.arena, rid, slot) != SL_SLOTS_OK)
            rc = 5;
    }
    sl_proctab_deregister(r.procs, SL_ROLE_WORKER, rid);
    rig_close(&r);
    return rc;
}

/* Several loaders and two workers move many units through a small ring;
 * the parent schedules: it wants the next unit into a slot that is FREE or
 * READY with a unit both workers are done with. */
static void test_ring(void)
{
    enum { N_SLOTS = 3, N_LOADERS = 3, N_WORKERS = 2, N_UNITS = 400 };
    const size_t unit = 16384 - 64; /* not a multiple of 4 KiB on purpose */
    uint64_t *sums = malloc(N_UNITS * sizeof *sums);
    for (uint32_t u = 0; u < N_UNITS; u++)
        sums[u] = unit_checksum(u, unit);
    rig r;
    int rc = rig_create(&r, "ctl", "slots", N_SLOTS, unit);
    CHECK(rc == 0, "ring segments: %d", rc);
    if (rc) {
        rig_close(&r);
        free(sums);
        return;
    }
    rig_close(&r);
    rig p; /* the scheduler attaches like everyone else */
    CHECK(rig_attach(&p, "ctl", "slots") == 0, "scheduler attach");

    /* Direct I/O straight into a slot: the alignment is what allows it. */
    const char *path = "test_shm_odirect.bin";
    uint8_t *blk = aligned_alloc(4096, 8192);
    unit_bytes(blk, 8192, 12345);
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    bool wrote = fd >= 0 && write(fd, blk, 8192) == 8192;
    if (fd >= 0)
        close(fd);
    fd = wrote ? open(path, O_RDONLY | O_DIRECT) : -1;
    if (fd >= 0) {
        uint8_t *slot0 = sl_slots_data(p.arena, 0);
        CHECK(pread(fd, slot0, 8192, 0) == 8192 && memcmp(slot0, blk, 8192) == 0, "O_DIRECT read into a slot");
        close(fd);
    } else {
        printf("O_DIRECT not supported here (errno %d): direct-read check skipped\n", errno);
    }
    unlink(path);
    free(blk);

    pid_t kids[N_LOADERS + N_WORKERS];
    for (uint32_t i = 0; i < N_LOADERS; i++) {
        kids[i] = fork_child();
        if (kids[i] == 0)
            _exit(loader_main("ctl", "slots", i, unit));
    }
    for (uint32_t i = 0; i < N_WORKERS; i++) {
        kids[N_LOADERS + i] = fork_child();
        if (kids[N_LOADERS + i] == 0)
            _exit(worker_main("ctl", "slots", i, N_UNITS, unit, sums));
    }

    /* Schedule. Bounded: give up after 60 s of wall time (a hang, not a
     * timing assertion: a healthy run takes well under a second). */
    uint32_t next = 0;
    const uint64_t t0 = sl_proc_clock_ns();
    for (;;) {
        uint32_t seen = sl_slots_seq(p.arena);
        uint32_t done = atomic_load(&p.sh->progress[0]);
        uint32_t d1 = atomic_load(&p.sh->progress[1]);
        if (d1 < done)
            done = d1;
        if (done == N_UNITS)
            break;
        for (uint32_t s = 0; s < N_SLOTS && next < N_UNITS; s++) {
            sl_slot_view v = sl_slots_view(p.arena, s);
            bool reusable = v.state == SL_SLOT_FREE || (v.state == SL_SLOT_READY && v.holders == 0 && v.unit < done);
            if (reusable && sl_slots_want(p.arena, s, next, NULL) == SL_SLOTS_OK)
                next++;
        }
        if (sl_proc_clock_ns() - t0 > 60 * (uint64_t)SEC) {
            CHECK(0, "ring did not finish: %u wanted, %u consumed", next, done);
            break;
        }
        sl_slots_wait_change(p.arena, seen, 100000000);
    }
    atomic_store(&p.sh->stop, 1);
    for (uint32_t i = 0; i < N_LOADERS + N_WORKERS; i++) {
        int st = reap_child(kids[i]);
        CHECK(st == 0, "child %u exited with %d", i, st);
    }
    uint32_t total = 0;
    for (uint32_t i = 0; i < N_LOADERS; i++)
        total += atomic_load(&p.sh->fills[i]);
    CHECK(atomic_load(&p.sh->bad) == 0, "%u units failed their checksum", atomic_load(&p.sh->bad));
    CHECK(total == N_UNITS, "%u fills for %d units (each is filled exactly once)", total, N_UNITS);
    CHECK(atomic_load(&p.sh->discarded) == 0, "no fill discarded");
    uint64_t all_fills = 0;
    for (uint32_t s = 0; s < N_SLOTS; s++) {
        uint64_t f;
        sl_slots_stats(p.arena, s, &f, NULL);
        all_fills += f;
    }
    CHECK(all_fills == N_UNITS, "slot fill counters: %llu", (unsigned long long)all_fills);
    for (uint32_t i = 0; i < SL_PROCTAB_LOADERS; i++)
        CHECK(sl_proctab_check(p.procs, SL_ROLE_LOADER, i, 0, 0, NULL) == SL_PROC_FREE, "loader %u deregistered", i);
    printf("ring: %d units of %zu bytes through %d slots, %d loaders (fills %u/%u/%u), %d workers\n", N_UNITS, unit,
           N_SLOTS, N_LOADERS, atomic_load(&p.sh->fills[0]), atomic_load(&p.sh->fills[1]),
           atomic_load(&p.sh->fills[2]), N_WORKERS);
    rig_remove(&p);
    free(sums);
}

/* Kills and pauses: a loader SIGKILLed mid-fill, a loader paused mid-fill
 * that resumes after its slot was reclaimed and refilled, a worker
 * SIGKILLed holding a slot, a hung loader detected by its heartbeat. */
static void test_kills(void)
{
    const size_t unit = 8192;
    rig r;
    int rc = rig_create(&r, "kctl", "kslots", 2, unit);
    CHECK(rc == 0, "segments: %d", rc);
    rig_close(&r);
    if (rc)
        return;
    rig p;
    CHECK(rig_attach(&p, "kctl", "kslots") == 0, "attach");
    uint32_t crid, wrid, lrid;
    CHECK(sl_proctab_register(p.procs, SL_ROLE_COORDINATOR, &crid) == 0, "parent as coordinator");
    CHECK(sl_proctab_register(p.procs, SL_ROLE_WORKER, &wrid) == 0, "parent as worker");
    CHECK(sl_proctab_register(p.procs, SL_ROLE_LOADER, &lrid) == 0, "parent as loader");
    const uint32_t my_loader = sl_proctab_owner_id(p.procs, SL_ROLE_LOADER, lrid);
    uint8_t *good = malloc(unit);
    uint32_t slot, u, gen, g;
    dead_log dl = {.arena = p.arena};

    /* 1. A loader is SIGKILLed mid-fill: its slot goes back to WANTED with
     *    a new generation, and another loader fills the unit. */
    CHECK(sl_slots_want(p.arena, 0, 7, &g) == SL_SLOTS_OK, "want 7");
    int pipefd[2];
    SL_ASSERT(pipe(pipefd) == 0);
    pid_t pid = fork_child();
    if (pid == 0) {
        rig c;
        uint32_t rid, s, uu, gg;
        if (rig_attach(&c, "kctl", "kslots") || sl_proctab_register(c.procs, SL_ROLE_LOADER, &rid))
            _exit(2);
        uint32_t me = sl_proctab_owner_id(c.procs, SL_ROLE_LOADER, rid);
        if (sl_slots_claim_fill(c.arena, me, &s, &uu, &gg) != SL_SLOTS_OK)
            _exit(3);
        memset(sl_slots_data(c.arena, s), 0xee, unit / 2); /* half a fill */
        SL_ASSERT(write(pipefd[1], &me, sizeof me) == sizeof me);
        for (;;)
            pause();
    }
    uint32_t victim = 0;
    CHECK(read(pipefd[0], &victim, sizeof victim) == sizeof victim, "loader reports its claim");
    sl_slot_view v = sl_slots_view(p.arena, 0);
    CHECK(v.state == SL_SLOT_FILLING && v.loader == victim && v.unit == 7 && v.gen == g, "FILLING by the victim");
    kill(pid, SIGKILL);
    wait_exited_not_reaped(pid);
    int freed = sl_proctab_reap(p.procs, 0, on_dead, &dl, NULL);
    CHECK(freed == 1 && dl.role == SL_ROLE_LOADER && dl.owner == victim, "dead loader reaped");
    CHECK(reap_child(pid) == 128 + SIGKILL, "victim died of SIGKILL");
    v = sl_slots_view(p.arena, 0);
    CHECK(v.state == SL_SLOT_WANTED && v.unit == 7 && v.gen == g + 1, "slot reclaimed: WANTED(7, gen+1)");
    pid = fork_child();
    if (pid == 0) {
        rig c;
        uint32_t rid, s, uu, gg;
        if (rig_attach(&c, "kctl", "kslots") || sl_proctab_register(c.procs, SL_ROLE_LOADER, &rid))
            _exit(2);
        uint32_t me = sl_proctab_owner_id(c.procs, SL_ROLE_LOADER, rid);
        if (sl_slots_claim_fill(c.arena, me, &s, &uu, &gg) != SL_SLOTS_OK || uu != 7)
            _exit(3);
        unit_bytes(sl_slots_data(c.arena, s), unit, uu);
        int r2 = sl_slots_fill_done(c.arena, s, me, gg);
        sl_proctab_deregister(c.procs, SL_ROLE_LOADER, rid);
        _exit(r2 == SL_SLOTS_OK ? 0 : 4);
    }
    CHECK(reap_child(pid) == 0, "second loader refilled unit 7");
    CHECK(sl_slots_acquire(p.arena, wrid, 7, 10 * SEC, &slot, &gen) == SL_SLOTS_OK && slot == 0, "acquire 7");
    CHECK(checksum(sl_slots_data(p.arena, slot), unit) == unit_checksum(7, unit), "unit 7 intact after the refill");
    sl_slots_release(p.arena, wrid, slot);

    /* 2. A loader pauses mid-fill and resumes after its slot was reclaimed
     *    and refilled: its completion is refused by the generation check,
     *    and (checking its claim before writing more) it writes nothing. */
    CHECK(sl_slots_want(p.arena, 1, 9, &g) == SL_SLOTS_OK, "want 9");
    pid = fork_child();
    if (pid == 0) {
        rig c;
        uint32_t rid, s, uu, gg;
        if (rig_attach(&c, "kctl", "kslots") || sl_proctab_register(c.procs, SL_ROLE_LOADER, &rid))
            _exit(2);
        uint32_t me = sl_proctab_owner_id(c.procs, SL_ROLE_LOADER, rid);
        if (sl_slots_claim_fill(c.arena, me, &s, &uu, &gg) != SL_SLOTS_OK)
            _exit(3);
        SL_ASSERT(write(pipefd[1], &me, sizeof me) == sizeof me);
        memset(sl_slots_data(c.arena, s), 0xdd, unit / 2);
        raise(SIGSTOP);
        /* Resumed: the second half only if the claim still holds. */
        int chk = sl_slots_fill_check(c.arena, s, me, gg);
        if (chk == SL_SLOTS_OK)
            memset((uint8_t *)sl_slots_data(c.arena, s) + unit / 2, 0xdd, unit / 2);
        int done = sl_slots_fill_done(c.arena, s, me, gg);
        sl_proctab_deregister(c.procs, SL_ROLE_LOADER, rid);
        _exit((chk == SL_SLOTS_REFUSED ? 0 : 1) | (done == SL_SLOTS_REFUSED ? 0 : 2));
    }
    CHECK(read(pipefd[0], &victim, sizeof victim) == sizeof victim, "paused loader reports its claim");
    wait_stopped(pid);
    uint32_t dead[2] = {victim, UINT32_MAX};
    CHECK(sl_slots_reclaim(p.arena, alive_except, dead) == 1, "reclaimed as if dead");
    CHECK(sl_slots_claim_fill(p.arena, my_loader, &slot, &u, &gen) == SL_SLOTS_OK && slot == 1 && u == 9 &&
              gen == g + 1,
          "the parent claims unit 9 with the next generation");
    unit_bytes(good, unit, 9);
    memcpy(sl_slots_data(p.arena, slot), good, unit);
    CHECK(sl_slots_fill_done(p.arena, slot, my_loader, gen) == SL_SLOTS_OK, "parent fills unit 9");
    kill(pid, SIGCONT);
    int st = reap_child(pid);
    CHECK(st == 0, "resumed loader: claim check and completion refused (status %d)", st);
    v = sl_slots_view(p.arena, 1);
    CHECK(v.state == SL_SLOT_READY && v.unit == 9 && v.gen == g + 1, "slot still READY(9, gen+1)");
    CHECK(checksum(sl_slots_data(p.arena, 1), unit) == unit_checksum(9, unit), "unit 9 intact after the late loader");
    CHECK(sl_proctab_reap(p.procs, 0, on_dead, &dl, NULL) == 0, "the resumed loader deregistered itself");

    /* 3. A worker is SIGKILLed while holding a slot: its reference is
     *    dropped, the parent's own reference stays. */
    CHECK(sl_slots_try_acquire(p.arena, wrid, 9, &slot, &gen) == SL_SLOTS_OK, "parent holds 9");
    pid = fork_child();
    if (pid == 0) {
        rig c;
        uint32_t rid, s, gg;
        if (rig_attach(&c, "kctl", "kslots") || sl_proctab_register(c.procs, SL_ROLE_WORKER, &rid))
            _exit(2);
        if (sl_slots_acquire(c.arena, rid, 9, 10 * SEC, &s, &gg) != SL_SLOTS_OK)
            _exit(3);
        SL_ASSERT(write(pipefd[1], &rid, sizeof rid) == sizeof rid);
        for (;;)
            pause();
    }
    uint32_t wvictim = 0;
    CHECK(read(pipefd[0], &wvictim, sizeof wvictim) == sizeof wvictim, "worker reports its reference");
    v = sl_slots_view(p.arena, 1);
    CHECK(v.holders == ((1u << wrid) | (1u << wvictim)), "two holders: %x", v.holders);
    CHECK(sl_slots_want(p.arena, 1, 11, NULL) == SL_SLOTS_REFUSED, "held slot cannot be reused");
    kill(pid, SIGKILL);
    CHECK(reap_child(pid) == 128 + SIGKILL, "worker died of SIGKILL");
    freed = sl_proctab_reap(p.procs, 0, on_dead, &dl, NULL);
    CHECK(freed == 1 && dl.role == SL_ROLE_WORKER && dl.rid == wvictim, "dead worker reaped");
    v = sl_slots_view(p.arena, 1);
    CHECK(v.state == SL_SLOT_READY && v.holders == 1u << wrid, "dead worker's reference dropped: %x", v.holders);
    CHECK(sl_slots_release(p.arena, wrid, 1) == SL_SLOTS_OK, "parent releases");
    CHECK(sl_slots_want(p.arena, 1, 11, &g) == SL_SLOTS_OK, "slot reusable");

    /* 4. A loader hangs (stopped) mid-fill: the reaper sees its heartbeat
     *    age, kills it, and on the next pass reclaims its slot. */
    pid = fork_child();
    if (pid == 0) {
        rig c;
        uint32_t rid, s, uu, gg;
        if (rig_attach(&c, "kctl", "kslots") || sl_proctab_register(c.procs, SL_ROLE_LOADER, &rid))
            _exit(2);
        uint32_t me = sl_proctab_owner_id(c.procs, SL_ROLE_LOADER, rid);
        if (sl_slots_claim_fill(c.arena, me, &s, &uu, &gg) != SL_SLOTS_OK)
            _exit(3);
        raise(SIGSTOP);
        _exit(0);
    }
    wait_stopped(pid);
    v = sl_slots_view(p.arena, 1);
    CHECK(v.state == SL_SLOT_FILLING && v.unit == 11, "hung loader holds a claim");
    uint32_t killed = 0;
    capture_begin();
    freed = sl_proctab_reap(p.procs, 1, on_dead, &dl, &killed);
    capture_end();
    CHECK(freed == 0 && killed == 1, "hung loader killed (freed %d, killed %u)", freed, killed);
    wait_exited_not_reaped(pid);
    freed = sl_proctab_reap(p.procs, 1, on_dead, &dl, &killed);
    CHECK(freed == 1 && killed == 0, "then reaped");
    CHECK(reap_child(pid) == 128 + SIGKILL, "it died of SIGKILL");
    v = sl_slots_view(p.arena, 1);
    CHECK(v.state == SL_SLOT_WANTED && v.unit == 11 && v.gen == g + 1, "its slot is WANTED again");

    close(pipefd[0]);
    close(pipefd[1]);
    sl_proctab_deregister(p.procs, SL_ROLE_LOADER, lrid);
    sl_proctab_deregister(p.procs, SL_ROLE_WORKER, wrid);
    sl_proctab_deregister(p.procs, SL_ROLE_COORDINATOR, crid);
    free(good);
    rig_remove(&p);
}

/* Runs that crashed earlier (or were killed) left segments under their own
 * instance names; remove those whose owner is gone, which is exactly what
 * sl_seg_clean does for one instance. */
static void clean_earlier_runs(void)
{
    DIR *d = opendir("/dev/shm");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int pid;
        unsigned long tag;
        int n = 0;
        if (sscanf(e->d_name, "sluice-test-%d-%lx-%n", &pid, &tag, &n) == 2 && n > 0 && pid != getpid()) {
            char inst[SL_SEG_INSTANCE_MAX + 1];
            snprintf(inst, sizeof inst, "test-%d-%lx", pid, tag);
            sl_seg_clean(inst, 0);
        }
    }
    closedir(d);
}

int main(void)
{
    /* A hang must fail the test, not the CI job's time limit. */
    alarm(120);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(g_inst, sizeof g_inst, "test-%d-%lx", (int)getpid(), (unsigned long)(ts.tv_nsec & 0xfffff));
    _Static_assert(SL_PROCTAB_WORKERS == SL_SLOTS_MAX_HOLDERS, "a worker's role id is its holder bit");
    clean_earlier_runs();

    test_segment_roundtrip();
    test_header_validation();
    test_stale_cleanup();
    test_proctab();
    test_slots_states();
    test_ring();
    test_kills();

    CHECK(count_segments() == 0, "segments of instance %s left in /dev/shm: %d", g_inst, count_segments());
    sl_seg_clean(g_inst, SL_SEG_CLEAN_ALL);
    return sl_test_finish();
}
