/* The DDPM UNet (Ho et al. 2020), laid out as diffusers' UNet2DModel for
 * google/ddpm-cifar10-32 so that parameter names and shapes match its
 * state_dict ("down_blocks.0.resnets.0.conv1.weight", ...).
 *
 *   t (N) -> sinusoidal(base) -> linear(base, 4b) -> SiLU -> linear(4b, 4b) = temb
 *            (+ class_embedding[labels] (num_classes + 1, 4b), last row = null class)
 *   x (N, in, S, S) -> conv_in 3x3 -> down levels -> mid -> up levels
 *     -> GN -> SiLU -> conv_out 3x3 -> (N, out, S, S)
 *
 *   down level i: num_res_blocks x [ResBlock (+ Attention at attn_res)], then a
 *                 3x3 stride-2 conv (pad 1) except at the last level; every
 *                 block output is pushed on the skip stack (with conv_in's).
 *   mid:          ResBlock, Attention, ResBlock.
 *   up level i:   (num_res_blocks + 1) x [concat(h, skip.pop()) -> ResBlock
 *                 (+ Attention)], then nearest 2x + 3x3 conv except at level 0.
 *   ResBlock:     GN -> SiLU -> conv3x3 -> + linear(SiLU(temb)) as (N, C, 1, 1)
 *                 -> GN -> SiLU -> dropout -> conv3x3 -> + shortcut (1x1 conv
 *                 when the channel count changes).
 *   Attention:    GN -> q, k, v 1x1 projections -> softmax(q^T k / sqrt(d))
 *                 over keys -> v attn^T -> 1x1 output projection -> + x.
 *
 * Initialisation follows DDPM's default_init: weights U(-b, b) with
 * b = sqrt(3 / fan_avg), fan_avg = (fan_in + fan_out) / 2 (variance scaling
 * 1.0, uniform), biases zero, GN gamma 1 / beta 0, the class table N(0, 1)
 * as nn.Embedding. As in DDPM (which scales them by 1e-10) the last conv of
 * every ResBlock, the attention output projection and conv_out start at
 * zero: each block starts as the identity and the initial output is 0.
 * GroupNorm eps is 1e-6 as in diffusers' DDPM configs. Downsampling uses a
 * symmetric pad of 1 (the TF original); diffusers' ddpm checkpoints pad
 * (0, 1, 0, 1), so a converted checkpoint differs there by a one-pixel shift.
 */
#include "internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define UNET_GN_EPS 1e-6f

/* ------------------------------------------------------------------ config */

cld_status cld_unet_config_preset(const char *name, cld_unet_config *cfg)
{
    if (!name || !cfg) return cld__fail(CLD_ERR_INVALID_ARG, "cld_unet_config_preset: NULL argument");
    cld_unet_config c;
    memset(&c, 0, sizeof c);
    c.heads = 1;
    c.norm_groups = 32;
    c.num_res_blocks = 2;
    c.dropout = 0.1f;
    c.n_attn = 1;
    if (!strcmp(name, "cifar10")) {
        c.in_channels = c.out_channels = 3;
        c.image_size = 32;
        c.base_channels = 128;
        c.n_levels = 4;
        const int m[4] = {1, 2, 2, 2};
        memcpy(c.mult, m, sizeof m);
        c.attn_res[0] = 16;
    } else if (!strcmp(name, "fashion-mnist")) {
        c.in_channels = c.out_channels = 1;
        c.image_size = 28;
        c.base_channels = 64;
        c.n_levels = 3;
        const int m[3] = {1, 2, 2};
        memcpy(c.mult, m, sizeof m);
        c.attn_res[0] = 7;
    } else {
        return cld__fail(CLD_ERR_INVALID_ARG, "unknown UNet preset '%s' (known: cifar10, fashion-mnist)",
                         name);
    }
    *cfg = c;
    return CLD_OK;
}

/* diffusers configs: attention by block type; classic: by resolution */
static int attn_down(const cld_unet_config *cfg, int level, int res);
static int attn_up(const cld_unet_config *cfg, int u, int res);

static int attn_at(const cld_unet_config *cfg, int res)
{
    for (int i = 0; i < cfg->n_attn; i++)
        if (cfg->attn_res[i] == res) return 1;
    return 0;
}

static int attn_down(const cld_unet_config *cfg, int level, int res)
{
    return cfg->diffusers ? cfg->down_attn[level] != 0 : attn_at(cfg, res);
}

static int attn_up(const cld_unet_config *cfg, int u, int res)
{
    return cfg->diffusers ? cfg->up_attn[u] != 0 : attn_at(cfg, res);
}

/* The diffusers fields of a config: all zero unless cfg->diffusers. */
static cld_status check_diffusers(const cld_unet_config *cfg)
{
#define BAD(...) return cld__fail(CLD_ERR_INVALID_ARG, "unet config: " __VA_ARGS__)
    int any = cfg->norm_eps != 0.0f || cfg->flip_sin_to_cos || cfg->freq_shift != 0.0f || cfg->head_dim ||
              cfg->downsample_padding || cfg->class_no_null;
    for (int i = 0; i < CLD_UNET_MAX_LEVELS; i++) any = any || cfg->down_attn[i] || cfg->up_attn[i];
    if (!cfg->diffusers) {
        if (any) BAD("diffusers options (norm_eps, head_dim, down_attn, ...) set but diffusers = 0");
        return CLD_OK;
    }
    if (!(cfg->norm_eps > 0.0f)) BAD("norm_eps = %g (must be > 0)", (double)cfg->norm_eps);
    if (!((float)(cfg->base_channels / 2) - cfg->freq_shift > 0.0f))
        BAD("freq_shift = %g (must be below half the embedding size, %d)", (double)cfg->freq_shift,
            cfg->base_channels / 2);
    if (cfg->downsample_padding != 0 && cfg->downsample_padding != 1)
        BAD("downsample_padding = %d (0 or 1)", cfg->downsample_padding);
    if (cfg->head_dim < 0) BAD("head_dim = %d (must be >= 0)", cfg->head_dim);
    if (cfg->n_attn)
        BAD("attn_res is not used with diffusers = 1 (attention is by block: down_attn, up_attn)");
    if (cfg->heads != 1) BAD("heads = %d: diffusers configs give head_dim instead", cfg->heads);
    if (cfg->class_no_null && cfg->num_classes < 1) BAD("class_no_null needs num_classes >= 1");
    for (int i = cfg->n_levels; i < CLD_UNET_MAX_LEVELS; i++)
        if (cfg->down_attn[i] || cfg->up_attn[i])
            BAD("down_attn / up_attn set past the %d levels", cfg->n_levels);
    if (cfg->head_dim) {
        for (int i = 0; i < cfg->n_levels; i++) {
            const int ch = cfg->base_channels * cfg->mult[i];
            const int used = cfg->down_attn[i] || cfg->up_attn[cfg->n_levels - 1 - i] ||
                             (i == cfg->n_levels - 1 && !cfg->no_mid_attn);
            if (used && ch % cfg->head_dim)
                BAD("head_dim = %d does not divide the %d channels of level %d", cfg->head_dim, ch, i);
        }
    }
#undef BAD
    return CLD_OK;
}

