/*
 * The interface of _int8scan.c: shared by the library and by tests/arm/harness.c, which checks
 * the aarch64 build under emulation. native.py mirrors the two structs with ctypes.
 */
#ifndef EDGE_INT8SCAN_H
#define EDGE_INT8SCAN_H

#include <stdint.h>

#define EDGE_INT8_VERSION 3

enum { LEVEL_PORTABLE = 1, LEVEL_AVX2 = 2, LEVEL_AVX512_VNNI = 3, LEVEL_NEON_DOT = 4 };
enum { OK = 0, BAD_ARGS = -1, NO_LEVEL = -2, BAD_PROBE = -3 };

/* What a search reads of the gallery; set up once per allocation of the caller's arrays. */
typedef struct {
    const uint8_t *codes4;
    int64_t stride;          /* ld: rows per dimension group, whole blocks included */
    const float *vectors;    /* row-major fp32 rows */
    int64_t row_stride;      /* floats from one row to the next */
    const int32_t *person;
    int32_t dim;
} edge_gallery;

/* A calling thread's own memory: probes in, answers out, and the scores between. */
typedef struct {
    int32_t *scratch;        /* GROUP * stride int32 */
    const float *probes;     /* n x dim float32, as given (not yet normalised) */
    double *out;             /* 4 per probe: best row, its cosine, runner-up row (-1), cosine */
    int32_t *rescored;       /* per probe: rows re-scored exactly */
    int32_t *block_max;      /* stride / 16 int32: one probe's largest score per block of 16 */
} edge_buffers;

int edge_int8_version(void);
int edge_int8_best_level(void);
int edge_int8_scores(const uint8_t *codes4, int64_t ld, int32_t rows, int32_t dim,
                     const int8_t *probe_codes, int32_t n, int32_t level, int32_t *scores);
int edge_int8_search(const edge_gallery *g, int32_t rows, double gallery_step,
                     double max_code_norm, double max_residual, int32_t n, int32_t level,
                     edge_buffers *b);

#endif
