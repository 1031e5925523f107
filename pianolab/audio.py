"""What the reader hears: rolls and MIDI rendered to sound, players for the page (chapter 01_encoding).

A piano roll (``uint8 [time steps, keys]``), a ``pretty_midi.PrettyMIDI`` or a ``.mid`` file becomes
a mono waveform: through FluidSynth with the General MIDI SoundFont that ships with pretty_midi
(``TimGM6mb.sf2``, acoustic grand piano) when pyfluidsynth and the FluidSynth library are installed,
else through a small numpy piano model (decaying, slightly inharmonic partials with a soft attack
and release). :func:`backend` says which. :func:`player` and :func:`player_grid` put the sound in
the page as base64 WAV data, the roll under it (``_static/web/roll.js`` of the built book draws it
with a cursor that follows the sound): no kernel, no network. Clips are mono at 22,050 Hz.
"""

import base64
import html
import io
import math
import os
import wave as _wave
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import _io
from .encoding import DEFAULT_ENCODING, load_midi, midi_to_roll, roll_to_midi

DEFAULT_SAMPLE_RATE = 22050
DEFAULT_MAX_SECONDS = 20.0
RELEASE_SECONDS = 1.0  # silence kept after the last note-off so the sound can die away
PEAK = 0.9  # the peak amplitude of synthesized sound
PIANO_PROGRAM = 0  # General MIDI "Acoustic Grand Piano"


def _as_midi(midi_or_roll, encoding):
    """A roll (2-D array), a PrettyMIDI or a path -> PrettyMIDI."""
    import pretty_midi
    if isinstance(midi_or_roll, (str, os.PathLike, pretty_midi.PrettyMIDI)):
        return load_midi(midi_or_roll)  # a PrettyMIDI as it is
    roll = np.asarray(midi_or_roll)
    if roll.ndim != 2:
        raise ValueError("expected a piano roll [time steps, keys], a pretty_midi.PrettyMIDI or a path to a "
                         f".mid file, got an array of shape {roll.shape}")
    return roll_to_midi(roll, encoding)


def _notes(pm, max_seconds=None):
    """Notes of every non-drum instrument as (pitch, start, end, velocity, channel), time-sorted; a
    note released while the sustain pedal is down sounds until it goes up; all cut at ``max_seconds``."""
    out = []
    for i, inst in enumerate(inst for inst in pm.instruments if not inst.is_drum):
        channel = i % 15 + (i % 15 >= 9)  # skip the General MIDI drum channel
        spans = _io.pedal_spans(inst)
        for n in inst.notes:
            start, end = float(n.start), float(n.end)
            end = min(next((b for a, b in spans if a <= end < b), end), math.inf if max_seconds is None else max_seconds)
            if end > start:
                out.append((int(n.pitch), start, end, int(n.velocity), channel))
    out.sort(key=lambda x: (x[1], x[0]))
    return out


def _soundfont_path():
    """The General MIDI SoundFont bundled with pretty_midi, ``TimGM6mb.sf2``."""
    import pretty_midi
    return Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"


@lru_cache(maxsize=1)
def _fluidsynth_works():
    """True when pyfluidsynth imports, finds libfluidsynth and can load the SoundFont."""
    try:
        import fluidsynth  # pyfluidsynth; raises ImportError when libfluidsynth is missing
        synth = fluidsynth.Synth(samplerate=float(DEFAULT_SAMPLE_RATE))
        ok = _soundfont_path().is_file() and synth.sfload(str(_soundfont_path())) >= 0
        synth.delete()
        return bool(ok)
    except Exception:
        return False


def backend():
    """``"fluidsynth"`` when FluidSynth renders the sound (the ``pyfluidsynth`` package and the FluidSynth library,
    Debian: ``libfluidsynth3``), else ``"numpy"``; ``PIANOLAB_AUDIO=numpy`` forces the latter (chapter 01_encoding)."""
    if os.environ.get("PIANOLAB_AUDIO", "").strip().lower() == "numpy":
        return "numpy"
    return "fluidsynth" if _fluidsynth_works() else "numpy"


def _render_fluidsynth(notes, n_samples, sample_rate):
    import fluidsynth
    synth = fluidsynth.Synth(gain=0.5, samplerate=float(sample_rate))
    try:
        sfid = synth.sfload(str(_soundfont_path()))
        for ch in sorted({n[4] for n in notes}):
            synth.program_select(ch, sfid, 0, PIANO_PROGRAM)
        events = sorted([(round(a * sample_rate), 1, ch, pitch, vel) for pitch, a, _, vel, ch in notes]
                        + [(round(b * sample_rate), 0, ch, pitch, 0) for pitch, _, b, _, ch in notes],
                        key=lambda e: e[:2])  # note-offs before note-ons at the same sample
        out, pos = np.zeros(n_samples, dtype=np.float32), 0
        for at, on, ch, pitch, velocity in events:
            at = min(at, n_samples)
            if at > pos:
                out[pos:at] = synth.get_samples(at - pos)[::2] / 32768.0
                pos = at
            if on:
                synth.noteon(ch, pitch, velocity)
            else:
                synth.noteoff(ch, pitch)
        if n_samples > pos:
            out[pos:] = synth.get_samples(n_samples - pos)[::2] / 32768.0
        return out
    finally:
        synth.delete()


