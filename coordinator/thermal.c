/* The thermal governor; see thermal.h. */
#include "coordinator/thermal.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"

struct sl_thermal {
    char root[PATH_MAX];
    double limit_c;
    uint64_t last_ns;
    bool sampled;
    sl_thermal_state st;
};

int sl_thermal_new(const char *root, double limit_c, sl_thermal **out)
{
    *out = NULL;
    if (!root)
        root = SL_THERMAL_ROOT;
    if (strlen(root) >= PATH_MAX - 64) {
        SL_ERROR("thermal root '%.64s...' is too long", root);
        return -SL_EINVAL;
    }
    sl_thermal *t = calloc(1, sizeof *t);
    if (!t)
        return -SL_ENOMEM;
    snprintf(t->root, sizeof t->root, "%s", root);
    t->limit_c = limit_c > 0 ? limit_c : 0;
    t->st = (sl_thermal_state){.state = t->limit_c > 0 ? "ok" : "off", .limit_c = t->limit_c, .duty = 1.0};
    *out = t;
    return 0;
}

void sl_thermal_free(sl_thermal *t) { free(t); }

bool sl_thermal_read_zone(const char *temp_path, double *c)
{
    int fd = open(temp_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    char buf[32];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = 0;
    char *end;
    long milli = strtol(buf, &end, 10);
    if (end == buf || (*end && *end != '\n'))
        return false;
    *c = milli / 1000.0;
    return *c >= -100.0 && *c <= 250.0;
}

/* The hottest readable zone under the root; false when there is none. */
static bool hottest(const sl_thermal *t, double *max_c, uint32_t *zones)
{
    *zones = 0;
    *max_c = 0;
    DIR *d = opendir(t->root);
    if (!d)
        return false;
    struct dirent *de;
    while ((de = readdir(d)) && *zones < SL_THERMAL_MAX_ZONES) {
        if (strncmp(de->d_name, "thermal_zone", 12) != 0)
            continue;
        char path[PATH_MAX + 300];
        snprintf(path, sizeof path, "%s/%s/temp", t->root, de->d_name);
        double c;
        if (!sl_thermal_read_zone(path, &c))
            continue;
        *max_c = *zones == 0 || c > *max_c ? c : *max_c;
        ++*zones;
    }
    closedir(d);
    return *zones > 0;
}

bool sl_thermal_sample(sl_thermal *t, uint64_t now_ns)
{
    if (t->sampled && now_ns - t->last_ns < SL_THERMAL_SAMPLE_MS * 1000000ull)
        return false;
    t->sampled = true;
    t->last_ns = now_ns;
    sl_thermal_state old = t->st;
    double c;
    uint32_t zones;
    if (!hottest(t, &c, &zones)) {
        t->st.state = "no_zones";
        t->st.zones = 0;
        t->st.temp_c = 0;
        t->st.duty = 1.0;
    } else {
        t->st.zones = zones;
        t->st.temp_c = c;
        if (t->limit_c <= 0) {
            t->st.state = "off";
        } else {
            if (c > t->limit_c)
                t->st.duty *= SL_THERMAL_BACKOFF;
            else if (c <= t->limit_c - SL_THERMAL_HYSTERESIS_C)
                t->st.duty /= SL_THERMAL_BACKOFF;
            if (t->st.duty < SL_THERMAL_MIN_DUTY)
                t->st.duty = SL_THERMAL_MIN_DUTY;
            if (t->st.duty > 0.999)
                t->st.duty = 1.0;
            t->st.state = t->st.duty < 1.0 ? "hot" : "ok";
        }
    }
    return old.state != t->st.state || old.zones != t->st.zones || old.duty != t->st.duty || t->st.duty < 1.0;
}

double sl_thermal_delay_ms(sl_thermal *t, double step_ms)
{
    if (t->st.duty >= 1.0 || step_ms <= 0)
        return 0;
    double d = step_ms * (1.0 / t->st.duty - 1.0);
    if (d > SL_THERMAL_MAX_DELAY_MS)
        d = SL_THERMAL_MAX_DELAY_MS;
    t->st.paced_ms += d;
    return d;
}

sl_thermal_state sl_thermal_get(const sl_thermal *t) { return t->st; }
