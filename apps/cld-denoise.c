/* cld-denoise: denoise photos with a local diffusion UNet (by default the
 * bundled photo denoiser), in tiles, at a noise level given or estimated.
 *
 * Top to bottom (main): options; the inputs listed (a file, or every
 * image of a folder) and the outputs checked writable before any work;
 * the device and the model; then per photo: decode (pixel budget checked
 * from the header), EXIF orientation, noise estimate per channel, sigma
 * checked against the model's trained range, cld_denoise_run, the PNG at
 * the input's bit depth written atomically. */
#define _XOPEN_SOURCE 700
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static const char *PROG = "cld-denoise";
#define DEFAULT_MODEL "photo-denoiser.safetensors"
#define DEFAULT_MARGIN 48

typedef struct opts {
    const char *in, *out, *model, *device, *progress;
    double sigma, strength;
    int steps, tile, margin, edge;
} opts;

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: cld-denoise IN -o OUT [options]\n"
        "\n"
        "Denoises a photo (PNG, JPEG, BMP, TGA, PNM; grey or colour, 8 or 16 bits) into a PNG of the same\n"
        "bit depth, or every image of the folder IN into the folder OUT (NAME.png each).\n"
        "\n"
        "  -o, --out PATH       output .png file (or folder when IN is a folder)\n"
        "  --sigma S            noise sd on the 0..255 scale (default: estimated per channel, printed)\n"
        "  --steps N            1 (default): one-step MMSE estimate, highest PSNR; N > 1: N deterministic\n"
        "                       DDIM steps from the matching timestep (sharper texture, lower PSNR)\n"
        "  --strength X         0..1: X denoised + (1 - X) input (default 1)\n"
        "  --tile N             tile side (default: chosen from the device memory)\n"
        "  --margin N           context pixels dropped at each tile side (default %d; 'exact' = the\n"
        "                       receptive radius, tile-independent to float rounding, much slower)\n"
        "  --edge N             reflected context at the photo's border, 1 .. the margin (default %d,\n"
        "                       or the margin when that is exact; 'margin' = the margin)\n"
        "  --model FILE         model (default: the bundled %s)\n"
        "  --device SPEC        OpenCL device (see cld-devices)\n"
        "  --progress bar|json|none  (default: bar on a terminal, else none)\n"
        "  --help, --version\n"
        "\n"
        "Grey photos run through the RGB model as three equal channels and are written grey (the mean\n"
        "of the three outputs); alpha is kept as it is. Written paths go to stdout, everything else to\n"
        "stderr. Exit status: 0 done, 1 failure, 2 usage error.\n",
        DEFAULT_MARGIN, CLD_TILE_DEFAULT_EDGE, DEFAULT_MODEL);
}

#define BAD(...) CLI_BAD(PROG, __VA_ARGS__)

/* *out = v as an integer in [lo, 4096], or -1 for `word`; 0 if neither */
static int int_or_word(const char *v, const char *word, int lo, int *out)
{
    double d;
    if (!strcmp(v, word)) {
        *out = -1;
        return 1;
    }
    if (!cli_parse_num(v, lo, 4096, &d) || d != floor(d)) return 0;
    *out = (int)d;
    return 1;
}

static int parse_args(int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof *o);
    o->steps = 1;
    o->strength = 1;
    o->margin = DEFAULT_MARGIN;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int r;
        double d;
        if (cli_help_version(a, PROG, usage)) {
            exit(0);
        } else if (CLI_OPT("--out") || CLI_OPT("-o")) {
            CLI_VAL();
            o->out = v;
        } else if (CLI_OPT("--model")) {
            CLI_VAL();
            o->model = v;
        } else if (CLI_OPT("--device")) {
            CLI_VAL();
            o->device = v;
        } else if (CLI_OPT("--progress")) {
            CLI_VAL();
            if (strcmp(v, "bar") && strcmp(v, "json") && strcmp(v, "none"))
                BAD("--progress: bar, json or none, not '%s'", v);
            o->progress = v;
        } else if (CLI_OPT("--sigma")) {
            CLI_NUM(1e-3, 1e6);
            o->sigma = d;
        } else if (CLI_OPT("--steps")) {
            CLI_NUM(1, 1000);
            if (d != floor(d)) BAD("--steps: '%s' is not an integer", v);
            o->steps = (int)d;
        } else if (CLI_OPT("--strength")) {
            CLI_NUM(0, 1);
            o->strength = d;
        } else if (CLI_OPT("--tile")) {
            CLI_NUM(8, 1 << 16);
            if (d != floor(d)) BAD("--tile: '%s' is not an integer", v);
            o->tile = (int)d;
        } else if (CLI_OPT("--margin")) {
            CLI_VAL();
            if (!int_or_word(v, "exact", 0, &o->margin))
                BAD("--margin: '%s' is not an integer in [0, 4096] or 'exact'", v);
        } else if (CLI_OPT("--edge")) {
            CLI_VAL();
            if (!int_or_word(v, "margin", 1, &o->edge))
                BAD("--edge: '%s' is not an integer in [1, 4096] or 'margin'", v);
        } else if (a[0] == '-' && a[1])
            BAD("unknown option '%s' (see --help)", a);
        else if (!o->in)
            o->in = a;
        else
            BAD("one input (a file or a folder), not '%s' too", a);
    }
    if (!o->in) BAD("no input (see --help)");
    if (!o->out) BAD("no output: -o OUT.png (or a folder for a folder input)");
    return 0;
}