def _piano_tone(pitch, n_held, n_total, sample_rate):
    """One note, ``n_held`` samples held of ``n_total``: slightly inharmonic partials (stiff strings), each decaying
    exponentially, upper ones and higher notes faster, a 4 ms attack, a 0.12 s release (``_static/web/synth.js`` too)."""
    f0 = 440.0 * 2.0 ** ((pitch - 69) / 12.0)
    t = np.arange(n_total, dtype=np.float64) / sample_rate
    inharmonicity, tau = 4e-4 * (f0 / 261.6) ** 0.5, 1.6 * (261.6 / f0) ** 0.55  # tau: the fundamental's decay (s)
    tone = np.zeros(n_total, dtype=np.float64)
    for h in range(1, 9):
        fh = h * f0 * np.sqrt(1.0 + inharmonicity * h * h)
        if fh >= sample_rate / 2 * 0.95:
            break
        tone += np.exp(-t * h**0.7 / tau) * np.sin(2.0 * np.pi * fh * t + 0.3 * h) / h**1.3
    envelope = np.minimum(1.0, t / 0.004)
    envelope[n_held:] *= np.exp(-np.arange(n_total - n_held) / sample_rate / 0.12)
    return tone * envelope


def _render_numpy(notes, n_samples, sample_rate):
    out, release = np.zeros(n_samples, dtype=np.float64), int(0.6 * sample_rate)
    for pitch, start, end, velocity, _ in notes:
        s = int(round(start * sample_rate))
        held = max(1, int(round(end * sample_rate)) - s)
        total = min(held + release, n_samples - s)
        if total > 0:
            out[s:s + total] += (0.15 * velocity / 127.0) * _piano_tone(pitch, min(held, total), total, sample_rate)
    return out.astype(np.float32)


def synthesize(midi_or_roll, encoding=DEFAULT_ENCODING, sample_rate=DEFAULT_SAMPLE_RATE, *,
                max_seconds=None, backend_name=None):
    """Roll (decoded under ``encoding``), ``PrettyMIDI`` or ``.mid`` path -> mono ``float32`` waveform,
    peak 0.9, every non-drum track on a piano, the sustain pedal honoured; it lasts the music (cut at
    ``max_seconds``) plus ``RELEASE_SECONDS``. ``backend_name``: ``"fluidsynth"`` or ``"numpy"``
    (default: :func:`backend`) (chapter 01_encoding)."""
    sample_rate = int(sample_rate)
    if sample_rate < 4000:
        raise ValueError(f"sample_rate must be at least 4000 Hz, got {sample_rate}")
    name = backend_name or backend()
    if name not in ("fluidsynth", "numpy"):
        raise ValueError(f"backend_name must be 'fluidsynth' or 'numpy', got {name!r}")
    if name == "fluidsynth" and not _fluidsynth_works():
        raise RuntimeError("FluidSynth is not available: install pyfluidsynth and the FluidSynth library "
                           "(Debian: apt-get install libfluidsynth3), or use backend_name='numpy'")
    pm = _as_midi(midi_or_roll, encoding)
    notes = _notes(pm, max_seconds=max_seconds)
    cut = math.inf if max_seconds is None else float(max_seconds)
    duration = max(0.0, min(max([pm.get_end_time()] + [n[2] for n in notes]), cut))
    n_samples = int(round((duration + RELEASE_SECONDS) * sample_rate))
    if not notes:
        return np.zeros(n_samples, dtype=np.float32)
    wave = (_render_fluidsynth if name == "fluidsynth" else _render_numpy)(notes, n_samples, sample_rate)
    peak = float(np.max(np.abs(wave)))
    return (wave * np.float32(PEAK / peak) if peak > 0 else wave).astype(np.float32, copy=False)


def _waveform(item, encoding, sample_rate, max_seconds):
    """A 1-D array is taken as a waveform already; anything else is synthesized."""
    if isinstance(item, np.ndarray) and item.ndim == 1:
        end = None if max_seconds is None else round(max_seconds * sample_rate)
        return item.astype(np.float32, copy=False)[:end]
    return synthesize(item, encoding, sample_rate, max_seconds=max_seconds)


