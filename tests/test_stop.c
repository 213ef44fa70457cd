/* Stop strings across token boundaries (gateway/stop.h): hand-made cases,
 * then random texts cut at random places against a direct search. */
#include <stdlib.h>
#include <string.h>

#include "gateway/stop.h"
#include "tests/testutil.h"

/* Feeds the pieces one after another; returns the final released length
 * and whether a stop string matched. Checks that the released length never
 * shrinks and never passes the text. */
static size_t feed(sl_stop *s, const char *const *pieces, size_t n, bool *matched)
{
    char text[4096];
    size_t len = 0, last = 0;
    *matched = false;
    for (size_t i = 0; i < n && !*matched; i++) {
        size_t pl = strlen(pieces[i]);
        memcpy(text + len, pieces[i], pl);
        len += pl;
        size_t rel = sl_stop_scan(s, text, len, i + 1 == n, matched);
        CHECK(rel >= last && rel <= len, "released %zu after %zu, text %zu", rel, last, len);
        last = rel;
    }
    return last;
}

static void check_case(const char *const *stops, size_t n_stops, const char *const *pieces, size_t n_pieces,
                       size_t want, bool want_match)
{
    size_t lens[SL_STOP_MAX];
    for (size_t i = 0; i < n_stops; i++)
        lens[i] = strlen(stops[i]);
    sl_stop s;
    CHECK(sl_stop_init(&s, stops, lens, n_stops) == 0, "init");
    bool m;
    size_t got = feed(&s, pieces, n_pieces, &m);
    CHECK(got == want && m == want_match, "stop '%s' (first of %zu), first piece '%s': got %zu %d, want %zu %d",
          n_stops ? stops[0] : "", n_stops, pieces[0], got, m, want, want_match);
}

static void test_cases(void)
{
    /* Split over tokens: "\n" then "\n". */
    check_case((const char *[]){"\n\n"}, 1, (const char *[]){"Hello\n", "\n", "World"}, 3, 5, true);
    /* A partial match that turns out not to be one is released whole. */
    check_case((const char *[]){"abc"}, 1, (const char *[]){"xab", "d", "e"}, 3, 5, false);
    /* Held back while it may still match ... */
    {
        const char *stops[] = {"abc"};
        size_t lens[] = {3};
        sl_stop s;
        sl_stop_init(&s, stops, lens, 1);
        bool m;
        CHECK(sl_stop_scan(&s, "xxab", 4, false, &m) == 2 && !m, "'ab' at the end is held back");
        CHECK(sl_stop_scan(&s, "xxab", 4, true, &m) == 4 && !m, "... and released at the end");
    }
    /* The earliest position wins among strings that match at once. */
    check_case((const char *[]){"world", "lo w"}, 2, (const char *[]){"hello world"}, 1, 3, true);
    /* A stop string that ends first (in time) wins over one that would
     * start earlier but is not complete yet. */
    check_case((const char *[]){"abcd", "bc"}, 2, (const char *[]){"xab", "c", "d"}, 3, 2, true);
    /* At the very beginning. */
    check_case((const char *[]){"Once"}, 1, (const char *[]){"On", "ce upon"}, 2, 0, true);
    /* Multi-byte UTF-8 stop strings. */
    check_case((const char *[]){"\xc3\xa9t\xc3\xa9"}, 1, (const char *[]){"un \xc3\xa9", "t", "\xc3\xa9 chaud"}, 3, 3,
               true);
    /* No stop strings: everything at once. */
    check_case(NULL, 0, (const char *[]){"abc", "def"}, 2, 6, false);
    /* After a match nothing more is released. */
    {
        const char *stops[] = {"b"};
        size_t lens[] = {1};
        sl_stop s;
        sl_stop_init(&s, stops, lens, 1);
        bool m;
        CHECK(sl_stop_scan(&s, "ab", 2, false, &m) == 1 && m, "match");
        CHECK(sl_stop_scan(&s, "abcd", 4, true, &m) == 1 && m, "stays matched");
    }
    /* Bad sets. */
    {
        const char *stops[SL_STOP_MAX + 1];
        size_t lens[SL_STOP_MAX + 1];
        for (int i = 0; i <= SL_STOP_MAX; i++) {
            stops[i] = "x";
            lens[i] = 1;
        }
        sl_stop s;
        CHECK(sl_stop_init(&s, stops, lens, SL_STOP_MAX + 1) < 0, "too many stop strings");
        lens[0] = 0;
        CHECK(sl_stop_init(&s, stops, lens, 1) < 0, "an empty stop string");
        lens[0] = SL_STOP_MAX_LEN + 1;
        CHECK(sl_stop_init(&s, stops, lens, 1) < 0, "a stop string over the cap");
    }
}

/* The reference: after each piece, the earliest occurrence of any stop
 * string that lies wholly in the text so far. */
static size_t direct(const char *text, const size_t *cuts, size_t n_cuts, char stops[][8], size_t n_stops,
                     bool *matched)
{
    for (size_t c = 0; c < n_cuts; c++) {
        size_t len = cuts[c];
        for (size_t p = 0; p < len; p++)
            for (size_t i = 0; i < n_stops; i++) {
                size_t sl = strlen(stops[i]);
                if (p + sl <= len && !memcmp(text + p, stops[i], sl)) {
                    *matched = true;
                    return p;
                }
            }
    }
    *matched = false;
    return cuts[n_cuts - 1];
}

static void test_random(void)
{
    srand(12345);
    int iter, partial = 0, matches = 0;
    for (iter = 0; iter < 20000; iter++) {
        char text[64], stops[4][8];
        size_t len = 1 + (size_t)rand() % 40, n_stops = 1 + (size_t)rand() % 3;
        for (size_t i = 0; i < len; i++)
            text[i] = "abc"[rand() % 3];
        text[len] = 0;
        const char *sp[4];
        size_t sl[4];
        for (size_t i = 0; i < n_stops; i++) {
            size_t k = 1 + (size_t)rand() % 5;
            for (size_t j = 0; j < k; j++)
                stops[i][j] = "abc"[rand() % 3];
            stops[i][k] = 0;
            sp[i] = stops[i];
            sl[i] = k;
        }
        size_t cuts[64], n_cuts = 0;
        for (size_t p = 1; p < len; p++)
            if (rand() % 3 == 0)
                cuts[n_cuts++] = p;
        cuts[n_cuts++] = len;
        bool want_m, m = false;
        size_t want = direct(text, cuts, n_cuts, stops, n_stops, &want_m);
        sl_stop s;
        sl_stop_init(&s, sp, sl, n_stops);
        size_t got = 0;
        for (size_t c = 0; c < n_cuts && !m; c++) {
            size_t rel = sl_stop_scan(&s, text, cuts[c], c + 1 == n_cuts, &m);
            /* What is released never holds the start of a stop string
             * that is complete in the final text. */
            if (want_m && !m && rel > want)
                break;
            partial += rel < cuts[c];
            got = rel;
        }
        if (got != want || m != want_m) {
            CHECK(0, "text '%s' stops '%s'...: got %zu %d, want %zu %d", text, stops[0], got, m, want, want_m);
            break;
        }
        matches += m;
    }
    CHECK(iter == 20000, "every random case agrees with the direct search");
    /* The cases exercise both outcomes and text held back mid-way. */
    CHECK(matches > 1000 && matches < 19000 && partial > 1000, "%d matches, %d held back", matches, partial);
}

int main(void)
{
    test_cases();
    test_random();
    return sl_test_finish();
}
