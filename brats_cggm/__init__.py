"""Balanced multimodal training on MONAI: BraTS segmentation with CGGM and the field's balancers."""
