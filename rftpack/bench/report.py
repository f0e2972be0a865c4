"""The benchmark's table (plain text / Markdown cells) and its rate–distortion plot."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rftpack.bench.runner import BenchResult, Row

HEADERS = ["codec", "setting", "bits/weight", "ratio", "weight SNR dB", "tensor SNR dB",
           "emb. cosine", "enc Mw/s", "dec Mw/s", "peak MB enc/dec"]


def _num(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _snr(row: Row, value: float | None) -> str:
    if value is None:
        return "—"
    if math.isinf(value) and value > 0:
        return "lossless" if row.exact or row.lossless else "inf"
    return f"{value:.2f}"


def row_cells(row: Row) -> list[str]:
    if row.error:
        return [row.family, row.setting, "failed"] + ["—"] * (len(HEADERS) - 3)
    peak = (f"{_num(row.encode_peak_mb, '.0f')} / {_num(row.decode_peak_mb, '.0f')}"
            if row.encode_peak_mb is not None or row.decode_peak_mb is not None else "—")
    return [row.family, row.setting, _num(row.bits_per_weight, ".3f"),
            _num(row.ratio, ".3f") + "×", _snr(row, row.weight_snr_db),
            _snr(row, row.mean_tensor_snr_db), _num(row.embedding_cosine, ".5f"),
            _num(row.encode_mweights_s, ".2f"), _num(row.decode_mweights_s, ".2f"), peak]


def table_cells(result: BenchResult) -> tuple[list[str], list[list[str]]]:
    return HEADERS, [row_cells(r) for r in result.rows]


def text_table(result: BenchResult) -> str:
    """Fixed-width table, one line per setting."""
    headers, rows = table_cells(result)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                           strict=True)))
    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


def markdown_table(result: BenchResult) -> str:
    headers, rows = table_cells(result)
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def footnotes(result: BenchResult) -> list[str]:
    """Lines that belong under the table: what was skipped, what went wrong, definitions."""
    lines = [f"model: {result.model} ({result.tensors} tensors, {result.weights:,} weights, "
             f"{result.original_bytes / 1e6:.2f} MB)"]
    for peer, reason in result.skipped.items():
        lines.append(f"{_peer_title(peer)}: not run — {reason}")
    if result.embeddings:
        lines.append(f"embedding cosine: not measured ({result.embeddings})")
    for row in result.rows:
        if row.error:
            lines.append(f"{row.name}: failed — {row.error}")
        for note in row.notes:
            lines.append(f"{row.name}: {note}")
    if result.rft_gain_db:
        gains = sorted(result.rft_gain_db.values())
        worst = sorted(result.rft_gain_db.items(), key=lambda kv: -kv[1])[:3]
        lines.append(f"RFT coding gain over {len(gains)} lossy tensors (64-coefficient "
                     f"sub-bands): median {gains[len(gains) // 2]:.3f} dB, min {gains[0]:.3f}, "
                     f"max {gains[-1]:.3f} ({', '.join(f'{n} {g:.2f}' for n, g in worst)}); "
                     f"0 dB = no energy compaction (per tensor in --json)")
    if isinstance(result.jit_warmup, float):
        lines.append(f"compiled code: numba's functions were compiled into their on-disk cache "
                     f"before the timed runs ({result.jit_warmup:.1f} s, once per install, in "
                     f"no row)")
    elif isinstance(result.jit_warmup, str):
        lines.append(f"compiled code: not warmed up ({result.jit_warmup})")
    calibration = result.calibration
    if calibration.get("weights"):
        lines.append(f"(calibrated) rows: as `compress --calibrate` — rate control weighted "
                     f"by importance (the token table's rows by their use in the texts), and "
                     f"scalar's linear layers rounded for their outputs, "
                     f"measured in {calibration['seconds']:.1f} s on {calibration['texts']} "
                     f"calibration texts that are not the evaluation sentences; that time is "
                     f"not in the encode speed")
    elif calibration.get("error"):
        lines.append(f"(calibrated) rows: not run — {calibration['error']}")
    lines.append("bits/weight = 8 × stored bytes ÷ all weights; weight SNR over all float "
                 "weights; tensor SNR = mean over changed float tensors with ≥ 2 dims; speeds "
                 "single-threaded, including reading and writing files; decode speed = the "
                 f"fastest of {_decode_runs(result)} decodes, each in a fresh process (all "
                 "in --json); peak MB = VmHWM of the encode / decode process (interpreter and "
                 "imports included)")
    return lines


def _decode_runs(result: BenchResult) -> int:
    return max((len(row.decode_runs_seconds) for row in result.rows), default=1)


def _peer_title(peer: str) -> str:
    return {"zstd": "zstd", "zipnn": "ZipNN", "gguf": "GGUF", "nncodec": "NNCodec"}.get(peer,
                                                                                      peer)


def _pareto(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Points (sorted by rate) that no point of lower or equal rate has a higher SNR than."""
    front: list[tuple[float, float, str]] = []
    for point in points:
        if not front or point[1] > front[-1][1]:
            front.append(point)
    return front


