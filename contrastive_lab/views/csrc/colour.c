/* Fused per-sample colour jitter + random grayscale on float32 images in [0, 1], in place.
 *
 * The fast twin of contrastive_lab.views.ops.color_jitter + grayscale_ (the readable PyTorch
 * version, which the tests check against torchvision). Same maths, one pass per op over each
 * image while it sits in L1 cache, instead of ~800 small PyTorch ops per batch; plain C99,
 * no PyTorch headers, so it compiles in well under a second (views/native.py).
 *
 * x: B x 3 x HW planar (NCHW, contiguous). Per sample b:
 *   jitter[b]   1 = apply the colour jitter (probability jitter_p), 0 = skip it
 *   order[4b+k] op at step k: 0 brightness, 1 contrast, 2 saturation, 3 hue (torchvision fn_idx)
 *   factor[4b+op] the op's factor (brightness, contrast, saturation, hue)
 *   gray[b]     1 = replace by the luma image (RandomGrayscale)
 * gray_first: grayscale before the jitter (MoCo v1's order) instead of after.
 */
#include <math.h>
#include <stdint.h>

static const float W0 = 0.2989f, W1 = 0.587f, W2 = 0.114f;  /* torchvision rgb_to_grayscale */

static inline float clamp01(float v) { return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v); }

/* x <- clamp(f x + off): brightness (off = 0) and contrast (off = (1 - f) mean luma). */
static void scale_shift(float *restrict p, int64_t n, float f, float off) {
    for (int64_t i = 0; i < n; i++) p[i] = clamp01(f * p[i] + off);
}

/* x_c <- clamp(f x_c + (1 - f) luma): torchvision adjust_saturation. */
static void saturate(float *restrict r, float *restrict g, float *restrict b, int64_t n, float f) {
    const float h = 1.0f - f;
    for (int64_t i = 0; i < n; i++) {
        const float l = h * (W0 * r[i] + W1 * g[i] + W2 * b[i]);
        r[i] = clamp01(f * r[i] + l);
        g[i] = clamp01(f * g[i] + l);
        b[i] = clamp01(f * b[i] + l);
    }
}

static float mean_luma(const float *r, const float *g, const float *b, int64_t n) {
    float sr = 0.0f, sg = 0.0f, sb = 0.0f;  /* vector partial sums (omp simd), as torch's mean does */
#pragma omp simd reduction(+ : sr, sg, sb)
    for (int64_t i = 0; i < n; i++) { sr += r[i]; sg += g[i]; sb += b[i]; }
    return W0 * (sr / n) + W1 * (sg / n) + W2 * (sb / n);
}

static inline float ramp(float h6, float shift) {  /* clamp(min(k, 4 - k), 0, 1), k = (h6 + shift) mod 6 */
    float k = h6 + shift;
    k = k - 6.0f * floorf(k / 6.0f);
    const float v = k < 4.0f - k ? k : 4.0f - k;
    return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
}

/* Hue rotation by `hue` turns (torchvision adjust_hue), as ops.adjust_hue: with M = max,
 * d = M - min, 6H from the max channel (ties R, G, B), C_n = M - d ramp((n + 6H') mod 6). */
static void rotate_hue(float *restrict r, float *restrict g, float *restrict b, int64_t n, float hue) {
    const float s5 = 5.0f + 6.0f * hue, s3 = 3.0f + 6.0f * hue, s1 = 1.0f + 6.0f * hue;
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        const float R = r[i], G = g[i], B = b[i];
        const float rg_max = R > G ? R : G, rg_min = R < G ? R : G;
        const float top = rg_max > B ? rg_max : B;
        const float d = top - (rg_min < B ? rg_min : B);
        const float inv = 1.0f / (d > 0.0f ? d : 1.0f);
        const float h6 = top == R ? (G - B) * inv : (top == G ? (B - R) * inv + 2.0f : (R - G) * inv + 4.0f);
        r[i] = top - d * ramp(h6, s5);
        g[i] = top - d * ramp(h6, s3);
        b[i] = top - d * ramp(h6, s1);
    }
}

static void to_gray(float *restrict r, float *restrict g, float *restrict b, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const float l = W0 * r[i] + W1 * g[i] + W2 * b[i];
        r[i] = l; g[i] = l; b[i] = l;
    }
}

/* Returns 0, or k > 0 when sample k - 1's order holds an op id outside 0-3 (nothing is changed then). */
int colour_jitter_gray(float *x, int64_t batch, int64_t hw, const uint8_t *jitter, const int64_t *order,
                       const float *factor, const uint8_t *gray, int gray_first) {
    for (int64_t s = 0; s < 4 * batch; s++)
        if (order[s] < 0 || order[s] > 3) return (int)(s / 4 + 1);
    for (int64_t s = 0; s < batch; s++) {
        float *r = x + 3 * hw * s, *g = r + hw, *b = g + hw;
        const float *f = factor + 4 * s;
        if (gray_first && gray[s]) to_gray(r, g, b, hw);
        if (jitter[s]) {
            for (int k = 0; k < 4; k++) {
                switch (order[4 * s + k]) {
                case 0: scale_shift(r, 3 * hw, f[0], 0.0f); break;
                case 1: scale_shift(r, 3 * hw, f[1], (1.0f - f[1]) * mean_luma(r, g, b, hw)); break;
                case 2: saturate(r, g, b, hw, f[2]); break;
                default: if (f[3] != 0.0f) rotate_hue(r, g, b, hw, f[3]); break;
                }
            }
        }
        if (!gray_first && gray[s]) to_gray(r, g, b, hw);
    }
    return 0;
}
