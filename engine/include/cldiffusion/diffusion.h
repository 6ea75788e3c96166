/* Diffusion core: noise schedules, the forward process q(x_t | x_0), training
 * objectives, samplers and reproducible noise. Included by cldiffusion.h.
 * Thread safety: a cld_schedule is read-only once made and may be shared
 * between threads; calls that take a context (noise on the device,
 * samplers) follow the one-context-per-thread rule of cldiffusion.h.
 *
 * Notation (variance preserving, as in DDPM):
 *   x_t = a_t x_0 + b_t eps,   a_t = sqrt(alpha_bar_t),  b_t = sqrt(1 - alpha_bar_t)
 *   sigma_t = b_t / a_t        (the "VE" noise level used by Euler, Heun, DPM-Solver)
 *   lambda_t = log(a_t / b_t)  (half log-SNR)
 *   v = a_t eps - b_t x_0      (v-prediction, Salimans & Ho 2022)
 * Timesteps t are 0 .. T-1 (t = 0 is the least noisy); a model receives t as
 * a float and may get non-integer values (Karras spacing), see
 * cld_schedule_sigma. All samplers keep x in these variance-preserving
 * coordinates on the device.
 *
 * Reproducible noise (the promise)
 *   Noise is a pure function of (seed, stream, sample index, step, element):
 *   the same 32-bit float bits on every OpenCL device and in the host
 *   reference cld_noise_host. Element i (0-based, within one sample of
 *   per_sample floats) of sample index n is computed as
 *     ctr = { i / 4, n, step, stream }          four 32-bit counter words
 *     key = { seed & 0xffffffff, seed >> 32 }   two 32-bit key words
 *     (o0, o1, o2, o3) = Philox-4x32-10(ctr, key)  (Salmon et al. 2011; the
 *                          Random123 known-answer vectors hold)
 *     elements 4j, 4j+1 are BoxMuller(o0, o1); 4j+2, 4j+3 are BoxMuller(o2, o3)
 *   BoxMuller(w0, w1) = (r cos th, r sin th) with r = sqrt(-2 ln u),
 *   u = (w0 + 1) / 2^32 in (0, 1], th = 2 pi w1 / 2^32, evaluated entirely in
 *   integer fixed point (64-bit words; ln by a 64-entry table and a series,
 *   an exact integer square root, sin and cos by a 64-entry table and
 *   series) and rounded to float to nearest (ties to even) by integer code.
 *   No floating-point operation decides a bit, so no compiler option
 *   (-cl-mad-enable, -cl-fast-relaxed-math) or device math library can
 *   change one. The result is within half an ulp plus 1e-8 of exact
 *   Box-Muller; |z| < 6.67. The algorithm and its constant tables are part
 *   of the promise and versioned by CLD_NOISE_VERSION.
 *   Samplers draw their noise with stream CLD_NOISE_STREAM_SAMPLER, sample
 *   index first_index + n (n = position in the batch, so a sample does not
 *   depend on the batch it was made in), step 0 for the initial x_T and
 *   step k + 1 for the noise injected by sampler step k (k = 0 .. steps-1).
 */
#ifndef CLDIFFUSION_DIFFUSION_H
#define CLDIFFUSION_DIFFUSION_H

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------- schedules */
typedef enum cld_schedule_kind {
    CLD_SCHEDULE_LINEAR = 0,        /* beta linear in t (DDPM: 1e-4 .. 0.02)               */
    CLD_SCHEDULE_COSINE = 1,        /* Nichol & Dhariwal 2021, s = 0.008, beta <= 0.999    */
    CLD_SCHEDULE_SCALED_LINEAR = 2, /* sqrt(beta) linear (Stable Diffusion: 0.00085 .. 0.012) */
} cld_schedule_kind;

/* A schedule of T steps; all arrays have T entries, double precision, owned
 * by the schedule and read-only for the caller. */
typedef struct cld_schedule {
    int T;
    cld_schedule_kind kind;
    int zero_terminal_snr; /* rescaled so that alpha_bar[T-1] == 0 (Lin et al. 2023) */
    double *beta;          /* (T) */
    double *alpha_bar;     /* (T) prod_{s <= t} (1 - beta_s) */
    double *log_sigma;     /* (T) log(b/a), alpha_bar clamped to >= 2^-24 (see below) */
} cld_schedule;

