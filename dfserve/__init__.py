"""dfserve: a fast, dependable inference engine for the seed ResNeXt50+LSTM deepfake detector."""
__version__ = "0.1.0"
