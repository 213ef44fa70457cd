/* An ephemeral pipeline for a `sluice` subcommand (run, serve): one
 * coordinator, its loaders and compute workers, started as child processes
 * from the binaries beside `sluice`, talking over ipc endpoints in a private
 * temporary directory and shared memory named after this process, and
 * stopped (SIGTERM, then SIGKILL after 10 s) when the command is done. */
#ifndef SL_CLI_PIPELINE_H
#define SL_CLI_PIPELINE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define SL_PIPELINE_MAX_CHILDREN 128

typedef struct sl_pipeline {
    pid_t pids[SL_PIPELINE_MAX_CHILDREN]; /* the coordinator first */
    int n;
    char dir[64];        /* the temporary directory of the endpoints */
    char instance[48];   /* the instance name (shared-memory segments) */
    char client_ep[128]; /* the coordinator's client endpoint */
    char monitor_ep[128]; /* its monitor endpoint ("" unless asked for) */
} sl_pipeline;

typedef struct sl_pipeline_cfg {
    const char *who;   /* the command, for messages and names ("run", "serve") */
    const char *model;
    uint32_t n_ctx, n_batch, threads, ring, sessions;
    uint64_t budget;   /* 0: none (pin everything) */
    uint32_t loaders, workers;
    bool stats;        /* the coordinator's --stats */
    bool monitor;      /* give the coordinator a monitor endpoint */
} sl_pipeline_cfg;

/* Starts the processes (*p must be zeroed). Returns 0, or -1 after a
 * message on stderr; what was started is then stopped by sl_pipeline_stop,
 * which the caller runs either way. Does not wait for the processes to be
 * ready. */
int sl_pipeline_start(sl_pipeline *p, const sl_pipeline_cfg *cfg);

/* Whether the coordinator is still running (true for a pipeline that was
 * never started: nothing to watch). Reaps it when it has exited. Never
 * blocks. */
bool sl_pipeline_alive(sl_pipeline *p);

/* Memory the pipeline holds now (kB), shared memory counted once: the
 * processes' resident anonymous and file pages (RssAnon + RssFile of
 * /proc/PID/status) plus the allocated size of the instance's shared-memory
 * segments (/dev/shm). Cheap (a few small reads), so it may be sampled per
 * token: the proportional set size (smaps_rollup) walks every page table
 * entry of the mappings, a tenth of a second per process on a 4 GB model,
 * and sampling it per token halved decode speed. */
uint64_t sl_pipeline_footprint_kb(const sl_pipeline *p);

/* Stops every process and removes the temporary directory. Blocks up to
 * about 10 s. Safe to call twice. */
void sl_pipeline_stop(sl_pipeline *p);

#endif
