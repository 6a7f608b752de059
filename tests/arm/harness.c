/*
 * Standalone check of edge/matching/_int8scan.c, for running the aarch64 build under user-mode
 * emulation (tests/test_matching_arm.py):
 *
 *   aarch64-linux-gnu-gcc -O3 -std=gnu11 -static -o /tmp/harness \
 *       tests/arm/harness.c edge/matching/_int8scan.c -lm
 *   qemu-aarch64 -cpu max /tmp/harness 1 4        # dot products: best level 4
 *   qemu-aarch64 -cpu cortex-a53 /tmp/harness 1 4 # none: best level 1, level 4 refused
 *
 * Why: the CI machine is x86-64, so the NEON dot-product kernel (level 4) and the portable
 * kernel as built for Arm (level 1, which Arm CPUs without dot products use) never run there.
 * This program needs nothing but the library: no Python, no numpy.
 *
 * For each level named on the command line (default: 1, and the best level when it is not 1):
 *   a. edge_int8_scores against exact integer arithmetic, on gallery codes and probe codes with
 *      whole rows and probes at the code limits (1 and 255, -63 and 63), rows not a multiple of
 *      16, n = 1..8;
 *   b. edge_int8_search on random unit-vector galleries, quantised as quantize.py does, against
 *      a float64 brute force: best row, runner-up row (best row of another person, -1 if none)
 *      and both cosines (to 1e-9).
 * A level that this CPU does not run (neither 1 nor the best) is not checked: both entry points
 * must refuse it (NO_LEVEL) without running its kernel, which would fault here.
 *
 * Output: "best level=N", then per level "ok level=N checks=M" or "refused level=N rc=-2";
 * exit 0. On the first mismatch: "FAIL level=N ..." and exit 1. Bad arguments: exit 2.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../edge/matching/_int8scan.h"

/* Constants of the layout and the API (native.py / quantize.py). */
#define VERSION EDGE_INT8_VERSION
#define GROUP 8
#define ROW_ALIGN 64
#define STRIDE_PAD 16
#define MAX_PROBES 16
#define GALLERY_LEVELS 127
#define PROBE_LEVELS 63
#define ZERO_POINT 128
#define DEFAULT_RANGE 0.5
#define RC_NO_LEVEL NO_LEVEL
#define RC_BAD_PROBE BAD_PROBE

/* ---- helpers ---------------------------------------------------------------------------- */

static int current_level;
static long checks;

#define FAIL(...)                                                                              \
    do {                                                                                       \
        printf("FAIL level=%d ", current_level);                                               \
        printf(__VA_ARGS__);                                                                   \
        printf("\n");                                                                          \
        fflush(stdout);                                                                        \
        exit(1);                                                                               \
    } while (0)

static void *xcalloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size);
    if (!p) {
        printf("FAIL out of memory\n");
        exit(1);
    }
    return p;
}

/* xorshift64*: deterministic on every platform. */
static uint64_t rng_state;
static void rng_seed(uint64_t seed) { rng_state = seed * 0x9E3779B97F4A7C15ull + 1; }
static uint64_t rng_next(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}
/* Uniform integer in [lo, hi]. */
static int32_t rng_int(int32_t lo, int32_t hi) {
    return lo + (int32_t)(rng_next() % (uint64_t)(hi - lo + 1));
}
/* Uniform in [0, 1). */
static double rng_unit(void) { return (double)(rng_next() >> 11) * (1.0 / 9007199254740992.0); }
/* Standard normal (Box-Muller). */
static double rng_normal(void) {
    double u = rng_unit(), v = rng_unit();
    return sqrt(-2.0 * log(1.0 - u)) * cos(6.283185307179586 * v);
}

/* native.stride_for: whole chunks of 64 rows, plus one block of 16. */
static int64_t stride_for(int32_t rows) {
    int64_t r = rows < 1 ? 1 : rows;
    return (r + ROW_ALIGN - 1) / ROW_ALIGN * ROW_ALIGN + STRIDE_PAD;
}

