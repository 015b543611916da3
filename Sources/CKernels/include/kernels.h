// Numeric kernels on the data path, in C so that they can use the CPU's vector and CRC
// instructions when it has them (chosen at run time) and stay portable when it does not.
// Nothing here allocates; every function is safe to call from any thread.
#ifndef FEDCOORD_KERNELS_H
#define FEDCOORD_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/// CRC-32C (Castagnoli, as iSCSI) of `length` bytes, continuing from `crc` (0 to start).
/// Several GB/s with SSE 4.2 (three interleaved streams), a table a byte at a time without.
uint32_t fed_crc32c(uint32_t crc, const void *buffer, size_t length);

/// The same CRC-32C a byte at a time, without the CPU's instruction: the reference.
uint32_t fed_crc32c_portable(uint32_t crc, const void *buffer, size_t length);

/// The CRC-32C implementations: a table, SSE 4.2's crc32 instruction on three streams, and
/// AVX-512 carry-less multiplication folding four 512-bit lanes (about 3× SSE 4.2).
enum { FED_CRC32C_PORTABLE = 0, FED_CRC32C_SSE42 = 1, FED_CRC32C_VPCLMULQDQ = 2 };

/// Whether this CPU runs `implementation`.
int fed_crc32c_available(int implementation);

/// The fastest implementation this CPU runs (the one `fed_crc32c` uses).
int fed_crc32c_best(void);

/// CRC-32C with a given implementation (the portable one when the CPU lacks it), for tests.
uint32_t fed_crc32c_using(int implementation, uint32_t crc, const void *buffer, size_t length);

/// CRC-32C of `count` Float32 values (4 × `count` bytes) and, in `*first_nonfinite`, the index of
/// the first NaN or infinity among them (-1 when all are finite), in one pass where the CPU has
/// AVX-512 (the check rides on the CRC's loads), two otherwise.
uint32_t fed_crc32c_f32(uint32_t crc, const void *buffer, size_t count, long *first_nonfinite);

/// The CRC-32C of two byte strings one after the other, from the CRC of each and the second's
/// length (zlib's crc32_combine for the Castagnoli polynomial): O(log length), no data read.
uint32_t fed_crc32c_combine(uint32_t crc1, uint32_t crc2, uint64_t length2);

/// The index of the first NaN or infinity among `count` little-endian Float32 values at any
/// alignment, or -1 when all are finite. Branch-free blocks of 64 values, AVX2 when present.
long fed_first_nonfinite_f32(const void *buffer, size_t count);

/// The index of the first of `count` little-endian Float32 values whose magnitude exceeds
/// `bound` (a NaN or an infinity always does, `bound` being finite), or -1. Any alignment.
long fed_first_beyond_f32(const void *buffer, size_t count, float bound);

/// The sum of the squares of `count` Float32 values (float lanes over blocks of 1024, each
/// block's sum added in double). Any alignment.
double fed_sum_squares_f32(const void *buffer, size_t count);

/// Folds `count` streams of `n` uint32s into `target`: target[i] += Σ ±streams[s][i] (mod 2^32),
/// subtracting stream s when `subtract[s]` != 0, in one pass over the target (AVX-512 or AVX2
/// when the CPU has them). The mask fold of FLSECAGG-v1's masking and unmasking.
void fed_fold_u32(uint32_t *target, const uint32_t *const *streams, const int *subtract, int count, size_t n);

/// FLSECAGG-v1 §3.9 quantization of `n` Float32 values (widened to Float64) into two's-complement
/// uint32s: `v = (omega · clamp(d, −clip, clip)) · scale`, then `floor(v)` plus one when
/// `randoms[i] < (v − floor(v)) · 2^32`, in exactly the spec's operation order (no contraction,
/// so every CPU gives the same bits). Returns the index of the first NaN or infinity (nothing
/// written), or -1.
long fed_quantize_f32(const float *delta, const uint32_t *randoms, uint32_t *out, size_t n, double omega, double clip,
                      double scale);

// MARK: libc calls Swift cannot import (variadic, or outside the Glibc module)

/// Puts a descriptor into non-blocking mode with fcntl. Returns -1 with errno on failure.
int fed_set_nonblocking(int fd);

/// Keeps buffers above 64 MiB out of mmap so that repeated multi-MiB allocations reuse warm heap
/// pages instead of page-faulting fresh ones, with two malloc arenas (swift-c-interop.md §6).
/// Returns 1 when accepted.
int fed_tune_malloc_for_large_buffers(void);

/// Never hands freed heap memory back to the kernel. Returns 1 when accepted.
int fed_keep_freed_heap_memory(void);

/// Line-buffers standard output.
void fed_line_buffer_stdout(void);

#endif
