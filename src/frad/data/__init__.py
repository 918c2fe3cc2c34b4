"""Face data: decoding, alignment to chips, datasets, LFW, the paper's split, feature caches."""
