/* diffusers model folders (see diffusers.h): UNet2DModel config.json ->
 * cld_unet_config, scheduler_config.json -> diffusion config and sampler
 * defaults, diffusion_pytorch_model.safetensors -> the parameter store,
 * checked from its header first.
 *
 * Config keys are matched against a table: each known key is either mapped
 * (its value read into the config) or accepted only at the value diffusers
 * uses by default / the one the engine implements. Keys starting with '_'
 * (_class_name, _diffusers_version, _name_or_path, ...) are bookkeeping. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CFG_MAX_BYTES (1u << 20)

/* ------------------------------------------------------------ JSON values */

static int is_int(const cJSON *v, int *out)
{
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= -2147483648.0 && d <= 2147483647.0) || d != floor(d)) return 0;
    *out = (int)d;
    return 1;
}

/* value text for error messages */
static const char *val_text(const cJSON *v, char *buf, size_t cap)
{
    char *t = cJSON_PrintUnformatted(v);
    snprintf(buf, cap, "%.60s", t ? t : "?");
    if (t) cJSON_free(t);
    return buf;
}

#define BADKEY(file, key, v, why)                                                                            \
    do {                                                                                                     \
        char vb_[64];                                                                                        \
        return cld__fail(CLD_ERR_FORMAT, "%s: '%s' = %s: %s", file, key, val_text(v, vb_, sizeof vb_), why); \
    } while (0)

static int is_str(const cJSON *v, const char *s) { return cJSON_IsString(v) && !strcmp(v->valuestring, s); }

/* ----------------------------------------------------------- UNet config */

static cld_status block_types(const cJSON *v, const char *key, const char *plain, const char *attn,
                              int *flags, int *count)
{
    const char *F = "UNet2DModel config";
    if (!cJSON_IsArray(v)) BADKEY(F, key, v, "must be an array of block type names");
    int n = cJSON_GetArraySize(v);
    if (n < 1 || n > CLD_UNET_MAX_LEVELS) BADKEY(F, key, v, "must have 1 to 8 blocks");
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        if (is_str(e, plain))
            flags[i] = 0;
        else if (is_str(e, attn))
            flags[i] = 1;
        else {
            char vb[64], why[160];
            snprintf(why, sizeof why, "block %d (%s) is not supported (only %s and %s)", i,
                     val_text(e, vb, sizeof vb), plain, attn);
            BADKEY(F, key, v, why);
        }
    }
    *count = n;
    return CLD_OK;
}

