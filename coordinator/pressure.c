/* PSI memory-pressure triggers; see pressure.h. */
#include "coordinator/pressure.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"

#define UNPRIV_WINDOW_MS 2000u /* windows unprivileged triggers must be multiples of */

struct sl_pressure {
    int fd;
    char path[PATH_MAX];
    uint32_t stall_ms, window_ms;
};

/* Writes the trigger, NUL included (the kernel's documented form). */
static int write_trigger(int fd, uint32_t stall_ms, uint32_t window_ms)
{
    char t[64];
    int n = snprintf(t, sizeof t, "some %llu %llu", (unsigned long long)stall_ms * 1000ull,
                     (unsigned long long)window_ms * 1000ull);
    return write(fd, t, (size_t)n + 1) == n + 1 ? 0 : errno;
}

int sl_pressure_open(const char *path, uint32_t stall_ms, uint32_t window_ms, sl_pressure **out)
{
    *out = NULL;
    if (!path)
        path = SL_PRESSURE_PATH;
    if (!stall_ms || !window_ms || stall_ms > window_ms || strlen(path) >= PATH_MAX) {
        SL_ERROR("a trigger of %u ms per %u ms on '%.64s' is not valid", stall_ms, window_ms, path);
        return -SL_EINVAL;
    }
    int fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        SL_INFO("no memory-pressure notifications: cannot open %s: %s", path, strerror(errno));
        return -SL_EUNSUPPORTED;
    }
    int e = write_trigger(fd, stall_ms, window_ms);
    if (e == EINVAL && window_ms % UNPRIV_WINDOW_MS) {
        /* Unprivileged: the window must be a multiple of 2 s. Keep the
         * stall's share of it. */
        uint32_t w = (window_ms + UNPRIV_WINDOW_MS - 1) / UNPRIV_WINDOW_MS * UNPRIV_WINDOW_MS;
        uint64_t s = (uint64_t)stall_ms * w / window_ms;
        stall_ms = (uint32_t)(s > w ? w : s);
        window_ms = w;
        e = write_trigger(fd, stall_ms, window_ms);
    }
    if (e) {
        SL_INFO("no memory-pressure notifications: %s refuses a trigger of %u ms per %u ms: %s", path, stall_ms,
                window_ms, strerror(e));
        close(fd);
        return -SL_EUNSUPPORTED;
    }
    sl_pressure *p = calloc(1, sizeof *p);
    if (!p) {
        close(fd);
        return -SL_ENOMEM;
    }
    p->fd = fd;
    snprintf(p->path, sizeof p->path, "%s", path);
    p->stall_ms = stall_ms;
    p->window_ms = window_ms;
    *out = p;
    return 0;
}

void sl_pressure_close(sl_pressure *p)
{
    if (!p)
        return;
    close(p->fd);
    free(p);
}

int sl_pressure_fd(const sl_pressure *p) { return p->fd; }
uint32_t sl_pressure_stall_ms(const sl_pressure *p) { return p->stall_ms; }
uint32_t sl_pressure_window_ms(const sl_pressure *p) { return p->window_ms; }

/* The avg10 value of the line starting with `which` ("some " / "full "). */
static bool line_avg10(const char *text, const char *which, double *out)
{
    size_t n = strlen(which);
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (strncmp(l, which, n) != 0)
            continue;
        const char *a = strstr(l, "avg10=");
        const char *eol = strchr(l, '\n');
        if (!a || (eol && a > eol))
            return false;
        char *end;
        double v = strtod(a + 6, &end);
        if (end == a + 6 || v < 0 || v > 100)
            return false;
        *out = v;
        return true;
    }
    return false;
}

int sl_pressure_parse(const char *text, double *some_avg10, double *full_avg10)
{
    *some_avg10 = *full_avg10 = 0;
    if (!line_avg10(text, "some ", some_avg10))
        return -SL_EFORMAT;
    if (strstr(text, "full ") && !line_avg10(text, "full ", full_avg10))
        return -SL_EFORMAT;
    return 0;
}

int sl_pressure_averages(const sl_pressure *p, double *some_avg10, double *full_avg10)
{
    int fd = open(p->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -SL_EIO;
    char buf[512];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -SL_EIO;
    buf[n] = 0;
    return sl_pressure_parse(buf, some_avg10, full_avg10) ? -SL_EIO : 0;
}
