/*
 * rftpack._native: the decoders' hot loops, the rANS encoder and dq's search in C, built at
 * install time where a C compiler is found (optional: without it rftpack codes with
 * constriction / numba / numpy and searches with numba / numpy, to the same values). Wrapped,
 * with its argument checks, by rftpack/native.py; nothing else imports this module.
 *
 *   rans_decode(words, freqs, bits, count, out, itemsize, bounds) -> (states, words_left)
 *       constriction's AnsCoder(words).decode(Categorical(freqs / 2**bits, perfect=False),
 *       count), symbol for symbol: the port of rftpack/stages/_rans_jit.py (whose docstring
 *       says what constriction does), into `out`, unsigned integers of `itemsize` bytes
 *       (1, 2 or 4; the alphabet must fit). `bounds` (int64, lanes + 1 word offsets) splits
 *       the words into lanes, independent streams of one model: symbol i is lane i mod lanes'
 *       (format version 3, FORMAT.md 7.1). Returns the lanes' final states OR-ed together and
 *       the words none of them read.
 *   rans_encode(symbols, itemsize, freqs, bits, lanes) -> (words, lane word counts)
 *       the encoder of those streams: each lane's words as constriction's
 *       AnsCoder().encode_reverse(lane's symbols, the same model) leaves them, word for word,
 *       the lanes' words one after the other (little-endian bytes).
 *   histogram(symbols, itemsize, bins, row_class, length, out)
 *       np.bincount of uint8/16/32 symbols into int64 `out`, or per class of the rows of
 *       `length` symbols (uint8 `row_class`, one per row) into out's rows.
 *   huffman_depths(counts, out), huffman_pack(symbols, lengths, codes) -> bytes
 *       floatplanes' Huffman encoder (_zhuff.py): code lengths from the heap of subtrees, and
 *       zstd's backward Huffman bitstream of uint8 symbols.
 *   dq_replay(symbols, itemsize, chain, trans, quantizer, parity, values, out, value_size)
 *       dq's decoder replay: each chain of `chain` symbols starts in state 0; symbol s gets
 *       values[2 s + quantizer[state]] and moves the state to trans[2 state + parity[s]].
 *       Values and `out` are float64 (value_size 8) or float32 (4).
 *   planes_assemble(a, b, rest, r, out, itemsize)
 *       floatplanes' elements from their byte planes (FORMAT.md 7.4): the top 16 bits are
 *       (a << 8 | b) rotated right by r, the bytes below them the `rest` planes, lowest first;
 *       one whole little-endian element stored at a time.
 *   dq_viterbi(xs, steps, lam, rates, edges, out, scale, cap, start[, kernel])
 *       dq's encoder search (rftpack/stages/_dq_jit.py's viterbi_chains, index for index):
 *       float64 `xs`, chains of `steps` weights (in units of the step), each from state 0,
 *       minimising squared error + lam * rates[min(|k|, top)] over the trellis `edges`
 *       (int64, states x 5: into state s from (A, its parity) or (B, its parity), quantizer
 *       q; A wins ties), in int16 path costs (`scale`, `cap`, `start`: rftpack/stages/dq.py's
 *       search_costs). Indices into int64 `out`, one per weight. OverflowError for a weight
 *       that is not finite or beyond VITERBI_MAX_X (the other searches take those).
 *       `kernel` names the add-compare-select to run (default: the widest this CPU runs).
 *   dq_kernels() -> the names of the kernels this CPU runs
 *
 * Why C and not only numba: numba's start-up (~0.75 s a process) costs more than it saves on
 * a model of MiniLM's size; this module loads in about a millisecond. Every loop releases the
 * GIL, so --threads decodes tensors, and searches groups of chains, side by side.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "rftpack._native reads little-endian words in place: big-endian hosts use the fallbacks"
#endif

#define PRECISION 24
#define QUANTILE_MASK ((UINT64_C(1) << PRECISION) - 1)
#define LOW (UINT64_C(1) << 32)
#define PACKED_ALPHABET (INT64_C(1) << 16)
#define MAX_SLOT_BITS 14
#define SYMBOL_MASK UINT64_C(0xFFFF)
#define FIELD_MASK ((UINT64_C(1) << PRECISION) - 1)
#define LO_SHIFT 16
#define FREQ_SHIFT (16 + PRECISION)

static int bit_length(int64_t x) {
    int length = 0;
    while (x > 0) {
        x >>= 1;
        length++;
    }
    return length;
}

/* constriction's fast_quantized_cdf: the same float64 operations in the same order
 * (_rans_jit._quantized_cdf). Returns NULL, or the error message. */
static const char *quantized_cdf(const int64_t *freqs, int64_t n, int bits, uint64_t *cdf) {
    const double inverse = 1.0 / (double)(INT64_C(1) << bits);  /* exact: x * 2**-bits */
    double normalization = 0.0;
    for (int64_t i = 0; i < n; i++) {
        if (freqs[i] < 0) return "rans model: negative frequency";
        normalization += (double)freqs[i] * inverse;
    }
    if (!(normalization >= 2.2250738585072014e-308 && normalization < INFINITY))
        return "rans model: frequencies sum to zero";
    const double scale = (double)((INT64_C(1) << PRECISION) - n) / normalization;
    double cumulative = 0.0;  /* before symbol i, summed left to right as in the first pass */
    int64_t previous = -1;
    for (int64_t i = 0; i < n; i++) {
        const double x = cumulative * scale;
        uint64_t left;
        if (x != x) left = 0;
        else if (x >= 4294967295.0) left = 4294967295u;
        else left = (uint64_t)x;  /* x >= 0: truncation is floor, as Rust's `as u32` */
        left = (left + (uint64_t)i) & UINT64_C(0xFFFFFFFF);
        if ((int64_t)left <= previous) return "rans model: quantized CDF is not increasing";
        cdf[i] = left;
        previous = (int64_t)left;
        cumulative += (double)freqs[i] * inverse;
    }
    if (previous >= (INT64_C(1) << PRECISION)) return "rans model: quantized CDF is not increasing";
    cdf[n] = UINT64_C(1) << PRECISION;
    return NULL;
}

/* Entry j of 2**slot_bits (+1 for the end): the symbol whose interval holds quantile
 * j << (24 - slot_bits), packed as s | cdf[s] << 16 | frequency << 40. */
static void slot_table(const uint64_t *cdf, int64_t n, int slot_bits, uint64_t *table) {
    const int64_t slots = INT64_C(1) << slot_bits;
    const int shift = PRECISION - slot_bits;
    int64_t j = 0;
    for (int64_t s = 0; s < n; s++) {
        const int64_t end = ((int64_t)cdf[s + 1] + (INT64_C(1) << shift) - 1) >> shift;
        if (end > j) {
            const uint64_t lo = cdf[s];
            const uint64_t frequency = cdf[s + 1] - lo;
            const uint64_t entry = (uint64_t)s | (lo << LO_SHIFT) | (frequency << FREQ_SHIFT);
            for (int64_t k = j; k < end; k++) table[k] = entry;
            j = end;
        }
    }
    const uint64_t lo = cdf[n - 1];
    table[slots] = (uint64_t)(n - 1) | (lo << LO_SHIFT) | ((cdf[n] - lo) << FREQ_SHIFT);
}

static inline uint32_t word_at(const unsigned char *words, Py_ssize_t i) {
    uint32_t w;
    memcpy(&w, words + 4 * i, 4);  /* the payload's words need not be aligned */
    return w;
}

/* One rANS stream (a lane): its state, and its words [floor, pos) still to be read, from the
 * top down. */
typedef struct {
    uint64_t state;
    Py_ssize_t pos, floor;
} Lane;

/* constriction's AnsCoder(words[begin:end]); 1 when its last word is 0 (its one refusal) */
static int lane_open(const unsigned char *words, Py_ssize_t begin, Py_ssize_t end, Lane *lane) {
    lane->floor = begin;
    lane->pos = end;
    lane->state = 0;
    if (lane->pos > begin) {
        lane->pos--;
        lane->state = word_at(words, lane->pos);
        if (lane->state == 0) return 1;
        if (lane->pos > begin) {
            lane->pos--;
            lane->state = (lane->state << 32) | word_at(words, lane->pos);
        }
    }
    return 0;
}

typedef struct {
    const unsigned char *words;
    const uint64_t *cdf, *table;  /* table: NULL for alphabets over 2**16 (binary search) */
    int64_t n;                    /* symbols in the model */
    int shift;                    /* 24 - slot bits */
} Model;

