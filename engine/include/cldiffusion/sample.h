/* Sampling from model files: bundled assets, loading a model file into a
 * ready UNet runner, sampling many images in device-sized batches with
 * img2img (SDEdit) and inpainting (RePaint), the 8-bit grid of the results
 * and the recipe stored in each PNG. What cld-sample does, as a library.
 * Included by cldiffusion.h. Thread safety: a cld_model belongs to one
 * thread at a time.
 *
 * Reproducibility. Every random number is keyed by (seed, stream, sample
 * index, step) (see diffusion.h), never by a sample's position in its batch,
 * so sample i of a run is the same whether it was made alone or among
 * others. The UNet's kernels do not look at a sample's position either; the
 * batch size of the graph may still choose another kernel variant, so
 * samples made at different batch sizes agree within float tolerance and
 * at the same batch size bit for bit (cld_sample_spec.batch is part of a
 * recipe for that reason).
 */
#ifndef CLDIFFUSION_SAMPLE_H
#define CLDIFFUSION_SAMPLE_H

#ifdef __cplusplus
extern "C" {
#endif

/* Noise streams of inpainting (besides CLD_NOISE_STREAM_SAMPLER). */
#define CLD_NOISE_STREAM_KNOWN 3u /* the known pixels noised to each step's level */
#define CLD_NOISE_STREAM_JUMP 4u  /* RePaint's jumps back to a noisier level */

/* ---------------------------------------------------------------- files */
/* Path of a bundled asset ("fashion-mnist.safetensors") into buf: the first
 * file that exists of
 *   $CLD_ASSETS/name                      (CLD_ASSETS: a folder)
 *   <exe dir>/assets/name, <exe dir>/../assets/name,
 *   <exe dir>/../share/cldiffusion/assets/name   (exe dir: the running program's folder)
 *   <install prefix>/share/cldiffusion/assets/name
 *   <source tree>/assets/name
 * CLD_ERR_IO naming every place looked in when none has it. */
cld_status cld_asset_path(const char *name, char *buf, size_t cap);

/* 64-bit FNV-1a of a file's bytes (offset basis 0xcbf29ce484222325, prime
 * 0x100000001b3): an identity check for recipes, not a cryptographic hash. */
cld_status cld_file_hash(const char *path, uint64_t *hash);

/* --------------------------------------------------------------- models */
/* A model file loaded on a context: its metadata, schedule, weights and a
 * UNet runner. Read-only for the caller. */
typedef struct cld_model {
    cld_ctx *ctx;
    cld_model_meta meta;
    cld_schedule *schedule;
    cld_params *params;
    uint64_t hash;           /* cld_file_hash of the file */
    size_t per_sample;       /* floats of one image: C * S * S */
    size_t plan_bytes[2];    /* planned runner bytes at model batch 1 and 2 */
    size_t plan_largest;     /* the batch-1 plan's largest single block (cld_unet_runner_largest) */
    cld_unet_runner *runner; /* at model batch runner_batch */
    int runner_batch;
    int diffusers;                 /* 1: loaded from a diffusers folder */
    cld_diffusers_scheduler sched; /* its scheduler's sampler defaults (diffusers = 1) */
} cld_model;

/* Load a model file (safetensors with cld-train's metadata), or a
 * diffusers folder (see diffusers.h; hash: of its weights file). A missing
 * file is CLD_ERR_IO; a truncated, corrupt or non-model file
 * CLD_ERR_FORMAT, naming the problem. */
cld_status cld_model_load(cld_ctx *ctx, const char *path, cld_model **out);
cld_status cld_model_free(cld_model *m);
/* Settings that override a model's defaults (cld-sample's --schedule,
 * --prediction, --clip-sample, ...; for a diffusers folder, its scheduler
 * config's values): each field counts only where its bit is set in `set`. */
enum {
    CLD_OVERRIDE_SCHEDULE = 1 << 0,
    CLD_OVERRIDE_T = 1 << 1,
    CLD_OVERRIDE_BETA_START = 1 << 2,
    CLD_OVERRIDE_BETA_END = 1 << 3,
    CLD_OVERRIDE_PRED = 1 << 4,
    CLD_OVERRIDE_VARIANCE = 1 << 5,     /* DDPM: fixed_small / fixed_large */
    CLD_OVERRIDE_CLIP = 1 << 6,         /* clip the x_0 estimate to [-c, c] (0: off) */
    CLD_OVERRIDE_STEPS_OFFSET = 1 << 7, /* leading spacing */
    CLD_OVERRIDE_ALPHA_ONE = 1 << 8,    /* DDIM's set_alpha_to_one */
};
typedef struct cld_overrides {
    unsigned set;
    cld_schedule_kind schedule;
    int T;
    double beta_start, beta_end;
    cld_pred_type pred;
    cld_ddpm_variance variance;
    double clip_sample;
    int steps_offset, set_alpha_to_one;
} cld_overrides;
/* The diffusion fields (schedule, T, betas, prediction) replace m's and
 * rebuild its schedule, checked as a model file's would be (a learned-
 * variance model keeps its T: its variance head is tied to it); nothing
 * changes on an error. */
cld_status cld_model_override(cld_model *m, const cld_overrides *ov);
/* The sampler fields (variance, clip, steps_offset, set_alpha_to_one) into o. */
cld_status cld_overrides_apply(const cld_overrides *ov, cld_sampler_opts *o);

/* Class index of `name`: a class name of the model (case-insensitive) or a
 * decimal index. CLD_ERR_INVALID_ARG listing the classes otherwise. */
cld_status cld_model_class_parse(const cld_model *m, const char *name, int *label);

/* Device memory of sampling `batch` samples per run (guidance doubles the
 * model's batch): the runner's planned arena, extrapolated linearly from
 * its plans at model batch 1 and 2 (the plan grows at most linearly), the
 * sampler's workspace and the result. */
typedef struct cld_batch_memory {
    size_t arena_bytes;   /* the runner's arena (split into chunks of at most max_alloc_bytes) */
    size_t largest_bytes; /* largest single allocation: a block of the arena, or the sampler's workspace */
    size_t total_bytes;   /* everything, parameters included */
    size_t budget_bytes;  /* what a run may use: half the device's global memory */
    size_t max_alloc_bytes;
} cld_batch_memory;
cld_status cld_model_batch_memory(const cld_model *m, int batch, int guided, cld_batch_memory *mem);
/* The most samples per run that fit the device (at least 1, at most
 * `limit`); CLD_ERR_NOMEM if not even one does. */
cld_status cld_model_fit_batch(const cld_model *m, int guided, int limit, int *batch);
/* CLD_OK if `batch` fits, else CLD_ERR_NOMEM saying how much it needs. */
cld_status cld_model_check_batch(const cld_model *m, int batch, int guided);

/* ------------------------------------------------------------- sampling */
typedef struct cld_sample_spec {
    cld_sampler_opts opts; /* sampler, steps, spacing, Karras, eta, guidance; pred and
                                null_label are taken from the model by cld_model_sample */
    int n;                 /* samples */
    const int *labels;     /* (n) class per sample, or NULL (unconditional) */
    uint64_t seed;
    uint32_t first_index; /* noise sample index of sample 0 */
    int batch;            /* samples per sampler run; 0: cld_model_fit_batch (at most 64) */
    /* img2img and inpainting */
    const float *init;  /* (C, S, S) in [-1, 1], the same for every sample, or NULL */
    const float *noise; /* (n, C, S, S): x_T of each sample instead of noise step 0 (as
                                diffusers pipelines' latents), or NULL; not with init */
    double strength;    /* with init: start at timestep round(strength T) - 1 with
                                round(strength steps) steps (SDEdit); 1: from pure noise */
    const float *mask;  /* (S, S) in [0, 1], 1 = regenerate; needs init (RePaint) */
    int resample;       /* RePaint: each jump is done this often (1: no jumps back) */
    int jump;           /* RePaint: points gone back per jump (>= 1) */
    /* intermediate states */
    int frames;        /* 0, or >= 2: x at `frames` moments, first = start, last = result */
    float *trajectory; /* (n, frames, C, S, S) when frames > 0 */
    void (*progress)(void *user, int done, int total); /* after each step of each run, or NULL */
    void *progress_user;
} cld_sample_spec;

/* A spec with defaults: DPM-Solver++(2M) on Karras sigmas, 20 steps,
 * guidance 1, strength 1, resample 1, jump 1. (Diffusers pipelines' own
 * defaults come from cld_sampler_opts_default + cld_diffusers_sampler_defaults.) */
cld_status cld_sample_spec_default(cld_sample_spec *spec);

/* Sample spec->n images into out (n, C, S, S), values roughly in [-1, 1].
 *  - Runs of spec->batch samples (the last one smaller); the runner is
 *    (re)built for that batch, so it may hold more than n samples.
 *  - With init and no mask: SDEdit. x at the first point is the init
 *    noised there (cld_q_sample, noise step 0); the sampler runs the last
 *    round(strength steps) steps of a schedule cut at that timestep.
 *  - With a mask: RePaint with DDPM/DDIM steps (opts.kind ddpm, or ddim
 *    with its eta): after every step, pixels outside the mask are replaced
 *    by the init noised to the new level, and every `jump` points the run
 *    goes back up by `jump` points (resample - 1 times) to harmonise.
 *  - A learned-variance model (2C output channels) samples DDPM with its
 *    variance (cld_sampler_run_learned_var) and every other sampler, and
 *    RePaint, with its prediction half (cld_pred_half_fn).
 *  - A NaN or Inf anywhere in the result is CLD_ERR_STATE naming the
 *    sample, never a result. */
cld_status cld_model_sample(cld_model *m, const cld_sample_spec *spec, float *out);

/* The same for any model function of images (channels, size, size):
 * `model` is called with at most 2 spec->batch samples and returns
 * predictions of type spec->opts.pred; spec->opts.null_label and
 * spec->batch > 0 are the caller's. Used by cld_model_sample and tests. */
cld_status cld_sample_with(cld_ctx *ctx, const cld_schedule *s, cld_model_fn model, void *user, int channels,
                           int size, const cld_sample_spec *spec, float *out);

/* Pass-by-pass order of RePaint: point indices visited (0 = start, steps =
 * the clean end), from pt[0] = 0 to pt[count-1] = steps; consecutive
 * entries differ by 1. count gets the length; pt NULL only counts, a pt of
 * fewer than count entries (cap) is CLD_ERR_INVALID_ARG. */
cld_status cld_repaint_schedule(int steps, int jump, int resample, int *pt, int cap, int *count);

/* ---------------------------------------------------------------- output */
/* 8-bit pixels (H, W, C) of n images (C, S, S) in [-1, 1] in a grid of
 * `cols` columns, `pad` pixels of black around and between cells (pad 0,
 * n 1: the image itself). value = round((x + 1) 127.5) clamped to 0..255.
 * *pixels is malloc'd. A NaN or Inf anywhere is CLD_ERR_STATE (no pixels). */
cld_status cld_grid_pixels(const float *x, int n, int C, int S, int cols, int pad, uint8_t **pixels,
                           int *width, int *height);

/* How an image was made: everything cld-sample needs to make it again.
 * Stored in a PNG as the JSON text of tEXt key "cld.recipe". */
#define CLD_RECIPE_KEY "cld.recipe"
#define CLD_RECIPE_PATH 1024
typedef struct cld_recipe {
    char model[CLD_RECIPE_PATH]; /* model file as given */
    uint64_t model_hash;         /* cld_file_hash */
    cld_sampler_kind sampler;
    cld_spacing spacing;
    int karras;
    int steps;
    double eta, guidance;
    uint64_t seed;
    uint32_t first_index; /* sample index of the first image */
    int n;                /* images */
    int n_classes;        /* classes cycled over: sample i has classes[i % n_classes] */
    int classes[CLD_MODEL_MAX_CLASSES];
    int batch;       /* samples per sampler run */
    char layout[16]; /* "grid", "single" or "trajectory" */
    int grid_cols, frames;
    char init[CLD_RECIPE_PATH]; /* "" or the init image */
    uint64_t init_hash;
    double strength;
    char mask[CLD_RECIPE_PATH]; /* "" or the mask */
    uint64_t mask_hash;
    int resample, jump;
    char noise[CLD_RECIPE_PATH]; /* "" or the file of x_T (row i: sample index i) */
    uint64_t noise_hash;
    cld_overrides overrides; /* of the model's defaults (JSON "override"; set = 0: none) */
} cld_recipe;

/* JSON text (malloc'd) of a recipe, with the engine and noise versions and
 * the class names of `meta` (may be NULL) for people; and back
 * (CLD_ERR_FORMAT naming a missing or bad field, or a newer format). */
cld_status cld_recipe_to_json(const cld_recipe *r, const cld_model_meta *meta, char **json);
cld_status cld_recipe_from_json(const char *json, cld_recipe *r);

#ifdef __cplusplus
}
#endif
#endif
