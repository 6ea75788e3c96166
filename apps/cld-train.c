/* cld-train: train a diffusion UNet on IDX files or a folder of images.
 *
 * One step, top to bottom (train_step):
 *   batch of x_0 and labels from the loader thread (global sample indices)
 *   t, class dropout per sample from (seed, global index); x_t, target by
 *   cld_q_sample with noise keyed by the global index; loss weights
 *   zero grads, forward + backward, loss read back (NaN check)
 *   gradient norm (NaN check), clipping, AdamW with the scheduled rate, EMA
 * Everything random is a function of the seed and the step or global sample
 * index, and the state file holds weights, EMA, AdamW moments and the step,
 * so a resumed run continues bit for bit.
 *
 * Data parallel (`mpirun -np N cld-train ...`, apps/train/dist.h): --batch is
 * the global batch; rank r takes positions r*B/N .. (r+1)*B/N - 1 of each
 * global batch (the same global sample indices, so the same samples, t,
 * noise and labels as one process with the whole batch), runs forward and
 * backward on its shard, and the flat gradient buffer is all-reduced (mean)
 * before the norm, the clipping and AdamW, so every rank takes the same step.
 * Rank 0 alone writes checkpoints, the log, grids and progress.
 * Each rank's loader thread prepares the whole global batch and the rank
 * keeps its shard: N times the loading work (cheap for IDX and for decoded,
 * cached folder images, and on its own thread: no step waited for it in the
 * runs of bench/NOTES.md), because the library's loader steps by its own
 * batch; a stride there (batch = shard, step = global batch) would remove it. */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "dist.h"

static const char *PROG = "cld-train";

/* ----------------------------------------------------------- options */

typedef struct opts {
    /* data */
    const char *data, *labels, *val_data, *val_labels, *class_names;
    int crop, channels, hflip;
    /* model */
    const char *preset, *config_file;
    int base, res_blocks, groups, heads, local, mult[CLD_UNET_MAX_LEVELS], n_mult, attn[CLD_UNET_MAX_LEVELS],
        n_attn;
    double dropout;
    /* diffusion */
    cld_diffusion_config diff;
    double min_snr, cfg_drop;
    int t_max;         /* train on timesteps 0 .. t_max only (a denoiser's range); 0 = all */
    int noisy_levels;  /* x_t as an image file of this many levels holds it (256: 8-bit); 0 = off */
    int learn_sigma;   /* the model predicts its variance too (Improved DDPM), hybrid loss */
    double vlb_weight; /* lambda of L_simple + lambda L_vlb */
    /* optimiser */
    double lr, wd, clip, ema, beta1, beta2, adam_eps;
    int warmup, cosine, batch;
    long steps;
    uint64_t seed;
    /* run */
    const char *out, *device, *progress;
    const char *init; /* --init: start from this model's weights (fine-tuning, continuing a shipped model) */
    int resume, val_every, val_n, ckpt_every, keep, grid_every, log_every;
    long stop_after;          /* testing: stop (with a checkpoint) after this many steps of this process */
    int eval_nll, nll_stride; /* after training: the bound in bits/dim on eval_nll test images */
    double bucket_mb;         /* mpirun: gradient all-reduce in buckets of this many MiB (0: one) */
    int overlap;              /* mpirun: buckets start during the backward (1) or after it (0) */
    int val_n_all;            /* held-back samples there are */
} opts;

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: cld-train --data PATH --out DIR [options]\n"
        "\n"
        "Trains a diffusion UNet. Writes DIR/model.safetensors (EMA weights, all settings in its metadata,\n"
        "ready for cld-sample and cld-denoise), DIR/state-STEP.safetensors (full state for --resume),\n"
        "DIR/log.csv and DIR/grid-STEP.png.\n"
        "\n"
        "data:\n"
        "  --data PATH         IDX images (gzipped or not; labels beside it are found by name) or a folder\n"
        "                      of images (class = subfolder name)\n"
        "  --labels PATH       IDX labels (default: the -labels-idx1-ubyte file beside --data)\n"
        "  --val-data PATH     held-back IDX images or folder for the validation loss (default: the\n"
        "                      t10k files beside an IDX --data; else the validation loss is off)\n"
        "  --val-labels PATH\n"
        "  --class-names LIST  comma-separated names stored in the model (default: folder names)\n"
        "  --crop N            folder data: random N x N crops (default 64)\n"
        "  --channels 1|3      folder data: grey or RGB (default 3)\n"
        "  --hflip             random horizontal flips\n"
        "model (default preset fashion-mnist for 28x28 data):\n"
        "  --preset NAME       fashion-mnist, cifar10, small (base 32)\n"
        "  --config FILE       UNet config JSON (as stored in models)\n"
        "  --base N  --mult 1,2,2  --res-blocks N  --attn 7[,14]  --groups N  --heads N  --dropout P\n"
        "  --local             no normalisation and no attention: a net that runs in tiles on any\n"
        "                      image size with the same result (for cld-denoise)\n"
        "diffusion:\n"
        "  --schedule linear|cosine|scaled-linear (cosine)  --T N (1000)  --pred eps|v|x0 (v)\n"
        "  --min-snr G         Min-SNR-gamma loss weights (5; 0 = uniform)\n"
        "  --cfg-drop P        class label dropped with probability P, for guidance (0.1)\n"
        "  --t-max N           train on timesteps 0..N only (a denoiser's noise range; default all)\n"
        "  --noisy-8bit        the noisy input is an 8-bit image: x_t / a_t clipped to the data range and\n"
        "                      rounded to 256 levels, as a denoiser sees photos (target from that noise)\n"
        "  --learn-sigma       the model also predicts its variance (Improved DDPM, 2x output channels),\n"
        "                      trained with L_simple + lambda L_vlb; DDPM sampling uses it\n"
        "  --vlb-weight X      lambda of the hybrid loss (0.001)\n"
        "optimiser:\n"
        "  --steps N (20000)  --batch N (64)  --lr X (5e-4)  --warmup N (500)  --cosine (decay to 0)\n"
        "  --wd X (0)  --clip X (1.0; 0 = off)  --ema X (0.9995)  --seed N (0)\n"
        "run:\n"
        "  --out DIR           output folder (created)\n"
        "  --resume            continue from the newest DIR/state-*.safetensors (exactly)\n"
        "  --init MODEL        start from MODEL's weights (raw and EMA; its config and diffusion settings\n"
        "                      unless flags say otherwise; fresh optimiser moments, step 0, warmup again):\n"
        "                      fine-tuning, or continuing a shipped model whose training state is gone\n"
        "  --device SPEC       OpenCL device\n"
        "  --val-every N (500) --val-n N (1000) --ckpt-every N (500) --keep K (3) --grid-every N (2000)\n"
        "  --log-every N (50)  --progress bar|json|none (bar on a terminal, else none)\n"
        "  --eval-nll [N]      at the end (also of a finished --resume): the variational bound in bits/dim\n"
        "                      of the EMA weights on N test images (default 1000; --learn-sigma models),\n"
        "                      appended to DIR/nll.csv\n"
        "  --nll-stride K      evaluate every K-th timestep of the bound (an estimate, K times faster; 1)\n"
        "  --help, --version\n"
        "multi-device (mpirun -np N cld-train ..., a build with MPI):\n"
        "  each rank drives one device: --device A,B,.. the local rank's entry, else the node's GPUs by\n"
        "  local rank (a plain --device or CLD_DEVICE: that device for every rank); --batch is the global\n"
        "  batch (divisible by N); rank 0 writes all files; --resume works with any N\n"
        "  --allreduce-bucket MB  all-reduce the gradients in buckets of MB MiB in reverse layer order,\n"
        "                      pipelined (0: one all-reduce of the whole buffer; default 4)\n"
        "  --allreduce-overlap 0|1  1: each bucket's all-reduce starts as soon as the backward has\n"
        "                      finished its gradients, overlapping the rest (default); 0: after it\n"
        "\n"
        "SIGINT/SIGTERM write a checkpoint and stop. Exit status: 0 done, 1 failure, 2 usage error,\n"
        "130 interrupted (checkpoint written).\n");
}

static int parse_int_list(const char *s, int *dst, int max, int *n)
{
    int k = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 4096 || k == max) return 0;
        dst[k++] = (int)v;
        s = end;
        if (*s == ',')
            s++;
        else if (*s)
            return 0;
    }
    *n = k;
    return k > 0;
}

/* Set-by-flag markers, so a resumed run can tell a conflicting flag from a default. */
typedef struct setflags {
    int model;
    char first_model[32];
} setflags;

static void mark(char *dst, int *flag, const char *name)
{
    if (!*flag) snprintf(dst, 32, "%s", name);
    *flag = 1;
}

