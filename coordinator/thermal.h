/* The thermal governor: reads the machine's thermal zones and, above a
 * temperature limit, paces compute: the coordinator waits before posting
 * the next step, so that the workers' duty cycle (time computing / wall
 * time) drops until the hottest zone is back under the limit. Pacing only
 * delays steps; it changes no output.
 *
 * Zones are the directories thermal_zone* under a root (Linux:
 * /sys/class/thermal; any directory laid out the same way for tests), each
 * with a `temp` file holding millidegrees Celsius. They are read once per
 * SL_THERMAL_SAMPLE_MS. Control: every sample above the limit multiplies
 * the target duty by SL_THERMAL_BACKOFF (down to SL_THERMAL_MIN_DUTY);
 * every sample at least SL_THERMAL_HYSTERESIS_C below it divides it back,
 * up to 1 (no pacing). The delay before a step of d ms is d * (1/duty - 1),
 * at most SL_THERMAL_MAX_DELAY_MS (the zones are read again meanwhile, and
 * a pipeline that answers nobody for minutes is worse than a warm one).
 *
 * Single-threaded: the coordinator's loop owns the handle. Nothing here
 * blocks beyond reading a few small sysfs files. */
#ifndef SL_COORDINATOR_THERMAL_H
#define SL_COORDINATOR_THERMAL_H

#include <stdbool.h>
#include <stdint.h>

#define SL_THERMAL_ROOT "/sys/class/thermal"
#define SL_THERMAL_SAMPLE_MS 1000
#define SL_THERMAL_BACKOFF 0.7
#define SL_THERMAL_MIN_DUTY 0.1
#define SL_THERMAL_HYSTERESIS_C 3.0
#define SL_THERMAL_MAX_ZONES 64
#define SL_THERMAL_MAX_DELAY_MS 2000.0

typedef struct sl_thermal sl_thermal;

/* What the governor sees and does (the monitor's `thermal` event). state
 * is a static string: "off" (no limit), "no_zones" (none readable), "ok",
 * "hot" (pacing). */
typedef struct sl_thermal_state {
    const char *state;
    double temp_c;   /* hottest zone at the last sample (0 when none) */
    double limit_c;  /* 0: off */
    uint32_t zones;  /* zones readable at the last sample */
    double duty;     /* target fraction of time spent computing, (0, 1] */
    double paced_ms; /* total delay added so far */
} sl_thermal_state;

/* A governor over the zones under `root` (NULL: SL_THERMAL_ROOT) that
 * paces above limit_c degrees (<= 0: never; the zones are still read for
 * monitoring). A root without zones is not an error: the state says
 * "no_zones" and nothing is paced. Returns 0 and *out (sl_thermal_free), or
 * -SL_ENOMEM / -SL_EINVAL (a root path over PATH_MAX), logged. */
int sl_thermal_new(const char *root, double limit_c, sl_thermal **out);

/* Frees the governor. NULL accepted. */
void sl_thermal_free(sl_thermal *t);

/* Reads the zones when SL_THERMAL_SAMPLE_MS passed since the last sample
 * (now_ns: CLOCK_MONOTONIC) and adjusts the duty. Returns true when it
 * sampled and the state changed, or it is pacing (worth publishing). */
bool sl_thermal_sample(sl_thermal *t, uint64_t now_ns);

/* The delay, in ms, to put before posting a step after one that computed
 * for step_ms; 0 unless pacing. Adds it to the total paced_ms (the caller
 * waits that long). */
double sl_thermal_delay_ms(sl_thermal *t, double step_ms);

/* The current state. */
sl_thermal_state sl_thermal_get(const sl_thermal *t);

/* Reads one zone's `temp` file: degrees Celsius in *c. Returns false when
 * it cannot be read or holds no plausible temperature (-100 .. 250 C). */
bool sl_thermal_read_zone(const char *temp_path, double *c);

#endif
