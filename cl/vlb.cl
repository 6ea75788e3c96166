/* Learned variance (engine/src/vlb.c): the per-element terms of the
 * variational bound, their gradient with respect to the variance output,
 * and the ancestral sampler's step. Every buffer argument is followed by its
 * offset in floats. 1-D kernels, one work-item per element, launched with
 * local size 64 and a guard.
 *
 * A model output row of sample n is (2M) floats: the prediction p at
 * [0, M), the variance value v at [M, 2M). coef (n, 8) holds each sample's
 * row of cld_vlb_coefs: kx, kp, c0, ct, min_log, dlog, decoder, 0.
 *
 * The functions are improved-diffusion's, written without cancellation:
 *   KL = 0.5 (expm1(y) - y + d^2 e^-lv),   y = lv_q - lv = -frac dlog,
 *        d = c0 (x_0 - x0_hat), lv = min_log + frac dlog
 *   Phi~(z) = 0.5 (1 + tanh(u)) = sigmoid(2u),  u = K0 (z + 0.044715 z^3)
 *   bin mass Phi~(p) - Phi~(m) = sigmoid(A) sigmoid(-B) (-expm1(B - A)),
 *        A = 2 u(p), B = 2 u(m), B - A from p - m directly. */

#define VLB_COLS 8
#define BIN (1.0f / 255.0f)
#define K0 0.7978845608028654f      /* sqrt(2 / pi) */
#define CUBIC 0.044715f
#define LOG_FLOOR -27.631021115928547f /* log(1e-12) */

inline float sigm(float x) { return 1.0f / (1.0f + exp(-x)); }

/* log(sigmoid(x)) = -log(1 + e^-x), without overflow */
inline float log_sigm(float x) { return x >= 0.0f ? -log1p(exp(-x)) : x - log1p(exp(x)); }

/* expm1(y) - y >= 0; a series where the subtraction would cancel */
inline float expm1_minus(float y)
{
    if (fabs(y) < 0.25f)
        return y * y *
               (0.5f + y * (1.0f / 6 + y * (1.0f / 24 + y * (1.0f / 120 + y * (1.0f / 720 + y / 5040)))));
    return expm1(y) - y;
}

/* -log p(x | mean, e^(lv / 2)) of the discretized Gaussian; *dlv = d / d lv. */
inline float decoder_nll(float x, float mean, float lv, float *dlv)
{
    float inv = exp(-0.5f * lv), c = x - mean;
    float p = inv * (c + BIN), m = inv * (c - BIN);
    float A = 2.0f * K0 * (p + CUBIC * p * p * p), B = 2.0f * K0 * (m + CUBIC * m * m * m);
    float dA = 2.0f * K0 * (1.0f + 3.0f * CUBIC * p * p); /* dA/dp */
    float dB = 2.0f * K0 * (1.0f + 3.0f * CUBIC * m * m);
    /* L = log-likelihood, dL = dL/ds for s = lv / 2 (dp/ds = -p, dm/ds = -m) */
    float L, dL = 0.0f;
    if (x < -0.999f) {        /* log Phi~(p) */
        L = log_sigm(A);
        dL = -sigm(-A) * dA * p;
    } else if (x > 0.999f) {  /* log (1 - Phi~(m)) */
        L = log_sigm(-B);
        dL = sigm(B) * dB * m;
    } else {                  /* log (Phi~(p) - Phi~(m)) */
        float w = inv * (2.0f * BIN);                               /* p - m */
        float BmA = -2.0f * K0 * w * (1.0f + CUBIC * (p * p + p * m + m * m));
        float E = -expm1(BmA);
        L = log_sigm(A) + log_sigm(-B) + log(E);
        /* (m phi(m) - p phi(p)) / mass, phi = dPhi~/dz = sigmoid(2u) sigmoid(-2u) dA */
        dL = (m * sigm(B) * dB / sigm(A) - p * sigm(-A) * dA / sigm(-B)) / E;
    }
    if (!(L > LOG_FLOOR)) {   /* clamped: constant */
        L = LOG_FLOOR;
        dL = 0.0f;
    }
    *dlv = -0.5f * dL;
    return -L;
}

