/* Model files' metadata and the UNet runner for the samplers. */
#include "internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const pred_names[] = {"eps", "v", "x0"};
static const char *const sched_names[] = {"linear", "cosine", "scaled-linear"};

const char *cld_pred_name(cld_pred_type p) { return (unsigned)p < 3 ? pred_names[p] : "?"; }
const char *cld_schedule_name(cld_schedule_kind k) { return (unsigned)k < 3 ? sched_names[k] : "?"; }

cld_status cld_pred_parse(const char *name, cld_pred_type *p)
{
    for (int i = 0; name && i < 3; i++)
        if (!strcmp(name, pred_names[i])) {
            *p = (cld_pred_type)i;
            return CLD_OK;
        }
    return cld__fail(CLD_ERR_INVALID_ARG, "unknown prediction type '%s' (eps, v, x0)",
                     name ? name : "(null)");
}

cld_status cld_schedule_parse(const char *name, cld_schedule_kind *k)
{
    for (int i = 0; name && i < 3; i++)
        if (!strcmp(name, sched_names[i])) {
            *k = (cld_schedule_kind)i;
            return CLD_OK;
        }
    return cld__fail(CLD_ERR_INVALID_ARG, "unknown schedule '%s' (linear, cosine, scaled-linear)",
                     name ? name : "(null)");
}

cld_status cld_diffusion_schedule(const cld_diffusion_config *d, cld_schedule **out)
{
    if (!d || !out) return cld__fail(CLD_ERR_INVALID_ARG, "cld_diffusion_schedule: NULL argument");
    return cld_schedule_create(d->schedule, d->T, d->beta_start, d->beta_end, d->zero_terminal_snr, out);
}

static char *dup_cjson(char *text)
{
    char *r = text ? malloc(strlen(text) + 1) : NULL;
    if (r) strcpy(r, text);
    if (text) cJSON_free(text);
    return r;
}

cld_status cld_model_meta_to_json(const cld_model_meta *m, char **json)
{
    if (!m || !json) return cld__fail(CLD_ERR_INVALID_ARG, "cld_model_meta_to_json: NULL argument");
    *json = NULL;
    char *unet = NULL;
    CLD_TRY(cld_unet_config_to_json(&m->unet, &unet));
    cJSON *root = cJSON_CreateObject(), *d = cJSON_CreateObject(), *cl = cJSON_CreateArray();
    int ok = root && d && cl;
    ok = ok && cJSON_AddStringToObject(d, "schedule", cld_schedule_name(m->diffusion.schedule));
    ok = ok && cJSON_AddNumberToObject(d, "T", m->diffusion.T);
    ok = ok && cJSON_AddNumberToObject(d, "beta_start", m->diffusion.beta_start);
    ok = ok && cJSON_AddNumberToObject(d, "beta_end", m->diffusion.beta_end);
    ok = ok && cJSON_AddBoolToObject(d, "zero_terminal_snr", m->diffusion.zero_terminal_snr);
    ok = ok && cJSON_AddStringToObject(d, "prediction", cld_pred_name(m->diffusion.pred));
    ok = ok &&
         cJSON_AddStringToObject(d, "variance", m->diffusion.learned_variance ? "learned_range" : "fixed");
    for (int i = 0; ok && i < m->n_class_names; i++)
        ok = cJSON_AddItemToArray(cl, cJSON_CreateString(m->class_names[i]));
    char *dtext = ok ? cJSON_PrintUnformatted(d) : NULL, *ctext = ok ? cJSON_PrintUnformatted(cl) : NULL;
    ok = ok && dtext && ctext && cJSON_AddStringToObject(root, "cld.format", "cldiffusion-model 1") &&
         cJSON_AddStringToObject(root, "cld.unet", unet) &&
         cJSON_AddStringToObject(root, "cld.diffusion", dtext) &&
         cJSON_AddStringToObject(root, "cld.classes", ctext);
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    if (dtext) cJSON_free(dtext);
    if (ctext) cJSON_free(ctext);
    cJSON_Delete(root);
    cJSON_Delete(d);
    cJSON_Delete(cl);
    free(unet);
    *json = dup_cjson(text);
    return *json ? CLD_OK : cld__fail(CLD_ERR_NOMEM, "cld_model_meta_to_json: out of host memory");
}

