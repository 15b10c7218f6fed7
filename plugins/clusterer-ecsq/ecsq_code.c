/* The index code of clusterer "ecsq": see ecsq_code.h. */
#include "ecsq_code.h"

#include <stdlib.h>
#include <string.h>

#define PROB_BITS 12
#define PROB_ONE (1u << PROB_BITS)
#define ADAPT 6
#define TOP (1u << 24)

/* The adaptive probabilities (of a 0 bit), one per context. */
typedef struct model {
    uint16_t zero, sign;
    uint16_t exp[ECSQ_MAX_EXP];
    uint16_t mant[ECSQ_MAX_EXP][3];
} model;

static void model_init(model *m)
{
    uint16_t *p = (uint16_t *)m;
    for (size_t i = 0; i < sizeof *m / sizeof *p; i++)
        p[i] = PROB_ONE / 2;
}

/* The bit length of v (0 for 0). */
static unsigned bit_length(uint64_t v)
{
    unsigned n = 0;
    while (v) {
        n++;
        v >>= 1;
    }
    return n;
}

/* ---- encoder ------------------------------------------------------------ */

typedef struct enc {
    uint64_t low;
    uint32_t range;
    uint8_t cache;
    uint64_t pending; /* bytes held back: the cache byte and 0xff bytes */
    int first;        /* the leading byte (always 0) is not stored */
    uint8_t *buf;
    size_t n, cap;
    int oom;
} enc;

static inline void put_byte(enc *e, uint8_t b)
{
    if (e->first) {
        e->first = 0;
        return;
    }
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 4096;
        uint8_t *p = e->oom ? NULL : realloc(e->buf, cap);
        if (!p) {
            e->oom = 1;
            return;
        }
        e->buf = p;
        e->cap = cap;
    }
    e->buf[e->n++] = b;
}

/* Moves the top byte of low out, resolving a carry into the bytes held. */
static inline void shift_low(enc *e)
{
    if ((uint32_t)e->low < 0xff000000u || (e->low >> 32) != 0) {
        uint8_t carry = (uint8_t)(e->low >> 32), b = e->cache;
        do {
            put_byte(e, (uint8_t)(b + carry));
            b = 0xff;
        } while (--e->pending != 0);
        e->cache = (uint8_t)(e->low >> 24);
    }
    e->pending++;
    e->low = (e->low & 0x00ffffffu) << 8;
}

static inline void enc_bit(enc *e, uint16_t *p, unsigned bit)
{
    uint32_t bound = (e->range >> PROB_BITS) * *p;
    if (bit) {
        e->low += bound;
        e->range -= bound;
        *p = (uint16_t)(*p - (*p >> ADAPT));
    } else {
        e->range = bound;
        *p = (uint16_t)(*p + ((PROB_ONE - *p) >> ADAPT));
    }
    while (e->range < TOP) {
        e->range <<= 8;
        shift_low(e);
    }
}

static inline void enc_direct(enc *e, unsigned bit)
{
    e->range >>= 1;
    if (bit)
        e->low += e->range;
    while (e->range < TOP) {
        e->range <<= 8;
        shift_low(e);
    }
}

static void enc_level(enc *e, model *s, int32_t q)
{
    enc_bit(e, &s->zero, q != 0);
    if (q == 0)
        return;
    enc_bit(e, &s->sign, q < 0);
    uint32_t v = (uint32_t)(q < 0 ? -(int64_t)q : q); /* m + 1, >= 1 */
    unsigned k = bit_length(v) - 1;
    for (unsigned i = 0; i < k; i++)
        enc_bit(e, &s->exp[i], 1);
    enc_bit(e, &s->exp[k], 0);
    unsigned ctx = 0;
    for (unsigned i = 0; i < k; i++) {
        unsigned bit = (v >> (k - 1 - i)) & 1;
        if (i < 2) {
            enc_bit(e, &s->mant[k][ctx], bit);
            ctx = 1 + bit;
        } else {
            enc_direct(e, bit);
        }
    }
}

