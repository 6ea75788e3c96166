/* Sampling from model files (sample.h): assets, model loading, batched
 * sampling with SDEdit and RePaint, grids and recipes.
 *
 * A run of b samples, top to bottom (run_batch):
 *   x = noise (step 0), or the init noised to the first point (SDEdit)
 *   no mask: cld_sampler_run from x over the (cut) schedule
 *   mask:    RePaint over the points of the same sampler options: a DDIM
 *            step (eta; DDPM = eta 1) per point, the known pixels replaced
 *            by the init noised to the new level, jumps back by the forward
 *            process. The state lives on the host: the merge needs a
 *            per-pixel mask, which no kernel of cl/ does, and it costs
 *            nothing next to a UNet call.
 * Every random number is keyed by (seed, stream, sample index, step), so
 * a sample does not depend on its batch. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- files */

static int is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

cld_status cld_asset_path(const char *name, char *buf, size_t cap)
{
    if (!name || !*name || !buf || cap == 0)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_asset_path: bad argument");
    char dirs[6][1024];
    int nd = 0;
    const char *env = getenv("CLD_ASSETS");
    if (env && *env) snprintf(dirs[nd++], sizeof dirs[0], "%s", env);
    char exe[1024];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {
        exe[len] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        snprintf(dirs[nd++], sizeof dirs[0], "%.1000s/assets", exe);
        snprintf(dirs[nd++], sizeof dirs[0], "%.1000s/../assets", exe);
        snprintf(dirs[nd++], sizeof dirs[0], "%.990s/../share/cldiffusion/assets", exe);
    }
#ifdef CLD_ASSET_DIR
    snprintf(dirs[nd++], sizeof dirs[0], "%s", CLD_ASSET_DIR);
#endif
#ifdef CLD_SOURCE_ASSET_DIR
    snprintf(dirs[nd++], sizeof dirs[0], "%s", CLD_SOURCE_ASSET_DIR);
#endif
    char tried[4096] = "";
    size_t used = 0;
    for (int i = 0; i < nd; i++) {
        char path[2048];
        if (snprintf(path, sizeof path, "%s/%s", dirs[i], name) >= (int)sizeof path) continue;
        if (is_file(path)) {
            if (strlen(path) >= cap)
                return cld__fail(CLD_ERR_INVALID_ARG, "cld_asset_path: buffer too small");
            strcpy(buf, path);
            return CLD_OK;
        }
        if (used < sizeof tried)
            used += (size_t)snprintf(tried + used, sizeof tried - used, "%s%s", i ? ", " : "", path);
    }
    return cld__fail(CLD_ERR_IO, "asset '%s' not found (looked in %s; set CLD_ASSETS to its folder)", name,
                     tried);
}

