"""Neural network building blocks shared by methods (torchvision-compatible ResNets, ArcFace iResNets)."""
