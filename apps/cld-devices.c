/* cld-devices: list OpenCL platforms and devices, show which one a device
 * spec selects, and time building every embedded kernel program. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s [--device SPEC] [--json] [--verbose] [--build-all]\n"
            "\n"
            "Lists the OpenCL devices cldiffusion can use and marks the default.\n"
            "\n"
            "  --device SPEC  show which device SPEC selects: an index, or a case-insensitive\n"
            "                 part of \"platform / device\" (default: $CLD_DEVICE, else the\n"
            "                 first GPU, else the first CPU)\n"
            "  --json         machine-readable output\n"
            "  --verbose      also the launch configuration the engine chose for the\n"
            "                 selected device (work-group sizes per op family, GEMM route,\n"
            "                 allocation limit; CLD_FORCE_GPU_PATH=1 shows the GPU choices)\n"
            "  --build-all    build every embedded kernel program on the selected device and\n"
            "                 report how many were compiled or loaded from the kernel cache\n"
            "  --version      print the version\n"
            "  --help         this text\n"
            "\n"
            "Exit status: 0 ok, 1 failure, 2 usage error or no OpenCL platform/device.\n",
            prog);
}

static void human_bytes(char *dst, size_t cap, uint64_t b)
{
    const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int u = 0;
    while (v >= 1024 && u < 4) v /= 1024, u++;
    snprintf(dst, cap, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
}

static void print_json(FILE *f, const cld_device_info *d, int n, int def, int env_sel, int selected)
{
    fprintf(f,
            "{\n  \"version\": \"%s\",\n  \"default\": %d,\n  \"selected\": %d,\n"
            "  \"cld_device\": %d,\n  \"devices\": [",
            CLD_VERSION_STRING, def, selected, env_sel);
    for (int i = 0; i < n; i++) {
        fprintf(f, "%s\n    {\"index\": %d, \"platform_index\": %d, \"platform\": ", i ? "," : "", d[i].index,
                d[i].platform_index);
        cli_json_str(f, d[i].platform_name);
        fprintf(f, ", \"platform_version\": ");
        cli_json_str(f, d[i].platform_version);
        fprintf(f, ", \"name\": ");
        cli_json_str(f, d[i].name);
        fprintf(f, ", \"vendor\": ");
        cli_json_str(f, d[i].vendor);
        fprintf(f, ", \"driver_version\": ");
        cli_json_str(f, d[i].driver_version);
        fprintf(f, ", \"device_version\": ");
        cli_json_str(f, d[i].device_version);
        fprintf(f,
                ", \"type\": \"%s\", \"compute_units\": %u, \"global_mem_bytes\": %llu, "
                "\"local_mem_bytes\": %llu, \"max_alloc_bytes\": %llu, "
                "\"max_work_group_size\": %zu, \"fp16\": %s, \"fp64\": %s}",
                d[i].is_gpu   ? "gpu"
                : d[i].is_cpu ? "cpu"
                              : "other",
                d[i].compute_units, (unsigned long long)d[i].global_mem_bytes,
                (unsigned long long)d[i].local_mem_bytes, (unsigned long long)d[i].max_alloc_bytes,
                d[i].max_work_group_size, d[i].has_fp16 ? "true" : "false", d[i].has_fp64 ? "true" : "false");
    }
    fprintf(f, "\n  ]\n}\n");
}

static void print_text(FILE *f, const cld_device_info *d, int n, int def, int env_sel, const char *spec,
                       int selected)
{
    fprintf(f, "cldiffusion %s: %d OpenCL device%s\n", CLD_VERSION_STRING, n, n == 1 ? "" : "s");
    int last_platform = -1;
    for (int i = 0; i < n; i++) {
        if (d[i].platform_index != last_platform) {
            last_platform = d[i].platform_index;
            fprintf(f, "\nplatform %d: %s (%s)\n", last_platform, d[i].platform_name, d[i].platform_version);
        }
        char marks[128] = "";
        if (i == def) strcat(marks, " [default]");
        if (i == env_sel) strcat(marks, " [CLD_DEVICE]");
        if (spec && i == selected) strcat(marks, " [--device]");
        char gm[32], lm[32], ma[32];
        human_bytes(gm, sizeof gm, d[i].global_mem_bytes);
        human_bytes(lm, sizeof lm, d[i].local_mem_bytes);
        human_bytes(ma, sizeof ma, d[i].max_alloc_bytes);
        fprintf(f, "  [%d] %s / %s%s\n", i, d[i].platform_name, d[i].name, marks);
        fprintf(f, "      type %s, %u compute units, max work-group %zu, fp16 %s, fp64 %s\n",
                d[i].is_gpu   ? "GPU"
                : d[i].is_cpu ? "CPU"
                              : "other",
                d[i].compute_units, d[i].max_work_group_size, d[i].has_fp16 ? "yes" : "no",
                d[i].has_fp64 ? "yes" : "no");
        fprintf(f, "      global memory %s, local memory %s, max allocation %s\n", gm, lm, ma);
        fprintf(f, "      vendor %s, driver %s, %s\n", d[i].vendor, d[i].driver_version, d[i].device_version);
    }
    fprintf(f, "\n");
    const char *env = getenv("CLD_DEVICE");
    int used = spec ? selected : env_sel >= 0 ? env_sel : def;
    fprintf(f, "selected by %s: ", spec ? "--device" : env && *env ? "CLD_DEVICE" : "default");
    cli_print_device(f, &d[used]);
}

/* --verbose: a context on the selected device, and its launch configuration. */
static int print_launch_config(const char *prog, const char *spec)
{
    cld_ctx *ctx = NULL;
    cld_status s = cli_ctx_create(spec, stdout, &ctx);
    if (s != CLD_OK) return cli_fail(prog, "creating context", s);
    char text[2048];
    s = cld_ctx_launch_config(ctx, text, sizeof text);
    cld_ctx_free(ctx);
    if (s != CLD_OK) return cli_fail(prog, "reading the launch configuration", s);
    printf("\n%s", text);
    return CLI_EXIT_OK;
}

