/* The durable session records (coordinator/sessions.h): creation, what a
 * coordinator that adopts the segment of a killed predecessor reads back
 * (the last committed copy of each record, its tokens, the weights_ready
 * flag), refusal of a segment of another shape or with a live owner, a
 * damaged record read as free, and the order stamp of finished records.
 * Uses its own instance name and leaves nothing in /dev/shm. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "coordinator/sessions.h"
#include "shm/segment.h"
#include "tests/testutil.h"

static char g_inst[SL_SEG_INSTANCE_MAX + 1];

static sl_sess_state running(uint64_t id, uint32_t n_tokens)
{
    sl_sess_state st = {0};
    st.phase = SL_SESS_RUNNING;
    st.req_id = id;
    st.req_hash = id * 31;
    st.n_tokens = n_tokens;
    st.n_fed = n_tokens - 1;
    st.n_prompt = 3;
    st.n_predict = 10;
    st.n_gen = n_tokens - 3;
    st.seq = st.n_gen;
    sl_sampler_params_default(&st.sp);
    sl_sampler_init(&st.ss, &st.sp);
    sl_detok_init(&st.dt, 0);
    return st;
}

/* A child that creates the segment, commits two sessions and dies without
 * cleaning up (as a killed coordinator does). */
static void dying_creator(void)
{
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        sl_sessions *s;
        if (sl_sessions_create(g_inst, 3, 16, sl_seg_new_epoch(), &s))
            _exit(1);
        int32_t *tok = sl_sessions_tokens(s, 1);
        for (int i = 0; i < 8; i++)
            tok[i] = 100 + i;
        sl_sess_state st = running(7, 8);
        sl_sessions_commit(s, 1, &st);
        st.n_fed = 8; /* a second commit: the other copy */
        sl_sessions_commit(s, 1, &st);
        sl_sess_state done = running(9, 5);
        done.phase = SL_SESS_DONE;
        done.finish = 2;
        done.final_tok = -1;
        sl_sessions_commit(s, 2, &done);
        sl_sessions_set_weights_ready(s, true);
        kill(getpid(), SIGKILL);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status), "the creator died by a signal");
}

static void test_adopt(void)
{
    dying_creator();
    sl_sessions *s;
    sl_log_set_level(SL_LOG_OFF);
    /* Another shape is refused. */
    CHECK(sl_sessions_adopt(g_inst, 4, 16, 1, &s) == -SL_EFORMAT && !s, "another session count is refused");
    CHECK(sl_sessions_adopt(g_inst, 3, 32, 1, &s) == -SL_EFORMAT && !s, "another context size is refused");
    sl_log_set_level(SL_LOG_WARN);
    CHECK(sl_sessions_adopt(g_inst, 3, 16, 2, &s) == 0 && s, "a dead creator's records are taken over");
    if (!s)
        return;
    CHECK(sl_sessions_weights_ready(s), "weights_ready survives");
    sl_sess_state st;
    sl_sessions_load(s, 0, &st);
    CHECK(st.phase == SL_SESS_FREE && st.req_id == 0, "a record never committed reads as free");
    sl_sessions_load(s, 1, &st);
    CHECK(st.phase == SL_SESS_RUNNING && st.req_id == 7 && st.n_tokens == 8 && st.n_fed == 8 && st.n_gen == 5, "the last commit of a running session: phase %u id %llu fed %u", st.phase, (unsigned long long)st.req_id, st.n_fed);
    CHECK(st.ss.magic == SL_SAMPLER_MAGIC, "the sampler state comes back");
    CHECK(sl_sessions_tokens(s, 1)[7] == 107, "the tokens come back");
    sl_sessions_load(s, 2, &st);
    CHECK(st.phase == SL_SESS_DONE && st.req_id == 9 && st.finish == 2 && st.ended > 0, "a finished session comes back with its order stamp");

    /* A damaged record (here: more positions committed than the context
     * holds) costs its request, not the reader: it reads as free. */
    sl_sess_state bad = running(11, 6);
    bad.n_fed = 7; /* more committed than in the context */
    sl_log_set_level(SL_LOG_OFF);
    sl_sessions_commit(s, 0, &bad);
    sl_sessions_load(s, 0, &st);
    sl_log_set_level(SL_LOG_WARN);
    CHECK(st.phase == SL_SESS_FREE && st.req_id == 0, "a damaged record reads as free");
    /* The next commit replaces it. */
    sl_sess_state good = running(12, 6);
    sl_sessions_commit(s, 0, &good);
    sl_sessions_load(s, 0, &st);
    CHECK(st.phase == SL_SESS_RUNNING && st.req_id == 12, "a good commit replaces the damaged record");

    /* DONE gets an order stamp once, when it finishes. */
    good.phase = SL_SESS_DONE;
    sl_sessions_commit(s, 0, &good);
    uint64_t ended = good.ended;
    CHECK(ended > 0, "finishing stamps the order");
    sl_sessions_commit(s, 0, &good);
    CHECK(good.ended == ended, "the stamp is given once");
    sl_sessions_remove(s);

    /* Nothing to adopt any more. */
    CHECK(sl_sessions_adopt(g_inst, 3, 16, 3, &s) == -SL_ENOTFOUND && !s, "removed records are gone");
}

static void test_create(void)
{
    sl_sessions *s, *t;
    sl_log_set_level(SL_LOG_OFF);
    CHECK(sl_sessions_create(g_inst, 0, 16, 1, &s) == -SL_EINVAL && !s, "zero sessions are refused");
    sl_log_set_level(SL_LOG_WARN);
    CHECK(sl_sessions_create(g_inst, 2, 8, 1, &s) == 0, "create");
    sl_sess_state st;
    sl_sessions_load(s, 1, &st);
    CHECK(st.phase == SL_SESS_FREE, "a new record is free");
    CHECK(!sl_sessions_weights_ready(s), "new records: weights not loaded yet");
    /* A live owner's records cannot be taken over by another process. */
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        sl_log_set_level(SL_LOG_OFF);
        _exit(sl_sessions_adopt(g_inst, 2, 8, 2, &t) == -SL_EINVAL && !t ? 0 : 1);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "a live owner's records cannot be taken over");
    sl_sessions_remove(s);
}

int main(void)
{
    snprintf(g_inst, sizeof g_inst, "tsess%d", (int)getpid());
    test_create();
    test_adopt();
    sl_seg_clean(g_inst, SL_SEG_CLEAN_ALL);
    return sl_test_finish();
}
