/* Data-parallel cld-train under `mpirun --oversubscribe -np 2` (issue 16);
 * built and run only when the build found MPI (CLD_MPI).
 *
 * The tiny model of test_train (base 8, two levels, T = 100, 45k
 * parameters) on 8x8 IDX data for 6 steps, about a second a run:
 *  - 2 ranks x batch 4 end with the state (weights, EMA, AdamW moments) and
 *    the per-step loss and gradient norm of 1 process x batch 8, within
 *    float tolerance (TOL below says why that much);
 *  - resuming with another rank count (2 -> 1, 1 -> 2) ends the same;
 *  - the pipelined bucket all-reduce gives bit for bit the one-buffer result;
 *  - a rank killed with SIGKILL stops the whole job with mpirun's message
 *    naming the rank, and the last checkpoint resumes;
 *  - SIGTERM to one rank stops every rank after the same step with a
 *    checkpoint; a rank failing alone aborts the job with its message. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "apptest.h"
#include "testutil.h"

#ifndef CLD_MPIEXEC
#define CLD_MPIEXEC "mpirun"
#endif

/* Tolerance on every float of the state, absolute. The runs compute the
 * same sums in another association (a batch of 8 in one kernel reduction vs
 * two of 4, each a batch mean, averaged after the all-reduce), so they differ
 * by float rounding only: observed up to 2.4e-7 after 6 steps (on weights of
 * size ~0.1: a relative 1e-6). AdamW moves a weight by at most about lr per
 * step, lr * K = 3e-3 here, so a real error (a wrong shard, a step on the
 * local gradient) is of order 1e-4 and more; 5e-6 keeps a 20x margin over
 * rounding and is 1/600 of lr * K. */
#define TOL 5e-6
/* Logged loss and gradient norm (printed with 6 and 4 decimals): relative. */
#define LOG_RTOL 2e-3

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* Raw IDX: n images of size x size (ndim 3) or n labels < classes (ndim 1). */
static void write_idx(const char *dir, const char *name, int ndim, int n, int size, int classes,
                      uint64_t seed)
{
    const size_t hlen = ndim == 3 ? 16 : 8, plen = ndim == 3 ? (size_t)n * size * size : (size_t)n;
    uint8_t *b = tu_malloc(hlen + plen);
    memset(b, 0, hlen);
    b[2] = 8, b[3] = (uint8_t)ndim;
    put_be32(b + 4, (uint32_t)n);
    if (ndim == 3) put_be32(b + 8, (uint32_t)size), put_be32(b + 12, (uint32_t)size);
    uint64_t st = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < plen; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        b[hlen + i] = (uint8_t)((st >> 33) % (uint64_t)(ndim == 3 ? 256 : classes));
    }
    char *p = at_path(dir, name);
    at_write_file(p, b, hlen + plen);
    free(p);
    free(b);
}

static void write_idx_set(const char *dir)
{
    write_idx(dir, "train-images-idx3-ubyte", 3, 24, 8, 0, 1);
    write_idx(dir, "train-labels-idx1-ubyte", 1, 24, 0, 3, 2);
}

#define TINY                                                                                             \
    "--base 8 --mult 1,2 --res-blocks 1 --attn 4 --groups 4 --T 100 --batch 8 --warmup 2 --val-every 0 " \
    "--grid-every 0 --progress none --log-every 1 --seed 3"

static char *train_bin(void)
{
    static char b[4096];
    snprintf(b, sizeof b, "%s", at_app("cld-train", "CLD_TRAIN"));
    return b;
}

/* cld-train with args in dir: one plain process (np 0) or mpirun -np np. */
static int train(const char *dir, int np, const char *args, char **err)
{
    if (!np) return at_run(train_bin(), dir, args, NULL, err);
    char a[8192];
    snprintf(a, sizeof a, "--oversubscribe -np %d '%s' %s", np, train_bin(), args);
    return at_run(CLD_MPIEXEC, dir, a, NULL, err);
}

/* The float payload of a safetensors file written by cld_params_save_state
 * (after the 8-byte length and the JSON header). */
