/*
 * rftpack._native: the decoders' two hot loops in C, built at install time where a C compiler
 * is found (optional: without it rftpack decodes with constriction / numba / numpy, to the
 * same values). Wrapped, with its argument checks, by rftpack/native.py; nothing else
 * imports this module.
 *
 *   rans_decode(words, freqs, bits, count, out) -> (state, words_left)
 *       constriction's AnsCoder(words).decode(Categorical(freqs / 2**bits, perfect=False),
 *       count), symbol for symbol: the port of rftpack/stages/_rans_jit.py (whose docstring
 *       says what constriction does), into the int32 buffer `out`.
 *   dq_replay(symbols, itemsize, chain, trans, quantizer, parity, values, out)
 *       dq's decoder replay: each chain of `chain` symbols starts in state 0; symbol s gets
 *       values[2 s + quantizer[state]] and moves the state to trans[2 state + parity[s]].
 *
 * Why C and not only numba: numba's start-up (~0.75 s a process) costs more than it saves on
 * a model of MiniLM's size; this module loads in about a millisecond. Both loops release the
 * GIL, so --threads decodes tensors side by side.
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
            const uint64_t entry = (uint64_t)s | (lo << LO_SHIFT) | ((cdf[s + 1] - lo) << FREQ_SHIFT);
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

/* constriction's AnsCoder(words): (state, words left); 1 when the last word is 0. */
static int initial_state(const unsigned char *words, Py_ssize_t nwords, uint64_t *state,
                         Py_ssize_t *pos) {
    *pos = nwords;
    *state = 0;
    if (*pos) {
        *pos -= 1;
        *state = word_at(words, *pos);
        if (*state == 0) return 1;
        if (*pos) {
            *pos -= 1;
            *state = (*state << 32) | word_at(words, *pos);
        }
    }
    return 0;
}

static void decode_packed(const unsigned char *words, Py_ssize_t *pos, uint64_t *state_io,
                          const uint64_t *cdf, const uint64_t *table, int slot_bits,
                          Py_ssize_t count, int32_t *out) {
    uint64_t state = *state_io;
    Py_ssize_t p = *pos;
    const int shift = PRECISION - slot_bits;
    for (Py_ssize_t i = 0; i < count; i++) {
        const uint64_t quantile = state & QUANTILE_MASK;
        const uint64_t slot = quantile >> shift;
        const uint64_t entry = table[slot];
        int64_t symbol = (int64_t)(entry & SYMBOL_MASK);
        uint64_t lo = (entry >> LO_SHIFT) & FIELD_MASK;
        uint64_t frequency = entry >> FREQ_SHIFT;
        if (quantile - lo >= frequency) {
            /* the slot holds symbol boundaries: the symbol is in symbol + 1 ... the next slot's */
            int64_t a = symbol + 1;
            int64_t b = (int64_t)(table[slot + 1] & SYMBOL_MASK);
            while (a < b) {
                const int64_t mid = (a + b + 1) >> 1;
                if (cdf[mid] <= quantile) a = mid;
                else b = mid - 1;
            }
            symbol = a;
            lo = cdf[a];
            frequency = cdf[a + 1] - lo;
        }
        state = (state >> PRECISION) * frequency + (quantile - lo);
        if (state < LOW && p > 0) {
            p--;
            state = (state << 32) | word_at(words, p);
        }
        out[i] = (int32_t)symbol;
    }
    *state_io = state;
    *pos = p;
}

/* alphabets over 2**16 symbols: a binary search per symbol (constriction's own way) */
static void decode_wide(const unsigned char *words, Py_ssize_t *pos, uint64_t *state_io,
                        const uint64_t *cdf, int64_t n, Py_ssize_t count, int32_t *out) {
    uint64_t state = *state_io;
    Py_ssize_t p = *pos;
    for (Py_ssize_t i = 0; i < count; i++) {
        const uint64_t quantile = state & QUANTILE_MASK;
        int64_t a = 0, b = n - 1;
        while (a < b) {
            const int64_t mid = (a + b + 1) >> 1;
            if (cdf[mid] <= quantile) a = mid;
            else b = mid - 1;
        }
        const uint64_t lo = cdf[a];
        state = (state >> PRECISION) * (cdf[a + 1] - lo) + (quantile - lo);
        if (state < LOW && p > 0) {
            p--;
            state = (state << 32) | word_at(words, p);
        }
        out[i] = (int32_t)a;
    }
    *state_io = state;
    *pos = p;
}

static int slot_bits_for(int64_t alphabet, int64_t count) {
    int bits = bit_length(alphabet) + 3;
    const int by_count = bit_length(count);
    if (by_count < bits) bits = by_count;
    if (MAX_SLOT_BITS < bits) bits = MAX_SLOT_BITS;
    return bits < 1 ? 1 : bits;
}

