"""Which codec settings ``rftpack bench`` runs: every rftpack profile at several rates, then
the peers. New rftpack profiles slot in, feature-detected: a lossy profile whose quantizer has
a ``step`` (rate control: ``scalar``, ``dq``, ...) is swept by ``target_bpw`` when
``CompressOptions`` has that field; ``hybrid`` is swept by its amplitude/phase bits; any other
profile runs once with its defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

#: hybrid profile: (amp_bits, phase_bits); the first is the profile's default.
HYBRID_BITS = [(6, 5), (5, 6), (4, 4), (7, 7), (8, 8)]
HYBRID_BITS_QUICK = [(6, 5), (4, 4)]
#: rate targets of the scalar/dq rows: NNCodec 2.1.3's rates on MiniLM (QP −44 … −26, 7.9868,
#: 6.3884, 4.9447, 3.4329 bits per weight), rounded down, so that on the benchmark model each
#: row compares with NNCodec's at equal or fewer bits and no interpolation
SCALAR_BPW = [7.986, 6.388, 4.944, 3.432]
#: rate targets of the calibrated rows (model-level fidelity; 5.0 is the "≤ 5 bits" point)
CALIBRATED_BPW = [8.0, 6.4, 5.0, 3.5]
SCALAR_BPW_QUICK = [5.0]
ZSTD_LEVELS = [3, 19]
ZSTD_LEVELS_QUICK = [3]
GGUF_TYPES = ["Q8_0", "Q5_0", "Q4_0"]
GGUF_TYPES_QUICK = ["Q8_0", "Q4_0"]
#: NNCodec 2.1.3 on MiniLM: ≈ 8.0, 6.4, 4.9, 3.4 bits per weight.
NNCODEC_QPS = [-44, -38, -32, -26]
NNCODEC_QPS_QUICK = [-38]

#: codec selectors accepted by ``--codecs``
CODECS = ("rftpack", "zstd", "zipnn", "gguf", "nncodec")


@dataclass(frozen=True)
class Setting:
    """One point of the benchmark: a codec (``rftpack`` or a peer) with its parameters."""

    family: str                      # curve / group name, e.g. "rftpack hybrid", "GGUF"
    label: str                       # the setting, e.g. "a6/p5 (default)", "Q8_0"
    codec: str                       # "rftpack" or a peer name of rftpack.bench.peers.PEERS
    params: dict[str, Any] = field(default_factory=dict)
    lossless: bool = False

    @property
    def name(self) -> str:
        return f"{self.family} {self.label}".strip()

    @property
    def slug(self) -> str:
        keep = [c if c.isalnum() else "_" for c in self.name.lower()]
        return "".join(keep).strip("_")


def _has_option(name: str) -> bool:
    from rftpack.api import CompressOptions

    return name in {f.name for f in dataclasses.fields(CompressOptions)}


def _rate_controlled(profile: Any) -> bool:
    """True when rftpack can aim this profile at a bits-per-weight target."""
    if not (_has_option("target_bpw") and profile.quantizer):
        return False
    from rftpack.profiles import build_stage

    try:
        quantizer = build_stage("quantizer", profile.quantizer)
    except Exception:  # a stage from a plugin that fails to build: run the defaults
        return False
    return hasattr(quantizer, "step")


def rftpack_settings(quick: bool = False) -> list[Setting]:
    """Every profile in ``rftpack.profiles.PROFILES``, swept where a rate knob is known."""
    from rftpack.profiles import PROFILES

    settings: list[Setting] = []
    for name, profile in PROFILES.items():
        family = f"rftpack {name}"
        if not profile.lossy:
            settings.append(Setting(family, "", "rftpack", {"profile": name}, lossless=True))
        elif name == "hybrid":
            for i, (a, p) in enumerate(HYBRID_BITS_QUICK if quick else HYBRID_BITS):
                settings.append(Setting(family, f"a{a}/p{p}" + (" (default)" if i == 0 else ""),
                                        "rftpack", {"profile": name, "quantizer_overrides":
                                                    {"amp_bits": a, "phase_bits": p}}))
        elif _rate_controlled(profile):
            for bpw in SCALAR_BPW_QUICK if quick else SCALAR_BPW:
                settings.append(Setting(family, f"target {bpw:g} bpw", "rftpack",
                                        {"profile": name, "target_bpw": bpw}))
            if not quick and _has_option("embedding_weight"):
                # The default rate control favours model fidelity (embedding tables count
                # 0.1); plain MSE allocation is the fair comparison on weight SNR.
                for bpw in SCALAR_BPW:
                    settings.append(Setting(f"{family} (plain MSE)", f"target {bpw:g} bpw",
                                            "rftpack", {"profile": name, "target_bpw": bpw,
                                                        "embedding_weight": 1.0}))
        else:
            settings.append(Setting(family, "(profile defaults)", "rftpack", {"profile": name}))
    return settings


def calibrated_settings(importance: dict[str, float], covariances: str | None = None,
                        quick: bool = False, rows: str | None = None) -> list[Setting]:
    """Every rate-controlled profile again, steered by measured importance weights and the
    token table's row weights (the .npz file ``rows``), and, for ``scalar``, rounded for the
    linear layers' outputs with the input covariances in the .npz file ``covariances``, as
    ``rftpack compress --calibrate`` does. The calibration texts are not the evaluation
    sentences."""
    from rftpack.profiles import PROFILES

    if not _has_option("importance"):
        return []
    settings = []
    for name, profile in PROFILES.items():
        if not (profile.lossy and name != "hybrid" and _rate_controlled(profile)):
            continue
        for bpw in SCALAR_BPW_QUICK if quick else CALIBRATED_BPW:
            params: dict[str, Any] = {"profile": name, "target_bpw": bpw,
                                      "importance": importance}
            if name == "scalar" and covariances and _has_option("input_covariance"):
                params["input_covariance"] = covariances
            if rows and _has_option("row_importance"):
                params["row_importance"] = rows
            settings.append(Setting(f"rftpack {name} (calibrated)", f"target {bpw:g} bpw",
                                    "rftpack", params))
    return settings


def peer_settings(quick: bool = False) -> list[Setting]:
    settings = [Setting("zstd", f"level {lvl}", "zstd", {"level": lvl}, lossless=True)
                for lvl in (ZSTD_LEVELS_QUICK if quick else ZSTD_LEVELS)]
    settings.append(Setting("ZipNN", "fp32", "zipnn", {}, lossless=True))
    settings += [Setting("GGUF", t, "gguf", {"qtype": t})
                 for t in (GGUF_TYPES_QUICK if quick else GGUF_TYPES)]
    settings += [Setting("NNCodec", f"qp {qp}", "nncodec", {"qp": qp})
                 for qp in (NNCODEC_QPS_QUICK if quick else NNCODEC_QPS)]
    return settings


def all_settings(quick: bool = False, codecs: tuple[str, ...] = CODECS) -> list[Setting]:
    """The benchmark's settings, restricted to the codec selectors in ``codecs``."""
    unknown = sorted(set(codecs) - set(CODECS))
    if unknown:
        from rftpack.errors import InputError

        raise InputError(f"unknown codec(s) {', '.join(unknown)}; known: {', '.join(CODECS)}")
    chosen = rftpack_settings(quick) if "rftpack" in codecs else []
    return chosen + [s for s in peer_settings(quick) if s.codec in codecs]
