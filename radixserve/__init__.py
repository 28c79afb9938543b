"""radixserve."""
