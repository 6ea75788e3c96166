/* Photo denoising with a local diffusion UNet: the UNet run on images of
 * any size in overlapping tiles, the noise level of a photo estimated per
 * channel, and the denoising run itself (one-step x0 estimate or DDIM from
 * the matching timestep). What cld-denoise does, as a library. Included by
 * cldiffusion.h. Thread safety: a cld_tiled belongs to one thread.
 *
 * Tiling. A local UNet (cld_unet_config_is_local: no normalisation, no
 * attention) computes each output pixel from a bounded neighbourhood, its
 * receptive field (cld_unet_receptive_radius). The image is reflect-padded;
 * square tiles of side `tile` (a multiple of 2^(n_levels-1)) start on a
 * grid of that multiple, so every tile's downsampled grids coincide with the
 * whole image's. A tile's outer `margin` pixels are computed and dropped;
 * next to them, over `blend` pixels, neighbouring tiles cross-fade with
 * sin^2 weights (weights of overlapping tiles sum to 1, normalised anyway).
 * At the image's border a tile keeps all but `edge` pixels of reflected
 * context (edge <= margin): the border needs no more context than the
 * margin gives, and a photo that fits one tile is computed with `edge`
 * pixels of padding per side instead of margin + blend (a 500 x 500
 * photo: one 520 tile instead of 632, 1.08x its pixels instead of 1.6x).
 * With margin >= the receptive radius (and then edge = margin) every kept
 * pixel is the UNet's value on
 * the whole reflect-padded image, whatever the tile size (float rounding
 * aside); a smaller margin or edge trades an error in the receptive field's
 * tail (small for a trained denoiser: measured in the README) for far less
 * overlap.
 */
#ifndef CLDIFFUSION_DENOISE_H
#define CLDIFFUSION_DENOISE_H

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ tiled UNet */
/* Radius in input pixels of a local UNet's receptive field: output pixel
 * (y, x) depends on input pixels within [y - r, y + r] x [x - r, x + r]
 * only (a bound from the architecture, taking every 3x3 conv at its scale
 * and the down/upsampling alignment). CLD_ERR_INVALID_ARG for a non-local
 * config. */
cld_status cld_unet_receptive_radius(const cld_unet_config *cfg, int *radius);

#define CLD_TILE_DEFAULT_BLEND 16
#define CLD_TILE_DEFAULT_EDGE 8 /* reflected context at the image border when the margin is not exact */
#define CLD_TILE_AUTO_MAX 1024  /* largest tile the automatic choice takes */

typedef struct cld_tile_opts {
    int tile;     /* tile side (multiple of 2^(n_levels-1)); 0: chosen per image from the device memory */
    int margin;   /* context pixels dropped at each tile side; -1 (or more than the
                     receptive radius): the receptive radius (exact) */
    int blend;    /* cross-fade width between neighbours, >= 1 (0: CLD_TILE_DEFAULT_BLEND) */
    int max_tile; /* with tile 0: upper bound of the choice (0: CLD_TILE_AUTO_MAX) */
    int edge;     /* reflected context at the image border, at most the margin, rounded up to a
                     multiple of 2^(n_levels-1); 0: the margin if that is exact, else
                     CLD_TILE_DEFAULT_EDGE; -1: the margin */
} cld_tile_opts;

/* How an image of H x W is cut. */
typedef struct cld_tile_plan {
    int tile, margin, blend; /* blend: the effective cross-fade (>= the asked one) */
    int stride;              /* tile origins: k * stride in padded coordinates */
    int offset;              /* image pixel (0, 0) sits at padded (offset, offset): the edge context */
    int nx, ny;              /* tiles per row, per column */
    size_t device_bytes;     /* planned device memory of one tile's UNet pass (arena + staging) */
    size_t budget_bytes;     /* what a run may use: half the device memory, less the parameters */
} cld_tile_plan;

typedef struct cld_tiled cld_tiled;
/* A runner of `cfg` (which must be local) on params for images of any
 * size. The UNet graph is built on first use at the plan's tile side (a
 * copy of cfg with image_size = tile, dropout 0) and kept while the side
 * stays the same. */
cld_status cld_tiled_create(cld_ctx *ctx, cld_params *params, const cld_unet_config *cfg,
                            const cld_tile_opts *opts, cld_tiled **out);