cld_status cld_diffusers_unet_config(const char *json, cld_unet_config *cfg)
{
    const char *F = "UNet2DModel config";
    if (!json || !cfg) return cld__fail(CLD_ERR_INVALID_ARG, "cld_diffusers_unet_config: NULL argument");
    cJSON *o = cJSON_Parse(json);
    if (!o)
        return cld__fail(CLD_ERR_FORMAT, "%s: not valid JSON (near '%.32s')", F,
                         cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() : "");
    cld_unet_config c;
    memset(&c, 0, sizeof c);
    /* UNet2DModel's defaults, for keys an old config does not write */
    c.diffusers = 1;
    c.in_channels = c.out_channels = 3;
    c.heads = 1;
    c.num_res_blocks = 2;
    c.norm_groups = 32;
    c.norm_eps = 1e-5f;
    c.flip_sin_to_cos = 1;
    c.freq_shift = 0.0f;
    c.head_dim = 8;
    c.downsample_padding = 1;
    int boc[CLD_UNET_MAX_LEVELS] = {224, 448, 672, 896}, n_boc = 4;
    int down[CLD_UNET_MAX_LEVELS] = {0, 1, 1, 1}, n_down = 4;
    int up[CLD_UNET_MAX_LEVELS] = {1, 1, 1, 0}, n_up = 4;
    int have_size = 0;
    cld_status s = CLD_OK;
    if (!cJSON_IsObject(o)) s = cld__fail(CLD_ERR_FORMAT, "%s: not a JSON object", F);
    for (const cJSON *e = o ? o->child : NULL; e && s == CLD_OK; e = e->next) {
        const char *k = e->string;
        for (const cJSON *f = o->child; f != e; f = f->next)
            if (!strcmp(f->string, k)) {
                s = cld__fail(CLD_ERR_FORMAT, "%s: key '%s' appears twice", F, k);
                break;
            }
        if (s != CLD_OK) break;
        int iv;
        s = CLD_OK;
#define BAD(why)                                                                                     \
    do {                                                                                             \
        char vb_[64];                                                                                \
        s = cld__fail(CLD_ERR_FORMAT, "%s: '%s' = %s: %s", F, k, val_text(e, vb_, sizeof vb_), why); \
    } while (0)
        if (k[0] == '_') {
            if (!strcmp(k, "_class_name") && !is_str(e, "UNet2DModel"))
                BAD("only UNet2DModel folders are supported");
        } else if (!strcmp(k, "sample_size")) {
            if (is_int(e, &iv) && iv > 0)
                c.image_size = iv, have_size = 1;
            else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && is_int(e->child, &iv) && iv > 0 &&
                     cJSON_IsNumber(e->child->next) && e->child->next->valuedouble == iv)
                c.image_size = iv, have_size = 1;
            else
                BAD("must be a positive integer (square images)");
        } else if (!strcmp(k, "in_channels")) {
            if (!is_int(e, &c.in_channels) || c.in_channels < 1) BAD("must be a positive integer");
        } else if (!strcmp(k, "out_channels")) {
            if (!is_int(e, &c.out_channels) || c.out_channels < 1) BAD("must be a positive integer");
        } else if (!strcmp(k, "center_input_sample")) {
            if (!cJSON_IsFalse(e)) BAD("only false is supported");
        } else if (!strcmp(k, "time_embedding_type")) {
            if (!is_str(e, "positional")) BAD("only \"positional\" is supported");
        } else if (!strcmp(k, "time_embedding_dim")) {
            if (!cJSON_IsNull(e)) BAD("only null (4 block_out_channels[0]) is supported");
        } else if (!strcmp(k, "freq_shift")) {
            if (!cJSON_IsNumber(e))
                BAD("must be a number");
            else
                c.freq_shift = (float)e->valuedouble;
        } else if (!strcmp(k, "flip_sin_to_cos")) {
            if (!cJSON_IsBool(e))
                BAD("must be true or false");
            else
                c.flip_sin_to_cos = cJSON_IsTrue(e);
        } else if (!strcmp(k, "down_block_types")) {
            s = block_types(e, k, "DownBlock2D", "AttnDownBlock2D", down, &n_down);
        } else if (!strcmp(k, "up_block_types")) {
            s = block_types(e, k, "UpBlock2D", "AttnUpBlock2D", up, &n_up);
        } else if (!strcmp(k, "mid_block_type")) {
            if (!is_str(e, "UNetMidBlock2D")) BAD("only \"UNetMidBlock2D\" is supported");
        } else if (!strcmp(k, "block_out_channels")) {
            if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) < 1 ||
                cJSON_GetArraySize(e) > CLD_UNET_MAX_LEVELS) {
                BAD("must be an array of 1 to 8 channel counts");
            } else {
                n_boc = 0;
                for (const cJSON *x = e->child; x && s == CLD_OK; x = x->next, n_boc++)
                    if (!is_int(x, &boc[n_boc]) || boc[n_boc] < 1) BAD("entries must be positive integers");
            }
        } else if (!strcmp(k, "layers_per_block")) {
            if (!is_int(e, &c.num_res_blocks) || c.num_res_blocks < 1) BAD("must be a positive integer");
        } else if (!strcmp(k, "mid_block_scale_factor")) {
            if (!cJSON_IsNumber(e) || e->valuedouble != 1.0) BAD("only 1 is supported");
        } else if (!strcmp(k, "downsample_padding")) {
            if (!is_int(e, &c.downsample_padding) || (c.downsample_padding != 0 && c.downsample_padding != 1))
                BAD("only 0 and 1 are supported");
        } else if (!strcmp(k, "downsample_type")) {
            if (!is_str(e, "conv")) BAD("only \"conv\" is supported");
        } else if (!strcmp(k, "upsample_type")) {
            if (!is_str(e, "conv")) BAD("only \"conv\" is supported");
        } else if (!strcmp(k, "dropout")) {
            if (!cJSON_IsNumber(e) || !(e->valuedouble >= 0.0 && e->valuedouble < 1.0))
                BAD("must be in [0, 1)");
            else
                c.dropout = (float)e->valuedouble;
        } else if (!strcmp(k, "act_fn")) {
            if (!is_str(e, "silu") && !is_str(e, "swish")) BAD("only \"silu\" is supported");
        } else if (!strcmp(k, "attention_head_dim")) {
            if (cJSON_IsNull(e))
                c.head_dim = 0;
            else if (!is_int(e, &c.head_dim) || c.head_dim < 1)
                BAD("must be null or a positive integer");
        } else if (!strcmp(k, "norm_num_groups")) {
            if (!is_int(e, &c.norm_groups) || c.norm_groups < 1) BAD("must be a positive integer");
        } else if (!strcmp(k, "attn_norm_num_groups")) {
            if (!cJSON_IsNull(e)) BAD("only null (norm_num_groups) is supported");
        } else if (!strcmp(k, "norm_eps")) {
            if (!cJSON_IsNumber(e) || !(e->valuedouble > 0.0))
                BAD("must be a positive number");
            else
                c.norm_eps = (float)e->valuedouble;
        } else if (!strcmp(k, "resnet_time_scale_shift")) {
            if (!is_str(e, "default")) BAD("only \"default\" is supported");
        } else if (!strcmp(k, "add_attention")) {
            if (!cJSON_IsBool(e))
                BAD("must be true or false");
            else
                c.no_mid_attn = cJSON_IsFalse(e);
        } else if (!strcmp(k, "class_embed_type")) {
            if (!cJSON_IsNull(e)) BAD("only null (a class table when num_class_embeds is set) is supported");
        } else if (!strcmp(k, "num_class_embeds")) {
            if (cJSON_IsNull(e))
                c.num_classes = 0;
            else if (!is_int(e, &c.num_classes) || c.num_classes < 1)
                BAD("must be null or a positive integer");
        } else if (!strcmp(k, "num_train_timesteps")) {
            if (!cJSON_IsNull(e) && !is_int(e, &iv)) BAD("must be null or an integer");
        } else {
            s = cld__fail(CLD_ERR_FORMAT, "%s: unknown key '%s' (not supported)", F, k);
        }