cld_status cld_unet_config_check(const cld_unet_config *cfg)
{
    if (!cfg) return cld__fail(CLD_ERR_INVALID_ARG, "cld_unet_config_check: NULL config");
#define BAD(...) return cld__fail(CLD_ERR_INVALID_ARG, "unet config: " __VA_ARGS__)
    if (cfg->in_channels < 1) BAD("in_channels = %d (must be >= 1)", cfg->in_channels);
    if (cfg->out_channels < 1) BAD("out_channels = %d (must be >= 1)", cfg->out_channels);
    if (cfg->base_channels < 4 || cfg->base_channels % 2)
        BAD("base_channels = %d (must be even and >= 4: it is the sinusoidal embedding size)",
            cfg->base_channels);
    if (cfg->n_levels < 1 || cfg->n_levels > CLD_UNET_MAX_LEVELS)
        BAD("n_levels = %d (must be in 1..%d)", cfg->n_levels, CLD_UNET_MAX_LEVELS);
    if (cfg->num_res_blocks < 1) BAD("num_res_blocks = %d (must be >= 1)", cfg->num_res_blocks);
    if (cfg->heads < 1) BAD("heads = %d (must be >= 1)", cfg->heads);
    if (cfg->norm_groups < 0) BAD("norm_groups = %d (must be >= 1, or 0 for none)", cfg->norm_groups);
    /* Sizes are bounded before any product of them is formed, so no later int arithmetic on a
     * hostile config can overflow (a fuzzed config.json found base_channels * mult wrapping). */
    if (cfg->in_channels > CLD_UNET_MAX_CHANNELS || cfg->out_channels > CLD_UNET_MAX_CHANNELS)
        BAD("in_channels = %d / out_channels = %d (at most %d)", cfg->in_channels, cfg->out_channels,
            CLD_UNET_MAX_CHANNELS);
    if (cfg->num_res_blocks > 64) BAD("num_res_blocks = %d (at most 64)", cfg->num_res_blocks);
    if (cfg->image_size > 65536) BAD("image_size = %d (at most 65536)", cfg->image_size);
    for (int i = 0; i < cfg->n_levels; i++) {
        if (cfg->mult[i] < 1) BAD("mult[%d] = %d (must be >= 1)", i, cfg->mult[i]);
        if ((long long)cfg->base_channels * cfg->mult[i] > CLD_UNET_MAX_CHANNELS)
            BAD("level %d: base_channels %d x mult %d is more than %d channels", i, cfg->base_channels,
                cfg->mult[i], CLD_UNET_MAX_CHANNELS);
    }
    CLD_TRY(check_diffusers(cfg));
    int any_block_attn = 0;
    for (int i = 0; i < cfg->n_levels && i < CLD_UNET_MAX_LEVELS; i++)
        any_block_attn = any_block_attn || cfg->down_attn[i] || cfg->up_attn[i];
    if (cfg->norm_groups == 0 && (cfg->n_attn > 0 || any_block_attn || !cfg->no_mid_attn))
        BAD("norm_groups = 0 (no normalisation) needs a net without attention (attn_res [], mid_attention false)");
    const int groups = cfg->norm_groups ? cfg->norm_groups : 1;
    if (!(cfg->dropout >= 0.0f && cfg->dropout < 1.0f)) BAD("dropout = %g (must be in [0, 1))", cfg->dropout);
    if (cfg->num_classes < 0) BAD("num_classes = %d (must be >= 0)", cfg->num_classes);
    if (cfg->base_channels % groups)
        BAD("base_channels = %d is not a multiple of norm_groups = %d", cfg->base_channels, cfg->norm_groups);
    int down = 1 << (cfg->n_levels - 1);
    if (cfg->image_size < 1 || cfg->image_size % down)
        BAD("image_size = %d (must be a positive multiple of %d for %d levels)", cfg->image_size, down,
            cfg->n_levels);
    for (int i = 0; i < cfg->n_levels; i++) {
        int ch = cfg->base_channels * cfg->mult[i];
        if (ch % groups)
            BAD("mult[%d]: %d channels is not a multiple of norm_groups = %d", i, ch, cfg->norm_groups);
    }
    if (cfg->n_attn < 0 || cfg->n_attn > CLD_UNET_MAX_LEVELS)
        BAD("n_attn = %d (must be in 0..%d)", cfg->n_attn, CLD_UNET_MAX_LEVELS);
    for (int a = 0; a < cfg->n_attn; a++) {
        int found = -1;
        for (int i = 0; i < cfg->n_levels; i++)
            if (cfg->image_size >> i == cfg->attn_res[a]) found = i;
        if (found < 0)
            BAD("attn_res[%d] = %d is not a resolution of the UNet (%d halved up to %d times)", a,
                cfg->attn_res[a], cfg->image_size, cfg->n_levels - 1);
        int ch = cfg->base_channels * cfg->mult[found];
        if (ch % cfg->heads)
            BAD("attn_res[%d]: %d channels is not a multiple of heads = %d", a, ch, cfg->heads);
    }
    int last = cfg->base_channels * cfg->mult[cfg->n_levels - 1];
    if (last % cfg->heads) BAD("heads = %d does not divide the middle block's %d channels", cfg->heads, last);
#undef BAD
    return CLD_OK;
}

