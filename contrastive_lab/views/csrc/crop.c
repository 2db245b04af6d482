/* Fused per-sample crop + antialiased bilinear resize + horizontal flip, uint8 or float32 in,
 * float32 in [0, 1] out: the fast twin of contrastive_lab.views.ops.crop_resize_flip (the readable
 * PyTorch version: two dense batched matmuls M_y x M_x^T, checked against torchvision).
 *
 * The resampling matrices are banded: output pixel i of a crop of length L resized to S reads only
 * the ~2 max(L/S, 1) input pixels within the filter's support, so each sample costs O(S^2) work
 * instead of the dense O(S H W). Same filter as ops.resize_weights / PIL / F.interpolate(
 * "bilinear", antialias=True): s = L / S, r = max(s, 1), centre c_i = (i + 1/2) s, weights
 * w_ij ∝ max(0, 1 - |j + 1/2 - c_i| / r) over window pixels j, normalised to sum 1.
 *
 * src: B x 3 x H x W (uint8, divided by 255, or float32), contiguous; out: B x 3 x S x S.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* Banded weights of one axis: for output i, taps first[i] .. first[i] + count[i] - 1 (window
 * coordinates) with weights w[i * taps + k]. Returns 0, or -1 if the support needs more than `taps`. */
static int axis_weights(int64_t length, int64_t out, int64_t taps, int64_t *first, int64_t *count, float *w) {
    const float s = (float)length / (float)out;
    const float support = s > 1.0f ? s : 1.0f;
    for (int64_t i = 0; i < out; i++) {
        const float centre = ((float)i + 0.5f) * s;
        int64_t lo = (int64_t)floorf(centre - support - 0.5f), hi = (int64_t)ceilf(centre + support - 0.5f);
        if (lo < 0) lo = 0;
        if (hi > length - 1) hi = length - 1;
        if (hi - lo + 1 > taps) return -1;
        float total = 0.0f;
        for (int64_t j = lo; j <= hi; j++) {
            const float x = ((float)j + 0.5f - centre) / support;
            const float v = 1.0f - fabsf(x);
            w[i * taps + (j - lo)] = v > 0.0f ? v : 0.0f;
            total += w[i * taps + (j - lo)];
        }
        for (int64_t j = lo; j <= hi; j++) w[i * taps + (j - lo)] /= total;
        first[i] = lo;
        count[i] = hi - lo + 1;
    }
    return 0;
}

/* The crop window of one channel as floats in [0, 1] (uint8 scaled by 1/255): win[p * cw + q]. */
static void load_window(const void *src, int is_uint8, int64_t plane, int64_t width, int64_t top, int64_t left,
                        int64_t ch, int64_t cw, float *restrict win) {
    for (int64_t p = 0; p < ch; p++) {
        const int64_t row = plane + (top + p) * width + left;
        if (is_uint8) {
            const uint8_t *in = (const uint8_t *)src + row;
            for (int64_t q = 0; q < cw; q++) win[p * cw + q] = (float)in[q] * (1.0f / 255.0f);
        } else {
            const float *in = (const float *)src + row;
            for (int64_t q = 0; q < cw; q++) win[p * cw + q] = in[q];
        }
    }
}

/* Returns 0; k > 0 when sample k - 1's box leaves the image (nothing is written then); -1 when out of
 * memory; -2 if a filter needed more taps than allocated (a bug). */
int crop_resize_flip(const void *src, int is_uint8, float *out, int64_t batch, int64_t height, int64_t width,
                     int64_t size, const int64_t *top, const int64_t *left, const int64_t *crop_h,
                     const int64_t *crop_w, const uint8_t *flip) {
    for (int64_t b = 0; b < batch; b++)
        if (top[b] < 0 || left[b] < 0 || crop_h[b] < 1 || crop_w[b] < 1 || top[b] + crop_h[b] > height
            || left[b] + crop_w[b] > width)
            return (int)(b + 1);
    const int64_t taps = 2 * ((height > width ? height : width) / size + 2) + 2;
    int64_t *idx = malloc(sizeof(int64_t) * 4 * size);
    float *wy = malloc(sizeof(float) * size * taps), *wx = malloc(sizeof(float) * size * taps);
    float *rows = malloc(sizeof(float) * height * size);  /* one channel: crop rows x S output columns */
    float *win = malloc(sizeof(float) * height * width);  /* one channel's crop window */
    int status = (idx && wy && wx && rows && win) ? 0 : -1;
    int64_t *y0 = idx, *ny = idx + size, *x0 = idx + 2 * size, *nx = idx + 3 * size;
    for (int64_t b = 0; b < batch && status == 0; b++) {
        const int64_t ch = crop_h[b], cw = crop_w[b];
        if (axis_weights(ch, size, taps, y0, ny, wy) || axis_weights(cw, size, taps, x0, nx, wx)) {
            status = -2;
            break;
        }
        for (int64_t c = 0; c < 3; c++) {
            float *dst = out + (b * 3 + c) * size * size;
            load_window(src, is_uint8, (b * 3 + c) * height * width, width, top[b], left[b], ch, cw, win);
            /* columns: rows[p][j] = sum_k wx[j'][k] win[p][x0[j'] + k], j' = j or (flipped) S - 1 - j */
            for (int64_t j = 0; j < size; j++) {
                const int64_t jj = flip[b] ? size - 1 - j : j;
                const float *w = wx + jj * taps;
                for (int64_t p = 0; p < ch; p++) {
                    const float *in = win + p * cw + x0[jj];
                    float acc = 0.0f;
                    for (int64_t k = 0; k < nx[jj]; k++) acc += w[k] * in[k];
                    rows[p * size + j] = acc;
                }
            }
            /* rows: dst[i][j] = sum_k wy[i][k] rows[y0[i] + k][j] (vectorised over j) */
            for (int64_t i = 0; i < size; i++) {
                float *o = dst + i * size;
                for (int64_t j = 0; j < size; j++) o[j] = 0.0f;
                for (int64_t k = 0; k < ny[i]; k++) {
                    const float wk = wy[i * taps + k];
                    const float *r = rows + (y0[i] + k) * size;
                    for (int64_t j = 0; j < size; j++) o[j] += wk * r[j];
                }
            }
        }
    }
    free(idx); free(wy); free(wx); free(rows); free(win);
    return status;
}
