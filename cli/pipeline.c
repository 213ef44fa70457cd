/* Starting and stopping an ephemeral pipeline; see pipeline.h. */
#include "cli/pipeline.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The directory of this executable: the other sluice binaries live there. */
static int exe_dir(char *buf, size_t n)
{
    ssize_t len = readlink("/proc/self/exe", buf, n - 1);
    if (len <= 0)
        return -1;
    buf[len] = 0;
    char *slash = strrchr(buf, '/');
    if (!slash)
        return -1;
    *slash = 0;
    return 0;
}

static int spawn(sl_pipeline *p, const char *who, char *const argv[])
{
    if (p->n == SL_PIPELINE_MAX_CHILDREN)
        return -1;
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], NULL, NULL, argv, environ);
    if (rc) {
        fprintf(stderr, "sluice %s: cannot start %s: %s\n", who, argv[0], strerror(rc));
        return -1;
    }
    p->pids[p->n++] = pid;
    return 0;
}

uint64_t sl_pipeline_footprint_kb(const sl_pipeline *p)
{
    uint64_t total = 0;
    for (int i = 0; i < p->n; i++) {
        char path[64], line[256];
        snprintf(path, sizeof path, "/proc/%d/status", (int)p->pids[i]);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        while (fgets(line, sizeof line, f)) {
            unsigned long long kb;
            if (sscanf(line, "RssAnon: %llu kB", &kb) == 1 || sscanf(line, "RssFile: %llu kB", &kb) == 1)
                total += kb;
        }
        fclose(f);
    }
    /* The segments: tmpfs files whose allocated blocks are the memory they
     * hold, whoever maps them. */
    char prefix[96];
    const int plen = snprintf(prefix, sizeof prefix, "sluice-%s-", p->instance);
    DIR *d = opendir("/dev/shm");
    if (!d)
        return total;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (plen > 0 && strncmp(e->d_name, prefix, (size_t)plen) == 0 && fstatat(dirfd(d), e->d_name, &st, 0) == 0)
            total += (uint64_t)st.st_blocks * 512 / 1024;
    }
    closedir(d);
    return total;
}

void sl_pipeline_stop(sl_pipeline *p)
{
    for (int i = 0; i < p->n; i++)
        kill(p->pids[i], SIGTERM);
    double deadline = now_s() + 10.0;
    for (int i = 0; i < p->n; i++) {
        int st;
        while (waitpid(p->pids[i], &st, WNOHANG) == 0) {
            if (now_s() > deadline) {
                kill(p->pids[i], SIGKILL);
                waitpid(p->pids[i], &st, 0);
                break;
            }
            usleep(10000);
        }
    }
    p->n = 0;
    if (p->dir[0]) {
        char path[128];
        snprintf(path, sizeof path, "%s/client", p->dir);
        unlink(path);
        snprintf(path, sizeof path, "%s/monitor", p->dir);
        unlink(path);
        rmdir(p->dir);
        p->dir[0] = 0;
    }
}

bool sl_pipeline_alive(sl_pipeline *p)
{
    int st;
    if (p->n == 0)
        return true; /* nothing started: not ours to watch */
    pid_t r = waitpid(p->pids[0], &st, WNOHANG);
    if (r == 0)
        return true;
    p->pids[0] = p->pids[--p->n]; /* reaped */
    return false;
}

int sl_pipeline_start(sl_pipeline *p, const sl_pipeline_cfg *cfg)
{
    const char *who = cfg->who;
    char dir[PATH_MAX], bin[PATH_MAX + 32], n_ctx_s[16], batch_s[16], threads_s[16], ring_s[16], budget_s[32],
        sessions_s[16];
    if (exe_dir(dir, sizeof dir)) {
        fprintf(stderr, "sluice %s: cannot find the sluice binaries\n", who);
        return -1;
    }
    snprintf(p->dir, sizeof p->dir, "/tmp/sluice-%.8s-XXXXXX", who);
    if (!mkdtemp(p->dir)) {
        fprintf(stderr, "sluice %s: cannot create a temporary directory: %s\n", who, strerror(errno));
        p->dir[0] = 0;
        return -1;
    }
    snprintf(p->instance, sizeof p->instance, "%.8s%d", who, (int)getpid());
    snprintf(p->client_ep, sizeof p->client_ep, "ipc://%s/client", p->dir);
    if (cfg->monitor)
        snprintf(p->monitor_ep, sizeof p->monitor_ep, "ipc://%s/monitor", p->dir);
    snprintf(n_ctx_s, sizeof n_ctx_s, "%u", cfg->n_ctx);
    snprintf(batch_s, sizeof batch_s, "%u", cfg->n_batch);
    snprintf(threads_s, sizeof threads_s, "%u", cfg->threads);
    snprintf(ring_s, sizeof ring_s, "%u", cfg->ring);
    snprintf(sessions_s, sizeof sessions_s, "%u", cfg->sessions ? cfg->sessions : 1);
    snprintf(budget_s, sizeof budget_s, "%llu", (unsigned long long)cfg->budget);
    snprintf(bin, sizeof bin, "%s/sluice-coordinator", dir);
    char *cargv[32] = {bin, "-m", (char *)cfg->model, "--instance", p->instance, "--client", p->client_ep,
                       "-c", n_ctx_s, "-b", batch_s, "-t", threads_s, "--ring", ring_s, "--sessions", sessions_s};
    int k = 17;
    if (cfg->stats)
        cargv[k++] = "--stats";
    if (cfg->monitor) {
        cargv[k++] = "--monitor";
        cargv[k++] = p->monitor_ep;
    }
    if (cfg->budget) {
        cargv[k++] = "--mem-budget";
        cargv[k++] = budget_s;
    }
    cargv[k] = NULL;
    if (spawn(p, who, cargv))
        return -1;
    char lbin[PATH_MAX + 32], wbin[PATH_MAX + 32];
    snprintf(lbin, sizeof lbin, "%s/sluice-loader", dir);
    snprintf(wbin, sizeof wbin, "%s/sluice-compute", dir);
    char *largv[] = {lbin, "--instance", p->instance, NULL};
    char *wargv[] = {wbin, "--instance", p->instance, "-t", threads_s, NULL};
    for (uint32_t i = 0; i < cfg->loaders; i++)
        if (spawn(p, who, largv))
            return -1;
    for (uint32_t i = 0; i < cfg->workers; i++)
        if (spawn(p, who, wargv))
            return -1;
    return 0;
}