cld_status cld_file_hash(const char *path, uint64_t *hash)
{
    if (!path || !hash) return cld__fail(CLD_ERR_INVALID_ARG, "cld_file_hash: NULL argument");
    FILE *f = fopen(path, "rb");
    if (!f) return cld__fail(CLD_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    unsigned char buf[1 << 16];
    uint64_t h = 0xcbf29ce484222325ull;
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        for (size_t i = 0; i < n; i++) h = (h ^ buf[i]) * 0x100000001b3ull;
    int bad = ferror(f);
    fclose(f);
    if (bad) return cld__fail(CLD_ERR_IO, "reading '%s' failed", path);
    *hash = h;
    return CLD_OK;
}

/* --------------------------------------------------------------- models */

/* Fail with status s, prefixing the last error with "model 'path': ". */
static cld_status model_fail(cld_status s, const char *path)
{
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", cld_last_error());
    if (strstr(msg, path)) return cld__fail(s, "%s", msg);
    return cld__fail(s, "model '%s': %s", path, msg);
}

cld_status cld_model_override(cld_model *m, const cld_overrides *ov)
{
    if (!m || !ov) return cld__fail(CLD_ERR_INVALID_ARG, "cld_model_override: NULL argument");
    if (ov->set & ~0x1ffu)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_model_override: unknown bits %#x", ov->set);
    cld_diffusion_config d = m->meta.diffusion;
    if (ov->set & CLD_OVERRIDE_SCHEDULE) d.schedule = ov->schedule;
    if (ov->set & CLD_OVERRIDE_T) d.T = ov->T;
    if (ov->set & CLD_OVERRIDE_BETA_START) d.beta_start = ov->beta_start;
    if (ov->set & CLD_OVERRIDE_BETA_END) d.beta_end = ov->beta_end;
    if (ov->set & CLD_OVERRIDE_PRED) d.pred = ov->pred;
    if (d.learned_variance && d.T != m->meta.diffusion.T)
        return cld__fail(CLD_ERR_INVALID_ARG,
                         "T = %d: the model learned its variance for T = %d, which cannot change", d.T,
                         m->meta.diffusion.T);
    if (d.T < 2 || d.T > 100000) return cld__fail(CLD_ERR_INVALID_ARG, "T = %d (must be in 2..100000)", d.T);
    if ((unsigned)d.pred > CLD_PRED_X0) return cld__fail(CLD_ERR_INVALID_ARG, "prediction %d", (int)d.pred);
    if (memcmp(&d, &m->meta.diffusion, sizeof d) == 0) return CLD_OK;
    cld_schedule *sch = NULL;
    CLD_TRY(cld_diffusion_schedule(&d, &sch));
    cld_schedule_free(m->schedule);
    m->schedule = sch;
    m->meta.diffusion = d;
    return CLD_OK;
}

cld_status cld_overrides_apply(const cld_overrides *ov, cld_sampler_opts *o)
{
    if (!ov || !o) return cld__fail(CLD_ERR_INVALID_ARG, "cld_overrides_apply: NULL argument");
    if ((ov->set & CLD_OVERRIDE_VARIANCE) && (unsigned)ov->variance > CLD_VAR_BETA)
        return cld__fail(CLD_ERR_INVALID_ARG, "variance %d", (int)ov->variance);
    if ((ov->set & CLD_OVERRIDE_CLIP) && !(ov->clip_sample >= 0 && ov->clip_sample < 1e6))
        return cld__fail(CLD_ERR_INVALID_ARG, "clip_sample %g (must be >= 0; 0: off)", ov->clip_sample);
    if ((ov->set & CLD_OVERRIDE_STEPS_OFFSET) && (ov->steps_offset < 0 || ov->steps_offset > 100000))
        return cld__fail(CLD_ERR_INVALID_ARG, "steps_offset %d (must be >= 0)", ov->steps_offset);
    if (ov->set & CLD_OVERRIDE_VARIANCE) o->variance = ov->variance;
    if (ov->set & CLD_OVERRIDE_CLIP) o->clip_sample = ov->clip_sample;
    if (ov->set & CLD_OVERRIDE_STEPS_OFFSET) o->steps_offset = ov->steps_offset;
    if (ov->set & CLD_OVERRIDE_ALPHA_ONE) o->final_alpha_bar0 = !ov->set_alpha_to_one;
    return CLD_OK;
}

cld_status cld_model_free(cld_model *m)
{
    if (!m) return CLD_OK;
    cld_unet_runner_free(m->runner);
    cld_params_free(m->params);
    cld_schedule_free(m->schedule);
    free(m);
    return CLD_OK;
}

/* (Re)build the runner for model batch mb. */
static cld_status model_runner(cld_model *m, int mb)
{
    if (m->runner && m->runner_batch == mb) return CLD_OK;
    cld_unet_runner_free(m->runner);
    m->runner = NULL;
    m->runner_batch = 0;
    CLD_TRY(cld_unet_runner_create(m->ctx, m->params, &m->meta.unet, mb, &m->runner));
    m->runner_batch = mb;
    return CLD_OK;
}

cld_status cld_model_load(cld_ctx *ctx, const char *path, cld_model **out)
{
    if (!ctx || !path || !out) return cld__fail(CLD_ERR_INVALID_ARG, "cld_model_load: NULL argument");
    *out = NULL;
    cld_model *m = calloc(1, sizeof *m);
    if (!m) return cld__fail(CLD_ERR_NOMEM, "cld_model_load: out of host memory");
    m->ctx = ctx;
    char *mj = NULL;
    struct stat st;
    cld_diffusers_model *dm = NULL;
    cld_status s = CLD_OK;
    if (stat(path, &st) == 0 &&
        S_ISDIR(st.st_mode)) { /* a diffusers folder, header-checked before device memory */
        m->diffusers = 1;
        dm = malloc(sizeof *dm);
        s = dm ? cld_diffusers_open(path, dm)
               : cld__fail(CLD_ERR_NOMEM, "cld_model_load: out of host memory");
        if (s == CLD_OK) {
            m->meta = dm->meta;
            m->sched = dm->sched;
        }
    } else {
        s = cld_safetensors_metadata(path, &mj);
        if (s == CLD_OK) s = cld_model_meta_from_json(mj, &m->meta);
        free(mj);
    }
    if (s == CLD_OK) s = cld_diffusion_schedule(&m->meta.diffusion, &m->schedule);
    if (s == CLD_OK) s = cld_params_create(ctx, &m->params);
    /* the batch-2 runner only measures the plan's growth; batch 1 declares the parameters */
    for (int b = 2; b >= 1 && s == CLD_OK; b--) {
        s = model_runner(m, b);
        if (s == CLD_OK) s = cld_unet_runner_bytes(m->runner, &m->plan_bytes[b - 1]);
        if (s == CLD_OK && b == 1) s = cld_unet_runner_largest(m->runner, &m->plan_largest);
    }
    if (s == CLD_OK)
        s = dm ? cld_diffusers_load_weights(m->params, dm->weights) : cld_params_load(m->params, path, NULL);
    if (s == CLD_OK) s = cld_file_hash(dm ? dm->weights : path, &m->hash);
    free(dm);
    if (s != CLD_OK) {
        s = model_fail(s, path);
        cld_model_free(m);
        return s;
    }
    const int S = m->meta.unet.image_size;
    m->per_sample = (size_t)m->meta.unet.in_channels * S * S;
    *out = m;
    return CLD_OK;
}

cld_status cld_model_class_parse(const cld_model *m, const char *name, int *label)
{
    if (!m || !name || !label) return cld__fail(CLD_ERR_INVALID_ARG, "cld_model_class_parse: NULL argument");
    const int nc = m->meta.unet.num_classes;
    if (nc == 0)
        return cld__fail(CLD_ERR_INVALID_ARG, "class '%s': the model has no class conditioning", name);
    char *end;
    long v = strtol(name, &end, 10);
    if (*name && !*end) {
        if (v >= 0 && v < nc) {
            *label = (int)v;
            return CLD_OK;
        }
        return cld__fail(CLD_ERR_INVALID_ARG, "class %ld: the model has classes 0 .. %d", v, nc - 1);
    }
    for (int k = 0; k < m->meta.n_class_names; k++) {
        const char *a = name, *b = m->meta.class_names[k];
        while (*a && *b && tolower((unsigned char)*a) == tolower((unsigned char)*b)) a++, b++;
        if (!*a && !*b) {
            *label = k;
            return CLD_OK;
        }
    }
    char list[2048] = "";
    size_t used = 0;
    for (int k = 0; k < m->meta.n_class_names && used < sizeof list; k++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%d '%s'", k ? ", " : "", k,
                                 m->meta.class_names[k]);
    if (!m->meta.n_class_names) snprintf(list, sizeof list, "indices 0 .. %d, no names stored", nc - 1);
    return cld__fail(CLD_ERR_INVALID_ARG, "unknown class '%s' (the model's classes: %s)", name, list);
}

cld_status cld_model_batch_memory(const cld_model *m, int batch, int guided, cld_batch_memory *mem)
{
    if (!m || !mem || batch < 1)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_model_batch_memory: bad argument");
    cld_device_info info;
    CLD_TRY(cld_ctx_device_info(m->ctx, &info));
    const double mb = (double)batch * (guided ? 2 : 1), per = (double)m->per_sample * sizeof(float);
    const double b1 = (double)m->plan_bytes[0], b2 = (double)m->plan_bytes[1];
    const double arena = b1 + (b2 > b1 ? b2 - b1 : 0.0) * (mb - 1.0);
    size_t n_params = 0;
    CLD_TRY(cld_params_count(m->params, NULL, &n_params));
    const double out_ch = (double)m->meta.unet.out_channels / m->meta.unet.in_channels;
    /* sampler workspace (sampler.c: 4 + 1 or 4 + 4 batches), result, staging of wide outputs, parameters
     * (values only: a store that is not trained has no gradient or AdamW buffers) */
    const double ws =
        per * batch * (guided ? 8.0 : 5.0) + per * batch + (out_ch > 1 ? per * mb * out_ch : 0.0);
    const double total = arena + ws + (double)n_params * sizeof(float);
    /* one allocation: the largest block of the arena, or the sampler's workspace buffer
     * (sampler.c: 5 or 8 batches). Each block is a + c * batch with a, c >= 0, so at model
     * batch mb it is at most mb times its batch-1 size; extrapolating the largest block from
     * batches 1 and 2 is not a bound (another block, steeper, takes over: measured) */
    double largest = (double)m->plan_largest * mb;
    if (per * batch * (guided ? 8.0 : 5.0) > largest) largest = per * batch * (guided ? 8.0 : 5.0);
    const double lim = (double)SIZE_MAX / 2;
    mem->arena_bytes = arena < lim ? (size_t)arena : (size_t)lim;
    mem->largest_bytes = largest < lim ? (size_t)largest : (size_t)lim;
    mem->total_bytes = total < lim ? (size_t)total : (size_t)lim;
    mem->budget_bytes = (size_t)(info.global_mem_bytes / 2);
    mem->max_alloc_bytes = (size_t)info.max_alloc_bytes;
    return CLD_OK;
}

cld_status cld_model_check_batch(const cld_model *m, int batch, int guided)
{
    cld_batch_memory mem;
    CLD_TRY(cld_model_batch_memory(m, batch, guided, &mem));
    if (mem.largest_bytes > mem.max_alloc_bytes || mem.total_bytes > mem.budget_bytes) {
        cld_device_info info;
        CLD_TRY(cld_ctx_device_info(m->ctx, &info));
        return cld__fail(
            CLD_ERR_NOMEM,
            "a batch of %d samples%s needs %.1f MiB of device memory (%.1f MiB in one "
            "allocation); device '%s' allows %.1f MiB (half its memory) and %.1f MiB per allocation",
            batch, guided ? " with guidance" : "", mem.total_bytes / 1048576.0, mem.largest_bytes / 1048576.0,
            info.name, mem.budget_bytes / 1048576.0, mem.max_alloc_bytes / 1048576.0);
    }
    return CLD_OK;
}

cld_status cld_model_fit_batch(const cld_model *m, int guided, int limit, int *batch)
{
    if (!m || !batch || limit < 1) return cld__fail(CLD_ERR_INVALID_ARG, "cld_model_fit_batch: bad argument");
    CLD_TRY(cld_model_check_batch(m, 1, guided));
    int lo = 1, hi = limit; /* largest fitting batch by bisection: memory grows with the batch */
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        cld_batch_memory mem;
        CLD_TRY(cld_model_batch_memory(m, mid, guided, &mem));
        if (mem.largest_bytes <= mem.max_alloc_bytes && mem.total_bytes <= mem.budget_bytes)
            lo = mid;
        else
            hi = mid - 1;
    }
    *batch = lo;
    return CLD_OK;
}