static inline __attribute__((always_inline)) int64_t next_symbol(Lane *lane, const Model *m) {
    const uint64_t quantile = lane->state & QUANTILE_MASK;
    int64_t symbol, a, b;
    uint64_t lo, frequency;
    if (m->table) {
        const uint64_t slot = quantile >> m->shift;
        const uint64_t entry = m->table[slot];
        symbol = (int64_t)(entry & SYMBOL_MASK);
        lo = (entry >> LO_SHIFT) & FIELD_MASK;
        frequency = entry >> FREQ_SHIFT;
        if (quantile - lo < frequency) goto found;
        /* the slot holds symbol boundaries: the symbol is in symbol + 1 ... the next slot's */
        a = symbol + 1;
        b = (int64_t)(m->table[slot + 1] & SYMBOL_MASK);
    } else {
        a = 0;
        b = m->n - 1;
    }
    while (a < b) {
        const int64_t mid = (a + b + 1) >> 1;
        if (m->cdf[mid] <= quantile) a = mid;
        else b = mid - 1;
    }
    symbol = a;
    lo = m->cdf[a];
    frequency = m->cdf[a + 1] - lo;
found:
    lane->state = (lane->state >> PRECISION) * frequency + (quantile - lo);
    if (lane->state < LOW && lane->pos > lane->floor) {
        lane->pos--;
        lane->state = (lane->state << 32) | word_at(m->words, lane->pos);
    }
    return symbol;
}

/* Symbol i comes from lane i mod `lanes`. One, two (what rftpack writes for large segments)
 * and four lanes run unrolled, so the lanes' independent steps overlap; other counts go lane
 * by lane. */
#define DEFINE_DECODE(T)                                                              \
    static void decode_##T(Lane *lane, int lanes, const Model *m, Py_ssize_t count,  \
                           T *out) {                                                  \
        Py_ssize_t i = 0;                                                             \
        if (lanes == 4) {                                                             \
            Lane l0 = lane[0], l1 = lane[1], l2 = lane[2], l3 = lane[3];              \
            for (; i + 4 <= count; i += 4) {                                          \
                out[i] = (T)next_symbol(&l0, m);                                      \
                out[i + 1] = (T)next_symbol(&l1, m);                                  \
                out[i + 2] = (T)next_symbol(&l2, m);                                  \
                out[i + 3] = (T)next_symbol(&l3, m);                                  \
            }                                                                         \
            lane[0] = l0, lane[1] = l1, lane[2] = l2, lane[3] = l3;                   \
        } else if (lanes == 2) {                                                      \
            Lane l0 = lane[0], l1 = lane[1];                                          \
            for (; i + 2 <= count; i += 2) {                                          \
                out[i] = (T)next_symbol(&l0, m);                                      \
                out[i + 1] = (T)next_symbol(&l1, m);                                  \
            }                                                                         \
            lane[0] = l0, lane[1] = l1;                                               \
        } else if (lanes == 1) {                                                      \
            Lane l0 = lane[0];                                                        \
            for (; i < count; i++) out[i] = (T)next_symbol(&l0, m);                   \
            lane[0] = l0;                                                             \
        }                                                                             \
        for (; i < count; i++) out[i] = (T)next_symbol(&lane[i % lanes], m);          \
    }

DEFINE_DECODE(uint8_t)
DEFINE_DECODE(uint16_t)
DEFINE_DECODE(uint32_t)

static int slot_bits_for(int64_t alphabet, int64_t count) {
    int bits = bit_length(alphabet) + 3;
    const int by_count = bit_length(count);
    if (by_count < bits) bits = by_count;
    if (MAX_SLOT_BITS < bits) bits = MAX_SLOT_BITS;
    return bits < 1 ? 1 : bits;
}

#define MAX_LANES 255

static PyObject *rans_decode(PyObject *self, PyObject *args) {
    Py_buffer words, freqs, out, bounds;
    int bits, itemsize;
    Py_ssize_t count;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*inw*iy*", &words, &freqs, &bits, &count, &out, &itemsize,
                          &bounds))
        return NULL;
    PyObject *result = NULL;
    uint64_t *cdf = NULL, *table = NULL;
    const int64_t n = freqs.len / 8;
    const int lanes = (int)(bounds.len / 8) - 1;
    const int64_t *bound = bounds.buf;
    const char *error = NULL;
    if (!(itemsize == 1 || itemsize == 2 || itemsize == 4) || words.len % 4 || freqs.len % 8 ||
        count < 0 || out.len != itemsize * count || bounds.len % 8 || lanes < 1 ||
        lanes > MAX_LANES) {
        error = "rans: buffers of the wrong size";
    } else if (itemsize < 4 && n > (INT64_C(1) << (8 * itemsize))) {
        error = "rans: the alphabet does not fit the output's integers";
    } else if (n < 2 || n >= (INT64_C(1) << PRECISION) - 1) {
        error = "rans model: constriction's categorical model needs 2 ... 2**24 - 2 symbols";
    } else if (bits < 1 || bits > 62) {
        error = "rans model: table totals 2**1 ... 2**62 are supported";
    } else if (bound[0] != 0 || bound[lanes] != words.len / 4) {
        error = "rans: the lanes do not cover the words";
    } else {
        for (int l = 0; l < lanes; l++)
            if (bound[l + 1] < bound[l]) error = "rans: the lanes do not cover the words";
    }
    if (error) {
        PyErr_SetString(PyExc_ValueError, error);
        goto done;
    }
    const int packed = n <= PACKED_ALPHABET;
    const int slot_bits = slot_bits_for(n, count);
    cdf = malloc((size_t)(n + 1) * sizeof(uint64_t));
    table = packed ? malloc((((size_t)1 << slot_bits) + 1) * sizeof(uint64_t)) : NULL;
    if (!cdf || (packed && !table)) {
        PyErr_NoMemory();
        goto done;
    }
    Lane lane[MAX_LANES];
    uint64_t states = 0;
    Py_ssize_t left = 0;
    Py_BEGIN_ALLOW_THREADS
    error = quantized_cdf((const int64_t *)freqs.buf, n, bits, cdf);
    for (int l = 0; !error && l < lanes; l++) {
        if (lane_open(words.buf, (Py_ssize_t)bound[l], (Py_ssize_t)bound[l + 1], &lane[l]))
            error = "rans: invalid compressed data: ANS compressed data never ends in a zero "
                    "word";
    }
    if (!error) {
        if (packed) slot_table(cdf, n, slot_bits, table);
        const Model model = {words.buf, cdf, table, n, PRECISION - slot_bits};
        if (itemsize == 1) decode_uint8_t(lane, lanes, &model, count, out.buf);
        else if (itemsize == 2) decode_uint16_t(lane, lanes, &model, count, out.buf);
        else decode_uint32_t(lane, lanes, &model, count, out.buf);
        for (int l = 0; l < lanes; l++) {
            states |= lane[l].state;
            left += lane[l].pos - lane[l].floor;
        }
    }
    Py_END_ALLOW_THREADS
    if (error) PyErr_SetString(PyExc_ValueError, error);
    else result = Py_BuildValue("(Kn)", (unsigned long long)states, left);
done:
    free(cdf);
    free(table);
    PyBuffer_Release(&words);
    PyBuffer_Release(&freqs);
    PyBuffer_Release(&out);
    PyBuffer_Release(&bounds);
    return result;
}

/* A symbol's encoding step: state -> (state / f) << 24 | (lo + state % f), with the division
 * done as a multiply by the reciprocal rcp = (2**64 - 1) / f where the compiler has 128-bit
 * integers: its quotient is the true one or one less (for every 64-bit state and every f),
 * and the remainder says which. (ryg_rans's rans64.h reciprocal is exact only below 2**63,
 * which constriction's states pass: for 1,439,800 frequencies above 2**23 it was one too high
 * at states just below their limit.) `limit` = f << 40: a state at or above it pushes a word
 * first. */
typedef struct {
    uint64_t limit, rcp, lo, frequency;
} EncodeSymbol;

#ifdef __SIZEOF_INT128__
__extension__ typedef unsigned __int128 u128; /* (a GCC and clang extension) */
#endif

static void encode_symbol_init(EncodeSymbol *e, uint64_t lo, uint64_t frequency) {
    e->limit = frequency << (64 - PRECISION);
    e->rcp = ~UINT64_C(0) / frequency;
    e->lo = lo;
    e->frequency = frequency;
}

static inline uint64_t encode_step(uint64_t state, const EncodeSymbol *e) {
#ifdef __SIZEOF_INT128__
    uint64_t q = (uint64_t)(((u128)state * e->rcp) >> 64);
    uint64_t r = state - q * e->frequency;
    const uint64_t over = r >= e->frequency;
    q += over;
    r -= over * e->frequency;
#else
    const uint64_t q = state / e->frequency, r = state % e->frequency;
#endif
    return (q << PRECISION) | (e->lo + r);
}

/* One symbol onto a lane: a 32-bit word out first when the state would pass 2**64 (written
 * always, kept only then: no branch to mispredict) */
#define ENCODE_ONE(state, pushed, words, e)                                             \
    do {                                                                                \
        const int out = (state) >= (e)->limit;                                          \
        (words)[pushed] = (uint32_t)(state);                                            \
        (pushed) += out;                                                                \
        (state) = encode_step(out ? (state) >> 32 : (state), (e));                      \
    } while (0)

