/* The float32 FMA peak of the CPU cores, for `python -m bench backends` (bench/peak.py compiles and runs it).
 *
 * Each OpenMP thread runs 12 independent chains of vector fused multiply-adds (enough to cover the FMA latency
 * of current x86 cores), 512-bit where the compiler targets AVX-512, else 256-bit. Prints one number: GFLOP/s
 * over all threads (an FMA counts as 2 FLOP). What a convolution engine can reach at most in float32. */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#if defined(__AVX512F__)
typedef __m512 vec;
#define LANES 16
#define SET1 _mm512_set1_ps
#define FMA _mm512_fmadd_ps
#define ADD _mm512_add_ps
static float first(vec v) { return _mm512_cvtss_f32(v); }
#else
typedef __m256 vec;
#define LANES 8
#define SET1 _mm256_set1_ps
#define FMA _mm256_fmadd_ps
#define ADD _mm256_add_ps
static float first(vec v) { return _mm256_cvtss_f32(v); }
#endif

#define CHAINS 12

int main(int argc, char **argv) {
    long iters = argc > 1 ? atol(argv[1]) : 50000000L;
    float sink = 0.0f;
    double t0 = omp_get_wtime();
#pragma omp parallel reduction(+ : sink)
    {
        vec acc[CHAINS];
        vec b = SET1(1.0000001f), c = SET1(1e-7f);
        for (int i = 0; i < CHAINS; i++) acc[i] = SET1((float)i);
        for (long k = 0; k < iters; k++)
            for (int i = 0; i < CHAINS; i++) acc[i] = FMA(acc[i], b, c);
        vec s = acc[0];
        for (int i = 1; i < CHAINS; i++) s = ADD(s, acc[i]);
        sink += first(s);  /* keeps the chains alive */
    }
    double seconds = omp_get_wtime() - t0;
    printf("%.1f\n", omp_get_max_threads() * (double)iters * CHAINS * LANES * 2 / seconds / 1e9);
    return sink == 12345.0f;  /* never: only so the compiler cannot drop the work */
}