int ecsq_encode(const int32_t *q, uint64_t rows, uint64_t cols, uint8_t **out, size_t *len)
{
    model *m = malloc(sizeof *m);
    enc e = {.range = 0xffffffffu, .pending = 1, .first = 1, .oom = !m};
    if (m) {
        model_init(m);
        for (uint64_t i = 0; i < rows * cols; i++)
            enc_level(&e, m, q[i]);
        for (int i = 0; i < 5; i++)
            shift_low(&e);
    }
    free(m);
    if (e.oom) {
        free(e.buf);
        *out = NULL;
        return -1;
    }
    *out = e.buf ? e.buf : malloc(1);
    *len = e.n;
    return *out ? 0 : -1;
}

/* ---- decoder ------------------------------------------------------------ */

typedef struct dec {
    uint32_t code, range;
    const uint8_t *buf;
    size_t len, pos;
    int past; /* a byte beyond the stream was needed */
} dec;

static inline uint8_t next_byte(dec *d)
{
    if (d->pos < d->len)
        return d->buf[d->pos++];
    d->past = 1;
    return 0;
}

/* Branch-free but for the renormalisation (a 0 and a 1 are about as
 * likely, so a branch on the bit is mispredicted half the time): the same
 * arithmetic as the encoder's, selected by a mask. */
static inline unsigned dec_bit(dec *d, uint16_t *p)
{
    uint32_t pv = *p, range = d->range;
    uint32_t bound = (range >> PROB_BITS) * pv;
    unsigned bit = d->code >= bound;
    uint32_t mask = 0u - (uint32_t)bit;
    d->code -= bound & mask;
    d->range = bound + ((range - bound - bound) & mask); /* bound, or range - bound */
    uint32_t p0 = pv + ((PROB_ONE - pv) >> ADAPT), p1 = pv - (pv >> ADAPT);
    *p = (uint16_t)(p0 ^ ((p0 ^ p1) & mask));
    while (d->range < TOP) {
        d->range <<= 8;
        d->code = (d->code << 8) | next_byte(d);
    }
    return bit;
}

static inline unsigned dec_direct(dec *d)
{
    d->range >>= 1;
    unsigned bit = d->code >= d->range;
    if (bit)
        d->code -= d->range;
    while (d->range < TOP) {
        d->range <<= 8;
        d->code = (d->code << 8) | next_byte(d);
    }
    return bit;
}

/* One level; -1 for an exponent of ECSQ_MAX_EXP. */
static int dec_level(dec *d, model *s, int32_t *q)
{
    if (!dec_bit(d, &s->zero)) {
        *q = 0;
        return 0;
    }
    unsigned neg = dec_bit(d, &s->sign), k = 0;
    while (dec_bit(d, &s->exp[k]))
        if (++k == ECSQ_MAX_EXP)
            return -1;
    uint32_t v = 1;
    unsigned ctx = 0;
    for (unsigned i = 0; i < k; i++) {
        unsigned bit = i < 2 ? dec_bit(d, &s->mant[k][ctx]) : dec_direct(d);
        ctx = 1 + bit;
        v = (v << 1) | bit;
    }
    *q = neg ? -(int32_t)v : (int32_t)v;
    return 0;
}

int ecsq_decode(const uint8_t *buf, size_t len, uint64_t rows, uint64_t cols, int32_t *q)
{
    model *m = malloc(sizeof *m);
    if (!m)
        return -1;
    model_init(m);
    dec d = {.range = 0xffffffffu, .buf = buf, .len = len};
    for (int i = 0; i < 4; i++)
        d.code = (d.code << 8) | next_byte(&d);
    int rc = 0;
    for (uint64_t i = 0; i < rows * cols && rc == 0; i++)
        if (dec_level(&d, m, &q[i]) != 0 || d.past)
            rc = -1;
    free(m);
    return rc == 0 && d.pos == d.len ? 0 : -1;
}

int hvq_ecsq_decode_f32(const uint8_t *buf, size_t len, uint64_t count, float step, float *out)
{
    int32_t *q = count <= SIZE_MAX / sizeof *q - 1 ? malloc((size_t)count * sizeof *q + 1) : NULL;
    if (!q)
        return -2;
    int rc = ecsq_decode(buf, len, 1, count, q) != 0 ? -1 : 0;
    for (uint64_t i = 0; i < count && rc == 0; i++)
        out[i] = (float)q[i] * step;
    free(q);
    return rc;
}
