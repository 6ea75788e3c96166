/* The DDPM UNet (Ho et al. 2020) built on the graph executor: its config
 * (presets, JSON, checks), the builder that adds it to a graph, and timing.
 * Included by cldiffusion.h. Thread safety: configs are plain values; the
 * builder works on a graph, which belongs to its context's thread
 * (cldiffusion.h). */
#ifndef CLDIFFUSION_UNET_H
#define CLDIFFUSION_UNET_H

#ifdef __cplusplus
extern "C" {
#endif

#define CLD_UNET_MAX_LEVELS 8
/* The most channels any level (or the input and output) may have: a guard against hostile configs. */
#define CLD_UNET_MAX_CHANNELS 65536

typedef struct cld_unet_config {
    int in_channels;               /* e.g. 3 */
    int out_channels;              /* e.g. 3 */
    int image_size;                /* square input, e.g. 32 */
    int base_channels;             /* e.g. 128 */
    int n_levels;                  /* number of channel multipliers */
    int mult[CLD_UNET_MAX_LEVELS]; /* e.g. 1,2,2,2 */
    int num_res_blocks;            /* per level, e.g. 2 */
    int n_attn;
    int attn_res[CLD_UNET_MAX_LEVELS]; /* resolutions with self-attention, e.g. 16 */
    int heads;                         /* attention heads (DDPM: 1) */
    int norm_groups;                   /* e.g. 32; 0 = no normalisation (a local, tileable net) */
    int no_mid_attn;                   /* 1 = the middle block has no self-attention */
    float dropout;                     /* e.g. 0.1 */
    int num_classes;                   /* 0 = unconditional; else +1 'null' class */
    /* diffusers UNet2DModel options (set by the diffusers folder loader).
     * With diffusers = 0 they are ignored (and must be 0): the net is the
     * one described above, GroupNorm eps 1e-6, the DDPM timestep
     * embedding, symmetric downsampling pads and attention by resolution. */
    int diffusers;
    float norm_eps;                     /* GroupNorm eps (norm_eps) */
    int flip_sin_to_cos;                /* [cos, sin] embedding halves */
    float freq_shift;                   /* f_i = exp(-ln(10000) i / (half - freq_shift)) */
    int head_dim;                       /* attention_head_dim: heads = C / head_dim in each
                                        attention; 0 = one head of all channels */
    int downsample_padding;             /* 1: pad 1 all round; 0: pad right and bottom by one */
    int down_attn[CLD_UNET_MAX_LEVELS]; /* 1: down block i is an AttnDownBlock2D */
    int up_attn[CLD_UNET_MAX_LEVELS];   /* 1: up block u (u = 0 the deepest) is an AttnUpBlock2D */
    int class_no_null;                  /* class table of num_classes rows (num_class_embeds),
                                        no null class: no classifier-free guidance */
} cld_unet_config;

/* Presets: "cifar10" (35,746,307 params), "fashion-mnist" (6,469,889).
 * A config with norm_groups = 0, no attention (n_attn = 0) and no_mid_attn = 1
 * is local: each output pixel depends only on a bounded neighbourhood of the
 * input, so it runs on any image size in overlapping tiles with the same result
 * (the denoiser's architecture). cld_unet_config_is_local() says whether it is. */
int cld_unet_config_is_local(const cld_unet_config *cfg);
cld_status cld_unet_config_preset(const char *name, cld_unet_config *cfg);
/* Check a config for consistency (CLD_ERR_INVALID_ARG naming the field). */
cld_status cld_unet_config_check(const cld_unet_config *cfg);
/* JSON text of the config (malloc'd, caller frees) and back. */
cld_status cld_unet_config_to_json(const cld_unet_config *cfg, char **json);
cld_status cld_unet_config_from_json(const char *json, cld_unet_config *cfg);

/* Build the UNet on g: x (N, in, S, S), t (N) timesteps, labels (N) or NULL;
 * out (N, out, S, S). Parameters are declared in g's store by name, with
 * diffusers' UNet2DModel state_dict names and shapes
 * ("down_blocks.0.resnets.0.conv1.weight", attention projections "to_q"...
 * as (C, C) linear weights, "class_embedding.weight" (num_classes + 1, 4 base)).
 * labels: required iff num_classes > 0; ids 0..num_classes-1, num_classes =
 * the null class (classifier-free guidance). Dropout nodes are built when
 * cfg->dropout > 0: for sampling graphs pass a copy with dropout = 0 (same
 * parameters). A shape error names the op and the module, e.g.
 * "conv2d: ... (in unet module conv_in)". */
cld_status cld_unet_build(cld_graph *g, const cld_unet_config *cfg, cld_tensor *x, cld_tensor *t,
                          cld_tensor *labels, cld_tensor **out);
/* Number of parameters of a config (without a device): exactly what
 * cld_unet_build declares. */
cld_status cld_unet_param_count(const cld_unet_config *cfg, size_t *count);

/* Timing of one forward pass and one training step (forward, backward,
 * AdamW) at a batch size, for cld-bench: median over `iters` after one
 * warm-up run. Builds, on ctx, an inference graph (dropout 0) and a training
 * graph (MSE loss against a random target, backward) sharing one parameter
 * store with the default init; inputs are random. A forward pass is
 * run + cld_ctx_finish; a training step is zero_grad + run + AdamW + finish. */
typedef struct cld_unet_timing {
    double forward_s;                         /* one forward pass */
    double train_step_s;                      /* forward + backward + AdamW */
    size_t fwd_peak_bytes, fwd_sum_bytes;     /* planner, inference graph */
    size_t train_peak_bytes, train_sum_bytes; /* planner, training graph  */
    size_t n_params;
} cld_unet_timing;
cld_status cld_unet_time(cld_ctx *ctx, const cld_unet_config *cfg, int batch, int iters,
                         cld_unet_timing *out);

#ifdef __cplusplus
}
#endif
#endif