static int parse_args(int argc, char **argv, opts *o, setflags *sf)
{
    memset(o, 0, sizeof *o);
    memset(sf, 0, sizeof *sf);
    o->crop = 64;
    o->channels = 3;
    o->diff.schedule = CLD_SCHEDULE_COSINE;
    o->diff.T = 1000;
    o->diff.pred = CLD_PRED_V;
    o->min_snr = 5.0;
    o->vlb_weight = 0.001;
    o->nll_stride = 1;
    o->cfg_drop = 0.1;
    o->lr = 5e-4;
    o->clip = 1.0;
    o->ema = 0.9995;
    o->beta1 = 0.9;
    o->beta2 = 0.999;
    o->adam_eps = 1e-8;
    o->warmup = 500;
    o->batch = 64;
    o->steps = 20000;
    o->val_every = 500;
    o->val_n = 1000;
    o->ckpt_every = 500;
    o->keep = 3;
    o->grid_every = 2000;
    o->log_every = 50;
    o->overlap = 1;
    o->bucket_mb = 4; /* measured best of 0/1/4/16/64 on the 35.7M store (bench/NOTES.md) */
    o->base = o->res_blocks = o->groups = o->heads = -1;
    o->dropout = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int r;
        double d;
#define BAD(...) CLI_BAD(PROG, __VA_ARGS__)
        if (cli_help_version(a, PROG, usage)) {
            exit(0);
        } else if (!strcmp(a, "--hflip"))
            o->hflip = 1;
        else if (!strcmp(a, "--resume"))
            o->resume = 1;
        else if (!strcmp(a, "--cosine")) {
            o->cosine = 1;
        } else if (CLI_OPT("--data")) {
            if (r < 0) return 2;
            o->data = v;
        } else if (CLI_OPT("--labels")) {
            if (r < 0) return 2;
            o->labels = v;
        } else if (CLI_OPT("--val-data")) {
            if (r < 0) return 2;
            o->val_data = v;
        } else if (CLI_OPT("--val-labels")) {
            if (r < 0) return 2;
            o->val_labels = v;
        } else if (CLI_OPT("--class-names")) {
            if (r < 0) return 2;
            o->class_names = v;
        } else if (CLI_OPT("--crop")) {
            CLI_NUM(8, 4096);
            o->crop = (int)d;
        } else if (CLI_OPT("--channels")) {
            CLI_NUM(1, 3);
            if (d != 1 && d != 3) BAD("--channels: 1 or 3");
            o->channels = (int)d;
        } else if (CLI_OPT("--preset")) {
            if (r < 0) return 2;
            o->preset = v;
            mark(sf->first_model, &sf->model, a);
        } else if (CLI_OPT("--config")) {
            if (r < 0) return 2;
            o->config_file = v;
            mark(sf->first_model, &sf->model, a);
        } else if (CLI_OPT("--base")) {
            CLI_NUM(4, 4096);
            o->base = (int)d;
            mark(sf->first_model, &sf->model, a);
        } else if (CLI_OPT("--res-blocks")) {
            CLI_NUM(1, 16);
            o->res_blocks = (int)d;
            mark(sf->first_model, &sf->model, a);
        } else if (CLI_OPT("--groups")) {
            CLI_NUM(1, 1024);
            o->groups = (int)d;
            mark(sf->first_model, &sf->model, a);
        } else if (!strcmp(a, "--local")) {
            o->local = 1;
            mark(sf->first_model, &sf->model, a);
        } else if (!strcmp(a, "--learn-sigma")) {
            o->learn_sigma = 1;
            mark(sf->first_model, &sf->model, a);
        } else if (!strcmp(a, "--eval-nll")) {
            /* optional count */
            o->eval_nll = 1000;
            if (i + 1 < argc && argv[i + 1][0] != '-') {
                if (!cli_parse_num(argv[++i], 1, 1e7, &d))
                    BAD("--eval-nll: '%s' is not a number in [1, 1e7]", argv[i]);
                o->eval_nll = (int)d;
            }
        } else if (CLI_OPT("--nll-stride")) {
            CLI_NUM(1, 100000);
            o->nll_stride = (int)d;
        } else if (CLI_OPT("--vlb-weight")) {
            CLI_NUM(0, 1e6);
            o->vlb_weight = d;
        } else if (CLI_OPT("--heads")) {
            CLI_NUM(1, 64);
            o->heads = (int)d;
            mark(sf->first_model, &sf->model, a);
        } else if (CLI_OPT("--dropout")) {
            CLI_NUM(0, 0.9);
            o->dropout = d;
            mark(sf->first_model, &sf->model, a);
        } else if (CLI_OPT("--mult")) {
            if (r < 0) return 2;
            if (!parse_int_list(v, o->mult, CLD_UNET_MAX_LEVELS, &o->n_mult))
                BAD("--mult: '%s' is not a list like 1,2,2", v);
            mark(sf->first_model, &sf->model, a);
        } else if (CLI_OPT("--attn")) {
            if (r < 0) return 2;
            if (!strcmp(v, "none"))
                o->n_attn = 0, o->attn[0] = -1;
            else if (!parse_int_list(v, o->attn, CLD_UNET_MAX_LEVELS, &o->n_attn))
                BAD("--attn: '%s' is not a list of resolutions", v);
            if (!o->n_attn) o->n_attn = -1; /* explicit none */
            mark(sf->first_model, &sf->model, a);
        } else if (CLI_OPT("--schedule")) {
            if (r < 0) return 2;
            if (cld_schedule_parse(v, &o->diff.schedule) != CLD_OK) BAD("%s", cld_last_error());
        } else if (CLI_OPT("--T")) {
            CLI_NUM(2, 100000);
            o->diff.T = (int)d;
        } else if (CLI_OPT("--pred")) {
            if (r < 0) return 2;
            if (cld_pred_parse(v, &o->diff.pred) != CLD_OK) BAD("%s", cld_last_error());
        } else if (CLI_OPT("--min-snr")) {
            CLI_NUM(0, 1e6);
            o->min_snr = d;
        } else if (CLI_OPT("--cfg-drop")) {
            CLI_NUM(0, 1);
            o->cfg_drop = d;
        } else if (CLI_OPT("--t-max")) {
            CLI_NUM(1, 100000);
            o->t_max = (int)d;
        } else if (!strcmp(a, "--noisy-8bit")) {
            o->noisy_levels = 256;
        } else if (CLI_OPT("--steps")) {
            CLI_NUM(1, 1e12);
            o->steps = (long)d;
        } else if (CLI_OPT("--batch")) {
            CLI_NUM(1, 65536);
            o->batch = (int)d;
        } else if (CLI_OPT("--lr")) {
            CLI_NUM(0, 1);
            o->lr = d;
        } else if (CLI_OPT("--warmup")) {
            CLI_NUM(0, 1e9);
            o->warmup = (int)d;
        } else if (CLI_OPT("--wd")) {
            CLI_NUM(0, 10);
            o->wd = d;
        } else if (CLI_OPT("--clip")) {
            CLI_NUM(0, 1e9);
            o->clip = d;
        } else if (CLI_OPT("--ema")) {
            CLI_NUM(0, 1);
            o->ema = d;
        } else if (CLI_OPT("--seed")) {
            CLI_NUM(0, 9007199254740991.0);
            o->seed = (uint64_t)d;
        } else if (CLI_OPT("--out")) {
            if (r < 0) return 2;
            o->out = v;
        } else if (CLI_OPT("--init")) {
            if (r < 0) return 2;
            o->init = v;
        } else if (CLI_OPT("--device")) {
            if (r < 0) return 2;
            o->device = v;
        } else if (CLI_OPT("--progress")) {
            if (r < 0) return 2;
            if (strcmp(v, "bar") && strcmp(v, "json") && strcmp(v, "none"))
                BAD("--progress: bar, json or none, not '%s'", v);
            o->progress = v;
        } else if (CLI_OPT("--val-every")) {
            CLI_NUM(0, 1e9);
            o->val_every = (int)d;
        } else if (CLI_OPT("--val-n")) {
            CLI_NUM(1, 1e7);
            o->val_n = (int)d;
        } else if (CLI_OPT("--ckpt-every")) {
            CLI_NUM(1, 1e9);
            o->ckpt_every = (int)d;
        } else if (CLI_OPT("--keep")) {
            CLI_NUM(1, 1000);
            o->keep = (int)d;
        } else if (CLI_OPT("--grid-every")) {
            CLI_NUM(0, 1e9);
            o->grid_every = (int)d;
        } else if (CLI_OPT("--log-every")) {
            CLI_NUM(1, 1e9);
            o->log_every = (int)d;
        } else if (CLI_OPT("--allreduce-overlap")) {
            CLI_NUM(0, 1);
            o->overlap = (int)d;
        } else if (CLI_OPT("--allreduce-bucket")) {
            CLI_NUM(0, 65536);
            o->bucket_mb = d;
        } else if (CLI_OPT("--stop-after")) {
            CLI_NUM(1, 1e12);
            o->stop_after = (long)d;
        } else
            BAD("unknown option '%s' (see --help)", a);
    }
    if (!o->out) BAD("--out DIR is required");
    if (!o->data && !o->resume) BAD("--data PATH is required");
    if (o->init && o->resume) BAD("--init starts a new run, --resume continues one: give one of them");
    if (!o->progress) o->progress = isatty(2) ? "bar" : "none";
    return 0;
#undef BAD
}

/* ------------------------------------------------------------ helpers */

static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* "X/train-images-idx3-ubyte.gz" -> replace `from` by `to` in the file name. */
static int sibling(const char *path, const char *from, const char *to, char *dst, size_t cap)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *at = strstr(base, from);
    if (!at) return 0;
    snprintf(dst, cap, "%.*s%s%s", (int)(at - path), path, to, at + strlen(from));
    return 1;
}

static volatile sig_atomic_t g_signal = 0;
static void on_signal(int sig) { g_signal = sig; }

/* ------------------------------------------------------------- state */

typedef struct run {
    opts o;
    cld_ctx *ctx;
    cld_unet_config cfg;
    cld_model_meta meta;
    cld_schedule *sched;
    cld_dataset *ds, *val;
    cld_dataset_info info;
    cld_loader *loader;
    cld_params *p, *ema;
    cld_graph *g;
    cld_tensor *x_t, *t, *labels, *target, *weights, *loss;
    cld_tensor *x_0, *coefs; /* learned variance: the hybrid loss's inputs */
    float *hcoefs;           /* (batch, CLD_VLB_COEFS) */
    cl_mem x0;               /* (batch, C, H, W) staging on the device */
    size_t per;
    float *hx, *hbuf;
    int *hlab, *hti;
    long step; /* completed steps */
    FILE *csv;
    double img_s, loss_ema;
    /* validation */
    cld_unet_runner *vrun_raw, *vrun_ema;
    int vb;
    /* seconds summed over this process's steps: data and inputs, UNet forward + backward
     * (zero_grad, run, loss read back), optimizer (norm, clipping, AdamW, EMA, to the finish) */
    double t_data, t_unet, t_optim, t_comm;
    /* data parallel */
    dist D;
    int lb;       /* this rank's share of the global batch */
    int stop_all; /* a signal reached some rank: all stop after this step */
    int agreed;   /* the ranks stop together (no MPI_Abort needed) */
} run;

