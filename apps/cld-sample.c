/* cld-sample: sample images from a model file (by default the bundled
 * Fashion-MNIST model) into a PNG grid or a folder of PNGs, each carrying
 * its recipe; img2img (SDEdit), inpainting (RePaint) and --replay.
 *
 * Top to bottom (main): options (or a PNG's recipe), the output checked
 * writable, the device, the model, the inputs checked against the model,
 * the batch checked against the device; then cld_model_sample, the NaN
 * check inside it, and the PNGs written atomically. Nothing is written
 * unless everything before succeeded. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static const char *PROG = "cld-sample";
#define DEFAULT_MODEL "fashion-mnist.safetensors"
#define ASSET_PREFIX "asset:" /* a recipe's model that is a bundled asset, wherever it is installed */
#define DEFAULT_STEPS 20
#define DEFAULT_GUIDANCE 1.5
#define DEFAULT_PER_CLASS 2
#define DEFAULT_UNCOND 16
#define MAX_FRAMES 8

typedef struct opts {
    const char *model, *device, *out, *init, *mask, *replay, *progress, *noise;
    const char *classes[CLD_MODEL_MAX_CLASSES];
    int n_classes;
    cld_sampler_kind sampler;
    int sampler_set, spacing, karras, spacing_set, steps, n, batch, grid_cols, trajectory, resample, jump;
    int eta_set, guidance_set, strength_set, resample_set;
    double eta, guidance, strength;
    uint64_t seed;
    cld_overrides ov; /* --schedule, --prediction, --clip-sample, ...: over the model's defaults */
} opts;

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: cld-sample [options]\n"
        "\n"
        "Samples images from a diffusion model. With no options: the bundled Fashion-MNIST model, %d samples\n"
        "of every class, DPM-Solver++(2M) on Karras sigmas with %d steps, guidance %g, seed 0, into samples.png.\n"
        "\n"
        "  --model FILE|DIR     model (safetensors written by cld-train; default: the bundled %s,\n"
        "                       found next to the program, in the install prefix or through CLD_ASSETS;\n"
        "                       asset:NAME names another bundled file), or a diffusers UNet2DModel folder\n"
        "                       (save_pretrained in safetensors form; its scheduler config sets the\n"
        "                       schedule, prediction type and the defaults of --spacing, DDPM variance,\n"
        "                       clip_sample, steps_offset and DDIM's set_alpha_to_one)\n"
        "  --device SPEC        OpenCL device (see cld-devices)\n"
        "  --sampler NAME       ddpm, ddim, dpm++2m (default), euler, euler-a, heun\n"
        "  --spacing NAME       leading, trailing (default; heun, and dpm++2m on cldiffusion models: karras),\n"
        "                       linspace, karras\n"
        "  --steps N            sampler steps, 1 .. the model's T (default %d)\n"
        "  --eta X              ddim (default 0) and euler-a (default 1) noise\n"
        "  --seed N             noise seed (default 0)\n"
        "  --class C            class name or index; repeatable (default: every class)\n"
        "  --guidance G         classifier-free guidance scale (default %g on class-conditional models)\n"
        "  --n N                samples (default %d per class, %d without classes); classes are cycled\n"
        "  --batch N            samples per sampler run (default: what fits the device, at most 64)\n"
        "  --out PATH           a .png file for a grid, or a folder (existing, or ending in /) for one\n"
        "                       PNG per sample named by index, class and seed (default samples.png)\n"
        "  --grid-cols N        grid columns (default: one per class)\n"
        "  --trajectory         a strip of %d intermediate states per sample instead of a grid\n"
        "  --init IMAGE         start from an image (img2img, SDEdit) ...\n"
        "  --strength S         ... noised to strength S in (0, 1] (default 1: pure noise level)\n"
        "  --noise FILE         x_T from a safetensors file of one F32 tensor (n, C, S, S): row i starts\n"
        "                       sample i, as diffusers pipelines' latents (default: the seed's noise)\n"
        "  --mask MASK          inpainting (RePaint): regenerate where MASK is white, keep --init elsewhere\n"
        "                       (default sampler ddpm; ddim with --eta also works)\n"
        "  --resample R         inpainting: each step done R times, jumping back in between (default 1)\n"
        "  --jump J             inpainting: steps per jump back (default 1)\n"
        "  --replay FILE.png    make FILE.png again from its recipe (with --out, --device, --model, --progress)\n"
        "  --progress bar|json|none  (default: bar on a terminal, else none)\n"
        "\n"
        "Overrides of the model's defaults (a model file's metadata, or a diffusers scheduler config);\n"
        "kept in each PNG's recipe:\n"
        "  --schedule NAME      linear, cosine, scaled-linear      --train-steps T   the schedule's T\n"
        "  --beta-start B, --beta-end B   linear schedules' beta range\n"
        "  --prediction P       eps, v or x0: what the model predicts\n"
        "  --variance V         ddpm: fixed_small (posterior) or fixed_large (beta)\n"
        "  --clip-sample C      ddpm, ddim: clamp the x_0 estimate to [-C, C] (0: off)\n"
        "  --steps-offset N     added to leading-spacing timesteps\n"
        "  --set-alpha-to-one true|false   ddim: the last step ends at alpha_bar = 1 (true) or alpha_bar[0]\n"
        "  --help, --version\n"
        "\n"
        "The same seed and options give the same PNG bytes on the same device. Written paths go to\n"
        "stdout, everything else to stderr. Exit status: 0 done, 1 failure, 2 usage error.\n",
        DEFAULT_PER_CLASS, DEFAULT_STEPS, DEFAULT_GUIDANCE, DEFAULT_MODEL, DEFAULT_STEPS, DEFAULT_GUIDANCE,
        DEFAULT_PER_CLASS, DEFAULT_UNCOND, MAX_FRAMES);
}

