/* Fused element-wise math of one LSTM time step (fhvae/models/cpu_kernels.py builds and loads this).
 *
 * Layout (features, batch), float32, row-major: gate pre-activations a (4H, B) in gate order
 * i, f, g, o (as nn.LSTM); states (H, B). Rows of h and d_pre are strided (they are slices of
 * (H, T, B) and (4H, T, B) tensors): row r starts at r * row_stride.
 *
 * One pass over the data instead of the ~10 tensor operations of the PyTorch formulation.
 * tanh(x) = 2 sigmoid(2x) - 1, so the only transcendental is expf (vectorized by the compiler). */
#include <math.h>
#include <stddef.h>

static inline float sigm(float x) {
    /* clamp: exp(88.7) overflows float32; sigmoid is saturated far before */
    x = x < -80.f ? -80.f : (x > 80.f ? 80.f : x);
    return 1.f / (1.f + expf(-x));
}

/* a: (4H, B) pre-activations in, activations out (i, f, o sigmoid; g tanh).
 * c_prev: (H, B) or NULL for zeros. c_new, tanh_c: (H, B). h: H rows of B, row stride h_stride. */
void lstm_forward_step(float *a, const float *c_prev, float *c_new, float *tanh_c, float *h,
                       ptrdiff_t h_stride, int H, int B) {
    for (int j = 0; j < H; j++) {
        float *ai = a + (ptrdiff_t)j * B, *af = a + (ptrdiff_t)(H + j) * B;
        float *ag = a + (ptrdiff_t)(2 * H + j) * B, *ao = a + (ptrdiff_t)(3 * H + j) * B;
        const float *cp = c_prev ? c_prev + (ptrdiff_t)j * B : NULL;
        float *cn = c_new + (ptrdiff_t)j * B, *tc = tanh_c + (ptrdiff_t)j * B, *hj = h + j * h_stride;
        for (int b = 0; b < B; b++) {
            float i = sigm(ai[b]), f = sigm(af[b]), g = 2.f * sigm(2.f * ag[b]) - 1.f, o = sigm(ao[b]);
            float c = i * g + (cp ? f * cp[b] : 0.f);
            float t = 2.f * sigm(2.f * c) - 1.f;
            ai[b] = i; af[b] = f; ag[b] = g; ao[b] = o;
            cn[b] = c; tc[b] = t; hj[b] = o * t;
        }
    }
}

/* Backward of one step. a: activations (4H, B) of the step; c_prev: (H, B) or NULL for zeros;
 * tanh_c: (H, B); dh: (H, B) d loss / d h_t; dc: (H, B) d loss / d c_t from the later steps, in;
 * d loss / d c_{t-1} out. d: 4H rows of B, row stride d_stride: d loss / d pre-activations, out. */
void lstm_backward_step(const float *a, const float *c_prev, const float *tanh_c, const float *dh,
                        float *dc, float *d, ptrdiff_t d_stride, int H, int B) {
    for (int j = 0; j < H; j++) {
        const float *ai = a + (ptrdiff_t)j * B, *af = a + (ptrdiff_t)(H + j) * B;
        const float *ag = a + (ptrdiff_t)(2 * H + j) * B, *ao = a + (ptrdiff_t)(3 * H + j) * B;
        const float *cp = c_prev ? c_prev + (ptrdiff_t)j * B : NULL;
        const float *tc = tanh_c + (ptrdiff_t)j * B, *dhj = dh + (ptrdiff_t)j * B;
        float *dcj = dc + (ptrdiff_t)j * B;
        float *di = d + j * d_stride, *df = d + (H + j) * d_stride;
        float *dg = d + (2 * H + j) * d_stride, *dout = d + (3 * H + j) * d_stride;
        for (int b = 0; b < B; b++) {
            float i = ai[b], f = af[b], g = ag[b], o = ao[b], t = tc[b], x = dhj[b];
            float c = dcj[b] + x * o * (1.f - t * t);
            float cprev = cp ? cp[b] : 0.f;
            di[b] = c * g * i * (1.f - i);
            df[b] = c * cprev * f * (1.f - f);
            dg[b] = c * i * (1.f - g * g);
            dout[b] = x * t * o * (1.f - o);
            dcj[b] = c * f;
        }
    }
}
