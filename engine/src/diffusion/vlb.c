/* Learned variance (Improved DDPM, Nichol & Dhariwal 2021; improved-diffusion's
 * gaussian_diffusion.py): double references of the bound's two kinds of
 * term, the per-sample coefficients, the hybrid loss's graph ops (forward
 * and backward side by side), the whole bound in bits/dim, and ancestral
 * sampling with the learned variance. Kernels in cl/vlb.cl; the notation is
 * vlb.h's. */
#include "internal.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LN2 0.69314718055994530942
#define SQRT_2_OVER_PI 0.79788456080286535588
#define VLB_LS 64

/* ----------------------------------------------------- double references */
cld_status cld_vlb_normal_kl(double mean1, double logvar1, double mean2, double logvar2, double *kl)
{
    if (!kl) return cld__fail(CLD_ERR_INVALID_ARG, "cld_vlb_normal_kl: NULL argument");
    double d = mean1 - mean2;
    *kl = 0.5 * (-1.0 + logvar2 - logvar1 + exp(logvar1 - logvar2) + d * d * exp(-logvar2));
    return CLD_OK;
}

static double approx_standard_normal_cdf(double x)
{
    return 0.5 * (1.0 + tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)));
}

cld_status cld_vlb_discretized_gaussian_nll(double x, double mean, double log_scale, double *nll)
{
    if (!nll) return cld__fail(CLD_ERR_INVALID_ARG, "cld_vlb_discretized_gaussian_nll: NULL argument");
    double c = x - mean, inv = exp(-log_scale);
    double cdf_plus = approx_standard_normal_cdf(inv * (c + 1.0 / 255.0));
    double cdf_min = approx_standard_normal_cdf(inv * (c - 1.0 / 255.0));
    double lp;
    if (x < -0.999)
        lp = log(fmax(cdf_plus, 1e-12));
    else if (x > 0.999)
        lp = log(fmax(1.0 - cdf_min, 1e-12));
    else
        lp = log(fmax(cdf_plus - cdf_min, 1e-12));
    *nll = -lp;
    return CLD_OK;
}

/* ------------------------------------------------ per-sample coefficients */
cld_status cld_vlb_coefs(const cld_schedule *s, cld_pred_type pred, int n, const int *t, float *coefs)
{
    if (!s || !coefs || (n > 0 && !t) || n < 0)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_vlb_coefs: NULL argument or n %d < 0", n);
    double c0, ct, var1;
    CLD_TRY(cld_q_posterior(s, 1, 0, &c0, &ct, &var1)); /* t = 0's clipped variance */
    for (int i = 0; i < n; i++) {
        if (t[i] < 0 || t[i] >= s->T)
            return cld__fail(CLD_ERR_INVALID_ARG, "cld_vlb_coefs: t[%d] = %d outside 0 .. %d", i, t[i],
                             s->T - 1);
        double a, b, kx, kp, var;
        CLD_TRY(cld_schedule_ab(s, t[i], &a, &b));
        CLD_TRY(cld_pred_coefs(pred, CLD_PRED_X0, a, b, &kx, &kp));
        CLD_TRY(cld_q_posterior(s, t[i], t[i] - 1, &c0, &ct, &var));
        double min_log = log(t[i] == 0 ? var1 : var);
        float *r = coefs + (size_t)CLD_VLB_COEFS * (size_t)i;
        r[0] = (float)kx;
        r[1] = (float)kp;
        r[2] = (float)c0;
        r[3] = (float)ct;
        r[4] = (float)min_log;
        r[5] = (float)(log(s->beta[t[i]]) - min_log);
        r[6] = t[i] == 0 ? 1.0f : 0.0f;
        r[7] = 0.0f;
    }
    return CLD_OK;
}