/* beta_start, beta_end: the linear and scaled-linear end points (0 gives that end's
 * default above; ignored for cosine). The betas are
 *   linear:        linspace(beta_start, beta_end, T)
 *   scaled-linear: linspace(sqrt(beta_start), sqrt(beta_end), T)^2
 *   cosine:        beta_t = min(1 - f(t+1)/f(t), 0.999),
 *                  f(t) = cos^2(pi/2 (t/T + s)/(1 + s)), s = 0.008
 * and alpha_bar is their cumulative product. zero_terminal_snr rescales
 * sqrt(alpha_bar) linearly so its last value is 0 and its first unchanged
 * (Lin et al. 2023, algorithm 1) and recomputes beta from the result.
 * Zero SNR makes sigma infinite at T-1; wherever a finite sigma is needed
 * (log_sigma, the samplers) alpha_bar is clamped to >= 2^-24, as diffusers. */
cld_status cld_schedule_create(cld_schedule_kind kind, int T, double beta_start, double beta_end,
                               int zero_terminal_snr, cld_schedule **out);
cld_status cld_schedule_free(cld_schedule *s);

/* Continuous time. sigma(t) for t in [0, T-1] interpolates log sigma linearly
 * between integer steps (as k-diffusion); t outside is clamped. At integer t
 * this is the table value. sigma_to_t is its inverse (sigma clamped to the
 * table's range). cld_schedule_ab gives a = 1/sqrt(1 + sigma^2), b = sigma a
 * at continuous t; at integer t exactly sqrt(alpha_bar), sqrt(1 - alpha_bar)
 * of the table (with the 2^-24 clamp). */
cld_status cld_schedule_sigma(const cld_schedule *s, double t, double *sigma);
cld_status cld_schedule_sigma_to_t(const cld_schedule *s, double sigma, double *t);
cld_status cld_schedule_ab(const cld_schedule *s, double t, double *a, double *b);

/* Posterior q(x_s | x_t, x_0) for 0 <= t < T and -1 <= s < t (s = -1 means
 * the clean end, alpha_bar = 1): mean = c0 x_0 + ct x_t, variance var.
 * With alpha = alpha_bar_t / alpha_bar_s and beta = 1 - alpha:
 *   c0 = sqrt(alpha_bar_s) beta / (1 - alpha_bar_t)
 *   ct = sqrt(alpha) (1 - alpha_bar_s) / (1 - alpha_bar_t)
 *   var = beta (1 - alpha_bar_s) / (1 - alpha_bar_t)
 * which for s = t-1 is the DDPM posterior (Ho et al. 2020, eq. 7). */
cld_status cld_q_posterior(const cld_schedule *s, int t, int t_prev, double *c0, double *ct, double *var);

/* ------------------------------------------------------------------ noise */
#define CLD_NOISE_VERSION 1
#define CLD_NOISE_STREAM_SAMPLER 0u /* sampler noise (x_T and per-step noise) */
#define CLD_NOISE_STREAM_TRAIN 1u   /* suggested for training noise (q_sample) */

/* Which noise: sample n of a batch uses sample index `index` + n. */
typedef struct cld_noise_key {
    uint64_t seed;
    uint32_t stream;
    uint32_t index; /* sample index of the batch's first sample */
    uint32_t step;
} cld_noise_key;

/* Philox-4x32-10 block: out = Philox(ctr, key). */
cld_status cld_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);
/* The normal pair of the promise above from two 32-bit words. */
cld_status cld_box_muller_fixed(uint32_t w0, uint32_t w1, float out[2]);
/* Host reference: out (n, per_sample) of standard normal noise. */
cld_status cld_noise_host(const cld_noise_key *key, int n, size_t per_sample, float *out);
/* Device: the same numbers, bit for bit, into out (n, per_sample) at out_off floats. */
cld_status cld_noise_fill(cld_ctx *ctx, const cld_noise_key *key, int n, size_t per_sample, cl_mem out,
                          size_t out_off);

/* Element-wise update used by the samplers and the posterior:
 *   out = sum_k w_k v_k + w_noise z,    z = noise(key) as cld_noise_fill
 * over n samples of per_sample floats. A term whose weight is 0 is skipped
 * (its buffer is not read and may be NULL); `key` may be NULL if w_noise is 0.
 * `out` may be the same memory as any v_k. No host synchronisation. */
typedef struct cld_lincomb_term {
    cl_mem buf;
    size_t off; /* in floats */
    double w;
} cld_lincomb_term;
cld_status cld_lincomb(cld_ctx *ctx, int n, size_t per_sample, const cld_lincomb_term terms[4],
                       double w_noise, const cld_noise_key *key, cl_mem out, size_t out_off);

/* --------------------------------------------------- objectives (training) */
typedef enum cld_pred_type {
    CLD_PRED_EPS = 0, /* the model predicts the noise eps  */
    CLD_PRED_V = 1,   /* v = a eps - b x_0                 */
    CLD_PRED_X0 = 2,  /* the clean sample x_0              */
} cld_pred_type;