/* native.grouped: codes (rows x dim, row-major) into blocks of 16 rows, each holding the groups
 * of 4 dimensions in turn: (ld / 16, dim / 4, 16, 4); other rows zero. */
static uint8_t *grouped(const uint8_t *codes, int32_t rows, int32_t dim, int64_t ld) {
    uint8_t *out = xcalloc((size_t)(dim / 4) * (size_t)ld * 4, 1);
    for (int32_t r = 0; r < rows; r++)
        for (int32_t k = 0; k < dim; k++)
            out[(((int64_t)(r / 16) * (dim / 4) + k / 4) * 16 + r % 16) * 4 + k % 4] =
                codes[(int64_t)r * dim + k];
    return out;
}

/* ---- a. integer scores ------------------------------------------------------------------ */

static void check_scores_case(int level, int32_t rows, int32_t dim, int variant) {
    uint8_t *codes = xcalloc((size_t)rows * dim, 1);
    for (int64_t i = 0; i < (int64_t)rows * dim; i++) codes[i] = (uint8_t)rng_int(1, 255);
    /* whole rows at the limits (as quantize.limit_codes), and whole dimensions too */
    for (int32_t r = 0; r < rows; r++) {
        int kind = (r + variant) % 16;
        for (int32_t k = 0; k < dim; k++) {
            if (kind < 3) codes[(int64_t)r * dim + k] = 255;
            else if (kind < 6) codes[(int64_t)r * dim + k] = 1;
            else if (kind == 6) codes[(int64_t)r * dim + k] = (k % 2) ? 255 : 1;
        }
    }
    for (int32_t k = variant % 4; k < dim; k += 17)
        for (int32_t r = variant; r < rows; r += 2) codes[(int64_t)r * dim + k] = 255;
    int64_t ld = stride_for(rows);
    uint8_t *codes4 = grouped(codes, rows, dim, ld);
    int8_t *probes = xcalloc((size_t)GROUP * dim, 1);
    int32_t *scores = xcalloc((size_t)GROUP * (size_t)ld, sizeof(int32_t));
    for (int32_t n = 1; n <= GROUP; n++) {
        /* every probe position takes every kind in turn: all 63, all -63, alternating, random */
        for (int32_t j = 0; j < n; j++) {
            int kind = (j + n + variant) % 4;
            for (int32_t k = 0; k < dim; k++) {
                int8_t v;
                if (kind == 0) v = PROBE_LEVELS;
                else if (kind == 1) v = -PROBE_LEVELS;
                else if (kind == 2) v = (k % 2) ? PROBE_LEVELS : -PROBE_LEVELS;
                else v = (int8_t)rng_int(-PROBE_LEVELS, PROBE_LEVELS);
                probes[(int64_t)j * dim + k] = v;
            }
        }
        for (int64_t i = 0; i < (int64_t)GROUP * ld; i++) scores[i] = 0x5A5A5A5A;
        int rc = edge_int8_scores(codes4, ld, rows, dim, probes, n, level, scores);
        if (rc != 0) FAIL("edge_int8_scores rows=%d dim=%d n=%d returned %d", rows, dim, n, rc);
        for (int32_t j = 0; j < n; j++)
            for (int32_t r = 0; r < rows; r++) {
                int64_t want = 0;
                for (int32_t k = 0; k < dim; k++)
                    want += (int64_t)((int32_t)codes[(int64_t)r * dim + k] - ZERO_POINT) *
                            probes[(int64_t)j * dim + k];
                int32_t got = scores[(int64_t)j * ld + r];
                if (got != want)
                    FAIL("scores rows=%d dim=%d n=%d probe=%d row=%d: got %d, exact %lld", rows,
                         dim, n, j, r, got, (long long)want);
                checks++;
            }
    }
    free(codes);
    free(codes4);
    free(probes);
    free(scores);
}

