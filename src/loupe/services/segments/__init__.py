"""2-D segmentation use cases: annotation payloads, mask files, training, heatmaps."""