/* Conversion between prediction types at one noise level: a prediction p of
 * type `from` at x_t is the prediction kx x_t + kp p of type `to`. Requires
 * a^2 + b^2 = 1, a > 0 for from = eps, b > 0 for to = eps (else INVALID_ARG). */
cld_status cld_pred_coefs(cld_pred_type from, cld_pred_type to, double a, double b, double *kx, double *kp);
/* Device: out (n, per_sample) = conversion of pred at x_t, sample n at
 * continuous timestep t[n] (a, b from cld_schedule_ab). out may alias pred. */
cld_status cld_pred_convert(cld_ctx *ctx, const cld_schedule *s, cld_pred_type from, cld_pred_type to, int n,
                            size_t per_sample, const float *t, cl_mem xt, size_t xt_off, cl_mem pred,
                            size_t pred_off, cl_mem out, size_t out_off);

/* The forward process in one kernel: for every sample n (timestep t[n],
 * integer 0 .. T-1, from the table without clamp)
 *   x_t = a x_0 + b eps,   eps = noise(key) (sample index key->index + n)
 * and, if target is not NULL, the training target of type target_type
 * (eps, v = a eps - b x_0, or x_0). x0, xt, target are (n, per_sample). A
 * small per-call buffer holds the n coefficient pairs. */
cld_status cld_q_sample(cld_ctx *ctx, const cld_schedule *s, int n, size_t per_sample, const int *t,
                        cl_mem x0, size_t x0_off, const cld_noise_key *key, cl_mem xt, size_t xt_off,
                        cld_pred_type target_type, cl_mem target, size_t target_off);

/* Device: turns x_t of cld_q_sample (same n, t, x0) into what an image file
 * of `levels` levels per channel holds (256: an 8-bit photo), the input a
 * denoiser sees: the noisy image y = x_t / a, clipped to the data range
 * [-1, 1] and rounded to the nearest of the levels (-1 + 2 k / (levels - 1)),
 * x_t = a y; if target is not NULL, the target of type target_type is
 * recomputed from the effective noise (x_t - a x_0) / b. Needs a > 0 and
 * b > 0 at every t[i] (else INVALID_ARG: zero terminal SNR's last step has
 * no image) and levels in 2 .. 65536. */
cld_status cld_q_quantize(cld_ctx *ctx, const cld_schedule *s, int n, size_t per_sample, const int *t,
                          int levels, cl_mem x0, size_t x0_off, cl_mem xt, size_t xt_off,
                          cld_pred_type target_type, cl_mem target, size_t target_off);

/* Device: out = c0 x_0 + ct x_t (the posterior mean of cld_q_posterior). */
cld_status cld_q_posterior_mean(cld_ctx *ctx, const cld_schedule *s, int t, int t_prev, size_t count,
                                cl_mem x0, size_t x0_off, cl_mem xt, size_t xt_off, cl_mem out,
                                size_t out_off);

typedef enum cld_loss_weighting {
    CLD_LOSS_UNIFORM = 0, /* weight 1 */
    CLD_LOSS_MIN_SNR = 1, /* Min-SNR-gamma (Hang et al. 2023)  */
} cld_loss_weighting;
/* Per-sample loss weight at integer t for an MSE on the given prediction
 * type. With snr = alpha_bar / (1 - alpha_bar), Min-SNR-gamma gives
 *   eps: min(snr, gamma) / snr    v: min(snr, gamma) / (snr + 1)    x0: min(snr, gamma)
 * (eps at snr = 0: 1). These are the weights of the x_0 loss min(snr, gamma)
 * expressed for each target. */
cld_status cld_loss_weight(const cld_schedule *s, int t, cld_pred_type pred, cld_loss_weighting weighting,
                           double gamma, double *w);

/* ---------------------------------------------------------------- samplers */
typedef enum cld_sampler_kind {
    CLD_SAMPLER_DDPM = 0,     /* ancestral sampling of p(x_s | x_t) (Ho et al. 2020)   */
    CLD_SAMPLER_DDIM = 1,     /* Song et al. 2021, with eta                            */
    CLD_SAMPLER_DPMPP_2M = 2, /* DPM-Solver++(2M), Lu et al. 2022, lower order at ends  */
    CLD_SAMPLER_EULER = 3,    /* Euler on the probability-flow ODE (k-diffusion)       */
    CLD_SAMPLER_EULER_A = 4,  /* Euler ancestral (k-diffusion, eta)                    */
    CLD_SAMPLER_HEUN = 5,     /* Heun, 2nd order, as EDM (Karras et al. 2022), churn 0 */
} cld_sampler_kind;