static float *payload(const char *path, size_t *n)
{
    size_t len = 0;
    unsigned char *b = at_read_file(path, &len);
    ck_assert_msg(b && len >= 8, "cannot read %s", path);
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--) h = h << 8 | b[i];
    ck_assert(8 + h <= len && (len - 8 - h) % 4 == 0);
    *n = (len - 8 - h) / 4;
    float *f = tu_malloc(*n * sizeof *f + 1);
    memcpy(f, b + 8 + h, *n * sizeof *f);
    free(b);
    return f;
}

/* Max |a - b| over the two states' floats (the same layout: same model). */
static double state_diff(const char *dir, const char *a, const char *b, size_t *n_diff)
{
    char *pa = at_path(dir, a), *pb = at_path(dir, b);
    size_t na, nb;
    float *x = payload(pa, &na), *y = payload(pb, &nb);
    ck_assert_msg(na == nb && na > 100000, "%s: %zu floats, %s: %zu", a, na, b, nb);
    double m = 0;
    *n_diff = 0;
    for (size_t i = 0; i < na; i++) {
        double d = fabs((double)x[i] - y[i]);
        ck_assert_msg(isfinite(d), "%s / %s: float %zu not finite", a, b, i);
        *n_diff += x[i] != y[i];
        if (d > m) m = d;
    }
    free(x);
    free(y);
    free(pa);
    free(pb);
    return m;
}

/* Each row's loss and grad_norm of two log.csv files agree (rows 1..rows). */
static void same_logs(const char *dir, const char *a, const char *b, int rows)
{
    char *pa = at_path(dir, a), *pb = at_path(dir, b);
    size_t la, lb;
    char *x = (char *)at_read_file(pa, &la), *y = (char *)at_read_file(pb, &lb);
    ck_assert_msg(x && y, "no %s or %s", pa, pb);
    char *sx = strchr(x, '\n'), *sy = strchr(y, '\n');
    for (int r = 1; r <= rows; r++) {
        ck_assert_msg(sx && sy, "%s / %s: fewer than %d rows", a, b, rows);
        long stx, sty;
        double lx, ly, vx, vy, vex, vey, lrx, lry, gx, gy;
        ck_assert(sscanf(sx + 1, "%ld,%lf,%lf,%lf,%lf,%lf", &stx, &lx, &vx, &vex, &lrx, &gx) == 6);
        ck_assert(sscanf(sy + 1, "%ld,%lf,%lf,%lf,%lf,%lf", &sty, &ly, &vy, &vey, &lry, &gy) == 6);
        ck_assert_int_eq(stx, sty);
        ck_assert_msg(fabs(lx - ly) <= LOG_RTOL * fabs(lx) + 1e-6, "step %ld: loss %g vs %g", stx, lx, ly);
        ck_assert_msg(fabs(gx - gy) <= LOG_RTOL * fabs(gx) + 1e-4, "step %ld: grad norm %g vs %g", stx, gx,
                      gy);
        sx = strchr(sx + 1, '\n'), sy = strchr(sy + 1, '\n');
    }
    free(x);
    free(y);
    free(pa);
    free(pb);
}