/* The shortest decimal that reads back as the same float (0.1f -> 0.1). */
static double short_float(float f)
{
    char buf[32];
    for (int prec = 6; prec < 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if ((float)strtod(buf, NULL) == f) return strtod(buf, NULL);
    }
    return (double)f;
}

/* Attach item under key; an item that could not be attached (or NULL) is
 * freed here, never leaked. */
static int add_owned(cJSON *o, const char *key, cJSON *item)
{
    if (!item) return 0;
    if (cJSON_AddItemToObject(o, key, item)) return 1;
    cJSON_Delete(item);
    return 0;
}

cld_status cld_unet_config_to_json(const cld_unet_config *cfg, char **json)
{
    if (!cfg || !json) return cld__fail(CLD_ERR_INVALID_ARG, "cld_unet_config_to_json: NULL argument");
    CLD_TRY(cld_unet_config_check(cfg));
    *json = NULL;
    cJSON *o = cJSON_CreateObject();
    int ok = o != NULL;
    ok = ok && cJSON_AddNumberToObject(o, "in_channels", cfg->in_channels);
    ok = ok && cJSON_AddNumberToObject(o, "out_channels", cfg->out_channels);
    ok = ok && cJSON_AddNumberToObject(o, "image_size", cfg->image_size);
    ok = ok && cJSON_AddNumberToObject(o, "base_channels", cfg->base_channels);
    ok = ok && add_owned(o, "mult", cJSON_CreateIntArray(cfg->mult, cfg->n_levels));
    ok = ok && cJSON_AddNumberToObject(o, "num_res_blocks", cfg->num_res_blocks);
    cJSON *attn = ok ? cJSON_AddArrayToObject(o, "attn_res") : NULL;
    ok = ok && attn;
    for (int i = 0; ok && i < cfg->n_attn; i++)
        ok = cJSON_AddItemToArray(attn, cJSON_CreateNumber(cfg->attn_res[i]));
    ok = ok && cJSON_AddNumberToObject(o, "heads", cfg->heads);
    ok = ok && cJSON_AddNumberToObject(o, "norm_groups", cfg->norm_groups);
    if (cfg->no_mid_attn) ok = ok && cJSON_AddBoolToObject(o, "mid_attention", 0);
    ok = ok && cJSON_AddNumberToObject(o, "dropout", short_float(cfg->dropout));
    ok = ok && cJSON_AddNumberToObject(o, "num_classes", cfg->num_classes);
    if (ok && cfg->diffusers) {
        cJSON *d = cJSON_AddObjectToObject(o, "diffusers");
        ok = d != NULL;
        ok = ok && cJSON_AddNumberToObject(d, "norm_eps", short_float(cfg->norm_eps));
        ok = ok && cJSON_AddBoolToObject(d, "flip_sin_to_cos", cfg->flip_sin_to_cos);
        ok = ok && cJSON_AddNumberToObject(d, "freq_shift", short_float(cfg->freq_shift));
        ok = ok && cJSON_AddNumberToObject(d, "head_dim", cfg->head_dim);
        ok = ok && cJSON_AddNumberToObject(d, "downsample_padding", cfg->downsample_padding);
        ok = ok && add_owned(d, "down_attn", cJSON_CreateIntArray(cfg->down_attn, cfg->n_levels));
        ok = ok && add_owned(d, "up_attn", cJSON_CreateIntArray(cfg->up_attn, cfg->n_levels));
        ok = ok && cJSON_AddBoolToObject(d, "class_no_null", cfg->class_no_null);
    }
    char *text = ok ? cJSON_Print(o) : NULL;
    cJSON_Delete(o);
    if (!text) return cld__fail(CLD_ERR_NOMEM, "cld_unet_config_to_json: out of host memory");
    /* cJSON allocates with malloc by default; hand the caller a plain malloc'd copy anyway */
    *json = malloc(strlen(text) + 1);
    if (*json) strcpy(*json, text);
    cJSON_free(text);
    return *json ? CLD_OK : cld__fail(CLD_ERR_NOMEM, "cld_unet_config_to_json: out of host memory");
}

/* An integer-valued number (rejects 2.5, "2", true). */
static int json_int(const cJSON *v, int *out)
{
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= -2147483648.0 && d <= 2147483647.0) || d != floor(d)) return 0;
    *out = (int)d;
    return 1;
}

static cld_status json_int_array(const cJSON *v, const char *key, int *dst, int *count)
{
    if (!cJSON_IsArray(v)) return cld__fail(CLD_ERR_FORMAT, "unet config JSON: '%s' must be an array", key);
    int n = cJSON_GetArraySize(v);
    if (n > CLD_UNET_MAX_LEVELS)
        return cld__fail(CLD_ERR_FORMAT, "unet config JSON: '%s' has %d entries (at most %d)", key, n,
                         CLD_UNET_MAX_LEVELS);
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++)
        if (!json_int(e, &dst[i]))
            return cld__fail(CLD_ERR_FORMAT, "unet config JSON: '%s'[%d] is not an integer", key, i);
    *count = n;
    return CLD_OK;
}