/* ------------------------------------------------------------ files */

static int ends_with(const char *p, const char *ext)
{
    size_t n = strlen(p), e = strlen(ext);
    return n > e && !strcasecmp(p + n - e, ext);
}

static int is_image_name(const char *n)
{
    static const char *const ext[] = {".png", ".jpg", ".jpeg", ".bmp", ".tga", ".pnm", ".ppm", ".pgm"};
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++)
        if (ends_with(n, ext[i])) return 1;
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Can a file be created in the folder of `path` (or in `path` for a folder)? */
static int probe_writable(const char *dir)
{
    int e = cli_dir_writable(dir);
    if (e) fprintf(stderr, "%s: output: cannot write into the folder '%s': %s\n", PROG, dir, strerror(e));
    return e != 0;
}

static void dir_of(const char *path, char *dir, size_t cap)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, cap, ".");
    else if (slash == path)
        snprintf(dir, cap, "/");
    else
        snprintf(dir, cap, "%.*s", (int)(slash - path), path);
}

/* A job: input path, output path. */
typedef struct job {
    char *in, *out;
} job;

static int list_jobs(const opts *o, job **jobs, int *n)
{
    *jobs = NULL;
    *n = 0;
    if (!cli_is_dir(o->in)) {
        if (!cli_is_file(o->in)) {
            fprintf(stderr, "%s: input '%s': %s\n", PROG, o->in, strerror(errno ? errno : ENOENT));
            return 1;
        }
        if (cli_is_dir(o->out) || !ends_with(o->out, ".png")) {
            fprintf(stderr, "%s: output '%s' must be a .png file for a file input\n", PROG, o->out);
            return CLI_EXIT_USAGE;
        }
        char d[PATH_MAX];
        dir_of(o->out, d, sizeof d);
        if (probe_writable(d)) return 1;
        *jobs = calloc(1, sizeof **jobs);
        if (!*jobs) return 1;
        (*jobs)[0].in = strdup(o->in);
        (*jobs)[0].out = strdup(o->out);
        *n = 1;
        return 0;
    }
    if (!cli_is_dir(o->out) && mkdir(o->out, 0777) != 0) {
        fprintf(stderr, "%s: output folder '%s': %s\n", PROG, o->out, strerror(errno));
        return 1;
    }
    char ri[PATH_MAX], ro[PATH_MAX];
    if (realpath(o->in, ri) && realpath(o->out, ro) && !strcmp(ri, ro)) {
        fprintf(stderr, "%s: the output folder is the input folder '%s': the photos would be overwritten\n",
                PROG, o->in);
        return CLI_EXIT_USAGE;
    }
    if (probe_writable(o->out)) return 1;
    DIR *d = opendir(o->in);
    if (!d) {
        fprintf(stderr, "%s: input folder '%s': %s\n", PROG, o->in, strerror(errno));
        return 1;
    }
    char **names = NULL;
    int nn = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !is_image_name(e->d_name)) continue;
        if (nn == cap) {
            cap = cap ? 2 * cap : 16;
            char **q = realloc(names, (size_t)cap * sizeof *q);
            if (!q) break;
            names = q;
        }
        names[nn++] = strdup(e->d_name);
    }
    closedir(d);
    if (!nn) {
        fprintf(stderr, "%s: input folder '%s' has no image (png, jpg, bmp, tga, pnm)\n", PROG, o->in);
        free(names);
        return 1;
    }
    qsort(names, (size_t)nn, sizeof *names, cmp_str);
    *jobs = calloc((size_t)nn, sizeof **jobs);
    for (int i = 0; i < nn; i++) {
        size_t L = strlen(o->in) + strlen(names[i]) + 2, M = strlen(o->out) + strlen(names[i]) + 6;
        (*jobs)[i].in = malloc(L);
        (*jobs)[i].out = malloc(M);
        snprintf((*jobs)[i].in, L, "%s/%s", o->in, names[i]);
        char *dot = strrchr(names[i], '.');
        snprintf((*jobs)[i].out, M, "%s/%.*s.png", o->out, (int)(dot - names[i]), names[i]);
        for (int k = 0; k < i; k++)
            if (!strcmp((*jobs)[k].out, (*jobs)[i].out)) {
                fprintf(stderr, "%s: '%s' and '%s' would both be written to '%s'\n", PROG, (*jobs)[k].in,
                        (*jobs)[i].in, (*jobs)[i].out);
                *n = i + 1;
                return 1;
            }
        free(names[i]);
    }
    free(names);
    *n = nn;
    return 0;
}

