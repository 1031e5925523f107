"""pianolab: piano-music generation with deep stacks of dilated 1D convolutions.

The companion package of the pianolab book. Modules follow the pipeline, in the order data flows:
``encoding`` -> ``data`` -> ``model`` -> ``train`` -> ``generate`` -> ``audio`` / ``plots`` ->
``metrics``; ``cli`` drives long runs. Importing ``pianolab`` is cheap: Keras and TensorFlow are
imported only by the modules that need them.
"""

__version__ = "0.1.0"

from .encoding import (  # noqa: F401
    DEFAULT_ENCODING,
    Encoding,
    midi_to_roll,
    roll_to_midi,
    roll_to_sequence,
    sequence_to_roll,
    write_midi,
)
from .errors import ConfigError, MidiError, PianolabError  # noqa: F401
from .settings import quick  # noqa: F401