/* The lanes' symbols (lane l: every `lanes`-th of `symbols` from l) onto words + l * room,
 * the way constriction's AnsCoder().encode_reverse(lane's symbols, model) does: the last
 * symbol first, and the final state as one or two words (none when it is 0). Two lanes run
 * side by side, their steps overlapping. Their word counts go to `used`; returns -1 for a
 * symbol outside the model, else 0. */
#define DEFINE_ENCODE(T)                                                                \
    static int encode_##T(const T *symbols, Py_ssize_t count, int lanes,                \
                          const EncodeSymbol *model, int64_t n, uint32_t *words,         \
                          Py_ssize_t room, Py_ssize_t *used) {                           \
        for (Py_ssize_t i = 0; i < count; i++)                                          \
            if ((uint64_t)symbols[i] >= (uint64_t)n) return -1;                         \
        for (int l = 0; l < lanes; l += (lanes == 2 ? 2 : 1)) {                         \
            uint64_t state = 0, other = 0;                                              \
            Py_ssize_t pushed = 0, pushed_other = 0;                                    \
            uint32_t *lane = words + (size_t)l * (size_t)room;                          \
            uint32_t *next = lane + room;                                               \
            Py_ssize_t i = l + (count - 1 - l) / lanes * lanes; /* the lane's last */   \
            if (count <= l) i = -1;                                                     \
            if (lanes == 2) {                                                           \
                i = count - 1;                                                          \
                if (i >= 0 && i % 2 == 0) { /* lane 0 has one more: it goes alone */    \
                    ENCODE_ONE(state, pushed, lane, model + symbols[i]);                \
                    i--;                                                                \
                }                                                                       \
                for (; i >= 1; i -= 2) { /* symbols i - 1 (lane 0) and i (lane 1) */     \
                    ENCODE_ONE(state, pushed, lane, model + symbols[i - 1]);            \
                    ENCODE_ONE(other, pushed_other, next, model + symbols[i]);          \
                }                                                                       \
            } else {                                                                    \
                for (; i >= l; i -= lanes)                                              \
                    ENCODE_ONE(state, pushed, lane, model + symbols[i]);                \
            }                                                                           \
            if (state) {                                                                \
                lane[pushed++] = (uint32_t)state;                                       \
                if (state >> 32) lane[pushed++] = (uint32_t)(state >> 32);              \
            }                                                                           \
            used[l] = pushed;                                                           \
            if (lanes == 2) {                                                           \
                if (other) {                                                            \
                    next[pushed_other++] = (uint32_t)other;                             \
                    if (other >> 32) next[pushed_other++] = (uint32_t)(other >> 32);    \
                }                                                                       \
                used[l + 1] = pushed_other;                                             \
            }                                                                           \
        }                                                                               \
        return 0;                                                                       \
    }

DEFINE_ENCODE(uint8_t)
DEFINE_ENCODE(uint16_t)
DEFINE_ENCODE(uint32_t)

/* rans_division_check(first, last) -> how many of the encoding steps of the frequencies
 * first ... last - 1 differ from plain division, at each one's edge states (0, 1, f - 1, f,
 * 2**63 - 1, 2**63 and just below its limit) and a few pseudo-random ones: 0 where the
 * reciprocal is exact (a test runs it over every frequency) */
static PyObject *rans_division_check(PyObject *self, PyObject *args) {
    long long first, last;
    (void)self;
    if (!PyArg_ParseTuple(args, "LL", &first, &last)) return NULL;
    if (first < 1 || last > (1LL << PRECISION) || first > last) {
        PyErr_SetString(PyExc_ValueError, "rans: frequencies are 1 ... 2**24");
        return NULL;
    }
    long long bad = 0;
    uint64_t noise = UINT64_C(88172645463325252);
    Py_BEGIN_ALLOW_THREADS
    for (uint64_t f = (uint64_t)first; f < (uint64_t)last; f++) {
        EncodeSymbol e;
        encode_symbol_init(&e, 0, f);
        uint64_t xs[12] = {0, 1, f - 1, f, e.limit - 1, e.limit - 2, e.limit - f,
                           e.limit - f - 1, UINT64_C(1) << 63, (UINT64_C(1) << 63) - 1, 0, 0};
        for (int k = 10; k < 12; k++) { /* xorshift64 */
            noise ^= noise << 13, noise ^= noise >> 7, noise ^= noise << 17;
            xs[k] = (noise >> (k == 11 ? noise % 40 : 0)) % e.limit;
        }
        for (int k = 0; k < 12; k++) {
            const uint64_t x = xs[k];
            if (x < e.limit && encode_step(x, &e) != (((x / f) << PRECISION) | (x % f))) bad++;
        }
    }
    Py_END_ALLOW_THREADS
    return PyLong_FromLongLong(bad);
}

static PyObject *rans_encode(PyObject *self, PyObject *args) {
    Py_buffer symbols, freqs;
    int itemsize, bits, lanes;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*iy*ii", &symbols, &itemsize, &freqs, &bits, &lanes))
        return NULL;
    PyObject *result = NULL, *body = NULL, *lengths = NULL;
    uint64_t *cdf = NULL;
    uint32_t *words = NULL;
    EncodeSymbol *model = NULL;
    const int64_t n = freqs.len / 8;
    const char *error = NULL;
    if (!(itemsize == 1 || itemsize == 2 || itemsize == 4) || symbols.len % itemsize ||
        freqs.len % 8 || lanes < 1 || lanes > MAX_LANES)
        error = "rans: buffers of the wrong size";
    else if (n < 2 || n >= (INT64_C(1) << PRECISION) - 1)
        error = "rans model: constriction's categorical model needs 2 ... 2**24 - 2 symbols";
    else if (bits < 1 || bits > 62)
        error = "rans model: table totals 2**1 ... 2**62 are supported";
    if (error) {
        PyErr_SetString(PyExc_ValueError, error);
        goto done;
    }
    const Py_ssize_t count = symbols.len / itemsize;
    /* a symbol adds at most 24 bits, a push takes 32: at most one word a symbol, plus two */
    const Py_ssize_t room = count / lanes + 3;
    cdf = malloc((size_t)(n + 1) * sizeof(uint64_t));
    words = malloc((size_t)lanes * (size_t)room * sizeof(uint32_t));
    model = malloc((size_t)n * sizeof(EncodeSymbol));
    lengths = PyTuple_New(lanes);
    if (!cdf || !words || !model) {
        PyErr_NoMemory();
        goto done;
    }
    if (!lengths) goto done;
    Py_ssize_t used[MAX_LANES], total = 0;
    Py_BEGIN_ALLOW_THREADS
    error = quantized_cdf((const int64_t *)freqs.buf, n, bits, cdf);
    for (int64_t i = 0; !error && i < n; i++)
        encode_symbol_init(model + i, cdf[i], cdf[i + 1] - cdf[i]);
    int bad = 0;
    if (!error && itemsize == 1)
        bad = encode_uint8_t(symbols.buf, count, lanes, model, n, words, room, used);
    else if (!error && itemsize == 2)
        bad = encode_uint16_t(symbols.buf, count, lanes, model, n, words, room, used);
    else if (!error)
        bad = encode_uint32_t(symbols.buf, count, lanes, model, n, words, room, used);
    if (bad) error = "rans: a symbol lies outside the model";
    for (int l = 0; !error && l < lanes; l++) total += used[l];
    Py_END_ALLOW_THREADS
    if (error) {
        PyErr_SetString(PyExc_ValueError, error);
        goto done;
    }
    body = PyBytes_FromStringAndSize(NULL, 4 * total);
    if (!body) goto done;
    char *to = PyBytes_AS_STRING(body);
    for (int l = 0; l < lanes; l++) {
        const uint32_t *lane = words + (size_t)l * (size_t)room;
        for (Py_ssize_t i = 0; i < used[l]; i++, to += 4) { /* little-endian words */
            const uint32_t w = lane[i];
            const unsigned char le[4] = {(unsigned char)w, (unsigned char)(w >> 8),
                                         (unsigned char)(w >> 16), (unsigned char)(w >> 24)};
            memcpy(to, le, 4);
        }
        PyObject *length = PyLong_FromSsize_t(used[l]);
        if (!length) goto done;
        PyTuple_SET_ITEM(lengths, l, length);
    }
    result = PyTuple_Pack(2, body, lengths);
done:
    Py_XDECREF(body);
    Py_XDECREF(lengths);
    free(cdf);
    free(words);
    free(model);
    PyBuffer_Release(&symbols);
    PyBuffer_Release(&freqs);
    return result;
}

/* Counts of each symbol (< bins) of rows of `length` into out[row_class[row]] (one table
 * when there are no classes), each class's counts spread over four tables round-robin (its
 * row of `out` and three in `spare`, summed into it at the end), so that runs of one symbol
 * do not wait on their own increments. Returns -1 for a symbol out of range. */
