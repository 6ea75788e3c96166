/* The graph executor: parameters, tensors, ops with forward and backward,
 * reverse-mode autodiff and memory planning. Included by cldiffusion.h.
 * Thread safety: a graph and a parameter store belong to their context's
 * thread (one context per thread: cldiffusion.h).
 *
 * Life cycle:
 *   cld_params_create            one store per model (values, grads, AdamW m, v
 *                                each in ONE device allocation, carved in views)
 *   cld_graph_create             one graph per (model, batch shape)
 *   cld_graph_input / cld_op_*   build the forward graph (shapes checked here)
 *   cld_graph_set_output         pin tensors the caller reads
 *   cld_graph_backward           optional: gradient graph of a scalar loss
 *   cld_graph_plan               memory plan; allocates parameters on first use
 *   cld_tensor_write, cld_graph_run, cld_tensor_read   as often as needed
 *
 * Gradient rule: parameter gradients ACCUMULATE (+=) into the store's grads
 * on every run; call cld_params_zero_grad between steps. Activation gradients
 * are plain temporaries.
 */
#ifndef CLDIFFUSION_GRAPH_H
#define CLDIFFUSION_GRAPH_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cld_params cld_params;
typedef struct cld_graph cld_graph;
typedef struct cld_tensor cld_tensor;

#define CLD_MAX_DIMS 4

/* ---------------------------------------------------------------- params */
typedef enum cld_init {
    CLD_INIT_ZERO = 0,
    CLD_INIT_ONE = 1,
    CLD_INIT_UNIFORM = 2, /* U(-scale, scale) */
    CLD_INIT_NORMAL = 3,  /* N(0, scale^2)    */
} cld_init;

cld_status cld_params_create(cld_ctx *ctx, cld_params **out);
cld_status cld_params_free(cld_params *p);
/* Seed for initialisation (used when the store is allocated). */
cld_status cld_params_set_seed(cld_params *p, uint64_t seed);
/* Declare a parameter (normally done by cld_graph_param). Re-declaring an
 * existing name checks the shape. */
cld_status cld_params_declare(cld_params *p, const char *name, int ndim, const int *shape, cld_init init,
                              float scale, int *index);
/* Allocate device memory and initialise all declared parameters. Idempotent. */
cld_status cld_params_alloc(cld_params *p);
cld_status cld_params_count(const cld_params *p, int *n_tensors, size_t *n_scalars);
cld_status cld_params_find(const cld_params *p, const char *name, int *index);
/* name, shape and offset (in floats) within the store's buffer of parameter
 * `index` (within its chunk when the store is split: cld_params_buffers). */
cld_status cld_params_info(const cld_params *p, int index, const char **name, int *ndim,
                           int shape[CLD_MAX_DIMS], size_t *offset);
/* Host copies of one parameter's values or gradient (`n` floats). */
cld_status cld_params_read(cld_params *p, int index, float *dst);
cld_status cld_params_write(cld_params *p, int index, const float *src);
cld_status cld_params_read_grad(cld_params *p, int index, float *dst);
cld_status cld_params_zero_grad(cld_params *p);
/* Device buffers: values, grads (offsets from cld_params_info). A store
 * larger than one allocation may hold (CL_DEVICE_MAX_MEM_ALLOC_SIZE, or
 * CLD_MAX_ALLOC) is split into several buffers: then CLD_ERR_STATE.
 * Gradients and AdamW moments exist only in a store that is trained: asking
 * for grads (or a training graph, a gradient or optimizer call) allocates
 * them; a store only sampled from holds its values alone. */
cld_status cld_params_buffers(cld_params *p, cl_mem *values, cl_mem *grads);
/* The store in chunks (any size): n_chunks buffers of each kind; chunk k
 * holds floats [k * chunk_floats, k * chunk_floats + its length) of the
 * store's flat layout of total_floats, where parameter i starts at
 * cld_params_flat_offset (no parameter crosses a chunk). */
cld_status cld_params_layout(const cld_params *p, int *n_chunks, size_t *chunk_floats, size_t *total_floats);
/* Chunk k's value and gradient buffers (either may be NULL; asking for
 * grads allocates them, as cld_params_buffers) and its length in floats. */
cld_status cld_params_chunk_buffers(cld_params *p, int k, cl_mem *values, cl_mem *grads, size_t *floats);
/* Where parameter `index` starts in the flat layout (floats). */
cld_status cld_params_flat_offset(const cld_params *p, int index, size_t *offset);
/* One AdamW step over every parameter (decoupled weight decay on tensors
 * with 2+ dims). `step` counts from 1. */
