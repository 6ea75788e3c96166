/* A model file: UNet weights in safetensors plus, in "__metadata__", every
 * setting needed to rebuild and sample the model with no flags (UNet
 * config, diffusion schedule and prediction type, class names). And a
 * runner that makes a UNet graph a cld_model_fn for the samplers.
 * Included by cldiffusion.h. Thread safety: a runner belongs to one thread. */
#ifndef CLDIFFUSION_MODEL_H
#define CLDIFFUSION_MODEL_H

#ifdef __cplusplus
extern "C" {
#endif

#define CLD_MODEL_MAX_CLASSES 256
#define CLD_MODEL_CLASS_NAME 48

typedef struct cld_diffusion_config {
    cld_schedule_kind schedule;
    int T;
    double beta_start, beta_end; /* 0: the schedule's default for that end */
    int zero_terminal_snr;
    cld_pred_type pred;
    int learned_variance; /* 1: the UNet has 2x output channels, the second half
                                      interpolates log variance between the posterior's and
                                      beta_t (Improved DDPM; diffusers' "learned_range") */
} cld_diffusion_config;

typedef struct cld_model_meta {
    cld_unet_config unet;
    cld_diffusion_config diffusion;
    int n_class_names; /* 0: none stored */
    char class_names[CLD_MODEL_MAX_CLASSES][CLD_MODEL_CLASS_NAME];
} cld_model_meta;

/* "__metadata__" JSON object (string values: "cld.format", "cld.unet",
 * "cld.diffusion", "cld.classes"), malloc'd; and back. from_json fails with
 * CLD_ERR_FORMAT naming the missing or bad key. */
cld_status cld_model_meta_to_json(const cld_model_meta *m, char **json);
cld_status cld_model_meta_from_json(const char *json, cld_model_meta *m);
/* Schedule of a diffusion config. */
cld_status cld_diffusion_schedule(const cld_diffusion_config *d, cld_schedule **out);
/* "eps"/"v"/"x0", "linear"/"cosine"/"scaled-linear" and back. */
const char *cld_pred_name(cld_pred_type p);
cld_status cld_pred_parse(const char *name, cld_pred_type *p);
const char *cld_schedule_name(cld_schedule_kind k);
cld_status cld_schedule_parse(const char *name, cld_schedule_kind *k);

/* A UNet inference graph (dropout off) of batch max_batch on params, usable
 * as a cld_model_fn (pass cld_unet_runner_fn and the runner). Calls with
 * n < max_batch run the whole batch and copy n results. */
typedef struct cld_unet_runner cld_unet_runner;
cld_status cld_unet_runner_create(cld_ctx *ctx, cld_params *params, const cld_unet_config *cfg, int max_batch,
                                  cld_unet_runner **out);
cld_status cld_unet_runner_free(cld_unet_runner *r);
cld_status cld_unet_runner_fn(void *runner, cl_mem x, size_t x_off, cl_mem out, size_t out_off, int n,
                              const float *t, const int *labels);
/* Planned device bytes of the runner's graph (arena). */
cld_status cld_unet_runner_bytes(const cld_unet_runner *r, size_t *bytes);
/* Bytes of its largest single tensor or workspace: the arena is split into
 * chunks of at most the device's max allocation, and one block must fit. */
cld_status cld_unet_runner_largest(const cld_unet_runner *r, size_t *bytes);

#ifdef __cplusplus
}
#endif
#endif