/* The "diffusers" object of a config's JSON (every key required). */
static cld_status diffusers_from_json(const cJSON *d, cld_unet_config *c)
{
#define BADD(...) return cld__fail(CLD_ERR_FORMAT, "unet config JSON: diffusers: " __VA_ARGS__)
    if (!cJSON_IsObject(d)) BADD("not an object");
    static const char *const keys[] = {"norm_eps", "flip_sin_to_cos",    "freq_shift",
                                       "head_dim", "downsample_padding", "down_attn",
                                       "up_attn",  "class_no_null"};
    for (const cJSON *e = d->child; e; e = e->next) {
        int k = 0;
        while (k < 8 && strcmp(keys[k], e->string)) k++;
        if (k == 8) BADD("unknown key '%s'", e->string);
    }
    const cJSON *v[8];
    for (int k = 0; k < 8; k++)
        if (!(v[k] = cJSON_GetObjectItemCaseSensitive(d, keys[k]))) BADD("missing key '%s'", keys[k]);
    if (!cJSON_IsNumber(v[0]) || !cJSON_IsBool(v[1]) || !cJSON_IsNumber(v[2]) ||
        !json_int(v[3], &c->head_dim) || !json_int(v[4], &c->downsample_padding) || !cJSON_IsBool(v[7]))
        BADD("a key has the wrong type");
    c->diffusers = 1;
    c->norm_eps = (float)v[0]->valuedouble;
    c->flip_sin_to_cos = cJSON_IsTrue(v[1]);
    c->freq_shift = (float)v[2]->valuedouble;
    c->class_no_null = cJSON_IsTrue(v[7]);
    int n;
    CLD_TRY(json_int_array(v[5], "down_attn", c->down_attn, &n));
    CLD_TRY(json_int_array(v[6], "up_attn", c->up_attn, &n));
#undef BADD
    return CLD_OK;
}

cld_status cld_unet_config_from_json(const char *json, cld_unet_config *cfg)
{
    if (!json || !cfg) return cld__fail(CLD_ERR_INVALID_ARG, "cld_unet_config_from_json: NULL argument");
    cJSON *o = cJSON_Parse(json);
    if (!o)
        return cld__fail(CLD_ERR_FORMAT, "unet config JSON: parse error near '%.32s'",
                         cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() : "");
    cld_unet_config c;
    memset(&c, 0, sizeof c);
    c.heads = 1; /* optional keys and their defaults */
    c.norm_groups = 32;
    cld_status s = CLD_OK;
    unsigned seen = 0;
    /* required keys: the first six */
    static const char *const keys[] = {"in_channels", "out_channels",   "image_size",  "base_channels",
                                       "mult",        "num_res_blocks", "attn_res",    "heads",
                                       "norm_groups", "dropout",        "num_classes", "mid_attention",
                                       "diffusers"};
    int *ints[] = {&c.in_channels,
                   &c.out_channels,
                   &c.image_size,
                   &c.base_channels,
                   NULL,
                   &c.num_res_blocks,
                   NULL,
                   &c.heads,
                   &c.norm_groups,
                   NULL,
                   &c.num_classes,
                   NULL,
                   NULL};
    const int nkeys = (int)(sizeof keys / sizeof keys[0]);
    if (!cJSON_IsObject(o)) s = cld__fail(CLD_ERR_FORMAT, "unet config JSON: not an object");
    for (const cJSON *e = o->child; s == CLD_OK && e; e = e->next) {
        int k = 0;
        while (k < nkeys && strcmp(keys[k], e->string)) k++;
        if (k == nkeys) {
            s = cld__fail(CLD_ERR_FORMAT, "unet config JSON: unknown key '%s'", e->string);
        } else if (seen & (1u << k)) {
            s = cld__fail(CLD_ERR_FORMAT, "unet config JSON: duplicate key '%s'", e->string);
        } else if (!strcmp(keys[k], "mult")) {
            s = json_int_array(e, "mult", c.mult, &c.n_levels);
        } else if (!strcmp(keys[k], "attn_res")) {
            s = json_int_array(e, "attn_res", c.attn_res, &c.n_attn);
        } else if (!strcmp(keys[k], "diffusers")) {
            s = diffusers_from_json(e, &c);
        } else if (!strcmp(keys[k], "mid_attention")) {
            if (!cJSON_IsBool(e))
                s = cld__fail(CLD_ERR_FORMAT, "unet config JSON: 'mid_attention' is not true/false");
            else
                c.no_mid_attn = cJSON_IsFalse(e);
        } else if (!strcmp(keys[k], "dropout")) {
            if (!cJSON_IsNumber(e))
                s = cld__fail(CLD_ERR_FORMAT, "unet config JSON: 'dropout' is not a number");
            else
                c.dropout = (float)e->valuedouble;
        } else if (!json_int(e, ints[k])) {
            s = cld__fail(CLD_ERR_FORMAT, "unet config JSON: '%s' is not an integer", keys[k]);
        }
        seen |= 1u << k;
    }
    for (int k = 0; s == CLD_OK && k < 6; k++)
        if (!(seen & (1u << k))) s = cld__fail(CLD_ERR_FORMAT, "unet config JSON: missing key '%s'", keys[k]);
    cJSON_Delete(o);
    if (s == CLD_OK) s = cld_unet_config_check(&c);
    if (s == CLD_OK) *cfg = c;
    return s;
}

/* ------------------------------------------------------------------- build */

typedef struct unet_builder {
    cld_graph *g;
    const cld_unet_config *cfg;
    cld_tensor *temb_act; /* (N, 4 base): SiLU(temb), shared by every ResBlock */
    char where[96];       /* module being built, for error messages */
} unet_builder;

/* dst = "module.suffix" */
static cld_status sub(char *dst, size_t cap, const char *module, const char *suffix)
{
    if ((size_t)snprintf(dst, cap, "%s.%s", module, suffix) >= cap)
        return cld__fail(CLD_ERR_INVALID_ARG, "unet: name too long: '%s.%s'", module, suffix);
    return CLD_OK;
}