static void check_scores(int level) {
    static const int32_t dims[] = {4, 128, 1024};
    static const int32_t row_counts[] = {1, 15, 16, 17, 64, 65, 96, 203};
    for (size_t d = 0; d < sizeof dims / sizeof *dims; d++)
        for (size_t i = 0; i < sizeof row_counts / sizeof *row_counts; i++)
            for (int variant = 0; variant < 2; variant++)
                check_scores_case(level, row_counts[i], dims[d], variant);
}

/* ---- b. whole searches ------------------------------------------------------------------ */

/* float64 brute force, as native.self_check: the best row, and the best row of another person
 * (-1 if none); ties keep the earlier row. */
static void brute_top2(const float *vectors, int64_t row_stride, const int32_t *person,
                       int32_t rows, int32_t dim, const float *probe, int32_t *best,
                       double *best_v, int32_t *second, double *second_v) {
    double norm = 0.0;
    for (int32_t k = 0; k < dim; k++) norm += (double)probe[k] * probe[k];
    norm = sqrt(norm);
    double *cos_r = xcalloc((size_t)rows, sizeof(double));
    for (int32_t r = 0; r < rows; r++) {
        double s = 0.0;
        for (int32_t k = 0; k < dim; k++)
            s += (double)vectors[(int64_t)r * row_stride + k] * ((double)probe[k] / norm);
        cos_r[r] = s;
    }
    *best = 0;
    for (int32_t r = 1; r < rows; r++)
        if (cos_r[r] > cos_r[*best]) *best = r;
    *best_v = cos_r[*best];
    *second = -1;
    *second_v = -INFINITY;
    for (int32_t r = 0; r < rows; r++)
        if (person[r] != person[*best] && (*second < 0 || cos_r[r] > cos_r[*second])) *second = r;
    if (*second >= 0) *second_v = cos_r[*second];
    free(cos_r);
}

