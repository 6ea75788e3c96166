/* 2-D convolution and the fully connected layer, forward and backward side
 * by side.
 *
 * conv2d runs on our own register-tiled GEMM kernels (conv.cl, winograd.cl):
 * on PoCL/CPU they are 2-3x faster than CLBlast's SGEMM on these shapes; only
 * Winograd's 36 products go through cld__gemm_batched on GPUs (wino_blas). The
 * batch is processed in chunks of B samples so the workspace stays bounded.
 * Three paths:
 *
 * Winograd F(4x4, 3x3) (3x3, stride 1, pad 1, >= 32 channels in and out: the
 * UNet's 3x3 convs but the first and last), see winograd.cl: per chunk
 *   forward: V = input transform (of x read in place: the padding and the
 *            tiles' overhang read as 0); Mo[e] = U[e] V[e] (36 GEMMs, U the
 *            transformed weight, once per node); y = output transform + b
 *   dx:      the same with the flipped, transposed weight, on dy
 *   dW:      dU[e] (+)= (A dY A^T)[e] V[e]^T over the chunks; dW = G^T dU G
 * Implicit (stride 1, pad <= K-1; the UNet's 1x1 convs, conv_in, conv_out;
 * and the forward and dW of 3x3 stride-2 convs over the planes split into
 * their 4 phases, so that each tap's inputs are contiguous again):
 * the input is copied into zero-padded planes xp (B, Ci, Hp, Wp) and the GEMM reads
 * each tap's 16-wide tile straight from xp, enumerating output positions
 * over the padded width (j = oy*Wp + ox; columns ox >= Wo are dropped):
 *   forward: y = conv_s1(xp, W) + b
 *   dx:      dx = conv_s1(pad(dy, K-1-pad), W flipped and transposed)
 *   dW:      dW (+)= conv_dw_s1(xp, dy packed): summed over samples and chunks
 * General (any stride/pad): im2col + GEMM, the GEMM operands packed into
 * register-tile panels by the `pack` kernel (which does the im2col):
 *   forward: y (Co, B*P) = W (Co, CKK) im2col(x) (CKK, B*P) + b, stored
 *            straight into y's (B, Co, P) layout with the bias
 *   dx:      col (CKK, B*P) = W^T dy; dx = col2im(col) (one writer per row)
 *   dW:      dW (Co, CKK) (+)= dy (Co, B*P) im2col(x)^T
 * db is the sum of dy over N, H, W (cld__reduce_to) on all paths.
 * linear uses cld__gemm (runtime/blas.c: our GEMM kernels on CPUs, CLBlast
 * elsewhere): its matrices are small. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* Workspace limit of one conv node in floats (64 MB); at least one sample. */
#define CONV_WS_LIMIT ((size_t)16 << 20)

/* Below this many input or output channels the transforms cost about what
 * the 4x fewer multiply-adds save (bench/lab_winograd.c, PoCL on 2 cores:
 * 16 -> 16 channels 0.80x forward, 32 -> 32 1.13x, 128 -> 128 2.7x). */
#define CONV_WINO_MIN_CH 32

/* Winograd chunks on CPUs: at most 1/6 of the device's global memory cache
 * (PoCL reports the L3) per chunk of samples. cld-bench's training step of
 * the shipped config, 5 alternating runs each (bench/NOTES.md "Eighth
 * session"): whole batch (the 64 MB limit) median 80-88 img/s, 1/2 79, 1/3
 * 84, 1/6 97-107, 1/10 96, 1/16 90; 32 -> 32 channels at 28 x 28 with its
 * backward: 16-20 ms whole, 12.5-13 ms per 16 samples. */
#define CONV_WINO_CACHE_DIV 6

/* Whether a conv of this geometry runs Winograd F(4x4, 3x3): 3x3, stride 1,
 * pad 1, enough channels, and not switched off by CLD_CONV_WINOGRAD=0 (or
 * forced either way by the test hook conv_winograd_mode: runtime/internal.h). */
static int conv_use_winograd(const cld__settings *st, int Ci, int Co, int K, int stride, int pad)
{
    if (K != 3 || stride != 1 || pad != 1 || st->conv_force_im2col || st->conv_winograd_mode == 1) return 0;
    if (st->conv_winograd_mode == 2) return 1;
    if (!st->conv_winograd) return 0;
    return Ci >= CONV_WINO_MIN_CH && Co >= CONV_WINO_MIN_CH;
}

/* db = sum of t's gradient over all dims but the channel one (b may be NULL) */
static cld_status bias_grad(cld_graph *g, cld_tensor *t, cld_tensor *b)
{
    if (!b || !(b->flags & CLD_TF_NEEDS_GRAD)) return CLD_OK;
    cld_tensor *db;
    CLD_TRY(cld__reduce_to(g, t->grad, b, &db));
    return cld__grad_add(g, b, db);
}

/* ------------------------------------------------------------- conv2d */

/* ip[0] stride, ip[1] pad, ip[2] chunk B (samples per GEMM), ip[3] path:
 * CONV_IM2COL, CONV_IMPLICIT or CONV_WINOGRAD (forward, dx and dW), or
 * CONV_STRIDE2 (3x3 stride 2: forward and dW implicit over the padded planes
 * split into their 4 phases by pad_planes, dx on the im2col path); ip[4]
 * Winograd's forward (bit 0) and dx (bit 1) as one wino_fused launch over
 * the whole batch instead of chunks */
enum { CONV_IM2COL = 0, CONV_IMPLICIT = 1, CONV_WINOGRAD = 2, CONV_STRIDE2 = 3 };
typedef struct conv_geom {
    int N, Ci, H, W, Co, K, Ho, Wo, stride, pad, B, implicit, wino;
    int dx_implicit; /* dx on the implicit path (stride 1) */
    int fused;       /* ip[4] */
    int TH, TW;      /* Winograd: 4x4 output tiles per sample, down and across */
    int P, CKK;
    int S, Hp, Wp; /* padded input planes (implicit forward and dW), S*S phases of them */
    int Hq, Wq;    /* padded output-gradient planes (implicit dx) */
} conv_geom;

enum { MR = 6, NR = 16 }; /* GEMM register tile (conv.cl) */
/* wino_gemm: column tiles per work-item (its loop over them reuses the
 * 6-row panel of U from L1 and spreads PoCL's per-group cost over 4 tiles:
 * at 32 channels, K = 32, one tile was ~400 FMAs; 3.9-5.5 -> 3.1-3.6 ms per
 * product at 64 x 32 -> 32 x 28 x 28, bench/NOTES.md "Eighth session") */