/* Parameter "module.suffix" */
static cld_status param(unet_builder *b, const char *module, const char *suffix, int ndim, const int *shape,
                        cld_init init, float scale, cld_tensor **out)
{
    char name[96];
    CLD_TRY(sub(name, sizeof name, module, suffix));
    return cld_graph_param(b->g, name, ndim, shape, init, scale, out);
}

static void enter(unet_builder *b, const char *module) { snprintf(b->where, sizeof b->where, "%s", module); }

/* DDPM default_init: variance scaling 1.0, fan_avg, uniform. */
static float fan_avg_bound(int fan_in, int fan_out)
{
    return sqrtf(3.0f / (0.5f * (float)(fan_in + fan_out)));
}

enum { CONV_ZERO = 1, CONV_LINEAR_SHAPE = 2 };

/* KxK convolution, pad K/2: x (N, ci, H, W) -> (N, co, H/stride, W/stride).
 * The weight is declared (co, ci, K, K) from the config's channel counts
 * (so a mismatched input fails in conv2d), or (co, ci) for K = 1 with
 * CONV_LINEAR_SHAPE (diffusers' attention projections are nn.Linear).
 * CONV_ZERO: zero init. */
static cld_status conv_pad(unet_builder *b, const char *module, cld_tensor *x, int ci, int co, int k,
                           int stride, int pad, unsigned flags, cld_tensor **y)
{
    enter(b, module);
    const int zero = flags & CONV_ZERO, linear_shape = flags & CONV_LINEAR_SHAPE;
    int ws[4] = {co, ci, k, k};
    cld_tensor *w, *bias;
    cld_init init = zero ? CLD_INIT_ZERO : CLD_INIT_UNIFORM;
    float bound = fan_avg_bound(ci * k * k, co * k * k);
    CLD_TRY(param(b, module, "weight", linear_shape ? 2 : 4, ws, init, bound, &w));
    CLD_TRY(param(b, module, "bias", 1, &co, CLD_INIT_ZERO, 0.0f, &bias));
    if (linear_shape) CLD_TRY(cld_op_reshape(b->g, w, 4, ws, &w)); // (co, ci) -> (co, ci, 1, 1)
    enter(b, module);
    return cld_op_conv2d(b->g, x, w, bias, stride, pad, y);
}

static cld_status conv(unet_builder *b, const char *module, cld_tensor *x, int ci, int co, int k, int stride,
                       unsigned flags, cld_tensor **y)
{
    return conv_pad(b, module, x, ci, co, k, stride, k / 2, flags, y);
}

/* x (N, K) -> (N, co) */
static cld_status linear(unet_builder *b, const char *module, cld_tensor *x, int co, cld_tensor **y)
{
    enter(b, module);
    int ci = x->shape[1];
    int ws[2] = {co, ci};
    cld_tensor *w, *bias;
    CLD_TRY(param(b, module, "weight", 2, ws, CLD_INIT_UNIFORM, fan_avg_bound(ci, co), &w));
    CLD_TRY(param(b, module, "bias", 1, &co, CLD_INIT_ZERO, 0.0f, &bias));
    return cld_op_linear(b->g, x, w, bias, y);
}

/* GN, followed by SiLU in the same pass if `act`; without normalisation
 * (norm_groups 0) only the SiLU */
static cld_status group_norm_act(unet_builder *b, const char *module, cld_tensor *x, int act, cld_tensor **y)
{
    enter(b, module);
    if (b->cfg->norm_groups == 0) {
        if (act) return cld_op_silu(b->g, x, y);
        *y = x;
        return CLD_OK;
    }
    int c = x->shape[1];
    cld_tensor *gamma, *beta;
    CLD_TRY(param(b, module, "weight", 1, &c, CLD_INIT_ONE, 0.0f, &gamma));
    CLD_TRY(param(b, module, "bias", 1, &c, CLD_INIT_ZERO, 0.0f, &beta));
    return (act ? cld__op_group_norm_silu : cld_op_group_norm)(
        b->g, x, gamma, beta, b->cfg->norm_groups, b->cfg->diffusers ? b->cfg->norm_eps : UNET_GN_EPS, y);
}

static cld_status group_norm(unet_builder *b, const char *module, cld_tensor *x, cld_tensor **y)
{
    return group_norm_act(b, module, x, 0, y);
}

/* GN -> SiLU, fused */
static cld_status norm_act(unet_builder *b, const char *module, cld_tensor *x, cld_tensor **y)
{
    return group_norm_act(b, module, x, 1, y);
}

/* x (N, Ci, H, W) -> (N, co, H, W) */
static cld_status resblock(unet_builder *b, const char *module, cld_tensor *x, int co, cld_tensor **y)
{
    char m[96];
    const int ci = x->shape[1]; // channels from the previous block (and skip)
    cld_tensor *h, *tp, *sc = x;
    CLD_TRY(sub(m, sizeof m, module, "norm1"));
    CLD_TRY(norm_act(b, m, x, &h));
    CLD_TRY(sub(m, sizeof m, module, "conv1"));
    CLD_TRY(conv(b, m, h, ci, co, 3, 1, 0, &h));
    CLD_TRY(sub(m, sizeof m, module, "time_emb_proj"));
    CLD_TRY(linear(b, m, b->temb_act, co, &tp)); // (N, co) broadcast over H, W
    CLD_TRY(cld_op_add(b->g, h, tp, &h));
    CLD_TRY(sub(m, sizeof m, module, "norm2"));
    CLD_TRY(norm_act(b, m, h, &h));
    CLD_TRY(cld_op_dropout(b->g, h, b->cfg->dropout, &h)); // p = 0: no node
    CLD_TRY(sub(m, sizeof m, module, "conv2"));
    CLD_TRY(conv(b, m, h, co, co, 3, 1, CONV_ZERO, &h));
    if (ci != co) {
        CLD_TRY(sub(m, sizeof m, module, "conv_shortcut"));
        CLD_TRY(conv(b, m, x, ci, co, 1, 1, 0, &sc));
    }
    enter(b, module);
    return cld_op_add(b->g, h, sc, y); // h first: add may reuse its buffer
}

