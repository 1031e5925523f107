"""The error types pianolab raises for bad input.

Every message names the file, key or flag at fault and what was expected, so a reader can fix the
input without reading pianolab's source.
"""


class PianolabError(ValueError):
    """Base class of pianolab's input errors; the command line catches it (chapter 04_training catches
    a :class:`ConfigError`)."""


class MidiError(PianolabError):
    """A MIDI file cannot become a piano roll: ``path`` (None for an in-memory ``PrettyMIDI``) and
    ``reason``; raised by :func:`pianolab.encoding.midi_to_roll` (chapter 01_encoding)."""

    def __init__(self, path, reason):
        self.path = path
        self.reason = reason
        where = str(path) if path is not None else "<in-memory MIDI>"
        super().__init__(f"{where}: {reason}")


class ConfigError(PianolabError):
    """A run config key or command-line flag ``key`` is not valid: ``reason`` (chapter 04_training)."""

    def __init__(self, key, reason):
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}")