#undef BAD
    }
    cJSON_Delete(o);
    CLD_TRY(s);
    if (!have_size)
        return cld__fail(CLD_ERR_FORMAT, "%s: 'sample_size' is missing (the image size is needed)", F);
    if (n_down != n_boc || n_up != n_boc)
        return cld__fail(CLD_ERR_FORMAT,
                         "%s: 'block_out_channels' has %d entries, 'down_block_types' %d, "
                         "'up_block_types' %d (must be equal)",
                         F, n_boc, n_down, n_up);
    c.n_levels = n_boc;
    c.base_channels = boc[0];
    for (int i = 0; i < n_boc; i++) {
        if (boc[i] % boc[0])
            return cld__fail(CLD_ERR_FORMAT,
                             "%s: 'block_out_channels'[%d] = %d is not a multiple of "
                             "block_out_channels[0] = %d (not supported)",
                             F, i, boc[i], boc[0]);
        c.mult[i] = boc[i] / boc[0];
        c.down_attn[i] = down[i];
        c.up_attn[i] = up[i];
    }
    if (c.num_classes > 0) c.class_no_null = 1;
    s = cld_unet_config_check(&c);
    if (s != CLD_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", cld_last_error());
        return cld__fail(CLD_ERR_FORMAT, "%s: %s", F, msg);
    }
    *cfg = c;
    return CLD_OK;
}

