"""The one exception type users see: the CLI prints its message as a single line."""


class GenforgeError(Exception):
    """A problem the user can fix (bad file, unknown key, missing data).

    The message must name the file or key and say what to do; the CLI prints
    ``genforge: error: <message>`` and exits with status 2, never a traceback.
    """