/* Self-attention over the H*W positions, `heads` heads of C/heads channels.
 * x (N, C, H, W) -> (N, C, H, W) */
static cld_status attention(unet_builder *b, const char *module, cld_tensor *x, cld_tensor **y)
{
    char m[96];
    const int N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int heads = b->cfg->head_dim ? C / b->cfg->head_dim : b->cfg->heads, d = C / heads, L = H * W;
    const int s3[3] = {N * heads, d, L};
    cld_tensor *h, *q, *k, *v, *s, *a, *o;
    CLD_TRY(sub(m, sizeof m, module, "group_norm"));
    CLD_TRY(group_norm(b, m, x, &h));
    CLD_TRY(sub(m, sizeof m, module, "to_q"));
    CLD_TRY(conv(b, m, h, C, C, 1, 1, CONV_LINEAR_SHAPE, &q));
    CLD_TRY(sub(m, sizeof m, module, "to_k"));
    CLD_TRY(conv(b, m, h, C, C, 1, 1, CONV_LINEAR_SHAPE, &k));
    CLD_TRY(sub(m, sizeof m, module, "to_v"));
    CLD_TRY(conv(b, m, h, C, C, 1, 1, CONV_LINEAR_SHAPE, &v));
    enter(b, module);
    CLD_TRY(cld_op_reshape(b->g, q, 3, s3, &q)); // (N heads, d, L)
    CLD_TRY(cld_op_reshape(b->g, k, 3, s3, &k));
    CLD_TRY(cld_op_reshape(b->g, v, 3, s3, &v));
    // s[i, j] = q_i . k_j / sqrt(d): (N heads, L queries, L keys)
    CLD_TRY(cld_op_matmul(b->g, q, k, 1, 0, 1.0f / sqrtf((float)d), &s));
    CLD_TRY(cld_op_softmax(b->g, s, &a));
    // o[:, i] = sum_j a[i, j] v[:, j]: (N heads, d, L)
    CLD_TRY(cld_op_matmul(b->g, v, a, 0, 1, 1.0f, &o));
    CLD_TRY(cld_op_reshape(b->g, o, 4, x->shape, &o));
    CLD_TRY(sub(m, sizeof m, module, "to_out.0"));
    CLD_TRY(conv(b, m, o, C, C, 1, 1, CONV_ZERO | CONV_LINEAR_SHAPE, &o));
    enter(b, module);
    return cld_op_add(b->g, o, x, y);
}

/* The whole network; b->where names the module being built on failure. */
static cld_status build(unet_builder *b, cld_tensor *x, cld_tensor *t, cld_tensor *labels, cld_tensor **out)
{
    const cld_unet_config *cfg = b->cfg;
    cld_graph *g = b->g;
    const int base = cfg->base_channels, T = 4 * base;
    char m[96];
    cld_tensor *e, *h;

    /* time (and class) embedding: (N, T) */
    enter(b, "time_proj");
    if (cfg->diffusers)
        CLD_TRY(cld__op_timestep_embedding_torch(g, t, base, cfg->flip_sin_to_cos, cfg->freq_shift, &e));
    else
        CLD_TRY(cld_op_timestep_embedding(g, t, base, &e));
    CLD_TRY(linear(b, "time_embedding.linear_1", e, T, &e));
    CLD_TRY(cld_op_silu(g, e, &e));
    CLD_TRY(linear(b, "time_embedding.linear_2", e, T, &e));
    if (cfg->num_classes > 0) {
        const int ts[2] = {cfg->num_classes + (cfg->class_no_null ? 0 : 1), T};
        cld_tensor *table, *ce;
        enter(b, "class_embedding");
        CLD_TRY(param(b, "class_embedding", "weight", 2, ts, CLD_INIT_NORMAL, 1.0f, &table));
        CLD_TRY(cld_op_embedding(g, table, labels, &ce));
        CLD_TRY(cld_op_add(g, e, ce, &e));
    }
    CLD_TRY(cld_op_silu(g, e, &b->temb_act));

    /* skip stack: conv_in's output, then every down block's */
    const int nres = cfg->num_res_blocks, nskip = 1 + cfg->n_levels * (nres + 1);
    cld_tensor **skip = calloc((size_t)nskip, sizeof *skip);
    if (!skip) return cld__fail(CLD_ERR_NOMEM, "unet: out of host memory");
    int ns = 0, res = cfg->image_size, ch = base;
    cld_status s = conv(b, "conv_in", x, cfg->in_channels, base, 3, 1, 0, &h);
    if (s == CLD_OK) skip[ns++] = h;

    for (int i = 0; i < cfg->n_levels && s == CLD_OK; i++) {
        for (int j = 0; j < nres && s == CLD_OK; j++) {
            ch = base * cfg->mult[i];
            snprintf(m, sizeof m, "down_blocks.%d.resnets.%d", i, j);
            s = resblock(b, m, h, ch, &h);
            if (s == CLD_OK && attn_down(cfg, i, res)) {
                snprintf(m, sizeof m, "down_blocks.%d.attentions.%d", i, j);
                s = attention(b, m, h, &h);
            }
            if (s == CLD_OK) skip[ns++] = h;
        }
        if (i != cfg->n_levels - 1 && s == CLD_OK) {
            snprintf(m, sizeof m, "down_blocks.%d.downsamplers.0.conv", i);
            if (cfg->diffusers && cfg->downsample_padding == 0) { // F.pad (0, 1, 0, 1), then no pad
                enter(b, m);
                s = cld_op_pad2d(g, h, 0, 1, 0, 1, &h);
                if (s == CLD_OK) s = conv_pad(b, m, h, ch, ch, 3, 2, 0, 0, &h);
            } else {
                s = conv(b, m, h, ch, ch, 3, 2, 0, &h);
            }
            res /= 2;
            if (s == CLD_OK) skip[ns++] = h;
        }
    }

    if (s == CLD_OK) s = resblock(b, "mid_block.resnets.0", h, ch, &h);
    if (s == CLD_OK && !cfg->no_mid_attn) s = attention(b, "mid_block.attentions.0", h, &h);
    if (s == CLD_OK) s = resblock(b, "mid_block.resnets.1", h, ch, &h);

    for (int u = 0; u < cfg->n_levels && s == CLD_OK; u++) {
        const int i = cfg->n_levels - 1 - u;
        for (int j = 0; j <= nres && s == CLD_OK; j++) {
            snprintf(m, sizeof m, "up_blocks.%d.resnets.%d", u, j);
            enter(b, m);
            s = cld_op_concat(g, h, skip[--ns], &h); // (N, ch + skip channels, res, res)
            ch = base * cfg->mult[i];
            if (s == CLD_OK) s = resblock(b, m, h, ch, &h);
            if (s == CLD_OK && attn_up(cfg, u, res)) {
                snprintf(m, sizeof m, "up_blocks.%d.attentions.%d", u, j);
                s = attention(b, m, h, &h);
            }
        }
        if (i != 0 && s == CLD_OK) {
            snprintf(m, sizeof m, "up_blocks.%d.upsamplers.0.conv", u);
            enter(b, m);
            s = cld_op_upsample2x(g, h, &h);
            if (s == CLD_OK) s = conv(b, m, h, ch, ch, 3, 1, 0, &h);
            res *= 2;
        }
    }
    free(skip);
    CLD_TRY(s);

    CLD_TRY(norm_act(b, "conv_norm_out", h, &h));
    return conv(b, "conv_out", h, base * cfg->mult[0], cfg->out_channels, 3, 1, CONV_ZERO, out);
}

