"""Small shared helpers: atomic files, cache folders, hashing, progress bars."""
