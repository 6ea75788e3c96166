/* Samplers: DDPM, DDIM, DPM-Solver++(2M), Euler, Euler ancestral, Heun.
 *
 * Every sampler is written in variance-preserving coordinates, x = a x_0 + b eps,
 * on a list of points (t, a, b) ending at the clean end (a = 1, b = 0). Per
 * step the model output is turned into the x_0 estimate D on the device
 * (classifier-free guidance included), then one fused kernel forms the next x
 * as a linear combination of x, D (and the previous D, or Heun's trial point)
 * plus noise. The coefficients are computed on the host in double; with
 * sigma = b / a the k-diffusion update formulas become:
 *   first order (DDIM eta 0 = Euler = DPM-Solver++ 1):  x' = (b'/b) x + (a' - a b'/b) D
 *   DPM-Solver++(2M): D replaced by (1 + 1/2r) D - (1/2r) D_prev, r = h_prev / h,
 *                     h = lambda' - lambda, lambda = log(a/b)
 *   Euler ancestral:  x' = a' [(s_down/sigma) x/a + (1 - s_down/sigma) D + s_up z]
 *   Heun:             x' = a' [x~ + dt/2 ((x~ - D)/sigma + (x2~ - D2)/sigma')], x~ = x/a
 * so all of them work at zero terminal SNR (where a sampler point's alpha_bar
 * is clamped to 2^-24 as in diffusers) and with any prediction type. */
#include "internal.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const sampler_names[] = {"ddpm", "ddim", "dpmpp_2m", "euler", "euler_a", "heun"};
#define N_SAMPLERS ((int)(sizeof sampler_names / sizeof sampler_names[0]))

const char *cld_sampler_name(cld_sampler_kind kind)
{
    return (int)kind >= 0 && (int)kind < N_SAMPLERS ? sampler_names[kind] : "unknown";
}

cld_status cld_sampler_parse(const char *name, cld_sampler_kind *kind)
{
    if (!name || !kind) return cld__fail(CLD_ERR_INVALID_ARG, "cld_sampler_parse: NULL argument");
    for (int i = 0; i < N_SAMPLERS; i++) {
        if (strcmp(name, sampler_names[i]) == 0) {
            *kind = (cld_sampler_kind)i;
            return CLD_OK;
        }
    }
    return cld__fail(CLD_ERR_INVALID_ARG, "unknown sampler '%s' (ddpm, ddim, dpmpp_2m, euler, euler_a, heun)",
                     name);
}

cld_status cld_sampler_opts_default(cld_sampler_kind kind, cld_sampler_opts *o)
{
    if (!o) return cld__fail(CLD_ERR_INVALID_ARG, "cld_sampler_opts_default: NULL argument");
    if ((int)kind < 0 || (int)kind >= N_SAMPLERS)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_sampler_opts_default: unknown sampler %d", (int)kind);
    memset(o, 0, sizeof *o);
    o->kind = kind;
    o->steps = kind == CLD_SAMPLER_DDPM ? 1000 : 50;
    o->spacing = CLD_SPACING_TRAILING;
    o->karras = kind == CLD_SAMPLER_HEUN;
    o->rho = 7.0;
    o->eta = kind == CLD_SAMPLER_EULER_A ? 1.0 : 0.0;
    o->variance = CLD_VAR_POSTERIOR;
    o->pred = CLD_PRED_EPS;
    o->guidance = 1.0;
    o->null_label = 0;
    return CLD_OK;
}

cld_status cld_sampler_model_calls(const cld_sampler_opts *o, int *calls)
{
    if (!o || !calls) return cld__fail(CLD_ERR_INVALID_ARG, "cld_sampler_model_calls: NULL argument");
    *calls = o->kind == CLD_SAMPLER_HEUN ? 2 * o->steps - 1 : o->steps;
    return CLD_OK;
}