/* ------------------------------------------------------------- sampling */

cld_status cld_sample_spec_default(cld_sample_spec *spec)
{
    if (!spec) return cld__fail(CLD_ERR_INVALID_ARG, "cld_sample_spec_default: NULL argument");
    memset(spec, 0, sizeof *spec);
    CLD_TRY(cld_sampler_opts_default(CLD_SAMPLER_DPMPP_2M, &spec->opts));
    /* Karras sigmas: on the shipped Fashion-MNIST model at 20 steps, Frechet
     * distance 4.93 / 4.71 against 6.16 / 6.33 with trailing spacing (1000
     * samples, seeds 13 / 14, README "Shipped models"), at the same cost */
    spec->opts.karras = 1;
    spec->opts.steps = 20;
    spec->strength = 1.0;
    spec->resample = 1;
    spec->jump = 1;
    return CLD_OK;
}

cld_status cld_repaint_schedule(int steps, int jump, int resample, int *pt, int cap, int *count)
{
    if (steps < 1 || jump < 1 || resample < 1 || !count || (cap > 0 && !pt))
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_repaint_schedule: steps %d, jump %d, resample %d", steps,
                         jump, resample);
    /* Lugmayr et al. 2022 (get_schedule_jump), on point indices: after
     * reaching point i (a multiple of jump, i + jump <= steps - 1, so never
     * from the clean end), go back jump points, resample - 1 times. */
    int n = 0, i = 0;
    int *left = calloc((size_t)steps + 1, sizeof *left);
    if (!left) return cld__fail(CLD_ERR_NOMEM, "cld_repaint_schedule: out of host memory");
    for (int k = jump; k <= steps - 1; k += jump) left[k] = resample - 1;
#define PUSH()                  \
    do {                        \
        if (n < cap) pt[n] = i; \
        n++;                    \
    } while (0)
    PUSH();
    while (i < steps) {
        i++;
        PUSH();
        if (i < steps && left[i] > 0) {
            left[i]--;
            for (int j = 0; j < jump; j++) {
                i--;
                PUSH();
            }
        }
    }
#undef PUSH
    free(left);
    *count = n;
    if (pt && n > cap)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_repaint_schedule: %d entries, room for %d", n, cap);
    return CLD_OK;
}

/* One run's shared state: a batch of nb samples starting at sample i0. */
typedef struct sampling {
    cld_ctx *ctx;
    const cld_schedule *s; /* cut at the start timestep for SDEdit */
    cld_model_fn model;    /* returns (n, per) predictions */
    void *user;
    cld_model_fn learned; /* or NULL: a learned-variance model's full output, for DDPM */
    void *learned_user;
    const cld_sample_spec *sp;
    cld_sampler_opts o; /* steps: those run */
    int C, S;
    size_t per;
    int guided;
    int moves;     /* steps (or RePaint passes) of one run */
    int *frame_at; /* (frames) move count of each frame */
    int i0, nb, runs_done, total_moves;
    float *out;           /* the caller's (n, per) */
    cl_mem x;             /* (batch, per) device state */
    cld_status cb_status; /* first failure inside the sampler's progress callback */
} sampling;

static cld_status capture(sampling *r, int move, const float *host_x)
{
    const cld_sample_spec *sp = r->sp;
    for (int f = 0; f < sp->frames; f++) {
        if (r->frame_at[f] != move) continue;
        for (int i = 0; i < r->nb; i++) {
            float *dst = sp->trajectory + ((size_t)(r->i0 + i) * sp->frames + f) * r->per;
            if (host_x)
                memcpy(dst, host_x + (size_t)i * r->per, r->per * sizeof(float));
            else
                CLD_TRY(cld_buffer_read(r->ctx, r->x, (size_t)i * r->per * sizeof(float),
                                        r->per * sizeof(float), dst));
        }
    }
    return CLD_OK;
}

static void report(sampling *r, int move)
{
    if (r->sp->progress)
        r->sp->progress(r->sp->progress_user, r->runs_done * r->moves + move, r->total_moves);
}

static void on_step(void *user, int step, int total)
{
    (void)total;
    sampling *r = user;
    if (r->cb_status == CLD_OK) r->cb_status = capture(r, step, NULL);
    report(r, step);
}

/* D (nb, per) = x_0 estimate at point p from host x (nb, per): one model
 * call of nb (2 nb with guidance) samples. io: (2 nb, per) host scratch. */
static cld_status denoise_host(sampling *r, const float *x, const cld_sampler_point *p, cl_mem min,
                               cl_mem mout, float *io, float *d)
{
    const int nb = r->nb, mb = r->guided ? 2 * nb : nb;
    const size_t bytes = (size_t)nb * r->per * sizeof(float);
    float *t = malloc((size_t)mb * sizeof *t);
    int *lab = r->sp->labels ? malloc((size_t)mb * sizeof *lab) : NULL;
    if (!t || (r->sp->labels && !lab)) {
        free(t);
        return cld__fail(CLD_ERR_NOMEM, "sampling: out of host memory");
    }
    for (int i = 0; i < mb; i++) {
        t[i] = (float)p->t;
        if (lab) lab[i] = i < nb ? r->sp->labels[r->i0 + i] : r->o.null_label;
    }
    cld_status s = cld_buffer_write(r->ctx, min, 0, bytes, x);
    if (s == CLD_OK && r->guided) s = cld_buffer_write(r->ctx, min, bytes, bytes, x);
    if (s == CLD_OK) s = r->model(r->user, min, 0, mout, 0, mb, t, lab);
    if (s == CLD_OK) s = cld_buffer_read(r->ctx, mout, 0, (size_t)mb * r->per * sizeof(float), io);
    double kx = 0, kp = 0;
    if (s == CLD_OK) s = cld_pred_coefs(r->o.pred, CLD_PRED_X0, p->a, p->b, &kx, &kp);
    const double g = r->o.guidance;
    for (size_t i = 0; s == CLD_OK && i < (size_t)nb * r->per; i++) {
        double pr = io[i];
        if (r->guided) pr = io[(size_t)nb * r->per + i] + g * (pr - io[(size_t)nb * r->per + i]);
        d[i] = (float)(kx * x[i] + kp * pr);
    }
    free(t);
    free(lab);
    return s;
}

