/* AdamW (Loshchilov & Hutter), as torch.optim.AdamW: decoupled weight decay
 * then a bias-corrected Adam step. One work-item per float of a contiguous
 * range [off, off + n) of the parameter store; p, g, m, v share offsets.
 * decay = lr * weight_decay for matrices and kernels, 0 for biases and norms.
 * bc1 = 1 - beta1^step, bc2_sqrt = sqrt(1 - beta2^step). */
__kernel void adamw(__global float *p, __global const float *g, __global float *m, __global float *v,
                    int off, int n, float lr, float beta1, float beta2, float eps, float decay,
                    float bc1, float bc2_sqrt)
{
    int i = get_global_id(0);
    if (i >= n) return;
    i += off;
    float gi = g[i];
    float mi = beta1 * m[i] + (1.0f - beta1) * gi;
    float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float pi = p[i] * (1.0f - decay);
    p[i] = pi - lr * (mi / bc1) / (sqrt(vi) / bc2_sqrt + eps);
}

/* EMA of the weights: e = decay e + (1 - decay) p over [0, n). */
__kernel void ema_update(__global float *e, __global const float *p, int n, float decay)
{
    int i = get_global_id(0);
    if (i >= n) return;
    e[i] = decay * e[i] + (1.0f - decay) * p[i];
}

/* x *= s over [0, n) (gradient clipping). */
__kernel void scale_inplace(__global float *x, int n, float s)
{
    int i = get_global_id(0);
    if (i >= n) return;
    x[i] *= s;
}

/* Partial sums of squares: work-group g writes sum_{i in its items} x[i]^2
 * to out[g]; items are strided over the whole range. NaN and Inf propagate.
 * Local size 64 (a power of two). */
__kernel void sqnorm_partial(__global const float *x, int n, __global float *out, __local float *acc)
{
    const int lid = get_local_id(0), ls = get_local_size(0);
    float s = 0.0f;
    for (int i = get_global_id(0); i < n; i += get_global_size(0)) s += x[i] * x[i];
    acc[lid] = s;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int h = ls / 2; h > 0; h /= 2) {
        if (lid < h) acc[lid] += acc[lid + h];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) out[get_group_id(0)] = acc[0];
}