/* ------------------------------------------------------------- VLB loss
 * Two nodes. elems (2, N, M) = each element's term (nats) and its derivative
 * by v, src = {model_out, x_t, x_0, coefs}, ip = {N, M}. mean (1) = sum of
 * the terms / (N M ln 2), src = {elems}, workspace N per-sample sums. The
 * mean's backward goes straight to model_out (elems' source): the prediction
 * half is detached, so elems itself has no backward. */
/* k: vlb_elems, else (NULL) looked up here. */
static cld_status launch_elems(cld_ctx *ctx, cl_kernel k, const char *what, cl_mem mo, size_t moo, cl_mem xt,
                               size_t xto, cl_mem x0, size_t x0o, cl_mem coef, size_t co, cl_mem out,
                               size_t oo, int n, int M, int clip)
{
    if (!k) CLD_TRY(cld__kernel(ctx, "vlb", "vlb_elems", &k));
    CLD_TRY(cld__kargs(k, what, "bibibibibiiii", mo, (int)moo, xt, (int)xto, x0, (int)x0o, coef, (int)co, out,
                       (int)oo, n, M, clip));
    size_t gs = (size_t)n * (size_t)M, ls = VLB_LS;
    return cld__launch(ctx, k, what, 1, &gs, &ls);
}

/* sums (n) = row sums of x (n, M): cl/basic.cl's reduce_rows, mode 1. */
/* k: reduce_rows, else (NULL) looked up here. */
static cld_status launch_row_sums(cld_ctx *ctx, cl_kernel k, const char *what, cl_mem x, size_t xo,
                                  cl_mem sums, size_t so, int n, int M)
{
    size_t ls = ctx->settings.reduce_ls, gs = (size_t)n * ls;
    if (!k) CLD_TRY(cld__kernel(ctx, "basic", "reduce_rows", &k));
    CLD_TRY(cld__kargs(k, what, "bibiibiiiiil", x, (int)xo, x, (int)xo, 0, sums, (int)so, 1, n, M, 1,
                       ls * sizeof(float)));
    return cld__launch(ctx, k, what, 1, &gs, &ls);
}

static cld_status elems_forward(cld_graph *g, cld_tensor *t)
{
    const cld_tensor *mo = t->src[0], *xt = t->src[1], *x0 = t->src[2], *cf = t->src[3];
    return launch_elems(cld__graph_ctx(g), t->kern[0], t->name, mo->buf, mo->off, xt->buf, xt->off, x0->buf,
                        x0->off, cf->buf, cf->off, t->buf, t->off, t->ip[0], t->ip[1], 0);
}
static const cld_op_def op_vlb_elems = {
    "vlb_elems", elems_forward, NULL, 0, 0, CLD_KERNELS({"vlb", "vlb_elems"}), NULL};

static double mean_scale(const cld_tensor *elems)
{
    return 1.0 / ((double)elems->ip[0] * (double)elems->ip[1] * LN2);
}

static cld_status mean_forward(cld_graph *g, cld_tensor *t)
{
    cld_ctx *ctx = cld__graph_ctx(g);
    const cld_tensor *el = t->src[0];
    cl_mem ws = t->ws_buf;
    int N = el->ip[0];
    CLD_TRY(launch_row_sums(ctx, t->kern[0], t->name, el->buf, el->off, ws, t->ws_off, N, el->ip[1]));
    cl_kernel k = t->kern[1]; /* mse_final, unweighted: sum * scale */
    CLD_TRY(cld__kargs(k, t->name, "bibiibiiif", ws, (int)t->ws_off, ws, (int)t->ws_off, 0, t->buf,
                       (int)t->off, N, 1, mean_scale(el)));
    size_t gs = VLB_LS, ls = VLB_LS;
    return cld__launch(ctx, k, t->name, 1, &gs, &ls);
}