cld_status cld_tiled_free(cld_tiled *t);
/* The UNet's input and output channels. */
cld_status cld_tiled_channels(const cld_tiled *t, int *in, int *out);
/* The cut of an H x W image: with opts.tile 0 the side that computes the
 * fewest pixels among those whose planned memory fits the budget;
 * CLD_ERR_NOMEM if not even the smallest fits, CLD_ERR_INVALID_ARG for a
 * tile side that is not a multiple of 2^(n_levels-1) or leaves no room
 * inside its margins. */
cld_status cld_tiled_plan(cld_tiled *t, int height, int width, cld_tile_plan *plan);
/* out (out_channels, H, W) = the UNet on x (in_channels, H, W) at timestep
 * t (continuous, as the samplers pass it), tile by tile. progress (or NULL)
 * after each tile. A NaN or Inf in the output is CLD_ERR_STATE. */
cld_status cld_tiled_run(cld_tiled *t, const float *x, int height, int width, float timestep, float *out,
                         void (*progress)(void *user, int done, int total), void *user);

/* ------------------------------------------------------ noise estimation */
/* Standard deviation of white Gaussian noise in each channel of an image
 * (C, H, W) with values on the 0..`range` scale (255 for 8-bit photos in
 * those units), as in the judging protocol: clipped to [0, range] and
 * rounded. The statistic is Immerkaer's (1996) mean |Laplacian-difference|
 * over 3x3 windows with no clipped pixel, in blocks of 16 x 16: the 5%
 * quantile of the block values (flat parts of the photo, where texture adds
 * least) divided by that quantile on pure noise, or the mean over all
 * windows when too few blocks remain. Excluding clipped windows truncates
 * the noise near 0 and range; that bias is corrected by the variance of the
 * Gaussian truncated at each window's distance to the bounds (fixed-point
 * iteration). Estimates under 30 (on the 0..255 scale) are then refined on
 * weak-texture patches (Liu, Tanaka, Okutomi 2013): the smallest
 * eigenvalue of the covariance of the 7x7 unclipped patches whose gradient
 * energy is that of pure noise, calibrated on pure noise (fine texture
 * raised the block statistic by up to 20% at sigma 5). sigma[c] 0 for a
 * channel with no usable window (constant or all clipped). On real camera noise (not white, stronger in colour than
 * in brightness, signal-dependent) this is the white-noise level that
 * explains the finest-scale residual of the flattest areas. */
cld_status cld_noise_estimate(const float *x, int channels, int height, int width, double range,
                              double *sigma);

/* ------------------------------------------------------------ denoising */
/* The timestep whose noise level matches sigma (0..255 scale, of a photo
 * in [0, 1] mapped to the model's [-1, 1]): the model sees y' = 2 y - 1 as
 * x_t = a_t y' with sigma_t = b_t / a_t = 2 sigma / 255, t continuous
 * (cld_schedule_sigma_to_t; the UNet's timestep embedding takes floats).
 * Below the schedule's first level t is 0. */
cld_status cld_denoise_timestep(const cld_schedule *s, double sigma255, double *t);
/* Largest sigma (0..255) a model trained on timesteps 0 .. t_max accepts. */
cld_status cld_denoise_max_sigma(const cld_schedule *s, int t_max, double *sigma255);

typedef struct cld_denoise_opts {
    double sigma;    /* noise level, 0..255 scale (> 0) */
    int steps;       /* 1: the one-step x0 estimate (MMSE); N: N deterministic DDIM steps from t(sigma) */
    double strength; /* in [0, 1]: out = strength denoised + (1 - strength) input */
    void (*progress)(void *user, int done, int total); /* after each tile of each step */
    void *progress_user;
} cld_denoise_opts;

/* Denoise img (C, H, W) in [0, 1] with model pred type `pred` on schedule
 * s through the tiler into out (C, H, W), clamped to [0, 1]. C must be the
 * UNet's channel count. A NaN or Inf anywhere is CLD_ERR_STATE. */
cld_status cld_denoise_run(cld_tiled *t, const cld_schedule *s, cld_pred_type pred, const cld_denoise_opts *o,
                           const float *img, int height, int width, float *out);

#ifdef __cplusplus
}
#endif
#endif