#define DEFINE_HISTOGRAM(T)                                                                \
    static int histogram_##T(const T *symbols, Py_ssize_t count, Py_ssize_t bins,         \
                             const uint8_t *row_class, Py_ssize_t length, int tables,      \
                             int64_t *out, int64_t *spare) {                               \
        for (Py_ssize_t i = 0; i < count;) {                                                \
            const Py_ssize_t end = row_class && count - i > length ? i + length : count;    \
            const Py_ssize_t t = row_class ? row_class[i / length] : 0;                     \
            int64_t *w = out + t * bins, *x = spare + 3 * t * bins;                         \
            int64_t *y = x + bins, *z = y + bins;                                           \
            for (; i + 4 <= end; i += 4) {                                                  \
                const Py_ssize_t s0 = symbols[i], s1 = symbols[i + 1];                      \
                const Py_ssize_t s2 = symbols[i + 2], s3 = symbols[i + 3];                  \
                if (s0 >= bins || s1 >= bins || s2 >= bins || s3 >= bins) return -1;       \
                w[s0]++, x[s1]++, y[s2]++, z[s3]++;                                         \
            }                                                                               \
            for (; i < end; i++) {                                                          \
                if ((Py_ssize_t)symbols[i] >= bins) return -1;                              \
                w[symbols[i]]++;                                                            \
            }                                                                               \
        }                                                                                   \
        for (Py_ssize_t t = 0; t < tables; t++)                                             \
            for (Py_ssize_t k = 0; k < bins; k++)                                           \
                out[t * bins + k] += spare[3 * t * bins + k] + spare[(3 * t + 1) * bins + k] \
                                     + spare[(3 * t + 2) * bins + k];                       \
        return 0;                                                                           \
    }

DEFINE_HISTOGRAM(uint8_t)
DEFINE_HISTOGRAM(uint16_t)
DEFINE_HISTOGRAM(uint32_t)

/* histogram(symbols, itemsize, bins, row_class, length, out): out (int64, classes x bins,
 * zeroed by the caller) += counts of the symbols, row r of `length` symbols counted in
 * table row_class[r] (uint8; empty: one table, rows ignored) */
static PyObject *histogram(PyObject *self, PyObject *args) {
    Py_buffer symbols, row_class, out;
    int itemsize;
    Py_ssize_t bins, length;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*iny*nw*", &symbols, &itemsize, &bins, &row_class, &length,
                          &out))
        return NULL;
    PyObject *result = NULL;
    int64_t *spare = NULL;
    const Py_ssize_t count = itemsize > 0 ? symbols.len / itemsize : 0;
    const uint8_t *classes = row_class.len ? (const uint8_t *)row_class.buf : NULL;
    int most = 0;
    for (Py_ssize_t r = 0; r < row_class.len; r++)
        if (classes[r] > most) most = classes[r];
    /* (bins at most 2**32, as symbols are at most 32-bit: no size below overflows) */
    if (!(itemsize == 1 || itemsize == 2 || itemsize == 4) || symbols.len % itemsize ||
        bins < 1 || bins > (INT64_C(1) << 32) || out.len % 8 ||
        out.len / 8 < (Py_ssize_t)(most + 1) * bins ||
        (classes && (length < 1 ||
                     row_class.len != count / length + (count % length != 0)))) {
        PyErr_SetString(PyExc_ValueError, "histogram: buffers of the wrong size");
        goto done;
    }
    const int tables = most + 1;
    spare = calloc((size_t)3 * (size_t)tables * (size_t)bins, sizeof(int64_t));
    if (!spare) {
        PyErr_NoMemory();
        goto done;
    }
    int bad;
    Py_BEGIN_ALLOW_THREADS
    if (itemsize == 1)
        bad = histogram_uint8_t(symbols.buf, count, bins, classes, length, tables, out.buf, spare);
    else if (itemsize == 2)
        bad = histogram_uint16_t(symbols.buf, count, bins, classes, length, tables, out.buf, spare);
    else
        bad = histogram_uint32_t(symbols.buf, count, bins, classes, length, tables, out.buf, spare);
    Py_END_ALLOW_THREADS
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "histogram: a symbol lies outside the bins");
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    free(spare);
    PyBuffer_Release(&symbols);
    PyBuffer_Release(&row_class);
    PyBuffer_Release(&out);
    return result;
}

/* huffman_depths(counts) -> None: unlimited Huffman code lengths of n symbols with these
 * (positive, int64) counts into `out` (int64, n), as _zhuff.py's _plain_huffman builds them:
 * the two lightest subtrees merged first, ties to the lower id (leaves 0 ... n - 1, merged
 * nodes numbered on from n): a binary heap of (count, id) pops them in that one order. */
typedef struct {
    int64_t count, id;
} HeapNode;

static inline int heap_less(HeapNode a, HeapNode b) {
    return a.count < b.count || (a.count == b.count && a.id < b.id);
}

static void heap_down(HeapNode *heap, Py_ssize_t size, Py_ssize_t i) {
    for (;;) {
        Py_ssize_t least = i, left = 2 * i + 1, right = left + 1;
        if (left < size && heap_less(heap[left], heap[least])) least = left;
        if (right < size && heap_less(heap[right], heap[least])) least = right;
        if (least == i) return;
        const HeapNode t = heap[i];
        heap[i] = heap[least], heap[least] = t, i = least;
    }
}

static PyObject *huffman_depths(PyObject *self, PyObject *args) {
    Py_buffer counts, out;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*w*", &counts, &out)) return NULL;
    PyObject *result = NULL;
    HeapNode *heap = NULL;
    int64_t *parent = NULL;
    const Py_ssize_t n = counts.len / 8;
    const int64_t *count = counts.buf;
    if (counts.len % 8 || out.len != counts.len || n < 2) {
        PyErr_SetString(PyExc_ValueError, "huffman: counts and out of 2 or more int64");
        goto done;
    }
    int64_t sum = 0; /* every merged subtree's count: at most the sum of all */
    for (Py_ssize_t i = 0; i < n; i++) {
        if (count[i] < 0 || count[i] > INT64_MAX - sum) {
            PyErr_SetString(PyExc_ValueError, "huffman: counts must be >= 0 and sum below 2**63");
            goto done;
        }
        sum += count[i];
    }
    heap = malloc((size_t)n * sizeof(HeapNode));
    parent = calloc((size_t)(2 * n - 1), sizeof(int64_t));
    if (!heap || !parent) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) heap[i] = (HeapNode){count[i], i};
    for (Py_ssize_t i = n / 2 - 1; i >= 0; i--) heap_down(heap, n, i);
    Py_ssize_t size = n;
    for (int64_t node = n; size > 1; node++) {
        const HeapNode a = heap[0];
        heap[0] = heap[--size];
        heap_down(heap, size, 0);
        const HeapNode b = heap[0];
        parent[a.id] = parent[b.id] = node;
        heap[0] = (HeapNode){a.count + b.count, node}; /* replaces b: one sift */
        heap_down(heap, size, 0);
    }
    /* parents have larger ids: from the root down, each node one deeper than its parent,
     * its depth written over its parent's id once that is read (the root's entry, never
     * written by the merges, stays 0: its depth) */
    for (Py_ssize_t i = 2 * n - 3; i >= 0; i--) parent[i] = parent[parent[i]] + 1;
    memcpy(out.buf, parent, (size_t)n * sizeof(int64_t));
    result = Py_NewRef(Py_None);
done:
    free(heap);
    free(parent);
    PyBuffer_Release(&counts);
    PyBuffer_Release(&out);
    return result;
}

/* huffman_pack(symbols, lengths, codes) -> bytes: zstd's backward Huffman bitstream of the
 * uint8 `symbols` with the uint8 code `lengths` and uint16 `codes` of each byte value
 * (rftpack/stages/_zhuff.py's _pack_stream): the last symbol's code in the lowest bits,
 * each earlier one above it, then a 1 bit; (total bits >> 3) + 1 bytes. */
static PyObject *huffman_pack(PyObject *self, PyObject *args) {
    Py_buffer symbols, lengths, codes;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*y*", &symbols, &lengths, &codes)) return NULL;
    PyObject *result = NULL;
    if (lengths.len != 256 || codes.len != 512) {
        PyErr_SetString(PyExc_ValueError, "huffman: 256 lengths and 256 codes");
        goto done;
    }
    const unsigned char *s = symbols.buf, *len = lengths.buf;
    uint16_t code[256];
    memcpy(code, codes.buf, sizeof code);
    for (int v = 0; v < 256; v++) {
        if (len[v] > 32 || (len[v] < 16 && code[v] >> len[v])) {
            PyErr_SetString(PyExc_ValueError, "huffman: a code longer than its length");
            goto done;
        }
    }
    uint64_t total = 0;
    for (Py_ssize_t i = 0; i < symbols.len; i++) total += len[s[i]];
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(total >> 3) + 1);
    if (!result) goto done;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    uint64_t acc = 0;
    int bits = 0;
    Py_ssize_t pos = 0;
    for (Py_ssize_t i = symbols.len - 1; i >= 0; i--) {
        acc |= (uint64_t)code[s[i]] << bits;
        bits += len[s[i]];
        if (bits >= 32) { /* four whole bytes out, little-endian */
            const unsigned char le[4] = {(unsigned char)acc, (unsigned char)(acc >> 8),
                                         (unsigned char)(acc >> 16), (unsigned char)(acc >> 24)};
            memcpy(out + pos, le, 4);
            pos += 4, acc >>= 32, bits -= 32;
        }
    }
    acc |= (uint64_t)1 << bits; /* the end mark */
    for (bits++; bits > 0; bits -= 8, acc >>= 8) out[pos++] = (unsigned char)acc;