/* ------------------------------------------------------ scheduler config */

cld_status cld_diffusers_scheduler_config(const char *json, const cld_unet_config *unet,
                                          cld_diffusion_config *d, cld_diffusers_scheduler *sched)
{
    const char *F = "scheduler config";
    if (!json || !unet || !d || !sched)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_diffusers_scheduler_config: NULL argument");
    cJSON *o = cJSON_Parse(json);
    if (!o)
        return cld__fail(CLD_ERR_FORMAT, "%s: not valid JSON (near '%.32s')", F,
                         cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() : "");
    cld_diffusion_config dc;
    memset(&dc, 0, sizeof dc);
    cld_diffusers_scheduler sc;
    memset(&sc, 0, sizeof sc);
    /* DDPMScheduler / DDIMScheduler defaults */
    dc.schedule = CLD_SCHEDULE_LINEAR;
    dc.T = 1000;
    dc.beta_start = 1e-4;
    dc.beta_end = 0.02;
    dc.pred = CLD_PRED_EPS;
    sc.present = 1;
    snprintf(sc.class_name, sizeof sc.class_name, "DDPMScheduler");
    sc.spacing = CLD_SPACING_LEADING;
    sc.variance = CLD_VAR_POSTERIOR;
    int clip = 1, set_one = 1, learned = 0, is_ddim = 0;
    double clip_range = 1.0;
    cld_status s = CLD_OK;
    if (!cJSON_IsObject(o)) s = cld__fail(CLD_ERR_FORMAT, "%s: not a JSON object", F);
    const cJSON *cls = o ? cJSON_GetObjectItemCaseSensitive(o, "_class_name") : NULL;
    if (s == CLD_OK && cls) {
        if (is_str(cls, "DDIMScheduler"))
            is_ddim = 1;
        else if (!is_str(cls, "DDPMScheduler")) {
            char vb[64];
            s = cld__fail(CLD_ERR_FORMAT,
                          "%s: '_class_name' = %s: only DDPMScheduler and DDIMScheduler configs "
                          "are supported",
                          F, val_text(cls, vb, sizeof vb));
        }
        if (s == CLD_OK) snprintf(sc.class_name, sizeof sc.class_name, "%s", cls->valuestring);
    }
    for (const cJSON *e = o ? o->child : NULL; e && s == CLD_OK; e = e->next) {
        const char *k = e->string;
#define BAD(why)                                                                                     \
    do {                                                                                             \
        char vb_[64];                                                                                \
        s = cld__fail(CLD_ERR_FORMAT, "%s: '%s' = %s: %s", F, k, val_text(e, vb_, sizeof vb_), why); \
    } while (0)
        if (k[0] == '_') {
            /* _class_name checked above, _diffusers_version ... */
        } else if (!strcmp(k, "num_train_timesteps")) {
            if (!is_int(e, &dc.T) || dc.T < 2) BAD("must be an integer >= 2");
        } else if (!strcmp(k, "beta_start")) {
            if (!cJSON_IsNumber(e) || !(e->valuedouble > 0.0 && e->valuedouble < 1.0))
                BAD("must be in (0, 1)");
            else
                dc.beta_start = e->valuedouble;
        } else if (!strcmp(k, "beta_end")) {
            if (!cJSON_IsNumber(e) || !(e->valuedouble > 0.0 && e->valuedouble < 1.0))
                BAD("must be in (0, 1)");
            else
                dc.beta_end = e->valuedouble;
        } else if (!strcmp(k, "beta_schedule")) {
            if (is_str(e, "linear"))
                dc.schedule = CLD_SCHEDULE_LINEAR;
            else if (is_str(e, "scaled_linear"))
                dc.schedule = CLD_SCHEDULE_SCALED_LINEAR;
            else if (is_str(e, "squaredcos_cap_v2"))
                dc.schedule = CLD_SCHEDULE_COSINE;
            else
                BAD("supported: linear, scaled_linear, squaredcos_cap_v2");
        } else if (!strcmp(k, "trained_betas")) {
            if (!cJSON_IsNull(e)) BAD("only null is supported");
        } else if (!strcmp(k, "variance_type")) {
            if (is_ddim)
                BAD("not a DDIMScheduler key");
            else if (is_str(e, "fixed_small"))
                sc.variance = CLD_VAR_POSTERIOR;
            else if (is_str(e, "fixed_large"))
                sc.variance = CLD_VAR_BETA;
            else if (is_str(e, "learned_range"))
                learned = 1;
            else
                BAD("supported: fixed_small, fixed_large, learned_range");
        } else if (!strcmp(k, "clip_sample")) {
            if (!cJSON_IsBool(e))
                BAD("must be true or false");
            else
                clip = cJSON_IsTrue(e);
        } else if (!strcmp(k, "clip_sample_range")) {
            if (!cJSON_IsNumber(e) || !(e->valuedouble > 0.0))
                BAD("must be a positive number");
            else
                clip_range = e->valuedouble;
        } else if (!strcmp(k, "prediction_type")) {
            if (is_str(e, "epsilon"))
                dc.pred = CLD_PRED_EPS;
            else if (is_str(e, "v_prediction"))
                dc.pred = CLD_PRED_V;
            else if (is_str(e, "sample"))
                dc.pred = CLD_PRED_X0;
            else
                BAD("supported: epsilon, v_prediction, sample");
        } else if (!strcmp(k, "thresholding")) {
            if (!cJSON_IsFalse(e)) BAD("only false is supported");
        } else if (!strcmp(k, "dynamic_thresholding_ratio") || !strcmp(k, "sample_max_value")) {
            if (!cJSON_IsNumber(e)) BAD("must be a number"); /* used only with thresholding */
        } else if (!strcmp(k, "timestep_spacing")) {
            if (is_str(e, "leading"))
                sc.spacing = CLD_SPACING_LEADING;
            else if (is_str(e, "trailing"))
                sc.spacing = CLD_SPACING_TRAILING;
            else if (is_str(e, "linspace") && !is_ddim)
                sc.spacing = CLD_SPACING_LINSPACE;
            else
                BAD(is_ddim ? "supported with DDIM: leading, trailing"
                            : "supported: leading, trailing, linspace");
        } else if (!strcmp(k, "steps_offset")) {
            if (!is_int(e, &sc.steps_offset) || sc.steps_offset < 0) BAD("must be a non-negative integer");
        } else if (!strcmp(k, "set_alpha_to_one")) {
            if (!is_ddim)
                BAD("not a DDPMScheduler key");
            else if (!cJSON_IsBool(e))
                BAD("must be true or false");
            else
                set_one = cJSON_IsTrue(e);
        } else if (!strcmp(k, "rescale_betas_zero_snr")) {
            if (!cJSON_IsBool(e))
                BAD("must be true or false");
            else
                dc.zero_terminal_snr = cJSON_IsTrue(e);
        } else if (!strcmp(k, "tensor_format")) {
            if (!is_str(e, "pt") && !is_str(e, "np"))
                BAD("must be \"pt\" or \"np\""); /* old configs: array library */
        } else {
            s = cld__fail(CLD_ERR_FORMAT, "%s: unknown key '%s' (not supported)", F, k);
        }
#undef BAD
    }
    cJSON_Delete(o);
    CLD_TRY(s);
    if (dc.beta_end < dc.beta_start && dc.schedule != CLD_SCHEDULE_COSINE)
        return cld__fail(CLD_ERR_FORMAT, "%s: beta_end %g < beta_start %g", F, dc.beta_end, dc.beta_start);
    if (learned) {
        if (unet->out_channels != 2 * unet->in_channels)
            return cld__fail(CLD_ERR_FORMAT,
                             "%s: variance_type learned_range needs a UNet with 2 x in_channels "
                             "outputs (it has %d in, %d out)",
                             F, unet->in_channels, unet->out_channels);
        dc.learned_variance = 1;
    } else if (unet->out_channels != unet->in_channels) {
        return cld__fail(CLD_ERR_FORMAT,
                         "%s: the UNet has %d input and %d output channels; only a learned_range "
                         "variance_type explains that",
                         F, unet->in_channels, unet->out_channels);
    }
    sc.clip_sample = clip ? clip_range : 0.0;
    sc.set_alpha_to_one = is_ddim ? set_one : 1;
    *d = dc;
    *sched = sc;
    return CLD_OK;
}