/* x (nb, per) = m x + (1 - m) (a x0 + b z), z = noise(KNOWN, step). */
static cld_status merge_known(sampling *r, float *x, double a, double b, uint32_t step, float *z)
{
    cld_noise_key key = {r->sp->seed, CLD_NOISE_STREAM_KNOWN, r->sp->first_index + (uint32_t)r->i0, step};
    if (b > 0) CLD_TRY(cld_noise_host(&key, r->nb, r->per, z));
    const size_t plane = (size_t)r->S * r->S;
    for (int i = 0; i < r->nb; i++)
        for (size_t e = 0; e < r->per; e++) {
            double m = r->sp->mask[e % plane],
                   known = a * r->sp->init[e] + (b > 0 ? b * z[(size_t)i * r->per + e] : 0.0);
            float *v = &x[(size_t)i * r->per + e];
            *v = (float)(m * *v + (1.0 - m) * known);
        }
    return CLD_OK;
}

/* RePaint from the state in r->x, into host x (nb, per). */
static cld_status repaint(sampling *r, const cld_sampler_point *pts, float *x)
{
    const int nb = r->nb, mb = r->guided ? 2 * nb : nb;
    const size_t n = (size_t)nb * r->per;
    const double eta = r->o.kind == CLD_SAMPLER_DDPM ? 1.0 : r->o.eta;
    int len = 0;
    cld_repaint_schedule(r->o.steps, r->sp->jump, r->sp->resample, NULL, 0, &len);
    int *seq = malloc((size_t)len * sizeof *seq);
    float *io = malloc((size_t)mb * r->per * sizeof *io), *d = malloc(n * sizeof *d),
          *z = malloc(n * sizeof *z);
    cl_mem min = NULL, mout = NULL;
    cld_status s = seq && io && d && z ? CLD_OK : cld__fail(CLD_ERR_NOMEM, "inpainting: out of host memory");
    if (s == CLD_OK) s = cld_repaint_schedule(r->o.steps, r->sp->jump, r->sp->resample, seq, len, &len);
    if (s == CLD_OK) s = cld_buffer_alloc(r->ctx, (size_t)mb * r->per * sizeof(float), &min);
    if (s == CLD_OK) s = cld_buffer_alloc(r->ctx, (size_t)mb * r->per * sizeof(float), &mout);
    if (s == CLD_OK) s = cld_buffer_read(r->ctx, r->x, 0, n * sizeof(float), x);
    /* the start is the init noised to pts[0] everywhere: known pixels included */
    if (s == CLD_OK) s = capture(r, 0, x);
    for (int k = 1; k < len && s == CLD_OK; k++) {
        const cld_sampler_point *P = &pts[seq[k - 1]], *Q = &pts[seq[k]];
        cld_noise_key key = {r->sp->seed, CLD_NOISE_STREAM_SAMPLER, r->sp->first_index + (uint32_t)r->i0,
                             (uint32_t)k};
        if (seq[k] > seq[k - 1]) {
            /* DDIM step P -> Q (sampler.c's formula), then the known pixels at Q's level */
            s = denoise_host(r, x, P, min, mout, io, d);
            double se =
                eta * sqrt(fmax(0.0, (Q->b * Q->b) / (P->b * P->b) * (1.0 - (P->a * P->a) / (Q->a * Q->a))));
            double dir = sqrt(fmax(0.0, Q->b * Q->b - se * se)), wx = dir / P->b,
                   wd = Q->a - dir * P->a / P->b;
            if (s == CLD_OK && se > 0) s = cld_noise_host(&key, nb, r->per, z);
            for (size_t i = 0; s == CLD_OK && i < n; i++)
                x[i] = (float)(wx * x[i] + wd * d[i] + (se > 0 ? se * z[i] : 0.0));
            if (s == CLD_OK) s = merge_known(r, x, Q->a, Q->b, (uint32_t)k, z);
        } else {
            /* back up: q(x_Q | x_P) of the forward process, Q noisier than P */
            double c = Q->a / P->a, w = sqrt(fmax(0.0, Q->b * Q->b - c * c * P->b * P->b));
            key.stream = CLD_NOISE_STREAM_JUMP;
            s = cld_noise_host(&key, nb, r->per, z);
            for (size_t i = 0; s == CLD_OK && i < n; i++) x[i] = (float)(c * x[i] + w * z[i]);
        }
        if (s == CLD_OK) s = capture(r, k, x);
        report(r, k);
    }
    if (min) cld_buffer_release(min);
    if (mout) cld_buffer_release(mout);
    free(seq);
    free(io);
    free(d);
    free(z);
    return s;
}

/* Samples i0 .. i0 + nb - 1 into r->out. */
static cld_status run_batch(sampling *r, const cld_sampler_point *pts, const int *t_start, cl_mem x0)
{
    const cld_sample_spec *sp = r->sp;
    const size_t n = (size_t)r->nb * r->per;
    cld_noise_key key = {sp->seed, CLD_NOISE_STREAM_SAMPLER, sp->first_index + (uint32_t)r->i0, 0};
    if (sp->init)
        CLD_TRY(
            cld_q_sample(r->ctx, r->s, r->nb, r->per, t_start, x0, 0, &key, r->x, 0, CLD_PRED_X0, NULL, 0));
    else if (sp->noise)
        CLD_TRY(cld_buffer_write(r->ctx, r->x, 0, n * sizeof(float), sp->noise + (size_t)r->i0 * r->per));
    else
        CLD_TRY(cld_noise_fill(r->ctx, &key, r->nb, r->per, r->x, 0));
    float *dst = r->out + (size_t)r->i0 * r->per;
    if (sp->mask) return repaint(r, pts, dst);
    CLD_TRY(capture(r, 0, NULL));
    cld_sample_job job;
    memset(&job, 0, sizeof job);
    job.n = r->nb;
    job.per_sample = r->per;
    job.labels = sp->labels ? sp->labels + r->i0 : NULL;
    job.seed = sp->seed;
    job.first_index = sp->first_index + (uint32_t)r->i0;
    job.start_from_out = 1;
    job.out = r->x;
    const int learned = r->learned && r->o.kind == CLD_SAMPLER_DDPM;
    job.model = learned ? r->learned : r->model;
    job.model_user = learned ? r->learned_user : r->user;
    job.progress = on_step;
    job.progress_user = r;
    r->cb_status = CLD_OK;
    CLD_TRY(learned ? cld_sampler_run_learned_var(r->ctx, r->s, &r->o, &job)
                    : cld_sampler_run(r->ctx, r->s, &r->o, &job));
    CLD_TRY(r->cb_status);
    return cld_buffer_read(r->ctx, r->x, 0, n * sizeof(float), dst);
}

