/* Batched matmul against a double reference (opcheck): all transpose
 * combinations, rank 2 and 3, a shared operand, the attention core
 * (matmul -> softmax -> matmul), and shape errors. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opcheck.h"
#include "testutil.h"

typedef struct mm_case {
    int ta, tb, B, M, N, K;
    float alpha;
    int rank2;   /* operands (M, K)-like instead of (B, M, K)-like, B = 1 */
    int b_param; /* b is a parameter (weights) instead of an input */
} mm_case;

/* element (m, k) of op(a) / (k, n) of op(b) in batch bi */
static double mm_a(const mm_case *p, const double *a, int bi, int m, int k)
{
    return p->ta ? a[((size_t)bi * p->K + k) * p->M + m] : a[((size_t)bi * p->M + m) * p->K + k];
}
static size_t mm_a_idx(const mm_case *p, int bi, int m, int k)
{
    return p->ta ? ((size_t)bi * p->K + k) * p->M + m : ((size_t)bi * p->M + m) * p->K + k;
}
static size_t mm_b_idx(const mm_case *p, int bi, int k, int n)
{
    return p->tb ? ((size_t)bi * p->N + n) * p->K + k : ((size_t)bi * p->K + k) * p->N + n;
}

static cld_status mm_build(cld_graph *g, cld_tensor **x, cld_tensor **y, void *user)
{
    const mm_case *p = user;
    return cld_op_matmul(g, x[0], x[1], p->ta, p->tb, p->alpha, y);
}

static void mm_ref_forward(const double *const *x, double *y, void *user)
{
    const mm_case *p = user;
    for (int bi = 0; bi < p->B; bi++)
        for (int m = 0; m < p->M; m++)
            for (int n = 0; n < p->N; n++) {
                double s = 0;
                for (int k = 0; k < p->K; k++) s += mm_a(p, x[0], bi, m, k) * x[1][mm_b_idx(p, bi, k, n)];
                y[((size_t)bi * p->M + m) * p->N + n] = p->alpha * s;
            }
}

static void mm_ref_backward(const double *const *x, const double *dy, double **dx, void *user)
{
    const mm_case *p = user;
    for (int bi = 0; bi < p->B; bi++)
        for (int m = 0; m < p->M; m++)
            for (int n = 0; n < p->N; n++) {
                double d = p->alpha * dy[((size_t)bi * p->M + m) * p->N + n];
                for (int k = 0; k < p->K; k++) {
                    dx[0][mm_a_idx(p, bi, m, k)] += d * x[1][mm_b_idx(p, bi, k, n)];
                    dx[1][mm_b_idx(p, bi, k, n)] += d * mm_a(p, x[0], bi, m, k);
                }
            }
}

static void mm_run(mm_case p)
{
    char name[96];
    snprintf(name, sizeof name, "matmul B=%d M=%d N=%d K=%d ta=%d tb=%d%s%s", p.B, p.M, p.N, p.K, p.ta, p.tb,
             p.rank2 ? " rank2" : "", p.b_param ? " b param" : "");
    opc_case c = {0};
    c.name = name;
    c.n_operands = 2;
    int ar = p.ta ? p.K : p.M, ac = p.ta ? p.M : p.K;
    int br = p.tb ? p.N : p.K, bc = p.tb ? p.K : p.N;
    if (p.rank2) {
        c.op[0] = (opc_operand){"a", 2, {ar, ac}, 0, 0, NULL};
        c.op[1] = (opc_operand){"b", 2, {br, bc}, p.b_param, 0, NULL};
    } else {
        c.op[0] = (opc_operand){"a", 3, {p.B, ar, ac}, 0, 0, NULL};
        c.op[1] = (opc_operand){"b", 3, {p.B, br, bc}, p.b_param, 0, NULL};
    }
    c.build = mm_build;
    c.ref_forward = mm_ref_forward;
    c.ref_backward = mm_ref_backward;
    c.user = &p;
    opc_check(&c, 1234, 0, 0);
}

START_TEST(test_matmul_transposes_b3)
{
    for (int t = 0; t < 4; t++) mm_run((mm_case){t & 1, t >> 1, 3, 7, 5, 9, 1.0f, 0, 0});
}
END_TEST

START_TEST(test_matmul_transposes_b1)
{
    for (int t = 0; t < 4; t++) {
        mm_run((mm_case){t & 1, t >> 1, 1, 7, 5, 9, 0.5f, 0, 0});  /* (1, M, K) */
        mm_run((mm_case){t & 1, t >> 1, 1, 7, 5, 9, -2.0f, 1, 1}); /* (M, K), weights */
    }
}
END_TEST

/* the attention shapes: q^T k (ta) and v w^T (tb) at 7x7, C = 64 */
START_TEST(test_matmul_attention_shapes)
{
    mm_run((mm_case){1, 0, 3, 49, 49, 64, 0.125f, 0, 0});
    mm_run((mm_case){0, 1, 3, 64, 49, 49, 1.0f, 0, 0});
    mm_run((mm_case){0, 0, 1, 49, 49, 64, 1.0f, 1, 1});
}
END_TEST

