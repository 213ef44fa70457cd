/* Process identity and liveness; see proc.h. Reads /proc/<pid>/stat for a
 * process's state and start time. */
#include "shm/proc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

/* Reads state (field 3) and start time (field 22) of /proc/<pid>/stat.
 * Returns false when the file cannot be read or parsed. The command name
 * (field 2) is in parentheses and may itself contain spaces and ')', so
 * parsing starts after the last ')'. */
static bool read_stat(pid_t pid, char *state, uint64_t *start)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ' || !p[2])
        return false;
    p += 2;
    *state = *p;
    /* p is at field 3; step to field 22. */
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (!p)
            return false;
        p++;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(p, &end, 10);
    if (errno || end == p)
        return false;
    *start = v;
    return true;
}

static sl_proc_ident pack(pid_t pid, uint64_t start)
{
    return ((uint64_t)(uint32_t)pid << 32) | (start & 0xffffffffu);
}

sl_proc_ident sl_proc_self(void)
{
    /* Heartbeats ask for it often; reading /proc each time would cost a
     * file open. Cached per thread and keyed by pid, so a forked child
     * (whose copy of the cache names its parent) recomputes it. */
    static _Thread_local pid_t cached_pid;
    static _Thread_local sl_proc_ident cached;
    pid_t pid = getpid();
    if (pid != cached_pid) {
        char state;
        uint64_t start = 0;
        if (!read_stat(pid, &state, &start))
            start = 0;
        cached = pack(pid, start);
        cached_pid = pid;
    }
    return cached;
}

sl_proc_ident sl_proc_ident_of(pid_t pid)
{
    if (pid <= 0)
        return 0;
    char state;
    uint64_t start;
    if (!read_stat(pid, &state, &start)) {
        /* No /proc (or not readable): fall back to the pid alone. */
        if (kill(pid, 0) == 0 || errno == EPERM)
            return pack(pid, 0);
        return 0;
    }
    if (state == 'Z' || state == 'X')
        return 0;
    return pack(pid, start);
}

bool sl_proc_alive(sl_proc_ident id)
{
    if (id == 0)
        return false;
    sl_proc_ident now = sl_proc_ident_of(sl_proc_pid(id));
    if (now == 0)
        return false;
    uint32_t want = (uint32_t)id, have = (uint32_t)now;
    return want == 0 || have == 0 || want == have;
}

int sl_proc_kill(sl_proc_ident id)
{
    pid_t pid = sl_proc_pid(id);
    if (pid <= 0)
        return -SL_ENOTFOUND;
#if defined(SYS_pidfd_open) && defined(SYS_pidfd_send_signal)
    /* Hold the process by a pidfd first: once we have it, the pid cannot be
     * reused until the fd is closed, so the identity check below and the
     * signal refer to the same process. */
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pfd >= 0) {
        int rc = 0;
        if (!sl_proc_alive(id)) {
            rc = -SL_ENOTFOUND;
        } else if (syscall(SYS_pidfd_send_signal, pfd, SIGKILL, NULL, 0) != 0) {
            rc = errno == ESRCH ? -SL_ENOTFOUND : -SL_EIO;
            if (rc == -SL_EIO)
                SL_ERROR("cannot kill pid %d: errno %d", (int)pid, errno);
        }
        close(pfd);
        return rc;
    }
    if (errno == ESRCH)
        return -SL_ENOTFOUND;
    /* ENOSYS and friends: fall through to kill(2). */
#endif
    if (!sl_proc_alive(id))
        return -SL_ENOTFOUND;
    if (kill(pid, SIGKILL) != 0) {
        if (errno == ESRCH)
            return -SL_ENOTFOUND;
        SL_ERROR("cannot kill pid %d: errno %d", (int)pid, errno);
        return -SL_EIO;
    }
    return 0;
}

uint64_t sl_proc_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