cld_status cld_diffusers_sampler_defaults(const cld_diffusers_scheduler *sched, cld_sampler_opts *o)
{
    if (!sched || !o) return cld__fail(CLD_ERR_INVALID_ARG, "cld_diffusers_sampler_defaults: NULL argument");
    o->spacing = sched->spacing;
    o->steps_offset = sched->steps_offset;
    o->variance = sched->variance;
    o->clip_sample = sched->clip_sample;
    o->final_alpha_bar0 = !sched->set_alpha_to_one;
    return CLD_OK;
}

/* ----------------------------------------------------------------- files */

static int is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* dir/a if it is a file, else dir/b if that is, into out; 0 if neither. */
static int find(const char *dir, const char *a, const char *b, char *out, size_t cap)
{
    const char *names[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        if (!names[i] || (size_t)snprintf(out, cap, "%s/%s", dir, names[i]) >= cap) continue;
        if (is_file(out)) return 1;
    }
    out[0] = 0;
    return 0;
}

static cld_status read_text(const char *path, char **out)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return cld__fail(CLD_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    char *buf = malloc(CFG_MAX_BYTES + 1);
    size_t n = buf ? fread(buf, 1, CFG_MAX_BYTES + 1, f) : 0;
    int err = ferror(f);
    fclose(f);
    if (!buf) return cld__fail(CLD_ERR_NOMEM, "out of host memory");
    if (err || n > CFG_MAX_BYTES) {
        free(buf);
        return cld__fail(err ? CLD_ERR_IO : CLD_ERR_FORMAT, "'%s': %s", path,
                         err ? "read error" : "larger than 1 MiB, not a config");
    }
    buf[n] = 0;
    *out = buf;
    return CLD_OK;
}