/* dmodel_out (N, 2C, ...) from src = {elems, dloss}; fp[0] = 1 / (N M ln 2). */
static cld_status grad_forward(cld_graph *g, cld_tensor *t)
{
    cl_kernel k = t->kern[0];
    const cld_tensor *el = t->src[0], *dl = t->src[1];
    CLD_TRY(cld__kargs(k, t->name, "bibibiiif", el->buf, (int)el->off, dl->buf, (int)dl->off, t->buf,
                       (int)t->off, el->ip[0], el->ip[1], (double)t->fp[0]));
    size_t gs = t->n, ls = VLB_LS;
    return cld__launch(cld__graph_ctx(g), k, t->name, 1, &gs, &ls);
}
static const cld_op_def op_vlb_grad = {"vlb_grad", grad_forward, NULL, 0, 0, CLD_KERNELS({"vlb", "vlb_grad"}),
                                       NULL};

static cld_status mean_backward(cld_graph *g, cld_tensor *t)
{
    cld_tensor *el = t->src[0], *mo = el->src[0], *src[2] = {el, t->grad}, *dmo;
    CLD_TRY(cld__node(g, &op_vlb_grad, mo->ndim, mo->shape, 2, src, &dmo));
    dmo->fp[0] = (float)mean_scale(el);
    return cld__grad_add(g, mo, dmo);
}
static const cld_op_def op_vlb_mean = {"vlb_loss",
                                       mean_forward,
                                       mean_backward,
                                       0,
                                       0,
                                       CLD_KERNELS({"basic", "reduce_rows"}, {"loss", "mse_final"}),
                                       NULL};

