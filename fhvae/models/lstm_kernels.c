/* Fused element-wise math of one LSTM time step (fhvae/models/cpu_kernels.py builds and loads this).
 *
 * Layout (features, batch), float32, row-major: gate pre-activations a (4H, B) in gate order
 * i, f, g, o (as nn.LSTM); states (H, B). Rows of h and d_pre are strided (they are slices of
 * (H, T, B) and (4H, T, B) tensors): row r starts at r * row_stride.
 *
 * One pass over the data instead of the ~10 tensor operations of the PyTorch formulation.
 * tanh(x) = 2 sigmoid(2x) - 1, so the only transcendental is exp, computed inline (below) so that
 * the compiler vectorizes the whole loop. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

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

/* a: (4H, B) pre-activations in, activations out (i, f, o sigmoid; g tanh).
 * c_prev, c_new, tanh_c: (H, B). h: H rows of B, row stride h_stride. No argument aliases another. */
void lstm_forward_step(float *restrict a, const float *restrict c_prev, float *restrict c_new,
                       float *restrict tanh_c, float *restrict h, ptrdiff_t h_stride, int H, int B) {
    for (int j = 0; j < H; j++) {
        float *restrict ai = a + (ptrdiff_t)j * B, *restrict af = a + (ptrdiff_t)(H + j) * B;
        float *restrict ag = a + (ptrdiff_t)(2 * H + j) * B, *restrict ao = a + (ptrdiff_t)(3 * H + j) * B;
        const float *restrict cp = c_prev + (ptrdiff_t)j * B;
        float *restrict cn = c_new + (ptrdiff_t)j * B, *restrict tc = tanh_c + (ptrdiff_t)j * B;
        float *restrict hj = h + j * h_stride;
        for (int b = 0; b < B; b++) {
            float i = sigm(ai[b]), f = sigm(af[b]), g = 2.f * sigm(2.f * ag[b]) - 1.f, o = sigm(ao[b]);
            float c = i * g + f * cp[b];
            float t = 2.f * sigm(2.f * c) - 1.f;
            ai[b] = i; af[b] = f; ag[b] = g; ao[b] = o;
            cn[b] = c; tc[b] = t; hj[b] = o * t;
        }
    }
}

/* Backward of one step. a: activations (4H, B) of the step; c_prev: (H, B);
 * tanh_c: (H, B); dh: (H, B) d loss / d h_t; dc: (H, B) d loss / d c_t from the later steps, in;
 * d loss / d c_{t-1} out. d: 4H rows of B, row stride d_stride: d loss / d pre-activations, out.
 * No argument aliases another. */
void lstm_backward_step(const float *restrict a, const float *restrict c_prev, const float *restrict tanh_c,
                        const float *restrict dh, float *restrict dc, float *restrict d, ptrdiff_t d_stride,
                        int H, int B) {
    for (int j = 0; j < H; j++) {
        const float *restrict ai = a + (ptrdiff_t)j * B, *restrict af = a + (ptrdiff_t)(H + j) * B;
        const float *restrict ag = a + (ptrdiff_t)(2 * H + j) * B, *restrict ao = a + (ptrdiff_t)(3 * H + j) * B;
        const float *restrict cp = c_prev + (ptrdiff_t)j * B;
        const float *restrict tc = tanh_c + (ptrdiff_t)j * B, *restrict dhj = dh + (ptrdiff_t)j * B;
        float *restrict dcj = dc + (ptrdiff_t)j * B;
        float *restrict di = d + j * d_stride, *restrict df = d + (H + j) * d_stride;
        float *restrict dg = d + (2 * H + j) * d_stride, *restrict dout = d + (3 * H + j) * d_stride;
        for (int b = 0; b < B; b++) {
            float i = ai[b], f = af[b], g = ag[b], o = ao[b], t = tc[b], x = dhj[b];
            float c = dcj[b] + x * o * (1.f - t * t);
            di[b] = c * g * i * (1.f - i);
            df[b] = c * cp[b] * f * (1.f - f);
            dg[b] = c * i * (1.f - g * g);
            dout[b] = x * t * o * (1.f - o);
            dcj[b] = c * f;
        }
    }
}
