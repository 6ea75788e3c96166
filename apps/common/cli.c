#include "cli.h"

#include <string.h>

int cli_opt_value(int argc, char **argv, int *i, const char *name, const char **value) {
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

int cli_fail(const char *prog, const char *what, cld_status s) {
    fprintf(stderr, "%s: %s: %s: %s\n", prog, what, cld_status_name(s), cld_last_error());
    if (s == CLD_ERR_NO_PLATFORM) {
        fprintf(stderr, "%s: no OpenCL driver is installed. On Debian/Ubuntu: "
                        "`sudo apt-get install pocl-opencl-icd` (CPU), or your GPU vendor's "
                        "OpenCL driver (nvidia-opencl-icd, intel-opencl-icd, mesa-opencl-icd, "
                        "ROCm).\n", prog);
        return CLI_EXIT_NO_DEVICE;
    }
    if (s == CLD_ERR_NO_DEVICE) return CLI_EXIT_NO_DEVICE;
    return CLI_EXIT_FAIL;
}

void cli_print_device(FILE *f, const cld_device_info *info) {
    fprintf(f, "device: %s / %s\n", info->platform_name, info->name);
}

cld_status cli_ctx_create(const char *spec, FILE *log, cld_ctx **out) {
    cld_status s = cld_ctx_create(spec, out);
    if (s != CLD_OK || !log) return s;
    cld_device_info info;
    if (cld_ctx_device_info(*out, &info) == CLD_OK) cli_print_device(log, &info);
    return CLD_OK;
}