static int same_shape(const cld_tensor *a, const cld_tensor *b)
{
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

cld_status cld_op_vlb_loss(cld_graph *g, cld_tensor *model_out, cld_tensor *x_t, cld_tensor *x_0,
                           cld_tensor *coefs, cld_tensor **loss)
{
    if (!g || !model_out || !x_t || !x_0 || !coefs || !loss)
        return cld__fail(CLD_ERR_INVALID_ARG, "vlb_loss: NULL argument");
    if (x_t->ndim < 2 || !same_shape(x_t, x_0))
        return cld__shape_fail("vlb_loss", "x_t and x_0 must both be (N, C, ...)", x_t, x_0);
    int ok = model_out->ndim == x_t->ndim && model_out->shape[1] == 2 * x_t->shape[1];
    for (int i = 0; ok && i < x_t->ndim; i++) ok = i == 1 || model_out->shape[i] == x_t->shape[i];
    if (!ok)
        return cld__shape_fail("vlb_loss", "model_out must be (N, 2C, ...) for x_t (N, C, ...)", model_out,
                               x_t);
    int N = x_t->shape[0];
    if (coefs->ndim != 2 || coefs->shape[0] != N || coefs->shape[1] != CLD_VLB_COEFS)
        return cld__shape_fail("vlb_loss", "coefs must be (N, CLD_VLB_COEFS = 8)", coefs, x_t);
    if (x_t->n > (size_t)INT_MAX / 2)
        return cld__shape_fail("vlb_loss", "too many elements for the kernels' int indices", x_t, NULL);
    int M = (int)(x_t->n / (size_t)N), shape[2] = {2 * N, M}, one = 1;
    cld_tensor *src[4] = {model_out, x_t, x_0, coefs}, *el;
    CLD_TRY(cld__node(g, &op_vlb_elems, 2, shape, 4, src, &el));
    el->ip[0] = N;
    el->ip[1] = M;
    CLD_TRY(cld__node(g, &op_vlb_mean, 1, &one, 1, &el, loss));
    (*loss)->ws = (size_t)N;
    return CLD_OK;
}

/* ------------------------------------------------------------ the bound */
/* Evaluated timesteps, descending, and the number of timesteps each stands for. */
static int bound_timesteps(int T, int stride, int *ts, int *w)
{
    int k = stride > 1 ? stride : 1, m = 0;
    for (int t = 1 + ((T - 2) / k) * k; t >= 1; t -= k) {
        ts[m] = t;
        w[m++] = t + k <= T ? k : T - t;
    }
    ts[m] = 0;
    w[m++] = 1;
    return m;
}

typedef struct bound_ws {
    cl_mem buf; /* offsets in floats: */
    size_t x0, xt, mo, el, sums, coef;
} bound_ws;

/* Stage pairs q0 .. q0 + nb - 1 (pair q: evaluated t ev[q / n], image q % n):
 * x_0 copies, x_t, the model's timesteps, labels and coefficient rows. */
static cld_status bound_stage(cld_ctx *ctx, const cld_schedule *s, const cld_vlb_job *j, const bound_ws *w,
                              const int *ev, const float *table, long q0, int nb, int *ti, float *tf,
                              int *lab, float *coef)
{
    const size_t M = j->per_sample;
    for (long q = q0; q < q0 + nb;) {
        int t = ev[q / j->n], img = (int)(q % j->n), slot = (int)(q - q0);
        int len = (int)(j->n - img < q0 + nb - q ? j->n - img : q0 + nb - q);
        for (int k = 0; k < len; k++) {
            ti[slot + k] = t;
            tf[slot + k] = (float)t;
            if (j->labels) lab[slot + k] = j->labels[img + k];
            memcpy(coef + (size_t)(slot + k) * CLD_VLB_COEFS, table + (size_t)t * CLD_VLB_COEFS,
                   CLD_VLB_COEFS * sizeof(float));
        }
        CLD_CL_TRY(clEnqueueCopyBuffer(ctx->queue, j->x0, w->buf,
                                       (j->x0_off + (size_t)img * M) * sizeof(float),
                                       (w->x0 + (size_t)slot * M) * sizeof(float),
                                       (size_t)len * M * sizeof(float), 0, NULL, NULL),
                   "cld_vlb_bound: copy x_0");
        cld_noise_key key = {j->seed, CLD_NOISE_STREAM_VLB, j->first_index + (uint32_t)img, (uint32_t)t};
        CLD_TRY(cld_q_sample(ctx, s, len, M, ti + slot, w->buf, w->x0 + (size_t)slot * M, &key, w->buf,
                             w->xt + (size_t)slot * M, CLD_PRED_EPS, NULL, 0));
        q += len;
    }
    return cld_buffer_write(ctx, w->buf, w->coef * sizeof(float), (size_t)nb * CLD_VLB_COEFS * sizeof(float),
                            coef);
}

/* bpd[i] += prior term of image i (host, double: x_0 is read back once). */
static cld_status bound_prior(cld_ctx *ctx, const cld_schedule *s, const cld_vlb_job *j, float *x0h)
{
    const size_t M = j->per_sample;
    CLD_TRY(cld_buffer_read(ctx, j->x0, j->x0_off * sizeof(float), (size_t)j->n * M * sizeof(float), x0h));
    double ab = s->alpha_bar[s->T - 1], a = sqrt(ab), lv = log(1.0 - ab);
    for (int i = 0; i < j->n; i++) {
        double sum = 0.0, kl;
        for (size_t e = 0; e < M; e++) {
            CLD_TRY(cld_vlb_normal_kl(a * x0h[(size_t)i * M + e], lv, 0.0, 0.0, &kl));
            sum += kl;
        }
        double bpd = sum / ((double)M * LN2);
        j->bpd[i] += bpd;
        if (j->terms_bpd) j->terms_bpd[s->T] += bpd / j->n;
    }
    return CLD_OK;
}

static cld_status bound_check(const cld_schedule *s, const cld_vlb_job *j)
{
    if (!j->x0 || !j->model || !j->bpd)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_vlb_bound: NULL x0, model or bpd");
    if (j->n < 1 || j->per_sample == 0 || j->max_batch < 1 || j->t_stride < 0)
        return cld__fail(CLD_ERR_INVALID_ARG,
                         "cld_vlb_bound: n %d, per_sample %zu, max_batch %d, t_stride %d", j->n,
                         j->per_sample, j->max_batch, j->t_stride);
    if ((int)j->pred < 0 || (int)j->pred > CLD_PRED_X0)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_vlb_bound: unknown prediction type %d", (int)j->pred);
    if (j->per_sample > (size_t)INT_MAX / 16 / (size_t)j->max_batch ||
        j->x0_off + (size_t)j->n * j->per_sample > (size_t)INT_MAX ||
        (size_t)s->T > (size_t)INT_MAX / CLD_VLB_COEFS)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_vlb_bound: %d x %zu floats (batch %d) is too many", j->n,
                         j->per_sample, j->max_batch);
    return CLD_OK;
}