enum { WINO_NT = 4 };
enum { SRC_DENSE = 0, SRC_BCP = 1, SRC_IM2COL = 2, SRC_BCP_ROWS = 3, SRC_WFLIP = 4 };
enum { WS_FWD, WS_DX, WS_DW };
#define CONV_SLACK(K) ((size_t)(K) + 16) /* zeros after padded planes: tile overrun */

static size_t round_up(size_t n, size_t r) { return (n + r - 1) / r * r; }

/* The kernels of the conv nodes (forward, dx, dW), t->kern[K_...]: the
 * planner resolves those of the node's path (conv_kernels_used). */
enum {
    K_PACK,
    K_PAD,
    K_GEMM,
    K_S1,
    K_COL2IM,
    K_DW_S1, /* conv.cl (K_GEMM: gemm.cl) */
    K_CONV_CL_END,
    K_WINO_WEIGHT = K_CONV_CL_END,
    K_WINO_INPUT,
    K_WINO_GEMM,
    K_WINO_OUTPUT,
    K_WINO_DY,
    K_WINO_WGRAD,
    K_WINO_FUSED,
    K_WINO_INPUT_T, /* winograd.cl */
    K_CONV_END
};
static const cld_kernel_ref conv_kernels[K_CONV_END + 1] = {{"conv", "pack"},
                                                            {"conv", "pad_planes"},
                                                            {"gemm", "gemm_packed_ab"},
                                                            {"conv", "conv_s1"},
                                                            {"conv", "col2im"},
                                                            {"conv", "conv_dw_s1"},
                                                            {"winograd", "wino_weight"},
                                                            {"winograd", "wino_input"},
                                                            {"winograd", "wino_gemm"},
                                                            {"winograd", "wino_output"},
                                                            {"winograd", "wino_dy"},
                                                            {"winograd", "wino_wgrad"},
                                                            {"winograd", "wino_fused"},
                                                            {"winograd", "wino_input_t"},
                                                            {NULL, NULL}};

/* winograd.cl's on the Winograd path (its transforms read the planes in
 * place; the dW products go through cld__gemm_batched), else conv.cl's and
 * gemm.cl's gemm_packed_ab (K_GEMM): winograd.cl is built only if some node
 * needs it. */
static unsigned conv_kernels_used(const cld_graph *g, const cld_tensor *t)
{
    (void)g;
    unsigned conv_cl = (1u << K_CONV_CL_END) - 1;
    return t->ip[3] == CONV_WINOGRAD ? ((1u << K_CONV_END) - 1) & ~conv_cl : conv_cl;
}

/* xs (N,Ci,H,W), ws (Co,Ci,K,K), ys (N,Co,Ho,Wo) */
static conv_geom geom_of(const int *xs, const int *wsh, const int *ys, const int *ip)
{
    conv_geom d;
    d.N = xs[0];
    d.Ci = xs[1];
    d.H = xs[2];
    d.W = xs[3];
    d.Co = wsh[0];
    d.K = wsh[2];
    d.Ho = ys[2];
    d.Wo = ys[3];
    d.stride = ip[0];
    d.pad = ip[1];
    d.B = ip[2];
    d.implicit = ip[3] != CONV_IM2COL;
    d.wino = ip[3] == CONV_WINOGRAD;
    d.dx_implicit = ip[3] == CONV_IMPLICIT || ip[3] == CONV_WINOGRAD;
    d.fused = d.wino ? ip[4] : 0;
    d.TH = (d.Ho + 3) / 4;
    d.TW = (d.Wo + 3) / 4;
    d.P = d.Ho * d.Wo;
    d.CKK = d.Ci * d.K * d.K;
    d.S = ip[3] == CONV_STRIDE2 ? 2 : 1;
    d.Hp = (d.H + 2 * d.pad + d.S - 1) / d.S;
    d.Wp = (d.W + 2 * d.pad + d.S - 1) / d.S;
    d.Hq = d.Ho + 2 * (d.K - 1 - d.pad);
    d.Wq = d.Wo + 2 * (d.K - 1 - d.pad);
    return d;
}

/* Winograd's 36 products through cld__gemm_batched (CLBlast, tuned per
 * device) on GPUs, where wino_gemm's one work-item per group is wrong; on
 * CPUs wino_gemm (or through the batched GEMM when a test asks for it). */
static int wino_blas(const cld_ctx *ctx) { return ctx->settings.conv_wino_blas || ctx->settings.wino_blas; }

/* Winograd workspace of a chunk of nb samples, M outputs of C inputs, in
 * floats from the start: U (36 x M x C; packed for wino_gemm, row-major on
 * the BLAS route), V (36 x C x ldv), Mo (36 x M x Tp). */
typedef struct wino_ws {
    int TWp, T, Tp, ldv, eu, ev, em;
    int ldt, evt; /* the weight gradient's V^T (36 x Tp x ldt) in V's place */
    size_t v, mo, end;
} wino_ws;

/* distance of the 36 matrices of U, V, Mo: a multiple of 4 KiB plus one
 * cache line, so the 36 streams of a transform use 36 different L1 sets */
static size_t wino_estride(size_t n) { return round_up(n, 1024) + 16; }

static wino_ws wino_layout(const conv_geom *d, int M, int C, int nb)
{
    wino_ws w;
    /* rows of tiles padded to TWp (winograd.cl: groups of 8 columns) */
    w.TWp = 1;
    while (w.TWp < d->TW && w.TWp < 8) w.TWp *= 2;
    if (d->TW > 8) w.TWp = (int)round_up((size_t)d->TW, 8);
    w.T = nb * d->TH * w.TWp;
    w.Tp = (int)round_up((size_t)w.T, NR);
    w.ldv = w.Tp % 64 ? w.Tp : w.Tp + 16;
    w.eu = (int)wino_estride(round_up((size_t)M, MR) * (size_t)C);
    w.ev = (int)wino_estride((size_t)w.ldv * (size_t)C);
    w.em = (int)wino_estride((size_t)M * (size_t)w.Tp);
    /* rows of V^T: C rounded up to 8, off multiples of 64 floats (rows that
     * far apart alias in L1, and the GEMM would pack them: blas.c) */
    w.ldt = (int)round_up((size_t)C, 8);
    if ((w.ldt & -w.ldt) >= 64) w.ldt += 16;
    w.evt = (int)wino_estride((size_t)w.Tp * (size_t)w.ldt);
    w.v = 36 * (size_t)w.eu;
    w.mo = w.v + 36 * (size_t)(w.ev > w.evt ? w.ev : w.evt);
    w.end = w.mo + 36 * (size_t)w.em;
    return w;
}

