/* Noise schedules and the forward process: beta / alpha_bar tables, the
 * continuous-time view (sigma at fractional t), the posterior q(x_s | x_t, x_0),
 * prediction-type conversion, q_sample on the device and loss weights.
 * Everything on the host is computed in double. */
#include "internal.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>

#define CLD_PI 3.14159265358979323846
/* Smallest alpha_bar used where sigma must be finite (zero terminal SNR). */
#define ALPHA_BAR_FLOOR (1.0 / 16777216.0) /* 2^-24 */

static double cosine_f(double t, int T)
{
    const double s = 0.008;
    double c = cos((t / T + s) / (1.0 + s) * CLD_PI / 2.0);
    return c * c;
}

/* Lin et al. 2023, algorithm 1: shift and scale sqrt(alpha_bar) so the last
 * value is 0 and the first is kept; betas from the new ratios. */
static void rescale_zero_terminal_snr(cld_schedule *s)
{
    int T = s->T;
    double a0 = sqrt(s->alpha_bar[0]), aT = sqrt(s->alpha_bar[T - 1]);
    for (int t = 0; t < T; t++) {
        double a = (sqrt(s->alpha_bar[t]) - aT) * a0 / (a0 - aT);
        s->alpha_bar[t] = t == T - 1 ? 0.0 : a * a;
    }
    s->beta[0] = 1.0 - s->alpha_bar[0];
    for (int t = 1; t < T; t++) s->beta[t] = 1.0 - s->alpha_bar[t] / s->alpha_bar[t - 1];
}

cld_status cld_schedule_create(cld_schedule_kind kind, int T, double beta_start, double beta_end,
                               int zero_terminal_snr, cld_schedule **out)
{
    if (!out) return cld__fail(CLD_ERR_INVALID_ARG, "cld_schedule_create: out is NULL");
    *out = NULL;
    if (T < 2 || T > 1000000)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_schedule_create: T = %d (need 2 .. 1000000)", T);
    /* 0: that end's default (so a start or an end alone can be given) */
    if (beta_start == 0.0) beta_start = kind == CLD_SCHEDULE_SCALED_LINEAR ? 0.00085 : 1e-4;
    if (beta_end == 0.0) beta_end = kind == CLD_SCHEDULE_SCALED_LINEAR ? 0.012 : 0.02;
    if (kind != CLD_SCHEDULE_COSINE && !(beta_start > 0.0 && beta_end >= beta_start && beta_end < 1.0))
        return cld__fail(CLD_ERR_INVALID_ARG,
                         "cld_schedule_create: betas %g .. %g (need 0 < start <= end < 1)", beta_start,
                         beta_end);
    if (kind != CLD_SCHEDULE_LINEAR && kind != CLD_SCHEDULE_COSINE && kind != CLD_SCHEDULE_SCALED_LINEAR)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_schedule_create: unknown kind %d", (int)kind);

    cld_schedule *s = calloc(1, sizeof *s);
    if (s) {
        s->beta = malloc((size_t)T * sizeof(double));
        s->alpha_bar = malloc((size_t)T * sizeof(double));
        s->log_sigma = malloc((size_t)T * sizeof(double));
    }
    if (!s || !s->beta || !s->alpha_bar || !s->log_sigma) {
        cld_schedule_free(s);
        return cld__fail(CLD_ERR_NOMEM, "cld_schedule_create: out of host memory");
    }
    s->T = T;
    s->kind = kind;
    s->zero_terminal_snr = zero_terminal_snr != 0;
    for (int t = 0; t < T; t++) {
        double u = (double)t / (T - 1);
        switch (kind) {
        case CLD_SCHEDULE_LINEAR: s->beta[t] = beta_start + u * (beta_end - beta_start); break;
        case CLD_SCHEDULE_SCALED_LINEAR: {
            double r = sqrt(beta_start) + u * (sqrt(beta_end) - sqrt(beta_start));
            s->beta[t] = r * r;
            break;
        }
        case CLD_SCHEDULE_COSINE: {
            double b = 1.0 - cosine_f(t + 1, T) / cosine_f(t, T);
            s->beta[t] = b < 0.999 ? b : 0.999;
            break;
        }
        }
    }
    double prod = 1.0;
    for (int t = 0; t < T; t++) {
        prod *= 1.0 - s->beta[t];
        s->alpha_bar[t] = prod;
    }
    if (s->zero_terminal_snr) rescale_zero_terminal_snr(s);
    for (int t = 0; t < T; t++) {
        double ab = fmax(s->alpha_bar[t], ALPHA_BAR_FLOOR);
        s->log_sigma[t] = 0.5 * log((1.0 - ab) / ab);
    }
    *out = s;
    return CLD_OK;
}