/* The spellings (dpm++2m, euler-a) and the library's (dpmpp_2m, euler_a). */
static int parse_sampler(const char *v, cld_sampler_kind *k)
{
    if (!strcmp(v, "dpm++2m") || !strcmp(v, "dpm++"))
        v = "dpmpp_2m";
    else if (!strcmp(v, "euler-a"))
        v = "euler_a";
    return cld_sampler_parse(v, k) == CLD_OK;
}

static const char *sampler_label(cld_sampler_kind k)
{
    static const char *const names[] = {"ddpm", "ddim", "dpm++2m", "euler", "euler-a", "heun"};
    return (unsigned)k < 6 ? names[k] : "?";
}

static int parse_spacing(const char *v, int *spacing, int *karras)
{
    static const char *const names[] = {"leading", "trailing", "linspace"};
    *karras = !strcmp(v, "karras");
    *spacing = CLD_SPACING_TRAILING;
    for (int i = 0; i < 3; i++)
        if (!strcmp(v, names[i])) *spacing = i;
    return *karras || !strcmp(v, names[*spacing]);
}

#define BAD(...) CLI_BAD(PROG, __VA_ARGS__)

static int parse_args(int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof *o);
    o->sampler = CLD_SAMPLER_DPMPP_2M;
    o->spacing = CLD_SPACING_TRAILING;
    o->strength = 1.0;
    o->resample = o->jump = 1;
    int replay_only = 0; /* a flag that --replay cannot take */
    const char *first_bad = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int r;
        double d;
        int shared = 0;
        if (cli_help_version(a, PROG, usage)) {
            exit(0);
        } else if (!strcmp(a, "--trajectory"))
            o->trajectory = 1;
        else if (CLI_OPT("--model")) {
            CLI_VAL();
            o->model = v;
            shared = 1;
        } else if (CLI_OPT("--device")) {
            CLI_VAL();
            o->device = v;
            shared = 1;
        } else if (CLI_OPT("--out")) {
            CLI_VAL();
            o->out = v;
            shared = 1;
        } else if (CLI_OPT("--replay")) {
            CLI_VAL();
            o->replay = v;
            shared = 1;
        } else if (CLI_OPT("--progress")) {
            CLI_VAL();
            if (strcmp(v, "bar") && strcmp(v, "json") && strcmp(v, "none"))
                BAD("--progress: bar, json or none, not '%s'", v);
            o->progress = v;
            shared = 1;
        } else if (CLI_OPT("--schedule")) {
            CLI_VAL();
            if (cld_schedule_parse(v, &o->ov.schedule)) BAD("--schedule: %s", cld_last_error());
            o->ov.set |= CLD_OVERRIDE_SCHEDULE;
        } else if (CLI_OPT("--train-steps")) {
            CLI_NUM(2, 100000);
            if (d != floor(d)) BAD("--train-steps: '%s' is not an integer", v);
            o->ov.T = (int)d;
            o->ov.set |= CLD_OVERRIDE_T;
        } else if (CLI_OPT("--beta-start")) {
            CLI_NUM(0, 1);
            o->ov.beta_start = d;
            o->ov.set |= CLD_OVERRIDE_BETA_START;
        } else if (CLI_OPT("--beta-end")) {
            CLI_NUM(0, 1);
            o->ov.beta_end = d;
            o->ov.set |= CLD_OVERRIDE_BETA_END;
        } else if (CLI_OPT("--prediction")) {
            CLI_VAL();
            if (cld_pred_parse(v, &o->ov.pred)) BAD("--prediction: %s", cld_last_error());
            o->ov.set |= CLD_OVERRIDE_PRED;
        } else if (CLI_OPT("--variance")) {
            CLI_VAL();
            if (strcmp(v, "fixed_small") && strcmp(v, "fixed_large"))
                BAD("--variance: fixed_small or fixed_large, not '%s'", v);
            o->ov.variance = !strcmp(v, "fixed_large") ? CLD_VAR_BETA : CLD_VAR_POSTERIOR;
            o->ov.set |= CLD_OVERRIDE_VARIANCE;
        } else if (CLI_OPT("--clip-sample")) {
            CLI_NUM(0, 1e6);
            o->ov.clip_sample = d;
            o->ov.set |= CLD_OVERRIDE_CLIP;
        } else if (CLI_OPT("--steps-offset")) {
            CLI_NUM(0, 100000);
            if (d != floor(d)) BAD("--steps-offset: '%s' is not an integer", v);
            o->ov.steps_offset = (int)d;
            o->ov.set |= CLD_OVERRIDE_STEPS_OFFSET;
        } else if (CLI_OPT("--set-alpha-to-one")) {
            CLI_VAL();
            if (strcmp(v, "true") && strcmp(v, "false"))
                BAD("--set-alpha-to-one: true or false, not '%s'", v);
            o->ov.set_alpha_to_one = !strcmp(v, "true");
            o->ov.set |= CLD_OVERRIDE_ALPHA_ONE;
        } else if (CLI_OPT("--sampler")) {
            CLI_VAL();
            if (!parse_sampler(v, &o->sampler))
                BAD("--sampler: unknown sampler '%s' (ddpm, ddim, dpm++2m, euler, euler-a, heun)", v);
            o->sampler_set = 1;
        } else if (CLI_OPT("--spacing")) {
            CLI_VAL();
            if (!parse_spacing(v, &o->spacing, &o->karras))
                BAD("--spacing: unknown spacing '%s' (leading, trailing, linspace, karras)", v);
            o->spacing_set = 1;
        } else if (CLI_OPT("--steps")) {
            CLI_NUM(1, 1e6);
            if (d != floor(d)) BAD("--steps: '%s' is not an integer", v);
            o->steps = (int)d;
        } else if (CLI_OPT("--eta")) {
            CLI_NUM(0, 100);
            o->eta = d;
            o->eta_set = 1;
        } else if (CLI_OPT("--seed")) {
            CLI_NUM(0, 9007199254740991.0);
            if (d != floor(d)) BAD("--seed: '%s' is not an integer", v);
            o->seed = (uint64_t)d;
        } else if (CLI_OPT("--class")) {
            CLI_VAL();
            if (o->n_classes == CLD_MODEL_MAX_CLASSES) BAD("--class: at most %d", CLD_MODEL_MAX_CLASSES);
            o->classes[o->n_classes++] = v;
        } else if (CLI_OPT("--guidance")) {
            CLI_NUM(-100, 100);
            o->guidance = d;
            o->guidance_set = 1;
        } else if (CLI_OPT("--n")) {
            CLI_NUM(1, 1e6);
            if (d != floor(d)) BAD("--n: '%s' is not an integer", v);
            o->n = (int)d;
        } else if (CLI_OPT("--batch")) {
            CLI_NUM(1, 1e6);
            if (d != floor(d)) BAD("--batch: '%s' is not an integer", v);
            o->batch = (int)d;
        } else if (CLI_OPT("--grid-cols")) {
            CLI_NUM(1, 4096);
            o->grid_cols = (int)d;
        } else if (CLI_OPT("--init")) {
            CLI_VAL();
            o->init = v;
        } else if (CLI_OPT("--noise")) {
            CLI_VAL();
            o->noise = v;
        } else if (CLI_OPT("--strength")) {
            CLI_NUM(1e-6, 1);
            o->strength = d;
            o->strength_set = 1;
        } else if (CLI_OPT("--mask")) {
            CLI_VAL();
            o->mask = v;
        } else if (CLI_OPT("--resample")) {
            CLI_NUM(1, 1000);
            o->resample = (int)d;
            o->resample_set = 1;
        } else if (CLI_OPT("--jump")) {
            CLI_NUM(1, 1000);
            o->jump = (int)d;
            o->resample_set = 1;
        } else
            BAD("unknown option '%s' (see --help)", a);
        if (!shared && !replay_only) replay_only = 1, first_bad = a;
    }
    if (o->replay) {
        if (replay_only)
            BAD("--replay takes every setting from the file; %s cannot be combined with it", first_bad);
        return 0;
    }
    if (o->strength_set && !o->init) BAD("--strength needs --init IMAGE");
    if (o->noise && o->init) BAD("--noise gives x_T; --init starts from an image instead: not both");
    if (o->mask && !o->init) BAD("--mask needs --init IMAGE");
    if (o->resample_set && !o->mask) BAD("--resample and --jump need --mask (inpainting)");
    if (o->mask && !o->sampler_set) o->sampler = CLD_SAMPLER_DDPM;
    if (o->eta_set && o->sampler != CLD_SAMPLER_DDIM && o->sampler != CLD_SAMPLER_EULER_A)
        BAD("--eta applies to ddim and euler-a, not %s", sampler_label(o->sampler));
    if ((o->ov.set & CLD_OVERRIDE_VARIANCE) && o->sampler != CLD_SAMPLER_DDPM)
        BAD("--variance applies to ddpm, not %s", sampler_label(o->sampler));
    if ((o->ov.set & CLD_OVERRIDE_CLIP) && o->sampler != CLD_SAMPLER_DDPM && o->sampler != CLD_SAMPLER_DDIM)
        BAD("--clip-sample applies to ddpm and ddim, not %s", sampler_label(o->sampler));
    if ((o->ov.set & CLD_OVERRIDE_ALPHA_ONE) && o->sampler != CLD_SAMPLER_DDIM)
        BAD("--set-alpha-to-one applies to ddim, not %s", sampler_label(o->sampler));
    if (o->karras && o->sampler == CLD_SAMPLER_DDPM)
        BAD("--spacing karras needs a continuous-time sampler (not ddpm)");
    if (o->mask && o->sampler != CLD_SAMPLER_DDPM && o->sampler != CLD_SAMPLER_DDIM)
        BAD("--mask (RePaint) steps with ddpm or ddim, not %s", sampler_label(o->sampler));
    if (o->trajectory && o->out && o->out[strlen(o->out) - 1] == '/')
        BAD("--trajectory writes one strip: --out must be a .png file");
    return 0;
}

