"""Reports of a finished output directory: the cost report and report.html."""
