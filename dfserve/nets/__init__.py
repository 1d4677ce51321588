"""Network definitions in PyTorch: ResNeXt50_32x4d, the seed model, RetinaFace-MobileNet0.25 (no torchvision)."""
