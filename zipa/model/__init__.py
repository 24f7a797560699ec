"""ZIPA model: Zipformer encoder, heads and configuration."""