typedef enum cld_spacing {
    CLD_SPACING_LEADING = 0,  /* (0 .. steps-1) * (T / steps) + steps_offset, descending */
    CLD_SPACING_TRAILING = 1, /* round(T - k T / steps) - 1, k = 0 .. steps-1            */
    CLD_SPACING_LINSPACE = 2, /* round(linspace(T-1, 0, steps))                          */
} cld_spacing;

typedef enum cld_ddpm_variance {
    CLD_VAR_POSTERIOR = 0, /* "fixed_small": the posterior variance          */
    CLD_VAR_BETA = 1,      /* "fixed_large": beta = 1 - alpha_bar_t / alpha_bar_s */
} cld_ddpm_variance;

typedef struct cld_sampler_opts {
    cld_sampler_kind kind;
    int steps; /* 1 .. T */
    cld_spacing spacing;
    int steps_offset; /* added to leading timesteps (Stable Diffusion: 1) */
    int karras;       /* Karras sigmas (not for DDPM): sigma_max^(1/rho) .. sigma_min^(1/rho) */
    double rho;       /* Karras exponent (7)                              */
    double eta;       /* DDIM: 0 deterministic, 1 = DDPM posterior; Euler a: 1 */
    cld_ddpm_variance variance;
    cld_pred_type pred;   /* what the model returns                          */
    double guidance;      /* classifier-free guidance scale (1: off)         */
    int null_label;       /* label of the unconditional branch               */
    double clip_sample;   /* DDPM, DDIM: clamp the x_0 estimate to [-c, c] (0: off), as
                                diffusers' clip_sample (DDIM keeps the unclipped eps for the
                                direction term, as its default use_clipped_model_output) */
    int final_alpha_bar0; /* DDIM: the last step goes to alpha_bar[0] instead of the clean
                                end (diffusers' set_alpha_to_one = false) */
} cld_sampler_opts;

/* Defaults for `kind`: 50 steps (DDPM: T = 1000), trailing spacing, no
 * Karras (Heun: Karras, rho 7), eta 0 (Euler a: 1), posterior variance,
 * eps-prediction, guidance 1, null label 0. */
cld_status cld_sampler_opts_default(cld_sampler_kind kind, cld_sampler_opts *o);

/* The model: given x (n, per_sample) at per-sample continuous timesteps
 * t[n] (0 .. T-1) and labels (n ints or NULL), write its raw prediction of
 * the configured type into out (n, per_sample). It must not write x. It is
 * called on the context's queue; it may enqueue work or read/write
 * buffers as it likes. */
typedef cld_status (*cld_model_fn)(void *user, cl_mem x, size_t x_off, cl_mem out, size_t out_off, int n,
                                   const float *t, const int *labels);

/* One sampling run. With labels and guidance != 1 (classifier-free
 * guidance), the model sees ONE batch of 2n: x twice, labels then n copies
 * of null_label, and pred = uncond + guidance (cond - uncond). */
typedef struct cld_sample_job {
    int n;             /* samples */
    size_t per_sample; /* floats per sample, e.g. C*H*W */
    const int *labels; /* (n) class labels, or NULL */
    uint64_t seed;
    uint32_t first_index; /* noise sample index of the first sample */
    int start_from_out;   /* 1: `out` already holds x at the first point's noise level */
    cl_mem out;           /* (n, per_sample): the result */
    size_t out_off;       /* in floats */
    cld_model_fn model;
    void *model_user;
    void (*progress)(void *user, int step, int total); /* after each step, or NULL */
    void *progress_user;
} cld_sample_job;

/* Runs opts->steps steps from pure noise (x_T = noise step 0, unit
 * variance) or from `out`. All state lives on the device; the workspace is
 * allocated once per run; the host only waits where the model does. */
cld_status cld_sampler_run(cld_ctx *ctx, const cld_schedule *s, const cld_sampler_opts *opts,
                           const cld_sample_job *job);

/* The points a run visits: steps + 1 of them, the last the clean end
 * (t = -1, a = 1, b = 0). t is what the model receives. */
typedef struct cld_sampler_point {
    double t, a, b;
} cld_sampler_point;
cld_status cld_sampler_points(const cld_schedule *s, const cld_sampler_opts *opts, cld_sampler_point *pts,
                              int *count);
/* Model calls per run (Heun: 2 steps - 1; every other sampler: steps). */
cld_status cld_sampler_model_calls(const cld_sampler_opts *opts, int *calls);
/* "ddpm", "ddim", "dpmpp_2m", "euler", "euler_a", "heun" and back. */
const char *cld_sampler_name(cld_sampler_kind kind);
cld_status cld_sampler_parse(const char *name, cld_sampler_kind *kind);

#ifdef __cplusplus
}
#endif
#endif