/* ------------------------------------------------------------- output */

static int ends_with_png(const char *p)
{
    size_t n = strlen(p);
    return n > 4 && !strcasecmp(p + n - 4, ".png");
}

/* Can a file be created in `dir`? (before any work: no partial output later) */
static int probe_dir(const char *dir, const char *what)
{
    int e = cli_dir_writable(dir);
    if (e) fprintf(stderr, "%s: --out: cannot write %s '%s': %s\n", PROG, what, dir, strerror(e));
    return e != 0;
}

/* Folder mode (1), file mode (0) or an error (-1, printed). */
static int check_out(const char *out)
{
    size_t n = strlen(out);
    if (cli_is_dir(out) || out[n - 1] == '/') {
        if (!cli_is_dir(out) && mkdir(out, 0777) != 0) {
            fprintf(stderr, "%s: --out: cannot create the folder '%s': %s\n", PROG, out, strerror(errno));
            return -1;
        }
        return probe_dir(out, "into the folder") ? -1 : 1;
    }
    if (!ends_with_png(out)) {
        fprintf(stderr, "%s: --out: '%s' is neither a .png file nor a folder (end it with / to make one)\n",
                PROG, out);
        return -1;
    }
    char dir[4096];
    const char *slash = strrchr(out, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == out)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - out), out);
    return probe_dir(dir, "into the folder of") ? -1 : 0;
}

