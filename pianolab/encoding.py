"""MIDI <-> binary piano roll <-> one flat sequence of key states (chapter 01_encoding).

A piece becomes a binary roll ``roll[t, k]``: one row per time step (48 steps per second by
default), one column per key of a window of ``n_keys`` keys from MIDI pitch ``lowest`` (72 keys from
MIDI 31, G1 to F#7, by default); 1 means "key down". Velocity is dropped, drum tracks are ignored,
all other tracks are merged, and these rules apply in this order:

* **Times.** A note ``start .. end`` (s) covers steps ``round(start*fs) .. round(end*fs)-1``, at least one.
* **Sustain pedal** (``sustain=True``): a note released while controller 64 is >= 64 on its track
  sounds until the pedal goes up.
* **Outside the key window** (``out_of_range``): ``"fold"`` moves a note by whole octaves into it,
  ``"drop"`` drops it.
* **Unisons.** Notes on one key that start on the same step merge into one (the longest).
* **Re-struck keys.** A key struck again while down, or on the step right after its release, gets
  one silent step before the new note (cut from the earlier note; if that would vanish, it keeps
  one step and the new note starts a step later).

A roll decodes to MIDI one note per run of 1s plus a pedal-up event at its last step, so trailing
silence survives and roll -> MIDI -> roll is exact. The flat sequence is ``roll.reshape(-1)``:
time-major, keys ascending within a step.
"""

import io
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ._io import atomic_path, check_roll, pedal_spans
from .errors import MidiError

#: PianoNet's edge-aversion thresholds, from the outermost key of the window inwards (chapter 05_fast_wavenet).
EDGE_THRESHOLDS = (1.0, 1.0, 0.4, 0.05, 0.05, 0.05, 0.03, 0.03)
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MAX_SECONDS = 4 * 3600.0  # longer "pieces" are corrupt files that would exhaust memory


@dataclass(frozen=True)
class Encoding:
    """``steps_per_second`` rows per second, ``n_keys`` columns from MIDI pitch ``lowest`` upwards;
    PianoNet's 48 steps/s and 72 keys from MIDI 31 by default (chapter 01_encoding)."""

    steps_per_second: float = 48.0
    lowest: int = 31
    n_keys: int = 72

    def __post_init__(self):
        if not (self.steps_per_second > 0 and 0 <= self.lowest and 1 <= self.n_keys <= 128 - self.lowest):
            raise ValueError(f"expected steps_per_second > 0 and a key window inside MIDI 0..127, got {self}")

    highest = property(lambda self: self.lowest + self.n_keys - 1, doc="MIDI pitch of the top key.")
    pitches = property(lambda self: np.arange(self.lowest, self.lowest + self.n_keys), doc="MIDI pitch of each column.")
    to_dict = asdict
    from_dict = classmethod(lambda cls, d: cls(**d))


DEFAULT_ENCODING = Encoding()


def note_name(pitch):
    """``note_name(60) == 'C4'``, scientific pitch notation (chapter 01_encoding)."""
    return f"{PITCH_CLASSES[int(pitch) % 12]}{int(pitch) // 12 - 1}"


def load_midi(source):
    """A MIDI path (or a ``PrettyMIDI``, returned as is) -> ``PrettyMIDI``; a file that cannot be
    read raises :class:`MidiError` naming it (chapter 01_encoding)."""
    import pretty_midi
    if isinstance(source, pretty_midi.PrettyMIDI):
        return source
    path = Path(source)
    if not path.is_file():
        raise MidiError(path, "no such file")
    data = path.read_bytes()
    if not data.startswith(b"MThd"):
        reason = "not a MIDI file (it does not start with the 'MThd' header)" if data else "the file is empty"
        raise MidiError(path, reason)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pretty_midi.PrettyMIDI(io.BytesIO(data))
    except Exception as exc:  # mido / pretty_midi raise many types for broken files
        reason = str(exc).strip() or type(exc).__name__
        raise MidiError(path, f"not a readable MIDI file (truncated or corrupt: {reason})") from None


def _place(pitch, encoding, out_of_range):
    """Column of ``pitch`` in the key window (folded by whole octaves into it), or None."""
    lo, hi = encoding.lowest, encoding.highest
    if out_of_range == "fold" and pitch < lo:
        pitch = lo + (pitch - lo) % 12
    elif out_of_range == "fold" and pitch > hi:
        pitch = hi - (hi - pitch) % 12
    return pitch - lo if lo <= pitch <= hi else None  # None: dropped, or a window narrower than an octave