/* Workspace of each node kind, in floats, as two or three blocks.
 * winograd fwd, dx and dw: wino_layout
 * implicit fwd: A = W packed (Co x CKK), xp (B, Ci, S*S, Hp, Wp) + slack
 *          dx:  A = W flipped^T packed (Ci x Co*K*K), dy padded (B, Co, Hq, Wq) + slack
 *               (stride 2: im2col's)
 *          dw:  xp (B, Ci, S*S, Hp, Wp) + slack, dy packed (Co x B*Ho*Wp)
 * im2col   fwd: A = W packed (Co x CKK), B = im2col(x) packed (CKK x BP)
 *          dx:  A = W^T packed (CKK x Co), B = dy packed (Co x BP), col (CKK x BP)
 *          dw:  A = dy packed (Co x BP), B = im2col(x)^T packed (BP x CKK) */
static void conv_ws_layout(int which, const conv_geom *d, size_t *a_len, size_t *b_len, size_t *c_len)
{
    size_t B = (size_t)d->B, bp = B * (size_t)d->P, co = (size_t)d->Co, ckk = (size_t)d->CKK;
    size_t ci = (size_t)d->Ci, kk = (size_t)d->K * (size_t)d->K;
    size_t xp = B * ci * (size_t)(d->S * d->S) * (size_t)d->Hp * (size_t)d->Wp + CONV_SLACK(d->K);
    *c_len = 0;
    if (d->wino && which != WS_DW) { /* wino_layout, M outputs of C inputs; only U if fused */
        wino_ws l = wino_layout(d, which == WS_FWD ? d->Co : d->Ci, which == WS_FWD ? d->Ci : d->Co, d->B);
        *a_len = d->fused & (which == WS_FWD ? 1 : 2) ? l.v : l.end;
        *b_len = 0;
    } else if (d->wino) { /* wino_layout of the forward (dU in U's place) */
        *a_len = wino_layout(d, d->Co, d->Ci, d->B).end;
        *b_len = 0;
    } else if (d->implicit && which == WS_FWD) {
        *a_len = round_up(co, MR) * ckk;
        *b_len = xp;
    } else if (d->dx_implicit && which == WS_DX) {
        *a_len = round_up(ci, MR) * co * kk;
        *b_len = B * co * (size_t)d->Hq * (size_t)d->Wq + CONV_SLACK(d->K);
    } else if (d->implicit && which == WS_DW) {
        *a_len = xp;
        *b_len = round_up(co, NR) * B * (size_t)d->Ho * (size_t)d->Wp;
    } else if (which == WS_FWD) {
        *a_len = round_up(co, MR) * ckk;
        *b_len = round_up(bp, NR) * ckk;
    } else if (which == WS_DX) {
        *a_len = round_up(ckk, MR) * co;
        *b_len = round_up(bp, NR) * co;
        *c_len = ckk * bp;
    } else {
        *a_len = round_up(co, MR) * bp;
        *b_len = round_up(ckk, NR) * bp;
    }
}

/* Copy the op parameters to a node and size its workspace. */
static void conv_setup(cld_tensor *t, int which, const int *ip, const conv_geom *d)
{
    size_t a, b, c;
    memcpy(t->ip, ip, 5 * sizeof(int));
    conv_ws_layout(which, d, &a, &b, &c);
    t->ws = a + b + c;
}

/* Pack matrix S of `kind` (see conv.cl: SRC_DENSE the weight (Co, CKK);
 * SRC_BCP a chunk (nb, Co, P); SRC_IM2COL im2col of a chunk of x;
 * SRC_BCP_ROWS a chunk (nb, Co, P) over rows padded to Wp; SRC_WFLIP the
 * weight flipped and transposed) into panels of R at arena offset dst. */
static cld_status conv_pack(cld_graph *g, const cld_tensor *t, const conv_geom *d, size_t dst,
                            const cld_tensor *src, size_t so, int kind, int trans, int R, int U, int L)
{
    cl_kernel k = t->kern[K_PACK];
    int C = (kind == SRC_BCP || kind == SRC_BCP_ROWS) ? d->Co : d->Ci;
    int ld = kind == SRC_BCP_ROWS ? d->Wp : d->CKK;
    CLD_TRY(cld__kargs(k, "pack", "bibiiiiiiiiiiiiiii", t->ws_buf, (int)dst, src->buf, (int)so, kind, trans,
                       R, U, L, ld, C, d->P, d->H, d->W, d->K, d->stride, d->pad, d->Wo));
    return cld__launch1d(g, k, t, round_up((size_t)U, (size_t)R) / (size_t)R * (size_t)L);
}

/* xp (bc, S*S, hp, wp) in the arena at dst = src (bc, h, w) shifted by pad
 * (and split into its phases for stride S = 2), + slack */
static cld_status conv_pad(cld_graph *g, const cld_tensor *t, size_t dst, const cld_tensor *src, size_t so,
                           int bc, int h, int w, int pad, int S, int hp, int wp, int K)
{
    cl_kernel k = t->kern[K_PAD];
    CLD_TRY(cld__kargs(k, "pad_planes", "bibiiiiiiiii", src->buf, (int)so, t->ws_buf, (int)dst, bc, h, w, pad,
                       S, hp, wp, (int)CONV_SLACK(K)));
    return cld__launch1d(g, k, t, (size_t)bc * (size_t)hp + 1);
}

/* C (M, N) = A B (+ bias) (+ C if beta), A and B packed in the arena at
 * a_off, b_off; C element (m, j) at c_off + (j/P)*sB + m*sM + j%P. */
static cld_status conv_gemm(cld_graph *g, const cld_tensor *t, int M, int N, int K, size_t a_off,
                            size_t b_off, cl_mem c, size_t c_off, int P, int sB, int sM, int beta,
                            const cld_tensor *bias)
{
    cl_kernel k = t->kern[K_GEMM]; /* gemm.cl's, on conv.cl's panels (same 6 x 16 tile) */
    cl_mem arena = t->ws_buf;
    CLD_TRY(cld__kargs(k, "gemm_packed_ab", "iiifbiibiifbiiiiibii", M, N, K, 1.0, arena, (int)a_off, 0, arena,
                       (int)b_off, 0, beta ? 1.0 : 0.0, c, (int)c_off, sM, 0, P, sB, bias ? bias->buf : arena,
                       bias ? (int)bias->off : 0, bias != NULL));
    size_t gs[3] = {round_up((size_t)M, MR) / MR, round_up((size_t)N, NR) / NR, 1}, ls[3] = {1, 1, 1};
    return cld__launch(cld__graph_ctx(g), k, t->name, 3, gs, ls);
}

