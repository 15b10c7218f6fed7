/* CRC-32 as zlib computes it (reflected polynomial 0xEDB88320, initial value
 * and final XOR 0xFFFFFFFF): hvq_crc32(0, "123456789", 9) == 0xCBF43926,
 * the value Python's zlib.crc32(b"123456789") gives.
 *
 * Incremental: crc = hvq_crc32(crc, chunk, n) over consecutive chunks gives
 * the CRC of their concatenation; start with 0. Safe from any thread (the
 * lookup tables are built once, under pthread_once). */
#ifndef HVQ_COMMON_CRC32_H
#define HVQ_COMMON_CRC32_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

uint32_t hvq_crc32(uint32_t crc, const void *data, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* HVQ_COMMON_CRC32_H */