cld_status cld_schedule_free(cld_schedule *s)
{
    if (!s) return CLD_OK;
    free(s->beta);
    free(s->alpha_bar);
    free(s->log_sigma);
    free(s);
    return CLD_OK;
}

/* ------------------------------------------------------- continuous time */
cld_status cld_schedule_sigma(const cld_schedule *s, double t, double *sigma)
{
    if (!s || !sigma) return cld__fail(CLD_ERR_INVALID_ARG, "cld_schedule_sigma: NULL argument");
    if (isnan(t)) return cld__fail(CLD_ERR_INVALID_ARG, "cld_schedule_sigma: t is NaN");
    t = fmin(fmax(t, 0.0), (double)(s->T - 1));
    int lo = (int)floor(t);
    if (lo >= s->T - 1) lo = s->T - 2;
    double w = t - lo;
    *sigma = exp((1.0 - w) * s->log_sigma[lo] + w * s->log_sigma[lo + 1]);
    return CLD_OK;
}

cld_status cld_schedule_sigma_to_t(const cld_schedule *s, double sigma, double *t)
{
    if (!s || !t) return cld__fail(CLD_ERR_INVALID_ARG, "cld_schedule_sigma_to_t: NULL argument");
    if (!(sigma > 0.0))
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_schedule_sigma_to_t: sigma %g <= 0", sigma);
    double ls = log(sigma);
    const double *L = s->log_sigma;
    int T = s->T;
    if (ls <= L[0]) {
        *t = 0.0;
        return CLD_OK;
    }
    if (ls >= L[T - 1]) {
        *t = T - 1;
        return CLD_OK;
    }
    int lo = 0, hi = T - 1; /* L increasing: L[lo] < ls <= L[hi] */
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (L[mid] < ls)
            lo = mid;
        else
            hi = mid;
    }
    double w = (ls - L[lo]) / (L[hi] - L[lo]);
    *t = lo + w;
    return CLD_OK;
}

cld_status cld_schedule_ab(const cld_schedule *s, double t, double *a, double *b)
{
    if (!s || !a || !b) return cld__fail(CLD_ERR_INVALID_ARG, "cld_schedule_ab: NULL argument");
    if (t == floor(t) && t >= 0 && t <= s->T - 1) {
        double ab = fmax(s->alpha_bar[(int)t], ALPHA_BAR_FLOOR);
        *a = sqrt(ab);
        *b = sqrt(1.0 - ab);
        return CLD_OK;
    }
    double sigma;
    CLD_TRY(cld_schedule_sigma(s, t, &sigma));
    *a = 1.0 / sqrt(1.0 + sigma * sigma);
    *b = sigma * *a;
    return CLD_OK;
}

/* ------------------------------------------------------------- posterior */
cld_status cld_q_posterior(const cld_schedule *s, int t, int t_prev, double *c0, double *ct, double *var)
{
    if (!s || !c0 || !ct || !var) return cld__fail(CLD_ERR_INVALID_ARG, "cld_q_posterior: NULL argument");
    if (t < 0 || t >= s->T || t_prev < -1 || t_prev >= t)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_q_posterior: need -1 <= t_prev (%d) < t (%d) < T (%d)",
                         t_prev, t, s->T);
    double ab_t = s->alpha_bar[t], ab_s = t_prev >= 0 ? s->alpha_bar[t_prev] : 1.0;
    if (!(ab_s > 0.0) || !(ab_t < 1.0))
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_q_posterior: degenerate alpha_bar (t %d, s %d)", t,
                         t_prev);
    double alpha = ab_t / ab_s, beta = 1.0 - alpha;
    *c0 = sqrt(ab_s) * beta / (1.0 - ab_t);
    *ct = sqrt(alpha) * (1.0 - ab_s) / (1.0 - ab_t);
    *var = beta * (1.0 - ab_s) / (1.0 - ab_t);
    return CLD_OK;
}