/* conv_s1 can read unpadded planes (nb, C, H, W) at offset off of buf in
 * place: a 1x1 kernel without padding, whose tiles of 16 positions run over
 * each plane and, in its last tile, into the next; past the last plane they
 * read up to 15 floats that must lie inside the buffer and outside the
 * output the kernel writes (y: ylen floats at yoff of ybuf). Planes of whole
 * tiles always qualify; others nearly always do in a graph's arena. Saves
 * the copy into padded planes. */
static int s1_in_place(int K, int pad, int H, int W, cl_mem buf, size_t off, int nb, int C, cl_mem ybuf,
                       size_t yoff, size_t ylen)
{
    if (K != 1 || pad != 0) return 0;
    if ((H * W) % NR == 0) return 1;
    size_t size = 0, end = off + (size_t)nb * (size_t)C * (size_t)H * (size_t)W, over = end + NR - 1;
    if (clGetMemObjectInfo(buf, CL_MEM_SIZE, sizeof size, &size, NULL) != CL_SUCCESS) return 0;
    if (over * sizeof(float) > size) return 0;
    return buf != ybuf || yoff >= over || yoff + ylen <= end;
}

/* y (nb, M, Ho, Wo) = stride-S conv of padded planes (nb, C, S*S, Hp, Wp) in
 * xp at offset xp_off with the packed weight at arena offset a_off (+ bias). */
static cld_status conv_s1(cld_graph *g, const cld_tensor *t, int M, int C, int K, int S, size_t a_off,
                          cl_mem xp, size_t xp_off, int Hp, int Wp, cl_mem y, size_t yo, int Ho, int Wo,
                          int nb, const cld_tensor *bias)
{
    cl_kernel k = t->kern[K_S1];
    cl_mem arena = t->ws_buf;
    CLD_TRY(cld__kargs(k, "conv_s1", "iiiibibiiibiiibii", M, C, K, S, arena, (int)a_off, xp, (int)xp_off, Hp,
                       Wp, y, (int)yo, Ho, Wo, bias ? bias->buf : arena, bias ? (int)bias->off : 0,
                       bias != NULL));
    /* row blocks of 6 outputs in dimension 0, which runs fastest: the
     * blocks of one tile of 16 outputs run one after another, so the C
     * input rows they read serve all M outputs while in cache (with the
     * blocks in dimension 1 every block streamed the whole input again:
     * 1x1 convs at 520 x 520 ran at 4-8 GFLOPS); one local size, so PoCL
     * compiles the kernel once */
    size_t gs[3] = {round_up((size_t)M, MR) / MR, round_up((size_t)Ho * Wp, NR) / NR, (size_t)nb};
    size_t ls[3] = {1, 1, 1};
    return cld__launch(cld__graph_ctx(g), k, t->name, 3, gs, ls);
}

/* V of a chunk (wino_layout l, workspace at ws) = the input transform of
 * src (nb, C, H, W) at so, padded by 1 (wino_input reads it in place). */
static cld_status wino_input(cld_graph *g, const cld_tensor *t, const conv_geom *d, const wino_ws *l, int C,
                             int nb, const cld_tensor *src, size_t so, size_t ws)
{
    cl_kernel k = t->kern[K_WINO_INPUT];
    CLD_TRY(cld__kargs(k, "wino_input", "bibiiiiiiiiii", src->buf, (int)so, t->ws_buf, (int)(ws + l->v), C,
                       nb, d->Ho, d->Wo, d->TH, l->TWp, l->Tp, l->ldv, l->ev));
    return cld__launch1d(g, k, t, (size_t)C * (size_t)(l->Tp / 8));
}

/* Winograd F(4x4, 3x3) (winograd.cl) of a chunk: y (nb, M, H, W) at yo =
 * conv(src (nb, C, H, W) at so, pad 1) (+ bias); U at ws (transformed by the
 * caller), the rest of the workspace after it (wino_layout). */
static cld_status wino_chunk(cld_graph *g, const cld_tensor *t, const conv_geom *d, int M, int C, size_t ws,
                             const cld_tensor *src, size_t so, cl_mem y, size_t yo, int nb,
                             const cld_tensor *bias)
{
    cld_ctx *ctx = cld__graph_ctx(g);
    cl_mem arena = t->ws_buf;
    wino_ws l = wino_layout(d, M, C, nb);
    int v_off = (int)(ws + l.v), m_off = (int)(ws + l.mo);
    CLD_TRY(wino_input(g, t, d, &l, C, nb, src, so, ws));
    cl_kernel k;
    if (wino_blas(ctx)) { // Mo[e] = U[e] V[e], U row-major (wino_weight)
        CLD_TRY(cld__gemm_batched(ctx, 0, 0, (size_t)M, (size_t)l.Tp, (size_t)C, 1.0f, arena, ws, (size_t)C,
                                  (size_t)l.eu, arena, (size_t)v_off, (size_t)l.ldv, (size_t)l.ev, 0.0f,
                                  arena, (size_t)m_off, (size_t)l.Tp, (size_t)l.em, 36));
    } else {
        k = t->kern[K_WINO_GEMM];
        CLD_TRY(cld__kargs(k, "wino_gemm", "iiiiiiibibibii", M, C, l.Tp, l.ldv, l.eu, l.ev, l.em, arena,
                           (int)ws, arena, v_off, arena, m_off, (int)WINO_NT));
        size_t gs[3] = {round_up((size_t)M, MR) / MR, round_up((size_t)l.Tp / NR, WINO_NT) / WINO_NT, 36};
        size_t ls[3] = {1, 1, 1};
        CLD_TRY(cld__launch(ctx, k, t->name, 3, gs, ls));
    }
    k = t->kern[K_WINO_OUTPUT];
    CLD_TRY(cld__kargs(k, "wino_output", "bibiiiiiiiiiibii", arena, m_off, y, (int)yo, M, nb, d->Ho, d->Wo,
                       d->TH, d->TW, l.TWp, l.Tp, l.em, bias ? bias->buf : arena, bias ? (int)bias->off : 0,
                       bias != NULL));
    return cld__launch1d(g, k, t, (size_t)M * (size_t)(l.Tp / 8));
}

/* wino_fused (winograd.cl) takes the whole batch in one launch on CPUs: V
 * of 16 tiles, 72 * C float8, in local memory (PoCL gives it a core's
 * cache), and all of U read once per 16 tiles. Device time against the
 * chunks' (bench/NOTES.md, "Eleventh session"): 0.45-0.7x at 32 -> 32 @28,
 * 0.6-0.8x at 64 -> 64 @14 and @7, equal at 128 -> 64 @14 and 128 -> 128
 * @32 (U 2.4 MB), 1.1x with U of 9.4 MB (256 -> 256 @16): chosen while U
 * is at most 4 MB. M outputs of C inputs. */