START_TEST(test_two_ranks_equal_one)
{
    char *dir = tu_mkdtemp("cld-train-mpi");
    write_idx_set(dir);
    char *err = NULL;
    const char *run = "--data train-images-idx3-ubyte " TINY " --steps 6 --ckpt-every 3";
    char args[2048];
    /* 1 process x batch 8; 2 ranks x batch 4 (--batch is the global batch) */
    snprintf(args, sizeof args, "%s --out one", run);
    ck_assert_msg(train(dir, 0, args, &err) == 0, "%s", err);
    free(err);
    snprintf(args, sizeof args, "%s --out two --allreduce-bucket 0", run);
    ck_assert_msg(train(dir, 2, args, &err) == 0, "%s", err);
    ck_assert_msg(strstr(err, "rank 1 of 2") && strstr(err, "batch 4 of 8") &&
                      strstr(err, "6 steps (6 this run)") && strstr(err, "gradient all-reduce"),
                  "%s", err);
    free(err);
    size_t nd = 0;
    double d = state_diff(dir, "one/state-000000006.safetensors", "two/state-000000006.safetensors", &nd);
    fprintf(
        stderr,
        "test_train_mpi: 2 x 4 vs 1 x 8 after 6 steps: max |diff| %.3g over the state, %zu floats differ\n",
        d, nd);
    ck_assert_msg(d <= TOL, "2 ranks x 4 vs 1 x 8: max |diff| %g > %g", d, TOL);
    same_logs(dir, "one/log.csv", "two/log.csv", 6);
    /* rank 0 alone wrote: the model and the kept states, nothing twice */
    char *m = at_path(dir, "two/model.safetensors");
    ck_assert(at_exists(m));
    free(m);

    /* buckets: the same sums, bit for bit */
    snprintf(args, sizeof args, "%s --out bk --allreduce-bucket 0.05", run);
    ck_assert_msg(train(dir, 2, args, &err) == 0, "%s", err);
    ck_assert_msg(strstr(err, "buckets, pipelined"), "%s", err);
    ck_assert_msg(strstr(err, "overlapped with the backward"), "%s", err);
    /* the hook started reads mid-backward: all but the first layers' bucket */
    const char *er = strstr(err, "bucket reads were enqueued during the backward");
    ck_assert_msg(er, "%s", err);
    while (er > err && er[-1] != ':') er--;
    long early = 0, all = 0;
    ck_assert_msg(sscanf(er, " %ld of %ld", &early, &all) == 2 && all > 6 && early >= all / 2, "%s", err);
    free(err);
    d = state_diff(dir, "two/state-000000006.safetensors", "bk/state-000000006.safetensors", &nd);
    ck_assert_msg(nd == 0, "bucketed all-reduce: %zu floats differ (max %g)", nd, d);
    /* buckets started only after the backward: the same again */
    snprintf(args, sizeof args, "%s --out bk0 --allreduce-bucket 0.05 --allreduce-overlap 0", run);
    ck_assert_msg(train(dir, 2, args, &err) == 0, "%s", err);
    ck_assert_msg(strstr(err, "pipelined after the backward"), "%s", err);
    free(err);
    d = state_diff(dir, "two/state-000000006.safetensors", "bk0/state-000000006.safetensors", &nd);
    ck_assert_msg(nd == 0, "bucketed all-reduce after the backward: %zu floats differ (max %g)", nd, d);
    /* a parameter store split into several buffers (a device allowing 64 KiB per allocation):
     * buckets are cut at the buffers' boundaries, the same sums */
    setenv("CLD_MAX_ALLOC", "64K", 1);
    snprintf(args, sizeof args, "%s --out ch --allreduce-bucket 0.05", run);
    int chst = train(dir, 2, args, &err);
    unsetenv("CLD_MAX_ALLOC");
    ck_assert_msg(chst == 0, "%s", err);
    ck_assert_msg(strstr(err, "parameters 0.2 MiB in 3 buffers"), "%s", err);
    free(err);
    d = state_diff(dir, "two/state-000000006.safetensors", "ch/state-000000006.safetensors", &nd);
    ck_assert_msg(nd == 0, "all-reduce over a split store: %zu floats differ (max %g)", nd, d);

    /* resume with another rank count: 2 -> 1 and 1 -> 2 */
    snprintf(args, sizeof args, "%s --out r21 --stop-after 3", run);
    ck_assert_msg(train(dir, 2, args, &err) == 0, "%s", err);
    free(err);
    ck_assert_msg(train(dir, 0, "--data train-images-idx3-ubyte --out r21 --resume --progress none", &err) ==
                      0,
                  "%s", err);
    ck_assert_msg(strstr(err, "6 steps (3 this run)"), "%s", err);
    free(err);
    snprintf(args, sizeof args, "%s --out r12 --stop-after 3", run);
    ck_assert_msg(train(dir, 0, args, &err) == 0, "%s", err);
    free(err);
    ck_assert_msg(train(dir, 2, "--data train-images-idx3-ubyte --out r12 --resume --progress none", &err) ==
                      0,
                  "%s", err);
    ck_assert_msg(strstr(err, "6 steps (3 this run)"), "%s", err);
    free(err);
    d = state_diff(dir, "one/state-000000006.safetensors", "r21/state-000000006.safetensors", &nd);
    ck_assert_msg(d <= TOL, "resumed 2 -> 1 ranks: max |diff| %g > %g", d, TOL);
    d = state_diff(dir, "one/state-000000006.safetensors", "r12/state-000000006.safetensors", &nd);
    ck_assert_msg(d <= TOL, "resumed 1 -> 2 ranks: max |diff| %g > %g", d, TOL);

    /* the comparison can fail: another seed is far outside the tolerance */
    ck_assert_msg(
        train(dir, 0, "--data train-images-idx3-ubyte " TINY " --steps 6 --ckpt-every 3 --seed 4 --out other",
              NULL) == 0,
        "seed 4");
    d = state_diff(dir, "one/state-000000006.safetensors", "other/state-000000006.safetensors", &nd);
    ck_assert_msg(d > 100 * TOL, "another seed: max |diff| only %g", d);

    /* a global batch that does not split over the ranks */
    snprintf(args, sizeof args, "--data train-images-idx3-ubyte " TINY " --steps 2 --batch 5 --out odd");
    ck_assert_int_ne(train(dir, 2, args, &err), 0);
    ck_assert_msg(strstr(err, "--batch 5 is the global batch: it must split evenly over the 2 ranks"), "%s",
                  err);
    free(err);
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

/* SIGKILL to rank 1 in the middle of training: the job ends (not hangs),
 * nonzero, mpirun's message names the rank and the signal, and the last
 * checkpoint rank 0 wrote resumes. */
START_TEST(test_killed_rank_stops_job)
{
    char *dir = tu_mkdtemp("cld-train-mpi");
    write_idx_set(dir);
    char a[8192];
    snprintf(a, sizeof a,
             "--oversubscribe -np 2 '%s' --data train-images-idx3-ubyte " TINY
             " --steps 100000 --ckpt-every 2 --keep 1000 " /* the step-2 file stays while the test looks */
             "--out k",
             train_bin());
    pid_t job = at_spawn(CLD_MPIEXEC, dir, a);
    char *e = at_path(dir, "bg-stderr"), *st2 = at_path(dir, "k/state-000000002.safetensors");
    long victim = -1;
    for (int tries = 0; tries < 1200 && (victim < 0 || !at_exists(st2)); tries++) { /* up to 120 s */
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        size_t len;
        char *t = (char *)at_read_file(e, &len);
        const char *at = t ? strstr(t, "rank 1 of 2 (local 1 of 2): pid ") : NULL;
        if (at) victim = strtol(at + strlen("rank 1 of 2 (local 1 of 2): pid "), NULL, 10);
        free(t);
    }
    ck_assert_msg(victim > 0 && at_exists(st2), "rank 1 never reported its pid, or no checkpoint at step 2");
    ck_assert(kill((pid_t)victim, SIGKILL) == 0);
    int status = 0, done = 0;
    for (int tries = 0; tries < 600 && !done; tries++) { /* the job must end within 60 s */
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        done = waitpid(job, &status, WNOHANG) == job;
    }
    if (!done) {
        kill(job, SIGKILL);
        waitpid(job, &status, 0);
    }
    ck_assert_msg(done, "the job still ran 60 s after rank 1 was killed");
    size_t len;
    char *t = (char *)at_read_file(e, &len);
    ck_assert_msg(!(WIFEXITED(status) && WEXITSTATUS(status) == 0), "the job exited 0: %s", t);
    ck_assert_msg(strstr(t, "rank 1") && strstr(t, "signal 9"), "%s", t);
    free(t);
    /* the newest state (whichever step rank 0 last completed) loads and resumes */
    char *err = NULL;
    ck_assert_msg(train(dir, 0,
                        "--data train-images-idx3-ubyte --out k --resume --progress none --stop-after 1",
                        &err) == 0,
                  "%s", err);
    ck_assert_msg(strstr(err, "resumed from"), "%s", err);
    free(err);
    free(e);
    free(st2);
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

#if defined(__SANITIZE_ADDRESS__)
#define CLD_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CLD_ASAN 1
#endif
#endif

/* SIGTERM to one rank (as a batch system may send): every rank stops after
 * the same step, rank 0 writes the checkpoint, all exit 130; it resumes. A
 * rank that fails alone (its --device entry matches nothing) aborts the job
 * with its message. */
START_TEST(test_signal_and_lone_failure)
{
    char *dir = tu_mkdtemp("cld-train-mpi");
    write_idx_set(dir);
    char a[8192];
    snprintf(a, sizeof a,
             "--oversubscribe -np 2 '%s' --data train-images-idx3-ubyte " TINY
             " --steps 100000 --ckpt-every 1000 "
             "--out s",
             train_bin());
    pid_t job = at_spawn(CLD_MPIEXEC, dir, a);
    char *e = at_path(dir, "bg-stderr"), *csv = at_path(dir, "s/log.csv");
    long victim = -1;
    int rows = 0;
    for (int tries = 0; tries < 1200 && (victim < 0 || rows < 3); tries++) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        size_t len;
        char *t = (char *)at_read_file(e, &len);
        const char *at = t ? strstr(t, "rank 1 of 2 (local 1 of 2): pid ") : NULL;
        if (at) victim = strtol(at + strlen("rank 1 of 2 (local 1 of 2): pid "), NULL, 10);
        free(t);
        t = (char *)at_read_file(csv, &len);
        rows = 0;
        for (size_t i = 0; t && i < len; i++) rows += t[i] == '\n';
        free(t);
    }
    ck_assert_msg(victim > 0 && rows >= 3, "rank 1 never reported its pid, or no steps logged");
    ck_assert(kill((pid_t)victim, SIGTERM) == 0);
    int status = 0, done = 0;
    for (int tries = 0; tries < 600 && !done; tries++) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        done = waitpid(job, &status, WNOHANG) == job;
    }
    if (!done) {
        kill(job, SIGKILL);
        waitpid(job, &status, 0);
    }
    size_t len;
    char *t = (char *)at_read_file(e, &len);
    ck_assert_msg(done, "the job still ran 60 s after SIGTERM to rank 1: %s", t);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 130, "exit status %d: %s", status, t);
    const char *msg = "another rank was signalled: writing a checkpoint at step ";
    char *at = strstr(t, msg);
    ck_assert_msg(at, "%s", t);
    long step = strtol(at + strlen(msg), NULL, 10);
    free(t);
    char name[64];
    snprintf(name, sizeof name, "s/state-%09ld.safetensors", step);
    char *sp = at_path(dir, name);
    ck_assert_msg(at_exists(sp), "no %s", sp);
    char *err = NULL;
    ck_assert_msg(train(dir, 0,
                        "--data train-images-idx3-ubyte --out s --resume --progress none --stop-after 1",
                        &err) == 0,
                  "%s", err);
    free(err);

    /* rank 1's device entry matches nothing: its message, and the job ends */
    ck_assert_int_ne(
        train(dir, 2, "--data train-images-idx3-ubyte " TINY " --steps 2 --out d --device 0,no-such-device",
              &err),
        0);
    ck_assert_msg(strstr(err, "[rank 1/2]: device:") && strstr(err, "no-such-device"), "%s", err);
    free(err);
    free(sp);
    free(e);
    free(csv);
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

int main(void)
{
#ifdef CLD_ASAN
    /* Open MPI's components leak at exit and are dlclosed first, so LSan
     * reports them as "<unknown module>" that no suppression can match: no
     * leak check for the processes of this test (cld-train's own leaks are
     * checked by test_train, whose runs never initialise MPI) */
    const char *ao = getenv("ASAN_OPTIONS");
    char opts[1024];
    snprintf(opts, sizeof opts, "%s%sdetect_leaks=0", ao ? ao : "", ao && *ao ? ":" : "");
    setenv("ASAN_OPTIONS", opts, 1);
#endif
    /* Open MPI refuses root without these (CI containers run as root) */
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
    /* one core per rank is the realistic case; keep PoCL from oversubscribing */
    setenv("POCL_MAX_PTHREAD_COUNT", "1", 0); /* PoCL < 3 */
    setenv("POCL_CPU_MAX_CU_COUNT", "1", 0);
    Suite *s = suite_create("train_mpi");
    TCase *tc = tcase_create("mpi");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_two_ranks_equal_one);
    tcase_add_test(tc, test_killed_rank_stops_job);
    tcase_add_test(tc, test_signal_and_lone_failure);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