cld_status cld_q_posterior_mean(cld_ctx *ctx, const cld_schedule *s, int t, int t_prev, size_t count,
                                cl_mem x0, size_t x0_off, cl_mem xt, size_t xt_off, cl_mem out,
                                size_t out_off)
{
    double c0, ct, var;
    CLD_TRY(cld_q_posterior(s, t, t_prev, &c0, &ct, &var));
    if (count > INT_MAX)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_q_posterior_mean: %zu floats is too many", count);
    cld_lincomb_term terms[4] = {{x0, x0_off, c0}, {xt, xt_off, ct}, {NULL, 0, 0}, {NULL, 0, 0}};
    return cld_lincomb(ctx, 1, count, terms, 0.0, NULL, out, out_off);
}

/* ------------------------------------------------------ prediction types */
/* x0 = xa x + pa p and eps = xe x + pe p for a prediction p of type `from`. */
static cld_status to_x0_eps(cld_pred_type from, double a, double b, double *xa, double *pa, double *xe,
                            double *pe)
{
    switch (from) {
    case CLD_PRED_EPS: /* x0 = (x - b eps) / a */
        if (!(a > 0.0)) break;
        *xa = 1.0 / a, *pa = -b / a, *xe = 0.0, *pe = 1.0;
        return CLD_OK;
    case CLD_PRED_V: /* x0 = a x - b v, eps = b x + a v */ *xa = a, *pa = -b, *xe = b, *pe = a; return CLD_OK;
    case CLD_PRED_X0: /* eps = (x - a x0) / b */
        if (!(b > 0.0)) break;
        *xa = 0.0, *pa = 1.0, *xe = 1.0 / b, *pe = -a / b;
        return CLD_OK;
    default: return cld__fail(CLD_ERR_INVALID_ARG, "cld_pred_coefs: unknown prediction type %d", (int)from);
    }
    return cld__fail(CLD_ERR_INVALID_ARG, "cld_pred_coefs: type %d is not invertible at a = %g, b = %g",
                     (int)from, a, b);
}

cld_status cld_pred_coefs(cld_pred_type from, cld_pred_type to, double a, double b, double *kx, double *kp)
{
    if (!kx || !kp) return cld__fail(CLD_ERR_INVALID_ARG, "cld_pred_coefs: NULL argument");
    if (!(fabs(a * a + b * b - 1.0) < 1e-9) || a < 0.0 || b < 0.0)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_pred_coefs: need a, b >= 0, a^2 + b^2 = 1 (a %g, b %g)", a,
                         b);
    if (from == to) {
        *kx = 0.0, *kp = 1.0;
        return CLD_OK;
    }
    double xa = 0, pa = 0, xe = 0, pe = 0;
    CLD_TRY(to_x0_eps(from, a, b, &xa, &pa, &xe, &pe));
    switch (to) {
    case CLD_PRED_X0: *kx = xa, *kp = pa; return CLD_OK;
    case CLD_PRED_EPS: *kx = xe, *kp = pe; return CLD_OK;
    case CLD_PRED_V: *kx = a * xe - b * xa, *kp = a * pe - b * pa; return CLD_OK;
    default: return cld__fail(CLD_ERR_INVALID_ARG, "cld_pred_coefs: unknown prediction type %d", (int)to);
    }
}

/* A small read-only device buffer holding a copy of `count` floats. Released
 * by the caller right after enqueueing: OpenCL keeps it alive until the
 * kernels using it are done. */
static cld_status coef_buffer(cld_ctx *ctx, const float *v, size_t count, cl_mem *out)
{
    return cld__buffer_create(ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, count * sizeof(float), (void *)v,
                              "diffusion coefficients", out);
}

/* The kernels index with int: n * per_sample plus the largest offset must fit. */
static cld_status check_batch(const char *what, int n, size_t per_sample, size_t max_off)
{
    if (n <= 0 || per_sample == 0 || per_sample > (size_t)INT_MAX / (size_t)n ||
        max_off > (size_t)INT_MAX - (size_t)n * per_sample)
        return cld__fail(CLD_ERR_INVALID_ARG, "%s: bad shape (n %d, per_sample %zu, offset %zu)", what, n,
                         per_sample, max_off);
    return CLD_OK;
}

static size_t max3(size_t a, size_t b, size_t c) { return a > b ? (a > c ? a : c) : (b > c ? b : c); }