cld_status cld_vlb_bound(cld_ctx *ctx, const cld_schedule *s, const cld_vlb_job *j)
{
    if (!ctx || !s || !j) return cld__fail(CLD_ERR_INVALID_ARG, "cld_vlb_bound: NULL argument");
    CLD_TRY(bound_check(s, j));
    const int T = s->T, n = j->n, MB = j->max_batch, M = (int)j->per_sample;
    bound_ws w = {0};
    w.xt = (size_t)MB * M;
    w.mo = 2 * w.xt;
    w.el = w.mo + 2 * (size_t)MB * M;
    w.sums = w.el + 2 * (size_t)MB * M;
    w.coef = w.sums + (size_t)MB;
    int *ev = malloc(2 * (size_t)T * sizeof *ev), *ti = malloc((size_t)MB * sizeof *ti),
        *lab = malloc((size_t)MB * sizeof *lab);
    float *table = malloc((size_t)T * CLD_VLB_COEFS * sizeof *table), *tf = malloc((size_t)MB * sizeof *tf),
          *sums = malloc((size_t)MB * sizeof *sums),
          *coef = malloc((size_t)MB * CLD_VLB_COEFS * sizeof *coef),
          *x0h = malloc((size_t)n * j->per_sample * sizeof *x0h);
    cld_status st = ev && ti && lab && table && tf && sums && coef && x0h
                        ? CLD_OK
                        : cld__fail(CLD_ERR_NOMEM, "cld_vlb_bound: out of host memory");
    int m = 0;
    if (st == CLD_OK) {
        m = bound_timesteps(T, j->t_stride, ev, ev + T);
        for (int t = 0; t < T && st == CLD_OK; t++)
            st = cld_vlb_coefs(s, j->pred, 1, &t, table + (size_t)t * CLD_VLB_COEFS);
    }
    if (st == CLD_OK)
        st = cld_buffer_alloc(ctx, (w.coef + (size_t)MB * CLD_VLB_COEFS) * sizeof(float), &w.buf);
    memset(j->bpd, 0, (size_t)n * sizeof *j->bpd);
    if (j->terms_bpd) memset(j->terms_bpd, 0, ((size_t)T + 1) * sizeof *j->terms_bpd);
    const long total = (long)m * n;
    for (long q0 = 0; q0 < total && st == CLD_OK; q0 += MB) {
        int nb = (int)(total - q0 < MB ? total - q0 : MB);
        st = bound_stage(ctx, s, j, &w, ev, table, q0, nb, ti, tf, lab, coef);
        if (st == CLD_OK)
            st = j->model(j->model_user, w.buf, w.xt, w.buf, w.mo, nb, tf, j->labels ? lab : NULL);
        if (st == CLD_OK)
            st = launch_elems(ctx, NULL, "cld_vlb_bound", w.buf, w.mo, w.buf, w.xt, w.buf, w.x0, w.buf,
                              w.coef, w.buf, w.el, nb, M, j->clip_denoised != 0);
        if (st == CLD_OK) st = launch_row_sums(ctx, NULL, "cld_vlb_bound", w.buf, w.el, w.buf, w.sums, nb, M);
        if (st == CLD_OK)
            st = cld_buffer_read(ctx, w.buf, w.sums * sizeof(float), (size_t)nb * sizeof(float), sums);
        for (int k = 0; k < nb && st == CLD_OK; k++) {
            long q = q0 + k;
            int e = (int)(q / n), img = (int)(q % n);
            double term = sums[k] / ((double)M * LN2);
            j->bpd[img] += ev[T + e] * term;
            if (j->terms_bpd) j->terms_bpd[ev[e]] += term / n;
        }
        if (st == CLD_OK && j->progress) j->progress(j->progress_user, q0 + nb, total);
    }
    if (st == CLD_OK) st = bound_prior(ctx, s, j, x0h);
    if (w.buf) cld_buffer_release(w.buf);
    free(ev);
    free(ti);
    free(lab);
    free(table);
    free(tf);
    free(sums);
    free(coef);
    free(x0h);
    return st;
}

