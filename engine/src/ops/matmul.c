/* Batched matrix product over dim 0 through CLBlast (row-major), forward and
 * backward side by side:
 *   a (B, M, K) or (B, K, M) if trans_a; b (B, K, N) or (B, N, K) if trans_b
 *   y (B, M, N) = alpha op(a) op(b)
 * Rank-2 operands are one matrix (B = 1); y is rank 2 when both are. */
#include "internal.h"

#include <stdio.h>

/* ip: [0] trans_a, [1] trans_b, [2] B, [3] M, [4] N, [5] K; fp[0] alpha */
static cld_status matmul_forward(cld_graph *g, cld_tensor *t)
{
    const cld_tensor *a = t->src[0], *b = t->src[1];
    int ta = t->ip[0], tb = t->ip[1];
    size_t B = (size_t)t->ip[2], M = (size_t)t->ip[3], N = (size_t)t->ip[4], K = (size_t)t->ip[5];
    size_t lda = ta ? M : K, ldb = tb ? K : N;
    cld_ctx *ctx = cld__graph_ctx(g);
    if (B == 1)
        return cld__gemm(ctx, ta, tb, M, N, K, t->fp[0], a->buf, a->off, lda, b->buf, b->off, ldb, 0.0f,
                         t->buf, t->off, N);
    return cld__gemm_batched(ctx, ta, tb, M, N, K, t->fp[0], a->buf, a->off, lda, M * K, b->buf, b->off, ldb,
                             K * N, 0.0f, t->buf, t->off, N, M * N, B);
}

/* With dY = dL/dy (B, M, N):
 *   d op(a) = alpha dY op(b)^T   ->  da = alpha dY op(b)^T,  or alpha op(b) dY^T if trans_a
 *   d op(b) = alpha op(a)^T dY   ->  db = alpha op(a)^T dY,  or alpha dY^T op(a) if trans_b */
static cld_status matmul_backward(cld_graph *g, cld_tensor *t)
{
    cld_tensor *a = t->src[0], *b = t->src[1], *dy = t->grad, *d;
    int ta = t->ip[0], tb = t->ip[1];
    float alpha = t->fp[0];
    if (a->flags & CLD_TF_NEEDS_GRAD) {
        if (ta)
            CLD_TRY(cld_op_matmul(g, b, dy, tb, 1, alpha, &d));
        else
            CLD_TRY(cld_op_matmul(g, dy, b, 0, !tb, alpha, &d));
        CLD_TRY(cld__grad_add(g, a, d));
    }
    if (b->flags & CLD_TF_NEEDS_GRAD) {
        if (tb)
            CLD_TRY(cld_op_matmul(g, dy, a, 1, ta, alpha, &d));
        else
            CLD_TRY(cld_op_matmul(g, a, dy, !ta, 0, alpha, &d));
        CLD_TRY(cld__grad_add(g, b, d));
    }
    return CLD_OK;
}
static const cld_op_def op_matmul = {"matmul", matmul_forward, matmul_backward, 0, 0, NULL, NULL};

/* Batch, rows and columns of op(t) for a rank-2 or rank-3 operand. */
static int mm_dims(const cld_tensor *t, int trans, int *B, int *rows, int *cols)
{
    if (t->ndim != 2 && t->ndim != 3) return 0;
    int r = t->shape[t->ndim - 2], c = t->shape[t->ndim - 1];
    *B = t->ndim == 3 ? t->shape[0] : 1;
    *rows = trans ? c : r;
    *cols = trans ? r : c;
    return 1;
}

cld_status cld_op_matmul(cld_graph *g, cld_tensor *a, cld_tensor *b, int trans_a, int trans_b, float alpha,
                         cld_tensor **y)
{
    if (!g || !a || !b || !y) return cld__fail(CLD_ERR_INVALID_ARG, "matmul: NULL argument");
    trans_a = trans_a != 0;
    trans_b = trans_b != 0;
    int Ba, M, Ka, Bb, Kb, N;
    char msg[96];
    if (!mm_dims(a, trans_a, &Ba, &M, &Ka) || !mm_dims(b, trans_b, &Bb, &Kb, &N))
        return cld__shape_fail("matmul", "operands must be (M, K) or (B, M, K)", a, b);
    if (Ba != Bb || Ka != Kb) {
        snprintf(msg, sizeof msg, "%s (trans_a=%d, trans_b=%d)",
                 Ba != Bb ? "batch sizes differ" : "inner dimensions differ", trans_a, trans_b);
        return cld__shape_fail("matmul", msg, a, b);
    }
    int shape[3] = {Ba, M, N}, rank2 = a->ndim == 2 && b->ndim == 2;
    cld_tensor *src[2] = {a, b};
    CLD_TRY(cld__node(g, &op_matmul, rank2 ? 2 : 3, rank2 ? shape + 1 : shape, 2, src, y));
    int ip[6] = {trans_a, trans_b, Ba, M, N, Ka};
    for (int i = 0; i < 6; i++) (*y)->ip[i] = ip[i];
    (*y)->fp[0] = alpha;
    return CLD_OK;
}
