"""Reports: self-contained HTML retrieval reports, the figures they embed, and the gallery."""

from .figures import fig_to_png, plot_retrieval_bars, plot_time_windows, plot_topk_curve, plot_training_curves
from .gallery import Gallery, GalleryItem, build_gallery, gallery_items
from .report import Report, build_retrieval_report
from .summary import seed_summary, summary_markdown, summary_report

__all__ = ["Gallery", "GalleryItem", "Report", "build_gallery", "build_retrieval_report",
           "fig_to_png", "gallery_items", "plot_retrieval_bars", "plot_time_windows",
           "plot_topk_curve", "plot_training_curves", "seed_summary", "summary_markdown", "summary_report"]