cld_status cld_pred_convert(cld_ctx *ctx, const cld_schedule *s, cld_pred_type from, cld_pred_type to, int n,
                            size_t per_sample, const float *t, cl_mem xt, size_t xt_off, cl_mem pred,
                            size_t pred_off, cl_mem out, size_t out_off)
{
    if (!ctx || !s || !t || !xt || !pred || !out)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_pred_convert: NULL argument");
    CLD_TRY(check_batch("cld_pred_convert", n, per_sample, max3(xt_off, pred_off, out_off)));
    float *coef = malloc((size_t)n * 2 * sizeof(float));
    if (!coef) return cld__fail(CLD_ERR_NOMEM, "cld_pred_convert: out of host memory");
    cld_status st = CLD_OK;
    for (int i = 0; i < n && st == CLD_OK; i++) {
        double a, b, kx = 0, kp = 0;
        st = cld_schedule_ab(s, t[i], &a, &b);
        if (st == CLD_OK) st = cld_pred_coefs(from, to, a, b, &kx, &kp);
        coef[2 * i] = (float)kx;
        coef[2 * i + 1] = (float)kp;
    }
    cl_mem cb = NULL;
    if (st == CLD_OK) st = coef_buffer(ctx, coef, (size_t)n * 2, &cb);
    free(coef);
    cl_kernel k;
    if (st == CLD_OK) st = cld__kernel(ctx, "diffusion", "pred_convert", &k);
    if (st == CLD_OK)
        st = cld__kargs(k, "pred_convert", "bibibbiii", xt, (int)xt_off, pred, (int)pred_off, cb, out,
                        (int)out_off, n, (int)per_sample);
    if (st == CLD_OK) {
        size_t gs = (size_t)n * per_sample, ls = 64;
        st = cld__launch(ctx, k, "pred_convert", 1, &gs, &ls);
    }
    if (cb) clReleaseMemObject(cb);
    return st;
}

/* ------------------------------------------------------- forward process */

/* Checks t and target_type and uploads the per-sample (a, b, tx, te) rows:
 * x_t = a x_0 + b eps, target = tx x_0 + te eps. */
static cld_status sample_coefs(cld_ctx *ctx, const cld_schedule *s, const char *what, int n, const int *t,
                               int has_target, cld_pred_type target_type, int need_ab, cl_mem *out)
{
    if (has_target && target_type != CLD_PRED_EPS && target_type != CLD_PRED_V && target_type != CLD_PRED_X0)
        return cld__fail(CLD_ERR_INVALID_ARG, "%s: unknown target type %d", what, (int)target_type);
    for (int i = 0; i < n; i++)
        if (t[i] < 0 || t[i] >= s->T)
            return cld__fail(CLD_ERR_INVALID_ARG, "%s: t[%d] = %d outside 0 .. %d", what, i, t[i], s->T - 1);
    float *coef = malloc((size_t)n * 4 * sizeof(float));
    if (!coef) return cld__fail(CLD_ERR_NOMEM, "%s: out of host memory", what);
    for (int i = 0; i < n; i++) {
        double a = sqrt(s->alpha_bar[t[i]]), b = sqrt(1.0 - s->alpha_bar[t[i]]);
        if (need_ab && !((float)a > 0.0f && (float)b > 0.0f)) {
            free(coef);
            return cld__fail(CLD_ERR_INVALID_ARG, "%s: t[%d] = %d has a = %g, b = %g (both must be > 0)",
                             what, i, t[i], a, b);
        }
        double tx = target_type == CLD_PRED_EPS ? 0.0 : (target_type == CLD_PRED_V ? -b : 1.0);
        double te = target_type == CLD_PRED_EPS ? 1.0 : (target_type == CLD_PRED_V ? a : 0.0);
        coef[4 * i] = (float)a;
        coef[4 * i + 1] = (float)b;
        coef[4 * i + 2] = (float)tx;
        coef[4 * i + 3] = (float)te;
    }
    cld_status st = coef_buffer(ctx, coef, (size_t)n * 4, out);
    free(coef);
    return st;
}