/* ----------------------------------------------------------- progress */

typedef struct progress {
    const char *mode, *name;
    double t0;
} progress;

static void on_progress(void *user, int done, int total)
{
    progress *p = user;
    double el = cli_now_s() - p->t0, eta = done ? el * (total - done) / done : 0;
    if (!strcmp(p->mode, "json")) {
        printf("{\"file\": ");
        cli_json_str(stdout, p->name);
        printf(", \"tile\": %d, \"total\": %d, \"elapsed\": %.3f, \"eta\": %.3f}\n", done, total, el, eta);
        fflush(stdout);
    } else if (!strcmp(p->mode, "bar")) {
        int w = 30, fill = total ? (int)((double)w * done / total) : w;
        char bar[32];
        for (int i = 0; i < w; i++) bar[i] = i < fill ? '#' : '.';
        bar[w] = 0;
        fprintf(stderr, "\rdenoising [%s] %d/%d tiles  %.1f s  ETA %.1f s ", bar, done, total, el, eta);
        if (done == total) fputc('\n', stderr);
    }
}

/* ---------------------------------------------------------------- main */

/* t_max of the model's training ("cld.train" metadata), or T - 1. */
static int model_t_max(const char *path, const cld_model *m)
{
    char *mj = NULL;
    int t_max = m->meta.diffusion.T - 1;
    if (cld_safetensors_metadata(path, &mj) != CLD_OK) return t_max;
    cJSON *root = cJSON_Parse(mj), *tr = NULL;
    const cJSON *tj = root ? cJSON_GetObjectItemCaseSensitive(root, "cld.train") : NULL;
    if (cJSON_IsString(tj) && (tr = cJSON_Parse(tj->valuestring))) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(tr, "t_max");
        if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < t_max) t_max = (int)v->valuedouble;
    }
    cJSON_Delete(tr);
    cJSON_Delete(root);
    free(mj);
    return t_max;
}

typedef struct state {
    cld_ctx *ctx;
    cld_model *m;
    cld_tiled *tiled;
    double max_sigma;
    int t_max;
} state;

