"""The error types pianolab raises for bad input.

Every message names the file, key or flag at fault and what was expected, so a reader can fix the
input without reading pianolab's source.
"""


class PianolabError(ValueError):
    """Base class of pianolab's input errors (chapter 01_encoding shows the first of them)."""


class MidiError(PianolabError):
    """A MIDI file could not be turned into a piano roll (chapter 01_encoding).

    Raised for a missing file, bytes that are not MIDI, a truncated file, a file with no notes,
    or a file with no notes inside the key window. ``path`` holds the file (or ``None`` for an
    in-memory ``PrettyMIDI``) and ``reason`` the reason.
    """

    def __init__(self, path, reason):
        self.path = path
        self.reason = reason
        where = str(path) if path is not None else "<in-memory MIDI>"
        super().__init__(f"{where}: {reason}")


class ConfigError(PianolabError):
    """A run config or a command-line argument is not valid (chapter 04_training).

    ``key`` names the offending config key or flag.
    """

    def __init__(self, key, reason):
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}")