static size_t wino_fused_local(int C) { return (size_t)72 * 32 * (size_t)C; } /* vs, bytes */
static int wino_fused_ok(const cld_ctx *ctx, int M, int C)
{
    const cld__settings *st = &ctx->settings;
    if (wino_blas(ctx) || !st->wino_fused || st->conv_wino_fused_mode == 1) return 0; /* GPUs: wino_blas */
    if (wino_fused_local(C) > ctx->info.local_mem_bytes / 2) return 0;
    return st->conv_wino_fused_mode == 2 || 36 * 4 * (size_t)M * (size_t)C <= 4 * 1024 * 1024;
}

/* y (N, M, H, W) at yo = conv(src (N, C, H, W) at so, pad 1) (+ bias) with
 * U at ws, in one wino_fused launch */
static cld_status wino_fused(cld_graph *g, const cld_tensor *t, const conv_geom *d, int M, int C, size_t ws,
                             const cld_tensor *src, size_t so, cl_mem y, size_t yo, const cld_tensor *bias)
{
    wino_ws l = wino_layout(d, M, C, d->N);
    cl_kernel k = t->kern[K_WINO_FUSED];
    CLD_TRY(cld__kargs(k, "wino_fused", "bibiibiiiiiiiiiibiil", src->buf, (int)so, t->ws_buf, (int)ws, l.eu,
                       y, (int)yo, M, C, d->N, d->Ho, d->Wo, d->TH, d->TW, l.TWp, l.Tp,
                       bias ? bias->buf : t->ws_buf, bias ? (int)bias->off : 0, bias != NULL,
                       wino_fused_local(C)));
    return cld__launch1d(g, k, t, (size_t)(l.Tp / 16));
}

/* U (36, M, C) at ws = the Winograd transform of w; flip: of the dx kernel.
 * Packed for wino_gemm, or row-major for cld__gemm_batched (wino_blas). */
static cld_status wino_weight(cld_graph *g, const cld_tensor *t, const conv_geom *d, int M, int C,
                              const cld_tensor *w, int flip, size_t ws)
{
    cl_kernel k = t->kern[K_WINO_WEIGHT];
    int packed = !wino_blas(cld__graph_ctx(g));
    wino_ws l = wino_layout(d, M, C, 1);
    CLD_TRY(cld__kargs(k, "wino_weight", "bibiiiiii", w->buf, (int)w->off, t->ws_buf, (int)ws, M, C, flip,
                       l.eu, packed));
    return cld__launch1d(g, k, t, (packed ? round_up((size_t)M, MR) : (size_t)M) * (size_t)C);
}

static cld_status conv_forward(cld_graph *g, cld_tensor *t)
{
    const cld_tensor *x = t->src[0], *w = t->src[1], *b = t->nsrc > 2 ? t->src[2] : NULL;
    conv_geom d = geom_of(x->shape, w->shape, t->shape, t->ip);
    size_t a_len, b_len, c_len;
    conv_ws_layout(WS_FWD, &d, &a_len, &b_len, &c_len);
    size_t a_off = t->ws_off, b_off = a_off + a_len;
    if (d.wino) {
        CLD_TRY(wino_weight(g, t, &d, d.Co, d.Ci, w, 0, a_off));
        if (d.fused & 1) return wino_fused(g, t, &d, d.Co, d.Ci, a_off, x, x->off, t->buf, t->off, b);
        for (int n0 = 0; n0 < d.N; n0 += d.B) {
            int nb = d.N - n0 < d.B ? d.N - n0 : d.B;
            CLD_TRY(wino_chunk(g, t, &d, d.Co, d.Ci, a_off, x, x->off + (size_t)n0 * d.Ci * d.H * d.W, t->buf,
                               t->off + (size_t)n0 * d.Co * d.P, nb, b));
        }
        return CLD_OK;
    }
    // A (Co, CKK) = W
    CLD_TRY(conv_pack(g, t, &d, a_off, w, w->off, SRC_DENSE, 0, MR, d.Co, d.CKK));
    for (int n0 = 0; n0 < d.N; n0 += d.B) {
        int nb = d.N - n0 < d.B ? d.N - n0 : d.B;
        size_t xo = x->off + (size_t)n0 * d.Ci * d.H * d.W;
        size_t yo = t->off + (size_t)n0 * d.Co * d.P;
        if (d.implicit) {
            // xp (nb, Ci, S*S, Hp, Wp) = x chunk padded (stride 2: in phases); y chunk = conv(xp, W) + b
            if (s1_in_place(d.K, d.pad, d.H, d.W, x->buf, xo, nb, d.Ci, t->buf, yo,
                            (size_t)nb * d.Co * d.P)) {
                CLD_TRY(conv_s1(g, t, d.Co, d.Ci, d.K, 1, a_off, x->buf, xo, d.H, d.W, t->buf, yo, d.Ho, d.Wo,
                                nb, b));
                continue;
            }
            CLD_TRY(conv_pad(g, t, b_off, x, xo, nb * d.Ci, d.H, d.W, d.pad, d.S, d.Hp, d.Wp, d.K));
            CLD_TRY(conv_s1(g, t, d.Co, d.Ci, d.K, d.S, a_off, t->ws_buf, b_off, d.Hp, d.Wp, t->buf, yo, d.Ho,
                            d.Wo, nb, b));
            continue;
        }
        // B (CKK, nb*P) = im2col(x chunk); y chunk (nb, Co, P) = A B + b
        CLD_TRY(conv_pack(g, t, &d, b_off, x, xo, SRC_IM2COL, 1, NR, nb * d.P, d.CKK));
        CLD_TRY(conv_gemm(g, t, d.Co, nb * d.P, d.CKK, a_off, b_off, t->buf, yo, d.P, d.Co * d.P, d.P, 0, b));
    }
    return CLD_OK;
}

