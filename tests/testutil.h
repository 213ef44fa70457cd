/* Helpers shared by the tests: checks that count failures instead of
 * aborting, reference-data paths and JSON loading. */
#ifndef SL_TESTS_TESTUTIL_H
#define SL_TESTS_TESTUTIL_H

#include <cjson/cJSON.h>
#include <stdio.h>

extern int sl_test_failures;
extern int sl_test_checks;

/* Records one check; prints the location and message when it fails. */
#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        sl_test_checks++;                                                      \
        if (!(cond)) {                                                         \
            sl_test_failures++;                                                \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);    \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
        }                                                                      \
    } while (0)

/* Prints "<n> passed, <m> failed" and returns the process exit status. */
int sl_test_finish(void);

/* Writes "<SL_TESTDATA_DIR>/<rel>" into buf (size n) and returns buf. */
const char *sl_testdata_path(char *buf, size_t n, const char *rel);

/* Reads and parses a JSON file; returns NULL (after printing why) on failure.
 * The caller frees the result with cJSON_Delete. */
cJSON *sl_test_load_json(const char *path);

/* Relative L2 error ||a - b|| / ||b|| over n values. */
double sl_rel_err(const float *a, const float *b, size_t n);

#endif
