/* The thermal governor (coordinator/thermal.h) on fake thermal zones: it
 * finds the hottest readable zone, paces above the limit with a duty that
 * backs off and recovers, and stays out of the way without a limit or
 * zones. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "coordinator/thermal.h"
#include "tests/testutil.h"

static char g_root[64];

static void write_file(const char *rel, const char *text)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", g_root, rel);
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0)
        CHECK(0, "cannot write %s", path);
}

static void make_dir(const char *rel)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", g_root, rel);
    CHECK(mkdir(path, 0700) == 0, "mkdir %s", path);
}

static void remove_tree(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_root);
    CHECK(system(cmd) == 0, "rm %s", g_root);
}

#define SEC 1000000000ull

int main(void)
{
    snprintf(g_root, sizeof g_root, "/tmp/sl-thermal-XXXXXX");
    if (!mkdtemp(g_root)) {
        CHECK(0, "mkdtemp");
        return sl_test_finish();
    }
    /* No zones: nothing to pace. */
    sl_thermal *t;
    CHECK(sl_thermal_new(g_root, 80, &t) == 0, "new");
    CHECK(sl_thermal_sample(t, 0), "the first sample is news");
    sl_thermal_state st = sl_thermal_get(t);
    CHECK(!strcmp(st.state, "no_zones") && st.zones == 0 && st.duty == 1.0, "no zones: %s", st.state);
    CHECK(sl_thermal_delay_ms(t, 100) == 0, "no zones: no delay");
    sl_thermal_free(t);

    /* Two zones (one unreadable, one implausible) and a cooling device. */
    make_dir("thermal_zone0");
    make_dir("thermal_zone1");
    make_dir("thermal_zone2");
    make_dir("thermal_zone3");
    make_dir("cooling_device0");
    write_file("thermal_zone0/temp", "45000\n");
    write_file("thermal_zone1/temp", "91500\n");
    write_file("thermal_zone2/temp", "not a number\n");
    write_file("thermal_zone3/temp", "999999999\n");
    write_file("cooling_device0/temp", "120000\n");
    CHECK(sl_thermal_new(g_root, 80, &t) == 0, "new");
    CHECK(sl_thermal_sample(t, 0), "first sample");
    st = sl_thermal_get(t);
    CHECK(st.zones == 2 && st.temp_c == 91.5 && !strcmp(st.state, "hot") && st.duty < 1.0 && st.limit_c == 80,
          "hot: %s %u zones %.1f C duty %.2f", st.state, st.zones, st.temp_c, st.duty);
    CHECK(!sl_thermal_sample(t, SEC / 2), "no second sample within the period");
    double d = sl_thermal_delay_ms(t, 10);
    CHECK(d > 0 && d <= 10 * (1 / SL_THERMAL_MIN_DUTY), "pacing delay %.2f ms for a 10 ms step", d);
    /* Staying hot backs the duty off to its floor; delays grow and are
     * capped. */
    double prev = st.duty;
    for (int i = 1; i <= 20; i++) {
        CHECK(sl_thermal_sample(t, (uint64_t)i * SEC), "a hot sample is news");
        st = sl_thermal_get(t);
        CHECK(st.duty <= prev && st.duty >= SL_THERMAL_MIN_DUTY, "duty %.3f after %.3f", st.duty, prev);
        prev = st.duty;
    }
    CHECK(st.duty == SL_THERMAL_MIN_DUTY, "duty floor: %.3f", st.duty);
    CHECK(sl_thermal_delay_ms(t, 10) > d, "deeper pacing with a lower duty");
    CHECK(sl_thermal_delay_ms(t, 1e6) == SL_THERMAL_MAX_DELAY_MS, "delay cap");
    /* Just under the limit (within the hysteresis): the duty holds. */
    write_file("thermal_zone1/temp", "79000\n");
    sl_thermal_sample(t, 30 * SEC);
    CHECK(sl_thermal_get(t).duty == SL_THERMAL_MIN_DUTY, "hysteresis holds the duty");
    /* Cool: the duty recovers step by step to no pacing. */
    write_file("thermal_zone1/temp", "60000\n");
    int steps = 0;
    for (uint64_t s = 31; s < 80 && strcmp(sl_thermal_get(t).state, "ok"); s++, steps++)
        sl_thermal_sample(t, s * SEC);
    st = sl_thermal_get(t);
    CHECK(!strcmp(st.state, "ok") && st.duty == 1.0 && steps > 1, "recovered after %d samples: %s %.2f", steps,
          st.state, st.duty);
    CHECK(sl_thermal_delay_ms(t, 10) == 0, "no delay once cool");
    CHECK(st.paced_ms > 0, "paced time is counted: %.1f ms", st.paced_ms);
    sl_thermal_free(t);

    /* Without a limit: read for monitoring, never paced. */
    write_file("thermal_zone1/temp", "99000\n");
    CHECK(sl_thermal_new(g_root, 0, &t) == 0, "new");
    sl_thermal_sample(t, 0);
    st = sl_thermal_get(t);
    CHECK(!strcmp(st.state, "off") && st.temp_c == 99.0 && sl_thermal_delay_ms(t, 10) == 0, "off: %s", st.state);
    sl_thermal_free(t);

    double c;
    CHECK(!sl_thermal_read_zone("/nonexistent/temp", &c), "a missing zone");
    CHECK(sl_thermal_new("/nonexistent-thermal-root", 50, &t) == 0, "a missing root is not an error");
    sl_thermal_sample(t, 0);
    CHECK(!strcmp(sl_thermal_get(t).state, "no_zones"), "missing root: no zones");
    sl_thermal_free(t);
    remove_tree();
    return sl_test_finish();
}
