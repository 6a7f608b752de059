/*
 * Exact person-level top-2 over a small gallery, through an int8 scan (native.py loads this).
 *
 * Why: below ~100k templates a search is a few microseconds of arithmetic, and the fp32 scan
 * (numpy/OpenBLAS) is bound by one core's fp32 multiply-add rate, about level with FAISS flat
 * at 1k templates. Bytes multiply four times as many pairs per instruction (AVX-512 VNNI
 * vpdpbusd, AVX2 vpmaddubsw, Arm's sdot), and the answer stays exact by re-scoring, in double,
 * every row that the proven error bound cannot rule out (quantize.py has the derivation).
 *
 * Data, all owned by the caller (TemplateTable):
 *   codes4  uint8, gallery codes (xq + 128) in blocks of 16 rows: block b holds, for each group
 *           of 4 dimensions in turn, those 4 codes of its 16 rows; the code of row r, dimension
 *           k is at codes4[(((r / 16) * (dim / 4) + k / 4) * 16 + r % 16) * 4 + k % 4]. One
 *           64-byte load is 16 rows x 4 dimensions, the shape vpdpbusd and sdot consume, and a
 *           scan reads each block front to back. ld (the "stride": rows the layout holds) is
 *           at least rows rounded up to 64, and those tail rows must be readable (their scores
 *           are ignored); scores are written ld apart.
 *   rows_f32 float32, the same rows row-major (stride row_stride floats): the exact re-score.
 *   person  int32, a number per row, equal for the rows of one person.
 *
 * Steps of a search, per group of up to 8 probes:
 *   1. normalise each probe (double) and quantise it to [-63, 63] (7 bits, so vpmaddubsw
 *      cannot saturate: 255 * 63 * 2 < 32767); its bound follows from the residual;
 *   2. integer scores <xq, qq> for every row (one of the kernels below);
 *   3. the approximate best and runner-up person, then every row whose integer score is within
 *      twice the bound of the runner-up's is re-scored exactly: that set provably contains the
 *      best row of the true best and of the true runner-up person;
 *   4. person-level top-2 over the exact scores.
 *
 * Person-level top-2 in one pass: a person's score is their best row, so the winner is the
 * best row and the runner-up the best row of any other person. Holding (best row, best row of a
 * person other than the best row's) is enough: when a row of another person takes the lead,
 * the old leader becomes the runner-up candidate (it beats every earlier one); when a row of
 * the leader's own person takes the lead, the runner-up stays. Ties keep the earlier row.
 *
 * Thread safety: reads its inputs, writes only its outputs and the caller's scratch.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "_int8scan.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

#define GROUP 8
#define MAX_DIM 1024
#define PROBE_LEVELS 63
#define ZERO_POINT 128
#define ROW_ALIGN 64
/* Same constant as quantize.ROUNDING_SLACK: float32 rounding of the stored rows' residuals. */
#define ROUNDING_SLACK 1e-5

int edge_int8_version(void) { return EDGE_INT8_VERSION; }

/* The fastest kernel this CPU runs. */
int edge_int8_best_level(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vnni"))
        return LEVEL_AVX512_VNNI;
    if (__builtin_cpu_supports("avx2")) return LEVEL_AVX2;
#elif defined(__aarch64__)
    if (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) return LEVEL_NEON_DOT;
#endif
    return LEVEL_PORTABLE;
}

/* Whether `level` can run here: LEVEL_PORTABLE always, the others on their CPUs. */
static int level_runs(int level) {
    static int best = 0;
    if (level == LEVEL_PORTABLE) return 1;
    if (best == 0) best = edge_int8_best_level();
#if defined(__x86_64__)
    if (level == LEVEL_AVX2) return best == LEVEL_AVX2 || best == LEVEL_AVX512_VNNI;
#endif
    return level == best;
}

/* The codes of rows r..r+15 (r a multiple of 16; or of row r alone), dimensions 4g..4g+3. */
static inline const uint8_t *chunk(const uint8_t *codes4, int32_t groups, int32_t r, int32_t g) {
    return codes4 + (((int64_t)(r >> 4) * groups + g) * 16 + (r & 15)) * 4;
}

/* ---- step 2: integer scores ------------------------------------------------------------- */
/* scores[j * ld + r] = sum_k (codes(r, k) - 128) * qq[j][k] for r < rows (rounded up to 64),
 * j < np. qq holds GROUP probes of `dim` codes (missing ones zero), qsum[j] = sum_k qq[j][k]. */