static const char *meta_str(const cJSON *root, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

cld_status cld_model_meta_from_json(const char *json, cld_model_meta *m)
{
    if (!json || !m) return cld__fail(CLD_ERR_INVALID_ARG, "cld_model_meta_from_json: NULL argument");
    cld_model_meta r;
    memset(&r, 0, sizeof r);
    cJSON *root = cJSON_Parse(json), *d = NULL, *cl = NULL;
    cld_status s = CLD_OK;
    const char *fmt = root ? meta_str(root, "cld.format") : NULL;
    const char *unet = root ? meta_str(root, "cld.unet") : NULL;
    const char *dtext = root ? meta_str(root, "cld.diffusion") : NULL;
    const char *ctext = root ? meta_str(root, "cld.classes") : NULL;
    if (!root)
        s = cld__fail(CLD_ERR_FORMAT, "model metadata is not JSON");
    else if (!fmt || strncmp(fmt, "cldiffusion-model ", 18))
        s = cld__fail(CLD_ERR_FORMAT, "not a cldiffusion model (metadata key 'cld.format' missing or wrong)");
    else if (strcmp(fmt, "cldiffusion-model 1"))
        s = cld__fail(CLD_ERR_FORMAT,
                      "model format '%s' is newer than this build reads (cldiffusion-model 1)", fmt);
    else if (!unet || !dtext)
        s = cld__fail(CLD_ERR_FORMAT, "model metadata lacks '%s'", !unet ? "cld.unet" : "cld.diffusion");
    if (s == CLD_OK) s = cld_unet_config_from_json(unet, &r.unet);
    if (s == CLD_OK && !(d = cJSON_Parse(dtext)))
        s = cld__fail(CLD_ERR_FORMAT, "model metadata 'cld.diffusion' is not JSON");
    if (s == CLD_OK) {
        const cJSON *T = cJSON_GetObjectItemCaseSensitive(d, "T"),
                    *bs = cJSON_GetObjectItemCaseSensitive(d, "beta_start"),
                    *be = cJSON_GetObjectItemCaseSensitive(d, "beta_end"),
                    *z = cJSON_GetObjectItemCaseSensitive(d, "zero_terminal_snr");
        const char *sch = meta_str(d, "schedule"), *pr = meta_str(d, "prediction");
        if (!cJSON_IsNumber(T) || T->valuedouble < 2 || T->valuedouble > 100000 ||
            T->valuedouble != floor(T->valuedouble))
            s = cld__fail(CLD_ERR_FORMAT,
                          "model metadata: diffusion 'T' missing or not an integer in 2..100000");
        else if (!cJSON_IsNumber(bs) || !cJSON_IsNumber(be) || !cJSON_IsBool(z))
            s = cld__fail(CLD_ERR_FORMAT,
                          "model metadata: diffusion 'beta_start', 'beta_end' or 'zero_terminal_snr' "
                          "missing");
        if (s == CLD_OK) s = cld_schedule_parse(sch, &r.diffusion.schedule);
        if (s == CLD_OK) s = cld_pred_parse(pr, &r.diffusion.pred);
        if (s == CLD_OK) {
            r.diffusion.T = (int)T->valuedouble;
            r.diffusion.beta_start = bs->valuedouble;
            r.diffusion.beta_end = be->valuedouble;
            r.diffusion.zero_terminal_snr = cJSON_IsTrue(z);
            const char *var = meta_str(d, "variance");
            if (var && strcmp(var, "fixed") && strcmp(var, "learned_range"))
                s = cld__fail(CLD_ERR_FORMAT,
                              "model metadata: diffusion 'variance' is '%s' (fixed, learned_range)", var);
            r.diffusion.learned_variance = var && !strcmp(var, "learned_range");
            if (s == CLD_OK && r.diffusion.learned_variance && r.unet.out_channels != 2 * r.unet.in_channels)
                s = cld__fail(CLD_ERR_FORMAT,
                              "model metadata: learned variance needs %d output channels, the UNet has %d",
                              2 * r.unet.in_channels, r.unet.out_channels);
        }
    }
    if (s == CLD_OK && ctext) {
        cl = cJSON_Parse(ctext);
        if (!cJSON_IsArray(cl))
            s = cld__fail(CLD_ERR_FORMAT, "model metadata 'cld.classes' is not a JSON array");
        int i = 0;
        for (const cJSON *e = cl ? cl->child : NULL; s == CLD_OK && e; e = e->next, i++) {
            if (!cJSON_IsString(e) || strlen(e->valuestring) >= CLD_MODEL_CLASS_NAME ||
                i >= CLD_MODEL_MAX_CLASSES)
                s = cld__fail(CLD_ERR_FORMAT, "model metadata 'cld.classes'[%d] is not a short string", i);
            else
                strcpy(r.class_names[i], e->valuestring);
        }
        r.n_class_names = i;
        if (s == CLD_OK && i && i != r.unet.num_classes)
            s = cld__fail(CLD_ERR_FORMAT, "model metadata names %d classes, the UNet has %d", i,
                          r.unet.num_classes);
    }
    cJSON_Delete(root);
    cJSON_Delete(d);
    cJSON_Delete(cl);
    if (s == CLD_OK) *m = r;
    return s;
}

/* ---------------------------------------------------------------- runner */

struct cld_unet_runner {
    cld_ctx *ctx;
    cld_graph *g;
    cld_tensor *x, *t, *labels, *y;
    int max_batch, null_label;
    size_t per_in, per_out;
    float *host; /* max_batch floats: t and labels staging */
    size_t arena_bytes;
    size_t largest_bytes; /* its largest tensor or workspace */
};

cld_status cld_unet_runner_create(cld_ctx *ctx, cld_params *params, const cld_unet_config *cfg, int max_batch,
                                  cld_unet_runner **out)
{
    if (!ctx || !params || !cfg || !out || max_batch < 1)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_unet_runner_create: bad argument");
    CLD_TRY(cld_unet_config_check(cfg));
    cld_unet_runner *r = calloc(1, sizeof *r);
    if (!r) return cld__fail(CLD_ERR_NOMEM, "cld_unet_runner_create: out of host memory");
    r->ctx = ctx;
    r->max_batch = max_batch;
    r->null_label = cfg->num_classes;
    const int S = cfg->image_size;
    r->per_in = (size_t)cfg->in_channels * S * S;
    r->per_out = (size_t)cfg->out_channels * S * S;
    cld_unet_config c = *cfg;
    c.dropout = 0.0f;
    int xs[4] = {max_batch, cfg->in_channels, S, S}, ts[1] = {max_batch};
    cld_plan_stats st;
    cld_status s = (r->host = malloc((size_t)max_batch * sizeof(float)))
                       ? CLD_OK
                       : cld__fail(CLD_ERR_NOMEM, "cld_unet_runner_create: out of host memory");
    if (s == CLD_OK) s = cld_graph_create(ctx, params, &r->g);
    if (s == CLD_OK) s = cld_graph_input(r->g, "x_t", 4, xs, 0, &r->x);
    if (s == CLD_OK) s = cld_graph_input(r->g, "t", 1, ts, 0, &r->t);
    if (s == CLD_OK && cfg->num_classes > 0) s = cld_graph_input(r->g, "labels", 1, ts, 0, &r->labels);
    if (s == CLD_OK) s = cld_unet_build(r->g, &c, r->x, r->t, r->labels, &r->y);
    if (s == CLD_OK) s = cld_graph_set_output(r->g, r->y);
    if (s == CLD_OK) s = cld_graph_plan(r->g, &st);
    if (s != CLD_OK) {
        cld_unet_runner_free(r);
        return s;
    }
    r->arena_bytes = st.peak_bytes + st.pinned_bytes;
    r->largest_bytes = st.largest_bytes;
    *out = r;
    return CLD_OK;
}

cld_status cld_unet_runner_free(cld_unet_runner *r)
{
    if (!r) return CLD_OK;
    cld_graph_free(r->g);
    free(r->host);
    free(r);
    return CLD_OK;
}

cld_status cld_unet_runner_bytes(const cld_unet_runner *r, size_t *bytes)
{
    if (!r || !bytes) return cld__fail(CLD_ERR_INVALID_ARG, "cld_unet_runner_bytes: NULL argument");
    *bytes = r->arena_bytes;
    return CLD_OK;
}

cld_status cld_unet_runner_largest(const cld_unet_runner *r, size_t *bytes)
{
    if (!r || !bytes) return cld__fail(CLD_ERR_INVALID_ARG, "cld_unet_runner_largest: NULL argument");
    *bytes = r->largest_bytes;
    return CLD_OK;
}

cld_status cld_unet_runner_fn(void *user, cl_mem x, size_t x_off, cl_mem out, size_t out_off, int n,
                              const float *t, const int *labels)
{
    cld_unet_runner *r = user;
    if (!r || !x || !out || !t) return cld__fail(CLD_ERR_INVALID_ARG, "cld_unet_runner_fn: NULL argument");
    if (n < 1 || n > r->max_batch)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_unet_runner_fn: batch %d, the runner holds %d", n,
                         r->max_batch);
    if (labels && !r->labels)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_unet_runner_fn: labels for an unconditional model");
    cl_mem xb, yb;
    size_t xo, yo;
    CLD_TRY(cld_tensor_buffer(r->x, &xb, &xo));
    CLD_TRY(cld_tensor_buffer(r->y, &yb, &yo));
    cl_int err = clEnqueueCopyBuffer(r->ctx->queue, x, xb, x_off * sizeof(float), xo * sizeof(float),
                                     (size_t)n * r->per_in * sizeof(float), 0, NULL, NULL);
    CLD_TRY(cld__cl_check(err, "cld_unet_runner_fn: copy x"));
    /* padding rows: a valid timestep and the null label; their outputs are dropped */
    for (int i = 0; i < r->max_batch; i++) r->host[i] = i < n ? t[i] : t[0];
    CLD_TRY(cld_tensor_write(r->g, r->t, r->host));
    if (r->labels) {
        for (int i = 0; i < r->max_batch; i++)
            r->host[i] = (float)(labels && i < n ? labels[i] : r->null_label);
        CLD_TRY(cld_tensor_write(r->g, r->labels, r->host));
    }
    CLD_TRY(cld_graph_run(r->g));
    err = clEnqueueCopyBuffer(r->ctx->queue, yb, out, yo * sizeof(float), out_off * sizeof(float),
                              (size_t)n * r->per_out * sizeof(float), 0, NULL, NULL);
    return cld__cl_check(err, "cld_unet_runner_fn: copy out");
}