/* ------------------------------------------------ x x^T: gradients add up */
typedef struct gram_case {
    int B, M, K;
} gram_case;

static cld_status gram_build(cld_graph *g, cld_tensor **x, cld_tensor **y, void *user)
{
    (void)user;
    return cld_op_matmul(g, x[0], x[0], 0, 1, 1.0f, y);
}

static void gram_ref_forward(const double *const *x, double *y, void *user)
{
    const gram_case *p = user;
    for (int b = 0; b < p->B; b++) {
        const double *xb = x[0] + (size_t)b * p->M * p->K;
        for (int m = 0; m < p->M; m++)
            for (int n = 0; n < p->M; n++) {
                double s = 0;
                for (int k = 0; k < p->K; k++) s += xb[m * p->K + k] * xb[n * p->K + k];
                y[((size_t)b * p->M + m) * p->M + n] = s;
            }
    }
}

static void gram_ref_backward(const double *const *x, const double *dy, double **dx, void *user)
{
    const gram_case *p = user;
    for (int b = 0; b < p->B; b++) {
        const double *xb = x[0] + (size_t)b * p->M * p->K, *db = dy + (size_t)b * p->M * p->M;
        double *gb = dx[0] + (size_t)b * p->M * p->K;
        for (int m = 0; m < p->M; m++)
            for (int n = 0; n < p->M; n++)
                for (int k = 0; k < p->K; k++) {
                    gb[m * p->K + k] += db[m * p->M + n] * xb[n * p->K + k];
                    gb[n * p->K + k] += db[m * p->M + n] * xb[m * p->K + k];
                }
    }
}

START_TEST(test_matmul_shared_operand)
{
    gram_case p = {3, 7, 5};
    opc_case c = {0};
    c.name = "matmul x x^T (3,7,5)";
    c.n_operands = 1;
    c.op[0] = (opc_operand){"x", 3, {3, 7, 5}, 0, 0, NULL};
    c.build = gram_build;
    c.ref_forward = gram_ref_forward;
    c.ref_backward = gram_ref_backward;
    c.user = &p;
    opc_check(&c, 99, 0, 0);
}
END_TEST

/* --------------------------- attention core: softmax(q^T k s) then v w^T
 * q, k, v (B, C, L); w (B, L, L); h (B, C, L) */
typedef struct attn_case {
    int B, C, L;
} attn_case;

static cld_status attn_build(cld_graph *g, cld_tensor **x, cld_tensor **y, void *user)
{
    const attn_case *p = user;
    cld_tensor *w, *ws;
    cld_status s = cld_op_matmul(g, x[0], x[1], 1, 0, (float)(1.0 / sqrt((double)p->C)), &w);
    if (!s) s = cld_op_softmax(g, w, &ws);
    if (!s) s = cld_op_matmul(g, x[2], ws, 0, 1, 1.0f, y);
    return s;
}

/* w[b] = softmax_rows(q^T k / sqrt(C)) into w (B, L, L) */
static void attn_weights(const attn_case *p, const double *q, const double *k, double *w)
{
    int C = p->C, L = p->L;
    double sc = 1.0 / sqrt((double)C);
    for (int b = 0; b < p->B; b++)
        for (int i = 0; i < L; i++) {
            double *row = w + ((size_t)b * L + i) * L, mx = -INFINITY, sum = 0;
            for (int j = 0; j < L; j++) {
                double s = 0;
                for (int c = 0; c < C; c++)
                    s += q[((size_t)b * C + c) * L + i] * k[((size_t)b * C + c) * L + j];
                row[j] = s * sc;
                mx = fmax(mx, row[j]);
            }
            for (int j = 0; j < L; j++) sum += row[j] = exp(row[j] - mx);
            for (int j = 0; j < L; j++) row[j] /= sum;
        }
}

static void attn_ref_forward(const double *const *x, double *y, void *user)
{
    const attn_case *p = user;
    int C = p->C, L = p->L;
    double *w = malloc((size_t)p->B * L * L * sizeof *w);
    attn_weights(p, x[0], x[1], w);
    for (int b = 0; b < p->B; b++)
        for (int c = 0; c < C; c++)
            for (int i = 0; i < L; i++) {
                double s = 0;
                for (int j = 0; j < L; j++)
                    s += x[2][((size_t)b * C + c) * L + j] * w[((size_t)b * L + i) * L + j];
                y[((size_t)b * C + c) * L + i] = s;
            }
    free(w);
}