static int fail(const char *what, cld_status s) { return cli_fail(PROG, what, s); }
static int dist_fail(run *R)
{
    fprintf(stderr, "%s: %s\n", PROG, R->D.err);
    return 1;
}
static int stop_requested(const run *R) { return R->D.size > 1 ? R->stop_all : g_signal != 0; }

/* The UNet config from the options: defaults from `resumed` (the state's
 * model) when given, else from --config or the preset. */
static int build_config(run *R, const cld_unet_config *resumed)
{
    opts *o = &R->o;
    cld_unet_config c;
    const char *preset = o->preset;
    if (resumed && !o->config_file && !preset) {
        c = *resumed;
    } else if (o->config_file) {
        FILE *f = fopen(o->config_file, "rb");
        if (!f) {
            fprintf(stderr, "%s: --config: cannot open '%s': %s\n", PROG, o->config_file, strerror(errno));
            return 1;
        }
        char buf[8192];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        cld_status s = cld_unet_config_from_json(buf, &c);
        if (s) return fail("--config", s);
    } else {
        if (!preset)
            preset = R->info.height == 28 ? "fashion-mnist" : R->info.height == 32 ? "cifar10" : "small";
        int small = !strcmp(preset, "small");
        cld_status s = cld_unet_config_preset(small ? "fashion-mnist" : preset, &c);
        if (s) return fail("--preset", s);
        if (small) c.base_channels = 32, c.norm_groups = 16, c.dropout = 0.0f;
        c.in_channels = c.out_channels = R->info.channels;
        c.image_size = R->info.height;
    }
    if (o->base > 0) c.base_channels = o->base;
    if (o->res_blocks > 0) c.num_res_blocks = o->res_blocks;
    if (o->groups > 0) c.norm_groups = o->groups;
    if (o->heads > 0) c.heads = o->heads;
    if (o->dropout >= 0) c.dropout = (float)o->dropout;
    if (o->n_mult) {
        c.n_levels = o->n_mult;
        memcpy(c.mult, o->mult, sizeof c.mult);
    }
    if (o->n_attn) {
        c.n_attn = o->n_attn < 0 ? 0 : o->n_attn;
        memcpy(c.attn_res, o->attn, sizeof c.attn_res);
    }
    if (o->local) c.norm_groups = 0, c.n_attn = 0, c.no_mid_attn = 1;
    if (o->learn_sigma) c.out_channels = 2 * c.in_channels;
    if (!resumed) c.num_classes = R->info.num_classes > 1 ? R->info.num_classes : 0;
    if (!resumed && (c.in_channels != R->info.channels || c.image_size != R->info.height ||
                     R->info.height != R->info.width)) {
        fprintf(stderr, "%s: the model takes %d x %d x %d, the data is %d x %d x %d\n", PROG, c.in_channels,
                c.image_size, c.image_size, R->info.channels, R->info.height, R->info.width);
        return 1;
    }
    cld_status s = cld_unet_config_check(&c);
    if (s) return fail("model config", s);
    R->cfg = c;
    return 0;
}

/* Options that must match a resumed state (a conflicting flag is an error). */
static char *train_json(const opts *o)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "batch", o->batch);
    cJSON_AddNumberToObject(j, "lr", o->lr);
    cJSON_AddNumberToObject(j, "warmup", o->warmup);
    cJSON_AddBoolToObject(j, "cosine", o->cosine);
    cJSON_AddNumberToObject(j, "wd", o->wd);
    cJSON_AddNumberToObject(j, "clip", o->clip);
    cJSON_AddNumberToObject(j, "ema", o->ema);
    cJSON_AddNumberToObject(j, "seed", (double)o->seed);
    cJSON_AddNumberToObject(j, "min_snr", o->min_snr);
    cJSON_AddNumberToObject(j, "cfg_drop", o->cfg_drop);
    if (o->t_max) cJSON_AddNumberToObject(j, "t_max", o->t_max);
    if (o->noisy_levels) cJSON_AddNumberToObject(j, "noisy_levels", o->noisy_levels);
    if (o->diff.learned_variance) cJSON_AddNumberToObject(j, "vlb_weight", o->vlb_weight);
    cJSON_AddBoolToObject(j, "hflip", o->hflip);
    cJSON_AddNumberToObject(j, "crop", o->crop);
    cJSON_AddNumberToObject(j, "steps", (double)o->steps);
    char *t = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return t;
}

static int train_from_json(const char *text, opts *o)
{
    cJSON *j = cJSON_Parse(text);
    if (!j) return 0;
    const char *k[] = {"batch", "lr",      "warmup",   "wd",   "clip", "ema",
                       "seed",  "min_snr", "cfg_drop", "crop", "steps"};
    double v[11];
    for (int i = 0; i < 11; i++) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, k[i]);
        if (!cJSON_IsNumber(e)) {
            cJSON_Delete(j);
            return 0;
        }
        v[i] = e->valuedouble;
    }
    o->batch = (int)v[0], o->lr = v[1], o->warmup = (int)v[2], o->wd = v[3], o->clip = v[4], o->ema = v[5];
    o->seed = (uint64_t)v[6], o->min_snr = v[7], o->cfg_drop = v[8], o->crop = (int)v[9];
    if (o->steps <= 0) o->steps = (long)v[10];
    o->cosine = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "cosine"));
    const cJSON *tm = cJSON_GetObjectItemCaseSensitive(j, "t_max");
    o->t_max = cJSON_IsNumber(tm) ? (int)tm->valuedouble : 0;
    const cJSON *nl = cJSON_GetObjectItemCaseSensitive(j, "noisy_levels");
    o->noisy_levels = cJSON_IsNumber(nl) ? (int)nl->valuedouble : 0;
    const cJSON *vw = cJSON_GetObjectItemCaseSensitive(j, "vlb_weight");
    if (cJSON_IsNumber(vw)) o->vlb_weight = vw->valuedouble;
    o->hflip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "hflip"));
    cJSON_Delete(j);
    return 1;
}

static char *metadata(run *R, long step)
{
    char *mj = NULL;
    if (cld_model_meta_to_json(&R->meta, &mj) != CLD_OK) return NULL;
    cJSON *root = cJSON_Parse(mj);
    free(mj);
    char *tj = train_json(&R->o), num[32];
    cJSON_AddStringToObject(root, "cld.train", tj);
    cJSON_free(tj);
    snprintf(num, sizeof num, "%ld", step);
    cJSON_AddStringToObject(root, "cld.step", num);
    snprintf(num, sizeof num, "%llu", (unsigned long long)step * (unsigned long long)R->o.batch);
    cJSON_AddStringToObject(root, "cld.images_seen", num);
    snprintf(num, sizeof num, "%d", R->D.size);
    cJSON_AddStringToObject(root, "cld.ranks", num);
    cJSON_AddStringToObject(root, "cld.engine", CLD_VERSION_STRING);
    char *t = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return t;
}

/* Newest DIR/state-NNNNNNNNN.safetensors (step), or -1. */
static long newest_state(const char *dir, long *all, int *n_all, int cap)
{
    DIR *d = opendir(dir);
    long best = -1;
    int n = 0;
    if (!d) return -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        long s;
        char tail[32];
        if (sscanf(e->d_name, "state-%ld.%31s", &s, tail) == 2 && !strcmp(tail, "safetensors")) {
            if (s > best) best = s;
            if (all && n < cap) all[n++] = s;
        }
    }
    closedir(d);
    if (n_all) *n_all = n;
    return best;
}

/* DIR/model.safetensors: the EMA weights at R->step. */
static int save_model(run *R)
{
    char path[4096], *meta = metadata(R, R->step);
    if (!meta) return fail("checkpoint metadata", CLD_ERR_NOMEM);
    snprintf(path, sizeof path, "%s/model.safetensors", R->o.out);
    cld_status s = cld_params_save(R->ema, path, meta);
    cJSON_free(meta);
    return s ? fail("writing the model file", s) : 0;
}

static int save_checkpoint(run *R)
{
    char path[4096], *meta = metadata(R, R->step);
    if (!meta) return fail("checkpoint metadata", CLD_ERR_NOMEM);
    snprintf(path, sizeof path, "%s/state-%09ld.safetensors", R->o.out, R->step);
    cld_status s = cld_params_save_state(R->p, R->ema, path, meta);
    if (s == CLD_OK) {
        snprintf(path, sizeof path, "%s/model.safetensors", R->o.out);
        s = cld_params_save(R->ema, path, meta);
    }
    cJSON_free(meta);
    if (s) return fail("writing a checkpoint", s);
    /* keep the newest K states */
    long all[4096];
    int n = 0;
    newest_state(R->o.out, all, &n, 4096);
    for (;;) {
        int older = 0;
        long oldest = -1;
        for (int i = 0; i < n; i++)
            if (all[i] >= 0) {
                older++;
                if (oldest < 0 || all[i] < oldest) oldest = all[i];
            }
        if (older <= R->o.keep) break;
        snprintf(path, sizeof path, "%s/state-%09ld.safetensors", R->o.out, oldest);
        unlink(path);
        for (int i = 0; i < n; i++)
            if (all[i] == oldest) all[i] = -1;
    }
    return 0;
}

/* Every rank at a checkpoint step: the ranks' weights must be identical
 * (checked by a hash, so a silent divergence cannot go unnoticed); rank 0
 * writes the files. */
