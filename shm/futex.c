/* Futex wait/wake; see futex.h. The only file with the platform #if for it. */
#include "shm/futex.h"

#include <errno.h>
#include <time.h>

#include "common/log.h"

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

int sl_futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t timeout_ns)
{
    struct timespec ts, *tp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = (time_t)(timeout_ns / 1000000000);
        ts.tv_nsec = (long)(timeout_ns % 1000000000);
        tp = &ts;
    }
    /* FUTEX_WAIT compares *word with expected inside the kernel, under the
     * futex's lock, so a wake between our caller's load and this call is
     * not lost: the comparison fails with EAGAIN. The timeout is relative
     * (CLOCK_MONOTONIC). */
    long r = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, expected, tp, NULL, 0);
    if (r == 0)
        return 0;
    switch (errno) {
    case ETIMEDOUT: return 1;
    case EAGAIN:
    case EINTR: return 0;
    default:
        SL_ERROR("futex wait on %p failed: errno %d", (void *)word, errno);
        SL_ASSERT(!"futex wait failed");
    }
}

int sl_futex_wake(_Atomic uint32_t *word, int32_t n)
{
    SL_ASSERT(n >= 1);
    long r = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, n, NULL, NULL, 0);
    if (r < 0) {
        SL_ERROR("futex wake on %p failed: errno %d", (void *)word, errno);
        SL_ASSERT(!"futex wake failed");
    }
    return (int)r;
}

#else /* no futex: poll in short sleeps */

/* How long one poll sleeps: short enough that a state change is noticed
 * well within a layer's compute time, long enough not to burn a core. */
#define POLL_NS 200000

int sl_futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t timeout_ns)
{
    int64_t left = timeout_ns;
    while (atomic_load_explicit(word, memory_order_acquire) == expected) {
        if (timeout_ns >= 0 && left <= 0)
            return 1;
        int64_t step = (timeout_ns >= 0 && left < POLL_NS) ? left : POLL_NS;
        struct timespec ts = {0, (long)step};
        nanosleep(&ts, NULL);
        left -= step;
    }
    return 0;
}

int sl_futex_wake(_Atomic uint32_t *word, int32_t n)
{
    (void)word;
    SL_ASSERT(n >= 1);
    return 0;
}

#endif
