"""3-D volume use cases that need no database yet: nnU-Net raw dataset export and
DICOM-SEG export of label masks (the API and jobs wire them to projects)."""
