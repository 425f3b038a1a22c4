"""Pareto plots of a table: top-1 accuracy against MACs and latency.

Each finished row is a filled point at our mean with a +-std error bar, in
the row's colour (the legend names the rows: many rows share one cost, so
labels beside the points would overlap); the paper's number for the row
is a hollow diamond at the same cost (only when we ran the paper's
dataset: a proxy's accuracy is not comparable). The x axis is logarithmic
when the costs span more than a factor of 10.
"""

import matplotlib

matplotlib.use("Agg")

import matplotlib.lines as mlines  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib import transforms  # noqa: E402

# The plots: `(file suffix, entry key, scale, x-axis label)`.
AXES = (
    ("macs", "macs", 1e6, "MACs per image (millions, conv + dense)"),
    ("latency", "latency_ms_float32", 1.0,
     "LiteRT float32 latency (ms, batch 1, 1 thread, this CPU)"),
)


def pareto(table, entries, prefix):
    """Writes `<prefix>_macs.png` and `<prefix>_latency.png` where rows have
    those numbers; returns the paths written."""
    written = []
    for suffix, key, scale, label in AXES:
        points = [e for e in entries
                  if e["accuracy_mean"] is not None and e.get(key)]
        if points:
            path = f"{prefix}_{suffix}.png"
            _plot(table, points, key, scale, label, path)
            written.append(path)
    return written


def _shifts(xs, step=7.0):
    """Horizontal offsets in points: rows at the same x spread around it."""
    shifts, seen = [], {}
    counts = {x: xs.count(x) for x in xs}
    for x in xs:
        index = seen.get(x, 0)
        seen[x] = index + 1
        shifts.append((index - (counts[x] - 1) / 2) * step)
    return shifts


def _extent(mean, std):
    return mean - (std or 0), mean + (std or 0)


def _plot(table, points, key, scale, xlabel, path):
    colours = plt.get_cmap("tab20" if len(points) > 10 else "tab10").colors
    datasets = sorted({p["dataset"] for p in points})
    has_paper = any(p["paper"] is not None for p in points)
    with_paper = has_paper and datasets == [table.dataset]
    figure, axes = plt.subplots(figsize=(8, 5))
    xs = [point[key] / scale for point in points]
    handles = []
    for point, colour, x, shift in zip(points, colours, xs, _shifts(xs)):
        # Rows of equal cost side by side, so their error bars stay apart.
        where = transforms.offset_copy(axes.transData, figure, x=shift,
                                       units="points")
        handles.append(axes.errorbar(
            x, point["accuracy_mean"], yerr=point["accuracy_std"] or 0,
            fmt="o", color=colour, capsize=3, markersize=6,
            label=point["label"], transform=where))
        if with_paper and point["paper"] is not None:
            beside = transforms.offset_copy(axes.transData, figure,
                                            x=shift + 3, units="points")
            axes.errorbar(x, point["paper"], yerr=point["paper_std"] or 0,
                          fmt="D", mfc="none", color=colour, capsize=3,
                          markersize=7, transform=beside)
    # Offset points do not count towards the automatic limits: set them.
    low, high = min(xs), max(xs)
    if high > 10 * low:
        axes.set_xscale("log")
        axes.set_xlim(low / 1.5, high * 1.5)
        # Plain numbers (3, 10, 30), not 3x10^0.
        axes.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        axes.xaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
    elif high < 1.2 * low:
        # Equal costs (e.g. every contracted ExpandNet): show them as equal,
        # not a zoom into measurement noise.
        middle = (high + low) / 2
        axes.set_xlim(0.8 * middle, 1.2 * middle)
    else:
        axes.set_xlim(low - 0.1 * (high - low), high + 0.1 * (high - low))
    ys = [value for point in points for value in _extent(
        point["accuracy_mean"], point["accuracy_std"])]
    ys += [value for point in points if with_paper and point["paper"]
           for value in _extent(point["paper"], point["paper_std"])]
    margin = max(0.5, 0.08 * (max(ys) - min(ys)))
    axes.set_ylim(min(ys) - margin, max(ys) + margin)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("top-1 test accuracy (%)")
    seeds = max(p["seeds_wanted"] for p in points)
    paper = (f"paper's numbers on {table.dataset}" if with_paper else
             f"paper's points omitted: they are on {table.dataset}"
             if has_paper else "no paper numbers")
    # The budget tells a reader how far from converged "ours" is.
    epochs = sorted({p["epochs"] for p in points if p.get("epochs")})
    budget = f"{'/'.join(map(str, epochs))} epochs, " if epochs else ""
    axes.set_title(f"{table.title}\nours: {', '.join(datasets)}, {budget}"
                   f"mean ± std over up to {seeds} seeds; {paper}",
                   fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    handles.append(mlines.Line2D([], [], color="black", marker="o",
                                 linestyle="none",
                                 label="ours (mean ± std)"))
    if with_paper:
        handles.append(mlines.Line2D([], [], color="black", marker="D",
                                     mfc="none", linestyle="none",
                                     label="paper"))
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1),
                fontsize=8, title="row", title_fontsize=8)
    # bbox_inches="tight" grows the canvas to the labels and the legend.
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
