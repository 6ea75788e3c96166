/* Helpers for tests that run the cld-* programs (see apptest.h). */
#define _POSIX_C_SOURCE 200809L
#include "apptest.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

const char *at_app(const char *name, const char *env_var)
{
    static char bin[4096];
    const char *env = env_var ? getenv(env_var) : NULL;
    if (env && *env) return env;
    ssize_t n = readlink("/proc/self/exe", bin, sizeof bin - 64);
    ck_assert(n > 0);
    bin[n] = 0;
    /* build/test/test_x -> build/name */
    for (int up = 0; up < 2; up++) *strrchr(bin, '/') = 0;
    strcat(bin, "/");
    strcat(bin, name);
    ck_assert_msg(access(bin, X_OK) == 0, "no %s at %s (set %s)", name, bin, env_var ? env_var : "its path");
    return bin;
}

int at_run(const char *bin, const char *dir, const char *args, char **out, char **err)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' %s >'%s/stdout' 2>'%s/stderr' </dev/null", dir, bin, args, dir,
             dir);
    int st = system(cmd);
    ck_assert(st != -1 && WIFEXITED(st));
    char p[4200];
    size_t len = 0;
    snprintf(p, sizeof p, "%s/stdout", dir);
    char *o = (char *)at_read_file(p, &len);
    snprintf(p, sizeof p, "%s/stderr", dir);
    char *e = (char *)at_read_file(p, &len);
    if (out)
        *out = o;
    else
        free(o);
    if (err)
        *err = e;
    else
        free(e);
    return WEXITSTATUS(st);
}

pid_t at_spawn(const char *bin, const char *dir, const char *args)
{
    char cmd[8192];
    /* exec: the shell becomes the program, so a signal to pid reaches it */
    snprintf(cmd, sizeof cmd, "cd '%s' && exec '%s' %s >'%s/bg-stdout' 2>'%s/bg-stderr' </dev/null", dir, bin,
             args, dir, dir);
    pid_t pid = fork();
    ck_assert(pid >= 0);
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return pid;
}

int at_wait(pid_t pid)
{
    int st = 0;
    ck_assert(waitpid(pid, &st, 0) == pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

unsigned char *at_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    ck_assert(b != NULL);
    size_t got = fread(b, 1, (size_t)n, f);
    fclose(f);
    b[got] = 0;
    *len = got;
    return b;
}

void at_write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    ck_assert(fwrite(data, 1, n, f) == n);
    fclose(f);
}

int at_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

void at_files_equal(const char *a, const char *b)
{
    size_t la = 0, lb = 0;
    unsigned char *x = at_read_file(a, &la), *y = at_read_file(b, &lb);
    ck_assert_msg(x && y, "missing %s or %s", a, b);
    ck_assert_msg(la == lb && memcmp(x, y, la) == 0, "%s (%zu bytes) and %s (%zu bytes) differ", a, la, b,
                  lb);
    free(x);
    free(y);
}

char *at_path(const char *dir, const char *name)
{
    char *p = malloc(strlen(dir) + strlen(name) + 2);
    ck_assert(p != NULL);
    sprintf(p, "%s/%s", dir, name);
    return p;
}

void at_poison_float(const char *path, float marker)
{
    size_t n = 0;
    unsigned char *b = at_read_file(path, &n);
    const float nan = NAN;
    int done = 0;
    for (size_t i = 0; i + 4 <= n && !done; i++)
        if (!memcmp(b + i, &marker, 4)) memcpy(b + i, &nan, 4), done = 1;
    ck_assert_msg(done, "%s: marker float not found", path);
    at_write_file(path, b, n);
    free(b);
}

void at_write_idx(const char *path, int ndim, int n, uint64_t seed)
{
    size_t hlen = ndim == 3 ? 16 : 8, plen = ndim == 3 ? (size_t)n * 64 : (size_t)n;
    uint8_t *b = malloc(hlen + plen);
    ck_assert(b != NULL);
    memset(b, 0, 16);
    b[2] = 8, b[3] = (uint8_t)ndim;
    const uint32_t be[3] = {(uint32_t)n, 8, 8};
    for (int k = 0; k < 3; k++)
        for (int j = 0; j < 4; j++) b[4 + 4 * k + j] = (uint8_t)(be[k] >> (24 - 8 * j));
    uint64_t st = seed + (uint64_t)ndim;
    for (size_t i = 0; i < plen; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        b[hlen + i] = (uint8_t)((st >> 33) % (ndim == 3 ? 256u : 3u));
    }
    at_write_file(path, b, hlen + plen);
    free(b);
}