static int checkpoint(run *R)
{
    if (R->D.size > 1) {
        int same = 1;
        if (dist_weights_agree(&R->D, R->ctx, R->p, &same)) return dist_fail(R);
        if (!same) {
            if (!R->D.rank)
                fprintf(stderr,
                        "%s: step %ld: the ranks' weights differ (every rank must take the same step); "
                        "stopping (the last checkpoint is kept)\n",
                        PROG, R->step);
            R->agreed = 1;
            return 1;
        }
    }
    return R->D.rank ? 0 : save_checkpoint(R);
}

/* ---------------------------------------------------------- training */

static double lr_at(const opts *o, long step)
{
    double lr = o->lr;
    if (o->warmup > 0 && step < o->warmup) return lr * (double)(step + 1) / o->warmup;
    if (o->cosine) {
        double p = (double)(step - o->warmup) / (double)(o->steps - o->warmup > 0 ? o->steps - o->warmup : 1);
        if (p > 1) p = 1;
        lr *= 0.5 * (1 + cos(3.14159265358979323846 * p));
    }
    return lr;
}

static int build_train_graph(run *R)
{
    const int B = R->lb, S = R->cfg.image_size;
    int xs[4] = {B, R->cfg.in_channels, S, S}, ts[1] = {B};
    cld_plan_stats st;
    cld_tensor *pred = NULL;
    cld_status s = cld_graph_create(R->ctx, R->p, &R->g);
    if (!s) s = cld_graph_input(R->g, "x_t", 4, xs, 0, &R->x_t);
    if (!s) s = cld_graph_input(R->g, "t", 1, ts, 0, &R->t);
    if (!s && R->cfg.num_classes) s = cld_graph_input(R->g, "labels", 1, ts, 0, &R->labels);
    if (!s) s = cld_unet_build(R->g, &R->cfg, R->x_t, R->t, R->labels, &pred);
    cld_tensor *out = pred;
    const int learned = R->o.diff.learned_variance;
    if (!s && learned) s = cld_op_slice_channels(R->g, out, 0, R->cfg.in_channels, &pred);
    if (!s) s = cld_graph_input(R->g, "target", 4, xs, 0, &R->target);
    if (!s) s = cld_graph_input(R->g, "weights", 1, ts, 0, &R->weights);
    if (!s) s = cld_op_mse_loss(R->g, pred, R->target, R->weights, &R->loss);
    if (!s && learned) {
        /* L_simple + lambda L_vlb, L_vlb = T * (the batch's mean term), as Improved DDPM; the
         * vlb op's gradient reaches only the variance half */
        int cs[2] = {B, CLD_VLB_COEFS};
        cld_tensor *vlb, *scaled, *mse = R->loss;
        s = cld_graph_input(R->g, "x_0", 4, xs, 0, &R->x_0);
        if (!s) s = cld_graph_input(R->g, "vlb_coefs", 2, cs, 0, &R->coefs);
        if (!s) s = cld_op_vlb_loss(R->g, out, R->x_t, R->x_0, R->coefs, &vlb);
        if (!s) s = cld_op_scale(R->g, vlb, (float)(R->o.vlb_weight * R->o.diff.T), &scaled);
        if (!s) s = cld_op_add(R->g, mse, scaled, &R->loss);
    }
    if (!s) s = cld_graph_set_output(R->g, R->loss);
    if (!s) s = cld_graph_backward(R->g, R->loss);
    if (!s) s = cld_graph_plan(R->g, &st);
    if (s) return fail("building the training graph", s);
    int pchunks = 1;
    cld_params_layout(R->p, &pchunks, NULL, NULL);
    if (!R->D.rank)
        fprintf(
            stderr,
            "training graph: batch %d, arena %.1f MiB in %d buffer%s, parameters %.1f MiB in %d buffer%s (x4 "
            "with grads and moments)\n",
            B, st.peak_bytes / 1048576.0, st.n_arena_chunks, st.n_arena_chunks == 1 ? "" : "s",
            st.param_bytes / 1048576.0, pchunks, pchunks == 1 ? "" : "s");
    return 0;
}

/* Per-sample timestep and class dropout, from (seed, global index). */
static void draws(const run *R, uint64_t g, int *t, int *drop)
{
    uint64_t h = mix64(mix64(R->o.seed ^ 0x7469D5EBull) + g);
    *t = (int)((h >> 11) % (uint64_t)(R->o.t_max ? R->o.t_max + 1 : R->o.diff.T));
    *drop = (double)(mix64(h) >> 11) * 0x1.0p-53 < R->o.cfg_drop;
}

/* One step. Returns 0, or an exit code (the message printed). */
static int train_step(run *R, double *loss_out, double *gnorm_out)
{
    /* this rank's shard: positions r0 .. r0 + B - 1 of the global batch,
     * which the loader alone prepares (global indices g0 ..), so samples,
     * timesteps, labels and noise are those of the same positions in one process */
    const int B = R->lb;
    uint64_t g0;
    const double t0 = cli_now_s();
    cld_status s = cld_loader_next(R->loader, R->hx, R->hlab, &g0);
    if (s) return fail("loading data", s);
    float *const hx = R->hx;
    int *const hlab = R->hlab;
    for (int b = 0; b < B; b++) {
        int drop;
        draws(R, g0 + (uint64_t)b, &R->hti[b], &drop);
        if (drop || !R->cfg.num_classes) hlab[b] = R->cfg.num_classes;
    }
    cl_mem xb, tb;
    size_t xo, to;
    cld_noise_key key = {R->o.seed, CLD_NOISE_STREAM_TRAIN, (uint32_t)g0, (uint32_t)(g0 >> 32)};
    s = cld_buffer_write(R->ctx, R->x0, 0, (size_t)B * R->per * sizeof(float), hx);
    if (!s) s = cld_tensor_buffer(R->x_t, &xb, &xo);
    if (!s) s = cld_tensor_buffer(R->target, &tb, &to);
    if (!s)
        s = cld_q_sample(R->ctx, R->sched, B, R->per, R->hti, R->x0, 0, &key, xb, xo, R->o.diff.pred, tb, to);
    if (!s && R->o.noisy_levels)
        s = cld_q_quantize(R->ctx, R->sched, B, R->per, R->hti, R->o.noisy_levels, R->x0, 0, xb, xo,
                           R->o.diff.pred, tb, to);
    for (int b = 0; b < B; b++) R->hbuf[b] = (float)R->hti[b];
    if (!s) s = cld_tensor_write(R->g, R->t, R->hbuf);
    if (!s && R->labels) {
        for (int b = 0; b < B; b++) R->hbuf[b] = (float)hlab[b];
        s = cld_tensor_write(R->g, R->labels, R->hbuf);
    }
    for (int b = 0; b < B && !s; b++) {
        double w = 1.0;
        if (R->o.min_snr > 0)
            s = cld_loss_weight(R->sched, R->hti[b], R->o.diff.pred, CLD_LOSS_MIN_SNR, R->o.min_snr, &w);
        R->hbuf[b] = (float)w;
    }
    if (!s) s = cld_tensor_write(R->g, R->weights, R->hbuf);
    if (!s && R->x_0) s = cld_tensor_write(R->g, R->x_0, hx);
    if (!s && R->coefs) s = cld_vlb_coefs(R->sched, R->o.diff.pred, B, R->hti, R->hcoefs);
    if (!s && R->coefs) s = cld_tensor_write(R->g, R->coefs, R->hcoefs);
    if (!s) s = cld_ctx_finish(R->ctx);
    const double t1 = cli_now_s();
    if (!s) s = cld_params_zero_grad(R->p);
    /* dropout: rank 0 keeps the one-process seed, the others their own (the
     * masks are a function of the seed and the position in the local batch) */
    uint64_t gseed = mix64(R->o.seed + 0x5151ull * (uint64_t)(R->step + 1));
    if (R->D.rank) gseed = mix64(gseed ^ (0xD157D157ull * (uint64_t)R->D.rank));
    if (!s) s = cld_graph_set_seed(R->g, gseed);
    if (!s && dist_step_begin(&R->D, R->ctx, R->p, R->g)) return dist_fail(R);
    if (!s) s = cld_graph_run(R->g);
    if (s && R->D.hook_failed) return dist_fail(R);
    /* several ranks: the gradients' all-reduce first, overlapping the backward
     * (reading the loss would wait for the whole graph on the in-order queue) */
    double t_ar = cli_now_s();
    if (!s && R->D.size > 1 && dist_allreduce_grads(&R->D, R->ctx, R->p)) return dist_fail(R);
    t_ar = cli_now_s() - t_ar;
    float lossf = 0;
    if (!s) s = cld_tensor_read(R->g, R->loss, &lossf);
    double loss = lossf;
    const double t2 = cli_now_s();
    if (s) return fail("training step", s);
    if (R->D.size > 1) {
        /* the global batch's mean loss on every rank, and the stop decision
         * (a signal on any rank) shared: all stop at one step */
        double v[2] = {loss, g_signal ? 1.0 : 0.0};
        if (dist_sum(&R->D, v, 2)) return dist_fail(R);
        loss = v[0] / R->D.size;
        R->stop_all = v[1] > 0;
    }
    const double t3 = cli_now_s();
    if (!isfinite(loss)) {
        /* the step ran forward and backward: name the first tensor that went bad */
        int bad = -1, grads = 0;
        const char *name = NULL;
        if (cld_params_find_nonfinite(R->p, 0, &bad) == CLD_OK && bad < 0 &&
            cld_params_find_nonfinite(R->p, 1, &bad) == CLD_OK && bad >= 0)
            grads = 1;
        if (bad >= 0) cld_params_info(R->p, bad, &name, NULL, NULL, NULL);
        if (!R->D.rank)
            fprintf(stderr, "%s: step %ld: the loss is %g (%s%s%s); stopping (the last checkpoint is kept)\n",
                    PROG, R->step + 1, loss,
                    name ? (grads ? "first non-finite gradient: '" : "first non-finite weight: '") : "",
                    name ? name : "weights and gradients are finite: the activations overflowed",
                    name ? "'" : "");
        R->agreed = 1; /* every rank sees the same global loss */
        return 1;
    }
    double gn = 0;
    s = cld_params_grad_norm(R->p, &gn);
    if (s) return fail("gradient norm", s);
    if (!isfinite(gn)) {
        int bad = -1;
        const char *name = "?";
        if (cld_params_find_nonfinite(R->p, 1, &bad) == CLD_OK && bad >= 0)
            cld_params_info(R->p, bad, &name, NULL, NULL, NULL);
        if (!R->D.rank)
            fprintf(
                stderr,
                "%s: step %ld: the gradient of '%s' holds NaN or Inf; stopping (the last checkpoint is kept)\n",
                PROG, R->step + 1, name);
        R->agreed = 1; /* the same reduced gradient on every rank */
        return 1;
    }
    if (R->o.clip > 0 && gn > R->o.clip) s = cld_params_grad_scale(R->p, (float)(R->o.clip / gn));
    if (!s)
        s = cld_params_adamw(R->p, (float)lr_at(&R->o, R->step), (float)R->o.beta1, (float)R->o.beta2,
                             (float)R->o.adam_eps, (float)R->o.wd, (int)(R->step + 1));
    double decay = R->o.ema, warm = (1.0 + (double)R->step) / (10.0 + (double)R->step);
    if (warm < decay) decay = warm;
    if (!s) s = cld_params_ema_update(R->ema, R->p, (float)decay);
    if (!s) s = cld_ctx_finish(R->ctx);
    if (s) return fail("optimizer step", s);
    R->t_data += t1 - t0;
    R->t_unet += t2 - t1 - t_ar;
    R->t_comm += t3 - t2 + t_ar;
    R->t_optim += cli_now_s() - t3;
    R->step++;
    *loss_out = loss;
    *gnorm_out = gn;
    return 0;
}

