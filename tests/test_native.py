"""The C extension (:mod:`rftpack.native`): built wherever a C compiler is, optional where none
is, and invisible in what comes out: every profile's archive extracts to the same bytes with
it and without it. Its decoders' parity with constriction and numba is in
tests/stages/test_rans_decoders.py and tests/stages/test_dq.py."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import rftpack
from rftpack import native
from rftpack.stages import dq
from rftpack.stages.rans import TABLE_BITS, RansCoder, read_lanes, read_table


def c_compiler() -> list[str]:
    return shlex.split(sysconfig.get_config_var("CC") or "cc")


def test_the_extension_is_built_where_a_c_compiler_is() -> None:
    compiler = c_compiler()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}) here: rftpack installs without its extension")
    if os.environ.get("RFTPACK_NO_NATIVE"):
        pytest.skip("RFTPACK_NO_NATIVE is set")
    # pip install -e . builds it next to the sources; a failed build is silent (optional)
    assert native.available(), "rftpack._native did not build: pip install -e . shows why"


def run_python(code: str, **env: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, **env}, check=True)
    return result.stdout.strip()


def test_rftpack_no_native_switches_it_off() -> None:
    probe = "from rftpack import native; print(native.available())"
    assert run_python(probe, RFTPACK_NO_NATIVE="1") == "False"
    if native.available():
        assert run_python(probe) == "True"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(3)
    path = tmp_path_factory.mktemp("native") / "model.safetensors"
    save_file({"encoder.weight": rng.normal(0, 0.05, (96, 200)).astype(np.float32),
               "embeddings.weight": rng.laplace(0, 0.02, (300, 64)).astype(np.float32),
               "encoder.bias": rng.normal(0, 0.01, 96).astype(np.float32)}, str(path))
    return path


@pytest.mark.parametrize("settings", [{"profile": "hybrid"},
                                      {"profile": "scalar", "target_bpw": 4.0},
                                      {"profile": "dq", "target_bpw": 3.0},
                                      {"profile": "lossless"}],
                         ids=["hybrid", "scalar", "dq", "lossless"])
def test_archives_extract_to_the_same_bytes_with_and_without_it(model: Path, tmp_path: Path,
                                                                 settings: dict) -> None:
    if not native.available():
        pytest.skip("rftpack._native is not built here")
    archive = tmp_path / "model.rftp"
    rftpack.compress(model, archive, **settings)
    with_native = tmp_path / "with.safetensors"
    rftpack.extract(archive, with_native)
    without = tmp_path / "without.safetensors"
    code = (f"import rftpack; rftpack.extract({str(archive)!r}, {str(without)!r}); "
            "import sys; print('numba' in sys.modules)")
    # no numba either: constriction and numpy decode it
    assert run_python(code, RFTPACK_NO_NATIVE="1", RFTPACK_NO_JIT="1") == "False"
    assert with_native.read_bytes() == without.read_bytes()


def constriction_words(symbols: np.ndarray, freqs: np.ndarray, lanes: int) -> list[np.ndarray]:
    import constriction

    model = constriction.stream.model.Categorical(freqs / float(1 << TABLE_BITS), perfect=False)
    words = []
    for lane in range(lanes):
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(symbols[lane::lanes].astype(np.int32), model)
        words.append(coder.get_compressed())
    return words


def test_the_encoder_writes_constrictions_words() -> None:
    """Word for word, over skewed and flat tables, symbols of probability 2**-24, one to four
    lanes (two run side by side in C), every symbol dtype, and lanes of unequal lengths."""
    if not native.available():
        pytest.skip("rftpack._native is not built here")
    rng = np.random.default_rng(11)
    cases = 0
    for alphabet in (2, 3, 17, 256, 4000, 65536):
        for count in (1, 2, 3, 8, 999, 20000):
            for lanes in (1, 2, 3, 4):
                scale = rng.choice([0.2, 3.0, 300.0])
                symbols = np.minimum(np.abs(rng.laplace(size=count) * scale), alphabet - 1)
                symbols = symbols.astype(np.int64)
                symbols[0] = alphabet - 1  # at least two symbols, one of them rare
                counts = np.bincount(symbols, minlength=alphabet)
                freqs = np.where(counts > 0, counts, 0).astype(np.int64)
                freqs = freqs * ((1 << TABLE_BITS) // int(freqs.sum()))
                freqs[np.argmax(freqs)] += (1 << TABLE_BITS) - int(freqs.sum())
                if alphabet == 65536:  # a symbol of the smallest frequency
                    freqs[np.flatnonzero(freqs)[-1]] = 1
                    freqs[np.argmax(freqs)] += (1 << TABLE_BITS) - int(freqs.sum())
                dtype = np.uint8 if alphabet <= 256 else rng.choice([np.uint16, np.uint32])
                for given in (symbols.astype(dtype), symbols):
                    got = native.rans_encode(given, freqs, TABLE_BITS, lanes)
                    want = constriction_words(symbols, freqs, lanes)
                    assert [w.tolist() for w in got] == [w.tolist() for w in want], \
                        (alphabet, count, lanes)
                cases += 1
    assert cases == 6 * 6 * 4


def test_the_encoders_division_is_exact_for_every_frequency() -> None:
    """The encoder divides by a reciprocal; at the edge states of every frequency of the
    2**24 table (just below each one's limit, where a reciprocal exact only below 2**63 was
    one too high for 1,439,800 of them) it must agree with plain division."""
    if not native.available():
        pytest.skip("rftpack._native is not built here")
    from rftpack import _native

    assert _native.rans_division_check(1, 1 << TABLE_BITS) == 0


def test_the_encoder_starts_from_state_0_at_any_frequency() -> None:
    """A lane's last symbol is encoded first, from state 0, and may be one of the smallest
    frequency (1 in 2**24: the leaky model's share of a symbol the table does not hold):
    constriction's words still."""
    if not native.available():
        pytest.skip("rftpack._native is not built here")
    freqs = np.array([(1 << TABLE_BITS) - 2, 2, 0], np.int64)
    for symbols in ([2], [0, 2], [2, 2], [1, 0, 0, 2], [0] * 50 + [1], [1, 2] * 20):
        symbols = np.array(symbols)
        for lanes in (1, 2):
            got = native.rans_encode(symbols, freqs, TABLE_BITS, lanes)
            want = constriction_words(symbols, freqs, lanes)
            assert [w.tolist() for w in got] == [w.tolist() for w in want], (symbols, lanes)


def test_the_encoder_pushes_a_word_at_a_state_exactly_at_the_limit() -> None:
    """Two symbols of 2**23 each add one bit at position 23 per step: symbol 1 and then 40
    zeros make the state exactly 2**63, the push limit of the next zero."""
    if not native.available():
        pytest.skip("rftpack._native is not built here")
    freqs = np.array([1 << 23, 1 << 23], np.int64)
    for lanes in (1, 2, 3):
        symbols = np.repeat(np.array([0] * 41 + [1]), lanes)
        got = native.rans_encode(symbols, freqs, TABLE_BITS, lanes)
        want = constriction_words(symbols, freqs, lanes)
        assert [w.tolist() for w in got] == [w.tolist() for w in want] == [[0, 0, 1]] * lanes


def test_the_encoder_refuses_symbols_outside_the_table() -> None:
    if not native.available():
        pytest.skip("rftpack._native is not built here")
    freqs = np.array([1 << 23, 1 << 23], np.int64)
    assert [w.tolist() for w in native.rans_encode(np.array([0, 0]), freqs, 24)] == [[]]
    for symbols in (np.array([0, 2], np.uint8), np.array([-1, 0]), np.array([1 << 40])):
        with pytest.raises(ValueError, match="outside the model"):
            native.rans_encode(symbols, freqs, 24)
    with pytest.raises(ValueError, match="wrong size"):
        native.rans_encode(np.array([0, 1]), freqs, 24, lanes=256)


def test_archives_are_the_same_bytes_with_and_without_it(model: Path, tmp_path: Path) -> None:
    """The C encoders and search write what constriction and numpy do, byte for byte."""
    if not native.available():
        pytest.skip("rftpack._native is not built here")
    for profile in ("scalar", "dq", "lossless"):
        with_native = tmp_path / f"{profile}-with.rftp"
        without = tmp_path / f"{profile}-without.rftp"
        rate = {} if profile == "lossless" else {"target_bpw": 4.0}
        rftpack.compress(model, with_native, profile=profile, **rate)
        run_python(f"import rftpack; rftpack.compress({str(model)!r}, {str(without)!r}, "
                   f"profile={profile!r}, **{rate!r})", RFTPACK_NO_NATIVE="1")
        assert with_native.read_bytes() == without.read_bytes(), profile


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.int64])
def test_the_histogram_counts_as_bincount_does(dtype) -> None:
    """Over one table and over row classes (a short last row too), runs of one symbol and
    spread ones."""
    if not native.available():
        pytest.skip("rftpack._native is not built here")
    rng = np.random.default_rng(5)
    bins = 200 if dtype == np.uint8 else 3000
    for count in (0, 1, 3, 4, 5, 384, 1000, 100_003):
        symbols = np.minimum(np.abs(rng.laplace(size=count) * 4), bins - 1).astype(dtype)
        symbols[: count // 3] = symbols[:1]  # a run
        assert np.array_equal(native.histogram(symbols, bins),
                              np.bincount(symbols.astype(np.int64), minlength=bins))
        for length in (1, 7, 384):
            rows = rng.integers(0, 4, -(-count // length)).astype(np.uint8)
            classes = np.repeat(rows, length)[:count].astype(np.int64)
            want = np.bincount(classes * bins + symbols.astype(np.int64),
                               minlength=(int(rows.max(initial=0)) + 1) * bins)
            got = native.histogram(symbols, bins, rows, length)
            assert np.array_equal(got, want.reshape(-1, bins)), (count, length)


def test_the_histogram_refuses_what_does_not_fit() -> None:
    """A symbol beyond the bins at every place of the unrolled loop and of its tail, with
    and without row classes; tables that do not fit the classes or the rows."""
    if not native.available():
        pytest.skip("rftpack._native is not built here")
    from rftpack import _native

    for count in range(1, 10):
        for at in range(count):
            symbols = np.zeros(count, np.uint8)
            symbols[at] = 3
            with pytest.raises(ValueError, match="outside the bins"):
                native.histogram(symbols, 3)
            with pytest.raises(ValueError, match="outside the bins"):
                native.histogram(symbols, 3, np.zeros(-(-count // 4), np.uint8), 4)
    with pytest.raises(ValueError, match="outside the bins"):
        native.histogram(np.array([-1, 0]), 3)
    with pytest.raises(ValueError, match="wrong size"):  # 3 rows of 2 need 3 classes
        native.histogram(np.arange(6) % 3, 3, np.array([0, 1], np.uint8), 2)
    with pytest.raises(ValueError, match="wrong size"):  # 2 classes of 3 bins: 6 counts
        _native.histogram(np.zeros(4, np.uint8), 1, 3, np.array([0, 1], np.uint8), 2,
                          np.zeros(5, np.int64))
    with pytest.raises(ValueError, match="wrong size"):  # bins whose tables overflow
        _native.histogram(np.arange(8, dtype=np.uint8), 1, 1 << 62,
                          np.array([0, 1, 2, 3], np.uint8), 2, np.zeros(4, np.int64))


def test_huffman_lengths_and_bitstreams_are_the_python_ones(monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """floatplanes' Huffman coder in C: the same code lengths (ties broken alike) and the same
    backward bitstreams as _zhuff's numpy code, over many ties, skewed counts and sizes."""
    if not native.available():
        pytest.skip("rftpack._native is not built here")
    from rftpack.stages import _zhuff

    rng = np.random.default_rng(7)
    cases = []
    for trial in range(300):
        n = int(rng.integers(2, 257))
        counts = [rng.integers(1, 4, n), (rng.pareto(1.0, n) * 10 + 1).astype(np.int64),
                  2 ** rng.integers(0, 30, n)][trial % 3].astype(np.int64)
        size = int(rng.choice([1, 3, 1023, 1024, 5000]))
        block = rng.choice(n, size, p=counts / counts.sum()).astype(np.uint8)
        cases.append((counts, block))
    compiled = []
    for counts, block in cases:
        plain = _zhuff._plain_huffman(counts, np.arange(counts.shape[0]))
        lengths = _zhuff.huffman_lengths(counts)  # (zstd's 11-bit limit: longer ones packaged)
        codes = _zhuff.canonical_codes(lengths).astype(np.uint16)
        table = np.zeros(256, np.int64)
        table[: lengths.shape[0]] = lengths
        table_codes = np.zeros(256, np.uint16)
        table_codes[: codes.shape[0]] = codes
        compiled.append((plain, lengths, native.huffman_pack(block, table, table_codes)))
    monkeypatch.setattr(native, "available", lambda: False)
    for (counts, block), (plain, lengths, packed) in zip(cases, compiled, strict=True):
        assert np.array_equal(_zhuff._plain_huffman(counts, np.arange(counts.shape[0])), plain)
        assert np.array_equal(_zhuff.huffman_lengths(counts), lengths)
        codes = _zhuff.canonical_codes(lengths).astype(np.uint16)
        assert _zhuff._pack_stream(lengths.astype(np.uint8)[block], codes[block]) == packed


def test_huffman_codes_up_to_32_bits_and_what_is_refused() -> None:
    if not native.available():
        pytest.skip("rftpack._native is not built here")
    from rftpack.stages import _zhuff

    rng = np.random.default_rng(3)
    lengths = rng.integers(0, 33, 256)
    codes = (rng.integers(0, 1 << 16, 256) & ((1 << np.minimum(lengths, 16)) - 1))
    block = rng.integers(0, 256, 999).astype(np.uint8)  # length-0 symbols too: no bits
    assert native.huffman_pack(block, lengths, codes) == \
        _zhuff._pack_stream(lengths.astype(np.uint8)[block], codes.astype(np.uint16)[block])
    bad_code, bad_length = np.zeros(256, np.int64), np.zeros(256, np.int64)
    bad_code[0], bad_length[0] = 1, 33
    with pytest.raises(ValueError, match="longer than its length"):
        native.huffman_pack(block, np.ones(256, np.int64), bad_code + 1)  # 2 in 1 bit
    with pytest.raises(ValueError, match="longer than its length"):
        native.huffman_pack(block, bad_length, np.zeros(256, np.int64))
    with pytest.raises(ValueError, match="sum below 2"):
        native.huffman_depths(np.array([1 << 62, 1 << 62, 5]))
    with pytest.raises(ValueError, match=">= 0"):
        native.huffman_depths(np.array([3, -1, 5]))


def test_words_are_read_in_place_at_any_alignment() -> None:
    if not native.available():
        pytest.skip("rftpack._native is not built here")
    rng = np.random.default_rng(1)
    symbols = rng.choice(40, 5000, p=np.r_[0.5, np.full(39, 0.5 / 39)])
    data = RansCoder().encode(symbols, 40)
    coder = RansCoder()
    for pad in range(4):  # the segment starts at every offset of a word
        shifted = memoryview(bytes(pad) + data)[pad:]
        assert np.array_equal(coder.decode(shifted, 5000, 40), symbols)


@pytest.mark.parametrize(("alphabet", "dtype"), [(200, np.uint8), (256, np.uint8),
                                                 (3000, np.uint16), (65536, np.uint16),
                                                 (3000, np.uint32), (3000, np.int32)])
def test_symbols_are_written_in_the_dtype_asked_for(alphabet: int, dtype) -> None:
    if not native.available():
        pytest.skip("rftpack._native is not built here")
    rng = np.random.default_rng(alphabet)
    symbols = rng.integers(0, alphabet, 4000)
    symbols[:2] = [0, alphabet - 1]
    data = RansCoder().encode(symbols, alphabet)
    present, table, pos = read_table(memoryview(data), alphabet)
    freqs = np.zeros(alphabet, np.int64)
    freqs[present] = table
    bounds, start = read_lanes(memoryview(data), pos)
    words = memoryview(data)[start:]
    got = native.rans_decode(words, freqs, TABLE_BITS, 4000, dtype=dtype, lanes=bounds)
    assert got.dtype == dtype and np.array_equal(got, symbols)
    with pytest.raises(ValueError, match="int32 or uint"):
        native.rans_decode(words, freqs, TABLE_BITS, 4000, dtype=np.int16, lanes=bounds)


def test_the_extension_checks_its_buffers() -> None:
    if not native.available():
        pytest.skip("rftpack._native is not built here")
    from rftpack import _native

    freqs = np.array([1 << 23, 1 << 23], np.int64)
    words = np.array([5, 7], np.uint32)
    out = np.empty(3, np.int32)
    _native.rans_decode(words, freqs, 24, 3, out, 4, np.array([0, 2], np.int64))
    with pytest.raises(ValueError, match="wrong size"):
        _native.rans_decode(words, freqs, 24, 4, out, 4, np.array([0, 2], np.int64))  # 3, not 4
    with pytest.raises(ValueError, match="wrong size"):
        _native.rans_decode(words, freqs, 24, 3, out, 3, np.array([0, 2], np.int64))
    with pytest.raises(ValueError, match="wrong size"):
        _native.rans_decode(b"\x01\x02\x03", freqs, 24, 1, out[:1], 4, np.array([0, 0], np.int64))
    with pytest.raises(ValueError, match="does not fit"):
        _native.rans_decode(words, np.ones(257, np.int64), 24, 3, np.empty(3, np.uint8), 1,
                            np.array([0, 2], np.int64))
    for bounds in ([0, 1], [0, 3], [1, 2], [0, 2, 1, 2], [2]):  # lanes that miss the words
        with pytest.raises(ValueError, match="wrong size|do not cover"):
            _native.rans_decode(words, freqs, 24, 3, out, 4, np.array(bounds, np.int64))
    with pytest.raises(TypeError):
        _native.rans_decode(words, freqs, 24, 1, b"read-only", 1, np.array([0, 2], np.int64))
    trans = np.array([[0, 1], [1, 0]], np.int64)
    quantizer = np.array([0, 1], np.int64)
    parity = np.array([0, 1, 0], np.uint8)
    values = np.zeros(6)
    symbols = np.array([0, 1, 2, 1], np.uint8)
    replayed = np.empty(4)
    _native.dq_replay(symbols, 1, 2, trans, quantizer, parity, values, replayed, 8)
    with pytest.raises(ValueError, match="wrong size"):
        _native.dq_replay(symbols, 1, 2, trans, quantizer, parity, values[:5], replayed, 8)
    with pytest.raises(ValueError, match="leaves the trellis"):
        _native.dq_replay(symbols, 1, 2, trans + 1, quantizer, parity, values, replayed, 8)
    with pytest.raises(ValueError, match="parities"):
        _native.dq_replay(symbols, 1, 2, trans, quantizer, parity + 1, values, replayed, 8)
    with pytest.raises(ValueError, match="outside the alphabet"):
        _native.dq_replay(symbols + 1, 1, 2, trans, quantizer, parity, values, replayed, 8)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, "bfloat16"])
@pytest.mark.parametrize("fast_decode", [True, False])  # rotation 1, or 2 … 5
def test_float_planes_assemble_to_the_same_bytes_as_numpy(monkeypatch, dtype,
                                                          fast_decode: bool) -> None:
    import ml_dtypes

    from rftpack.stages.floatplanes import CHUNK, FLOAT_PLANES, FloatPlanesCoder

    if not native.available():
        pytest.skip("rftpack._native is not built here")
    dtype = np.dtype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    rng = np.random.default_rng(dtype.itemsize)
    x = (rng.laplace(0, 0.03, 2 * CHUNK + 77) * rng.choice([1, 1e-3, 40], 2 * CHUNK + 77))
    x = x.astype(dtype)
    coder = FloatPlanesCoder(fast_decode=fast_decode)
    data = coder.encode_elements(x)
    assert data[0] == FLOAT_PLANES  # (not the shuffled-zstd layout)
    compiled = coder.decode_elements(data, x.shape[0], dtype)
    monkeypatch.setattr(native, "available", lambda: False)
    plain = coder.decode_elements(data, x.shape[0], dtype)
    assert compiled.tobytes() == plain.tobytes() == x.tobytes()


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return set(next((line.split(":", 1)[1].split() for line in text.splitlines()
                     if line.startswith("flags")), []))


def test_the_search_runs_the_widest_kernel_the_cpu_has() -> None:
    if not native.available():
        pytest.skip("rftpack._native is not built here")
    kernels = native.dq_kernels()
    assert kernels[0] == "portable"
    flags = cpu_flags()
    if sys.platform == "linux" and os.uname().machine == "x86_64" and flags:
        expected = ["portable"] + ["avx2"] * ("avx2" in flags) + \
            ["avx512bw"] * ({"avx512f", "avx512bw"} <= flags)
        assert kernels == expected
    with pytest.raises(ValueError, match="does not run that kernel"):
        native.dq_viterbi(np.zeros((1, 4)), 0.25, np.ones(3), dq.EDGES[4],
                          *dq.search_costs(0.25, np.ones(3), 4), kernel="sse9")


@pytest.mark.parametrize("kernel", ["portable", "avx2", "avx512bw"])
def test_every_kernel_finds_numpys_indices(kernel: str) -> None:
    """The installed extension runs the widest kernel; each other one must find the same
    indices too (ties, long chains whose int16 costs wrap around, few and many states)."""
    if not native.available():
        pytest.skip("rftpack._native is not built here")
    if kernel not in native.dq_kernels():
        pytest.skip(f"this CPU does not run the {kernel} kernel")
    rng = np.random.default_rng(11)
    for states, chain, scale, lam in [(256, 300, 4.0, 0.25), (8, 64, 0.3, 0.25),
                                      (64, 7, 50.0, 2.0), (4, 1, 1.0, 0.0),
                                      (256, 2500, 300.0, 5.0)]:
        x = rng.laplace(0, scale, 40 * chain)  # over 32 chains: every lane, and a second group
        x[::2] = np.round(x[::2] * 2) / 2  # exact ties, in every chain
        rates = dq._rate_table(x)
        padded = dq._padded(x, chain, np.float64)
        costs = dq.search_costs(lam, rates, states)
        got = native.dq_viterbi(padded, lam, rates, dq.EDGES[states], *costs, kernel=kernel)
        np.testing.assert_array_equal(
            dq._viterbi_numpy(padded.T, lam, rates, dq.EDGES[states], *costs).T, got)