static cld_status check_spec(const cld_sample_spec *sp, int C, int S)
{
    if (sp->n < 1 || sp->batch < 1 || C < 1 || S < 1)
        return cld__fail(CLD_ERR_INVALID_ARG, "sampling: %d samples in batches of %d", sp->n, sp->batch);
    if (sp->noise && sp->init)
        return cld__fail(CLD_ERR_INVALID_ARG,
                         "sampling: an initial noise x_T and an init image exclude each other");
    if ((sp->mask || sp->strength != 1.0) && !sp->init)
        return cld__fail(CLD_ERR_INVALID_ARG, "sampling: a mask or a strength needs an init image");
    if (!(sp->strength > 0.0 && sp->strength <= 1.0))
        return cld__fail(CLD_ERR_INVALID_ARG, "sampling: strength %g is not in (0, 1]", sp->strength);
    if (sp->mask && sp->opts.kind != CLD_SAMPLER_DDPM && sp->opts.kind != CLD_SAMPLER_DDIM)
        return cld__fail(CLD_ERR_INVALID_ARG, "inpainting runs DDPM or DDIM steps (RePaint), not %s",
                         cld_sampler_name(sp->opts.kind));
    if (sp->mask && (sp->resample < 1 || sp->jump < 1))
        return cld__fail(CLD_ERR_INVALID_ARG, "inpainting: resample %d and jump %d must be >= 1",
                         sp->resample, sp->jump);
    if (sp->frames < 0 || sp->frames == 1 || (sp->frames && !sp->trajectory))
        return cld__fail(CLD_ERR_INVALID_ARG,
                         "sampling: %d trajectory frames (0, or 2 and more with a buffer)", sp->frames);
    return CLD_OK;
}

/* The first sample index of `out` holding a NaN or Inf, or -1. */
static long first_nonfinite(const float *x, int n, size_t per)
{
    for (size_t i = 0; i < (size_t)n * per; i++)
        if (!isfinite(x[i])) return (long)(i / per);
    return -1;
}

static cld_status sample_impl(cld_ctx *ctx, const cld_schedule *s, cld_model_fn model, void *user,
                              cld_model_fn learned, void *learned_user, int channels, int size,
                              const cld_sample_spec *sp, float *out)
{
    if (!ctx || !s || !model || !sp || !out)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_sample_with: NULL argument");
    CLD_TRY(check_spec(sp, channels, size));
    sampling r;
    memset(&r, 0, sizeof r);
    r.ctx = ctx;
    r.model = model;
    r.user = user;
    r.learned = learned;
    r.learned_user = learned_user;
    r.sp = sp;
    r.o = sp->opts;
    r.C = channels;
    r.S = size;
    r.per = (size_t)channels * size * size;
    r.guided = sp->labels && sp->opts.guidance != 1.0;
    r.out = out;
    /* SDEdit: the schedule cut after the start timestep (the same table, shorter) */
    cld_schedule cut = *s;
    int t0 = (int)lround(sp->strength * s->T) - 1;
    if (t0 < 0) t0 = 0;
    if (sp->init) {
        cut.T = t0 + 1;
        long st = lround(sp->strength * sp->opts.steps);
        r.o.steps = (int)(st < 1 ? 1 : st > cut.T ? cut.T : st);
    }
    r.s = &cut;
    r.moves = r.o.steps;
    if (sp->mask) {
        CLD_TRY(cld_repaint_schedule(r.o.steps, sp->jump, sp->resample, NULL, 0, &r.moves));
        r.moves--;
    }
    if (sp->frames > r.moves + 1)
        return cld__fail(CLD_ERR_INVALID_ARG, "sampling: %d trajectory frames from a run of %d steps",
                         sp->frames, r.moves);
    const int runs = (sp->n + sp->batch - 1) / sp->batch, B = sp->batch < sp->n ? sp->batch : sp->n;
    r.total_moves = runs * r.moves;
    cld_sampler_point *pts = malloc(((size_t)r.o.steps + 1) * sizeof *pts);
    int *t_start = malloc((size_t)B * sizeof *t_start);
    r.frame_at = malloc(((size_t)sp->frames + 1) * sizeof *r.frame_at);
    float *rep = sp->init ? malloc((size_t)B * r.per * sizeof *rep) : NULL;
    cl_mem x0 = NULL;
    cld_status st = pts && t_start && r.frame_at && (!sp->init || rep)
                        ? CLD_OK
                        : cld__fail(CLD_ERR_NOMEM, "sampling: out of host memory");
    for (int f = 0; f < sp->frames; f++) r.frame_at[f] = (int)lround((double)f * r.moves / (sp->frames - 1));
    for (int i = 0; st == CLD_OK && i < B; i++) {
        t_start[i] = t0;
        if (rep) memcpy(rep + (size_t)i * r.per, sp->init, r.per * sizeof(float));
    }
    if (st == CLD_OK) st = cld_sampler_points(r.s, &r.o, pts, NULL);
    if (st == CLD_OK) st = cld_buffer_alloc(ctx, (size_t)B * r.per * sizeof(float), &r.x);
    if (st == CLD_OK && rep) st = cld_buffer_alloc(ctx, (size_t)B * r.per * sizeof(float), &x0);
    if (st == CLD_OK && rep) st = cld_buffer_write(ctx, x0, 0, (size_t)B * r.per * sizeof(float), rep);
    for (int k = 0; k < runs && st == CLD_OK; k++) {
        r.i0 = k * sp->batch;
        r.nb = sp->n - r.i0 < sp->batch ? sp->n - r.i0 : sp->batch;
        r.runs_done = k;
        st = run_batch(&r, pts, t_start, x0);
    }
    long bad = st == CLD_OK ? first_nonfinite(out, sp->n, r.per) : -1;
    if (bad >= 0)
        st = cld__fail(CLD_ERR_STATE,
                       "sample %ld (noise index %lu) holds NaN or Inf after sampling: the model or the "
                       "device computed non-finite values",
                       bad, (unsigned long)(sp->first_index + (uint32_t)bad));
    if (r.x) cld_buffer_release(r.x);
    if (x0) cld_buffer_release(x0);
    free(pts);
    free(t_start);
    free(r.frame_at);
    free(rep);
    return st;
}

cld_status cld_sample_with(cld_ctx *ctx, const cld_schedule *s, cld_model_fn model, void *user, int channels,
                           int size, const cld_sample_spec *sp, float *out)
{
    return sample_impl(ctx, s, model, user, NULL, NULL, channels, size, sp, out);
}