static cld_status check_opts(const cld_schedule *s, const cld_sampler_opts *o)
{
    if ((int)o->kind < 0 || (int)o->kind >= N_SAMPLERS)
        return cld__fail(CLD_ERR_INVALID_ARG, "sampler: unknown kind %d", (int)o->kind);
    const char *name = sampler_names[o->kind];
    if (o->steps < 1 || o->steps > s->T)
        return cld__fail(CLD_ERR_INVALID_ARG, "sampler %s: %d steps (need 1 .. T = %d)", name, o->steps,
                         s->T);
    if ((int)o->spacing < 0 || (int)o->spacing > CLD_SPACING_LINSPACE)
        return cld__fail(CLD_ERR_INVALID_ARG, "sampler %s: unknown spacing %d", name, (int)o->spacing);
    if (o->karras && o->kind == CLD_SAMPLER_DDPM)
        return cld__fail(CLD_ERR_INVALID_ARG, "sampler ddpm: Karras sigmas need a continuous-time "
                                              "sampler (DDPM uses the discrete posterior)");
    if (o->karras && !(o->rho > 0.0))
        return cld__fail(CLD_ERR_INVALID_ARG, "sampler %s: Karras rho %g <= 0", name, o->rho);
    if (!(o->eta >= 0.0)) return cld__fail(CLD_ERR_INVALID_ARG, "sampler %s: eta %g < 0", name, o->eta);
    if ((int)o->pred < 0 || (int)o->pred > CLD_PRED_X0)
        return cld__fail(CLD_ERR_INVALID_ARG, "sampler %s: unknown prediction type %d", name, (int)o->pred);
    if (o->variance != CLD_VAR_POSTERIOR && o->variance != CLD_VAR_BETA)
        return cld__fail(CLD_ERR_INVALID_ARG, "sampler %s: unknown variance type %d", name, (int)o->variance);
    if (!isfinite(o->guidance))
        return cld__fail(CLD_ERR_INVALID_ARG, "sampler %s: guidance %g", name, o->guidance);
    if (!(o->clip_sample >= 0.0) || !isfinite(o->clip_sample))
        return cld__fail(CLD_ERR_INVALID_ARG, "sampler %s: clip_sample %g (0 = off, else > 0)", name,
                         o->clip_sample);
    return CLD_OK;
}

/* Integer timesteps of a spacing, descending (rounding half to even, as numpy). */
static cld_status spacing_timesteps(const cld_schedule *s, const cld_sampler_opts *o, int *ts)
{
    int T = s->T, N = o->steps;
    for (int k = 0; k < N; k++) {
        double v = 0;
        switch (o->spacing) {
        case CLD_SPACING_LEADING: v = (double)(N - 1 - k) * (T / N) + o->steps_offset; break;
        case CLD_SPACING_TRAILING: v = nearbyint(T - k * ((double)T / N)) - 1.0; break;
        case CLD_SPACING_LINSPACE:
            v = N == 1 ? 0.0 : nearbyint((double)(N - 1 - k) * (T - 1) / (N - 1));
            break;
        }
        if (v < 0 || v > T - 1)
            return cld__fail(CLD_ERR_INVALID_ARG,
                             "sampler: timestep %g outside 0 .. %d (steps %d, "
                             "offset %d)",
                             v, T - 1, N, o->steps_offset);
        ts[k] = (int)v;
        if (k > 0 && ts[k] >= ts[k - 1])
            return cld__fail(CLD_ERR_INVALID_ARG, "sampler: timesteps not decreasing (%d then %d)", ts[k - 1],
                             ts[k]);
    }
    return CLD_OK;
}