static void scores_portable(const uint8_t *codes4, int64_t ld, int32_t rows, int32_t dim,
                            const int8_t *qq, const int32_t *qsum, int32_t np,
                            int32_t *scores) {
    int32_t groups = dim / 4;
    for (int32_t j = 0; j < np; j++) {
        int32_t *out = scores + (int64_t)j * ld;
        for (int32_t r = 0; r < rows; r++) out[r] = -ZERO_POINT * qsum[j];
        for (int32_t g = 0; g < groups; g++) {
            const int8_t *p = qq + (int64_t)j * dim + g * 4;
            int32_t p0 = p[0], p1 = p[1], p2 = p[2], p3 = p[3];
            for (int32_t r = 0; r < rows; r++) {
                const uint8_t *c = chunk(codes4, groups, r, g);
                out[r] += c[0] * p0 + c[1] * p1 + c[2] * p2 + c[3] * p3;
            }
        }
    }
}

#if defined(__x86_64__)
#define VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))

/* NB row blocks of 16 x NP probes of accumulators. */
#define VNNI_TILE(NAME, NB, NP)                                                                \
VNNI static inline void NAME(const uint8_t *codes4, int64_t ld, int32_t r, int32_t groups,    \
                             int32_t dim, const int8_t *qq, const int32_t *qsum, int32_t np,   \
                             int32_t *scores) {                                                \
    __m512i acc[NB][NP];                                                                       \
    for (int b = 0; b < NB; b++)                                                               \
        for (int j = 0; j < NP; j++) acc[b][j] = _mm512_setzero_si512();                       \
    for (int32_t g = 0; g < groups; g++) {                                                     \
        const uint8_t *src = chunk(codes4, groups, r, g);                                      \
        __m512i c[NB];                                                                         \
        for (int b = 0; b < NB; b++)                                                           \
            c[b] = _mm512_loadu_si512((const void *)(src + (int64_t)b * groups * 64));         \
        for (int j = 0; j < NP; j++) {                                                         \
            int32_t four;                                                                      \
            memcpy(&four, qq + (int64_t)j * dim + g * 4, 4);                                   \
            __m512i p = _mm512_set1_epi32(four);                                               \
            for (int b = 0; b < NB; b++) acc[b][j] = _mm512_dpbusd_epi32(acc[b][j], c[b], p);  \
        }                                                                                      \
    }                                                                                          \
    for (int j = 0; j < NP && j < np; j++) {                                                   \
        __m512i shift = _mm512_set1_epi32(ZERO_POINT * qsum[j]);                               \
        for (int b = 0; b < NB; b++)                                                           \
            _mm512_storeu_si512((void *)(scores + (int64_t)j * ld + r + 16 * b),               \
                                _mm512_sub_epi32(acc[b][j], shift));                           \
    }                                                                                          \
}

VNNI_TILE(vnni_4x1, 4, 1)
VNNI_TILE(vnni_2x2, 2, 2)
VNNI_TILE(vnni_1x4, 1, 4)
VNNI_TILE(vnni_1x8, 1, 8)

VNNI static void scores_vnni(const uint8_t *codes4, int64_t ld, int32_t rows, int32_t dim,
                             const int8_t *qq, const int32_t *qsum, int32_t np,
                             int32_t *scores) {
    int32_t groups = dim / 4;
    for (int32_t r = 0; r < rows; r += 64) {
        if (np == 1) {
            vnni_4x1(codes4, ld, r, groups, dim, qq, qsum, np, scores);
        } else if (np == 2) {
            vnni_2x2(codes4, ld, r, groups, dim, qq, qsum, np, scores);
            vnni_2x2(codes4, ld, r + 32, groups, dim, qq, qsum, np, scores);
        } else {
            for (int32_t q = r; q < r + 64; q += 16) {
                if (np <= 4) vnni_1x4(codes4, ld, q, groups, dim, qq, qsum, np, scores);
                else vnni_1x8(codes4, ld, q, groups, dim, qq, qsum, np, scores);
            }
        }
    }
}

#define AVX2 __attribute__((target("avx2")))

/* 8 rows x 4 dimensions per 32-byte load; vpmaddubsw adds pairs of u8 x s8 products into
 * int16 (no saturation with 7-bit probes), vpmaddwd by ones adds those pairs into int32. */