/* One photo: 0 done, else the exit code (nothing written). */
static int denoise_one(state *S, const opts *o, const job *jb, double *mp, double *secs)
{
    const int MC = S->m->meta.unet.in_channels;
    cld_image img;
    cld_status s = cld_image_load(jb->in, 0, 0, &img);
    if (s) return cli_fail(PROG, jb->in, s);
    int orient = 1;
    if (!s) s = cld_image_exif_orientation(jb->in, &orient);
    if (!s && orient != 1) s = cld_image_orient(&img, orient);
    if (s) {
        cld_image_free(&img);
        return cli_fail(PROG, jb->in, s);
    }
    const int W = img.width, H = img.height, IC = img.channels;
    const int colour = IC >= 3 ? 3 : 1, alpha = IC == 2 || IC == 4;
    const size_t plane = (size_t)W * H;
    float *x = malloc(plane * MC * sizeof *x), *y = malloc(plane * MC * sizeof *y);
    int rc = 0;
    if (!x || !y) rc = cli_fail(PROG, "host memory", CLD_ERR_NOMEM);
    if (!rc && MC != 3 && MC != colour) {
        fprintf(stderr, "%s: '%s' has %d colour channels, the model takes %d\n", PROG, jb->in, colour, MC);
        rc = 1;
    }
    /* planes: grey photos repeated into the model's three channels */
    for (int c = 0; !rc && c < MC; c++)
        for (size_t i = 0; i < plane; i++)
            x[(size_t)c * plane + i] = img.data[i * IC + (colour == 1 ? 0 : c)];
    double est[3] = {0, 0, 0}, sigma = o->sigma;
    if (!rc) {
        s = cld_noise_estimate(x, colour, H, W, 255.0, est);
        if (s) rc = cli_fail(PROG, "noise estimate", s);
    }
    if (!rc) {
        if (colour == 3)
            fprintf(stderr, "%s: %d x %d, %d bits, %s; estimated noise sd (0..255): R %.2f G %.2f B %.2f",
                    jb->in, W, H, img.bits, "colour", est[0], est[1], est[2]);
        else
            fprintf(stderr, "%s: %d x %d, %d bits, grey; estimated noise sd (0..255): %.2f", jb->in, W, H,
                    img.bits, est[0]);
        if (orient != 1) fprintf(stderr, "; EXIF orientation %d applied", orient);
        if (!(sigma > 0)) sigma = colour == 3 ? (est[0] + est[1] + est[2]) / 3 : est[0];
        fprintf(stderr, "; denoising at sigma %.2f%s\n", sigma,
                o->sigma > 0 ? " (--sigma)" : " (the estimate's mean)");
        if (!(sigma > 0)) {
            fprintf(stderr, "%s: '%s': no noise measurable (constant or fully clipped image); give --sigma\n",
                    PROG, jb->in);
            rc = 1;
        } else if (sigma > S->max_sigma + 1e-9) {
            fprintf(stderr,
                    "%s: sigma %.2f is over the model's trained range (at most %.2f: timesteps 0 .. %d)%s\n",
                    PROG, sigma, S->max_sigma, S->t_max,
                    o->sigma > 0 ? "" : "; the estimate may be wrong: give --sigma");
            rc = o->sigma > 0 ? CLI_EXIT_USAGE : 1;
        }
    }
    if (!rc) {
        double t;
        cld_denoise_timestep(S->m->schedule, sigma, &t);
        cld_tile_plan pl;
        s = cld_tiled_plan(S->tiled, H, W, &pl);
        if (s)
            rc = cli_fail(PROG, "--tile", s);
        else
            fprintf(
                stderr,
                "%s: timestep %.3f (continuous), %d step%s, strength %g; tiles %d x %d of %d (margin %d, edge "
                "%d, blend %d), %.0f MiB device memory planned\n",
                PROG, t, o->steps, o->steps > 1 ? "s (DDIM)" : "", o->strength, pl.nx, pl.ny, pl.tile,
                pl.margin, pl.offset, pl.blend, pl.device_bytes / 1048576.0);
    }
    if (!rc) {
        progress pr = {o->progress, jb->in, cli_now_s()};
        cld_denoise_opts d = {sigma, o->steps, o->strength, on_progress, &pr};
        const double t0 = cli_now_s();
        s = cld_denoise_run(S->tiled, S->m->schedule, S->m->meta.diffusion.pred, &d, x, H, W, y);
        if (s && !strcmp(o->progress, "bar")) fputc('\n', stderr);
        if (s) rc = cli_fail(PROG, jb->in, s);
        *secs += cli_now_s() - t0;
        *mp += plane / 1e6;
        /* one value everywhere out of a photo that is not: the model produced no image */
        const long maxv = img.bits == 16 ? 65535 : 255;
        long v;
        if (!rc && cli_one_value(y, plane * MC, (double)maxv, 0, maxv, &v) &&
            !cli_one_value(x, plane * MC, (double)maxv, 0, maxv, NULL))
            fprintf(
                stderr,
                "%s: warning: %s: the result is one value everywhere (%ld of %ld) though the photo is not: "
                "the model's output holds no image (broken model?)\n",
                PROG, jb->out, v, maxv);
    }
    if (!rc) { /* back to the file's layout and bit depth; grey = mean of the three outputs */
        const int bits = img.bits, maxv = bits == 16 ? 65535 : 255;
        void *px = malloc(plane * IC * (bits / 8));
        if (!px) rc = cli_fail(PROG, "host memory", CLD_ERR_NOMEM);
        for (size_t i = 0; !rc && i < plane; i++)
            for (int c = 0; c < IC; c++) {
                double v;
                if (alpha && c == IC - 1)
                    v = img.data[i * IC + c];
                else if (colour == 1)
                    v = MC == 3 ? (y[i] + y[plane + i] + y[2 * plane + i]) / 3.0 : y[i];
                else
                    v = y[(size_t)c * plane + i];
                long q = lround(v * maxv);
                q = q < 0 ? 0 : q > maxv ? maxv : q;
                if (bits == 16)
                    ((uint16_t *)px)[i * IC + c] = (uint16_t)q;
                else
                    ((uint8_t *)px)[i * IC + c] = (uint8_t)q;
            }
        if (!rc) {
            const char *keys[] = {"Software"}, *vals[] = {"cldiffusion cld-denoise " CLD_VERSION_STRING};
            s = cld_png_write(jb->out, W, H, IC, bits, px, 1, keys, vals);
            if (s) rc = cli_fail(PROG, jb->out, s);
        }
        free(px);
    }
    if (!rc) {
        if (!strcmp(o->progress, "json")) {
            printf("{\"out\": ");
            cli_json_str(stdout, jb->out);
            printf("}\n");
        } else
            printf("%s\n", jb->out);
        fflush(stdout);
    }
    free(x);
    free(y);
    cld_image_free(&img);
    return rc;
}