/* ------------------------------------------------------------- sampling */
cld_status cld_sampler_run_learned_var(cld_ctx *ctx, const cld_schedule *s, const cld_sampler_opts *o,
                                       const cld_sample_job *job)
{
    if (!ctx || !s || !o || !job || !job->model || !job->out)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_sampler_run_learned_var: NULL argument");
    if (o->kind != CLD_SAMPLER_DDPM)
        return cld__fail(CLD_ERR_INVALID_ARG,
                         "cld_sampler_run_learned_var: sampler %s; the learned variance "
                         "is used by ancestral sampling (ddpm) only",
                         cld_sampler_name(o->kind));
    if (job->n <= 0 || job->per_sample == 0 || job->per_sample > (size_t)INT_MAX / 8 / (size_t)job->n ||
        job->out_off > (size_t)INT_MAX - (size_t)job->n * job->per_sample)
        return cld__fail(CLD_ERR_INVALID_ARG,
                         "cld_sampler_run_learned_var: bad shape (n %d, per_sample %zu, "
                         "offset %zu)",
                         job->n, job->per_sample, job->out_off);
    const int n = job->n, N = o->steps, cfg = job->labels != NULL && o->guidance != 1.0;
    const size_t M = job->per_sample, total = (size_t)n * M;
    const int nb = cfg ? 2 * n : n;
    /* workspace: model output (nb, 2M), noise (n, M), guidance input (2n, M) */
    const size_t m_out = 0, z = (size_t)nb * 2 * M, m_in = z + total;
    cld_sampler_point *pts = malloc(((size_t)N + 1) * sizeof *pts);
    float *tf = malloc((size_t)nb * sizeof *tf);
    int *labels = cfg ? malloc((size_t)nb * sizeof *labels) : NULL;
    cl_mem ws = NULL;
    cld_status st = pts && tf && (!cfg || labels)
                        ? CLD_OK
                        : cld__fail(CLD_ERR_NOMEM, "cld_sampler_run_learned_var: out of host memory");
    if (st == CLD_OK) st = cld_sampler_points(s, o, pts, NULL);
    for (int i = 0; cfg && labels && i < n; i++) {
        labels[i] = job->labels[i];
        labels[n + i] = o->null_label;
    }
    if (st == CLD_OK) st = cld_buffer_alloc(ctx, (m_in + (cfg ? 2 * total : 0)) * sizeof(float), &ws);
    if (st == CLD_OK && !job->start_from_out) {
        cld_noise_key key = {job->seed, CLD_NOISE_STREAM_SAMPLER, job->first_index, 0};
        st = cld_noise_fill(ctx, &key, n, M, job->out, job->out_off);
    }
    cl_kernel k = NULL;
    if (st == CLD_OK) st = cld__kernel(ctx, "vlb", "lv_ddpm_step", &k);
    for (int i = 0; i < N && st == CLD_OK; i++) {
        const cld_sampler_point *P = &pts[i];
        const int last = i == N - 1, t = (int)P->t, tp = last ? -1 : (int)pts[i + 1].t;
        cl_mem in = job->out;
        size_t in_off = job->out_off;
        for (int h = 0; cfg && h < 2 && st == CLD_OK; h++)
            st = cld__cl_check(clEnqueueCopyBuffer(ctx->queue, job->out, ws, job->out_off * sizeof(float),
                                                   (m_in + (size_t)h * total) * sizeof(float),
                                                   total * sizeof(float), 0, NULL, NULL),
                               "cld_sampler_run_learned_var: copy (guidance batch)");
        if (cfg) in = ws, in_off = m_in;
        for (int b = 0; b < nb; b++) tf[b] = (float)P->t;
        if (st == CLD_OK)
            st = job->model(job->model_user, in, in_off, ws, m_out, nb, tf, cfg ? labels : job->labels);
        double kx = 0, kp = 0, c0 = 0, ct = 0, var = 0, dlog = 0;
        if (st == CLD_OK) st = cld_pred_coefs(o->pred, CLD_PRED_X0, P->a, P->b, &kx, &kp);
        if (st == CLD_OK) st = cld_q_posterior(s, t, tp, &c0, &ct, &var);
        if (st == CLD_OK && !last) {
            /* respaced: log beta - log var, beta = 1 - alpha_bar_t / alpha_bar_s */
            dlog = log(1.0 - s->alpha_bar[t] / s->alpha_bar[tp]) - log(var);
            cld_noise_key key = {job->seed, CLD_NOISE_STREAM_SAMPLER, job->first_index, (uint32_t)i + 1};
            st = cld_noise_fill(ctx, &key, n, M, ws, z);
        }
        double wc, wu; /* as cld_sampler_run's lincomb gets them */
        cld__guided_weights(kp, o->guidance, cfg, &wc, &wu);
        if (st == CLD_OK)
            st = cld__kargs(k, "lv_ddpm_step", "bibibiiiifffffffif", job->out, (int)job->out_off, ws,
                            (int)m_out, ws, (int)z, n, (int)M, cfg, wc, wu, kx, c0, ct, sqrt(var), 0.5 * dlog,
                            !last, o->clip_sample);
        size_t gs = total, ls = VLB_LS;
        if (st == CLD_OK) st = cld__launch(ctx, k, "lv_ddpm_step", 1, &gs, &ls);
        if (st == CLD_OK && job->progress) job->progress(job->progress_user, i + 1, N);
    }
    if (ws) cld_buffer_release(ws);
    free(pts);
    free(tf);
    free(labels);
    return st;
}

