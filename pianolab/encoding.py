"""MIDI <-> binary piano roll <-> one flat sequence of key states (chapter 01_encoding).

A piece becomes a binary piano roll ``roll[t, k]``: one row per time step (``steps_per_second``,
48 by default, about 0.02 s) and one column per key of a window of ``n_keys`` keys starting at MIDI
pitch ``lowest`` (72 keys from MIDI 31, G1 to F#7, by default). A 1 means "key down". Velocity is
dropped, drum tracks are ignored and all other tracks are merged.

The rules, in the order they are applied:

* **Times.** A note from ``start`` to ``end`` seconds covers the steps
  ``round(start * fs) .. round(end * fs) - 1``; a note shorter than one step still gets one step.
* **Sustain pedal** (``sustain=True``): while controller 64 is >= 64 on a track, notes released on
  that track keep sounding until the pedal goes up.
* **Notes outside the key window** (``out_of_range``): ``"fold"`` (default) moves them by whole
  octaves into the window, so the harmony survives; ``"drop"`` drops them.
* **Unisons.** Notes on the same key that start on the same step are merged into one (the longest).
* **Re-struck keys.** When a key is struck again while it is still down, or on the step right after
  it was released, the earlier note is cut short so that one silent step separates the two: repeated
  notes stay audible after decoding. If the earlier note would vanish, it keeps one step and the new
  note starts one step later.

A roll decodes to MIDI one note per run of 1s, at a fixed velocity, plus a pedal-up event at the
roll's last step so trailing silence survives; the round trip roll -> MIDI -> roll is exact. The
roll of a file ends at the file's last event. The flat sequence is the roll read time-major, keys ascending
within a step: ``roll.reshape(-1)``.
"""

import io
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ._io import atomic_path
from .errors import MidiError

NOTE_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]


@dataclass(frozen=True)
class Encoding:
    """How a piece is cut into key states (chapter 01_encoding).

    ``steps_per_second`` rows per second, ``n_keys`` columns from MIDI pitch ``lowest`` upwards.
    PianoNet used 48 steps per second and 72 keys from MIDI 31.
    """

    steps_per_second: float = 48.0
    lowest: int = 31
    n_keys: int = 72

    def __post_init__(self):
        if not self.steps_per_second > 0:
            raise ValueError(f"steps_per_second must be > 0, got {self.steps_per_second!r}")
        if not (0 <= self.lowest and self.n_keys >= 1 and self.lowest + self.n_keys <= 128):
            raise ValueError(
                f"key window lowest={self.lowest}, n_keys={self.n_keys} must lie inside MIDI 0..127"
            )

    @property
    def highest(self):
        """MIDI pitch of the top key of the window."""
        return self.lowest + self.n_keys - 1

    @property
    def pitches(self):
        """MIDI pitch of every column of a roll."""
        return np.arange(self.lowest, self.lowest + self.n_keys)

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**d)


DEFAULT_ENCODING = Encoding()