AVX2 static void scores_avx2(const uint8_t *codes4, int64_t ld, int32_t rows, int32_t dim,
                             const int8_t *qq, const int32_t *qsum, int32_t np,
                             int32_t *scores) {
    int32_t groups = dim / 4;
    const __m256i ones = _mm256_set1_epi16(1);
    for (int32_t r = 0; r < rows; r += 8) {
        __m256i acc[GROUP];
        for (int j = 0; j < GROUP; j++) acc[j] = _mm256_setzero_si256();
        for (int32_t g = 0; g < groups; g++) {
            __m256i c = _mm256_loadu_si256((const __m256i *)chunk(codes4, groups, r, g));
            for (int j = 0; j < GROUP; j++) {
                if (j >= np) break;
                int32_t four;
                memcpy(&four, qq + (int64_t)j * dim + g * 4, 4);
                __m256i pairs = _mm256_maddubs_epi16(c, _mm256_set1_epi32(four));
                acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(pairs, ones));
            }
        }
        for (int j = 0; j < np; j++)
            _mm256_storeu_si256((__m256i *)(scores + (int64_t)j * ld + r),
                                _mm256_sub_epi32(acc[j], _mm256_set1_epi32(ZERO_POINT * qsum[j])));
    }
}
#endif

#if defined(__aarch64__)
/* sdot multiplies signed bytes: the codes are flipped to xq = code - 128 on load (xor 0x80),
 * so no zero-point correction is needed. */
__attribute__((target("arch=armv8.2-a+dotprod")))
static void scores_neon_dot(const uint8_t *codes4, int64_t ld, int32_t rows, int32_t dim,
                            const int8_t *qq, const int32_t *qsum, int32_t np,
                            int32_t *scores) {
    (void)qsum;
    int32_t groups = dim / 4;
    const uint8x16_t flip = vdupq_n_u8(0x80);
    for (int32_t r = 0; r < rows; r += 16) {
        for (int32_t j = 0; j < np; j++) {
            int32x4_t a0 = vdupq_n_s32(0), a1 = a0, a2 = a0, a3 = a0;
            for (int32_t g = 0; g < groups; g++) {
                const uint8_t *src = chunk(codes4, groups, r, g);
                int32_t four;
                memcpy(&four, qq + (int64_t)j * dim + g * 4, 4);
                int8x16_t p = vreinterpretq_s8_s32(vdupq_n_s32(four));
                a0 = vdotq_s32(a0, vreinterpretq_s8_u8(veorq_u8(vld1q_u8(src), flip)), p);
                a1 = vdotq_s32(a1, vreinterpretq_s8_u8(veorq_u8(vld1q_u8(src + 16), flip)), p);
                a2 = vdotq_s32(a2, vreinterpretq_s8_u8(veorq_u8(vld1q_u8(src + 32), flip)), p);
                a3 = vdotq_s32(a3, vreinterpretq_s8_u8(veorq_u8(vld1q_u8(src + 48), flip)), p);
            }
            int32_t *out = scores + (int64_t)j * ld + r;
            vst1q_s32(out, a0); vst1q_s32(out + 4, a1);
            vst1q_s32(out + 8, a2); vst1q_s32(out + 12, a3);
        }
    }
}
#endif

static int run_scores(int level, const uint8_t *codes4, int64_t ld, int32_t rows, int32_t dim,
                      const int8_t *qq, const int32_t *qsum, int32_t np, int32_t *scores) {
    switch (level) {
#if defined(__x86_64__)
    case LEVEL_AVX512_VNNI: scores_vnni(codes4, ld, rows, dim, qq, qsum, np, scores); return OK;
    case LEVEL_AVX2: scores_avx2(codes4, ld, rows, dim, qq, qsum, np, scores); return OK;
#endif
#if defined(__aarch64__)
    case LEVEL_NEON_DOT: scores_neon_dot(codes4, ld, rows, dim, qq, qsum, np, scores); return OK;
#endif
    case LEVEL_PORTABLE: scores_portable(codes4, ld, rows, dim, qq, qsum, np, scores); return OK;
    default: return NO_LEVEL;
    }
}

static int layout_ok(int64_t ld, int32_t rows, int32_t dim) {
    int64_t whole = ((int64_t)rows + ROW_ALIGN - 1) / ROW_ALIGN * ROW_ALIGN;
    return rows >= 1 && dim >= 4 && dim <= MAX_DIM && dim % 4 == 0 && ld >= whole;
}

/*
 * Step 2 alone, for the start-up self-check and the tests: integer scores of n <= 8 probe
 * code rows (n x dim int8, each in [-63, 63]) into scores (n x ld int32).
 */