done:
    PyBuffer_Release(&symbols);
    PyBuffer_Release(&lengths);
    PyBuffer_Release(&codes);
    return result;
}

/* chains replayed side by side: their state machines are independent, so the CPU overlaps
 * their lookups (one chain at a time waits on each state's load: ~2x slower) */
#define REPLAY_LANES 4

/* one step of lane l: symbols T, values VT */
#define REPLAY_STEP(l, VT)                                                        \
    do {                                                                          \
        const Py_ssize_t i = start + (l) * chain + j;                             \
        const uint64_t symbol = (uint64_t)s[i];                                   \
        if (symbol >= alphabet) {                                                 \
            bad = 1;                                                              \
        } else {                                                                  \
            const uint64_t at = 2 * symbol + (uint64_t)quantizer[state[l]];       \
            ((VT *)value)[i] = ((const VT *)values)[at];                          \
            state[l] = trans[2 * state[l] + parity[symbol]];                      \
        }                                                                         \
    } while (0)

#define REPLAY_LOOP(T, VT)                                                        \
    do {                                                                          \
        const T *s = (const T *)symbols.buf;                                      \
        Py_ssize_t start = 0;                                                     \
        for (; !bad && n - start >= REPLAY_LANES * chain;                         \
             start += REPLAY_LANES * chain) {                                     \
            int64_t state[REPLAY_LANES] = {0};                                    \
            for (Py_ssize_t j = 0; !bad && j < chain; j++) {                      \
                REPLAY_STEP(0, VT);                                               \
                REPLAY_STEP(1, VT);                                               \
                REPLAY_STEP(2, VT);                                               \
                REPLAY_STEP(3, VT);                                               \
            }                                                                     \
        }                                                                         \
        for (; !bad && start < n; start += chain) {                               \
            const Py_ssize_t length = n - start < chain ? n - start : chain;      \
            int64_t state[1] = {0};                                               \
            for (Py_ssize_t j = 0; !bad && j < length; j++) REPLAY_STEP(0, VT);   \
        }                                                                         \
    } while (0)

static PyObject *dq_replay(PyObject *self, PyObject *args) {
    Py_buffer symbols, trans_buf, quantizer_buf, parity_buf, values_buf, out;
    int itemsize, value_size;
    Py_ssize_t chain;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*iny*y*y*y*w*i", &symbols, &itemsize, &chain, &trans_buf,
                          &quantizer_buf, &parity_buf, &values_buf, &out, &value_size))
        return NULL;
    PyObject *result = NULL;
    const Py_ssize_t states = quantizer_buf.len / 8;
    const uint64_t alphabet = (uint64_t)parity_buf.len;
    const Py_ssize_t n = itemsize > 0 ? symbols.len / itemsize : 0;
    if (!(itemsize == 1 || itemsize == 2 || itemsize == 4 || itemsize == 8) ||
        symbols.len % itemsize || chain < 1 || states < 1 || trans_buf.len != 16 * states ||
        quantizer_buf.len % 8 || !(value_size == 4 || value_size == 8) ||
        values_buf.len != 2 * value_size * (Py_ssize_t)alphabet || out.len != value_size * n) {
        PyErr_SetString(PyExc_ValueError, "dq replay: buffers of the wrong size");
        goto done;
    }
    const int64_t *trans = trans_buf.buf, *quantizer = quantizer_buf.buf;
    const unsigned char *parity = parity_buf.buf;
    for (Py_ssize_t i = 0; i < 2 * states; i++) {
        if (trans[i] < 0 || trans[i] >= states) {
            PyErr_SetString(PyExc_ValueError, "dq replay: a transition leaves the trellis");
            goto done;
        }
    }
    for (Py_ssize_t i = 0; i < states; i++) {
        if (quantizer[i] < 0 || quantizer[i] > 1) {
            PyErr_SetString(PyExc_ValueError, "dq replay: quantizers are 0 or 1");
            goto done;
        }
    }
    for (uint64_t i = 0; i < alphabet; i++) {
        if (parity[i] > 1) {
            PyErr_SetString(PyExc_ValueError, "dq replay: parities are 0 or 1");
            goto done;
        }
    }
    const void *values = values_buf.buf;
    void *value = out.buf;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    if (value_size == 8) {
        switch (itemsize) {
            case 1: REPLAY_LOOP(uint8_t, double); break;
            case 2: REPLAY_LOOP(uint16_t, double); break;
            case 4: REPLAY_LOOP(uint32_t, double); break;
            default: REPLAY_LOOP(uint64_t, double); break;
        }
    } else {
        switch (itemsize) {
            case 1: REPLAY_LOOP(uint8_t, float); break;
            case 2: REPLAY_LOOP(uint16_t, float); break;
            case 4: REPLAY_LOOP(uint32_t, float); break;
            default: REPLAY_LOOP(uint64_t, float); break;
        }
    }
    Py_END_ALLOW_THREADS
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "dq replay: a symbol lies outside the alphabet");
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&symbols);
    PyBuffer_Release(&trans_buf);
    PyBuffer_Release(&quantizer_buf);
    PyBuffer_Release(&parity_buf);
    PyBuffer_Release(&values_buf);
    PyBuffer_Release(&out);
    return result;
}

static PyObject *planes_assemble(PyObject *self, PyObject *args) {
    Py_buffer a, b, out, plane[6];
    PyObject *rest;
    int r, itemsize, planes = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*O!iw*i", &a, &b, &PyTuple_Type, &rest, &r, &out, &itemsize))
        return NULL;
    PyObject *result = NULL;
    const Py_ssize_t n = a.len;
    const Py_ssize_t want = itemsize == 2 || itemsize == 4 || itemsize == 8 ? itemsize - 2 : -1;
    if (want < 0 || PyTuple_GET_SIZE(rest) != want || b.len != n || r < 0 || r > 15 ||
        out.len != n * itemsize) {
        PyErr_SetString(PyExc_ValueError, "planes_assemble: buffers of the wrong size");
        goto done;
    }
    for (; planes < want; planes++) {
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(rest, planes), &plane[planes], PyBUF_SIMPLE))
            goto done;
        if (plane[planes].len != n) {
            PyErr_SetString(PyExc_ValueError, "planes_assemble: buffers of the wrong size");
            planes++;
            goto done;
        }
    }
    const uint8_t *hi = a.buf, *lo = b.buf;
    const unsigned rot = (unsigned)r, back = (16u - rot) & 15u;
    Py_BEGIN_ALLOW_THREADS
    /* one simple loop per element size, which the compiler vectorises */
    if (itemsize == 2) {
        uint16_t *o = out.buf;
        for (Py_ssize_t i = 0; i < n; i++) {
            const uint32_t x = (uint32_t)hi[i] << 8 | lo[i];
            o[i] = (uint16_t)((x >> rot) | (x << back));
        }
    } else if (itemsize == 4) {
        uint32_t *o = out.buf;
        const uint8_t *p0 = plane[0].buf, *p1 = plane[1].buf;
        for (Py_ssize_t i = 0; i < n; i++) {
            const uint32_t x = (uint32_t)hi[i] << 8 | lo[i];
            const uint32_t top = ((x >> rot) | (x << back)) & 0xFFFFu;
            o[i] = top << 16 | (uint32_t)p1[i] << 8 | p0[i];
        }
    } else {
        uint64_t *o = out.buf;
        for (Py_ssize_t i = 0; i < n; i++) {
            const uint32_t x = (uint32_t)hi[i] << 8 | lo[i];
            uint64_t w = (uint64_t)(((x >> rot) | (x << back)) & 0xFFFFu) << 48;
            for (int k = 0; k < 6; k++)
                w |= (uint64_t)((const uint8_t *)plane[k].buf)[i] << (8 * k);
            o[i] = w;
        }
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    for (int k = 0; k < planes; k++) PyBuffer_Release(&plane[k]);
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    PyBuffer_Release(&out);
    return result;
}

/* ---- dq's encoder search ------------------------------------------------------------- */

/* Chains searched side by side, as in _dq_jit.py: the add-compare-select over the states runs
 * on VITERBI_LANES costs at once (SIMD), the traceback bits of a state and step packed into
 * one 32-bit word. */
#define VITERBI_LANES 32
/* |x| (in steps) the search takes: indices stay far inside int32, where they are kept */
#define VITERBI_MAX_X 1e9

