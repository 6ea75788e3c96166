/* Learned variance and the variational bound (Improved DDPM, Nichol &
 * Dhariwal 2021; formulas as OpenAI's improved-diffusion gaussian_diffusion.py).
 * Included by cldiffusion.h. Thread safety: the double references may run on
 * any thread; the loss op and the bound work on a graph or context, which
 * belong to one thread (cldiffusion.h).
 *
 * A learned-variance model returns 2C channels for a C-channel x_t: the
 * first C are its prediction p (eps, v or x_0: the x_0 estimate is
 * x0_hat = kx x_t + kp p), the second C a value v per element that sets
 *   log Sigma = frac log(beta_t) + (1 - frac) log(posterior variance~_t),
 *   frac = (v + 1) / 2
 * where posterior variance~ is the variance of q(x_{t-1} | x_t, x_0) with
 * t = 0's (zero) replaced by t = 1's ("posterior_log_variance_clipped";
 * diffusers calls the whole scheme "learned_range"). The per-timestep
 * term of the bound, in bits per dimension (mean over the C*H*W elements,
 * divided by ln 2), is
 *   t > 0:  KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))   (two Gaussians)
 *   t = 0:  -log p(x_0 | x_1), p a Gaussian discretized to 256 bins of
 *           width 2/255 on [-1, 1], the edge bins open to +-infinity,
 *           Phi approximated as 0.5 (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)))
 *           and the bin probability clamped to >= 1e-12
 * with p's mean the posterior mean at x0_hat. The whole bound adds the
 * prior term KL(q(x_{T-1} | x_0) || N(0, I)).
 *
 * Precision: the per-sample coefficients (conversion, posterior mean, log
 * variances and their difference) are computed in double on the host; the
 * device evaluates the terms in float with cancellation-free forms
 * (expm1(y) - y for the KL, sigmoid products for the bin mass) of the same
 * functions. */
#ifndef CLDIFFUSION_VLB_H
#define CLDIFFUSION_VLB_H

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------ double references (nats) */
/* KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) = 0.5 (-1 + logvar2 - logvar1
 * + e^(logvar1 - logvar2) + (mean1 - mean2)^2 e^-logvar2)   (normal_kl) */
cld_status cld_vlb_normal_kl(double mean1, double logvar1, double mean2, double logvar2, double *kl);
/* -log of the discretized Gaussian likelihood of x (data in [-1, 1]) under
 * N(mean, e^(2 log_scale)), as discretized_gaussian_log_likelihood above. */
cld_status cld_vlb_discretized_gaussian_nll(double x, double mean, double log_scale, double *nll);

/* ------------------------------------------------ per-sample coefficients */
#define CLD_VLB_COEFS 8
/* Row n of coefs (n, CLD_VLB_COEFS) for integer timestep t[n] (0 .. T-1),
 * double precision rounded to float:
 *   0 kx, 1 kp   x0_hat = kx x_t + kp p for a prediction of type pred
 *                (a, b of cld_schedule_ab: alpha_bar clamped to >= 2^-24)
 *   2 c0, 3 ct   posterior mean c0 x_0 + ct x_t (cld_q_posterior(t, t - 1))
 *   4 min_log    log posterior variance~_t (t = 0 uses t = 1's)
 *   5 dlog       log(beta_t) - min_log
 *   6 decoder    1 at t = 0, else 0
 *   7            0 */
cld_status cld_vlb_coefs(const cld_schedule *s, cld_pred_type pred, int n, const int *t, float *coefs);

/* -------------------------------------------------------------- graph ops */
/* loss (1) = (1/N) sum_n L_n, L_n the term of sample n in bits/dim (KL for
 * t > 0, decoder NLL at t = 0) for model_out (N, 2C, ...), x_t and x_0
 * (N, C, ...), coefs (N, CLD_VLB_COEFS) from cld_vlb_coefs. The mean is
 * detached (improved-diffusion's hybrid loss): backward writes the
 * gradient of the variance half, zero into the prediction half, and nothing
 * into x_t, x_0 or coefs. */