static int write_png(const char *path, const uint8_t *px, int w, int h, int c, const char *recipe)
{
    const char *keys[] = {"Software", CLD_RECIPE_KEY},
               *vals[] = {"cldiffusion cld-sample " CLD_VERSION_STRING, recipe};
    cld_status s = cld_png_write(path, w, h, c, 8, px, 2, keys, vals);
    if (s) return cli_fail(PROG, path, s);
    return 0;
}

/* "T-shirt/top" -> "T-shirt_top" for file names. */
static void file_word(const char *in, char *out, size_t cap)
{
    size_t k = 0;
    for (; *in && k + 1 < cap; in++)
        out[k++] = (*in >= 'a' && *in <= 'z') || (*in >= 'A' && *in <= 'Z') || (*in >= '0' && *in <= '9') ||
                           *in == '-'
                       ? *in
                       : '_';
    out[k] = 0;
}

/* ----------------------------------------------------------- progress */

typedef struct progress {
    const char *mode;
    double t0;
} progress;

static void on_progress(void *user, int done, int total)
{
    progress *p = user;
    double el = cli_now_s() - p->t0, eta = done ? el * (total - done) / done : 0;
    if (!strcmp(p->mode, "json")) {
        printf("{\"step\": %d, \"total\": %d, \"elapsed\": %.3f, \"eta\": %.3f}\n", done, total, el, eta);
        fflush(stdout);
    } else if (!strcmp(p->mode, "bar")) {
        int w = 30, fill = total ? (int)((double)w * done / total) : w;
        char bar[32];
        for (int i = 0; i < w; i++) bar[i] = i < fill ? '#' : '.';
        bar[w] = 0;
        fprintf(stderr, "\rsampling [%s] %d/%d  %.1f s  ETA %.1f s ", bar, done, total, el, eta);
        if (done == total) fputc('\n', stderr);
    }
}

/* ------------------------------------------------------------ inputs */

/* --init as (C, S, S) in [-1, 1] (its channels must be the model's), or
 * --mask as (S, S) in [0, 1] (converted to grey; 1 = regenerate). */
static int load_input(const char *what, const char *path, const cld_model *m, int is_mask, float **out)
{
    const int C = is_mask ? 1 : m->meta.unet.in_channels, S = m->meta.unet.image_size;
    cld_image img;
    cld_status s = cld_image_load(path, is_mask ? 1 : 0, 0, &img);
    if (s) return cli_fail(PROG, what, s);
    int rc = 0;
    if (img.width != S || img.height != S) {
        fprintf(stderr, "%s: %s: '%s' is %d x %d, the model makes %d x %d images\n", PROG, what, path,
                img.width, img.height, S, S);
        rc = 1;
    } else if (img.channels != C) {
        fprintf(stderr, "%s: %s: '%s' has %d channels, the model takes %d (%s)\n", PROG, what, path,
                img.channels, C,
                C == 1   ? "grey"
                : C == 3 ? "RGB"
                         : "?");
        rc = 1;
    } else if (!(*out = malloc((size_t)C * S * S * sizeof(float)))) {
        rc = cli_fail(PROG, what, CLD_ERR_NOMEM);
    } else {
        for (int c = 0; c < C; c++)
            for (size_t p = 0; p < (size_t)S * S; p++) {
                float v = img.data[p * C + c];
                (*out)[(size_t)c * S * S + p] = is_mask ? v : 2.0f * v - 1.0f;
            }
    }
    cld_image_free(&img);
    return rc;
}