static PyObject *rans_decode(PyObject *self, PyObject *args) {
    Py_buffer words, freqs, out;
    int bits;
    Py_ssize_t count;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*inw*", &words, &freqs, &bits, &count, &out)) return NULL;
    PyObject *result = NULL;
    uint64_t *cdf = NULL, *table = NULL;
    const int64_t n = freqs.len / 8;
    const char *error = NULL;
    if (words.len % 4 || freqs.len % 8 || count < 0 || out.len < 4 * count) {
        error = "rans: buffers of the wrong size";
    } else if (n < 2 || n >= (INT64_C(1) << PRECISION) - 1) {
        error = "rans model: constriction's categorical model needs 2 ... 2**24 - 2 symbols";
    } else if (bits < 1 || bits > 62) {
        error = "rans model: table totals 2**1 ... 2**62 are supported";
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
    uint64_t state;
    Py_ssize_t pos;
    Py_BEGIN_ALLOW_THREADS
    error = quantized_cdf((const int64_t *)freqs.buf, n, bits, cdf);
    if (!error && initial_state(words.buf, words.len / 4, &state, &pos))
        error = "rans: invalid compressed data: ANS compressed data never ends in a zero word";
    if (!error) {
        if (packed) {
            slot_table(cdf, n, slot_bits, table);
            decode_packed(words.buf, &pos, &state, cdf, table, slot_bits, count, out.buf);
        } else {
            decode_wide(words.buf, &pos, &state, cdf, n, count, out.buf);
        }
    }
    Py_END_ALLOW_THREADS
    if (error) PyErr_SetString(PyExc_ValueError, error);
    else result = Py_BuildValue("(Kn)", (unsigned long long)state, pos);
done:
    free(cdf);
    free(table);
    PyBuffer_Release(&words);
    PyBuffer_Release(&freqs);
    PyBuffer_Release(&out);
    return result;
}

#define REPLAY_LOOP(T)                                                                    \
    do {                                                                                  \
        const T *s = (const T *)symbols.buf;                                              \
        for (Py_ssize_t start = 0; start < n; start += chain) {                           \
            const Py_ssize_t stop = n - start < chain ? n : start + chain;                \
            int64_t state = 0;                                                            \
            for (Py_ssize_t i = start; i < stop; i++) {                                   \
                const uint64_t symbol = (uint64_t)s[i];                                   \
                if (symbol >= alphabet) {                                                 \
                    bad = 1;                                                              \
                    break;                                                                \
                }                                                                         \
                value[i] = values[2 * symbol + (uint64_t)quantizer[state]];               \
                state = trans[2 * state + parity[symbol]];                                \
            }                                                                             \
            if (bad) break;                                                               \
        }                                                                                 \
    } while (0)

static PyObject *dq_replay(PyObject *self, PyObject *args) {
    Py_buffer symbols, trans_buf, quantizer_buf, parity_buf, values_buf, out;
    int itemsize;
    Py_ssize_t chain;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*iny*y*y*y*w*", &symbols, &itemsize, &chain, &trans_buf,
                          &quantizer_buf, &parity_buf, &values_buf, &out))
        return NULL;
    PyObject *result = NULL;
    const Py_ssize_t states = quantizer_buf.len / 8;
    const uint64_t alphabet = (uint64_t)parity_buf.len;
    const Py_ssize_t n = itemsize > 0 ? symbols.len / itemsize : 0;
    if (!(itemsize == 1 || itemsize == 2 || itemsize == 4 || itemsize == 8) ||
        symbols.len % itemsize || chain < 1 || states < 1 || trans_buf.len != 16 * states ||
        quantizer_buf.len % 8 || values_buf.len != 16 * (Py_ssize_t)alphabet ||
        out.len != 8 * n) {
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
    const double *values = values_buf.buf;
    double *value = out.buf;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    switch (itemsize) {
        case 1: REPLAY_LOOP(uint8_t); break;
        case 2: REPLAY_LOOP(uint16_t); break;
        case 4: REPLAY_LOOP(uint32_t); break;
        default: REPLAY_LOOP(uint64_t); break;
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

static PyMethodDef methods[] = {
    {"rans_decode", rans_decode, METH_VARARGS,
     "rans_decode(words, freqs, bits, count, out) -> (state, words_left)"},
    {"dq_replay", dq_replay, METH_VARARGS,
     "dq_replay(symbols, itemsize, chain, trans, quantizer, parity, values, out) -> None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native",
    "rftpack's compiled decoder loops (see rftpack/native.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
