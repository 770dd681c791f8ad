"""The one exception type the `irmas` command turns into a clear message and a non-zero exit."""


class IrmasError(Exception):
    """A user-facing error: bad input, a missing file, a checksum mismatch. The message names the file."""
