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