/* dx (N,Ci,H,W) from src dy (N,Co,Ho,Wo), w (Co,Ci,K,K) */
static cld_status conv_dx_forward(cld_graph *g, cld_tensor *t)
{
    const cld_tensor *dy = t->src[0], *w = t->src[1];
    conv_geom d = geom_of(t->shape, w->shape, dy->shape, t->ip);
    size_t a_len, b_len, c_len;
    conv_ws_layout(WS_DX, &d, &a_len, &b_len, &c_len);
    size_t a_off = t->ws_off, b_off = a_off + a_len, col_off = b_off + b_len;
    if (d.wino) { // dx = conv(dy, W flipped and transposed, pad 1)
        CLD_TRY(wino_weight(g, t, &d, d.Ci, d.Co, w, 1, a_off));
        if (d.fused & 2) return wino_fused(g, t, &d, d.Ci, d.Co, a_off, dy, dy->off, t->buf, t->off, NULL);
        for (int n0 = 0; n0 < d.N; n0 += d.B) {
            int nb = d.N - n0 < d.B ? d.N - n0 : d.B;
            CLD_TRY(wino_chunk(g, t, &d, d.Ci, d.Co, a_off, dy, dy->off + (size_t)n0 * d.Co * d.P, t->buf,
                               t->off + (size_t)n0 * d.Ci * d.H * d.W, nb, NULL));
        }
        return CLD_OK;
    }
    cl_kernel c2i = t->kern[K_COL2IM];
    if (d.dx_implicit) // A (Ci, Co*K*K) = W flipped and transposed
        CLD_TRY(conv_pack(g, t, &d, a_off, w, w->off, SRC_WFLIP, 0, MR, d.Ci, d.Co * d.K * d.K));
    else // A (CKK, Co) = W^T
        CLD_TRY(conv_pack(g, t, &d, a_off, w, w->off, SRC_DENSE, 1, MR, d.CKK, d.Co));
    for (int n0 = 0; n0 < d.N; n0 += d.B) {
        int nb = d.N - n0 < d.B ? d.N - n0 : d.B, np = nb * d.P;
        size_t yo = dy->off + (size_t)n0 * d.Co * d.P;
        size_t xo = t->off + (size_t)n0 * d.Ci * d.H * d.W;
        if (d.dx_implicit) {
            // dx chunk = conv(dy chunk padded by K-1-pad, W flipped^T)
            int q = d.K - 1 - d.pad;
            if (s1_in_place(d.K, q, d.Ho, d.Wo, dy->buf, yo, nb, d.Co, t->buf, xo,
                            (size_t)nb * d.Ci * d.H * d.W)) {
                CLD_TRY(conv_s1(g, t, d.Ci, d.Co, d.K, 1, a_off, dy->buf, yo, d.Ho, d.Wo, t->buf, xo, d.H,
                                d.W, nb, NULL));
                continue;
            }
            CLD_TRY(conv_pad(g, t, b_off, dy, yo, nb * d.Co, d.Ho, d.Wo, q, 1, d.Hq, d.Wq, d.K));
            CLD_TRY(conv_s1(g, t, d.Ci, d.Co, d.K, 1, a_off, t->ws_buf, b_off, d.Hq, d.Wq, t->buf, xo, d.H,
                            d.W, nb, NULL));
            continue;
        }
        // B (Co, nb*P) = dy chunk; col (CKK, nb*P) = A B; dx chunk = col2im(col)
        CLD_TRY(conv_pack(g, t, &d, b_off, dy, yo, SRC_BCP, 1, NR, np, d.Co));
        CLD_TRY(conv_gemm(g, t, d.CKK, np, d.Co, a_off, b_off, t->ws_buf, col_off, np, 0, np, 0, NULL));
        CLD_TRY(cld__kargs(c2i, "col2im", "bibiiiiiiiiii", t->ws_buf, (int)col_off, t->buf, (int)xo, d.Ci,
                           d.H, d.W, d.K, d.stride, d.pad, d.Ho, d.Wo, nb));
        CLD_TRY(cld__launch1d(g, c2i, t, (size_t)nb * d.Ci * d.H));
    }
    return CLD_OK;
}
static const cld_op_def op_conv_dx = {"conv2d_dx",  conv_dx_forward,  NULL, 0, 0,
                                      conv_kernels, conv_kernels_used};

