"""Loss and accuracy curves of one or more runs (their metrics.jsonl) as a PNG, with matplotlib."""

from __future__ import annotations

from pathlib import Path

from .metrics import read_metrics


def plot_runs(run_dirs: list[str | Path], out: str | Path, labels: list[str] | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = labels or [Path(r).name for r in run_dirs]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for run_dir, label in zip(run_dirs, labels):
        records = read_metrics(run_dir)
        train = [r for r in records if r["split"] == "train"]
        evals = [r for r in records if r["split"] == "eval"]
        steps = [r["step"] for r in train]
        if train and "mlm_loss" in train[0]:
            axes[0].plot(steps, [r["mlm_loss"] for r in train], label=f"{label} MLM")
            axes[0].plot(steps, [r["nsp_loss"] for r in train], label=f"{label} NSP", linestyle="--")
        else:  # records recovered from a printed log hold only the total loss
            axes[0].plot(steps, [r["loss"] for r in train], ".-", label=f"{label} MLM + NSP")
        if evals:
            es = [r["step"] for r in evals]
            axes[0].plot(es, [r["mlm_loss"] for r in evals], "o", label=f"{label} MLM (held-out)")
            axes[1].plot(es, [r["mlm_accuracy"] for r in evals], "o-", label=f"{label} MLM")
            axes[1].plot(es, [r["nsp_accuracy"] for r in evals], "s--", label=f"{label} NSP")
            axes[2].plot(es, [r["perplexity"] for r in evals], "o-", label=label)
    axes[0].set(title="training loss", xlabel="step", ylabel="loss")
    axes[1].set(title="held-out accuracy", xlabel="step", ylabel="accuracy")
    axes[2].set(title="held-out MLM perplexity", xlabel="step", ylabel="perplexity", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a run without evaluations leaves two panels empty
            ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
