/* Tests of `sluice synth` (cli/synth.c), run as a process: small custom
 * shapes synthesize, open as models, tokenize text and run through the
 * engine to finite logits; the same seed gives a byte-identical file
 * whatever the thread count, another seed a different one; the Q4_K_M
 * mixture has its types where they belong; bad flags, unwritable paths and
 * a full disk (simulated with a file size limit) give a message, a non-zero
 * exit status and no file.
 *
 * usage: test_synth SLUICE_BINARY WORK_DIR */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "compute/engine.h"
#include "model/dtype.h"
#include "model/gguf.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "testutil.h"

static const char *g_sluice, *g_dir;
static char g_stderr_path[4096];

static const char *last_stderr(void);

/* Runs `sluice synth ARGS...` (NULL-terminated) with its stderr captured in
 * g_stderr_path and, when fsize_limit is not zero, a file size limit of that
 * many bytes. Returns the exit status, or 128 + signal. */
static int run_synth(rlim_t fsize_limit, const char *const *args)
{
    const char *argv[64] = {g_sluice, "synth"};
    int n = 2;
    for (; args[n - 2]; n++) {
        SL_ASSERT(n < 63);
        argv[n] = args[n - 2];
    }
    argv[n] = NULL;
    pid_t pid = fork();
    SL_ASSERT(pid >= 0);
    if (pid == 0) {
        int fd = open(g_stderr_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int devnull = open("/dev/null", O_WRONLY);
        if (fd < 0 || devnull < 0 || dup2(fd, 2) < 0 || dup2(devnull, 1) < 0)
            _exit(125);
        if (fsize_limit) {
            struct rlimit rl = {fsize_limit, fsize_limit};
            if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
                _exit(126);
        }
        execv(g_sluice, (char *const *)argv);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    /* Under the sanitizers a bug in the child shows as exit status 1, which
     * some cases expect: look for the report too. */
    const char *err = last_stderr();
    CHECK(!strstr(err, "Sanitizer") && !strstr(err, "runtime error"), "sanitizer report from synth: %s", err);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The captured stderr of the last run, NUL-terminated (static buffer). */
static const char *last_stderr(void)
{
    static char buf[8192];
    FILE *f = fopen(g_stderr_path, "rb");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = 0;
    return buf;
}

static char *path_in_dir(const char *name)
{
    static char bufs[8][4096];
    static int k;
    char *p = bufs[k++ % 8];
    snprintf(p, 4096, "%s/test_synth.%d.%s", g_dir, (int)getpid(), name);
    return p;
}

/* Reads a whole file into a malloc'd buffer; NULL when it cannot. */
static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Whether any file in g_dir starts with `prefix` (a leftover partial). */
static bool leftover(const char *path)
{
    char cmd[8300];
    snprintf(cmd, sizeof cmd, "ls '%s'.partial-* >/dev/null 2>&1", path);
    return system(cmd) == 0;
}

/* Opens the model, checks its shape, tokenizes text and runs tokens through
 * the engine: the logits must be finite and not all equal. */
static void check_runs(const char *path, uint32_t dim, uint32_t layers, uint32_t vocab, const char *what)
{
    sl_model *m = NULL;
    int rc = sl_model_open(path, &m);
    CHECK(rc == 0, "%s: sl_model_open: %d", what, rc);
    if (rc)
        return;
    const sl_hparams *hp = sl_model_hparams(m);
    CHECK(hp->n_embd == dim && hp->n_layer == layers && hp->n_vocab == vocab, "%s: shape %u/%u/%u", what,
          hp->n_embd, hp->n_layer, hp->n_vocab);

    sl_tokenizer *tk = NULL;
    rc = sl_tokenizer_new(sl_model_gguf(m), &tk);
    CHECK(rc == 0, "%s: tokenizer: %d", what, rc);
    int32_t ids[256];
    int n = 0;
    if (rc == 0) {
        const char *text = "Hello world, the quick brown fox! 42 \xc3\xa9t\xc3\xa9";
        n = sl_tokenizer_encode(tk, text, strlen(text), SL_TOK_ADD_SPECIAL, ids, 256);
        CHECK(n > 3 && n <= 256 && ids[0] == 1, "%s: encode gave %d tokens", what, n);
        char back[256];
        /* Without the BOS, the first piece loses the space the tokenizer added. */
        long k = n > 1 ? sl_tokenizer_decode(tk, ids + 1, (size_t)n - 1, 0, back, sizeof back) : -1;
        CHECK(k == (long)strlen(text) && memcmp(back, text, strlen(text)) == 0,
              "%s: decode gives the text back: %ld bytes, '%.*s'", what, k, (int)(k > 0 && k < 256 ? k : 0),
              back);
        sl_tokenizer_free(tk);
    }

    sl_engine *e = NULL;
    rc = sl_engine_new(m, 64, 16, 2, &e);
    CHECK(rc == 0, "%s: engine: %d", what, rc);
    if (rc == 0 && n > 0) {
        if (n > 16)
            n = 16;
        float *logits = malloc((size_t)n * vocab * sizeof *logits);
        rc = sl_engine_eval(e, ids, (uint32_t)n, true, logits);
        CHECK(rc == 0, "%s: eval %d", what, rc);
        size_t bad = 0;
        float lo = INFINITY, hi = -INFINITY;
        for (size_t i = 0; rc == 0 && i < (size_t)n * vocab; i++) {
            bad += !isfinite(logits[i]);
            lo = fminf(lo, logits[i]);
            hi = fmaxf(hi, logits[i]);
        }
        CHECK(bad == 0 && hi > lo, "%s: %zu non-finite logits, range [%g, %g]", what, bad, (double)lo,
              (double)hi);
        free(logits);
    }
    sl_engine_free(e);
    sl_model_close(m);
}

static void test_determinism(void)
{
    const char *a = path_in_dir("a.gguf"), *b = path_in_dir("b.gguf"), *c = path_in_dir("c.gguf");
    const char *shape[] = {"--shape", "custom", "--layers",   "2", "--dim",   "128", "--ff",   "320",
                           "--heads", "4",      "--kv-heads", "2", "--vocab", "600", "--type", "q4_0"};
#define SHAPE                                                                                                \
    shape[0], shape[1], shape[2], shape[3], shape[4], shape[5], shape[6], shape[7], shape[8], shape[9],      \
        shape[10], shape[11], shape[12], shape[13], shape[14], shape[15]
    CHECK(run_synth(0, (const char *[]){"-o", a, SHAPE, "--seed", "7", "-t", "2", NULL}) == 0, "synth a: %s",
          last_stderr());
    CHECK(run_synth(0, (const char *[]){"-o", b, SHAPE, "--seed", "7", "-t", "1", NULL}) == 0, "synth b: %s",
          last_stderr());
    CHECK(run_synth(0, (const char *[]){"-o", c, SHAPE, "--seed", "8", "-t", "2", NULL}) == 0, "synth c: %s",
          last_stderr());
#undef SHAPE
    size_t la = 0, lb = 0, lc = 0;
    uint8_t *da = slurp(a, &la), *db = slurp(b, &lb), *dc = slurp(c, &lc);
    CHECK(da && db && dc, "read the three files");
    if (da && db && dc) {
        CHECK(la == lb && memcmp(da, db, la) == 0,
              "same seed, 2 threads vs 1: byte-identical (%zu vs %zu bytes)", la, lb);
        CHECK(la == lc && memcmp(da, dc, la) != 0, "another seed: same size, different bytes");
    }
    free(da);
    free(db);
    free(dc);
    check_runs(a, 128, 2, 600, "q4_0 custom");
    CHECK(!leftover(a), "no partial file left");
    unlink(a);
    unlink(b);
    unlink(c);
}

/* A mixture of experts: the model description sees the experts, and the
 * engine runs it. */
static void test_experts(void)
{
    const char *p = path_in_dir("moe.gguf");
    int rc = run_synth(0, (const char *[]){"-o", p, "--shape", "custom", "--layers", "2", "--dim", "128", "--ff",
                                           "64", "--heads", "4", "--vocab", "300", "--experts", "6", "--experts-used",
                                           "2", "--type", "q8_0", NULL});
    CHECK(rc == 0, "synth moe: %s", last_stderr());
    sl_model *m = NULL;
    if (rc == 0 && sl_model_open(p, &m) == 0) {
        const sl_hparams *hp = sl_model_hparams(m);
        CHECK(hp->n_expert == 6 && hp->n_expert_used == 2 && hp->n_ff_exp == 64, "moe: %u experts, %u used, ff %u",
              hp->n_expert, hp->n_expert_used, hp->n_ff_exp);
        sl_unit u;
        sl_model_expert_unit(m, 1, 5, &u);
        CHECK(u.n_ranges == 3 && u.tensors[0].type == SL_Q8_0, "moe: an expert is three Q8_0 slices");
        CHECK(sl_model_layer_unit(m, 0)->n_ranges > 1, "moe: tensors in converted files' order");
        sl_model_close(m);
    } else {
        CHECK(0, "moe model opens");
    }
    check_runs(p, 128, 2, 300, "q8_0 moe custom");
    unlink(p);
    rc = run_synth(0, (const char *[]){"-o", p, "--shape", "custom", "--layers", "1", "--dim", "64", "--ff", "64",
                                       "--heads", "4", "--experts", "4", "--type", "q8_0", NULL});
    CHECK(rc == 2 && strstr(last_stderr(), "--experts-used"), "experts without --experts-used: %s", last_stderr());
    CHECK(!exists(p), "no file for a usage error");
}

static void test_types(void)
{
    /* Q4_K_M: with 8 layers, attn_v and ffn_down get Q6_K in layers 0, 3, 6, 7. */
    const char *p = path_in_dir("km.gguf");
    int rc =
        run_synth(0, (const char *[]){"-o", p, "--shape", "custom", "--layers", "8", "--dim", "256", "--ff",
                                      "512", "--heads", "4", "--vocab", "300", "--type", "q4_k_m", NULL});
    CHECK(rc == 0, "synth q4_k_m: %s", last_stderr());
    sl_gguf *g = NULL;
    if (rc == 0 && sl_gguf_open(p, &g) == 0) {
        const sl_gguf_tensor *t = sl_gguf_tensor_find(g, "output.weight");
        CHECK(t && t->type == SL_Q6_K, "output is Q6_K");
        t = sl_gguf_tensor_find(g, "token_embd.weight");
        CHECK(t && t->type == SL_Q4_K, "token_embd is Q4_K");
        t = sl_gguf_tensor_find(g, "output_norm.weight");
        CHECK(t && t->type == SL_F32, "norms are F32");
        for (int il = 0; il < 8; il++) {
            char name[64];
            uint32_t want = (il == 0 || il == 3 || il == 6 || il == 7) ? SL_Q6_K : SL_Q4_K;
            snprintf(name, sizeof name, "blk.%d.attn_v.weight", il);
            t = sl_gguf_tensor_find(g, name);
            CHECK(t && t->type == want, "%s is %s", name, sl_dtype_name(want));
            snprintf(name, sizeof name, "blk.%d.ffn_down.weight", il);
            t = sl_gguf_tensor_find(g, name);
            CHECK(t && t->type == want, "%s is %s", name, sl_dtype_name(want));
            snprintf(name, sizeof name, "blk.%d.attn_q.weight", il);
            t = sl_gguf_tensor_find(g, name);
            CHECK(t && t->type == SL_Q4_K, "%s is Q4_K", name);
        }
        sl_gguf_close(g);
    }
    check_runs(p, 256, 8, 300, "q4_k_m custom");
    unlink(p);

    /* A float type, and a preset shape with its dimensions overridden. */
    p = path_in_dir("f16.gguf");
    rc = run_synth(0, (const char *[]){"-o", p, "--shape", "7b", "--layers", "1", "--dim", "64", "--ff",
                                       "128", "--heads", "2", "--kv-heads", "1", "--vocab", "1000", "--type",
                                       "f16", NULL});
    CHECK(rc == 0, "synth f16: %s", last_stderr());
    check_runs(p, 64, 1, 1000, "f16 overridden 7b");
    unlink(p);
}

static void test_errors(void)
{
    const char *p = path_in_dir("err.gguf");
    const char *small[] = {"--shape", "custom", "--layers", "2",       "--dim",
                           "256",     "--ff",   "512",      "--heads", "4"};
#define SMALL                                                                                                \
    small[0], small[1], small[2], small[3], small[4], small[5], small[6], small[7], small[8], small[9]
    struct {
        const char *what;
        int status;
        const char *args[24];
    } cases[] = {
        {"no type", 2, {"-o", p, "--shape", "7b"}},
        {"no output", 2, {"--shape", "7b", "--type", "q4_0"}},
        {"unknown type", 2, {"-o", p, "--shape", "7b", "--type", "q3_k"}},
        {"unknown shape", 2, {"-o", p, "--shape", "8b", "--type", "q4_0"}},
        {"custom without dims", 2, {"-o", p, "--shape", "custom", "--type", "q4_0", "--layers", "2"}},
        {"bad number", 2, {"-o", p, SMALL, "--type", "q4_0", "--seed", "x1"}},
        {"heads not dividing dim", 2, {"-o", p, SMALL, "--type", "q4_0", "--heads", "3"}},
        {"kv heads not dividing heads", 2, {"-o", p, SMALL, "--type", "q4_0", "--kv-heads", "3"}},
        {"dim not a multiple of 256 for q4_k",
         2,
         {"-o", p, SMALL, "--type", "q4_k", "--dim", "160", "--heads", "4"}},
        {"vocab below 259", 2, {"-o", p, SMALL, "--type", "q4_0", "--vocab", "100"}},
        {"stray argument", 2, {"-o", p, SMALL, "--type", "q4_0", "extra"}},
        {"unwritable directory", 1, {"-o", "/nonexistent-dir/x.gguf", SMALL, "--type", "q4_0"}},
        {"output is a directory", 1, {"-o", g_dir, SMALL, "--type", "q4_0"}},
    };
#undef SMALL
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = run_synth(0, cases[i].args);
        const char *err = last_stderr();
        CHECK(rc == cases[i].status, "%s: exit %d, expected %d", cases[i].what, rc, cases[i].status);
        CHECK(strstr(err, "sluice") != NULL, "%s: a message on stderr", cases[i].what);
        CHECK(!exists(p) && !leftover(p), "%s: no file written", cases[i].what);
    }

    /* A full disk, simulated: writes past 2 MiB (past the header, in the
     * tensor data) fail with EFBIG. The partial file is removed and an
     * existing file of the same name survives. */
    FILE *f = fopen(p, "w");
    SL_ASSERT(f);
    fputs("old contents", f);
    fclose(f);
    int rc =
        run_synth(2 << 20, (const char *[]){"-o", p, "--shape", "custom", "--layers", "4", "--dim", "512",
                                            "--ff", "1024", "--heads", "8", "--type", "f32", NULL});
    CHECK(rc == 1, "full disk: exit %d: %s", rc, last_stderr());
    CHECK(strstr(last_stderr(), "failed") != NULL, "full disk: says the write failed: %s", last_stderr());
    CHECK(!leftover(p), "full disk: partial file removed");
    size_t n = 0;
    uint8_t *old = slurp(p, &n);
    CHECK(old && n == 12 && memcmp(old, "old contents", 12) == 0, "full disk: the old file is untouched");
    free(old);
    unlink(p);

    /* A special file is written in place and left alone. */
    rc = run_synth(0, (const char *[]){"-o", "/dev/null", "--shape", "custom", "--layers", "1", "--dim", "64",
                                       "--ff", "64", "--heads", "2", "--type", "q8_0", NULL});
    struct stat st;
    CHECK(rc == 0 && stat("/dev/null", &st) == 0 && S_ISCHR(st.st_mode), "/dev/null as output: exit %d", rc);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s SLUICE_BINARY WORK_DIR\n", argv[0]);
        return 2;
    }
    g_sluice = argv[1];
    g_dir = argv[2];
    snprintf(g_stderr_path, sizeof g_stderr_path, "%s/test_synth.%d.stderr", g_dir, (int)getpid());
    test_determinism();
    test_types();
    test_experts();
    test_errors();
    unlink(g_stderr_path);
    return sl_test_finish();
}
