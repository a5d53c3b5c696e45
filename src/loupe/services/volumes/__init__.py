"""3-D volume use cases: serving volumes and masks on their grid, corrections with
their audit, interactive segmentation, automatic segmentation and retraining jobs,
the dashboard, and exports (masks, nnU-Net raw dataset, DICOM-SEG)."""
