/* The Rice position code of the residual coder "rice"; see rice_code.h. */
#include "rice_code.h"

#include <string.h>

/* Escapes happen when a gap's bit length exceeds k + RICE_ESC_SHIFT, that
 * is when g >> k >= RICE_UNARY_MAX = 2^RICE_ESC_SHIFT. */
#define RICE_ESC_SHIFT 5u

static unsigned bit_length(uint64_t v)
{
    return v ? 64u - (unsigned)__builtin_clzll(v) : 0u;
}

unsigned rice_width(uint64_t numel)
{
    unsigned w = numel > 1 ? bit_length(numel - 1) : 0;
    return w ? w : 1;
}

/* The bits of one gap with parameter k. */
static uint64_t gap_bits(uint64_t g, unsigned k, unsigned w)
{
    uint64_t q = g >> k;
    return q < RICE_UNARY_MAX ? q + 1 + k : RICE_UNARY_MAX + w;
}

uint64_t rice_length(const uint64_t *pos, uint64_t n, uint64_t numel, unsigned k)
{
    unsigned w = rice_width(numel);
    uint64_t bits = 0, next = 0;
    for (uint64_t i = 0; i < n; i++) {
        bits += gap_bits(pos[i] - next, k, w);
        next = pos[i] + 1;
    }
    return bits;
}

/* Gap statistics from which the length of the stream for every k follows
 * exactly: hist[b] gaps have bit length b, and ones[b][j] of them have bit
 * j set. */
typedef struct rice_stats {
    uint64_t hist[65];
    uint64_t ones[65][64];
} rice_stats;

/* The length for k from the statistics: gaps of bit length b <= k + 5 are
 * coded (q < 32: q = sum over set bits j >= k of 2^(j - k), each shift
 * below 5), longer ones escaped. n is far below 2^57, so nothing wraps. */
static uint64_t stats_length(const rice_stats *s, unsigned k, unsigned w)
{
    uint64_t bits = 0;
    for (unsigned b = 0; b <= 64; b++) {
        if (!s->hist[b])
            continue;
        if (b > k + RICE_ESC_SHIFT) {
            bits += s->hist[b] * (RICE_UNARY_MAX + w);
            continue;
        }
        bits += s->hist[b] * (k + 1);
        for (unsigned j = k; j < b; j++)
            bits += s->ones[b][j] << (j - k);
    }
    return bits;
}

int rice_plan(const uint64_t *pos, uint64_t n, uint64_t numel, unsigned *k, uint64_t *bits,
              uint64_t *bad)
{
    static const rice_stats zero;
    rice_stats s = zero;
    uint64_t next = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (pos[i] < next || pos[i] >= numel) {
            *bad = i;
            return 0;
        }
        uint64_t g = pos[i] - next;
        unsigned b = bit_length(g);
        s.hist[b]++;
        for (; g; g &= g - 1)
            s.ones[b][__builtin_ctzll(g)]++;
        next = pos[i] + 1;
    }
    unsigned w = rice_width(numel);
    *k = 0;
    *bits = stats_length(&s, 0, w);
    for (unsigned kk = 1; kk <= w; kk++) {
        uint64_t b = stats_length(&s, kk, w);
        if (b < *bits) {
            *bits = b;
            *k = kk;
        }
    }
    return 1;
}

/* ---- writing ------------------------------------------------------------- */

typedef struct bit_writer {
    uint8_t *out;
    uint64_t cap, len; /* bytes available, bytes written */
    uint64_t acc;      /* pending bits, LSB first */
    unsigned nacc;     /* how many (below 8 between calls) */
    int overflow;
} bit_writer;

/* Appends the nb <= 32 low bits of v. */
static void put(bit_writer *bw, uint64_t v, unsigned nb)
{
    v &= (UINT64_C(1) << nb) - 1;
    bw->acc |= v << bw->nacc;
    bw->nacc += nb;
    while (bw->nacc >= 8) {
        if (bw->len < bw->cap)
            bw->out[bw->len++] = (uint8_t)bw->acc;
        else
            bw->overflow = 1;
        bw->acc >>= 8;
        bw->nacc -= 8;
    }
}

/* Appends the nb <= 64 low bits of v. */
static void put_wide(bit_writer *bw, uint64_t v, unsigned nb)
{
    if (nb > 32) {
        put(bw, v, 32);
        put(bw, v >> 32, nb - 32);
    } else {
        put(bw, v, nb);
    }
}