/* Tensor names of the file -> the builder's: old attention spelling
 * (diffusers < 0.15 AttentionBlock) -> the new one. */
static int map_name(const char *name, char *out, size_t cap)
{
    static const char *const from[] = {".query.", ".key.", ".value.", ".proj_attn."};
    static const char *const to[] = {".to_q.", ".to_k.", ".to_v.", ".to_out.0."};
    if ((size_t)snprintf(out, cap, "%s", name) >= cap) return 0;
    if (!strstr(name, ".attentions.")) return 1;
    for (int i = 0; i < 4; i++) {
        const char *p = strstr(name, from[i]);
        if (!p) continue;
        size_t head = (size_t)(p - name);
        if ((size_t)snprintf(out, cap, "%.*s%s%s", (int)head, name, to[i], p + strlen(from[i])) >= cap)
            return 0;
        return 1;
    }
    return 1;
}

/* Check the weights' header against a dry store of the config's parameters. */
static cld_status check_weights(const cld_unet_config *cfg, const char *weights)
{
    struct cld_ctx dry; /* building declares parameters without touching a device */
    memset(&dry, 0, sizeof dry);
    cld_params *p = NULL;
    cld_graph *g = NULL;
    cld_tensor *x, *t, *labels = NULL, *y;
    cld_unet_config c = *cfg;
    c.dropout = 0.0f;
    const int S = c.image_size, xs[4] = {1, c.in_channels, S, S}, one = 1;
    cld_status s = cld_params_create(&dry, &p);
    if (s == CLD_OK) s = cld_graph_create(&dry, p, &g);
    if (s == CLD_OK) s = cld_graph_input(g, "x", 4, xs, 0, &x);
    if (s == CLD_OK) s = cld_graph_input(g, "t", 1, &one, 0, &t);
    if (s == CLD_OK && c.num_classes > 0) s = cld_graph_input(g, "labels", 1, &one, 0, &labels);
    if (s == CLD_OK) s = cld_unet_build(g, &c, x, t, labels, &y);
    if (s == CLD_OK) s = cld__params_load_mapped(p, weights, map_name, 1);
    cld_graph_free(g);
    cld_params_free(p);
    return s;
}