/* dW (Co,Ci,K,K) from src dy (N,Co,Ho,Wo), x (N,Ci,H,W); summed over the batch */
static cld_status conv_dw_forward(cld_graph *g, cld_tensor *t)
{
    const cld_tensor *dy = t->src[0], *x = t->src[1];
    conv_geom d = geom_of(x->shape, t->shape, dy->shape, t->ip);
    size_t a_len, b_len, c_len;
    conv_ws_layout(WS_DW, &d, &a_len, &b_len, &c_len);
    size_t a_off = t->ws_off, b_off = a_off + a_len;
    cld_ctx *ctx = cld__graph_ctx(g);
    if (d.wino) { // dU (+)= dMo V^T per chunk (V^T row-major: NN products), dW = G^T dU G (winograd.cl)
        cl_mem arena = t->ws_buf;
        cl_kernel k;
        int eu = wino_layout(&d, d.Co, d.Ci, 1).eu; /* dU's stride: independent of nb */
        for (int n0 = 0; n0 < d.N; n0 += d.B) {
            int nb = d.N - n0 < d.B ? d.N - n0 : d.B;
            wino_ws l = wino_layout(&d, d.Co, d.Ci, nb);
            size_t yo = dy->off + (size_t)n0 * d.Co * d.P;
            size_t xo = x->off + (size_t)n0 * d.Ci * d.H * d.W;
            int v_off = (int)(a_off + l.v), m_off = (int)(a_off + l.mo);
            k = t->kern[K_WINO_INPUT_T]; // V^T, row-major: the products' B as it is
            CLD_TRY(cld__kargs(k, "wino_input_t", "bibiiiiiiiiii", x->buf, (int)xo, arena, v_off, d.Ci, nb,
                               d.H, d.W, d.TH, l.TWp, l.Tp, l.ldt, l.evt));
            CLD_TRY(cld__launch1d(g, k, t, (size_t)l.Tp * (size_t)((d.Ci + 7) / 8)));
            k = t->kern[K_WINO_DY]; // dMo = A dY A^T, dy read in place
            CLD_TRY(cld__kargs(k, "wino_dy", "bibiiiiiiiii", dy->buf, (int)yo, arena, m_off, d.Co, nb, d.Ho,
                               d.Wo, d.TH, l.TWp, l.Tp, l.em));
            CLD_TRY(cld__launch1d(g, k, t, (size_t)d.Co * (size_t)(l.Tp / 8)));
            CLD_TRY(cld__gemm_batched(ctx, 0, 0, (size_t)d.Co, (size_t)d.Ci, (size_t)l.Tp, 1.0f, arena,
                                      (size_t)m_off, (size_t)l.Tp, (size_t)l.em, arena, (size_t)v_off,
                                      (size_t)l.ldt, (size_t)l.evt, n0 > 0 ? 1.0f : 0.0f, arena, a_off,
                                      (size_t)d.Ci, (size_t)eu, 36));
        }
        k = t->kern[K_WINO_WGRAD];
        CLD_TRY(
            cld__kargs(k, "wino_wgrad", "biibii", arena, (int)a_off, eu, t->buf, (int)t->off, d.Co * d.Ci));
        return cld__launch1d(g, k, t, (size_t)d.Co * (size_t)d.Ci);
    }
    cl_kernel kdw = t->kern[K_DW_S1];
    for (int n0 = 0; n0 < d.N; n0 += d.B) {
        int nb = d.N - n0 < d.B ? d.N - n0 : d.B, np = nb * d.P;
        size_t yo = dy->off + (size_t)n0 * d.Co * d.P;
        size_t xo = x->off + (size_t)n0 * d.Ci * d.H * d.W;
        if (d.implicit) {
            // xp = x chunk padded (a 1x1 kernel without padding reads x in
            // place: its positions end at the plane's end); D (nb*Ho*Wp, Co)
            // = dy chunk over padded rows
            int J = nb * d.Ho * d.Wp;
            cl_mem arena = t->ws_buf, xp = arena;
            size_t xp_off = a_off;
            if (d.K == 1 && d.pad == 0) {
                xp = x->buf;
                xp_off = xo;
            } else {
                CLD_TRY(conv_pad(g, t, a_off, x, xo, nb * d.Ci, d.H, d.W, d.pad, d.S, d.Hp, d.Wp, d.K));
            }
            CLD_TRY(conv_pack(g, t, &d, b_off, dy, yo, SRC_BCP_ROWS, 0, NR, d.Co, J));
            // dW (Co, CKK) (+)= (X D)^T
            CLD_TRY(cld__kargs(kdw, "conv_dw_s1", "iiiibiiiiibibii", d.Co, d.Ci, d.K, d.S, xp, (int)xp_off,
                               d.Hp, d.Wp, d.Ho, nb, arena, (int)b_off, t->buf, (int)t->off, n0 > 0));
            size_t gs[2] = {round_up((size_t)d.CKK, MR) / MR, round_up((size_t)d.Co, NR) / NR};
            size_t ls[2] = {1, 1};
            CLD_TRY(cld__launch(ctx, kdw, t->name, 2, gs, ls));
            continue;
        }
        // A (Co, nb*P) = dy chunk; B (nb*P, CKK) = im2col(x chunk)^T; dW (+)= A B
        CLD_TRY(conv_pack(g, t, &d, a_off, dy, yo, SRC_BCP, 0, MR, d.Co, np));
        CLD_TRY(conv_pack(g, t, &d, b_off, x, xo, SRC_IM2COL, 0, NR, d.CKK, np));
        CLD_TRY(
            conv_gemm(g, t, d.Co, d.CKK, np, a_off, b_off, t->buf, t->off, d.CKK, 0, d.CKK, n0 > 0, NULL));
    }
    return CLD_OK;
}
static const cld_op_def op_conv_dw = {"conv2d_dw",  conv_dw_forward,  NULL, 0, 0,
                                      conv_kernels, conv_kernels_used};

static cld_status conv_backward(cld_graph *g, cld_tensor *t)
{
    cld_tensor *x = t->src[0], *w = t->src[1], *b = t->nsrc > 2 ? t->src[2] : NULL;
    conv_geom d = geom_of(x->shape, w->shape, t->shape, t->ip);
    if (x->flags & CLD_TF_NEEDS_GRAD) {
        cld_tensor *src[2] = {t->grad, w}, *dx;
        CLD_TRY(cld__node(g, &op_conv_dx, x->ndim, x->shape, 2, src, &dx));
        conv_setup(dx, WS_DX, t->ip, &d);
        CLD_TRY(cld__grad_add(g, x, dx));
    }
    if (w->flags & CLD_TF_NEEDS_GRAD) {
        cld_tensor *src[2] = {t->grad, x}, *dw;
        CLD_TRY(cld__node(g, &op_conv_dw, w->ndim, w->shape, 2, src, &dw));
        conv_setup(dw, WS_DW, t->ip, &d);
        CLD_TRY(cld__grad_add(g, w, dw));
    }
    return bias_grad(g, t, b);
}
static const cld_op_def op_conv = {"conv2d", conv_forward, conv_backward,    0,
                                   0,        conv_kernels, conv_kernels_used};