/* --noise: rows first .. first + n - 1 of a safetensors tensor (N, C, S, S), N >= first + n;
 * *n 0: all N - first rows. */
static int load_noise(const char *path, const cld_model *m, uint32_t first, int *np, float **out)
{
    int nd = 0, sh[CLD_MAX_DIMS];
    float *v = NULL;
    cld_status s = cld_safetensors_read(path, NULL, &nd, sh, &v);
    if (s) return cli_fail(PROG, "--noise", s);
    const int C = m->meta.unet.in_channels, S = m->meta.unet.image_size;
    const int n = *np ? *np : nd == 4 && (long)sh[0] > (long)first ? sh[0] - (int)first : 1;
    if (nd != 4 || sh[1] != C || sh[2] != S || sh[3] != S || (long)sh[0] < (long)first + n) {
        fprintf(stderr, "%s: --noise: '%s' holds a tensor of rank %d (", PROG, path, nd);
        for (int i = 0; i < nd; i++) fprintf(stderr, i ? ", %d" : "%d", sh[i]);
        fprintf(stderr, "); the model needs (N, %d, %d, %d) with N >= %ld samples\n", C, S, S,
                (long)first + n);
        free(v);
        return 1;
    }
    memmove(v, v + (size_t)first * m->per_sample, (size_t)n * m->per_sample * sizeof *v);
    *out = v;
    *np = n;
    return 0;
}

/* --replay: the options of a PNG's recipe. */
static int from_recipe(opts *o, cld_recipe *r, char *out_buf, size_t cap)
{
    char *text = NULL;
    cld_status s = cld_png_read_text(o->replay, CLD_RECIPE_KEY, &text);
    if (s == CLD_OK) s = cld_recipe_from_json(text, r);
    free(text);
    if (s) return cli_fail(PROG, "--replay", s);
    if (!o->model) o->model = r->model;
    o->sampler = r->sampler;
    o->spacing = r->spacing;
    o->karras = r->karras;
    o->spacing_set = 1;
    o->steps = r->steps;
    o->eta = r->eta;
    o->eta_set = 1;
    o->guidance = r->guidance;
    o->guidance_set = 1;
    o->seed = r->seed;
    o->n = r->n;
    o->batch = r->batch;
    o->grid_cols = r->grid_cols;
    o->trajectory = !strcmp(r->layout, "trajectory");
    o->init = r->init[0] ? r->init : NULL;
    o->strength = r->strength;
    o->mask = r->mask[0] ? r->mask : NULL;
    o->resample = r->resample;
    o->jump = r->jump;
    o->noise = r->noise[0] ? r->noise : NULL;
    o->ov = r->overrides;
    if (!o->out) {
        size_t n = strlen(o->replay);
        snprintf(out_buf, cap, "%.*s-replay.png", (int)(ends_with_png(o->replay) ? n - 4 : n), o->replay);
        o->out = out_buf;
    }
    return 0;
}