cld_status cld_op_vlb_loss(cld_graph *g, cld_tensor *model_out, cld_tensor *x_t, cld_tensor *x_0,
                           cld_tensor *coefs, cld_tensor **loss);

/* ------------------------------------------------------- the whole bound */
#define CLD_NOISE_STREAM_VLB 3u /* noise of x_t in cld_vlb_bound */

/* Bound of n images: for every image and evaluated t, x_t = q_sample(x_0,
 * t) with noise (seed, CLD_NOISE_STREAM_VLB, sample index first_index +
 * image, step t), so a result does not depend on max_batch; one model call
 * takes up to max_batch (image, t) pairs. */
typedef struct cld_vlb_job {
    int n;              /* images */
    size_t per_sample;  /* floats per image, C*H*W (the model returns 2x) */
    cl_mem x0;          /* (n, per_sample): data in [-1, 1] (8-bit: k / 127.5 - 1) */
    size_t x0_off;      /* in floats */
    const int *labels;  /* (n) class labels of a conditional model, or NULL */
    cld_pred_type pred; /* what the first half of the model output is */
    int clip_denoised;  /* 1: clip x0_hat to [-1, 1] (improved-diffusion's NLL default) */
    int t_stride;       /* 0 or 1: all T terms (the bound). k > 1: t = 0 and t = 1, 1 + k,
                                 1 + 2k, ..., each weighted by the k timesteps it stands for
                                 (the last fewer): an estimate, k times faster */
    int max_batch;      /* (image, t) pairs per model call */
    uint64_t seed;
    uint32_t first_index;
    cld_model_fn model; /* out (m, 2 * per_sample) for x (m, per_sample) */
    void *model_user;
    void (*progress)(void *user, long done, long total); /* pairs done, after each call */
    void *progress_user;
    double *bpd;       /* out (n): each image's bound in bits/dim */
    double *terms_bpd; /* out (T + 1) or NULL: mean over images of the term at t
                                 (0 where not evaluated), then the prior term */
} cld_vlb_job;
cld_status cld_vlb_bound(cld_ctx *ctx, const cld_schedule *s, const cld_vlb_job *job);

/* ------------------------------------------------------------ sampling */
/* Ancestral (DDPM) sampling with the learned variance, over the timesteps
 * of opts (kind CLD_SAMPLER_DDPM; steps, spacing, steps_offset, pred,
 * guidance, null_label; opts->variance is ignored). Respaced as
 * improved-diffusion: for consecutive points t > s, beta = 1 - alpha_bar_t
 * / alpha_bar_s and the posterior variance of q(x_s | x_t, x_0) are the
 * two ends of the interpolation. The model returns (m, 2 * per_sample);
 * with guidance, the prediction is guided and the variance is the
 * conditional branch's (as diffusers' DiT pipeline). Noise as cld_sampler_run
 * (step 0 for x_T, k + 1 for step k); the last step adds none. */
cld_status cld_sampler_run_learned_var(cld_ctx *ctx, const cld_schedule *s, const cld_sampler_opts *opts,
                                       const cld_sample_job *job);

/* The other samplers on a learned-variance model: a cld_model_fn (pass
 * cld_pred_half_fn and a cld_pred_half) that calls `model` (output (n, 2 *
 * per_sample)) and returns its prediction half (n, per_sample), as diffusers
 * does for schedulers without a learned variance. A scratch buffer is
 * allocated per call. */
typedef struct cld_pred_half {
    cld_ctx *ctx;
    cld_model_fn model;
    void *model_user;
    size_t per_sample;
} cld_pred_half;
cld_status cld_pred_half_fn(void *pred_half, cl_mem x, size_t x_off, cl_mem out, size_t out_off, int n,
                            const float *t, const int *labels);

#ifdef __cplusplus
}
#endif
#endif