/* Path costs are int16 in units of 1/scale step², added with wraparound and compared by the
 * sign of their 16-bit difference (rftpack/stages/dq.py's search_costs says why that is
 * exact): 32 chains fill one AVX-512 vector, and a step's costs (2 x 16 KB at 256 states)
 * stay in L1. The add-compare-select is written three times: AVX-512BW and AVX2 intrinsics
 * (the compiler's own vectorisation of the portable loop builds each step's 32 traceback bits
 * with a chain of shuffles, where these take the compare's mask), and portable C; the widest
 * the CPU runs is chosen at run time, and each finds the same indices (tests call all). */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define X86_KERNELS 1
#include <immintrin.h>
#endif

enum { KERNEL_PORTABLE, KERNEL_AVX2, KERNEL_AVX512, KERNEL_COUNT };
static const char *const KERNEL_NAMES[KERNEL_COUNT] = {"portable", "avx2", "avx512bw"};

typedef struct {
    Py_ssize_t states, top;
    double lam, scale;
    int16_t cap, start; /* a candidate's cost above the step's cheapest is at most cap */
    const double *rates;
    /* back[2s + b], pick[2s + b]: state s comes from state back[2s] (A) by candidate pick[2s],
     * or from back[2s + 1] (B) by pick[2s + 1] */
    const int32_t *back, *pick;
    /* butterflies (p, q, u, v): u and v both come from p (A) or q (B), u by candidates
     * 2Q (from p) and 2Q + 1 (from q), v by 2Q + 1 and 2Q; those of quantizer Q = 0 first,
     * `split` of them */
    const int32_t *fly;
    Py_ssize_t split;
} Trellis;

typedef int16_t CostRow[VITERBI_LANES];

/* the weights are read, and the indices written, in blocks of this many steps of every lane:
 * one row (one chain) at a time, not a step of 32 rows at a time */
#define BLOCK_STEPS 64

/* Is the integral double v even?  (the parity of int(v), without a conversion, so that the
 * candidate loop vectorises) */
static inline int even(double v) { return floor(v * 0.5) * 2.0 == v; }

/* rates[min(|k|, top)], in operations the compiler vectorises (fmin and 64-bit conversions
 * are not, in AVX2) */
static inline double rate_of(const double *restrict rates, double top, double k) {
    const double m = fabs(k);
    return rates[(int)(m < top ? m : top)];
}

/* The step's four best (cost, k) for every lane: Q0 even and odd parity, Q1 even and odd;
 * _dq_jit._step_candidates' arithmetic, branch-free. Costs go out as integers: each one's
 * excess over the lane's cheapest, times scale, rounded (half to even) and capped. They must
 * round exactly as numpy's do, so the build's -ffp-contract=off (pyproject.toml) matters: the
 * AVX2 and AVX-512 copies could otherwise fuse multiply-adds. */
static inline __attribute__((always_inline)) void step_candidates(
    const Trellis *tr, const double *restrict x, CostRow *restrict j,
    int32_t (*restrict k)[VITERBI_LANES]) {
    const double *restrict rates = tr->rates;
    const double lam = tr->lam, zero_rate = tr->lam * rates[0], top = (double)tr->top;
    const double scale = tr->scale, cap = (double)tr->cap;
    /* computed in local arrays, which the rates cannot alias: then the loop vectorises */
    double jl[4][VITERBI_LANES];
    int32_t kl[4][VITERBI_LANES];
    int16_t jq[4][VITERBI_LANES];
    for (int w = 0; w < VITERBI_LANES; w++) {
        const double v = x[w];
        /* Q0: levels 2k; the nearest index and its neighbour toward v */
        const double a = rint(v / 2.0);
        const double b = a + (v >= 2.0 * a ? 1.0 : -1.0);
        const int a_even = even(a);
        double k0e = a_even ? a : b;
        const double k0o = a_even ? b : a;
        double j0e = (v - 2.0 * k0e) * (v - 2.0 * k0e) + lam * rate_of(rates, top, k0e);
        const double jz = v * v + zero_rate;
        const int zero0 = jz < j0e;
        j0e = zero0 ? jz : j0e;
        k0e = zero0 ? 0.0 : k0e;
        const double j0o = (v - 2.0 * k0o) * (v - 2.0 * k0o) + lam * rate_of(rates, top, k0o);
        /* Q1: levels 0, +-1, +-3 ...; the two odd levels around v */
        const double o = 2.0 * floor((v - 1.0) / 2.0) + 1.0;
        const double lv0 = o, lv1 = o + 2.0;
        const double ks0 = lv0 > 0 ? (lv0 + 1.0) / 2.0 : (lv0 - 1.0) / 2.0;
        const double ks1 = lv1 > 0 ? (lv1 + 1.0) / 2.0 : (lv1 - 1.0) / 2.0;
        const int first_even = even(ks0);
        const int straddles = o == -1.0; /* between -1 and +1: the even choice is 0 alone */
        const int nearer_first = fabs(v - lv0) <= fabs(v - lv1);
        double k1e = first_even ? ks0 : ks1;
        const double k1o = straddles ? (nearer_first ? ks0 : ks1) : (first_even ? ks1 : ks0);
        const double l1e = straddles ? INFINITY : (first_even ? lv0 : lv1);
        const double l1o = straddles ? (nearer_first ? lv0 : lv1) : (first_even ? lv1 : lv0);
        double j1e = (v - l1e) * (v - l1e) + lam * rate_of(rates, top, k1e);
        const int zero1 = jz < j1e;
        j1e = zero1 ? jz : j1e;
        k1e = zero1 ? 0.0 : k1e;
        const double j1o = (v - l1o) * (v - l1o) + lam * rate_of(rates, top, k1o);
        jl[0][w] = j0e, jl[1][w] = j0o, jl[2][w] = j1e, jl[3][w] = j1o;
        kl[0][w] = (int32_t)k0e, kl[1][w] = (int32_t)k0o, kl[2][w] = (int32_t)k1e;
        kl[3][w] = (int32_t)k1o;
    }
    for (int w = 0; w < VITERBI_LANES; w++) {
        double low = jl[0][w];
        for (int c = 1; c < 4; c++) low = jl[c][w] < low ? jl[c][w] : low;
        for (int c = 0; c < 4; c++) {
            const double q = rint((jl[c][w] - low) * scale);
            jq[c][w] = (int16_t)(q < cap ? q : cap);
        }
    }
    memcpy(j, jq, sizeof jq);
    memcpy(k, kl, sizeof kl);
}

/* One step of every state for all lanes: into state s the cheaper of A and B (A on ties),
 * bit w of row[s] set where lane w came from B. Butterfly by butterfly: its two states share
 * their inputs, and a quantizer's two candidates, which its loop holds throughout. The flags
 * are packed eight at a time with a multiply, as compilers do not vectorise a 32-bit mask's
 * assembly well (with SSE2 at 256 states: 0.072 s per million weights, 0.25 with the bits
 * OR-ed in lane by lane). */
static inline __attribute__((always_inline)) void acs_lanes(
    const int16_t *restrict ca, const int16_t *restrict xa, const int16_t *restrict cb,
    const int16_t *restrict xb, int16_t *restrict next, uint32_t *restrict row) {
    uint8_t from_b[VITERBI_LANES];
    for (int w = 0; w < VITERBI_LANES; w++) {
        const uint16_t via_a = (uint16_t)((uint16_t)ca[w] + (uint16_t)xa[w]);
        const uint16_t via_b = (uint16_t)((uint16_t)cb[w] + (uint16_t)xb[w]);
        const uint16_t diff = (uint16_t)(via_b - via_a);
        const uint16_t take_b = (uint16_t)-(diff >> 15); /* all ones where b < a */
        next[w] = (int16_t)((via_a & ~take_b) | (via_b & take_b));
        from_b[w] = (uint8_t)(diff >> 15);
    }
    uint32_t bits = 0;
    for (int g = 0; g < VITERBI_LANES / 8; g++) { /* 8 flags (0 or 1) into a byte */
        uint64_t flags;
        memcpy(&flags, from_b + 8 * g, 8);
        bits |= (uint32_t)((flags * UINT64_C(0x0102040810204080)) >> 56) << (8 * g);
    }
    *row = bits;
}

static void acs_portable(const Trellis *tr, const CostRow *restrict cost,
                         const CostRow *restrict j, CostRow *restrict next,
                         uint32_t *restrict row) {
    const Py_ssize_t flies = tr->states / 2;
    for (Py_ssize_t f = 0; f < flies; f++) {
        const int32_t *fly = tr->fly + 4 * f;
        const int16_t *x = j[f < tr->split ? 0 : 2], *y = j[f < tr->split ? 1 : 3];
        const int16_t *cp = cost[fly[0]], *cq = cost[fly[1]];
        acs_lanes(cp, x, cq, y, next[fly[2]], row + fly[2]);
        acs_lanes(cp, y, cq, x, next[fly[3]], row + fly[3]);
    }
}