static int run(state *S, opts *o)
{
    job *jobs = NULL;
    int n = 0, rc = list_jobs(o, &jobs, &n);
    char model_buf[4096];
    if (!rc && !o->model) {
        cld_status s = cld_asset_path(DEFAULT_MODEL, model_buf, sizeof model_buf);
        if (s) rc = cli_fail(PROG, "the bundled model (use --model FILE)", s);
        o->model = model_buf;
    }
    if (!o->progress) o->progress = isatty(2) ? "bar" : "none";
    if (!rc && cli_ctx_create(o->device, stderr, &S->ctx))
        rc = cli_fail(PROG, "device", cld_ctx_create(o->device, &S->ctx));
    cld_status s = CLD_OK;
    if (!rc && (s = cld_model_load(S->ctx, o->model, &S->m))) rc = cli_fail(PROG, "--model", s);
    if (!rc) {
        const cld_model_meta *mt = &S->m->meta;
        S->t_max = model_t_max(o->model, S->m);
        cld_denoise_max_sigma(S->m->schedule, S->t_max, &S->max_sigma);
        int radius = 0;
        s = cld_unet_receptive_radius(&mt->unet, &radius);
        if (s)
            rc = cli_fail(PROG, "--model", s);
        else {
            fprintf(stderr,
                    "model: %s (fnv1a64:%016llx): %d channels, %s schedule T=%d, %s prediction, trained on "
                    "timesteps 0..%d (sigma up to %.1f), receptive radius %d px\n",
                    o->model, (unsigned long long)S->m->hash, mt->unet.in_channels,
                    cld_schedule_name(mt->diffusion.schedule), mt->diffusion.T,
                    cld_pred_name(mt->diffusion.pred), S->t_max, S->max_sigma, radius);
            if (o->sigma > S->max_sigma) {
                fprintf(
                    stderr,
                    "%s: --sigma %g is over the model's trained range (at most %.2f: timesteps 0 .. %d)\n",
                    PROG, o->sigma, S->max_sigma, S->t_max);
                rc = CLI_EXIT_USAGE;
            }
            if (mt->unet.out_channels != mt->unet.in_channels || mt->unet.num_classes) {
                fprintf(stderr, "%s: --model: a denoiser maps C channels to C, unconditionally\n", PROG);
                rc = 1;
            }
        }
    }
    if (!rc) {
        cld_tile_opts to = {o->tile, o->margin, 0, 0, o->edge};
        s = cld_tiled_create(S->ctx, S->m->params, &S->m->meta.unet, &to, &S->tiled);
        if (s) rc = cli_fail(PROG, "tiling", s);
    }
    double mp = 0, secs = 0;
    int done = 0;
    for (int i = 0; !rc && i < n; i++) {
        rc = denoise_one(S, o, &jobs[i], &mp, &secs);
        if (!rc) done++;
    }
    if (!rc) {
        cld_device_info info;
        cld_ctx_device_info(S->ctx, &info);
        fprintf(stderr, "%s: %d photo%s, %.2f megapixels in %.2f s: %.2f s per megapixel on %s / %s\n", PROG,
                done, done == 1 ? "" : "s", mp, secs, mp > 0 ? secs / mp : 0.0, info.platform_name,
                info.name);
    }
    for (int i = 0; i < n; i++) free(jobs[i].in), free(jobs[i].out);
    free(jobs);
    return rc;
}

int main(int argc, char **argv)
{
    opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc;
    state S;
    memset(&S, 0, sizeof S);
    rc = run(&S, &o);
    cld_tiled_free(S.tiled);
    cld_model_free(S.m);
    if (S.ctx) cld_ctx_free(S.ctx);
    return rc;
}
