/* Training support over a parameter store: EMA weights in a store of the
 * same layout, the global gradient norm and clipping, a finite check, and
 * the full training state (weights, EMA, AdamW moments) in one
 * safetensors file. Included by cldiffusion.h. Thread safety: as the store
 * (one thread per store at a time). */
#ifndef CLDIFFUSION_TRAIN_H
#define CLDIFFUSION_TRAIN_H

#ifdef __cplusplus
extern "C" {
#endif

/* A new store declaring the same parameters (names, shapes, init, seed) in
 * the same order, hence the same layout. Not allocated. */
cld_status cld_params_clone(const cld_params *src, cld_params **out);
/* dst values = src values (same layout). */
cld_status cld_params_copy(cld_params *dst, cld_params *src);
/* ema values = decay * ema + (1 - decay) * src values. */
cld_status cld_params_ema_update(cld_params *ema, cld_params *src, float decay);
/* sqrt(sum of squared gradients) over the store; NaN/Inf propagate. Waits
 * for the queue. */
cld_status cld_params_grad_norm(cld_params *p, double *norm);
/* grads *= scale (clipping). */
cld_status cld_params_grad_scale(cld_params *p, float scale);
/* Index of the first parameter whose values (grads = 0) or gradients
 * (grads = 1) hold a NaN or Inf, or -1. Reads everything back: for errors. */
cld_status cld_params_find_nonfinite(cld_params *p, int grads, int *index);
/* Training state: p's values under their names, ema's values as "ema.NAME",
 * AdamW m and v as "adam_m.NAME", "adam_v.NAME", plus string metadata. The
 * file is written to a temporary name, fsynced, renamed, and the folder
 * fsynced. Loading checks every tensor before any store changes. */
cld_status cld_params_save_state(cld_params *p, cld_params *ema, const char *path, const char *metadata_json);
cld_status cld_params_load_state(cld_params *p, cld_params *ema, const char *path, char **metadata_json_out);

/* The "__metadata__" object of a safetensors file (malloc'd JSON text), after
 * validating the whole header; CLD_ERR_FORMAT if there is none. */
cld_status cld_safetensors_metadata(const char *path, char **metadata_json);
/* One tensor of a safetensors file as floats (F32, F16, BF16; *data
 * malloc'd, the caller frees): `name`, or with name NULL the file's only
 * tensor (CLD_ERR_FORMAT if it has several). The whole header is checked. */
cld_status cld_safetensors_read(const char *path, const char *name, int *ndim, int shape[CLD_MAX_DIMS],
                                float **data);

#ifdef __cplusplus
}
#endif
#endif
