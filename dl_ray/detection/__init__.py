"""Object detection written here, as the course teaches it: boxes, IoU, non-max suppression, COCO mAP."""
from dl_ray.detection.average_precision import MeanAveragePrecision
from dl_ray.detection.boxes import (
    batched_nms,
    box_area,
    box_iou,
    check_boxes,
    check_threshold,
    cxcywh_to_xyxy,
    filter_and_nms,
    filter_and_nms_images,
    nms,
    xyxy_to_cxcywh,
)

__all__ = ["MeanAveragePrecision", "batched_nms", "box_area", "box_iou", "check_boxes", "check_threshold",
           "cxcywh_to_xyxy", "filter_and_nms", "filter_and_nms_images", "nms", "xyxy_to_cxcywh"]