cld_status cld_q_sample(cld_ctx *ctx, const cld_schedule *s, int n, size_t per_sample, const int *t,
                        cl_mem x0, size_t x0_off, const cld_noise_key *key, cl_mem xt, size_t xt_off,
                        cld_pred_type target_type, cl_mem target, size_t target_off)
{
    if (!ctx || !s || !t || !x0 || !key || !xt)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_q_sample: NULL argument");
    CLD_TRY(check_batch("cld_q_sample", n, per_sample, max3(x0_off, xt_off, target ? target_off : 0)));
    cl_mem cb = NULL;
    cld_status st = sample_coefs(ctx, s, "cld_q_sample", n, t, target != NULL, target_type, 0, &cb);
    cl_kernel k;
    if (st == CLD_OK) st = cld__kernel(ctx, "diffusion", "q_sample", &k);
    if (st == CLD_OK)
        st = cld__kargs(k, "q_sample", "bibbibiiiiuuuuu", x0, (int)x0_off, cb, xt, (int)xt_off,
                        target ? target : xt, (int)(target ? target_off : 0), target != NULL, n,
                        (int)per_sample, (unsigned)key->seed, (unsigned)(key->seed >> 32),
                        (unsigned)key->stream, (unsigned)key->index, (unsigned)key->step);
    if (st == CLD_OK) {
        size_t gs = (size_t)n * ((per_sample + 3) / 4), ls = 64;
        st = cld__launch(ctx, k, "q_sample", 1, &gs, &ls);
    }
    if (cb) clReleaseMemObject(cb);
    return st;
}

cld_status cld_q_quantize(cld_ctx *ctx, const cld_schedule *s, int n, size_t per_sample, const int *t,
                          int levels, cl_mem x0, size_t x0_off, cl_mem xt, size_t xt_off,
                          cld_pred_type target_type, cl_mem target, size_t target_off)
{
    if (!ctx || !s || !t || !x0 || !xt)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_q_quantize: NULL argument");
    if (levels < 2 || levels > 65536)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_q_quantize: levels = %d (must be in 2 .. 65536)", levels);
    CLD_TRY(check_batch("cld_q_quantize", n, per_sample, max3(x0_off, xt_off, target ? target_off : 0)));
    cl_mem cb = NULL;
    cld_status st = sample_coefs(ctx, s, "cld_q_quantize", n, t, target != NULL, target_type, 1, &cb);
    cl_kernel k;
    if (st == CLD_OK) st = cld__kernel(ctx, "diffusion", "q_quantize", &k);
    if (st == CLD_OK)
        st = cld__kargs(k, "q_quantize", "bibbibiiiif", x0, (int)x0_off, cb, xt, (int)xt_off,
                        target ? target : xt, (int)(target ? target_off : 0), target != NULL, n,
                        (int)per_sample, (float)((levels - 1) / 2.0));
    if (st == CLD_OK) {
        size_t gs = (size_t)n * per_sample, ls = 64;
        st = cld__launch(ctx, k, "q_quantize", 1, &gs, &ls);
    }
    if (cb) clReleaseMemObject(cb);
    return st;
}

/* ----------------------------------------------------------- loss weights */
cld_status cld_loss_weight(const cld_schedule *s, int t, cld_pred_type pred, cld_loss_weighting weighting,
                           double gamma, double *w)
{
    if (!s || !w) return cld__fail(CLD_ERR_INVALID_ARG, "cld_loss_weight: NULL argument");
    if (t < 0 || t >= s->T)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_loss_weight: t = %d outside 0 .. %d", t, s->T - 1);
    if (weighting == CLD_LOSS_UNIFORM) {
        *w = 1.0;
        return CLD_OK;
    }
    if (weighting != CLD_LOSS_MIN_SNR || !(gamma > 0.0))
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_loss_weight: weighting %d, gamma %g", (int)weighting,
                         gamma);
    double ab = s->alpha_bar[t];
    if (!(ab < 1.0)) return cld__fail(CLD_ERR_INVALID_ARG, "cld_loss_weight: infinite SNR at t = %d", t);
    double snr = ab / (1.0 - ab), m = fmin(snr, gamma);
    switch (pred) {
    case CLD_PRED_EPS: *w = snr < gamma ? 1.0 : gamma / snr; return CLD_OK;
    case CLD_PRED_V: *w = m / (snr + 1.0); return CLD_OK;
    case CLD_PRED_X0: *w = m; return CLD_OK;
    }
    return cld__fail(CLD_ERR_INVALID_ARG, "cld_loss_weight: unknown prediction type %d", (int)pred);
}