/* Validation: val_n held-back samples, timesteps spread evenly over [0, T),
 * noise from a fixed key: the same number for the same weights, whatever
 * the run's seed. Plain MSE on the model's prediction target. */
static int validate(run *R, cld_unet_runner *vr, double *out)
{
    const int V = R->o.val_n, VB = R->vb;
    const cld_noise_key key0 = {0x76616C6964ull, 2, 0, 0};
    double sum = 0;
    size_t count = 0;
    cl_mem x0 = NULL, xt = NULL, tg = NULL, pr = NULL;
    float *hx = malloc((size_t)VB * R->per * sizeof(float)),
          *ht = malloc((size_t)VB * R->per * sizeof(float)),
          *hp = malloc((size_t)VB * R->per * sizeof(float)), tf[4096];
    int ti[4096], lab[4096];
    cld_pred_half half = {R->ctx, cld_unet_runner_fn, vr, R->per};
    /* a learned-variance model: its prediction half */
    const cld_model_fn pred_fn = R->o.diff.learned_variance ? cld_pred_half_fn : cld_unet_runner_fn;
    void *pred_user = R->o.diff.learned_variance ? (void *)&half : (void *)vr;
    cld_status s = hx && ht && hp ? CLD_OK : CLD_ERR_NOMEM;
    const size_t bytes = (size_t)VB * R->per * sizeof(float);
    if (!s) s = cld_buffer_alloc(R->ctx, bytes, &x0);
    if (!s) s = cld_buffer_alloc(R->ctx, bytes, &xt);
    if (!s) s = cld_buffer_alloc(R->ctx, bytes, &tg);
    if (!s) s = cld_buffer_alloc(R->ctx, bytes, &pr);
    for (int i0 = 0; i0 < V && !s; i0 += VB) {
        int nb = V - i0 < VB ? V - i0 : VB;
        for (int b = 0; b < nb && !s; b++) {
            int idx = i0 + b;
            s = cld_dataset_get(R->val, idx, NULL, 0, 0, hx + (size_t)b * R->per, &lab[b]);
            ti[b] = (int)(((double)idx + 0.5) * (R->o.t_max ? R->o.t_max + 1 : R->o.diff.T) / V);
            tf[b] = (float)ti[b];
            if (!R->cfg.num_classes || lab[b] >= R->cfg.num_classes) lab[b] = R->cfg.num_classes;
        }
        cld_noise_key key = key0;
        key.index = (uint32_t)i0;
        if (!s) s = cld_buffer_write(R->ctx, x0, 0, (size_t)nb * R->per * sizeof(float), hx);
        if (!s) s = cld_q_sample(R->ctx, R->sched, nb, R->per, ti, x0, 0, &key, xt, 0, R->o.diff.pred, tg, 0);
        if (!s && R->o.noisy_levels)
            s = cld_q_quantize(R->ctx, R->sched, nb, R->per, ti, R->o.noisy_levels, x0, 0, xt, 0,
                               R->o.diff.pred, tg, 0);
        if (!s) s = pred_fn(pred_user, xt, 0, pr, 0, nb, tf, R->cfg.num_classes ? lab : NULL);
        if (!s) s = cld_buffer_read(R->ctx, tg, 0, (size_t)nb * R->per * sizeof(float), ht);
        if (!s) s = cld_buffer_read(R->ctx, pr, 0, (size_t)nb * R->per * sizeof(float), hp);
        for (size_t i = 0; !s && i < (size_t)nb * R->per; i++) {
            double d = (double)hp[i] - ht[i];
            sum += d * d;
        }
        count += (size_t)nb * R->per;
    }
    if (x0) cld_buffer_release(x0);
    if (xt) cld_buffer_release(xt);
    if (tg) cld_buffer_release(tg);
    if (pr) cld_buffer_release(pr);
    free(hx);
    free(ht);
    free(hp);
    if (s) return fail("validation", s);
    *out = sum / (double)count;
    return 0;
}

/* A grid of samples from the EMA weights: 4 rows, one column per class
 * (8 unconditional), fixed seed, DPM-Solver++(2M) 25 steps, guidance 2
 * (a learned-variance model: its prediction half). */
static int write_grid(run *R)
{
    const int nc = R->cfg.num_classes, cols = nc ? nc : 8, rows = 4, n = rows * cols, S = R->cfg.image_size,
              C = R->cfg.in_channels;
    int labels[CLD_MODEL_MAX_CLASSES * 4];
    for (int i = 0; i < n; i++) labels[i] = i % cols;
    cld_sample_spec sp;
    cld_sample_spec_default(&sp);
    sp.opts.steps = 25;
    sp.opts.pred = R->o.diff.pred;
    sp.opts.guidance = nc ? 2.0 : 1.0;
    sp.opts.null_label = nc;
    sp.n = sp.batch = n;
    sp.labels = nc ? labels : NULL;
    sp.seed = 1234;
    cld_unet_runner *gr = NULL;
    float *h = malloc((size_t)n * R->per * sizeof(float));
    uint8_t *px = NULL;
    int W = 0, H = 0;
    cld_status s = h ? CLD_OK : CLD_ERR_NOMEM;
    if (!s) s = cld_unet_runner_create(R->ctx, R->ema, &R->cfg, sp.opts.guidance != 1.0 ? 2 * n : n, &gr);
    cld_pred_half half = {R->ctx, cld_unet_runner_fn, gr, R->per};
    const int learned = R->o.diff.learned_variance;
    if (!s)
        s = cld_sample_with(R->ctx, R->sched, learned ? cld_pred_half_fn : cld_unet_runner_fn,
                            learned ? (void *)&half : (void *)gr, C, S, &sp, h);
    if (!s) s = cld_grid_pixels(h, n, C, S, cols, 2, &px, &W, &H);
    if (!s) {
        char path[4096], stepv[32];
        snprintf(path, sizeof path, "%s/grid-%09ld.png", R->o.out, R->step);
        snprintf(stepv, sizeof stepv, "%ld", R->step);
        const char *keys[] = {"Software", "cld.step"},
                   *vals[] = {"cldiffusion cld-train " CLD_VERSION_STRING, stepv};
        s = cld_png_write(path, W, H, C, 8, px, 2, keys, vals);
    }
    cld_unet_runner_free(gr);
    free(h);
    free(px);
    if (s) return fail("sample grid", s);
    return 0;
}

static void nll_progress(void *user, long done, long total)
{
    const run *R = user;
    if (!strcmp(R->o.progress, "json"))
        printf("{\"nll_pairs\": %ld, \"total\": %ld}\n", done, total), fflush(stdout);
    else if (!strcmp(R->o.progress, "bar"))
        fprintf(stderr, "\rbound: %ld/%ld (image, t) pairs ", done, total);
}

/* --eval-nll: the variational bound of the EMA weights in bits/dim on the
 * first N held-back images (their labels for a conditional model), mean
 * and standard error over the images, printed and appended to nll.csv. */