/* The term (nats) of one element and its derivative by v. */
inline float vlb_elem(float p, float v, float xt, float x0, __global const float *cf, int clip,
                      float *dv)
{
    float xh = cf[0] * xt + cf[1] * p;
    if (clip) xh = clamp(xh, -1.0f, 1.0f);
    float frac = 0.5f * (v + 1.0f), dlog = cf[5];
    float lv = cf[4] + frac * dlog, r, dlv;
    if (cf[6] != 0.0f) {
        r = decoder_nll(x0, cf[2] * xh + cf[3] * xt, lv, &dlv);
    } else {
        float d = cf[2] * (x0 - xh), y = -frac * dlog, q = d * d * exp(-lv);
        r = 0.5f * (expm1_minus(y) + q);
        dlv = -0.5f * (expm1(y) + q);
    }
    *dv = dlv * 0.5f * dlog;
    return r;
}

/* out (2, n, M): [0] each element's term in nats, [1] its derivative by v.
 * mo (n, 2M), xt, x0 (n, M). */
__kernel void vlb_elems(__global const float *mo, int moo, __global const float *xt, int xto,
                        __global const float *x0, int x0o, __global const float *coef, int co,
                        __global float *out, int oo, int n, int M, int clip)
{
    int i = get_global_id(0);
    if (i >= n * M) return;
    int smp = i / M, j = i - smp * M;
    __global const float *o = mo + moo + smp * 2 * M;
    float dv;
    out[oo + i] = vlb_elem(o[j], o[M + j], xt[xto + i], x0[x0o + i], coef + co + VLB_COLS * smp,
                           clip, &dv);
    out[oo + n * M + i] = dv;
}

/* dmo (n, 2M): zero on the prediction half, scale * dl * (d term / d v) on
 * the variance half, from vlb_elems' out (2, n, M). */
__kernel void vlb_grad(__global const float *el, int eo, __global const float *dl, int dlo,
                       __global float *dmo, int dmoo, int n, int M, float scale)
{
    int i = get_global_id(0);
    if (i >= n * 2 * M) return;
    int smp = i / (2 * M), j = i - smp * 2 * M;
    dmo[dmoo + i] = j < M ? 0.0f : scale * dl[dlo] * el[eo + n * M + smp * M + j - M];
}

/* One ancestral step, in place on x (n, M), from the model output mo
 * ((cfg ? 2n : n), 2M; with cfg the unconditional half follows):
 *   D = wc p + wu u + cx x   (p the prediction, u the unconditional one
 *                             with guidance: wc = cp g, wu = cp (1 - g))
 *   x = ct x + c0 D + sd e^(frac dlog / 2) z   (z from noise (n, M) if has_noise)
 * sd = sqrt(posterior variance): at frac = 0 the noise scale is sd itself,
 * and the order of operations is cl/diffusion.cl's lincomb (which makes
 * cld_sampler_run's D and its steps): the same bits as its DDPM with the
 * posterior variance. */
__kernel void lv_ddpm_step(__global float *x, int xo, __global const float *mo, int moo,
                           __global const float *z, int zo, int n, int M, int cfg, float wc,
                           float wu, float cx, float c0, float ct, float sd, float half_dlog,
                           int has_noise, float clip)
{
    int i = get_global_id(0);
    if (i >= n * M) return;
    int smp = i / M, j = i - smp * M;
    __global const float *o = mo + moo + smp * 2 * M;
    float xv = x[xo + i];
    float d = 0.0f;
    if (wc != 0.0f) d += wc * o[j];
    if (cfg && wu != 0.0f) d += wu * mo[moo + (n + smp) * 2 * M + j];
    if (cx != 0.0f) d += cx * xv;
    if (clip > 0.0f) d = clamp(d, -clip, clip); /* diffusers' clip_sample */
    float acc = 0.0f;
    if (ct != 0.0f) acc += ct * xv;
    if (c0 != 0.0f) acc += c0 * d;
    if (has_noise) acc += sd * exp(half_dlog * (0.5f * (o[M + j] + 1.0f))) * z[zo + i];
    x[xo + i] = acc;
}
