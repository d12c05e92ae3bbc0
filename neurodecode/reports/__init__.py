"""Reports: self-contained HTML retrieval reports and the figures they embed."""

from .figures import fig_to_png, plot_retrieval_bars, plot_time_windows, plot_topk_curve
from .report import Report, build_retrieval_report

__all__ = ["Report", "build_retrieval_report", "fig_to_png", "plot_retrieval_bars",
           "plot_time_windows", "plot_topk_curve"]