static void check_search_case(int level, int32_t rows, int32_t per_person, int32_t n,
                              int64_t row_stride) {
    const int32_t dim = 128;
    /* gallery: unit rows; a person's rows are near one another, as templates are */
    float *vectors = xcalloc((size_t)rows * (size_t)row_stride, sizeof(float));
    int32_t *person = xcalloc((size_t)rows, sizeof(int32_t));
    double *base = xcalloc((size_t)dim, sizeof(double));
    double *row = xcalloc((size_t)dim, sizeof(double));
    for (int32_t r = 0; r < rows; r++) {
        person[r] = r / per_person;
        if (r % per_person == 0)
            for (int32_t k = 0; k < dim; k++) base[k] = rng_normal();
        double sq = 0.0;
        for (int32_t k = 0; k < dim; k++) {
            row[k] = base[k] + (per_person > 1 ? 0.3 * rng_normal() : 0.0);
            sq += row[k] * row[k];
        }
        for (int32_t k = 0; k < dim; k++)
            vectors[(int64_t)r * row_stride + k] = (float)(row[k] / sqrt(sq));
    }
    /* an exact duplicate of row 0 under another person: a tie the runner-up must resolve */
    if (rows >= 17 && person[rows - 1] != person[0])
        memcpy(vectors + (int64_t)(rows - 1) * row_stride, vectors, dim * sizeof(float));

    /* quantize.gallery_step and quantize_rows, in double */
    double peak = 0.0;
    for (int32_t r = 0; r < rows; r++)
        for (int32_t k = 0; k < dim; k++) {
            double a = fabs((double)vectors[(int64_t)r * row_stride + k]);
            peak = a > peak ? a : peak;
        }
    double step = (double)(float)((peak > DEFAULT_RANGE ? peak : DEFAULT_RANGE) / GALLERY_LEVELS);
    uint8_t *codes = xcalloc((size_t)rows * dim, 1);
    double max_code_norm = 0.0, max_residual = 0.0;
    for (int32_t r = 0; r < rows; r++) {
        double norm2 = 0.0, res2 = 0.0;
        for (int32_t k = 0; k < dim; k++) {
            double x = (double)vectors[(int64_t)r * row_stride + k];
            double q = rint(x / step); /* half to even, as np.rint */
            q = q > GALLERY_LEVELS ? GALLERY_LEVELS : q < -GALLERY_LEVELS ? -GALLERY_LEVELS : q;
            codes[(int64_t)r * dim + k] = (uint8_t)(q + ZERO_POINT);
            norm2 += q * q;
            double e = x - step * q;
            res2 += e * e;
        }
        max_code_norm = fmax(max_code_norm, sqrt(norm2));
        max_residual = fmax(max_residual, sqrt(res2));
    }
    int64_t ld = stride_for(rows);
    uint8_t *codes4 = grouped(codes, rows, dim, ld);
    edge_gallery g = {codes4, ld, vectors, row_stride, person, dim};

    /* probes: near a gallery row, exactly a gallery row, random; at various scales */
    float *probes = xcalloc((size_t)MAX_PROBES * dim, sizeof(float));
    for (int32_t j = 0; j < n; j++) {
        int kind = j % 4;
        int32_t src = kind == 3 ? 0 : rng_int(0, rows - 1);
        double scale = (j % 3 == 0) ? 1.0 : (j % 3 == 1) ? 37.5 : 1e-3;
        for (int32_t k = 0; k < dim; k++) {
            double x = (double)vectors[(int64_t)src * row_stride + k];
            double v = kind == 0 ? x + 0.05 * rng_normal()
                     : kind == 1 ? rng_normal()
                     : kind == 2 ? x + 0.2 * rng_normal()
                     : x;
            probes[(int64_t)j * dim + k] = (float)(v * scale);
        }
    }
    int32_t *scratch = xcalloc((size_t)GROUP * (size_t)ld, sizeof(int32_t));
    double *out = xcalloc((size_t)MAX_PROBES * 4, sizeof(double));
    int32_t *rescored = xcalloc(MAX_PROBES, sizeof(int32_t));
    int32_t *block_max = xcalloc((size_t)(ld / 16 + 1), sizeof(int32_t));
    edge_buffers b = {scratch, probes, out, rescored, block_max};
    int rc = edge_int8_search(&g, rows, step, max_code_norm, max_residual, n, level, &b);
    if (rc != 0)
        FAIL("edge_int8_search rows=%d per_person=%d n=%d returned %d", rows, per_person, n, rc);
    for (int32_t j = 0; j < n; j++) {
        int32_t best, second;
        double best_v, second_v;
        brute_top2(vectors, row_stride, person, rows, dim, probes + (int64_t)j * dim, &best,
                   &best_v, &second, &second_v);
        const double *o = out + 4 * j;
        int ok = (int32_t)o[0] == best && (int32_t)o[2] == second &&
                 fabs(o[1] - best_v) < 1e-9 &&
                 (second < 0 ? o[3] == -INFINITY : fabs(o[3] - second_v) < 1e-9) &&
                 rescored[j] >= 1 && rescored[j] <= rows;
        if (!ok)
            FAIL("search rows=%d per_person=%d n=%d probe=%d: got best=%d (%.17g) "
                 "second=%d (%.17g) rescored=%d; brute force best=%d (%.17g) second=%d (%.17g)",
                 rows, per_person, n, j, (int)o[0], o[1], (int)o[2], o[3], rescored[j], best,
                 best_v, second, second_v);
        checks++;
    }
    /* a zero probe is refused, not searched */
    memset(probes, 0, (size_t)dim * sizeof(float));
    rc = edge_int8_search(&g, rows, step, max_code_norm, max_residual, 1, level, &b);
    if (rc != RC_BAD_PROBE) FAIL("zero probe: edge_int8_search returned %d, not %d", rc,
                                 RC_BAD_PROBE);
    checks++;
    free(vectors);
    free(person);
    free(base);
    free(row);
    free(codes);
    free(codes4);
    free(probes);
    free(scratch);
    free(block_max);
    free(out);
    free(rescored);
}