def midi_to_roll(source, encoding=DEFAULT_ENCODING, *, sustain=False, out_of_range="fold", time_scale=1.0):
    """MIDI path or ``PrettyMIDI`` -> binary roll ``uint8 [time steps, n_keys]`` (chapter 01_encoding).

    ``time_scale`` multiplies every time (``1.1`` plays 10% slower), the tempo-stretch augmentation.
    Raises :class:`MidiError` for input that is not MIDI, broken, has no notes (in the key window),
    or lasts longer than ``MAX_SECONDS`` (4 hours).
    """
    if out_of_range not in ("fold", "drop"):
        raise ValueError(f"out_of_range must be 'fold' or 'drop', got {out_of_range!r}")
    path = Path(source) if isinstance(source, (str, os.PathLike)) else None
    pm = load_midi(source)
    fs = encoding.steps_per_second * float(time_scale)
    end_time = pm.get_end_time()
    if not np.isfinite(end_time) or end_time * time_scale > MAX_SECONDS:
        raise MidiError(path, f"it lasts {end_time:.0f} s, longer than the limit of {MAX_SECONDS:.0f} s")

    per_key, n_notes = {}, 0
    for inst in (i for i in pm.instruments if not i.is_drum):
        n_notes += len(inst.notes)
        spans = pedal_spans(inst, max([n.end for n in inst.notes], default=0.0)) if sustain else []
        for n in inst.notes:
            end = next((b for a, b in spans if a <= n.end < b), n.end)  # the pedal holds the note
            k = _place(n.pitch, encoding, out_of_range)
            if k is not None:
                s = int(round(n.start * fs))
                e = max(int(round(end * fs)), s + 1)
                per_key.setdefault(k, []).append((max(s, 0), max(e, 1)))
    if n_notes == 0:
        raise MidiError(path, "the file has no notes (drum tracks are ignored)")
    if not per_key:
        raise MidiError(path, f"none of its {n_notes} notes lie in the key window "
                              f"MIDI {encoding.lowest}..{encoding.highest}")

    painted = {k: _restrike(sorted(v)) for k, v in per_key.items()}
    n_steps = max(max(e for spans in painted.values() for _, e in spans), int(round(end_time * fs)))
    roll = np.zeros((n_steps, encoding.n_keys), dtype=np.uint8)
    for k, s, e in ((k, s, e) for k, spans in painted.items() for s, e in spans):
        roll[s:e, k] = 1
    return roll


def _restrike(spans):
    """Merge unisons and leave one silent step before every re-strike; spans sorted by start."""
    out = []
    for s, e in dict(spans).items():  # unisons first: one note per start step, the last (longest) one
        if out and out[-1][1] >= s:  # still down at s, or released exactly at s
            ps = out[-1][0]
            if s - 1 > ps:
                out[-1][1] = s - 1
            else:  # the earlier note would vanish: keep it one step, delay the new one
                out[-1][1] = ps + 1
                s = ps + 2
                e = max(e, s + 1)
        out.append([s, e])
    return out


def roll_to_midi(roll, encoding=DEFAULT_ENCODING):
    """Binary roll -> ``PrettyMIDI``, one piano note per run of 1s (chapter 01_encoding)."""
    import pretty_midi
    roll = check_roll(roll, encoding.n_keys)
    fs = encoding.steps_per_second
    pm = pretty_midi.PrettyMIDI(resolution=480, initial_tempo=120.0)  # 960 ticks/s, 20 a step at 48 steps/s
    inst = pretty_midi.Instrument(program=0, name="pianolab")
    diff = np.diff(np.pad(roll.astype(np.int8), ((1, 1), (0, 0))), axis=0)  # +1: key goes down, -1: up
    for k, pitch in enumerate(encoding.pitches):
        for s, e in zip(np.flatnonzero(diff[:, k] == 1), np.flatnonzero(diff[:, k] == -1)):
            inst.notes.append(pretty_midi.Note(velocity=80, pitch=int(pitch), start=s / fs, end=e / fs))
    inst.notes.sort(key=lambda n: (n.start, n.pitch))
    # A pedal-up event at the end keeps trailing silent steps: the roll's length survives the trip.
    inst.control_changes.append(pretty_midi.ControlChange(number=64, value=0, time=roll.shape[0] / fs))
    pm.instruments.append(inst)
    return pm


def write_midi(roll, path, encoding=DEFAULT_ENCODING):
    """Write a roll as a ``.mid`` file (temp file, then rename); returns the path (chapter 01_encoding)."""
    with atomic_path(path, suffix=".mid") as tmp:
        roll_to_midi(roll, encoding).write(tmp)
    return Path(path)


def roll_to_sequence(roll):
    """Roll ``[T, K]`` -> flat key-state sequence ``[T*K]``, time-major (chapter 01_encoding)."""
    return np.ascontiguousarray(check_roll(roll)).reshape(-1)


def sequence_to_roll(sequence, n_keys=DEFAULT_ENCODING.n_keys):
    """Flat key-state sequence -> roll ``[T, n_keys]`` (chapter 01_encoding)."""
    if np.ndim(sequence) != 1 or np.size(sequence) % n_keys:
        raise ValueError(f"{np.size(sequence)} key states are not a whole number of {n_keys}-key time steps")
    return np.asarray(sequence).reshape(-1, n_keys)
