/* Helpers for tests that drive the cld-* programs (test_sample, test_train):
 * find a program, run it with arguments in a folder capturing its output,
 * and small file utilities. All of them fail the running Check test on
 * error, so callers need no error paths. */
#ifndef CLD_APPTEST_H
#define CLD_APPTEST_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Path of program `name` ("cld-train"): $ENV_VAR when set and non-empty,
 * else the build folder above this test binary (the programs are built
 * there). Returns a static buffer. */
const char *at_app(const char *name, const char *env_var);

/* Run `bin args` in `dir` (a shell command line; args are not quoted),
 * stdin from /dev/null; stdout and stderr into *out, *err (malloc'd; pass
 * NULL to drop). Returns the exit status. */
int at_run(const char *bin, const char *dir, const char *args, char **out, char **err);

/* Start `bin args` in `dir` in the background (stdout/stderr to
 * dir/bg-stdout, dir/bg-stderr); returns its process id. at_wait: its exit
 * status (-1 when it died of a signal). */
pid_t at_spawn(const char *bin, const char *dir, const char *args);
int at_wait(pid_t pid);

/* A table row of a program's error cases: arguments, the exit status and a
 * distinctive part of the message it must print. */
typedef struct app_case {
    const char *args;
    int status;
    const char *message;
} app_case;

/* Whole file (NUL-terminated; NULL when it cannot be read) and its length. */
unsigned char *at_read_file(const char *path, size_t *len);
void at_write_file(const char *path, const void *data, size_t n);
int at_exists(const char *path);
/* Fail the test unless files a and b hold the same bytes. */
void at_files_equal(const char *a, const char *b);
/* "dir/name", malloc'd. */
char *at_path(const char *dir, const char *name);

/* A model file with a NaN weight (cld_params_save refuses to write one):
 * the file's first float equal to `marker` becomes NaN. */
#define AT_NAN_MARKER 12345.25f
void at_poison_float(const char *path, float marker);

/* A small IDX file: images (ndim 3: n of 8x8, bytes from an LCG seeded
 * with seed + 3) or labels (ndim 1: n, each < 3, seed + 1). */
void at_write_idx(const char *path, int ndim, int n, uint64_t seed);

#endif
