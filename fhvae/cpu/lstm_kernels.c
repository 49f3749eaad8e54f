/* One LSTM layer's time loop, forward and backward, in C (fhvae/models/cpu_kernels.py builds and
 * loads this; fhvae/models/fhvae.py calls it).
 *
 * Layout (features, time, batch), float32, row-major, batch the unit-stride dimension: gate
 * pre-activations gx (4H, T, B) (or (4H, B) when constant over time) in gate order i, f, g, o (as
 * nn.LSTM), hidden states h (H, T, B). Each time step is one matrix product with W_hh (through the
 * BLAS sgemm that PyTorch itself uses, handed over by lstm_init) and one pass of fused element-wise
 * math (gates, cell, tanh, and the add of the step's input projection).
 *
 * The recurrence is independent across the batch, so the batch columns are split into `nthreads`
 * chunks, each run start to end by its own thread with a one-thread sgemm: no synchronization
 * inside the time loop, and all cores busy during the element-wise math too (a third to a half of
 * the layer's time on one thread). Chunks are multiples of 16 columns; results do not depend on the
 * split beyond sgemm rounding.
 *
 * tanh(x) = 2 sigmoid(2x) - 1, so the only transcendental is exp, computed inline (below) so that
 * the compiler vectorizes the loops. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Fortran BLAS sgemm (column-major), and MKL's per-thread thread count (optional) */
typedef void (*sgemm_fn)(const char *, const char *, const int *, const int *, const int *, const float *,
                         const float *, const int *, const float *, const int *, const float *, float *,
                         const int *);
typedef int (*threads_fn)(int);
static sgemm_fn sgemm_f;
static threads_fn local_threads_f;

/* sgemm: BLAS sgemm_; local_threads: MKL_Set_Num_Threads_Local (mkl.h's mkl_set_num_threads_local)
 * or NULL (then no batch split). */
void lstm_init(void *sgemm, void *local_threads) {
    sgemm_f = (sgemm_fn)sgemm;
    local_threads_f = (threads_fn)local_threads;
}

/* Row-major C (M x N, row stride ldc) = op(A) (M x K) @ B (K x N, row stride ldb), A (M x K, row stride
 * lda) or, with trans_a, stored (K x M). A row-major matrix is its transpose in column-major. */
static void gemm(int trans_a, int M, int N, int K, const float *A, int lda, const float *B, int ldb, float *C,
                 int ldc) {
    const float one = 1.f, zero = 0.f;
    sgemm_f("N", trans_a ? "T" : "N", &N, &M, &K, &one, B, &ldb, A, &lda, &zero, C, &ldc);
}

/* exp(x) for |x| <= 80: 2^n * 2^f with n = round(x log2 e), |f| <= 1/2, 2^f by its degree-6
 * Taylor polynomial in f ln 2 (relative error < 2e-7, about float32 rounding). */