def _curves(result: BenchResult, metric: str) -> dict[str, list[tuple[float, float, str]]]:
    """(bits per weight, value, setting) per family, for ``metric`` "snr" (weight SNR, dB) or
    "cosine" (embedding error 1 − cosine); lossless and failed rows are left out."""
    curves: dict[str, list[tuple[float, float, str]]] = {}
    for row in result.rows:
        if row.error or row.bits_per_weight is None:
            continue
        if metric == "snr":
            value = row.weight_snr_db
            if value is None or math.isinf(value):
                continue
        else:
            if row.embedding_cosine is None or row.exact:
                continue
            value = max(1.0 - row.embedding_cosine, 1e-7)
        curves.setdefault(row.family, []).append((row.bits_per_weight, value, row.setting))
    return curves


def _draw(ax: Any, curves: dict[str, list[tuple[float, float, str]]], styles: dict[str, str],
          higher_is_better: bool) -> None:
    for family, points in curves.items():
        points.sort()
        sign = 1.0 if higher_is_better else -1.0
        front = [(r, sign * v, s) for r, v, s in _pareto([(r, sign * v, s)
                                                           for r, v, s in points])]
        style = "-" if family.startswith("rftpack") else "--"
        marker = styles[family]
        (line,) = ax.plot([p[0] for p in front], [p[1] for p in front], style, marker=marker,
                          label=family, linewidth=1.6)
        beaten = [p for p in points if p not in front]
        if beaten:  # dominated settings: hollow markers off the line
            ax.plot([p[0] for p in beaten], [p[1] for p in beaten], linestyle="none",
                    marker=marker, fillstyle="none", color=line.get_color())


def plot(result: BenchResult, path: str | Path) -> Path:
    """Rate–distortion curves, one per codec family: bits per weight → aggregate weight SNR,
    and (when measured) bits per weight → sentence-embedding error 1 − cosine; a marker per
    setting, the line through the family's Pareto-optimal settings.

    Lossless settings have no finite SNR; they are listed in a box instead. Raises
    ImportError when matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    snr, cosine = _curves(result, "snr"), _curves(result, "cosine")
    lossless = [f"{row.name}: {row.bits_per_weight:.2f} bpw" for row in result.rows
                if not row.error and row.bits_per_weight is not None
                and row.weight_snr_db is not None and math.isinf(row.weight_snr_db)]
    markers = "osD^v<>phX*"
    styles = {family: markers[i % len(markers)] for i, family in enumerate(snr)}
    if cosine:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(15, 6), dpi=110)
    else:
        fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    _draw(ax, snr, styles, higher_is_better=True)
    ax.set_xlabel("bits per weight (whole archive ÷ all weights)")
    ax.set_ylabel("aggregate weight SNR (dB)")
    name = Path(result.model).name if Path(result.model).name != "model" else \
        Path(result.model).parent.name
    ax.set_title(f"rate–distortion on {name} ({result.weights / 1e6:.1f} M weights)")
    ax.grid(True, alpha=0.3)
    if snr:
        ax.legend(loc="lower right", fontsize=8)
    if lossless:
        ax.text(0.02, 0.98, "lossless (SNR = ∞):\n" + "\n".join(lossless),
                transform=ax.transAxes, va="top", ha="left", fontsize=8,
                bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85})
    if cosine:
        _draw(ax2, cosine, {f: styles.get(f, "o") for f in cosine}, higher_is_better=False)
        ax2.set_yscale("log")
        ax2.set_xlabel("bits per weight (whole archive ÷ all weights)")
        ax2.set_ylabel("sentence-embedding error 1 − cosine (log)")
        ax2.set_title("model-level fidelity (mean over the evaluation sentences)")
        ax2.axhline(1e-3, color="grey", linewidth=0.8, linestyle=":")
        ax2.grid(True, which="both", alpha=0.3)
        ax2.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    plt.close(fig)
    return out