static int build_all(const char *prog, const char *spec)
{
    double t0 = cli_now_s();
    cld_ctx *ctx = NULL;
    cld_status s = cli_ctx_create(spec, stdout, &ctx);
    if (s != CLD_OK) return cli_fail(prog, "creating context", s);
    double t1 = cli_now_s();
    s = cld_ctx_build_all(ctx);
    double t2 = cli_now_s();
    if (s != CLD_OK) {
        cld_ctx_free(ctx);
        return cli_fail(prog, "building kernels", s);
    }
    cld_compile_stats st;
    cld_ctx_compile_stats(ctx, &st);
    const char *const *names = NULL;
    cld_kernel_sources(&names, NULL);
    int n = 0;
    for (int i = 0; names[i]; i++) n += strcmp(names[i], "prelude") != 0; /* in every program, not one */
    printf("build-all: %d programs: %d built from source, %d from cache, %.3f s "
           "(context %.3f s)\n",
           n, st.programs_built, st.programs_from_cache, t2 - t1, t1 - t0);
    cld_ctx_free(ctx);
    return CLI_EXIT_OK;
}

int main(int argc, char **argv)
{
    const char *prog = "cld-devices";
    const char *spec = NULL;
    int json = 0, do_build = 0, verbose = 0;
    for (int i = 1; i < argc; i++) {
        int r = cli_opt_value(argc, argv, &i, "--device", &spec);
        if (r < 0) return CLI_EXIT_USAGE;
        if (r > 0) continue;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout, prog);
            return CLI_EXIT_OK;
        } else if (!strcmp(argv[i], "--version")) {
            printf("cld-devices (cldiffusion) %s\n", CLD_VERSION_STRING);
            return CLI_EXIT_OK;
        } else if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if (!strcmp(argv[i], "--verbose") || !strcmp(argv[i], "-v")) {
            verbose = 1;
        } else if (!strcmp(argv[i], "--build-all")) {
            do_build = 1;
        } else {
            fprintf(stderr, "%s: unknown argument '%s'\n", prog, argv[i]);
            usage(stderr, prog);
            return CLI_EXIT_USAGE;
        }
    }

    if (do_build) return build_all(prog, spec);

    int n = 0, def = 0, env_sel = -1, selected = -1;
    cld_status s = cld_device_count(&n);
    if (s != CLD_OK) return cli_fail(prog, "listing OpenCL devices", s);
    if (n == 0) {
        fprintf(stderr, "%s: OpenCL platforms are installed but expose no device\n", prog);
        return CLI_EXIT_NO_DEVICE;
    }
    cld_device_info *d = calloc((size_t)n, sizeof *d);
    if (!d) return cli_fail(prog, "listing OpenCL devices", CLD_ERR_NOMEM);
    for (int i = 0; i < n && s == CLD_OK; i++) s = cld_device_info_get(i, &d[i]);
    if (s == CLD_OK) s = cld_device_default(&def);
    const char *env = getenv("CLD_DEVICE");
    if (s == CLD_OK && env && *env) {
        s = cld_device_select(env, &env_sel);
        if (s != CLD_OK) {
            free(d);
            return cli_fail(prog, "resolving CLD_DEVICE", s);
        }
    }
    if (s == CLD_OK && spec) {
        s = cld_device_select(spec, &selected);
        if (s != CLD_OK) {
            free(d);
            return cli_fail(prog, "resolving --device", s);
        }
    }
    if (s != CLD_OK) {
        free(d);
        return cli_fail(prog, "listing OpenCL devices", s);
    }
    if (selected < 0) selected = env_sel >= 0 ? env_sel : def;
    if (json)
        print_json(stdout, d, n, def, env_sel, selected);
    else
        print_text(stdout, d, n, def, env_sel, spec, selected);
    free(d);
    if (verbose && !json) return print_launch_config(prog, spec);
    return CLI_EXIT_OK;
}
