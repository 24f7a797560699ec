"""ZIPA: multilingual IPA phone recognition with Zipformer (an icefall-style re-implementation)."""

__version__ = "0.1.0"
