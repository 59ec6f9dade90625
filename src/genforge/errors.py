"""The one exception type users see: the CLI prints its message as a single line."""


class GenforgeError(Exception):
    """A problem the user can fix (bad file, unknown key, missing data).

    The message must name the file or key and say what to do; the CLI prints
    ``genforge: error: <message>`` and exits with status 2, never a traceback.
    The message is kept to one line whatever text it quotes (a key typed with a newline, say).
    """

    def __init__(self, message: object = ""):
        super().__init__(" ".join(str(message).split()))


def shorten(text: str, at: int = 60) -> str:
    """``text`` cut to ``at`` characters with '...' when longer: a name quoted in a message that may be huge."""
    return text if len(text) <= at else text[:at - 3] + "..."