#ifdef X86_KERNELS
/* into `next`, the cheaper of ca + xa and cb + xb (the first on ties); the 32 lanes' flags
 * into `row` */
__attribute__((target("avx2"))) static inline void acs_avx2_state(
    const __m256i *ca, __m256i xa0, __m256i xa1, const __m256i *cb, __m256i xb0, __m256i xb1,
    __m256i *next, uint32_t *row) {
    const __m256i a0 = _mm256_add_epi16(_mm256_loadu_si256(ca), xa0);
    const __m256i a1 = _mm256_add_epi16(_mm256_loadu_si256(ca + 1), xa1);
    const __m256i b0 = _mm256_add_epi16(_mm256_loadu_si256(cb), xb0);
    const __m256i b1 = _mm256_add_epi16(_mm256_loadu_si256(cb + 1), xb1);
    const __m256i from_b0 = _mm256_srai_epi16(_mm256_sub_epi16(b0, a0), 15); /* ones: b < a */
    const __m256i from_b1 = _mm256_srai_epi16(_mm256_sub_epi16(b1, a1), 15);
    _mm256_storeu_si256(next, _mm256_blendv_epi8(a0, b0, from_b0));
    _mm256_storeu_si256(next + 1, _mm256_blendv_epi8(a1, b1, from_b1));
    /* 32 lanes' signs as bytes, in lane order (packs interleaves the 128-bit halves) */
    const __m256i bytes = _mm256_permute4x64_epi64(_mm256_packs_epi16(from_b0, from_b1), 0xD8);
    *row = (uint32_t)_mm256_movemask_epi8(bytes);
}

__attribute__((target("avx2"))) static void acs_avx2(const Trellis *tr, const CostRow *cost,
                                                     const CostRow *j, CostRow *next,
                                                     uint32_t *row) {
    const Py_ssize_t flies = tr->states / 2;
    for (int q = 0; q < 2; q++) {
        const __m256i x0 = _mm256_loadu_si256((const __m256i *)j[2 * q]);
        const __m256i x1 = _mm256_loadu_si256((const __m256i *)j[2 * q] + 1);
        const __m256i y0 = _mm256_loadu_si256((const __m256i *)j[2 * q + 1]);
        const __m256i y1 = _mm256_loadu_si256((const __m256i *)j[2 * q + 1] + 1);
        for (Py_ssize_t f = q ? tr->split : 0; f < (q ? flies : tr->split); f++) {
            const int32_t *fly = tr->fly + 4 * f;
            const __m256i *cp = (const __m256i *)cost[fly[0]];
            const __m256i *cq = (const __m256i *)cost[fly[1]];
            acs_avx2_state(cp, x0, x1, cq, y0, y1, (__m256i *)next[fly[2]], row + fly[2]);
            acs_avx2_state(cp, y0, y1, cq, x0, x1, (__m256i *)next[fly[3]], row + fly[3]);
        }
    }
}

__attribute__((target("avx512f,avx512bw"))) static void acs_avx512(const Trellis *tr,
                                                                   const CostRow *cost,
                                                                   const CostRow *j,
                                                                   CostRow *next,
                                                                   uint32_t *row) {
    const Py_ssize_t flies = tr->states / 2;
    for (int q = 0; q < 2; q++) {
        const __m512i x = _mm512_loadu_si512(j[2 * q]), y = _mm512_loadu_si512(j[2 * q + 1]);
        for (Py_ssize_t f = q ? tr->split : 0; f < (q ? flies : tr->split); f++) {
            const int32_t *fly = tr->fly + 4 * f;
            const __m512i cp = _mm512_loadu_si512(cost[fly[0]]);
            const __m512i cq = _mm512_loadu_si512(cost[fly[1]]);
            const __m512i au = _mm512_add_epi16(cp, x), bu = _mm512_add_epi16(cq, y);
            const __m512i av = _mm512_add_epi16(cp, y), bv = _mm512_add_epi16(cq, x);
            const __mmask32 u_from_b = _mm512_movepi16_mask(_mm512_sub_epi16(bu, au));
            const __mmask32 v_from_b = _mm512_movepi16_mask(_mm512_sub_epi16(bv, av));
            _mm512_storeu_si512(next[fly[2]], _mm512_mask_blend_epi16(u_from_b, au, bu));
            _mm512_storeu_si512(next[fly[3]], _mm512_mask_blend_epi16(v_from_b, av, bv));
            row[fly[2]] = (uint32_t)u_from_b;
            row[fly[3]] = (uint32_t)v_from_b;
        }
    }
}
#endif

/* One group of up to VITERBI_LANES chains (`lanes` real ones, rows of `xs` of `steps`
 * weights; the others searched on zeros and dropped), with the add-compare-select of
 * `kernel`. `came` holds steps x states words, `kept` steps x 4 x VITERBI_LANES indices,
 * `cost`/`next` states rows. Inlined into one copy per kernel, compiled for its CPU. */
static inline __attribute__((always_inline)) void search_group(
    const Trellis *tr, const double *xs, Py_ssize_t steps, int lanes, int64_t *out,
    uint32_t *came, int32_t (*kept)[4][VITERBI_LANES], CostRow *cost, CostRow *next,
    int kernel) {
    const Py_ssize_t states = tr->states;
    double x[BLOCK_STEPS][VITERBI_LANES]; /* the weights of BLOCK_STEPS steps, lane by lane */
    CostRow j[4];
    for (Py_ssize_t s = 0; s < states; s++)
        for (int w = 0; w < VITERBI_LANES; w++) cost[s][w] = s ? tr->start : 0;
    memset(x, 0, sizeof x);
    for (Py_ssize_t t = 0; t < steps; t++) {
        if (t % BLOCK_STEPS == 0) {
            const Py_ssize_t block = steps - t < BLOCK_STEPS ? steps - t : BLOCK_STEPS;
            for (int w = 0; w < lanes; w++)
                for (Py_ssize_t b = 0; b < block; b++) x[b][w] = xs[w * steps + t + b];
        }
        step_candidates(tr, x[t % BLOCK_STEPS], j, kept[t]);
        /* (the casts: const is added to a pointer to arrays implicitly only from C23 on) */
        const CostRow *now = (const CostRow *)cost, *step = (const CostRow *)j;
#ifdef X86_KERNELS
        if (kernel == KERNEL_AVX512)
            acs_avx512(tr, now, step, next, came + t * states);
        else if (kernel == KERNEL_AVX2)
            acs_avx2(tr, now, step, next, came + t * states);
        else
#endif
            acs_portable(tr, now, step, next, came + t * states);
        CostRow *swap = cost;
        cost = next, next = swap;
    }
    Py_ssize_t state[VITERBI_LANES];
    for (int w = 0; w < lanes; w++) {
        Py_ssize_t best = 0; /* argmin: the first of equal costs */
        for (Py_ssize_t s = 1; s < states; s++)
            if ((int16_t)(uint16_t)((uint16_t)cost[s][w] - (uint16_t)cost[best][w]) < 0)
                best = s;
        state[w] = best;
    }
    /* all lanes step back together: one pass over the traceback, without branches (which
     * way a lane came is a coin toss to the branch predictor) */
    const int32_t *back = tr->back, *pick = tr->pick;
    for (Py_ssize_t t = steps - 1; t >= 0; t--) {
        const uint32_t *row = came + t * states;
        int32_t(*k)[VITERBI_LANES] = kept[t];
        for (int w = 0; w < lanes; w++) {
            const Py_ssize_t i = 2 * state[w] + (row[state[w]] >> w & 1);
            k[0][w] = k[pick[i]][w]; /* the chosen index, where the transpose below finds it */
            state[w] = back[i];
        }
    }
    /* out, lane by lane, in blocks of steps that stay in cache */
    for (Py_ssize_t t0 = 0; t0 < steps; t0 += BLOCK_STEPS) {
        const Py_ssize_t t1 = steps - t0 < BLOCK_STEPS ? steps : t0 + BLOCK_STEPS;
        for (int w = 0; w < lanes; w++)
            for (Py_ssize_t t = t0; t < t1; t++) out[w * steps + t] = kept[t][0][w];
    }
}

#define SEARCH_ARGS                                                                          \
    const Trellis *tr, const double *xs, Py_ssize_t steps, int lanes, int64_t *out,         \
        uint32_t *came, int32_t(*kept)[4][VITERBI_LANES], CostRow *cost, CostRow *next
#define SEARCH_PASS tr, xs, steps, lanes, out, came, kept, cost, next

static void search_portable(SEARCH_ARGS) { search_group(SEARCH_PASS, KERNEL_PORTABLE); }
#ifdef X86_KERNELS
__attribute__((target("avx2"))) static void search_avx2(SEARCH_ARGS) {
    search_group(SEARCH_PASS, KERNEL_AVX2);
}
__attribute__((target("avx512f,avx512bw"))) static void search_avx512(SEARCH_ARGS) {
    search_group(SEARCH_PASS, KERNEL_AVX512);
}
#endif