static void check_search(int level) {
    static const int32_t row_counts[] = {1, 17, 64, 65, 203, 1000};
    static const int32_t per_person[] = {1, 3};
    static const int32_t ns[] = {1, 3, 8, 11, 16};
    int i = 0;
    for (size_t a = 0; a < sizeof row_counts / sizeof *row_counts; a++)
        for (size_t p = 0; p < sizeof per_person / sizeof *per_person; p++)
            for (size_t c = 0; c < sizeof ns / sizeof *ns; c++, i++)
                check_search_case(level, row_counts[a], per_person[p], ns[c],
                                  i % 2 ? 128 : 136); /* packed rows, and padded ones */
}

/* A level this CPU does not run: both entry points refuse it before any kernel runs. */
static int check_refused(int level) {
    uint8_t codes4[ROW_ALIGN * 4 + STRIDE_PAD * 4] = {0};
    int8_t probe[4] = {1, 2, 3, 4};
    int32_t scores[ROW_ALIGN + STRIDE_PAD];
    int rc = edge_int8_scores(codes4, ROW_ALIGN + STRIDE_PAD, 1, 4, probe, 1, level, scores);
    if (rc != RC_NO_LEVEL) FAIL("edge_int8_scores returned %d for a level not run here", rc);
    float vector[4] = {1, 0, 0, 0}, q[4] = {1, 1, 0, 0};
    int32_t person[1] = {0}, scratch[GROUP * (ROW_ALIGN + STRIDE_PAD)], rescored[1];
    double out[4];
    edge_gallery g = {codes4, ROW_ALIGN + STRIDE_PAD, vector, 4, person, 4};
    int32_t block_max[(ROW_ALIGN + STRIDE_PAD) / 16 + 1];
    edge_buffers b = {scratch, q, out, rescored, block_max};
    rc = edge_int8_search(&g, 1, 1.0 / GALLERY_LEVELS, 1.0, 0.0, 1, level, &b);
    if (rc != RC_NO_LEVEL) FAIL("edge_int8_search returned %d for a level not run here", rc);
    return rc;
}

/* As the library's level_runs: 1 always, the others on their CPUs. */
static int runs_here(int level, int best) {
#if defined(__x86_64__)
    if (level == 2) return best == 2 || best == 3;
#endif
    return level == 1 || level == best;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines already printed survive a fault (SIGILL) */
    if (edge_int8_version() != VERSION) {
        printf("FAIL library version %d, harness expects %d\n", edge_int8_version(), VERSION);
        return 1;
    }
    int best = edge_int8_best_level();
    printf("best level=%d\n", best);
    int levels[8], count = 0;
    if (argc < 2) {
        levels[count++] = 1;
        if (best != 1) levels[count++] = best;
    }
    for (int i = 1; i < argc; i++) {
        char *end;
        long v = strtol(argv[i], &end, 10);
        if (*end || v < 1 || v > 4 || count == 8) {
            fprintf(stderr, "usage: %s [LEVEL...]   (levels 1 to 4)\n", argv[0]);
            return 2;
        }
        levels[count++] = (int)v;
    }
    for (int i = 0; i < count; i++) {
        current_level = levels[i];
        if (!runs_here(levels[i], best)) {
            printf("refused level=%d rc=%d\n", levels[i], check_refused(levels[i]));
            continue;
        }
        checks = 0;
        rng_seed(2024); /* the same data at every level */
        check_scores(levels[i]);
        check_search(levels[i]);
        printf("ok level=%d checks=%ld\n", levels[i], checks);
    }
    fflush(stdout);
    return 0;
}
