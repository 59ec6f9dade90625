"""Another name for :mod:`genforge.atomic`, the one atomic writer (some modules import it from here)."""

from genforge.atomic import atomic_output, fsync_dir, write_atomic, write_json_atomic

write_bytes_atomic = write_atomic  # bytes (or text) to a file, whole or not at all

__all__ = ["atomic_output", "fsync_dir", "write_atomic", "write_bytes_atomic", "write_json_atomic"]