cld_status cld_op_conv2d(cld_graph *g, cld_tensor *x, cld_tensor *w, cld_tensor *b, int stride, int pad,
                         cld_tensor **y)
{
    if (!g || !x || !w || !y) return cld__fail(CLD_ERR_INVALID_ARG, "conv2d: NULL argument");
    if (x->ndim != 4) return cld__shape_fail("conv2d", "input must be (N, Ci, H, W)", x, w);
    if (w->ndim != 4 || w->shape[2] != w->shape[3])
        return cld__shape_fail("conv2d", "weight must be (Co, Ci, K, K)", x, w);
    if (w->shape[1] != x->shape[1])
        return cld__shape_fail("conv2d", "weight input channels differ from input channels", x, w);
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[0]))
        return cld__shape_fail("conv2d", "bias must be (Co)", w, b);
    if (stride < 1 || pad < 0)
        return cld__fail(CLD_ERR_INVALID_ARG, "conv2d: stride %d must be >= 1 and pad %d >= 0", stride, pad);
    int K = w->shape[2];
    if (x->shape[2] + 2 * pad < K || x->shape[3] + 2 * pad < K)
        return cld__shape_fail("conv2d", "kernel larger than the padded input", x, w);
    int Ho = (x->shape[2] + 2 * pad - K) / stride + 1;
    int Wo = (x->shape[3] + 2 * pad - K) / stride + 1;
    int shape[4] = {x->shape[0], w->shape[0], Ho, Wo};
    cld_tensor *src[3] = {x, w, b};
    CLD_TRY(cld__node(g, &op_conv, 4, shape, b ? 3 : 2, src, y));
    /* samples per chunk: as many as fit the workspace limit, at least one */
    const cld__settings *st = &cld__graph_ctx(g)->settings;
    int path = stride == 1 && pad <= K - 1 && !st->conv_force_im2col ? CONV_IMPLICIT : CONV_IM2COL;
    if (stride == 2 && K == 3 && pad <= K - 1 && !st->conv_force_im2col) path = CONV_STRIDE2;
    if (conv_use_winograd(st, x->shape[1], w->shape[0], K, stride, pad)) path = CONV_WINOGRAD;
    const cld_ctx *ctx = cld__graph_ctx(g);
    int fused = path != CONV_WINOGRAD ? 0
                                      : wino_fused_ok(ctx, w->shape[0], x->shape[1]) |
                                            wino_fused_ok(ctx, x->shape[1], w->shape[0]) << 1;
    int ip[5] = {stride, pad, 1, path, fused};
    /* workspace = fixed + B * per_sample (the fixed part: packed weights) */
    size_t B = CONV_WS_LIMIT, per_max = 0;
    for (int which = WS_FWD; which <= WS_DW; which++) {
        size_t ws[2];
        for (int nb = 1; nb <= 2; nb++) {
            ip[2] = nb;
            conv_geom dn = geom_of(x->shape, w->shape, shape, ip);
            size_t a, bl, c;
            conv_ws_layout(which, &dn, &a, &bl, &c);
            ws[nb - 1] = a + bl + c;
        }
        size_t per = ws[1] > ws[0] ? ws[1] - ws[0] : 1, fixed = ws[0] - per; /* ws[1] <= 2 ws[0] */
        size_t fit = fixed + per <= CONV_WS_LIMIT ? (CONV_WS_LIMIT - fixed) / per : 1;
        if (fit < B) B = fit;
        if (per > per_max) per_max = per;
    }
    /* Winograd on CPUs: chunks whose transforms stay in the cache between
     * the input transform, the products and the output transform (V and Mo
     * are 36/16 the size of the planes they come from) */
    if (path == CONV_WINOGRAD && !st->gpu_path && st->cache_bytes) {
        size_t fit = st->cache_bytes / CONV_WINO_CACHE_DIV / sizeof(float) / per_max;
        if (fit < B) B = fit;
    }
    if (B < 1) B = 1;
    if (B > (size_t)x->shape[0]) B = (size_t)x->shape[0];
    if (st->conv_max_chunk > 0 && B > (size_t)st->conv_max_chunk) B = (size_t)st->conv_max_chunk;
    ip[2] = (int)B;
    conv_geom d = geom_of(x->shape, w->shape, shape, ip);
    conv_setup(*y, WS_FWD, ip, &d);
    return CLD_OK;
}

/* ------------------------------------------------------------- linear
 * x (N,K) (flattened), w (M,K), b (M): y (N,M) = x w^T + b */

static cld_status linear_forward(cld_graph *g, cld_tensor *t)
{
    cld_ctx *ctx = cld__graph_ctx(g);
    const cld_tensor *x = t->src[0], *w = t->src[1], *b = t->nsrc > 2 ? t->src[2] : NULL;
    size_t N = (size_t)t->shape[0], M = (size_t)t->shape[1], K = x->n / N;
    if (b) {
        cl_kernel k = t->kern[0];
        CLD_TRY(cld__kargs(k, "bias_fill", "bibiiii", t->buf, (int)t->off, b->buf, (int)b->off, (int)t->n, 1,
                           (int)M));
        CLD_TRY(cld__launch1d(g, k, t, t->n));
    }
    return cld__gemm(ctx, 0, 1, N, M, K, 1.0f, x->buf, x->off, K, w->buf, w->off, K, b ? 1.0f : 0.0f, t->buf,
                     t->off, M);
}

/* The gradients, one GEMM each (ip[0] says which):
 *   linear_dx: dx (N,K) = dy (N,M) w (M,K)      src dy, w
 *   linear_dw: dw (M,K) = dy^T (M,N) x (N,K)    src dy, x */
static cld_status linear_grad_forward(cld_graph *g, cld_tensor *t)
{
    const cld_tensor *dy = t->src[0], *o = t->src[1];
    int is_dw = t->ip[0];
    size_t N = (size_t)dy->shape[0], M = (size_t)dy->shape[1];
    size_t K = (is_dw ? o->n : t->n) / N;
    return cld__gemm(cld__graph_ctx(g), is_dw, 0, is_dw ? M : N, K, is_dw ? N : M, 1.0f, dy->buf, dy->off, M,
                     o->buf, o->off, K, 0.0f, t->buf, t->off, K);
}
static const cld_op_def op_linear_dx = {"linear_dx", linear_grad_forward, NULL, 0, 0, NULL, NULL};
static const cld_op_def op_linear_dw = {"linear_dw", linear_grad_forward, NULL, 0, 0, NULL, NULL};

static cld_status linear_backward(cld_graph *g, cld_tensor *t)
{
    cld_tensor *x = t->src[0], *w = t->src[1], *b = t->nsrc > 2 ? t->src[2] : NULL;
    if (x->flags & CLD_TF_NEEDS_GRAD) {
        cld_tensor *src[2] = {t->grad, w}, *dx;
        int shape[2] = {x->shape[0], (int)(x->n / (size_t)x->shape[0])};
        CLD_TRY(cld__node(g, &op_linear_dx, 2, shape, 2, src, &dx));
        CLD_TRY(cld__grad_add(g, x, dx)); /* reshapes to x's shape */
    }
    if (w->flags & CLD_TF_NEEDS_GRAD) {
        cld_tensor *src[2] = {t->grad, x}, *dw;
        CLD_TRY(cld__node(g, &op_linear_dw, 2, w->shape, 2, src, &dw));
        dw->ip[0] = 1;
        CLD_TRY(cld__grad_add(g, w, dw));
    }
    return bias_grad(g, t, b);
}
/* bias_fill only with a bias: a linear layer without one needs no conv.cl */
static unsigned linear_kernels_used(const cld_graph *g, const cld_tensor *t)
{
    (void)g;
    return t->nsrc > 2 ? 1u : 0u;
}
static const cld_op_def op_linear = {
    "linear", linear_forward, linear_backward, 0, 0, CLD_KERNELS({"conv", "bias_fill"}), linear_kernels_used};

cld_status cld_op_linear(cld_graph *g, cld_tensor *x, cld_tensor *w, cld_tensor *b, cld_tensor **y)
{
    if (!g || !x || !w || !y) return cld__fail(CLD_ERR_INVALID_ARG, "linear: NULL argument");
    size_t K = x->n / (size_t)x->shape[0];
    if (w->ndim != 2 || (size_t)w->shape[1] != K)
        return cld__shape_fail("linear", "weight must be (M, K) with K = input features", x, w);
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[0]))
        return cld__shape_fail("linear", "bias must be (M)", w, b);
    int shape[2] = {x->shape[0], w->shape[0]};
    cld_tensor *src[3] = {x, w, b};
    return cld__node(g, &op_linear, 2, shape, b ? 3 : 2, src, y);
}