int edge_int8_scores(const uint8_t *codes4, int64_t ld, int32_t rows, int32_t dim,
                     const int8_t *probe_codes, int32_t n, int32_t level, int32_t *scores) {
    if (!layout_ok(ld, rows, dim) || n < 1 || n > GROUP) return BAD_ARGS;
    if (!level_runs(level)) return NO_LEVEL;
    int8_t qq[GROUP * MAX_DIM];
    int32_t qsum[GROUP];
    memset(qq, 0, (size_t)GROUP * dim);
    for (int32_t j = 0; j < n; j++) {
        int32_t sum = 0;
        for (int32_t k = 0; k < dim; k++) {
            int8_t v = probe_codes[(int64_t)j * dim + k];
            if (v > PROBE_LEVELS || v < -PROBE_LEVELS) return BAD_ARGS;
            qq[(int64_t)j * dim + k] = v;
            sum += v;
        }
        qsum[j] = sum;
    }
    return run_scores(level, codes4, ld, rows, dim, qq, qsum, n, scores);
}

/* ---- steps 3 and 4 ---------------------------------------------------------------------- */

typedef struct {
    int32_t best, second;
    double best_v, second_v;
} top2;

static inline void consider(top2 *t, double v, int32_t row, const int32_t *person) {
    if (!(v > t->second_v)) return;
    int32_t p = person[row];
    if (v > t->best_v) {
        if (t->best >= 0 && person[t->best] != p) { t->second = t->best; t->second_v = t->best_v; }
        t->best = row; t->best_v = v;
    } else if (p != person[t->best]) {
        t->second = row; t->second_v = v;
    }
}

static inline int32_t block_max(const int32_t *s, int32_t count) {
    int32_t m = s[0];
    for (int32_t l = 1; l < count; l++) m = s[l] > m ? s[l] : m;
    return m;
}

/* <x, u> in double; eight partial sums, so the loop is not one chain of dependent adds
 * (a single sum took ~0.5 us a row, most of a batch's time). dim is a multiple of 4. */
static inline double exact_dot(const float *x, const double *u, int32_t dim) {
    double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int32_t k = 0;
    for (; k + 8 <= dim; k += 8)
        for (int l = 0; l < 8; l++) part[l] += (double)x[k + l] * u[k + l];
    for (; k < dim; k++) part[0] += (double)x[k] * u[k];
    return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

/*
 * Step 1 for one probe: unit = q / ||q|| (double), its codes qq in [-63, 63] with step
 * max|unit| / 63, their sum; returns the residual norm ||unit - step * qq||, or -1 for a probe
 * it refuses. Written as
 * independent lanes of 8 so the compiler vectorises it (a plain loop took ~1 us a probe).
 * Any rounding to a nearby integer would do: the residual is computed from the codes chosen.
 */
static inline double prepare_probe(const float *q, int32_t dim, double *unit, int8_t *qq,
                                   double *step, int32_t *qsum) {
    double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int32_t k = 0; k < dim; k += 4)
        for (int l = 0; l < 4; l++) part[(k & 4) + l] += (double)q[k + l] * q[k + l];
    double sq = ((part[0] + part[1]) + (part[2] + part[3]))
                + ((part[4] + part[5]) + (part[6] + part[7]));
    if (!(sq > 1e-30 && sq < 1e30)) return -1.0;  /* zero, tiny, huge, inf or NaN */
    double inv = 1.0 / sqrt(sq);
    double peak[4] = {0, 0, 0, 0};
    for (int32_t k = 0; k < dim; k += 4)
        for (int l = 0; l < 4; l++) {
            double v = q[k + l] * inv;
            unit[k + l] = v;
            double a = fabs(v);
            peak[l] = a > peak[l] ? a : peak[l];
        }
    double top = peak[0] > peak[1] ? peak[0] : peak[1];
    double top2v = peak[2] > peak[3] ? peak[2] : peak[3];
    top = top > top2v ? top : top2v;
    double s = top / PROBE_LEVELS, inv_s = PROBE_LEVELS / top;
    double res[4] = {0, 0, 0, 0};
    int32_t sum[4] = {0, 0, 0, 0};
    for (int32_t k = 0; k < dim; k += 4)
        for (int l = 0; l < 4; l++) {
            double c = floor(unit[k + l] * inv_s + 0.5);
            c = c > PROBE_LEVELS ? PROBE_LEVELS : c;
            c = c < -PROBE_LEVELS ? -PROBE_LEVELS : c;
            int32_t ci = (int32_t)c;
            qq[k + l] = (int8_t)ci;
            sum[l] += ci;
            double e = unit[k + l] - s * c;
            res[l] += e * e;
        }
    *step = s;
    *qsum = (sum[0] + sum[1]) + (sum[2] + sum[3]);
    return sqrt((res[0] + res[1]) + (res[2] + res[3]));
}

static void top2_init(top2 *t) {
    t->best = t->second = -1;
    t->best_v = t->second_v = -INFINITY;
}

