"""pianolab: piano-music generation with deep stacks of dilated 1D convolutions, the companion
package of the pianolab book. Its modules are the pipeline's stages, in the order data flows:
``encoding`` -> ``corpus`` -> ``data`` -> ``model`` -> ``train`` -> ``generate`` -> ``audio`` /
``plots`` / ``metrics``; ``cli`` drives long runs. Keras and TensorFlow are imported only when needed.
"""

__version__ = "0.1.0"

from .encoding import (DEFAULT_ENCODING, Encoding, midi_to_roll, roll_to_midi, roll_to_sequence,  # noqa: F401
                       sequence_to_roll, write_midi)
from .errors import ConfigError, MidiError, PianolabError  # noqa: F401
from .settings import quick  # noqa: F401