static int check_hash(const char *what, const char *path, uint64_t want)
{
    uint64_t h = 0;
    cld_status s = cld_file_hash(path, &h);
    if (s) return cli_fail(PROG, what, s);
    if (h != want) {
        fprintf(
            stderr,
            "%s: --replay: %s '%s' has hash fnv1a64:%016llx, the recipe's was made with fnv1a64:%016llx\n",
            PROG, what, path, (unsigned long long)h, (unsigned long long)want);
        return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- main */

typedef struct state {
    opts o;
    cld_recipe rec; /* recipe of this run (grid / trajectory), or the replayed one */
    int replaying;
    cld_ctx *ctx;
    cld_model *m;
    float *init, *mask, *out, *traj, *noise;
    int *labels, classes[CLD_MODEL_MAX_CLASSES], n_classes;
} state;

static int run(state *S)
{
    opts *o = &S->o;
    char model_buf[4096], out_buf[4200];
    const double t_start = cli_now_s();
    if (o->replay && from_recipe(o, &S->rec, out_buf, sizeof out_buf)) return 1;
    if (!o->out) o->out = "samples.png";
    const int folder = check_out(o->out);
    if (folder < 0) return 1;
    if (folder && o->trajectory) {
        fprintf(stderr, "%s: --trajectory writes one strip: --out must be a .png file\n", PROG);
        return CLI_EXIT_USAGE;
    }
    const char *asset = !o->model ? DEFAULT_MODEL
                        : !strncmp(o->model, ASSET_PREFIX, strlen(ASSET_PREFIX))
                            ? o->model + strlen(ASSET_PREFIX)
                            : NULL;
    if (asset) {
        cld_status s = cld_asset_path(asset, model_buf, sizeof model_buf);
        if (s) return cli_fail(PROG, "the bundled model (use --model FILE)", s);
        o->model = model_buf;
    }
    if (!o->progress) o->progress = isatty(2) ? "bar" : "none";

    if (cli_ctx_create(o->device, stderr, &S->ctx))
        return cli_fail(PROG, "device", cld_ctx_create(o->device, &S->ctx));
    cld_status s = cld_model_load(S->ctx, o->model, &S->m);
    if (s) return cli_fail(PROG, "--model", s);
    if (o->ov.set && (s = cld_model_override(S->m, &o->ov))) return cli_fail(PROG, "overrides", s);
    const cld_model *m = S->m;
    const cld_model_meta *meta = &m->meta;
    const int nc = meta->unet.num_classes, C = meta->unet.in_channels, SZ = meta->unet.image_size;
    size_t np = 0;
    cld_params_count(m->params, NULL, &np);
    fprintf(
        stderr,
        "model: %s (fnv1a64:%016llx): %dx%dx%d, %zu parameters, %d classes, %s schedule T=%d, %s prediction\n",
        o->model, (unsigned long long)m->hash, SZ, SZ, C, np, nc, cld_schedule_name(meta->diffusion.schedule),
        meta->diffusion.T, cld_pred_name(meta->diffusion.pred));
    if (m->diffusers)
        fprintf(stderr,
                "diffusers folder: %s%s: %s spacing, steps_offset %d, DDPM variance %s, clip_sample %g, "
                "set_alpha_to_one %s\n",
                m->sched.present ? m->sched.class_name : "no scheduler config, DDPMScheduler",
                m->sched.present ? "" : " defaults",
                m->sched.spacing == 0   ? "leading"
                : m->sched.spacing == 1 ? "trailing"
                                        : "linspace",
                m->sched.steps_offset, m->sched.variance == CLD_VAR_BETA ? "fixed_large" : "fixed_small",
                m->sched.clip_sample, m->sched.set_alpha_to_one ? "true" : "false");
    if (S->replaying && m->hash != S->rec.model_hash) {
        fprintf(stderr,
                "%s: --replay: model '%s' has hash fnv1a64:%016llx, the recipe's was fnv1a64:%016llx\n", PROG,
                o->model, (unsigned long long)m->hash, (unsigned long long)S->rec.model_hash);
        return 1;
    }

    /* classes and labels */
    if (S->replaying) {
        S->n_classes = S->rec.n_classes;
        memcpy(S->classes, S->rec.classes, sizeof S->classes);
    } else {
        for (int i = 0; i < o->n_classes; i++) {
            s = cld_model_class_parse(m, o->classes[i], &S->classes[i]);
            if (s) {
                cli_fail(PROG, "--class", s);
                return CLI_EXIT_USAGE;
            }
        }
        S->n_classes = o->n_classes;
        if (!S->n_classes && nc)
            for (int k = 0; k < nc; k++) S->classes[S->n_classes++] = k;
    }
    for (int i = 0; i < S->n_classes; i++)
        if (S->classes[i] >= nc) {
            fprintf(stderr, "%s: class %d: the model has %d classes\n", PROG, S->classes[i], nc);
            return 1;
        }
    if (o->guidance_set && o->guidance != 1.0 && !nc) {
        fprintf(stderr,
                "%s: --guidance %g: the model '%s' has no class conditioning (guidance needs classes)\n",
                PROG, o->guidance, o->model);
        return CLI_EXIT_USAGE;
    }
    if (o->guidance_set && o->guidance != 1.0 && meta->unet.class_no_null) {
        fprintf(
            stderr,
            "%s: --guidance %g: the model '%s' has no null class (a diffusers num_class_embeds table), so "
            "no classifier-free guidance\n",
            PROG, o->guidance, o->model);
        return CLI_EXIT_USAGE;
    }
    if (!o->guidance_set) o->guidance = nc && !meta->unet.class_no_null ? DEFAULT_GUIDANCE : 1.0;
    if (!o->steps) o->steps = DEFAULT_STEPS;
    if (o->steps > meta->diffusion.T) {
        fprintf(stderr, "%s: --steps %d: the model has T = %d timesteps\n", PROG, o->steps,
                meta->diffusion.T);
        return CLI_EXIT_USAGE;
    }
    if (S->replaying && o->noise && check_hash("noise", o->noise, S->rec.noise_hash)) return 1;
    if (o->noise && load_noise(o->noise, m, S->replaying ? S->rec.first_index : 0, &o->n, &S->noise))
        return 1;
    if (!o->n) o->n = S->n_classes ? DEFAULT_PER_CLASS * S->n_classes : DEFAULT_UNCOND;
    S->labels = S->n_classes ? malloc((size_t)o->n * sizeof *S->labels) : NULL;
    S->out = malloc((size_t)o->n * m->per_sample * sizeof(float));
    if ((S->n_classes && !S->labels) || !S->out) return cli_fail(PROG, "host memory", CLD_ERR_NOMEM);
    for (int i = 0; S->labels && i < o->n; i++) S->labels[i] = S->classes[i % S->n_classes];

    /* inputs */
    if (o->init && load_input("--init", o->init, m, 0, &S->init)) return 1;
    if (o->mask && load_input("--mask", o->mask, m, 1, &S->mask)) return 1;
    if (S->replaying && o->init && check_hash("init image", o->init, S->rec.init_hash)) return 1;
    if (S->replaying && o->mask && check_hash("mask", o->mask, S->rec.mask_hash)) return 1;

    /* the spec, the batch */
    cld_sample_spec sp;
    cld_sample_spec_default(&sp); /* cldiffusion models: the library's default sampler options */
    if (m->diffusers || o->sampler != sp.opts.kind) cld_sampler_opts_default(o->sampler, &sp.opts);
    if (m->diffusers) cld_diffusers_sampler_defaults(&m->sched, &sp.opts); /* the scheduler config's */
    if ((s = cld_overrides_apply(&o->ov, &sp.opts))) return cli_fail(PROG, "overrides", s);
    sp.opts.steps = o->steps;
    if (o->spacing_set) { /* else the defaults above (Heun, and DPM++(2M) on cldiffusion models: Karras) */
        sp.opts.spacing = (cld_spacing)o->spacing;
        sp.opts.karras = o->karras;
    }
    if (o->eta_set) sp.opts.eta = o->eta;
    sp.opts.guidance = o->guidance;
    sp.n = o->n;
    sp.labels = S->labels;
    sp.seed = o->seed;
    sp.first_index = S->replaying ? S->rec.first_index : 0;
    sp.init = S->init;
    sp.noise = S->noise;
    sp.strength = o->strength;
    sp.mask = S->mask;
    sp.resample = o->resample;
    sp.jump = o->jump;
    const int guided = S->labels && o->guidance != 1.0;
    if (o->batch)
        s = cld_model_check_batch(m, o->batch, guided);
    else
        s = cld_model_fit_batch(m, guided, o->n < 64 ? o->n : 64, &o->batch);
    if (s) return cli_fail(PROG, "--batch", s);
    sp.batch = o->batch;
    cld_batch_memory mem;
    cld_model_batch_memory(m, sp.batch, guided, &mem);
    if (o->trajectory) {
        long eff = o->init ? lround(o->strength * o->steps) : o->steps;
        sp.frames = eff + 1 < MAX_FRAMES ? (int)(eff < 1 ? 2 : eff + 1) : MAX_FRAMES;
        S->traj = malloc((size_t)o->n * sp.frames * m->per_sample * sizeof(float));
        if (!S->traj) return cli_fail(PROG, "host memory", CLD_ERR_NOMEM);
        sp.trajectory = S->traj;
    }
    fprintf(stderr, "sampler: %s, %s spacing, %d steps", sampler_label(o->sampler),
            sp.opts.karras         ? "karras"
            : sp.opts.spacing == 0 ? "leading"
            : sp.opts.spacing == 1 ? "trailing"
                                   : "linspace",
            o->steps);
    if (o->sampler == CLD_SAMPLER_DDIM || o->sampler == CLD_SAMPLER_EULER_A)
        fprintf(stderr, ", eta %g", sp.opts.eta);
    fprintf(stderr, ", guidance %g, seed %llu; %d samples in runs of %d (%.0f MiB planned)", o->guidance,
            (unsigned long long)o->seed, o->n, sp.batch, mem.total_bytes / 1048576.0);
    if (o->init) fprintf(stderr, "; init %s, strength %g", o->init, o->strength);
    if (o->mask) fprintf(stderr, "; mask %s, resample %d, jump %d", o->mask, o->resample, o->jump);
    fputc('\n', stderr);

    /* sample */
    progress pr = {o->progress, cli_now_s()};
    sp.progress = on_progress;
    sp.progress_user = &pr;
    const double t_sample = cli_now_s();
    s = cld_model_sample(S->m, &sp, S->out);
    if (s && !strcmp(o->progress, "bar")) fputc('\n', stderr);
    if (s) return cli_fail(PROG, "sampling", s);
    const double sample_s = cli_now_s() - t_sample;
    /* a sample that is one pixel value everywhere: the model produced no image */
    for (int i = 0; i < o->n; i++) {
        long v;
        if (cli_one_value(S->out + (size_t)i * m->per_sample, m->per_sample, 127.5, 127.5, 255, &v))
            fprintf(stderr,
                    "%s: warning: sample %d is one value everywhere (pixel %ld): the model's output holds no "
                    "image (untrained, broken or saturated model?)\n",
                    PROG, i, v);
    }

    /* the recipe and the PNGs */
    cld_recipe r;
    memset(&r, 0, sizeof r);
    if (asset)
        snprintf(r.model, sizeof r.model, "%s%s", ASSET_PREFIX, asset);
    else
        snprintf(r.model, sizeof r.model, "%s", o->model);
    r.model_hash = m->hash;
    r.sampler = o->sampler;
    r.spacing = sp.opts.spacing;
    r.karras = sp.opts.karras;
    r.steps = o->steps;
    r.eta = sp.opts.eta;
    r.guidance = o->guidance;
    r.seed = o->seed;
    r.first_index = S->replaying ? S->rec.first_index : 0;
    r.n = o->n;
    r.n_classes = S->n_classes;
    memcpy(r.classes, S->classes, sizeof r.classes);
    r.batch = sp.batch;
    r.strength = o->strength;
    r.resample = o->resample;
    r.jump = o->jump;
    r.overrides = o->ov;
    if (o->init) {
        snprintf(r.init, sizeof r.init, "%s", o->init);
        cld_file_hash(o->init, &r.init_hash);
    }
    if (o->mask) {
        snprintf(r.mask, sizeof r.mask, "%s", o->mask);
        cld_file_hash(o->mask, &r.mask_hash);
    }
    if (o->noise) {
        snprintf(r.noise, sizeof r.noise, "%s", o->noise);
        cld_file_hash(o->noise, &r.noise_hash);
    }
    int cols = o->grid_cols                         ? o->grid_cols
               : S->n_classes && S->n_classes <= 16 ? S->n_classes
                                                    : (int)ceil(sqrt((double)o->n));
    int rc = 0, written = 0;
    char(*paths)[4200] = folder ? calloc((size_t)o->n, sizeof *paths) : NULL;
    if (folder && !paths) return cli_fail(PROG, "host memory", CLD_ERR_NOMEM);
    const int single = S->replaying && !strcmp(S->rec.layout, "single");
    for (int i = 0; i < (folder ? o->n : 1) && !rc; i++) {
        const float *src = S->out;
        int cnt = o->n, cc = cols, pad = 2;
        if (folder || single) {
            src = S->out + (size_t)i * m->per_sample;
            cnt = 1, cc = 1, pad = 0;
            snprintf(r.layout, sizeof r.layout, "single");
            r.n = 1;
            r.first_index = (S->replaying ? S->rec.first_index : 0) + (uint32_t)i;
            r.n_classes = S->labels ? 1 : 0;
            if (S->labels) r.classes[0] = S->labels[i];
            r.grid_cols = 0;
        } else if (o->trajectory) {
            src = S->traj;
            cnt = o->n * sp.frames, cc = sp.frames;
            snprintf(r.layout, sizeof r.layout, "trajectory");
            r.frames = sp.frames;
            r.grid_cols = 0;
        } else {
            snprintf(r.layout, sizeof r.layout, "grid");
            r.grid_cols = o->grid_cols;
        }
        const char *path = o->out;
        if (folder) {
            char cls[64] = "";
            if (S->labels) {
                char w[CLD_MODEL_CLASS_NAME + 8];
                if (meta->n_class_names)
                    file_word(meta->class_names[S->labels[i]], w, sizeof w);
                else
                    snprintf(w, sizeof w, "class%d", S->labels[i]);
                snprintf(cls, sizeof cls, "-%s", w);
            }
            size_t L = strlen(o->out);
            snprintf(paths[i], sizeof paths[i], "%s%ssample-%05u%s-seed%llu.png", o->out,
                     o->out[L - 1] == '/' ? "" : "/", r.first_index, cls, (unsigned long long)o->seed);
            path = paths[i];
        }
        uint8_t *px = NULL;
        int w = 0, h = 0;
        char *json = NULL;
        s = cld_grid_pixels(src, cnt, C, SZ, cc, pad, &px, &w, &h);
        if (!s) s = cld_recipe_to_json(&r, meta, &json);
        if (s) rc = cli_fail(PROG, "output", s);
        if (!rc) rc = write_png(path, px, w, h, C, json);
        if (!rc) written++;
        free(px);
        free(json);
    }
    if (rc) { /* no partial output: remove what this run wrote */
        for (int i = 0; folder && i < written; i++) unlink(paths[i]);
        free(paths);
        return rc;
    }
    const int json_mode = !strcmp(o->progress, "json");
    for (int i = 0; i < (folder ? o->n : 1); i++)
        printf(json_mode ? "{\"out\": \"%s\"}\n" : "%s\n", folder ? paths[i] : o->out);
    free(paths);
    cld_compile_stats cs;
    cld_ctx_compile_stats(S->ctx, &cs);
    fprintf(stderr,
            "%s: %d samples in %.2f s of sampling; %.2f s in all; kernels: %d programs compiled, %d from the "
            "cache, %.2f s\n",
            PROG, o->n, sample_s, cli_now_s() - t_start, cs.programs_built, cs.programs_from_cache,
            cs.seconds);
    return 0;
}

int main(int argc, char **argv)
{
    state S;
    memset(&S, 0, sizeof S);
    int rc = parse_args(argc, argv, &S.o);
    if (rc) return rc;
    S.replaying = S.o.replay != NULL;
    rc = run(&S);
    cld_model_free(S.m);
    if (S.ctx) cld_ctx_free(S.ctx);
    free(S.init);
    free(S.mask);
    free(S.out);
    free(S.traj);
    free(S.noise);
    free(S.labels);
    return rc;
}