cld_status cld_sampler_points(const cld_schedule *s, const cld_sampler_opts *o, cld_sampler_point *pts,
                              int *count)
{
    if (!s || !o || !pts) return cld__fail(CLD_ERR_INVALID_ARG, "cld_sampler_points: NULL argument");
    CLD_TRY(check_opts(s, o));
    int N = o->steps;
    if (o->karras) {
        double smin = exp(s->log_sigma[0]), smax = exp(s->log_sigma[s->T - 1]);
        double lo = pow(smin, 1.0 / o->rho), hi = pow(smax, 1.0 / o->rho);
        for (int k = 0; k < N; k++) {
            double u = N == 1 ? 0.0 : (double)k / (N - 1);
            double sigma = pow(hi + u * (lo - hi), o->rho);
            CLD_TRY(cld_schedule_sigma_to_t(s, sigma, &pts[k].t));
            pts[k].a = 1.0 / sqrt(1.0 + sigma * sigma);
            pts[k].b = sigma * pts[k].a;
        }
    } else {
        int *ts = malloc((size_t)N * sizeof *ts);
        if (!ts) return cld__fail(CLD_ERR_NOMEM, "cld_sampler_points: out of host memory");
        cld_status st = spacing_timesteps(s, o, ts);
        for (int k = 0; k < N && st == CLD_OK; k++) {
            pts[k].t = ts[k];
            st = cld_schedule_ab(s, ts[k], &pts[k].a, &pts[k].b);
        }
        free(ts);
        CLD_TRY(st);
    }
    pts[N].t = -1.0;
    pts[N].a = 1.0;
    pts[N].b = 0.0;
    if (o->final_alpha_bar0 && o->kind == CLD_SAMPLER_DDIM) {
        pts[N].a = sqrt(s->alpha_bar[0]);
        pts[N].b = sqrt(1.0 - s->alpha_bar[0]);
    }
    if (count) *count = N + 1;
    return CLD_OK;
}

/* ------------------------------------------------------------------ a run */
typedef struct run {
    cld_ctx *ctx;
    const cld_sampler_opts *o;
    const cld_sample_job *job;
    int cfg;      /* classifier-free guidance: model batch is 2n */
    size_t total; /* n * per_sample */
    cl_mem ws;    /* workspace, offsets below in floats */
    size_t d, d_prev, x2, d2, m_in, m_out;
    float *t;    /* (2n) model timesteps */
    int *labels; /* (2n) model labels, or NULL */
} run;

/* D (at ws + d_off) = x_0 estimate at point p from x (buffer xb at xo). */
static cld_status denoise(run *r, cl_mem xb, size_t xo, const cld_sampler_point *p, size_t d_off)
{
    const cld_sample_job *j = r->job;
    int nb = r->cfg ? 2 * j->n : j->n;
    for (int i = 0; i < nb; i++) r->t[i] = (float)p->t;
    cl_mem in = xb;
    size_t in_off = xo;
    if (r->cfg) {
        size_t bytes = r->total * sizeof(float);
        for (int h = 0; h < 2; h++)
            CLD_CL_TRY(clEnqueueCopyBuffer(r->ctx->queue, xb, r->ws, xo * sizeof(float),
                                           (r->m_in + (size_t)h * r->total) * sizeof(float), bytes, 0, NULL,
                                           NULL),
                       "sampler: clEnqueueCopyBuffer (guidance batch)");
        in = r->ws;
        in_off = r->m_in;
    }
    CLD_TRY(
        j->model(j->model_user, in, in_off, r->ws, r->m_out, nb, r->t, r->labels ? r->labels : j->labels));
    double kx, kp;
    CLD_TRY(cld_pred_coefs(r->o->pred, CLD_PRED_X0, p->a, p->b, &kx, &kp));
    /* D = kp (u + g (c - u)) + kx x with guidance (c conditional, u the
     * unconditional half), else kp c + kx x: one lincomb, the kernel the
     * sampler steps use anyway (a kernel of its own cost a compile) */
    double wc, wu;
    cld__guided_weights(kp, r->o->guidance, r->cfg, &wc, &wu);
    cld_lincomb_term t[4] = {
        {r->ws, r->m_out, wc}, {r->ws, r->m_out + r->total, wu}, {xb, xo, kx}, {NULL, 0, 0.0}};
    return cld_lincomb(r->ctx, 1, r->total, t, 0.0, NULL, r->ws, d_off);
}

/* ws[dst] = clamp(ws[src], -c, c) over the run's samples. */
static cld_status clip_estimate(run *r, size_t src, size_t dst)
{
    cl_kernel k;
    CLD_TRY(cld__kernel(r->ctx, "diffusion", "clip_copy", &k));
    CLD_TRY(cld__kargs(k, "clip_copy", "bibiif", r->ws, (int)src, r->ws, (int)dst, (int)r->total,
                       (float)r->o->clip_sample));
    size_t ls = 64, gs = (r->total + ls - 1) / ls * ls;
    return cld__launch(r->ctx, k, "clip_copy", 1, &gs, &ls);
}