cld_status cld_model_sample(cld_model *m, const cld_sample_spec *spec, float *out)
{
    if (!m || !spec || !out) return cld__fail(CLD_ERR_INVALID_ARG, "cld_model_sample: NULL argument");
    const int nc = m->meta.unet.num_classes;
    if (spec->labels && nc == 0)
        return cld__fail(CLD_ERR_INVALID_ARG, "sampling: class labels for a model without classes");
    if (spec->opts.guidance != 1.0 && nc == 0)
        return cld__fail(CLD_ERR_INVALID_ARG,
                         "sampling: guidance %g needs a class-conditional model (this one has no "
                         "classes)",
                         spec->opts.guidance);
    if (spec->opts.guidance != 1.0 && m->meta.unet.class_no_null)
        return cld__fail(CLD_ERR_INVALID_ARG,
                         "sampling: guidance %g needs a null class, and this model's class table "
                         "(num_class_embeds) has none",
                         spec->opts.guidance);
    for (int i = 0; spec->labels && i < spec->n; i++)
        if (spec->labels[i] < 0 || spec->labels[i] >= nc)
            return cld__fail(CLD_ERR_INVALID_ARG, "sampling: sample %d has class %d (the model has 0 .. %d)",
                             i, spec->labels[i], nc - 1);
    const int guided = spec->labels && spec->opts.guidance != 1.0;
    cld_sample_spec sp = *spec;
    sp.opts.pred = m->meta.diffusion.pred;
    sp.opts.null_label = nc;
    if (sp.batch > 0)
        CLD_TRY(cld_model_check_batch(m, sp.batch, guided));
    else
        CLD_TRY(cld_model_fit_batch(m, guided, sp.n < 64 ? sp.n : 64, &sp.batch));
    CLD_TRY(model_runner(m, guided ? 2 * sp.batch : sp.batch));
    const int C = m->meta.unet.in_channels, S = m->meta.unet.image_size;
    if (m->meta.unet.out_channels == C)
        return sample_impl(m->ctx, m->schedule, cld_unet_runner_fn, m->runner, NULL, NULL, C, S, &sp, out);
    if (!m->meta.diffusion.learned_variance || m->meta.unet.out_channels != 2 * C)
        return cld__fail(CLD_ERR_FORMAT,
                         "sampling: the UNet returns %d channels for %d inputs, and the model has no "
                         "learned variance",
                         m->meta.unet.out_channels, C);
    /* learned variance: DDPM uses it, the other samplers (and RePaint's steps) the prediction half */
    cld_pred_half half = {m->ctx, cld_unet_runner_fn, m->runner, m->per_sample};
    return sample_impl(m->ctx, m->schedule, cld_pred_half_fn, &half, cld_unet_runner_fn, m->runner, C, S, &sp,
                       out);
}

/* ---------------------------------------------------------------- output */

cld_status cld_grid_pixels(const float *x, int n, int C, int S, int cols, int pad, uint8_t **pixels,
                           int *width, int *height)
{
    if (!x || !pixels || !width || !height || n < 1 || C < 1 || C > 4 || S < 1 || cols < 1 || pad < 0)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_grid_pixels: bad argument");
    const size_t total = (size_t)n * C * S * S;
    for (size_t i = 0; i < total; i++)
        if (!isfinite(x[i]))
            return cld__fail(CLD_ERR_STATE, "cld_grid_pixels: image %zu holds NaN or Inf: no PNG of it",
                             i / ((size_t)C * S * S));
    if (cols > n) cols = n;
    const int rows = (n + cols - 1) / cols;
    const long W = (long)cols * (S + pad) + pad, H = (long)rows * (S + pad) + pad;
    if (W > 65535 || H > 65535)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_grid_pixels: a %ld x %ld grid", W, H);
    uint8_t *img = calloc((size_t)W * H * C, 1);
    if (!img) return cld__fail(CLD_ERR_NOMEM, "cld_grid_pixels: out of host memory");
    for (int i = 0; i < n; i++) {
        const long gx = pad + (long)(i % cols) * (S + pad), gy = pad + (long)(i / cols) * (S + pad);
        for (int c = 0; c < C; c++)
            for (int y = 0; y < S; y++)
                for (int xx = 0; xx < S; xx++) {
                    float v = (x[(((size_t)i * C + c) * S + y) * S + xx] + 1.0f) * 127.5f;
                    v = v < 0 ? 0 : v > 255 ? 255 : v;
                    img[((size_t)(gy + y) * W + gx + xx) * C + c] = (uint8_t)(v + 0.5f);
                }
    }
    *pixels = img;
    *width = (int)W;
    *height = (int)H;
    return CLD_OK;
}

/* ---------------------------------------------------------------- recipe */

static const char *const spacing_names[] = {"leading", "trailing", "linspace"};
static const char *const layouts[] = {"grid", "single", "trajectory"};

static int add_hash(cJSON *o, const char *key, uint64_t h)
{
    char v[40];
    snprintf(v, sizeof v, "fnv1a64:%016llx", (unsigned long long)h);
    return cJSON_AddStringToObject(o, key, v) != NULL;
}

static const char *const variance_names[] = {"fixed_small", "fixed_large"};

/* "override": {"schedule": "linear", "T": 1000, ...}: only the keys set */
static int add_overrides(cJSON *parent, const cld_overrides *v)
{
    cJSON *o = cJSON_AddObjectToObject(parent, "override");
    int ok = o != NULL;
    if (ok && (v->set & CLD_OVERRIDE_SCHEDULE))
        ok = cJSON_AddStringToObject(o, "schedule", cld_schedule_name(v->schedule)) != NULL;
    if (ok && (v->set & CLD_OVERRIDE_T)) ok = cJSON_AddNumberToObject(o, "T", v->T) != NULL;
    if (ok && (v->set & CLD_OVERRIDE_BETA_START))
        ok = cJSON_AddNumberToObject(o, "beta_start", v->beta_start) != NULL;
    if (ok && (v->set & CLD_OVERRIDE_BETA_END))
        ok = cJSON_AddNumberToObject(o, "beta_end", v->beta_end) != NULL;
    if (ok && (v->set & CLD_OVERRIDE_PRED))
        ok = cJSON_AddStringToObject(o, "prediction", cld_pred_name(v->pred)) != NULL;
    if (ok && (v->set & CLD_OVERRIDE_VARIANCE))
        ok = (unsigned)v->variance <= CLD_VAR_BETA &&
             cJSON_AddStringToObject(o, "variance", variance_names[v->variance]) != NULL;
    if (ok && (v->set & CLD_OVERRIDE_CLIP))
        ok = cJSON_AddNumberToObject(o, "clip_sample", v->clip_sample) != NULL;
    if (ok && (v->set & CLD_OVERRIDE_STEPS_OFFSET))
        ok = cJSON_AddNumberToObject(o, "steps_offset", v->steps_offset) != NULL;
    if (ok && (v->set & CLD_OVERRIDE_ALPHA_ONE))
        ok = cJSON_AddBoolToObject(o, "set_alpha_to_one", v->set_alpha_to_one) != NULL;
    return ok;
}

