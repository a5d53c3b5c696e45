"""DICOM-SEG export (highdicom) of a label mask drawn on a volume that came from DICOM.

The mask is (z, y, x) in the slice order of :func:`loupe.media.dicom_series.sort_series`
(the order :func:`loupe.media.dicom_series.read_series` stacks the slices in), one
segment per label value. BINARY segments are written with explicit VR little endian,
the transfer syntax every reader takes (highdicom refuses RLE for BINARY).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from loupe.errors import ErrorCode, LoupeError
from loupe.media._core import PathLike
from loupe.media.dicom_series import sort_series

SOFTWARE = "loupe"
TRACKING_PREFIX = "loupe label "


def write_dicom_seg(
    source_paths: Sequence[PathLike],
    mask: np.ndarray,
    out_path: PathLike,
    *,
    segments: Mapping[int, str],
    algorithm: str | None = None,
    series_number: int = 300,
    series_description: str = "Loupe segmentation",
) -> Path:
    """Write ``mask`` (labels ``segments`` keys, 0 = background) as one DICOM-SEG file.

    ``segments`` maps label values to segment labels. ``algorithm`` names the model
    when the segmentation is a model's (AUTOMATIC); None means a person drew or
    accepted it (MANUAL). Returns ``out_path``.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    series = sort_series(source_paths)
    if any(s.frames > 1 for s in series.slices):
        raise LoupeError(ErrorCode.INVALID, "DICOM-SEG export takes single-frame series only")
    labels = np.asarray(mask)
    expected = (len(series.slices), series.slices[0].rows, series.slices[0].cols)
    if labels.shape != expected:
        raise LoupeError(
            ErrorCode.INVALID, f"mask shape {labels.shape} differs from the series' {expected}"
        )
    if not segments or min(segments) < 1 or max(segments) > 65535:
        raise LoupeError(ErrorCode.INVALID, "segments must map label values 1..65535 to names")
    unknown = sorted(set(np.unique(labels).tolist()) - {0, *segments})
    if unknown:
        raise LoupeError(ErrorCode.INVALID, f"mask values {unknown} have no segment")
    sources = [pydicom.dcmread(s.path) for s in series.slices]
    if algorithm is None:
        kind, identification = hd.seg.SegmentAlgorithmTypeValues.MANUAL, None
    else:
        kind = hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        identification = hd.AlgorithmIdentificationSequence(
            name=algorithm, version="1", family=codes.cid7162.ArtificialIntelligence
        )
    values = sorted(segments)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=segments[value][:64],
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=kind,
            algorithm_identification=identification,
            tracking_id=f"{TRACKING_PREFIX}{value}",  # the mask value, for an exact read-back
            tracking_uid=hd.UID(),
        )
        for number, value in enumerate(values, start=1)
    ]
    # one boolean plane per segment, segments numbered 1..n in value order
    planes = np.stack([labels == value for value in values], axis=-1).astype(np.uint8)
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=planes,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=SOFTWARE,
        manufacturer_model_name=SOFTWARE,
        software_versions=SOFTWARE,
        device_serial_number="0",
        series_description=series_description,
        omit_empty_frames=True,
    )
    out = Path(out_path)
    seg.save_as(out)
    return out


def read_dicom_seg(
    seg_path: PathLike, source_paths: Sequence[PathLike]
) -> tuple[np.ndarray, dict[int, str]]:
    """A DICOM-SEG file back on its source series: ((z, y, x) uint16 labels, segments).

    Segments written here get back their mask values (kept in each segment's Tracking
    ID); other files' segments are labelled by segment number. ``segments`` maps label
    values to segment labels. Slices of the series without a frame are empty.
    """
    import highdicom as hd

    series = sort_series(source_paths)
    seg = hd.seg.segread(seg_path)
    uids = [str(s.ds.SOPInstanceUID) for s in series.slices]
    referenced = {str(uid) for _, _, uid in seg.get_source_image_uids()}
    present = [uid for uid in uids if uid in referenced]
    if not present:
        raise LoupeError(ErrorCode.INVALID, "the DICOM-SEG references none of these slices")
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=present, combine_segments=True, skip_overlap_checks=True
    )
    values = np.arange(max(seg.segment_numbers, default=0) + 1, dtype=np.uint16)
    names = {}
    for number in seg.segment_numbers:
        description = seg.get_segment_description(number)
        tracking = str(description.get("TrackingID", ""))
        if tracking.startswith(TRACKING_PREFIX) and tracking[len(TRACKING_PREFIX) :].isdigit():
            values[number] = int(tracking[len(TRACKING_PREFIX) :])
        names[int(values[number])] = str(description.segment_label)
    out = np.zeros((len(uids), series.slices[0].rows, series.slices[0].cols), dtype=np.uint16)
    position = {uid: i for i, uid in enumerate(uids)}
    for plane, uid in zip(pixels, present, strict=True):
        out[position[uid]] = values[plane]
    return out, names