uint64_t rice_write(const uint64_t *pos, uint64_t n, uint64_t numel, unsigned k, uint8_t *out,
                    uint64_t cap)
{
    bit_writer bw = {.out = out, .cap = cap};
    unsigned w = rice_width(numel);
    uint64_t next = 0, bits = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t g = pos[i] - next, q = g >> k;
        next = pos[i] + 1;
        if (q < RICE_UNARY_MAX) {
            put(&bw, (UINT64_C(1) << q) - 1, (unsigned)q + 1); /* q ones, a zero */
            put_wide(&bw, g, k);
        } else {
            put(&bw, (UINT64_C(1) << RICE_UNARY_MAX) - 1, RICE_UNARY_MAX);
            put_wide(&bw, g, w);
        }
        bits += gap_bits(g, k, w);
    }
    if (bw.nacc) {
        if (bw.len < bw.cap)
            bw.out[bw.len++] = (uint8_t)bw.acc;
        else
            bw.overflow = 1;
    }
    return bw.overflow ? UINT64_MAX : bits;
}

/* ---- reading ------------------------------------------------------------- */

const char *rice_strerror(rice_err e)
{
    switch (e) {
    case RICE_OK: return "no error";
    case RICE_BAD_K: return "parameter k above the bit width of a position";
    case RICE_BAD_LENGTH: return "stream length does not match its bit count or entry count";
    case RICE_TRUNCATED: return "an entry runs past the end of the stream";
    case RICE_RANGE: return "a position beyond the tensor";
    case RICE_TRAILING: return "bits left over after the last entry";
    }
    return "unknown error";
}

rice_err rice_reader_init(rice_reader *r, const uint8_t *data, uint64_t nbytes, uint64_t bits,
                          unsigned k, uint64_t numel, uint64_t n)
{
    memset(r, 0, sizeof *r);
    r->w = rice_width(numel);
    if (k > r->w)
        return RICE_BAD_K;
    /* every entry takes at least one bit */
    if (nbytes != bits / 8 + (bits % 8 != 0) || n > bits)
        return RICE_BAD_LENGTH;
    r->data = data;
    r->nbytes = nbytes;
    r->bits = bits;
    r->numel = numel;
    r->k = k;
    return RICE_OK;
}

/* At least 57 stream bits from bit `at` on, LSB first; bytes past the end
 * read as 0. */
static uint64_t peek(const rice_reader *r, uint64_t at)
{
    uint64_t i = at >> 3, v = 0;
    if (i < r->nbytes) {
        uint64_t avail = r->nbytes - i < 8 ? r->nbytes - i : 8;
        for (uint64_t b = 0; b < avail; b++)
            v |= (uint64_t)r->data[i + b] << (8 * b);
    }
    return v >> (at & 7);
}

/* The next nb <= 64 bits. */
static uint64_t get(rice_reader *r, unsigned nb)
{
    uint64_t v;
    if (nb > 32) {
        v = peek(r, r->at) & 0xffffffffu;
        v |= (peek(r, r->at + 32) & ((UINT64_C(1) << (nb - 32)) - 1)) << 32;
    } else {
        v = peek(r, r->at) & ((UINT64_C(1) << nb) - 1);
    }
    r->at += nb;
    return v;
}

rice_err rice_read(rice_reader *r, uint64_t *pos, size_t m, size_t *done)
{
    size_t i;
    for (i = 0; i < m; i++) {
        uint64_t ones = ~peek(r, r->at);
        unsigned q = ones ? (unsigned)__builtin_ctzll(ones) : 64u;
        uint64_t g;
        if (q >= RICE_UNARY_MAX) {
            r->at += RICE_UNARY_MAX;
            g = get(r, r->w);
        } else {
            r->at += q + 1;
            uint64_t low = get(r, r->k);
            /* numel - 1 < 2^w: q >= 2^(w - k) is out of range (and q << k
             * might wrap) */
            g = (uint64_t)q >> (r->w - r->k) ? UINT64_MAX : ((uint64_t)q << r->k) | low;
        }
        if (r->at > r->bits)
            break;
        if (r->next >= r->numel || g >= r->numel - r->next) {
            *done = i;
            return RICE_RANGE;
        }
        pos[i] = r->next + g;
        r->next = pos[i] + 1;
    }
    *done = i;
    return i < m ? RICE_TRUNCATED : RICE_OK;
}

rice_err rice_reader_end(const rice_reader *r)
{
    if (r->at != r->bits)
        return RICE_TRAILING;
    if (r->bits % 8 && r->data[r->nbytes - 1] >> (r->bits % 8))
        return RICE_TRAILING;
    return RICE_OK;
}
