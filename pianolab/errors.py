"""The error types pianolab raises for bad input: each message names the file, key or flag at fault
and what was expected, so a reader can fix the input without reading pianolab's source."""


class PianolabError(ValueError):
    """Base class of pianolab's input errors; the command line catches it (chapter 04_training catches
    a :class:`ConfigError`)."""


class MidiError(PianolabError):
    """A MIDI file cannot become a piano roll: ``path`` (None for an in-memory ``PrettyMIDI``) and
    ``reason`` (chapter 01_encoding)."""

    def __init__(self, path, reason):
        self.path, self.reason = path, reason
        super().__init__(f"{path if path is not None else '<in-memory MIDI>'}: {reason}")


class ConfigError(PianolabError):
    """A run config key or command-line flag ``key`` is not valid: ``reason`` (chapter 04_training)."""

    def __init__(self, key, reason):
        self.key, self.reason = key, reason
        super().__init__(f"{key}: {reason}")


class TrainingError(PianolabError):
    """A run had to stop, e.g. because the loss became NaN (chapter 04_training)."""