def _wav_bytes(wave, sample_rate=DEFAULT_SAMPLE_RATE):
    """Mono float waveform, clipped to [-1, 1] -> the bytes of a 16-bit PCM WAV file."""
    wave = np.asarray(wave, dtype=np.float64)
    if not np.all(np.isfinite(wave)):
        raise ValueError("the waveform holds NaN or infinite samples")
    buf = io.BytesIO()
    with _wave.open(buf, "wb") as w:
        w.setparams((1, 2, int(sample_rate), 0, "NONE", "not compressed"))
        w.writeframes((np.clip(wave, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes())
    return buf.getvalue()


def write_wav(item, path, sample_rate=DEFAULT_SAMPLE_RATE, *, encoding=DEFAULT_ENCODING):
    """Write a waveform (1-D, clipped to [-1, 1]), roll, ``PrettyMIDI`` or ``.mid`` file as a mono
    16-bit WAV file, atomically; returns the path (appendix_a_command_line)."""
    return _io.write_bytes(Path(path), _wav_bytes(_waveform(item, encoding, sample_rate, None), sample_rate))


def _roll_html(item, encoding, max_seconds, seed_steps=0):
    """A clip's roll (a MIDI clip's as ``encoding`` reads it) as bits, row after row, for
    ``_static/web/roll.js`` to draw ("" for a waveform)."""
    if np.ndim(item) == 1:
        return ""
    roll = np.asarray(item) if np.ndim(item) == 2 else midi_to_roll(item, encoding)
    roll = roll[: None if max_seconds is None else round(max_seconds * encoding.steps_per_second)]
    bits = base64.b64encode(np.packbits(roll != 0)).decode()
    return (f'<div class="pianolab-roll" data-lowest="{encoding.lowest}" data-keys="{roll.shape[1]}" '
            f'data-steps="{len(roll)}" data-fs="{encoding.steps_per_second}" data-seed="{int(seed_steps)}" '
            f'data-bits="{bits}"></div>')


def page_seed(roll, encoding=DEFAULT_ENCODING):
    """A seed passage for the page's generator (``_static/web/generator.js`` reads ``data-seeds``):
    ``{"steps": time steps, "notes": [[MIDI pitch, first step, end step], ...]}``, the notes
    :func:`~pianolab.encoding.roll_to_midi` finds in ``roll`` (chapters 05_fast_wavenet and intro)."""
    fs = encoding.steps_per_second
    notes = roll_to_midi(roll, encoding).instruments[0].notes
    return {"steps": len(roll), "notes": [[n.pitch, round(n.start * fs), round(n.end * fs)] for n in notes]}


def player(midi_or_roll, encoding=DEFAULT_ENCODING, sample_rate=DEFAULT_SAMPLE_RATE, *,
           max_seconds=DEFAULT_MAX_SECONDS, seed_steps=0):
    """An IPython ``Audio`` player for a roll, ``PrettyMIDI``, ``.mid`` path or waveform, cut to
    ``max_seconds`` (``None``: all), normalized, its WAV data in the page; under a roll's player the
    roll, its first ``seed_steps`` drawn as the seed (chapter 01_encoding)."""
    from IPython.display import Audio
    wave = _waveform(midi_or_roll, encoding, sample_rate, max_seconds)
    clip = Audio(data=wave, rate=int(sample_rate), normalize=bool(np.any(wave)))  # silence cannot be normalized
    page = clip._repr_html_() + _roll_html(midi_or_roll, encoding, max_seconds, seed_steps)
    clip._repr_html_ = lambda: page  # the page shows the player with its roll
    return clip


def _data_uri(wave, sample_rate):
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    wave = wave * (PEAK / peak) if peak > 0 else wave
    return "data:audio/wav;base64," + base64.b64encode(_wav_bytes(wave, sample_rate)).decode("ascii")


def player_grid(items, columns=2, encoding=DEFAULT_ENCODING, sample_rate=DEFAULT_SAMPLE_RATE, *,
                max_seconds=DEFAULT_MAX_SECONDS, title=None, seed_steps=0):
    """Labelled players side by side (chapter 05_fast_wavenet): ``items`` maps a label to a roll,
    ``PrettyMIDI``, ``.mid`` path or 1-D waveform, or a ``(roll, encoding)`` pair for a clip of another
    key window (or is a list of pairs); each clip, cut to ``max_seconds``, is base64 WAV audio, with
    the roll under a roll's player."""
    from IPython.display import HTML
    pairs = list(items.items()) if isinstance(items, dict) else list(items)
    if not pairs or int(columns) < 1:
        raise ValueError(f"player_grid needs at least one item (label -> roll, MIDI or waveform) and columns >= 1, "
                         f"got {len(pairs)} items and columns={columns}")
    cells = []
    for label, item in pairs:
        item, enc = item if isinstance(item, tuple) else (item, encoding)
        wave = _waveform(item, enc, sample_rate, max_seconds)
        seconds = wave.size / float(sample_rate)
        cells.append('<figure style="margin:0;padding:6px;border:1px solid #ddd;border-radius:4px">'
                     f'<figcaption style="font-weight:600;margin-bottom:4px">{html.escape(str(label))}'
                     f' <span style="font-weight:400;color:#666">({seconds:.1f} s)</span></figcaption>'
                     f'<audio controls preload="metadata" style="width:100%" src="{_data_uri(wave, sample_rate)}">'
                     "your browser cannot play WAV audio</audio>"
                     + _roll_html(item, enc, max_seconds, seed_steps) + "</figure>")
    head = f"<p style='font-weight:600'>{html.escape(str(title))}</p>" if title else ""
    return HTML(head + '<div class="pianolab-player-grid" style="display:grid;gap:8px;grid-template-columns:'
                f'repeat({int(columns)},minmax(0,1fr))">' + "".join(cells) + "</div>")