static int eval_nll(run *R)
{
    const int N = R->o.eval_nll < R->o.val_n_all ? R->o.eval_nll : R->o.val_n_all;
    float *hx = malloc((size_t)N * R->per * sizeof(float));
    int *lab = malloc((size_t)N * sizeof(int));
    double *bpd = malloc((size_t)N * sizeof(double));
    cl_mem x0 = NULL;
    cld_status s = hx && lab && bpd ? CLD_OK : CLD_ERR_NOMEM;
    for (int i = 0; i < N && !s; i++) {
        s = cld_dataset_get(R->val, i, NULL, 0, 0, hx + (size_t)i * R->per, &lab[i]);
        if (!R->cfg.num_classes || lab[i] >= R->cfg.num_classes) lab[i] = R->cfg.num_classes;
    }
    if (!s) s = cld_buffer_alloc(R->ctx, (size_t)N * R->per * sizeof(float), &x0);
    if (!s) s = cld_buffer_write(R->ctx, x0, 0, (size_t)N * R->per * sizeof(float), hx);
    cld_vlb_job job = {0};
    job.n = N;
    job.per_sample = R->per;
    job.x0 = x0;
    job.labels = R->cfg.num_classes ? lab : NULL;
    job.pred = R->o.diff.pred;
    job.clip_denoised = 1;
    job.t_stride = R->o.nll_stride;
    job.max_batch = R->vb;
    job.seed = 0x6E6C6Cull; /* fixed: the number depends on the weights only */
    job.model = cld_unet_runner_fn;
    job.model_user = R->vrun_ema;
    job.progress = nll_progress;
    job.progress_user = R;
    job.bpd = bpd;
    const double t0 = cli_now_s();
    if (!s) s = cld_vlb_bound(R->ctx, R->sched, &job);
    if (x0) cld_buffer_release(x0);
    free(hx);
    free(lab);
    if (!strcmp(R->o.progress, "bar")) fputc('\n', stderr);
    if (s) {
        free(bpd);
        return fail("--eval-nll", s);
    }
    double mean = 0, var = 0;
    for (int i = 0; i < N; i++) mean += bpd[i] / N;
    for (int i = 0; i < N; i++) var += (bpd[i] - mean) * (bpd[i] - mean) / (N > 1 ? N - 1 : 1);
    free(bpd);
    const double se = sqrt(var / N);
    fprintf(stderr,
            "step %ld: variational bound %.4f +- %.4f bits/dim (EMA weights, %d test images, t stride %d, "
            "%.1f s)\n",
            R->step, mean, se, N, R->o.nll_stride, cli_now_s() - t0);
    if (!strcmp(R->o.progress, "json"))
        printf("{\"step\": %ld, \"nll_bpd\": %.6f, \"nll_se\": %.6f, \"images\": %d, \"t_stride\": %d}\n",
               R->step, mean, se, N, R->o.nll_stride);
    char path[4096];
    snprintf(path, sizeof path, "%s/nll.csv", R->o.out);
    const int fresh = !cli_is_file(path);
    FILE *f = fopen(path, "a");
    if (!f) {
        fprintf(stderr, "%s: cannot write '%s': %s\n", PROG, path, strerror(errno));
        return 1;
    }
    if (fresh) fprintf(f, "step,images,t_stride,bpd,standard_error\n");
    fprintf(f, "%ld,%d,%d,%.6f,%.6f\n", R->step, N, R->o.nll_stride, mean, se);
    fclose(f);
    return 0;
}

static void progress(run *R, double loss, double t_start, long step0)
{
    const double el = cli_now_s() - t_start, rate = (R->step - step0) / (el > 0 ? el : 1);
    const double eta = rate > 0 ? (R->o.steps - R->step) / rate : 0;
    if (!strcmp(R->o.progress, "json")) {
        printf(
            "{\"step\": %ld, \"total\": %ld, \"loss\": %.6g, \"images_per_s\": %.2f, \"elapsed\": %.3f, \"eta\": %.1f}\n",
            R->step, R->o.steps, loss, R->img_s, el, eta);
        fflush(stdout);
    } else if (!strcmp(R->o.progress, "bar")) {
        int w = 30, fill = (int)(w * (double)R->step / R->o.steps);
        char bar[64];
        for (int i = 0; i < w; i++) bar[i] = i < fill ? '#' : '.';
        bar[w] = 0;
        fprintf(stderr, "\rstep %ld/%ld [%s] loss %.4f  %.1f img/s  ETA %02d:%02d:%02d ", R->step, R->o.steps,
                bar, R->loss_ema, R->img_s, (int)(eta / 3600), (int)(eta / 60) % 60, (int)eta % 60);
    }
}

static int open_data(run *R)
{
    opts *o = &R->o;
    /* static: o keeps pointers to the found validation files for the whole run */
    static char vimg[4096], vlab[4096];
    char lab[4096];
    cld_status s;
    if (cli_is_dir(o->data)) {
        s = cld_dataset_open_folder(o->data, o->channels, o->crop, &R->ds);
        if (s) return fail("--data", s);
    } else {
        const char *labels = o->labels;
        if (!labels && (sibling(o->data, "images-idx3", "labels-idx1", lab, sizeof lab) && cli_is_file(lab)))
            labels = lab;
        s = cld_dataset_open_idx(o->data, labels, &R->ds);
        if (s) return fail("--data", s);
        if (!o->val_data && sibling(o->data, "train-", "t10k-", vimg, sizeof vimg) && cli_is_file(vimg)) {
            o->val_data = vimg;
            if (!o->val_labels && sibling(vimg, "images-idx3", "labels-idx1", vlab, sizeof vlab) &&
                cli_is_file(vlab))
                o->val_labels = vlab;
        }
    }
    cld_dataset_get_info(R->ds, &R->info);
    if (o->val_data) {
        cld_dataset_info vi;
        s = cli_is_dir(o->val_data) ? cld_dataset_open_folder(o->val_data, o->channels, o->crop, &R->val)
                                    : cld_dataset_open_idx(o->val_data, o->val_labels, &R->val);
        if (s) return fail("--val-data", s);
        cld_dataset_get_info(R->val, &vi);
        if (vi.channels != R->info.channels || vi.height != R->info.height || vi.width != R->info.width) {
            fprintf(stderr, "%s: --val-data: samples are %dx%dx%d, the training data's %dx%dx%d\n", PROG,
                    vi.channels, vi.height, vi.width, R->info.channels, R->info.height, R->info.width);
            return 1;
        }
        if (o->val_n > vi.n) o->val_n = vi.n;
        o->val_n_all = vi.n;
    }
    /* class names */
    memset(&R->meta, 0, sizeof R->meta);
    if (o->class_names) {
        const char *c = o->class_names;
        int k = 0;
        while (*c && k < CLD_MODEL_MAX_CLASSES) {
            const char *e = strchr(c, ',');
            size_t l = e ? (size_t)(e - c) : strlen(c);
            if (l == 0 || l >= CLD_MODEL_CLASS_NAME) {
                fprintf(stderr, "%s: --class-names: empty or too long name in '%s'\n", PROG, o->class_names);
                return 2;
            }
            memcpy(R->meta.class_names[k], c, l);
            R->meta.class_names[k++][l] = 0;
            c = e ? e + 1 : c + l;
        }
        if (k != R->info.num_classes) {
            fprintf(stderr, "%s: --class-names gives %d names, the data has %d classes\n", PROG, k,
                    R->info.num_classes);
            return 2;
        }
        R->meta.n_class_names = k;
    } else if (R->info.num_classes > 1) {
        for (int k = 0; k < R->info.num_classes; k++) {
            const char *nm = NULL;
            cld_dataset_class_name(R->ds, k, &nm);
            snprintf(R->meta.class_names[k], CLD_MODEL_CLASS_NAME, "%s", nm ? nm : "");
            if (!nm) snprintf(R->meta.class_names[k], CLD_MODEL_CLASS_NAME, "%d", k);
        }
        R->meta.n_class_names = R->info.num_classes;
    }
    return 0;
}

/* Can we write into the output folder? (Checked before any compute.) */
static int check_out(const char *dir)
{
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "%s: --out: cannot create '%s': %s\n", PROG, dir, strerror(errno));
        return 1;
    }
    int e = cli_dir_writable(dir);
    if (e) fprintf(stderr, "%s: --out: cannot write into '%s': %s\n", PROG, dir, strerror(e));
    return e != 0;
}

/* Data parallel: this rank's device spec into spec (empty: o->device as
 * given). A list "A,B,.." gives the local rank's entry (modulo its length);
 * with no --device and no CLD_DEVICE, the node's GPUs go to the local ranks
 * in turn; a single spec (or CLD_DEVICE) is every rank's. */
static int rank_device(run *R, char *spec, size_t cap)
{
    const opts *o = &R->o;
    spec[0] = 0;
    if (o->device && strchr(o->device, ',')) {
        int n = 1;
        for (const char *c = o->device; *c; c++) n += *c == ',';
        int want = R->D.local_rank % n;
        const char *c = o->device;
        for (int k = 0; k < want; k++) c = strchr(c, ',') + 1;
        size_t len = strcspn(c, ",");
        if (!len || len >= cap) {
            fprintf(stderr, "%s: --device: empty or too long entry %d in '%s'\n", PROG, want, o->device);
            return 2;
        }
        memcpy(spec, c, len);
        spec[len] = 0;
        return 0;
    }
    const char *env = getenv("CLD_DEVICE");
    if (o->device || (env && *env)) return 0;
    int n = 0, gpu[64], gpus = 0;
    if (cld_device_count(&n) != CLD_OK) return 0; /* cld_ctx_create reports it */
    for (int i = 0; i < n && gpus < 64; i++) {
        cld_device_info info;
        if (cld_device_info_get(i, &info) == CLD_OK && info.is_gpu) gpu[gpus++] = i;
    }
    if (gpus) snprintf(spec, cap, "%d", gpu[R->D.local_rank % gpus]);
    return 0; /* no GPU: the default device, shared by the node's ranks */
}

/* argv names `flag` (as "--flag V" or "--flag=V"). */
static int flag_given(int argc, char **argv, const char *flag)
{
    const size_t n = strlen(flag);
    for (int i = 1; i < argc; i++)
        if (!strncmp(argv[i], flag, n) && (argv[i][n] == '\0' || argv[i][n] == '=')) return 1;
    return 0;
}

/* The first flag given on the command line whose setting differs from the
 * one stored in a resumed state (st) or a model (diffusion only: st NULL):
 * the stored settings replace the defaults, so only a flag the user gave can
 * conflict. NULL if none. */