cld_status cld_params_adamw(cld_params *p, float lr, float beta1, float beta2, float eps, float weight_decay,
                            int step);
/* safetensors I/O. metadata_json: a JSON object of string values stored as
 * "__metadata__" (may be NULL). Loading matches tensors by name and shape;
 * F32, F16 and BF16 are accepted. *metadata_json_out (malloc'd, may be NULL
 * if absent) must be freed by the caller with free(). Saving writes a
 * temporary file and renames it. */
cld_status cld_params_save(cld_params *p, const char *path, const char *metadata_json);
cld_status cld_params_load(cld_params *p, const char *path, char **metadata_json_out);

/* ----------------------------------------------------------------- graph */
cld_status cld_graph_create(cld_ctx *ctx, cld_params *params, cld_graph **out);
cld_status cld_graph_free(cld_graph *g);
/* An input tensor, written by the caller before each run. If requires_grad,
 * its gradient is computed by cld_graph_backward (see cld_tensor_grad). */
cld_status cld_graph_input(cld_graph *g, const char *name, int ndim, const int *shape, int requires_grad,
                           cld_tensor **out);
/* A parameter view (declared in the params store on first use). */
cld_status cld_graph_param(cld_graph *g, const char *name, int ndim, const int *shape, cld_init init,
                           float scale, cld_tensor **out);
/* Pin a tensor so its buffer survives the run and can be read. */
cld_status cld_graph_set_output(cld_graph *g, cld_tensor *t);
/* Build the gradient graph of scalar `loss` (shape (1)). Parameter grads
 * accumulate into the store; inputs with requires_grad get a pinned grad. */
cld_status cld_graph_backward(cld_graph *g, cld_tensor *loss);
/* Seed for dropout and other random ops; change it between runs. */
cld_status cld_graph_set_seed(cld_graph *g, uint64_t seed);
/* Debug: after a tensor's last use, fill its released bytes with NaN
 * (also enabled by CLD_POISON=1). Must be set before cld_graph_plan. */
cld_status cld_graph_set_poison(cld_graph *g, int on);

typedef struct cld_plan_stats {
    size_t peak_bytes;   /* planned arena size (activations + workspaces) */
    size_t sum_bytes;    /* sum of all planned tensors and workspaces     */
    size_t pinned_bytes; /* inputs, outputs and input gradients           */
    size_t param_bytes;  /* parameter values                              */
    int n_nodes;
    int n_inplace;        /* ops that ran in place on their input          */
    int n_arena_chunks;   /* device buffers the arena is split into: each at most the
                           device's max allocation (or CLD_MAX_ALLOC) */
    size_t largest_bytes; /* the largest single tensor or workspace: what one chunk must hold */
} cld_plan_stats;
cld_status cld_graph_plan(cld_graph *g, cld_plan_stats *stats);
/* Enqueue every node in order on the context's queue (no host sync). */
cld_status cld_graph_run(cld_graph *g);
/* Gradient sinks: after cld_graph_backward each parameter's gradient is
 * added into the store by one node, placed where the backward has finished
 * it (the last layers' first). A hook set here is called by cld_graph_run
 * right after it enqueues each of them, with the parameter's index (store
 * order): it may enqueue work of its own on the context's queue, such as a
 * read of the gradients finished so far, so that an all-reduce overlaps the
 * rest of the backward (cld-train under MPI). A status other than CLD_OK
 * stops the run and is returned. fn NULL removes the hook. */
typedef cld_status (*cld_grad_hook)(void *user, int param_index);
cld_status cld_graph_set_grad_hook(cld_graph *g, cld_grad_hook fn, void *user);

/* ---------------------------------------------------------------- tensors */
cld_status cld_tensor_shape(const cld_tensor *t, int *ndim, int shape[CLD_MAX_DIMS]);
cld_status cld_tensor_numel(const cld_tensor *t, size_t *n);
/* Blocking copies between host and a planned tensor (input, output, grad). */
cld_status cld_tensor_write(cld_graph *g, cld_tensor *t, const float *src);
cld_status cld_tensor_read(cld_graph *g, cld_tensor *t, float *dst);
/* Device location of a planned tensor: buffer and offset in floats. */
cld_status cld_tensor_buffer(const cld_tensor *t, cl_mem *buf, size_t *offset);
/* Gradient tensor of an input with requires_grad (after backward). */
cld_status cld_tensor_grad(const cld_tensor *t, cld_tensor **grad);