cld_status cld_unet_build(cld_graph *g, const cld_unet_config *cfg, cld_tensor *x, cld_tensor *t,
                          cld_tensor *labels, cld_tensor **out)
{
    if (!g || !cfg || !x || !t || !out)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_unet_build: NULL argument");
    *out = NULL;
    CLD_TRY(cld_unet_config_check(cfg));
    char sx[96], so[96];
    if (x->ndim != 4 || x->shape[2] != cfg->image_size || x->shape[3] != cfg->image_size)
        return cld__fail(CLD_ERR_SHAPE, "unet: x is %s, expected (N, %d, %d, %d)",
                         cld__shape_str(x, sx, sizeof sx), cfg->in_channels, cfg->image_size,
                         cfg->image_size);
    const int N = x->shape[0];
    if (t->ndim != 1 || t->shape[0] != N)
        return cld__fail(CLD_ERR_SHAPE, "unet: timesteps t are %s, expected (%d) for x %s",
                         cld__shape_str(t, so, sizeof so), N, cld__shape_str(x, sx, sizeof sx));
    if (cfg->num_classes > 0 && !labels)
        return cld__fail(CLD_ERR_INVALID_ARG,
                         "unet: class-conditional (num_classes = %d) but labels is NULL "
                         "(use label %d for the null class)",
                         cfg->num_classes, cfg->num_classes);
    if (cfg->num_classes == 0 && labels)
        return cld__fail(CLD_ERR_INVALID_ARG,
                         "unet: labels given to an unconditional UNet (num_classes = 0)");
    if (labels && (labels->ndim != 1 || labels->shape[0] != N))
        return cld__fail(CLD_ERR_SHAPE, "unet: labels are %s, expected (%d) for x %s",
                         cld__shape_str(labels, so, sizeof so), N, cld__shape_str(x, sx, sizeof sx));
    unet_builder b = {.g = g, .cfg = cfg};
    cld_status s = build(&b, x, t, labels, out);
    if (s != CLD_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", cld_last_error());
        return cld__fail(s, "%s (in unet module %s)", msg, b.where);
    }
    return CLD_OK;
}

int cld_unet_config_is_local(const cld_unet_config *cfg)
{
    return cfg && !cfg->diffusers && cfg->norm_groups == 0 && cfg->n_attn == 0 && cfg->no_mid_attn;
}

cld_status cld_unet_param_count(const cld_unet_config *cfg, size_t *count)
{
    if (!cfg || !count) return cld__fail(CLD_ERR_INVALID_ARG, "cld_unet_param_count: NULL argument");
    CLD_TRY(cld_unet_config_check(cfg));
    /* Build the network at batch 1 on a graph bound to a blank context:
     * building only checks shapes and declares parameters, it never touches
     * the device, so the count is exactly what cld_unet_build declares. */
    struct cld_ctx dry;
    memset(&dry, 0, sizeof dry);
    cld_params *p = NULL;
    cld_graph *g = NULL;
    cld_tensor *x, *t, *labels = NULL, *y;
    const int S = cfg->image_size, xs[4] = {1, cfg->in_channels, S, S}, one = 1;
    cld_status s = cld_params_create(&dry, &p);
    if (s == CLD_OK) s = cld_graph_create(&dry, p, &g);
    if (s == CLD_OK) s = cld_graph_input(g, "x", 4, xs, 0, &x);
    if (s == CLD_OK) s = cld_graph_input(g, "t", 1, &one, 0, &t);
    if (s == CLD_OK && cfg->num_classes > 0) s = cld_graph_input(g, "labels", 1, &one, 0, &labels);
    if (s == CLD_OK) s = cld_unet_build(g, cfg, x, t, labels, &y);
    if (s == CLD_OK) s = cld_params_count(p, NULL, count);
    cld_graph_free(g);
    cld_params_free(p);
    return s;
}