static void attn_ref_backward(const double *const *x, const double *dy, double **dx, void *user)
{
    const attn_case *p = user;
    int C = p->C, L = p->L;
    double sc = 1.0 / sqrt((double)C);
    double *w = malloc((size_t)p->B * L * L * sizeof *w), *dw = calloc((size_t)L * L, sizeof *dw);
    attn_weights(p, x[0], x[1], w);
    for (int b = 0; b < p->B; b++) {
        const double *wb = w + (size_t)b * L * L, *vb = x[2] + (size_t)b * C * L,
                     *db = dy + (size_t)b * C * L;
        const double *qb = x[0] + (size_t)b * C * L, *kb = x[1] + (size_t)b * C * L;
        /* h[c,i] = sum_j v[c,j] w[i,j]: dv[c,j] += dh[c,i] w[i,j]; dw[i,j] = sum_c dh[c,i] v[c,j] */
        for (int i = 0; i < L; i++)
            for (int j = 0; j < L; j++) {
                double s = 0;
                for (int c = 0; c < C; c++) {
                    s += db[c * L + i] * vb[c * L + j];
                    dx[2][(size_t)b * C * L + c * L + j] += db[c * L + i] * wb[i * L + j];
                }
                dw[i * L + j] = s;
            }
        /* softmax rows, then the scaled logits s[i,j] = sc sum_c q[c,i] k[c,j] */
        for (int i = 0; i < L; i++) {
            double dot = 0;
            for (int j = 0; j < L; j++) dot += dw[i * L + j] * wb[i * L + j];
            for (int j = 0; j < L; j++) {
                double ds = wb[i * L + j] * (dw[i * L + j] - dot) * sc;
                for (int c = 0; c < C; c++) {
                    dx[0][(size_t)b * C * L + c * L + i] += ds * kb[c * L + j];
                    dx[1][(size_t)b * C * L + c * L + j] += ds * qb[c * L + i];
                }
            }
        }
    }
    free(w);
    free(dw);
}

START_TEST(test_attention_core)
{
    attn_case p = {3, 12, 49};
    opc_case c = {0};
    c.name = "attention core q,k,v (3,12,49)";
    c.n_operands = 3;
    c.op[0] = (opc_operand){"q", 3, {3, 12, 49}, 0, 0, NULL};
    c.op[1] = (opc_operand){"k", 3, {3, 12, 49}, 0, 0, NULL};
    c.op[2] = (opc_operand){"v", 3, {3, 12, 49}, 0, 0, NULL};
    c.build = attn_build;
    c.ref_forward = attn_ref_forward;
    c.ref_backward = attn_ref_backward;
    c.user = &p;
    opc_check(&c, 5, 0, 0);
}
END_TEST

/* ------------------------------------------------------------ shape errors */
START_TEST(test_matmul_shape_errors)
{
    cld_ctx *ctx = tu_ctx();
    cld_graph *g;
    cld_tensor *a, *b, *b2, *v, *t4, *y = NULL;
    TU_OK(cld_graph_create(ctx, NULL, &g));
    TU_OK(cld_graph_input(g, "a", 3, (int[]){3, 7, 9}, 0, &a));
    TU_OK(cld_graph_input(g, "b", 3, (int[]){3, 8, 5}, 0, &b));
    TU_OK(cld_graph_input(g, "b2", 3, (int[]){2, 9, 5}, 0, &b2));
    TU_OK(cld_graph_input(g, "v", 1, (int[]){9}, 0, &v));
    TU_OK(cld_graph_input(g, "t4", 4, (int[]){1, 3, 9, 5}, 0, &t4));

    TU_STATUS(cld_op_matmul(g, a, b, 0, 0, 1.0f, &y), CLD_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(cld_last_error(), "matmul"));
    ck_assert_ptr_nonnull(strstr(cld_last_error(), "(3, 7, 9)"));
    ck_assert_ptr_nonnull(strstr(cld_last_error(), "(3, 8, 5)"));
    TU_STATUS(cld_op_matmul(g, a, b2, 0, 0, 1.0f, &y), CLD_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(cld_last_error(), "batch"));
    TU_STATUS(cld_op_matmul(g, a, b, 1, 0, 1.0f, &y), CLD_ERR_SHAPE); /* (9,7) x (8,5) */
    TU_STATUS(cld_op_matmul(g, a, v, 0, 0, 1.0f, &y), CLD_ERR_SHAPE);
    TU_STATUS(cld_op_matmul(g, a, t4, 0, 0, 1.0f, &y), CLD_ERR_SHAPE);
    TU_STATUS(cld_op_matmul(g, a, NULL, 0, 0, 1.0f, &y), CLD_ERR_INVALID_ARG);
    /* a good call still builds after the failures: a a^T (3, 7, 7) */
    TU_OK(cld_op_matmul(g, a, a, 0, 1, 1.0f, &y));
    int nd, sh[4];
    TU_OK(cld_tensor_shape(y, &nd, sh));
    ck_assert_int_eq(nd, 3);
    ck_assert_int_eq(sh[0], 3);
    ck_assert_int_eq(sh[1], 7);
    ck_assert_int_eq(sh[2], 7);
    cld_graph_free(g);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ops_matmul");
    TCase *tc = tcase_create("matmul");
    tcase_add_test(tc, test_matmul_transposes_b3);
    tcase_add_test(tc, test_matmul_transposes_b1);
    tcase_add_test(tc, test_matmul_attention_shapes);
    tcase_add_test(tc, test_matmul_shared_operand);
    tcase_add_test(tc, test_attention_core);
    tcase_add_test(tc, test_matmul_shape_errors);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