/*
 * The search of n probes over the first `rows` rows. Cosines are those of the normalised
 * probe. Returns OK; BAD_PROBE when a probe is zero, tiny, huge or not finite (the caller's
 * general path then names the problem); BAD_ARGS or NO_LEVEL.
 */
#if defined(__x86_64__)
/* The selection and re-scoring loops vectorise much better with AVX2 or AVX-512 than with
 * the SSE2 baseline; the loader (ifunc) picks the clone this CPU runs. */
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
int edge_int8_search(const edge_gallery *g, int32_t rows, double gallery_step,
                     double max_code_norm, double max_residual, int32_t n, int32_t level,
                     edge_buffers *b) {
    const uint8_t *codes4 = g->codes4;
    int64_t ld = g->stride, row_stride = g->row_stride;
    int32_t dim = g->dim;
    const float *rows_f32 = g->vectors, *probes = b->probes;
    const int32_t *person = g->person;
    int32_t *scratch = b->scratch;
    if (!layout_ok(ld, rows, dim) || n < 1 || row_stride < dim || !(gallery_step > 0))
        return BAD_ARGS;
    if (!level_runs(level)) return NO_LEVEL;
    static _Thread_local double unit[GROUP][MAX_DIM];
    static _Thread_local int8_t qq[GROUP * MAX_DIM];
    for (int32_t j0 = 0; j0 < n; j0 += GROUP) {
        int32_t np = n - j0 < GROUP ? n - j0 : GROUP;
        int32_t qsum[GROUP];
        double step[GROUP], bound[GROUP];
        memset(qq, 0, (size_t)GROUP * dim);
        /* step 1 */
        for (int32_t j = 0; j < np; j++) {
            double residual = prepare_probe(probes + (int64_t)(j0 + j) * dim, dim, unit[j],
                                            qq + (int64_t)j * dim, &step[j], &qsum[j]);
            if (residual < 0) return BAD_PROBE;  /* the outputs are not to be read */
            /* |<x, q> - s_g s_q <xq, qq>| <= s_g ||xq|| ||eq|| + ||ex|| ||q|| (quantize.py) */
            bound[j] = gallery_step * max_code_norm * residual + max_residual * (1.0 + 1e-6)
                       + ROUNDING_SLACK;
        }
        /* step 2 */
        int rc = run_scores(level, codes4, ld, rows, dim, qq, qsum, np, scratch);
        if (rc != OK) return rc;
        for (int32_t j = 0; j < np; j++) {
            const int32_t *s = scratch + (int64_t)j * ld;
            /* step 3: approximate person-level top-2, in integer units. Block maxima are
             * kept for step 4; rows at or below the runner-up change nothing, so whole blocks
             * of them are skipped. */
            int32_t *bmax = b->block_max;
            top2 approx;
            top2_init(&approx);
            int32_t floor_int = INT32_MIN;
            for (int32_t r = 0; r < rows; r += 16) {
                int32_t stop = rows - r < 16 ? rows - r : 16;
                int32_t m = block_max(s + r, stop);
                bmax[r >> 4] = m;
                if (m <= floor_int) continue;
                for (int32_t l = 0; l < stop; l++) consider(&approx, (double)s[r + l], r + l, person);
                if (approx.second >= 0) floor_int = (int32_t)approx.second_v;
            }
            double unit_score = gallery_step * step[j];
            double floor_v = approx.second >= 0 ? approx.second_v : approx.best_v;
            /* rounded toward more candidates: floor, and one more */
            double threshold = floor(floor_v - 2.0 * bound[j] / unit_score) - 1.0;
            int32_t t = threshold < (double)INT32_MIN ? INT32_MIN : (int32_t)threshold;
            /* step 4: exact scores of the candidates */
            top2 exact;
            top2_init(&exact);
            int32_t count = 0;
            const double *u = unit[j];
            for (int32_t r0 = 0; r0 < rows; r0 += 16) {
                if (bmax[r0 >> 4] < t) continue;
                int32_t stop = rows - r0 < 16 ? rows - r0 : 16;
                for (int32_t r = r0; r < r0 + stop; r++) {
                    if (s[r] < t) continue;
                    consider(&exact, exact_dot(rows_f32 + (int64_t)r * row_stride, u, dim), r,
                             person);
                    count++;
                }
            }
            double *o = b->out + 4 * (int64_t)(j0 + j);
            o[0] = exact.best;
            o[1] = exact.best_v;
            o[2] = exact.second;
            o[3] = exact.second_v;
            b->rescored[j0 + j] = count;
        }
    }
    return OK;
}