def note_name(pitch):
    """``note_name(60) == 'C4'`` (scientific pitch notation; chapter 01_encoding)."""
    pitch = int(pitch)
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def load_midi(source):
    """Read a MIDI file into ``pretty_midi.PrettyMIDI``; raise :class:`MidiError` naming the file
    (chapter 01_encoding).

    ``source`` may be a path or an already loaded ``PrettyMIDI`` (returned as is).
    """
    import pretty_midi

    if isinstance(source, pretty_midi.PrettyMIDI):
        return source
    path = Path(source)
    if not path.is_file():
        raise MidiError(path, "no such file")
    data = path.read_bytes()
    if len(data) == 0:
        raise MidiError(path, "the file is empty")
    if not data.startswith(b"MThd"):
        raise MidiError(path, "not a MIDI file (it does not start with the 'MThd' header)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pretty_midi.PrettyMIDI(io.BytesIO(data))
    except Exception as exc:  # mido / pretty_midi raise many types for broken files
        reason = str(exc).strip() or type(exc).__name__
        raise MidiError(path, f"not a readable MIDI file (truncated or corrupt: {reason})") from None


def pedal_spans(instrument, open_end=np.inf):
    """``[(down, up), ...]`` times of the sustain pedal (controller 64 >= 64) on one instrument;
    a pedal still down at the end is up at ``open_end`` (chapter 01_encoding)."""
    events = sorted(((c.time, c.value >= 64) for c in instrument.control_changes if c.number == 64),
                    key=lambda x: x[0])
    spans, down_at = [], None
    for time, down in events:
        if down and down_at is None:
            down_at = time
        elif not down and down_at is not None:
            spans.append((down_at, time))
            down_at = None
    if down_at is not None:
        spans.append((down_at, max(open_end, down_at)))
    return spans


def _sustained_notes(instrument):
    """(pitch, start, end) of an instrument's notes, ends extended while the pedal is down."""
    notes = [(n.pitch, n.start, n.end) for n in instrument.notes]
    intervals = pedal_spans(instrument, open_end=max([e for _, _, e in notes], default=0.0))
    if not intervals:
        return notes
    out = []
    for pitch, start, end in notes:
        for a, b in intervals:
            if a <= end < b:
                end = b
                break
        out.append((pitch, start, end))
    return out


def _place(pitch, encoding, out_of_range):
    lo, hi = encoding.lowest, encoding.highest
    if lo <= pitch <= hi:
        return pitch - lo
    if out_of_range == "drop":
        return None
    while pitch < lo:
        pitch += 12
    while pitch > hi:
        pitch -= 12
    return pitch - lo if lo <= pitch <= hi else None  # window narrower than an octave


MAX_SECONDS = 4 * 3600.0


def midi_to_roll(source, encoding=DEFAULT_ENCODING, *, sustain=False, out_of_range="fold",
                 time_scale=1.0, max_seconds=MAX_SECONDS):
    """MIDI file or ``PrettyMIDI`` -> binary roll ``uint8 [time steps, n_keys]`` (chapter 01_encoding).

    ``time_scale`` multiplies every time (``1.1`` plays 10% slower): the tempo-stretch
    augmentation. See the module docstring for the rules. Raises :class:`MidiError` for input that
    is not MIDI, broken, empty, has no notes in the key window, or lasts longer than
    ``max_seconds`` (4 hours by default: a corrupt file can claim days and exhaust memory).
    """
    if out_of_range not in ("fold", "drop"):
        raise ValueError(f"out_of_range must be 'fold' or 'drop', got {out_of_range!r}")
    path = None if not isinstance(source, (str, os.PathLike)) else Path(source)
    pm = load_midi(source)
    fs = encoding.steps_per_second * float(time_scale)
    end_time = pm.get_end_time()
    if not np.isfinite(end_time) or end_time * time_scale > max_seconds:
        raise MidiError(path, f"it lasts {end_time:.0f} s, longer than the limit of {max_seconds:.0f} s")

    per_key = {}
    n_notes = 0
    for inst in pm.instruments:
        if inst.is_drum:
            continue
        notes = _sustained_notes(inst) if sustain else [(n.pitch, n.start, n.end) for n in inst.notes]
        for pitch, start, end in notes:
            n_notes += 1
            k = _place(pitch, encoding, out_of_range)
            if k is None:
                continue
            s = int(round(start * fs))
            e = max(int(round(end * fs)), s + 1)
            per_key.setdefault(k, []).append((max(s, 0), max(e, 1)))
    if n_notes == 0:
        raise MidiError(path, "the file has no notes (drum tracks are ignored)")
    if not per_key:
        raise MidiError(
            path,
            f"none of its {n_notes} notes lie in the key window MIDI {encoding.lowest}..{encoding.highest}",
        )

    painted = {k: _restrike(sorted(v)) for k, v in per_key.items()}
    n_steps = max(e for spans in painted.values() for _, e in spans)
    n_steps = max(n_steps, int(round(end_time * fs)))  # keeps trailing silence
    roll = np.zeros((n_steps, encoding.n_keys), dtype=np.uint8)
    for k, spans in painted.items():
        for s, e in spans:
            roll[s:e, k] = 1
    return roll


def _restrike(spans):
    """Merge unisons and leave one silent step before every re-strike; spans sorted by start."""
    merged = []
    for s, e in spans:  # unisons first: same key, same start step (before any start is delayed)
        if merged and merged[-1][0] == s:
            merged[-1] = (s, max(merged[-1][1], e))
        else:
            merged.append((s, e))
    out = []
    for s, e in merged:
        if out and out[-1][1] >= s:  # still down at s, or released exactly at s
            ps = out[-1][0]
            if s - 1 > ps:
                out[-1][1] = s - 1
            else:  # the earlier note would vanish: keep it one step, delay the new one
                out[-1][1] = ps + 1
                s = ps + 2
                e = max(e, s + 1)
        out.append([s, e])
    return [(s, e) for s, e in out]


def roll_to_midi(roll, encoding=DEFAULT_ENCODING, *, velocity=80, program=0):
    """Binary roll -> ``pretty_midi.PrettyMIDI``, one piano note per run of 1s (chapter 01_encoding)."""
    import pretty_midi

    roll = _check_roll(roll, encoding)
    fs = encoding.steps_per_second
    # 120 bpm and 480 ticks per beat: 960 ticks per second, 20 per step at 48 steps/s.
    pm = pretty_midi.PrettyMIDI(resolution=480, initial_tempo=120.0)
    inst = pretty_midi.Instrument(program=program, name="pianolab")
    padded = np.zeros((roll.shape[0] + 2, roll.shape[1]), dtype=np.int8)
    padded[1:-1] = roll
    diff = np.diff(padded, axis=0)
    for k in range(roll.shape[1]):
        starts = np.flatnonzero(diff[:, k] == 1)
        ends = np.flatnonzero(diff[:, k] == -1)
        pitch = encoding.lowest + k
        for s, e in zip(starts, ends):
            inst.notes.append(pretty_midi.Note(velocity=velocity, pitch=pitch, start=s / fs, end=e / fs))
    inst.notes.sort(key=lambda n: (n.start, n.pitch))
    # A pedal-up event at the end keeps trailing silent steps: the roll's length survives the trip.
    inst.control_changes.append(pretty_midi.ControlChange(number=64, value=0, time=roll.shape[0] / fs))
    pm.instruments.append(inst)
    return pm


def write_midi(roll, path, encoding=DEFAULT_ENCODING, **kwargs):
    """Write a roll as a ``.mid`` file atomically (temp file, then rename); returns the path
    (chapter 01_encoding)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pm = roll_to_midi(roll, encoding, **kwargs)
    with atomic_path(path, suffix=".mid") as tmp:
        pm.write(tmp)
    return path


def _check_roll(roll, encoding):
    roll = np.asarray(roll)
    if roll.ndim != 2 or roll.shape[1] != encoding.n_keys:
        raise ValueError(f"expected a roll of shape [time steps, {encoding.n_keys}], got {roll.shape}")
    if roll.size and not np.isin(roll, (0, 1)).all():
        raise ValueError("a piano roll holds only 0 and 1")
    return roll.astype(np.uint8, copy=False)


def roll_to_sequence(roll):
    """Roll ``[T, K]`` -> flat key-state sequence ``[T*K]``, time-major, keys ascending (chapter 01_encoding)."""
    roll = np.asarray(roll)
    if roll.ndim != 2:
        raise ValueError(f"expected a 2-D roll, got shape {roll.shape}")
    return np.ascontiguousarray(roll).reshape(-1)


def sequence_to_roll(sequence, n_keys=DEFAULT_ENCODING.n_keys):
    """Flat key-state sequence -> roll ``[T, n_keys]``; the length must be a multiple of ``n_keys``
    (chapter 01_encoding)."""
    sequence = np.asarray(sequence)
    if sequence.ndim != 1 or sequence.size % n_keys:
        raise ValueError(
            f"a sequence of {sequence.size} key states is not a whole number of {n_keys}-key time steps"
        )
    return sequence.reshape(-1, n_keys)
