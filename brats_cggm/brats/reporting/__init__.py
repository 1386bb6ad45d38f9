"""What a reader of the segmentations sees: per-case reports, overlay pictures and a folder's QC page."""

__all__: list[str] = ["case_report", "overlay", "qc_page", "report_inputs"]