cld_status cld_diffusers_open(const char *dir, cld_diffusers_model *out)
{
    if (!dir || !out) return cld__fail(CLD_ERR_INVALID_ARG, "cld_diffusers_open: NULL argument");
    memset(out, 0, sizeof *out);
    cld_diffusers_model *m = out;
    if (!find(dir, "config.json", "unet/config.json", m->config, sizeof m->config))
        return cld__fail(CLD_ERR_IO, "diffusers folder '%s': no config.json or unet/config.json", dir);
    /* the weights beside the config */
    char base[CLD_DIFFUSERS_PATH];
    snprintf(base, sizeof base, "%s", m->config);
    char *slash = strrchr(base, '/');
    if (slash) *slash = 0;
    if (!find(base, "diffusion_pytorch_model.safetensors", NULL, m->weights, sizeof m->weights)) {
        char bin[CLD_DIFFUSERS_PATH + 40];
        snprintf(bin, sizeof bin, "%s/diffusion_pytorch_model.bin", base);
        if (is_file(bin))
            return cld__fail(CLD_ERR_FORMAT,
                             "diffusers folder '%s': only '%s' (a pickle) is there; the weights are "
                             "needed as diffusion_pytorch_model.safetensors (save_pretrained(..., "
                             "safe_serialization=True))",
                             dir, bin);
        return cld__fail(CLD_ERR_IO, "diffusers folder '%s': no %s/diffusion_pytorch_model.safetensors", dir,
                         base);
    }
    char *text = NULL;
    CLD_TRY(read_text(m->config, &text));
    cld_status s = cld_diffusers_unet_config(text, &m->meta.unet);
    free(text);
    text = NULL;
    if (s != CLD_OK) {
        char msg[768];
        snprintf(msg, sizeof msg, "%s", cld_last_error());
        return cld__fail(s, "'%s': %s", m->config, msg);
    }
    if (find(dir, "scheduler_config.json", "scheduler/scheduler_config.json", m->scheduler_config,
             sizeof m->scheduler_config)) {
        CLD_TRY(read_text(m->scheduler_config, &text));
        s = cld_diffusers_scheduler_config(text, &m->meta.unet, &m->meta.diffusion, &m->sched);
        free(text);
        if (s != CLD_OK) {
            char msg[768];
            snprintf(msg, sizeof msg, "%s", cld_last_error());
            return cld__fail(s, "'%s': %s", m->scheduler_config, msg);
        }
    } else { /* DDPMScheduler's defaults */
        CLD_TRY(cld_diffusers_scheduler_config("{}", &m->meta.unet, &m->meta.diffusion, &m->sched));
        m->sched.present = 0;
    }
    return check_weights(&m->meta.unet, m->weights);
}

cld_status cld_diffusers_load_weights(cld_params *p, const char *weights)
{
    if (!p || !weights) return cld__fail(CLD_ERR_INVALID_ARG, "cld_diffusers_load_weights: NULL argument");
    return cld__params_load_mapped(p, weights, map_name, 0);
}