/* ------------------------------------------------------------------ timing */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double now_s(void)
{
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct unet_io {
    cld_graph *g;
    cld_tensor *x, *t, *labels, *y, *target, *loss;
} unet_io;

/* A graph of the UNet at `batch`; with `train`, an MSE loss against an input
 * target and its backward pass. Inputs are filled with random values. */
static cld_status timing_graph(cld_ctx *ctx, cld_params *p, const cld_unet_config *cfg, int batch, int train,
                               unet_io *io, cld_plan_stats *st)
{
    const int S = cfg->image_size, xs[4] = {batch, cfg->in_channels, S, S};
    const int ys[4] = {batch, cfg->out_channels, S, S};
    CLD_TRY(cld_graph_create(ctx, p, &io->g));
    CLD_TRY(cld_graph_input(io->g, "x", 4, xs, 0, &io->x));
    CLD_TRY(cld_graph_input(io->g, "t", 1, &batch, 0, &io->t));
    if (cfg->num_classes > 0) CLD_TRY(cld_graph_input(io->g, "labels", 1, &batch, 0, &io->labels));
    CLD_TRY(cld_unet_build(io->g, cfg, io->x, io->t, io->labels, &io->y));
    if (train) {
        CLD_TRY(cld_graph_input(io->g, "target", 4, ys, 0, &io->target));
        CLD_TRY(cld_op_mse_loss(io->g, io->y, io->target, NULL, &io->loss));
        CLD_TRY(cld_graph_set_output(io->g, io->loss));
        CLD_TRY(cld_graph_backward(io->g, io->loss));
    } else {
        CLD_TRY(cld_graph_set_output(io->g, io->y));
    }
    CLD_TRY(cld_graph_plan(io->g, st));

    size_t nx = (size_t)batch * (size_t)cfg->in_channels * (size_t)S * (size_t)S;
    size_t ny = (size_t)batch * (size_t)cfg->out_channels * (size_t)S * (size_t)S;
    size_t nmax = nx > ny ? nx : ny;
    float *buf = malloc(nmax * sizeof *buf);
    if (!buf) return cld__fail(CLD_ERR_NOMEM, "cld_unet_time: out of host memory");
    uint64_t rng = 0x5eed + (uint64_t)train;
    cld_status s;
    for (size_t i = 0; i < nx; i++) buf[i] = (float)cld__rand_normal(&rng);
    s = cld_tensor_write(io->g, io->x, buf);
    for (int i = 0; i < batch; i++) buf[i] = (float)(int)(cld__rand_uniform(&rng) * 1000.0);
    if (s == CLD_OK) s = cld_tensor_write(io->g, io->t, buf);
    for (int i = 0; i < batch; i++) buf[i] = (float)(int)(cld__rand_uniform(&rng) * (cfg->num_classes + 1));
    if (s == CLD_OK && io->labels) s = cld_tensor_write(io->g, io->labels, buf);
    for (size_t i = 0; i < ny; i++) buf[i] = (float)cld__rand_normal(&rng);
    if (s == CLD_OK && io->target) s = cld_tensor_write(io->g, io->target, buf);
    free(buf);
    return s;
}

/* iters + 1 runs (the first is the warm-up); median seconds of the rest. */
static cld_status time_runs(cld_ctx *ctx, cld_params *p, cld_graph *g, int train, int iters, double *out)
{
    double *dt = malloc((size_t)iters * sizeof *dt);
    if (!dt) return cld__fail(CLD_ERR_NOMEM, "cld_unet_time: out of host memory");
    cld_status s = CLD_OK;
    for (int i = 0; i <= iters && s == CLD_OK; i++) {
        double t0 = now_s();
        if (train) {
            s = cld_graph_set_seed(g, (uint64_t)i + 1);
            if (s == CLD_OK) s = cld_params_zero_grad(p);
            if (s == CLD_OK) s = cld_graph_run(g);
            if (s == CLD_OK) s = cld_params_adamw(p, 2e-4f, 0.9f, 0.999f, 1e-8f, 0.0f, i + 1);
        } else {
            s = cld_graph_run(g);
        }
        if (s == CLD_OK) s = cld_ctx_finish(ctx);
        if (i > 0) dt[i - 1] = now_s() - t0;
    }
    if (s == CLD_OK) *out = median(dt, iters);
    free(dt);
    return s;
}

cld_status cld_unet_time(cld_ctx *ctx, const cld_unet_config *cfg, int batch, int iters, cld_unet_timing *out)
{
    if (!ctx || !cfg || !out) return cld__fail(CLD_ERR_INVALID_ARG, "cld_unet_time: NULL argument");
    if (batch < 1 || iters < 1)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_unet_time: batch = %d, iters = %d (both must be >= 1)",
                         batch, iters);
    CLD_TRY(cld_unet_config_check(cfg));
    cld_unet_timing r;
    memset(&r, 0, sizeof r);
    cld_unet_config infer = *cfg;
    infer.dropout = 0.0f; /* sampling: no dropout; same parameters */
    cld_params *p = NULL;
    unet_io fwd = {0}, train = {0};
    cld_plan_stats sf, st;
    cld_status s = cld_params_create(ctx, &p);
    if (s == CLD_OK) s = timing_graph(ctx, p, &infer, batch, 0, &fwd, &sf);
    if (s == CLD_OK) s = timing_graph(ctx, p, cfg, batch, 1, &train, &st);
    if (s == CLD_OK) s = cld_params_count(p, NULL, &r.n_params);
    if (s == CLD_OK) s = time_runs(ctx, p, fwd.g, 0, iters, &r.forward_s);
    if (s == CLD_OK) s = time_runs(ctx, p, train.g, 1, iters, &r.train_step_s);
    if (s == CLD_OK) {
        r.fwd_peak_bytes = sf.peak_bytes;
        r.fwd_sum_bytes = sf.sum_bytes;
        r.train_peak_bytes = st.peak_bytes;
        r.train_sum_bytes = st.sum_bytes;
        *out = r;
    }
    cld_graph_free(fwd.g);
    cld_graph_free(train.g);
    cld_params_free(p);
    return s;
}