/* Each kernel's search, by kernel number (a kernel the build lacks is never runnable) */
static void (*const SEARCHES[KERNEL_COUNT])(SEARCH_ARGS) = {
#ifdef X86_KERNELS
    search_portable, search_avx2, search_avx512,
#else
    search_portable, search_portable, search_portable,
#endif
};

/* The kernels this CPU runs: bit k for kernel k */
static int runnable_kernels(void) {
    int mask = 1 << KERNEL_PORTABLE;
#ifdef X86_KERNELS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) mask |= 1 << KERNEL_AVX2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw"))
        mask |= 1 << KERNEL_AVX512;
#endif
    return mask;
}

/* dq_kernels() -> the names of the kernels this CPU runs, the widest last */
static PyObject *dq_kernels(PyObject *self, PyObject *args) {
    (void)self, (void)args;
    const int mask = runnable_kernels();
    PyObject *names = PyList_New(0);
    for (int k = 0; names != NULL && k < KERNEL_COUNT; k++) {
        if (!(mask >> k & 1)) continue;
        PyObject *name = PyUnicode_FromString(KERNEL_NAMES[k]);
        if (name == NULL || PyList_Append(names, name) < 0) Py_CLEAR(names);
        Py_XDECREF(name);
    }
    return names;
}

/* The butterflies (p, q, u, v) of checked `edges` into `fly` (2 x states entries), those of
 * quantizer 0 first (`split` of them): the states u, v that both come from p (as A) or q
 * (as B), u with parities (0, 1), v with (1, 0). `seen`: states entries of scratch. 1 when
 * the trellis is not so made (every trellis of rftpack/stages/dq.py is). */
static int butterflies(const int64_t *edge, Py_ssize_t states, int32_t *fly, int32_t *seen,
                       Py_ssize_t *split) {
    Py_ssize_t count = 0;
    if (states % 2) return 1;
    memset(seen, 0, (size_t)states * sizeof(int32_t));
    for (int q = 0; q < 2; q++) {
        if (q == 1) *split = count;
        for (Py_ssize_t u = 0; u < states; u++) {
            const int64_t *eu = edge + 5 * u;
            if (eu[4] != q || eu[1] != 0) continue;
            Py_ssize_t v = -1;
            for (Py_ssize_t s = 0; s < states && v < 0; s++) {
                const int64_t *es = edge + 5 * s;
                if (es[0] == eu[0] && es[2] == eu[2] && es[1] == 1) v = s;
            }
            if (v < 0 || count == states / 2 || seen[u] || seen[v]) return 1;
            const int64_t *ev = edge + 5 * v;
            if (eu[3] != 1 || ev[3] != 0 || ev[4] != q) return 1;
            seen[u] = seen[v] = 1;
            fly[4 * count] = (int32_t)eu[0], fly[4 * count + 1] = (int32_t)eu[2];
            fly[4 * count + 2] = (int32_t)u, fly[4 * count + 3] = (int32_t)v;
            count++;
        }
    }
    return 2 * count != states;
}

static PyObject *dq_viterbi(PyObject *self, PyObject *args) {
    Py_buffer xs, rates, edges, out;
    Py_ssize_t steps;
    double lam, scale;
    int cap, start, kernel = -1;
    const char *name = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*ndy*y*w*dii|z", &xs, &steps, &lam, &rates, &edges, &out,
                          &scale, &cap, &start, &name))
        return NULL;
    PyObject *result = NULL;
    int32_t *links = NULL;
    uint32_t *came = NULL;
    void *kept = NULL, *cost = NULL, *next = NULL;
    const Py_ssize_t n = xs.len / 8, states = edges.len / 40, top = rates.len / 8 - 1;
    const int runnable = runnable_kernels();
    for (int k = 0; k < KERNEL_COUNT; k++) /* the one named, else the widest */
        if (name == NULL ? runnable >> k & 1 : !strcmp(name, KERNEL_NAMES[k])) kernel = k;
    if (xs.len % 8 || steps < 1 || n % steps || out.len != xs.len || edges.len % 40 ||
        states < 1 || rates.len % 8 || top < 0 || top > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "dq search: buffers of the wrong size");
        goto done;
    }
    if (!isfinite(lam) || !(scale >= 0 && isfinite(scale)) || cap < 0 || cap > INT16_MAX ||
        start < 0 || start > INT16_MAX) {
        PyErr_SetString(PyExc_ValueError,
                        "dq search: lam and scale must be finite, cap and start in [0, 32767]");
        goto done;
    }
    if (kernel < 0 || !(runnable >> kernel & 1)) {
        PyErr_SetString(PyExc_ValueError, "dq search: this CPU does not run that kernel");
        goto done;
    }
    const double *x = xs.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!(fabs(x[i]) <= VITERBI_MAX_X)) {
            PyErr_SetString(PyExc_OverflowError,
                            "dq search: a weight is not finite or too large");
            goto done;
        }
    }
    const int64_t *edge = edges.buf;
    links = PyMem_Malloc(7 * states * sizeof(int32_t));
    if (links == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    int32_t *back = links, *pick = links + 2 * states, *fly = links + 4 * states;
    for (Py_ssize_t s = 0; s < states; s++) {
        const int64_t *e = edge + 5 * s;
        if (e[0] < 0 || e[0] >= states || e[2] < 0 || e[2] >= states ||
            (e[1] | e[3] | e[4]) >> 1) { /* parities and quantizers are 0 or 1 */
            PyErr_SetString(PyExc_ValueError, "dq search: an edge leaves the trellis");
            goto done;
        }
        back[2 * s] = (int32_t)e[0], back[2 * s + 1] = (int32_t)e[2];
        pick[2 * s] = (int32_t)(2 * e[4] + e[1]), pick[2 * s + 1] = (int32_t)(2 * e[4] + e[3]);
    }
    Py_ssize_t split = 0;
    if (butterflies(edge, states, fly, links + 6 * states, &split)) {
        PyErr_SetString(PyExc_ValueError, "dq search: the trellis is not made of butterflies");
        goto done;
    }
    const Trellis tr = {states, top, lam, scale, (int16_t)cap, (int16_t)start, rates.buf,
                        back, pick, fly, split};
    came = PyMem_RawMalloc((size_t)steps * (size_t)states * sizeof(uint32_t));
    kept = PyMem_RawMalloc((size_t)steps * 4 * VITERBI_LANES * sizeof(int32_t));
    cost = PyMem_RawMalloc((size_t)states * sizeof(CostRow));
    next = PyMem_RawMalloc((size_t)states * sizeof(CostRow));
    if (came == NULL || kept == NULL || cost == NULL || next == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const Py_ssize_t width = n / steps;
    int64_t *o = out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t first = 0; first < width; first += VITERBI_LANES) {
        const int lanes = (int)(width - first < VITERBI_LANES ? width - first : VITERBI_LANES);
        SEARCHES[kernel](&tr, x + first * steps, steps, lanes, o + first * steps, came, kept,
                         cost, next);
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyMem_Free(links);
    PyMem_RawFree(came);
    PyMem_RawFree(kept);
    PyMem_RawFree(cost);
    PyMem_RawFree(next);
    PyBuffer_Release(&xs);
    PyBuffer_Release(&rates);
    PyBuffer_Release(&edges);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"rans_decode", rans_decode, METH_VARARGS,
     "rans_decode(words, freqs, bits, count, out, itemsize, bounds) -> (states, words_left)"},
    {"huffman_depths", huffman_depths, METH_VARARGS, "huffman_depths(counts, out) -> None"},
    {"huffman_pack", huffman_pack, METH_VARARGS,
     "huffman_pack(symbols, lengths, codes) -> bytes"},
    {"histogram", histogram, METH_VARARGS,
     "histogram(symbols, itemsize, bins, row_class, length, out) -> None"},
    {"rans_division_check", rans_division_check, METH_VARARGS,
     "rans_division_check(first, last) -> mismatches of the encoder's division"},
    {"rans_encode", rans_encode, METH_VARARGS,
     "rans_encode(symbols, itemsize, freqs, bits, lanes) -> (words, lane word counts)"},
    {"dq_replay", dq_replay, METH_VARARGS,
     "dq_replay(symbols, itemsize, chain, trans, quantizer, parity, values, out, value_size)"
     " -> None"},
    {"dq_viterbi", dq_viterbi, METH_VARARGS,
     "dq_viterbi(xs, steps, lam, rates, edges, out, scale, cap, start[, kernel name]) -> None"},
    {"dq_kernels", dq_kernels, METH_NOARGS, "dq_kernels() -> [names of the runnable kernels]"},
    {"planes_assemble", planes_assemble, METH_VARARGS,
     "planes_assemble(a, b, rest, r, out, itemsize) -> None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native",
    "rftpack's compiled decoder loops (see rftpack/native.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) {
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "VITERBI_LANES", VITERBI_LANES) < 0) Py_CLEAR(m);
    return m;
}