/* Coefficients of the first-order step P -> Q: x' = wx x + wd D. */
static void first_order(const cld_sampler_point *P, const cld_sampler_point *Q, double *wx, double *wd)
{
    *wx = Q->b / P->b;
    *wd = Q->a - P->a * Q->b / P->b;
}

static cld_status run_steps(run *r, const cld_schedule *s, const cld_sampler_point *pts)
{
    const cld_sampler_opts *o = r->o;
    const cld_sample_job *j = r->job;
    cl_mem x = j->out, ws = r->ws;
    size_t xo = j->out_off;
    int N = o->steps;
    for (int i = 0; i < N; i++) {
        const cld_sampler_point *P = &pts[i], *Q = &pts[i + 1];
        int last = i == N - 1; /* Q is the clean end */
        cld_noise_key key = {j->seed, CLD_NOISE_STREAM_SAMPLER, j->first_index, (uint32_t)i + 1};
        cld_lincomb_term t[4] = {{x, xo, 0}, {ws, r->d, 0}, {NULL, 0, 0}, {NULL, 0, 0}};
        double wn = 0.0;
        CLD_TRY(denoise(r, x, xo, P, r->d));
        const int clip = o->clip_sample > 0.0 && (o->kind == CLD_SAMPLER_DDPM || o->kind == CLD_SAMPLER_DDIM);
        if (clip) CLD_TRY(clip_estimate(r, r->d, o->kind == CLD_SAMPLER_DDPM ? r->d : r->d_prev));
        switch (o->kind) {
        case CLD_SAMPLER_DDPM: {
            double c0, ct, var;
            CLD_TRY(cld_q_posterior(s, (int)P->t, last ? -1 : (int)Q->t, &c0, &ct, &var));
            double ab_t = s->alpha_bar[(int)P->t];
            double ab_s = last ? 1.0 : s->alpha_bar[(int)Q->t];
            t[0].w = ct;
            t[1].w = c0;
            if (!last) wn = sqrt(o->variance == CLD_VAR_BETA ? 1.0 - ab_t / ab_s : var);
            break;
        }
        case CLD_SAMPLER_DDIM: {
            /* sigma_eta^2 = eta^2 (b'^2 / b^2) (1 - a^2 / a'^2) */
            double se =
                o->eta *
                sqrt(fmax(0.0, (Q->b * Q->b) / (P->b * P->b) * (1.0 - (P->a * P->a) / (Q->a * Q->a))));
            double dir = sqrt(fmax(0.0, Q->b * Q->b - se * se));
            t[0].w = dir / P->b;
            t[1].w = Q->a - dir * P->a / P->b;
            if (clip) { /* a' clip(D) + dir eps, eps = (x - a D) / b from the unclipped D */
                t[1].w = -dir * P->a / P->b;
                t[2] = (cld_lincomb_term){ws, r->d_prev, Q->a};
            }
            wn = se;
            break;
        }
        case CLD_SAMPLER_EULER: first_order(P, Q, &t[0].w, &t[1].w); break;
        case CLD_SAMPLER_EULER_A: {
            double sg = P->b / P->a, sn = Q->b / Q->a;
            double up = fmin(sn, o->eta * sqrt(fmax(0.0, sn * sn * (sg * sg - sn * sn) / (sg * sg))));
            double down = sqrt(fmax(0.0, sn * sn - up * up));
            t[0].w = Q->a * down / P->b;
            t[1].w = Q->a * (1.0 - down / sg);
            wn = Q->a * up;
            break;
        }
        case CLD_SAMPLER_DPMPP_2M: {
            double c;
            first_order(P, Q, &t[0].w, &c);
            t[1].w = c;
            if (i > 0 && !last) {
                double lam_prev = log(pts[i - 1].a / pts[i - 1].b), lam = log(P->a / P->b);
                double h = log(Q->a / Q->b) - lam, rr = (lam - lam_prev) / h;
                if (isfinite(rr) && rr > 0.0) {
                    t[1].w = c * (1.0 + 1.0 / (2.0 * rr));
                    t[2] = (cld_lincomb_term){ws, r->d_prev, -c / (2.0 * rr)};
                }
            }
            break;
        }
        case CLD_SAMPLER_HEUN: {
            first_order(P, Q, &t[0].w, &t[1].w);
            if (last) break;
            /* trial Euler point x2 at Q, its estimate D2, then the trapezoid */
            CLD_TRY(cld_lincomb(r->ctx, j->n, j->per_sample, t, 0.0, NULL, ws, r->x2));
            CLD_TRY(denoise(r, ws, r->x2, Q, r->d2));
            double sg = P->b / P->a, sn = Q->b / Q->a, dt = sn - sg;
            t[0].w = Q->a * (1.0 + dt / (2.0 * sg)) / P->a;
            t[1].w = -Q->a * dt / (2.0 * sg);
            t[2] = (cld_lincomb_term){ws, r->x2, dt / (2.0 * sn)};
            t[3] = (cld_lincomb_term){ws, r->d2, -Q->a * dt / (2.0 * sn)};
            break;
        }
        }
        CLD_TRY(cld_lincomb(r->ctx, j->n, j->per_sample, t, wn, &key, x, xo));
        if (o->kind == CLD_SAMPLER_DPMPP_2M) {
            size_t tmp = r->d;
            r->d = r->d_prev;
            r->d_prev = tmp;
        }
        if (j->progress) j->progress(j->progress_user, i + 1, N);
    }
    return CLD_OK;
}

