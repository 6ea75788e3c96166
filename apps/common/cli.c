#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <math.h>

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int cli_opt_value(int argc, char **argv, int *i, const char *name, const char **value)
{
    const char *arg = argv[*i];
    size_t n = strlen(name);
    if (strncmp(arg, name, n) != 0) return 0;
    if (arg[n] != '=' && arg[n] != 0) return 0;
    const char *v = arg[n] == '=' ? arg + n + 1 : *i + 1 < argc ? argv[*i + 1] : NULL;
    /* An empty value ("--device=") would silently mean "the default". */
    if (!v || !*v) {
        const char *prog = strrchr(argv[0], '/');
        fprintf(stderr, "%s: option %s needs a value\n", prog ? prog + 1 : argv[0], name);
        return -1;
    }
    if (arg[n] == 0) ++*i;
    *value = v;
    return 1;
}

int cli_fail(const char *prog, const char *what, cld_status s)
{
    fprintf(stderr, "%s: %s: %s: %s\n", prog, what, cld_status_name(s), cld_last_error());
    if (s == CLD_ERR_NO_PLATFORM) {
        fprintf(stderr,
                "%s: no OpenCL driver is installed. On Debian/Ubuntu: "
                "`sudo apt-get install pocl-opencl-icd` (CPU), or your GPU vendor's "
                "OpenCL driver (nvidia-opencl-icd, intel-opencl-icd, mesa-opencl-icd, "
                "ROCm).\n",
                prog);
        return CLI_EXIT_NO_DEVICE;
    }
    if (s == CLD_ERR_NO_DEVICE) return CLI_EXIT_NO_DEVICE;
    return CLI_EXIT_FAIL;
}

void cli_print_device(FILE *f, const cld_device_info *info)
{
    fprintf(f, "device: %s / %s\n", info->platform_name, info->name);
}

cld_status cli_ctx_create(const char *spec, FILE *log, cld_ctx **out)
{
    cld_status s = cld_ctx_create(spec, out);
    if (s != CLD_OK || !log) return s;
    cld_device_info info;
    if (cld_ctx_device_info(*out, &info) == CLD_OK) cli_print_device(log, &info);
    return CLD_OK;
}

int cli_parse_num(const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (end == v || *end || errno || !(d >= lo && d <= hi)) return 0;
    *out = d;
    return 1;
}

double cli_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cli_usage_error(const char *prog, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int cli_help_version(const char *arg, const char *prog, void (*usage)(FILE *))
{
    if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
        usage(stdout);
        return 1;
    }
    if (!strcmp(arg, "--version")) {
        printf("%s (cldiffusion) %s\n", prog, CLD_VERSION_STRING);
        return 1;
    }
    return 0;
}

int cli_dir_writable(const char *dir)
{
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/.cld-write-probe-%ld", dir, (long)getpid());
    FILE *f = fopen(probe, "wb");
    if (!f) return errno ? errno : EACCES;
    fclose(f);
    unlink(probe);
    return 0;
}

int cli_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int cli_is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int cli_one_value(const float *x, size_t n, double scale, double offset, long maxv, long *value)
{
    long first = 0;
    for (size_t i = 0; i < n; i++) {
        double v = (double)x[i] * scale + offset;
        long q = v < 0 ? 0 : v > (double)maxv ? maxv : lround(v);
        if (i == 0)
            first = q;
        else if (q != first)
            return 0;
    }
    if (value) *value = first;
    return n > 0;
}

void cli_json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}