static const char *stored_conflict(const opts *st, const cld_diffusion_config *d, const opts *o, int argc,
                                   char **argv, const char **group)
{
    const struct {
        const char *flag;
        int differs;
    } c[] = {
        {"--schedule", d->schedule != o->diff.schedule},
        {"--T", d->T != o->diff.T},
        {"--pred", d->pred != o->diff.pred},
        {"--batch", st && st->batch != o->batch},
        {"--lr", st && st->lr != o->lr},
        {"--warmup", st && st->warmup != o->warmup},
        {"--wd", st && st->wd != o->wd},
        {"--clip", st && st->clip != o->clip},
        {"--ema", st && st->ema != o->ema},
        {"--seed", st && st->seed != o->seed},
        {"--cosine", st && st->cosine != o->cosine},
        {"--vlb-weight", st && st->vlb_weight != o->vlb_weight},
        {"--min-snr", st && st->min_snr != o->min_snr},
        {"--cfg-drop", st && st->cfg_drop != o->cfg_drop},
        {"--t-max", st && st->t_max != o->t_max},
        {"--noisy-8bit", st && st->noisy_levels != o->noisy_levels},
    };
    for (size_t k = 0; k < sizeof c / sizeof c[0]; k++)
        if (c[k].differs && flag_given(argc, argv, c[k].flag)) {
            *group = k < 3 ? "diffusion" : "training";
            return c[k].flag;
        }
    return NULL;
}

/* static: the run's state lives until exit, also on the early error returns
 * of train_main (the normal end frees it all); main ends the MPI job with it */
static run R;