cld_status cld_pred_half_fn(void *user, cl_mem x, size_t x_off, cl_mem out, size_t out_off, int n,
                            const float *t, const int *labels)
{
    const cld_pred_half *h = user;
    if (!h || !h->ctx || !h->model || !x || !out || n < 1 || h->per_sample == 0)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_pred_half_fn: NULL argument, n %d or per_sample %zu", n,
                         h ? h->per_sample : 0);
    const size_t row = h->per_sample * sizeof(float);
    cl_mem tmp;
    CLD_TRY(cld_buffer_alloc(h->ctx, 2 * row * (size_t)n, &tmp));
    cld_status st = h->model(h->model_user, x, x_off, tmp, 0, n, t, labels);
    if (st == CLD_OK) {
        /* rows of 2 * per_sample floats -> their first halves */
        size_t src0[3] = {0, 0, 0}, dst0[3] = {out_off * sizeof(float), 0, 0},
               region[3] = {row, (size_t)n, 1};
        st = cld__cl_check(clEnqueueCopyBufferRect(h->ctx->queue, tmp, out, src0, dst0, region, 2 * row, 0,
                                                   row, 0, 0, NULL, NULL),
                           "cld_pred_half_fn: clEnqueueCopyBufferRect");
    }
    cld_buffer_release(tmp); /* OpenCL keeps it until the copy is done */
    return st;
}
