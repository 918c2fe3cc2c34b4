"""One experiment from one config: stages, resumable runs, the report."""