/* -------------------------------------------------------------------- ops
 * Each builds one node (or a few) and checks shapes at build time: a
 * mismatch returns CLD_ERR_SHAPE naming the op and the shapes. */

/* y = conv(x, w) + b. x (N,Ci,H,W), w (Co,Ci,K,K), b (Co) or NULL.
 * y (N,Co,Ho,Wo) with Ho = (H + 2*pad - K)/stride + 1. */
cld_status cld_op_conv2d(cld_graph *g, cld_tensor *x, cld_tensor *w, cld_tensor *b, int stride, int pad,
                         cld_tensor **y);
/* y = x w^T + b. x (N, ...) flattened to (N,K), w (M,K), b (M) or NULL; y (N,M). */
cld_status cld_op_linear(cld_graph *g, cld_tensor *x, cld_tensor *w, cld_tensor *b, cld_tensor **y);
/* Group norm over (C/groups, H, W) per sample, affine gamma, beta (C). */
cld_status cld_op_group_norm(cld_graph *g, cld_tensor *x, cld_tensor *gamma, cld_tensor *beta, int groups,
                             float eps, cld_tensor **y);
cld_status cld_op_silu(cld_graph *g, cld_tensor *x, cld_tensor **y);
/* a + b and a * b. b has a's shape, or (N,C) / (N,C,1,1) / (1,C,1,1) / (C)
 * broadcast over the spatial (and batch) dims. */
cld_status cld_op_add(cld_graph *g, cld_tensor *a, cld_tensor *b, cld_tensor **y);
cld_status cld_op_mul(cld_graph *g, cld_tensor *a, cld_tensor *b, cld_tensor **y);
/* y = alpha * x */
cld_status cld_op_scale(cld_graph *g, cld_tensor *x, float alpha, cld_tensor **y);
/* y (N, count, ...) = x[:, c0 : c0 + count, ...] of x (N, C, ...). Backward:
 * dy into those channels, zero elsewhere. */
cld_status cld_op_slice_channels(cld_graph *g, cld_tensor *x, int c0, int count, cld_tensor **y);
/* Concatenate (N,Ca,H,W) and (N,Cb,H,W) along channels. */
cld_status cld_op_concat(cld_graph *g, cld_tensor *a, cld_tensor *b, cld_tensor **y);
/* Nearest-neighbour 2x upsample: (N,C,H,W) -> (N,C,2H,2W). */
cld_status cld_op_upsample2x(cld_graph *g, cld_tensor *x, cld_tensor **y);
/* Zero padding: (N,C,H,W) -> (N,C,H+top+bottom,W+left+right). */
cld_status cld_op_pad2d(cld_graph *g, cld_tensor *x, int top, int bottom, int left, int right,
                        cld_tensor **y);
/* A view with another shape of the same element count (no copy). */
cld_status cld_op_reshape(cld_graph *g, cld_tensor *x, int ndim, const int *shape, cld_tensor **y);
/* Batched matrix product over dim 0: a (B,M,K) (or (B,K,M) if trans_a),
 * b (B,K,N) (or (B,N,K) if trans_b); y (B,M,N) = alpha * op(a) op(b). */
cld_status cld_op_matmul(cld_graph *g, cld_tensor *a, cld_tensor *b, int trans_a, int trans_b, float alpha,
                         cld_tensor **y);
/* Softmax over the last dimension. */
cld_status cld_op_softmax(cld_graph *g, cld_tensor *x, cld_tensor **y);
/* Sinusoidal embedding of timesteps t (N) -> (N, dim) as in DDPM:
 * [sin(t f_0..f_{h-1}), cos(t f_0..)] with f_i = exp(-ln(10000) i/(h-1)), h = dim/2. */
cld_status cld_op_timestep_embedding(cld_graph *g, cld_tensor *t, int dim, cld_tensor **y);
/* Row lookup: table (R, D), labels (N) holding integer ids in float -> (N, D). */
cld_status cld_op_embedding(cld_graph *g, cld_tensor *table, cld_tensor *labels, cld_tensor **y);
/* Inverted dropout with probability p, deterministic from the graph seed
 * and the node. p = 0 is the identity. */
cld_status cld_op_dropout(cld_graph *g, cld_tensor *x, float p, cld_tensor **y);
/* loss (1) = (1/N) sum_n w_n mean_{chw} (pred - target)^2; weights (N) or NULL (= 1). */
cld_status cld_op_mse_loss(cld_graph *g, cld_tensor *pred, cld_tensor *target, cld_tensor *weights,
                           cld_tensor **loss);

#ifdef __cplusplus
}
#endif
#endif