static int train_main(int argc, char **argv)
{
    setflags sf;
    int rc = parse_args(argc, argv, &R.o, &sf);
    if (rc) return rc;
    opts *o = &R.o;
    if (dist_init(&R.D, &argc, &argv)) {
        fprintf(stderr, "%s: %s\n", PROG, R.D.err);
        return 1;
    }
    static char prog_rank[64];
    if (R.D.size > 1) {
        /* every message names its rank; only rank 0 shows progress */
        snprintf(prog_rank, sizeof prog_rank, "cld-train [rank %d/%d]", R.D.rank, R.D.size);
        PROG = prog_rank;
        if (R.D.rank) o->progress = "none";
        R.D.bucket_floats = (size_t)(o->bucket_mb * 1048576.0 / sizeof(float));
        R.D.overlap = o->overlap;
    }
    const double t_start = cli_now_s();
    o->diff.learned_variance = o->learn_sigma;
    char resume_path[4096] = "";
    cld_model_meta stored_meta;
    /* --resume reads the folder; a fresh run creates it only once data and config are known to be good */
    if (o->resume && !cli_is_dir(o->out)) {
        fprintf(stderr, "%s: --resume: no output folder '%s'\n", PROG, o->out);
        return 1;
    }
    if (o->resume) {
        /* the state's settings replace the defaults; a flag naming another value is an error */
        long st = newest_state(o->out, NULL, NULL, 0);
        if (st < 0) {
            fprintf(stderr, "%s: --resume: no state-*.safetensors in '%s'\n", PROG, o->out);
            return 1;
        }
        snprintf(resume_path, sizeof resume_path, "%s/state-%09ld.safetensors", o->out, st);
        R.step = st;
        char *mj = NULL;
        cld_status s = cld_safetensors_metadata(resume_path, &mj);
        if (!s) s = cld_model_meta_from_json(mj, &stored_meta);
        if (s) return fail("--resume", s);
        cJSON *root = cJSON_Parse(mj);
        const cJSON *tj = root ? cJSON_GetObjectItemCaseSensitive(root, "cld.train") : NULL;
        opts stored = *o;
        stored.steps = 0;
        int ok = cJSON_IsString(tj) && train_from_json(tj->valuestring, &stored);
        cJSON_Delete(root);
        free(mj);
        if (!ok) {
            fprintf(stderr, "%s: --resume: '%s' lacks its training settings (cld.train)\n", PROG,
                    resume_path);
            return 1;
        }
        const char *group, *differs = stored_conflict(&stored, &stored_meta.diffusion, o, argc, argv, &group);
        if (differs) {
            fprintf(stderr, "%s: --resume: %s does not match the %s settings of '%s'\n", PROG, differs, group,
                    resume_path);
            return 1;
        }
        const cld_diffusion_config *d = &stored_meta.diffusion;
        long steps = o->steps;
        int crop = o->crop, explicit_steps = 0, explicit_crop = 0;
        for (int i = 1; i < argc; i++) {
            explicit_steps |= !strncmp(argv[i], "--steps", 7);
            explicit_crop |=
                !strncmp(argv[i], "--crop", 6); /* the data's; the model check below catches a misfit */
        }
        *o = stored;
        if (explicit_steps) o->steps = steps;
        if (explicit_crop) o->crop = crop;
        o->diff = *d;
        o->learn_sigma |=
            d->learned_variance; /* the state's model; a conflicting --learn-sigma fails below */
    }
    if (o->init) {
        /* the model's config and diffusion settings are the defaults; its weights are loaded below */
        char *mj = NULL;
        cld_status s = cld_safetensors_metadata(o->init, &mj);
        if (!s) s = cld_model_meta_from_json(mj, &stored_meta);
        free(mj);
        if (s) return fail("--init", s);
        const cld_diffusion_config *d = &stored_meta.diffusion;
        const char *group, *differs = stored_conflict(NULL, d, o, argc, argv, &group);
        if (differs) {
            fprintf(stderr, "%s: --init: %s does not match the %s settings of '%s'\n", PROG, differs, group,
                    o->init);
            return 1;
        }
        o->diff = *d;
        o->learn_sigma |= d->learned_variance;
        snprintf(resume_path, sizeof resume_path, "%s", o->init);
    }
    const int from_model = o->resume || o->init; /* the model comes from resume_path */
    if (!o->data) {
        fprintf(stderr, "%s: --data PATH is required (also with --resume)\n", PROG);
        return 2;
    }
    if (o->batch % R.D.size) {
        fprintf(stderr, "%s: --batch %d is the global batch: it must split evenly over the %d ranks\n", PROG,
                o->batch, R.D.size);
        return 2;
    }
    R.lb = o->batch / R.D.size;
    if ((rc = open_data(&R))) return rc;
    /* A local model (no normalisation, no attention) has no weight that depends on the image
     * size: --init may fine-tune it on larger or smaller crops. An exact --resume may not. */
    const cld_unet_config *su = &stored_meta.unet;
    if (o->init && cld_unet_config_is_local(su) && R.info.height == R.info.width &&
        su->image_size != R.info.height) {
        if (!R.D.rank)
            fprintf(stderr, "%s: --init: local model of '%s' trained at %d x %d, continuing at %d x %d\n",
                    PROG, o->init, su->image_size, su->image_size, R.info.height, R.info.width);
        stored_meta.unet.image_size = R.info.height;
    }
    if ((rc = build_config(&R, from_model ? &stored_meta.unet : NULL))) return rc;
    if (from_model) {
        const char *flag = o->resume ? "--resume" : "--init";
        char *a = NULL, *b = NULL;
        cld_unet_config_to_json(&stored_meta.unet, &a);
        cld_unet_config_to_json(&R.cfg, &b);
        int same = a && b && !strcmp(a, b);
        free(a);
        free(b);
        if (!same) {
            fprintf(stderr, "%s: %s: the model config from %s does not match the model of '%s'\n", PROG, flag,
                    sf.first_model, resume_path);
            return 1;
        }
        if (R.cfg.in_channels != R.info.channels || R.cfg.image_size != R.info.height ||
            R.cfg.num_classes != (R.info.num_classes > 1 ? R.info.num_classes : 0)) {
            fprintf(stderr, "%s: %s: the data (%d x %d x %d, %d classes) does not fit the model of '%s'\n",
                    PROG, flag, R.info.channels, R.info.height, R.info.width, R.info.num_classes,
                    resume_path);
            return 1;
        }
        if (!o->class_names && stored_meta.n_class_names) {
            memcpy(R.meta.class_names, stored_meta.class_names, sizeof R.meta.class_names);
            R.meta.n_class_names = stored_meta.n_class_names;
        }
    }
    if (o->eval_nll && !o->diff.learned_variance) {
        fprintf(stderr, "%s: --eval-nll needs a model with a learned variance (--learn-sigma)\n", PROG);
        return 2;
    }
    if (o->eval_nll && !R.val) {
        fprintf(stderr, "%s: --eval-nll needs held-back data (--val-data, or t10k files beside --data)\n",
                PROG);
        return 2;
    }
    cld_status s = cld_diffusion_schedule(&o->diff, &R.sched);
    if (s) return fail("schedule", s);
    if (o->t_max >= o->diff.T) {
        fprintf(stderr, "%s: --t-max %d: the timesteps are 0 .. %d (T = %d)\n", PROG, o->t_max, o->diff.T - 1,
                o->diff.T);
        return 2;
    }
    const int t_last = o->t_max ? o->t_max : o->diff.T - 1;
    if (o->noisy_levels && !(R.sched->alpha_bar[t_last] > 0.0)) {
        fprintf(stderr,
                "%s: --noisy-8bit: timestep %d holds no image (alpha_bar = 0, zero terminal SNR): "
                "give --t-max below it\n",
                PROG, t_last);
        return 2;
    }
    if (check_out(o->out)) return 1;
    R.meta.unet = R.cfg;
    R.meta.diffusion = o->diff;
    const char *dev = o->device;
    char rank_spec[256] = "";
    if (R.D.size > 1) {
        if ((rc = rank_device(&R, rank_spec, sizeof rank_spec))) return rc;
        if (rank_spec[0]) dev = rank_spec;
    }
    if (cli_ctx_create(dev, R.D.rank ? NULL : stderr, &R.ctx))
        return fail("device", cld_ctx_create(dev, &R.ctx));
    if (R.D.size > 1) {
        cld_device_info di;
        cld_ctx_device_info(R.ctx, &di);
        fprintf(stderr, "rank %d of %d (local %d of %d): pid %ld, device %s / %s, batch %d of %d\n", R.D.rank,
                R.D.size, R.D.local_rank, R.D.local_size, (long)getpid(), di.platform_name, di.name, R.lb,
                o->batch);
    }
    size_t np = 0;
    cld_unet_param_count(&R.cfg, &np);
    s = cld_params_create(R.ctx, &R.p);
    if (!s) s = cld_params_set_seed(R.p, o->seed);
    if (s) return fail("parameters", s);
    R.per = (size_t)R.cfg.in_channels * R.cfg.image_size * R.cfg.image_size;
    if ((rc = build_train_graph(&R))) return rc;
    s = cld_params_clone(R.p, &R.ema);
    if (!s) s = cld_params_alloc(R.p);
    if (!s) s = cld_params_copy(R.ema, R.p);
    if (s) return fail("parameters", s);
    if (o->init) {
        s = cld_params_load(R.p, o->init, NULL);
        if (!s) s = cld_params_copy(R.ema, R.p);
        if (s) return fail("--init", s);
        if (!R.D.rank) fprintf(stderr, "initialised from %s (fresh optimiser, step 0)\n", o->init);
    }
    if (o->resume) {
        s = cld_params_load_state(R.p, R.ema, resume_path, NULL);
        if (s) return fail("--resume", s);
        if (!R.D.rank) {
            fprintf(stderr, "resumed from %s (step %ld)\n", resume_path, R.step);
            /* model.safetensors is written after the state: a kill between the two leaves it a
             * checkpoint behind (found by tools/checkpoint_faults.py); write the state's model now */
            if ((rc = save_model(&R))) return rc;
        }
    }
    if (!R.D.rank)
        fprintf(
            stderr,
            "model: UNet %zu parameters, %d classes, %s schedule T=%d, %s prediction; data: %d samples of %dx%dx%d\n",
            np, R.cfg.num_classes, cld_schedule_name(o->diff.schedule), o->diff.T,
            cld_pred_name(o->diff.pred), R.info.n, R.info.channels, R.info.height, R.info.width);
    const int B = o->batch;
    R.hx = malloc((size_t)B * R.per * sizeof(float));
    R.hbuf = malloc((size_t)B * sizeof(float));
    R.hlab = malloc((size_t)B * sizeof(int));
    R.hti = malloc((size_t)B * sizeof(int));
    R.hcoefs = malloc((size_t)B * CLD_VLB_COEFS * sizeof(float));
    if (!R.hx || !R.hbuf || !R.hlab || !R.hti || !R.hcoefs) return fail("host buffers", CLD_ERR_NOMEM);
    s = cld_buffer_alloc(R.ctx, (size_t)R.lb * R.per * sizeof(float), &R.x0);
    if (s) return fail("device buffers", s);
    cld_augment aug = {o->hflip};
    s = cld_loader_create_shard(R.ds, B, R.D.rank * R.lb, R.lb, &aug, o->seed, (uint64_t)R.step * (uint64_t)B,
                                &R.loader);
    if (s) return fail("data loader", s);
    if (R.val && !R.D.rank) {
        R.vb = o->val_n < 250 ? o->val_n : 250;
        s = cld_unet_runner_create(R.ctx, R.ema, &R.cfg, R.vb, &R.vrun_ema);
        if (!s) s = cld_unet_runner_create(R.ctx, R.p, &R.cfg, R.vb, &R.vrun_raw);
        if (s) return fail("validation graph", s);
    }
    char csv[4096];
    snprintf(csv, sizeof csv, "%s/log.csv", o->out);
    int new_csv = !cli_is_file(csv) || !o->resume;
    R.csv = R.D.rank ? NULL : fopen(csv, new_csv ? "w" : "a");
    if (!R.csv && !R.D.rank) {
        fprintf(stderr, "%s: cannot write '%s': %s\n", PROG, csv, strerror(errno));
        return 1;
    }
    if (new_csv && R.csv)
        fprintf(R.csv, "step,loss,val_loss,val_loss_ema,lr,grad_norm,images_per_s,elapsed_s\n");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    const long step0 = R.step;
    double t_loop = 0; /* the training loop's steps with their logging, checkpoints and grids */
    double t_win = cli_now_s(), loss_sum = 0, gn_last = 0;
    long win_steps = 0;
    rc = 0;
    if (R.step == 0 && o->grid_every && !R.D.rank) rc = write_grid(&R);
    while (!rc && R.step < o->steps && !stop_requested(&R)) {
        double loss = 0, gn = 0, t_it = cli_now_s();
        if ((rc = train_step(&R, &loss, &gn))) break;
        loss_sum += loss;
        gn_last = gn;
        win_steps++;
        R.loss_ema = R.step == step0 + 1 ? loss : 0.98 * R.loss_ema + 0.02 * loss;
        double el = cli_now_s() - t_win;
        /* the rate over the window since the last log line (at least 5 steps, or the whole window) */
        if ((win_steps >= 5 || R.step % o->log_every == 0) && el > 0) R.img_s = (double)win_steps * B / el;
        const int last = R.step == o->steps || (o->stop_after && R.step - step0 >= o->stop_after);
        if (R.step % o->log_every == 0 || last) {
            double vl = NAN, vle = NAN;
            if (R.vrun_raw && o->val_every && (R.step % o->val_every == 0 || last)) {
                if ((rc = validate(&R, R.vrun_raw, &vl)) || (rc = validate(&R, R.vrun_ema, &vle))) break;
                if (!strcmp(o->progress, "bar")) fputc('\n', stderr);
                fprintf(stderr, "step %ld: validation loss %.5f (EMA %.5f)\n", R.step, vl, vle);
            }
            if (R.csv) {
                fprintf(R.csv, "%ld,%.6f,%.6f,%.6f,%.6g,%.4f,%.2f,%.1f\n", R.step, loss_sum / win_steps, vl,
                        vle, lr_at(o, R.step - 1), gn_last, R.img_s, cli_now_s() - t_start);
                fflush(R.csv);
            }
            progress(&R, loss_sum / win_steps, t_start, step0);
            loss_sum = 0;
            win_steps = 0;
            t_win = cli_now_s();
        } else if (!strcmp(o->progress, "bar")) {
            progress(&R, loss, t_start, step0);
        }
        if (R.step % o->ckpt_every == 0 || last) rc = checkpoint(&R);
        if (!rc && o->grid_every && !R.D.rank && (R.step % o->grid_every == 0 || R.step == o->steps))
            rc = write_grid(&R);
        t_loop += cli_now_s() - t_it;
        if (last) break;
    }
    if (!rc && stop_requested(&R)) {
        if (!strcmp(o->progress, "bar")) fputc('\n', stderr);
        if (!R.D.rank)
            fprintf(stderr, "%s: %s: writing a checkpoint at step %ld\n", PROG,
                    g_signal == SIGINT ? "interrupted"
                    : g_signal         ? "terminated"
                                       : "another rank was signalled",
                    R.step);
        rc = R.D.rank ? 0 : save_checkpoint(&R);
        if (!rc) rc = 130;
        R.agreed = 1;
    }
    if (!strcmp(o->progress, "bar")) fputc('\n', stderr);
    if (!rc && o->eval_nll && !R.D.rank) rc = eval_nll(&R);
    double wait = 0;
    cld_loader_wait_seconds(R.loader, &wait);
    cld_device_info di;
    cld_ctx_device_info(R.ctx, &di);
    if (!R.D.rank)
        fprintf(stderr, "%s: %ld steps (%ld this run) on %s in %.1f s; data loader waits %.2f s in all\n",
                PROG, R.step, R.step - step0, di.name, cli_now_s() - t_start, wait);
    if (R.step > step0 && R.D.size > 1 && !R.D.rank) {
        const double n = (double)(R.step - step0);
        fprintf(stderr,
                "%s: %d ranks (%s): gradient all-reduce of %.1f MiB in %d bucket%s: %.1f ms per step "
                "(read %.1f, MPI %.1f, write %.1f ms; MPI includes waiting for the slowest rank)\n",
                PROG, R.D.size, dist_library(), R.D.n * 4 / 1048576.0, R.D.n_buckets,
                R.D.n_buckets < 2 ? ""
                : o->overlap ? "s, pipelined and overlapped with the backward (read, MPI and write in one, "
                               "with the part of the backward it waits for)"
                             : "s, pipelined after the backward (read, MPI and write in one)",
                1e3 * R.t_comm / n, 1e3 * R.D.t_read / n, 1e3 * R.D.t_reduce / n, 1e3 * R.D.t_write / n);
        if (R.D.n_buckets > 1 && o->overlap)
            fprintf(stderr, "%s: %ld of %ld bucket reads were enqueued during the backward\n", PROG,
                    R.D.early_reads, R.D.reads);
    }
    if (R.step > step0 && !R.D.rank) {
        const double n = (double)(R.step - step0);
        fprintf(stderr,
                "%s: per step: data and inputs %.1f ms, UNet forward + backward %.1f ms, optimizer "
                "(norm, clip, AdamW, EMA) %.1f ms; loop %.1f ms\n",
                PROG, 1e3 * R.t_data / n, 1e3 * R.t_unet / n, 1e3 * R.t_optim / n, 1e3 * t_loop / n);
    }
    if (R.csv) fclose(R.csv);
    cld_loader_free(R.loader);
    cld_unet_runner_free(R.vrun_raw);
    cld_unet_runner_free(R.vrun_ema);
    cld_graph_free(R.g);
    if (R.x0) cld_buffer_release(R.x0);
    cld_params_free(R.p);
    cld_params_free(R.ema);
    cld_dataset_free(R.ds);
    cld_dataset_free(R.val);
    cld_schedule_free(R.sched);
    cld_ctx_free(R.ctx);
    free(R.hx);
    free(R.hbuf);
    free(R.hlab);
    free(R.hti);
    free(R.hcoefs);
    return rc;
}

int main(int argc, char **argv)
{
    int rc = train_main(argc, argv);
    /* a rank that failed alone aborts the job (the others may wait in a collective) */
    dist_end(&R.D, rc, !(rc == 0 || R.agreed));
    return rc;
}
