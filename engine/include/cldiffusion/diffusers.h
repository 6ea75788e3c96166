/* diffusers model folders: a UNet2DModel saved with save_pretrained in
 * safetensors form (google/ddpm-cifar10-32, ddpm-celebahq-256, ... and
 * their fine-tunes), read as a cld_model_meta and a parameter store.
 * Included by cldiffusion.h. cld_model_load takes such a folder too.
 * Thread safety: the reads take no shared state and may run on any thread;
 * the parameter store they fill belongs to its context's thread
 * (cldiffusion.h).
 *
 *   DIR/config.json or DIR/unet/config.json                    UNet2DModel config
 *   DIR[/unet]/diffusion_pytorch_model.safetensors             its weights (F32, F16, BF16)
 *   DIR/scheduler_config.json or DIR/scheduler/scheduler_config.json   optional
 *
 * Every config key is read: a key at a value the engine implements maps
 * onto cld_unet_config (diffusers = 1) or the diffusion and sampler
 * defaults; a key that newer diffusers versions write at its default value
 * is accepted; any other key or value is CLD_ERR_FORMAT naming the key
 * (and the value), never silently ignored.
 * Tensor names may use the old attention spelling (query, key, value,
 * proj_attn) or the new one (to_q, to_k, to_v, to_out.0). */
#ifndef CLDIFFUSION_DIFFUSERS_H
#define CLDIFFUSION_DIFFUSERS_H

#ifdef __cplusplus
extern "C" {
#endif

#define CLD_DIFFUSERS_PATH 4096

/* What a scheduler config says about sampling (defaults that flags override). */
typedef struct cld_diffusers_scheduler {
    int present;         /* 0: the folder has no scheduler config (DDPM defaults) */
    char class_name[32]; /* "DDPMScheduler" or "DDIMScheduler" */
    cld_spacing spacing; /* timestep_spacing (diffusers' default: leading) */
    int steps_offset;
    cld_ddpm_variance variance; /* variance_type fixed_small / fixed_large (learned_range: posterior) */
    double clip_sample;         /* clip_sample ? clip_sample_range : 0 */
    int set_alpha_to_one;       /* DDIM (1 for DDPM) */
} cld_diffusers_scheduler;

typedef struct cld_diffusers_model {
    cld_model_meta meta; /* UNet config (diffusers = 1) and diffusion config */
    cld_diffusers_scheduler sched;
    char config[CLD_DIFFUSERS_PATH]; /* the files found */
    char weights[CLD_DIFFUSERS_PATH];
    char scheduler_config[CLD_DIFFUSERS_PATH]; /* "" when absent */
} cld_diffusers_model;

/* A UNet2DModel config.json text -> cfg (sampling config: dropout as given). */
cld_status cld_diffusers_unet_config(const char *json, cld_unet_config *cfg);
/* A DDPMScheduler / DDIMScheduler config text -> diffusion config and
 * sampler defaults. out_channels vs in_channels decides learned_range. */
cld_status cld_diffusers_scheduler_config(const char *json, const cld_unet_config *unet,
                                          cld_diffusion_config *d, cld_diffusers_scheduler *sched);
/* Open a folder: both configs, and the weights' safetensors header
 * checked against the parameters the config declares (every tensor
 * present with its shape and a float dtype, no unexpected tensor, offsets
 * inside the file), all before any device memory is touched. A wrong or
 * partial folder names the first file, key or tensor that does not fit. */
cld_status cld_diffusers_open(const char *dir, cld_diffusers_model *out);
/* Load the weights file of an opened folder into p, whose parameters are
 * those of cld_unet_build for the folder's config (F16/BF16 -> F32). */
cld_status cld_diffusers_load_weights(cld_params *p, const char *weights);
/* Apply the scheduler's defaults (spacing, steps_offset, variance,
 * clip_sample, set_alpha_to_one) to sampler options. */
cld_status cld_diffusers_sampler_defaults(const cld_diffusers_scheduler *sched, cld_sampler_opts *o);

#ifdef __cplusplus
}
#endif
#endif
