"""A sphinx-gallery image scraper for pyplot-free matplotlib figures.

:mod:`neurodecode.reports` builds figures with ``matplotlib.figure.Figure`` directly (no pyplot, no
global state), so sphinx-gallery's matplotlib scraper, which walks ``pyplot``'s figure list, never sees
them. This scraper saves every such figure that an example's code block leaves in the example's
namespace (``fig = nd.reports.plot_topk_curve(scores)``), once. It lives in an importable module so that
Sphinx can pickle the configuration.
"""

from __future__ import annotations

import weakref


class ReportFigureScraper:
    """Save the pyplot-free ``Figure`` objects left in an example's globals after each block."""

    def __init__(self) -> None:
        self._seen: dict[str, weakref.WeakSet] = {}

    def __repr__(self) -> str:  # stable, so the configuration hash does not change between builds
        return "ReportFigureScraper()"

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._seen = {}

    def __call__(self, block, block_vars, gallery_conf) -> str:
        from matplotlib.figure import Figure
        from sphinx_gallery.scrapers import figure_rst

        seen = self._seen.setdefault(str(block_vars.get("src_file", "")), weakref.WeakSet())
        # runs before the matplotlib scraper: pyplot's open figures are its business, now and later
        import matplotlib.pyplot as plt

        for num in plt.get_fignums():
            seen.add(plt.figure(num))
        figures = [value for value in block_vars["example_globals"].values()
                   if isinstance(value, Figure) and value not in seen]
        paths = []
        for fig, path in zip(figures, block_vars["image_path_iterator"]):
            fig.savefig(path, dpi=100)
            seen.add(fig)
            paths.append(path)
        return figure_rst(paths, gallery_conf["src_dir"])
