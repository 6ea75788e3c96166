/* Small helpers shared by the cld-* command-line tools. */
#ifndef CLD_CLI_H
#define CLD_CLI_H

#include <stdio.h>

#include "cldiffusion/cldiffusion.h"

/* Exit codes of all tools. */
enum { CLI_EXIT_OK = 0, CLI_EXIT_FAIL = 1, CLI_EXIT_USAGE = 2, CLI_EXIT_NO_DEVICE = 2 };

/* Match option `name` ("--device") at argv[*i], as "--device VALUE" or
 * "--device=VALUE". On a match sets *value, advances *i past a separate
 * value, and returns 1; returns -1 (after printing a message) when the value
 * is missing or empty; 0 when argv[*i] is another option. */
int cli_opt_value(int argc, char **argv, int *i, const char *name, const char **value);

/* Print "prog: what: STATUS: message" to stderr, plus the package hint when
 * no OpenCL platform is installed. Returns the exit code to use. */
int cli_fail(const char *prog, const char *what, cld_status s);

/* Create a context for `spec` (NULL: $CLD_DEVICE or the default), and print
 * "device: <platform> / <name>" to `log` (NULL: silent). */
cld_status cli_ctx_create(const char *spec, FILE *log, cld_ctx **out);

/* "device: <platform> / <name>" line for an info record. */
void cli_print_device(FILE *f, const cld_device_info *info);

/* 1 and *out = the number when v is all a number in [lo, hi]; else 0. */
int cli_parse_num(const char *v, double lo, double hi, double *out);

/* Seconds from a monotonic clock (for durations and rates). */
double cli_now_s(void);

/* "prog: <formatted message>\n" to stderr (a usage error's message). */
void cli_usage_error(const char *prog, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* --help / -h (usage to stdout) and --version ("prog (cldiffusion) VERSION"):
 * 1 when `arg` is one of them and it was handled (the program then exits 0). */
int cli_help_version(const char *arg, const char *prog, void (*usage)(FILE *));

/* 0 if a file can be created in folder `dir` (a probe file is made and
 * removed); else errno of the failure. Apps check their output folders with
 * it before any work, so a run never ends with a partial output. */
int cli_dir_writable(const char *dir);

/* 1 if path is a folder / a regular file (following links). */
int cli_is_dir(const char *path);
int cli_is_file(const char *path);

/* s as a JSON string literal, quotes and escapes included. */
void cli_json_str(FILE *f, const char *s);

/* 1 if the n values round(x[i] * scale + offset), clamped to 0 .. maxv (the
 * pixels a PNG would hold), are all the same; *value (optional) gets it. An
 * image that is one value everywhere is reported by cld-sample and
 * cld-denoise: a model that outputs no image. */
int cli_one_value(const float *x, size_t n, double scale, double offset, long maxv, long *value);

/* Option-loop helpers, for a loop of the form
 *     for (int i = 1; i < argc; i++) { const char *a = argv[i], *v = NULL; int r; double d; ...
 * with the program's own BAD(fmt, ...) (CLI_BAD(PROG, ...): print, return CLI_EXIT_USAGE).
 * CLI_OPT(name): argv[i] is `name` (its value in v; r < 0 when missing);
 * CLI_VAL(): a missing value is a usage error; CLI_NUM(lo, hi): v is a
 * number in [lo, hi], into d. */
#define CLI_BAD(prog, ...)                    \
    do {                                      \
        cli_usage_error((prog), __VA_ARGS__); \
        return CLI_EXIT_USAGE;                \
    } while (0)
#define CLI_OPT(name) ((r = cli_opt_value(argc, argv, &i, name, &v)) != 0)
#define CLI_VAL()                         \
    do {                                  \
        if (r < 0) return CLI_EXIT_USAGE; \
    } while (0)
#define CLI_NUM(lo, hi)                                                                    \
    do {                                                                                   \
        CLI_VAL();                                                                         \
        if (!cli_parse_num(v, lo, hi, &d))                                                 \
            BAD("%s: '%s' is not a number in [%g, %g]", a, v, (double)(lo), (double)(hi)); \
    } while (0)

#endif
