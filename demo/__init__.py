"""The end-to-end demo (top layer): index the bundled catalog, serve, replay searches, run the labeling job, report."""