cld_status cld_recipe_to_json(const cld_recipe *r, const cld_model_meta *meta, char **json)
{
    if (!r || !json) return cld__fail(CLD_ERR_INVALID_ARG, "cld_recipe_to_json: NULL argument");
    *json = NULL;
    if ((unsigned)r->spacing > 2 || r->n_classes < 0 || r->n_classes > CLD_MODEL_MAX_CLASSES)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_recipe_to_json: bad spacing or classes");
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)r->seed);
    cJSON *o = cJSON_CreateObject(), *cl = cJSON_CreateIntArray(r->classes, r->n_classes),
          *names = cJSON_CreateArray();
    int ok = o && cl && names;
    ok = ok && cJSON_AddStringToObject(o, "format", "cld-recipe 1");
    ok = ok && cJSON_AddStringToObject(o, "engine", CLD_VERSION_STRING);
    ok = ok && cJSON_AddNumberToObject(o, "noise_version", CLD_NOISE_VERSION);
    ok = ok && cJSON_AddStringToObject(o, "model", r->model) && add_hash(o, "model_hash", r->model_hash);
    ok = ok && cJSON_AddStringToObject(o, "sampler", cld_sampler_name(r->sampler));
    ok = ok && cJSON_AddStringToObject(o, "spacing", r->karras ? "karras" : spacing_names[r->spacing]);
    ok = ok && cJSON_AddNumberToObject(o, "steps", r->steps);
    ok = ok && cJSON_AddNumberToObject(o, "eta", r->eta);
    ok = ok && cJSON_AddNumberToObject(o, "guidance", r->guidance);
    ok = ok && cJSON_AddStringToObject(o, "seed", seed);
    ok = ok && cJSON_AddNumberToObject(o, "first_index", r->first_index);
    ok = ok && cJSON_AddNumberToObject(o, "n", r->n);
    ok = ok && cJSON_AddItemToObject(o, "classes", cl);
    if (ok) cl = NULL;
    for (int i = 0; ok && meta && i < r->n_classes; i++)
        ok = r->classes[i] >= 0 && r->classes[i] < meta->n_class_names
                 ? cJSON_AddItemToArray(names, cJSON_CreateString(meta->class_names[r->classes[i]]))
                 : 1;
    ok = ok && cJSON_AddItemToObject(o, "class_names", names);
    if (ok) names = NULL;
    ok = ok && cJSON_AddNumberToObject(o, "batch", r->batch);
    ok = ok && cJSON_AddStringToObject(o, "layout", r->layout);
    ok = ok && cJSON_AddNumberToObject(o, "grid_cols", r->grid_cols);
    ok = ok && cJSON_AddNumberToObject(o, "frames", r->frames);
    if (ok && r->init[0]) {
        ok = cJSON_AddStringToObject(o, "init", r->init) && add_hash(o, "init_hash", r->init_hash) &&
             cJSON_AddNumberToObject(o, "strength", r->strength);
        if (ok && r->mask[0])
            ok = cJSON_AddStringToObject(o, "mask", r->mask) && add_hash(o, "mask_hash", r->mask_hash) &&
                 cJSON_AddNumberToObject(o, "resample", r->resample) &&
                 cJSON_AddNumberToObject(o, "jump", r->jump);
    }
    if (ok && r->noise[0])
        ok = cJSON_AddStringToObject(o, "noise", r->noise) && add_hash(o, "noise_hash", r->noise_hash);
    if (ok && r->overrides.set) ok = add_overrides(o, &r->overrides);
    char *text = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    cJSON_Delete(cl);
    cJSON_Delete(names);
    if (text) {
        *json = malloc(strlen(text) + 1);
        if (*json) strcpy(*json, text);
        cJSON_free(text);
    }
    return *json ? CLD_OK : cld__fail(CLD_ERR_NOMEM, "cld_recipe_to_json: out of host memory");
}

typedef struct rd {
    const cJSON *o;
    cld_status s;
} rd;

static const cJSON *field(rd *d, const char *key, int want_string)
{
    const cJSON *v = d->s == CLD_OK ? cJSON_GetObjectItemCaseSensitive(d->o, key) : NULL;
    if (d->s == CLD_OK && !(want_string ? cJSON_IsString(v) : cJSON_IsNumber(v)))
        d->s = cld__fail(CLD_ERR_FORMAT, "recipe: '%s' is missing or not a %s", key,
                         want_string ? "string" : "number");
    return d->s == CLD_OK ? v : NULL;
}

static double num(rd *d, const char *key, double lo, double hi)
{
    const cJSON *v = field(d, key, 0);
    if (v && !(v->valuedouble >= lo && v->valuedouble <= hi))
        d->s =
            cld__fail(CLD_ERR_FORMAT, "recipe: '%s' = %g is outside [%g, %g]", key, v->valuedouble, lo, hi);
    return v && d->s == CLD_OK ? v->valuedouble : 0.0;
}

static void str(rd *d, const char *key, char *dst, size_t cap)
{
    const cJSON *v = field(d, key, 1);
    if (v && strlen(v->valuestring) >= cap)
        d->s = cld__fail(CLD_ERR_FORMAT, "recipe: '%s' is too long", key);
    else if (v)
        strcpy(dst, v->valuestring);
}

static uint64_t hash_field(rd *d, const char *key)
{
    char v[40] = "";
    unsigned long long h = 0;
    str(d, key, v, sizeof v);
    if (d->s == CLD_OK && (strncmp(v, "fnv1a64:", 8) || sscanf(v + 8, "%16llx", &h) != 1))
        d->s = cld__fail(CLD_ERR_FORMAT, "recipe: '%s' = '%s' is not fnv1a64:HEX", key, v);
    return h;
}

