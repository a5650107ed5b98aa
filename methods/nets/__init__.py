"""Network building blocks shared by methods (torchvision-compatible ResNets)."""