cld_status cld_sampler_run(cld_ctx *ctx, const cld_schedule *s, const cld_sampler_opts *o,
                           const cld_sample_job *job)
{
    if (!ctx || !s || !o || !job || !job->model || !job->out)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_sampler_run: NULL argument");
    CLD_TRY(check_opts(s, o));
    if (job->n <= 0 || job->per_sample == 0 || job->per_sample > (size_t)INT_MAX / 8 / (size_t)job->n ||
        job->out_off > (size_t)INT_MAX - (size_t)job->n * job->per_sample)
        return cld__fail(CLD_ERR_INVALID_ARG,
                         "cld_sampler_run: bad shape (n %d, per_sample %zu, "
                         "offset %zu)",
                         job->n, job->per_sample, job->out_off);
    run r;
    memset(&r, 0, sizeof r);
    r.ctx = ctx;
    r.o = o;
    r.job = job;
    r.cfg = job->labels != NULL && o->guidance != 1.0;
    r.total = (size_t)job->n * job->per_sample;
    int n = job->n, N = o->steps;
    /* workspace: D, D_prev, x2, D2, model output (n or 2n), model input (2n with guidance) */
    r.d = 0;
    r.d_prev = r.total;
    r.x2 = 2 * r.total;
    r.d2 = 3 * r.total;
    r.m_out = 4 * r.total;
    r.m_in = r.m_out + (r.cfg ? 2 : 1) * r.total;
    size_t ws_floats = r.m_in + (r.cfg ? 2 * r.total : 0);

    cld_status st = CLD_OK;
    cld_sampler_point *pts = malloc((size_t)(N + 1) * sizeof *pts);
    r.t = malloc(2 * (size_t)n * sizeof *r.t);
    if (r.cfg) r.labels = malloc(2 * (size_t)n * sizeof *r.labels);
    if (!pts || !r.t || (r.cfg && !r.labels)) {
        st = cld__fail(CLD_ERR_NOMEM, "cld_sampler_run: out of host memory");
        goto done;
    }
    if (r.cfg)
        for (int i = 0; i < n; i++) {
            r.labels[i] = job->labels[i];
            r.labels[n + i] = o->null_label;
        }
    st = cld_sampler_points(s, o, pts, NULL);
    if (st != CLD_OK) goto done;
    st = cld_buffer_alloc(ctx, ws_floats * sizeof(float), &r.ws);
    if (st != CLD_OK) goto done;
    if (!job->start_from_out) {
        cld_noise_key key = {job->seed, CLD_NOISE_STREAM_SAMPLER, job->first_index, 0};
        st = cld_noise_fill(ctx, &key, n, job->per_sample, job->out, job->out_off);
        if (st != CLD_OK) goto done;
    }
    st = run_steps(&r, s, pts);
done:
    if (r.ws) cld_buffer_release(r.ws);
    free(r.labels);
    free(r.t);
    free(pts);
    return st;
}