static inline float exp_approx(float x) {
    float y = x * 1.44269504089f;
    float n = floorf(y + 0.5f);
    float f = (y - n) * 0.69314718056f;
    float p = 1.f + f * (1.f + f * (0.5f + f * (1.f / 6 + f * (1.f / 24 + f * (1.f / 120 + f * (1.f / 720))))));
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float sigm(float x) {
    /* clamp: 2^n must stay a normal float; sigmoid is saturated (to float32) far before */
    x = x < -80.f ? -80.f : (x > 80.f ? 80.f : x);
    return 1.f / (1.f + exp_approx(-x));
}

/* Forward element-wise math of one step on nb columns. a: (4H) rows, row stride ld: the recurrent
 * product W_hh h_{t-1} (ignored when first) in, activations out. gx: (4H) rows, row stride gxs.
 * c_prev, c_new, tanh_c: (H) rows, row stride ld. h: (H) rows, row stride hs. */
static inline __attribute__((always_inline)) void
forward_step_impl(float *restrict a, const int first, const float *restrict gx, ptrdiff_t gxs,
                         const float *restrict c_prev, float *restrict c_new, float *restrict tanh_c,
                         float *restrict h, ptrdiff_t hs, ptrdiff_t ld, int H, int nb) {
    for (int j = 0; j < H; j++) {
        float *restrict ai = a + j * ld, *restrict af = a + (H + j) * ld;
        float *restrict ag = a + (2 * H + j) * ld, *restrict ao = a + (3 * H + j) * ld;
        const float *restrict xi = gx + j * gxs, *restrict xf = gx + (H + j) * gxs;
        const float *restrict xg = gx + (2 * H + j) * gxs, *restrict xo = gx + (3 * H + j) * gxs;
        const float *restrict cp = c_prev + j * ld;
        float *restrict cn = c_new + j * ld, *restrict tc = tanh_c + j * ld, *restrict hj = h + j * hs;
        for (int b = 0; b < nb; b++) {
            /* a is not read at the first step: it holds garbage there */
            float i = sigm(first ? xi[b] : ai[b] + xi[b]), f = sigm(first ? xf[b] : af[b] + xf[b]);
            float g = 2.f * sigm(2.f * (first ? xg[b] : ag[b] + xg[b])) - 1.f;
            float o = sigm(first ? xo[b] : ao[b] + xo[b]);
            float c = i * g + f * cp[b];
            float t = 2.f * sigm(2.f * c) - 1.f;
            ai[b] = i; af[b] = f; ag[b] = g; ao[b] = o;
            cn[b] = c; tc[b] = t; hj[b] = o * t;
        }
    }
}

/* Backward of one step on nb columns. a: activations (4H), c_prev, tanh_c (H), row stride ld.
 * dh = dh_rec (W_hh^T d_pre_{t+1}, row stride ld; ignored when last) + dh_out (row stride dos).
 * dc (H, row stride ld): d loss / d c_t in, d loss / d c_{t-1} out. d: (4H) rows, row stride ds:
 * d loss / d pre-activations, out. */
static inline __attribute__((always_inline)) void
backward_step_impl(const float *restrict a, const float *restrict c_prev, const float *restrict tanh_c,
                          const float *restrict dh_rec, const int last, const float *restrict dh_out, ptrdiff_t dos,
                          float *restrict dc, float *restrict d, ptrdiff_t ds, ptrdiff_t ld, int H, int nb) {
    for (int j = 0; j < H; j++) {
        const float *restrict ai = a + j * ld, *restrict af = a + (H + j) * ld;
        const float *restrict ag = a + (2 * H + j) * ld, *restrict ao = a + (3 * H + j) * ld;
        const float *restrict cp = c_prev + j * ld, *restrict tc = tanh_c + j * ld;
        const float *restrict rj = dh_rec + j * ld, *restrict oj = dh_out + j * dos;
        float *restrict dcj = dc + j * ld;
        float *restrict di = d + j * ds, *restrict df = d + (H + j) * ds;
        float *restrict dg = d + (2 * H + j) * ds, *restrict dout = d + (3 * H + j) * ds;
        for (int b = 0; b < nb; b++) {
            float i = ai[b], f = af[b], g = ag[b], o = ao[b], t = tc[b], x = last ? oj[b] : rj[b] + oj[b];
            float c = dcj[b] + x * o * (1.f - t * t);  /* h_t = o tanh(c_t); c_t = f c_{t-1} + i g */
            di[b] = c * g * i * (1.f - i);
            df[b] = c * cp[b] * f * (1.f - f);
            dg[b] = c * i * (1.f - g * g);
            dout[b] = x * t * o * (1.f - o);
            dcj[b] = c * f;
        }
    }
}

/* first / last as constants: each loop compiles without the branch (and vectorizes) */
static void forward_step(float *a, int first, const float *gx, ptrdiff_t gxs, const float *c_prev, float *c_new,
                         float *tanh_c, float *h, ptrdiff_t hs, ptrdiff_t ld, int H, int nb) {
    if (first)
        forward_step_impl(a, 1, gx, gxs, c_prev, c_new, tanh_c, h, hs, ld, H, nb);
    else
        forward_step_impl(a, 0, gx, gxs, c_prev, c_new, tanh_c, h, hs, ld, H, nb);
}

static void backward_step(const float *a, const float *c_prev, const float *tanh_c, const float *dh_rec, int last,
                          const float *dh_out, ptrdiff_t dos, float *dc, float *d, ptrdiff_t ds, ptrdiff_t ld, int H,
                          int nb) {
    if (last)
        backward_step_impl(a, c_prev, tanh_c, dh_rec, 1, dh_out, dos, dc, d, ds, ld, H, nb);
    else
        backward_step_impl(a, c_prev, tanh_c, dh_rec, 0, dh_out, dos, dc, d, ds, ld, H, nb);
}

/* Everything one thread needs for its columns [b0, b0 + nb) of a layer's forward or backward. */
typedef struct {
    int backward, save, T, H, B, b0, nb;
    const float *gx, *w_hh, *dh_out;
    ptrdiff_t gx_rs, gx_ts, do_rs, do_ts;
    float *h, *acts, *c, *tanh_c, *d_pre, *dh, *dc;
} chunk_t;

static void forward_chunk(const chunk_t *k) {
    const int T = k->T, H = k->H, B = k->B, b0 = k->b0;
    const ptrdiff_t hs = (ptrdiff_t)T * B, G = 4 * (ptrdiff_t)H * B, S = (ptrdiff_t)H * B;
    for (int t = 0; t < T; t++) {
        float *a = k->acts + (k->save ? t * G : 0) + b0;
        const float *cp = k->c + (k->save ? t : t % 2) * S + b0;
        float *cn = k->c + (k->save ? t + 1 : (t + 1) % 2) * S + b0;
        if (t > 0)
            gemm(0, 4 * H, k->nb, H, k->w_hh, H, k->h + (t - 1) * B + b0, (int)hs, a, B);
        forward_step(a, t == 0, k->gx + t * k->gx_ts + b0, k->gx_rs, cp, cn, k->tanh_c + (k->save ? t * S : 0) + b0,
                     k->h + t * B + b0, hs, B, H, k->nb);
    }
}

static void backward_chunk(const chunk_t *k) {
    const int T = k->T, H = k->H, B = k->B, b0 = k->b0;
    const ptrdiff_t ds = (ptrdiff_t)T * B, G = 4 * (ptrdiff_t)H * B, S = (ptrdiff_t)H * B;
    for (int j = 0; j < H; j++)
        memset(k->dc + j * B + b0, 0, sizeof(float) * k->nb);
    for (int t = T - 1; t >= 0; t--) {
        if (t < T - 1)
            gemm(1, H, k->nb, 4 * H, k->w_hh, H, k->d_pre + (t + 1) * B + b0, (int)ds, k->dh + b0, B);
        backward_step(k->acts + t * G + b0, k->c + t * S + b0, k->tanh_c + t * S + b0, k->dh + b0, t == T - 1,
                      k->dh_out + t * k->do_ts + b0, k->do_rs, k->dc + b0, k->d_pre + t * B + b0, ds, B, H, k->nb);
    }
}

static void run_chunk(const chunk_t *k) {
    if (k->backward)
        backward_chunk(k);
    else
        forward_chunk(k);
}

/* run_chunk with a one-thread sgemm in this thread (a thread of the team, one chunk each) */
static void run_chunk_alone(const chunk_t *k) {
    int old = local_threads_f(1);
    run_chunk(k);
    local_threads_f(old);
}

/* Split the batch into chunks of 16-column multiples, one per thread (up to nthreads), run by an
 * OpenMP team. Built with -fopenmp after PyTorch is loaded, this library shares PyTorch's libgomp
 * (same soname) and so its threads: the team's threads are the ones that just ran PyTorch's
 * products and are still spinning for work (threads of our own would fight them for the cores and
 * run 2x slower). Without a per-thread BLAS thread count: one chunk, whose products use the BLAS's
 * own threads. Without OpenMP: the chunks one after another. */
#define MAX_CHUNKS 64
static void run_chunks(chunk_t proto, int nthreads) {
    const int B = proto.B;
    int n = local_threads_f ? nthreads : 1;
    n = n < 1 ? 1 : (n > MAX_CHUNKS ? MAX_CHUNKS : n);
    int per = ((B + n - 1) / n + 15) / 16 * 16, m = 0;
    chunk_t ks[MAX_CHUNKS];
    for (int b0 = 0; b0 < B; b0 += per, m++) {
        ks[m] = proto;
        ks[m].b0 = b0;
        ks[m].nb = B - b0 < per ? B - b0 : per;
    }
    if (m == 1) {  /* the calling thread with its BLAS threads, as usual */
        run_chunk(&ks[0]);
        return;
    }
#pragma omp parallel for num_threads(m) schedule(static, 1)
    for (int i = 0; i < m; i++)
        run_chunk_alone(&ks[i]);
}

/* Forward of one layer. gx: gate pre-activations, element (r, t, b) at gx[r * gx_rs + t * gx_ts + b]
 * (gx_ts = 0: constant over time). w_hh: (4H, H). h: (H, T, B) out. With save: acts (T, 4H, B),
 * c (T + 1, H, B), tanh_c (T, H, B) out, for the backward; without: acts (4H, B), c (2, H, B),
 * tanh_c (H, B) scratch. c[0] must be zero (c_{-1} = 0; h_{-1} = 0 needs nothing). */
void lstm_layer_forward(const float *gx, ptrdiff_t gx_rs, ptrdiff_t gx_ts, const float *w_hh, float *h, float *acts,
                        float *c, float *tanh_c, int save, int T, int H, int B, int nthreads) {
    chunk_t k = {0};
    k.save = save; k.T = T; k.H = H; k.B = B;
    k.gx = gx; k.gx_rs = gx_rs; k.gx_ts = gx_ts; k.w_hh = w_hh;
    k.h = h; k.acts = acts; k.c = c; k.tanh_c = tanh_c;
    run_chunks(k, nthreads);
}

/* Backward of one layer from the forward's saved acts, c, tanh_c. dh_out: d loss / d h, element
 * (r, t, b) at dh_out[r * do_rs + t * do_ts + b]. d_pre: (4H, T, B) out, d loss / d gate
 * pre-activations. dh, dc: (H, B) scratch. */
void lstm_layer_backward(const float *w_hh, const float *acts, const float *c, const float *tanh_c,
                         const float *dh_out, ptrdiff_t do_rs, ptrdiff_t do_ts, float *d_pre, float *dh, float *dc,
                         int T, int H, int B, int nthreads) {
    chunk_t k = {0};
    k.backward = 1; k.T = T; k.H = H; k.B = B;
    k.w_hh = w_hh; k.acts = (float *)acts; k.c = (float *)c; k.tanh_c = (float *)tanh_c;
    k.dh_out = dh_out; k.do_rs = do_rs; k.do_ts = do_ts; k.d_pre = d_pre; k.dh = dh; k.dc = dc;
    run_chunks(k, nthreads);
}