static void read_overrides(rd *parent, const cJSON *ov, cld_overrides *v)
{
    rd d = {ov, parent->s};
    if (d.s == CLD_OK && !cJSON_IsObject(ov))
        d.s = cld__fail(CLD_ERR_FORMAT, "recipe: 'override' is not an object");
    for (const cJSON *e = d.s == CLD_OK ? ov->child : NULL; d.s == CLD_OK && e; e = e->next) {
        const char *k = e->string;
        char name[32] = "";
        if (!strcmp(k, "schedule")) {
            str(&d, k, name, sizeof name);
            if (d.s == CLD_OK) d.s = cld_schedule_parse(name, &v->schedule);
            v->set |= CLD_OVERRIDE_SCHEDULE;
        } else if (!strcmp(k, "T")) {
            v->T = (int)num(&d, k, 2, 100000);
            v->set |= CLD_OVERRIDE_T;
        } else if (!strcmp(k, "beta_start")) {
            v->beta_start = num(&d, k, 0, 1);
            v->set |= CLD_OVERRIDE_BETA_START;
        } else if (!strcmp(k, "beta_end")) {
            v->beta_end = num(&d, k, 0, 1);
            v->set |= CLD_OVERRIDE_BETA_END;
        } else if (!strcmp(k, "prediction")) {
            str(&d, k, name, sizeof name);
            if (d.s == CLD_OK) d.s = cld_pred_parse(name, &v->pred);
            v->set |= CLD_OVERRIDE_PRED;
        } else if (!strcmp(k, "variance")) {
            str(&d, k, name, sizeof name);
            int found = -1;
            for (int i = 0; i < 2; i++)
                if (!strcmp(name, variance_names[i])) found = i;
            if (d.s == CLD_OK && found < 0)
                d.s = cld__fail(CLD_ERR_FORMAT, "recipe: override variance '%s' (fixed_small, fixed_large)",
                                name);
            v->variance = found > 0 ? CLD_VAR_BETA : CLD_VAR_POSTERIOR;
            v->set |= CLD_OVERRIDE_VARIANCE;
        } else if (!strcmp(k, "clip_sample")) {
            v->clip_sample = num(&d, k, 0, 1e6);
            v->set |= CLD_OVERRIDE_CLIP;
        } else if (!strcmp(k, "steps_offset")) {
            v->steps_offset = (int)num(&d, k, 0, 100000);
            v->set |= CLD_OVERRIDE_STEPS_OFFSET;
        } else if (!strcmp(k, "set_alpha_to_one")) {
            if (!cJSON_IsBool(e))
                d.s = cld__fail(CLD_ERR_FORMAT, "recipe: override 'set_alpha_to_one' is not a bool");
            v->set_alpha_to_one = cJSON_IsTrue(e);
            v->set |= CLD_OVERRIDE_ALPHA_ONE;
        } else
            d.s = cld__fail(CLD_ERR_FORMAT, "recipe: unknown override '%s'", k);
    }
    parent->s = d.s;
}

cld_status cld_recipe_from_json(const char *json, cld_recipe *out)
{
    if (!json || !out) return cld__fail(CLD_ERR_INVALID_ARG, "cld_recipe_from_json: NULL argument");
    cld_recipe r;
    memset(&r, 0, sizeof r);
    cJSON *o = cJSON_Parse(json);
    rd d = {o, o ? CLD_OK : cld__fail(CLD_ERR_FORMAT, "recipe: not JSON")};
    char fmt[32] = "", sampler[32] = "", spacing[32] = "", seed[32] = "";
    str(&d, "format", fmt, sizeof fmt);
    if (d.s == CLD_OK && strcmp(fmt, "cld-recipe 1"))
        d.s = cld__fail(CLD_ERR_FORMAT, "recipe format '%s' (this build reads cld-recipe 1)", fmt);
    double nv = num(&d, "noise_version", 0, 1e9);
    if (d.s == CLD_OK && nv != CLD_NOISE_VERSION)
        d.s = cld__fail(CLD_ERR_FORMAT, "recipe: made with noise version %g, this build has %d", nv,
                        CLD_NOISE_VERSION);
    str(&d, "model", r.model, sizeof r.model);
    r.model_hash = hash_field(&d, "model_hash");
    str(&d, "sampler", sampler, sizeof sampler);
    if (d.s == CLD_OK) d.s = cld_sampler_parse(sampler, &r.sampler);
    str(&d, "spacing", spacing, sizeof spacing);
    int sp = -1;
    for (int i = 0; i < 3; i++)
        if (!strcmp(spacing, spacing_names[i])) sp = i;
    r.karras = !strcmp(spacing, "karras");
    r.spacing = sp >= 0 ? (cld_spacing)sp : CLD_SPACING_TRAILING;
    if (d.s == CLD_OK && sp < 0 && !r.karras)
        d.s =
            cld__fail(CLD_ERR_FORMAT, "recipe: spacing '%s' (leading, trailing, linspace, karras)", spacing);
    r.steps = (int)num(&d, "steps", 1, 1e6);
    r.eta = num(&d, "eta", 0, 1e6);
    r.guidance = num(&d, "guidance", -1e6, 1e6);
    str(&d, "seed", seed, sizeof seed);
    char *end = seed;
    if (d.s == CLD_OK) r.seed = strtoull(seed, &end, 10);
    if (d.s == CLD_OK && (*end || !seed[0])) d.s = cld__fail(CLD_ERR_FORMAT, "recipe: seed '%s'", seed);
    r.first_index = (uint32_t)num(&d, "first_index", 0, 4294967295.0);
    r.n = (int)num(&d, "n", 1, 1e7);
    const cJSON *cl = d.s == CLD_OK ? cJSON_GetObjectItemCaseSensitive(o, "classes") : NULL;
    if (d.s == CLD_OK && (!cJSON_IsArray(cl) || cJSON_GetArraySize(cl) > CLD_MODEL_MAX_CLASSES))
        d.s = cld__fail(CLD_ERR_FORMAT, "recipe: 'classes' is not an array of at most %d",
                        CLD_MODEL_MAX_CLASSES);
    for (const cJSON *e = cl ? cl->child : NULL; d.s == CLD_OK && e; e = e->next) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= CLD_MODEL_MAX_CLASSES)
            d.s = cld__fail(CLD_ERR_FORMAT, "recipe: 'classes' holds a bad class");
        else
            r.classes[r.n_classes++] = (int)e->valuedouble;
    }
    r.batch = (int)num(&d, "batch", 1, 1e7);
    str(&d, "layout", r.layout, sizeof r.layout);
    if (d.s == CLD_OK && strcmp(r.layout, layouts[0]) && strcmp(r.layout, layouts[1]) &&
        strcmp(r.layout, layouts[2]))
        d.s = cld__fail(CLD_ERR_FORMAT, "recipe: layout '%s' (grid, single, trajectory)", r.layout);
    r.grid_cols = (int)num(&d, "grid_cols", 0, 65535);
    r.frames = (int)num(&d, "frames", 0, 65535);
    r.strength = 1.0;
    r.resample = r.jump = 1;
    if (d.s == CLD_OK && cJSON_GetObjectItemCaseSensitive(o, "init")) {
        str(&d, "init", r.init, sizeof r.init);
        r.init_hash = hash_field(&d, "init_hash");
        r.strength = num(&d, "strength", 0, 1);
        if (d.s == CLD_OK && cJSON_GetObjectItemCaseSensitive(o, "mask")) {
            str(&d, "mask", r.mask, sizeof r.mask);
            r.mask_hash = hash_field(&d, "mask_hash");
            r.resample = (int)num(&d, "resample", 1, 1e6);
            r.jump = (int)num(&d, "jump", 1, 1e6);
        }
    }
    if (d.s == CLD_OK && cJSON_GetObjectItemCaseSensitive(o, "noise")) {
        str(&d, "noise", r.noise, sizeof r.noise);
        r.noise_hash = hash_field(&d, "noise_hash");
    }
    const cJSON *ov = d.s == CLD_OK ? cJSON_GetObjectItemCaseSensitive(o, "override") : NULL;
    if (ov) read_overrides(&d, ov, &r.overrides);
    cJSON_Delete(o);
    if (d.s == CLD_OK) *out = r;
    return d.s;
}
