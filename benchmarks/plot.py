"""Chart of a ``benchmarks.run`` JSON result: time relative to the baseline, and share of the copy bandwidth.

Run from the repository root (matplotlib is the optional ``bench`` extra: ``pip install -e .[bench]``)::

    python -m benchmarks.plot benchmarks/results/cpu.json [-o benchmarks/results/cpu.png]

Two panels per dtype. Top: each implementation's median time divided by the baseline's
(optax for BCE, MSE and ``ce_with_logits``, the naive jnp form for ``entropy_from_logits``, ``entr`` for
``entropy``), on a
log scale, lower is better. Bottom: effective bandwidth (inputs read once, gradient written once) as a
percentage of the device-to-device copy measured in the same run, higher is better.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections.abc import Sequence

COLORS = {"jaxloss": "#1b7837", "optax": "#2166ac", "torch": "#b2182b"}
OTHER_COLORS = ("#7f7f7f", "#b8860b", "#8c510a", "#542788")
MODE_SHORT = {"forward": "fwd", "value_and_grad": "v+g"}
WORKLOAD_SHORT = {
    "bce": "BCE",
    "mse": "MSE",
    "entropy_from_logits": "H(logits)",
    "entropy": "H(p)",
    "ce_with_logits": "CE(int)",
}


def _case_label(r: dict) -> str:
    shape = "x".join(str(s) for s in r["shape"])
    return f"{WORKLOAD_SHORT.get(r['workload'], r['workload'])} {MODE_SHORT.get(r['mode'], r['mode'])}\n{shape}"


def plot(result: dict, out: pathlib.Path) -> pathlib.Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit(
            "benchmarks.plot: matplotlib is not installed; install the bench extra: pip install -e .[bench]"
        ) from None

    results = result["results"]
    meta = result["meta"]
    dtypes = list(dict.fromkeys(r["dtype"] for r in results))
    impls = list(dict.fromkeys(r["impl"] for r in results))
    others = iter(OTHER_COLORS)
    colors = {i: COLORS.get(i) or next(others, "#333333") for i in impls}

    cases = list(dict.fromkeys((r["workload"], r["mode"], tuple(r["shape"])) for r in results))
    width = 0.8 / len(impls)
    fig, axes = plt.subplots(2 * len(dtypes), 1, figsize=(min(16, max(8, 1.1 * len(cases))), 2.6 * 2 * len(dtypes)))
    axes = list(getattr(axes, "flat", [axes]))
    for row, dtype in enumerate(dtypes):
        ratio_ax, frac_ax = axes[2 * row], axes[2 * row + 1]
        for k, impl in enumerate(impls):
            xs, ratios, fracs = [], [], []
            for c, case in enumerate(cases):
                match = [
                    r
                    for r in results
                    if r["dtype"] == dtype
                    and r["impl"] == impl
                    and (r["workload"], r["mode"], tuple(r["shape"])) == case
                ]
                if match and match[0]["ratio_to_baseline"]:
                    xs.append(c + (k - (len(impls) - 1) / 2) * width)
                    ratios.append(match[0]["ratio_to_baseline"])
                    fracs.append(100 * match[0]["fraction_of_copy"])
            ratio_ax.bar(xs, ratios, width, label=impl, color=colors[impl])
            frac_ax.bar(xs, fracs, width, label=impl, color=colors[impl])
        labels = [_case_label({"workload": w, "mode": m, "shape": s}) for w, m, s in cases]
        for ax in (ratio_ax, frac_ax):
            ax.set_xticks(range(len(cases)), labels, fontsize=7)
            ax.grid(axis="y", alpha=0.3)
        ratio_ax.set_yscale("log")
        ratio_ax.axhline(1.0, color="black", lw=0.8)
        ratio_ax.set_ylabel(f"{dtype}\ntime / baseline (lower is better)", fontsize=8)
        frac_ax.set_ylabel(f"{dtype}\n% of copy bandwidth\n(higher is better)", fontsize=8)
        if row == 0:
            ratio_ax.legend(fontsize=7, ncol=len(impls))
    versions = meta.get("versions", {})
    copy = meta["copy"]
    fig.suptitle(
        f"{meta['device_kind']} ({meta['backend']}, {meta.get('cpu_count')} cores) - jax {versions.get('jax')}, "
        f"optax {versions.get('optax')} - {meta['date']} - copy reference {copy['bandwidth_Bps'] / 1e9:.1f} GB/s "
        f"({copy['method']})\n{meta['command']}",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> pathlib.Path:
    p = argparse.ArgumentParser(prog="python -m benchmarks.plot", description=__doc__.split("\n\n")[0])
    p.add_argument("json", type=pathlib.Path, help="a result written by python -m benchmarks.run --json")
    p.add_argument("-o", "--out", type=pathlib.Path, default=None, help="PNG path (default: beside the JSON)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    result = json.loads(args.json.read_text())
    out = plot(result, args.out or args.json.with_suffix(".png"))
    print(out)
    return out


if __name__ == "__main__":
    main()
