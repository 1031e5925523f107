"""What the reader hears: rolls and MIDI rendered to sound, players for the page (chapter 01_encoding).

Every musical claim in the book comes with something to listen to. This module turns a piano roll
(``uint8 [time steps, keys]``), a ``pretty_midi.PrettyMIDI`` or a ``.mid`` file into a mono
waveform and puts it in the page:

* :func:`synthesize` renders through FluidSynth with the General MIDI SoundFont that ships with
  pretty_midi (``TimGM6mb.sf2``, acoustic grand piano) when pyfluidsynth and the FluidSynth
  library are installed, and through a small numpy piano model otherwise (decaying, slightly
  inharmonic partials with a soft attack and release: not bare sine waves). :func:`backend` says
  which one is in use; ``PIANOLAB_AUDIO=numpy`` forces the fallback.
* :func:`player` gives one IPython ``Audio`` player; :func:`player_grid` several labelled players
  side by side as plain HTML whose ``<audio>`` elements carry base64 WAV data, so they play in the
  static book, with no kernel and no network.
* :func:`write_wav` writes a 16-bit WAV file atomically.
* :func:`generation_panel` is a small ipywidgets panel for live notebooks (chapter 05_fast_wavenet):
  temperature, edge aversion, length and random seed, a button that generates and plays.

Clips are mono at 22,050 Hz and cut to ``max_seconds`` (20 s by default, about 0.9 MB in the
page as 16-bit WAV) so that built pages stay small.
"""

import base64
import html
import io
import os
import wave as _wave
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import _io
from .encoding import DEFAULT_ENCODING, load_midi, pedal_spans, roll_to_midi

DEFAULT_SAMPLE_RATE = 22050
DEFAULT_MAX_SECONDS = 20.0
RELEASE_SECONDS = 1.0  # silence kept after the last note-off so the sound can die away
PEAK = 0.9  # synthesize() scales its output to this peak amplitude
PIANO_PROGRAM = 0  # General MIDI "Acoustic Grand Piano"

__all__ = [
    "DEFAULT_SAMPLE_RATE",
    "backend",
    "soundfont_path",
    "synthesize",
    "player",
    "player_grid",
    "wav_bytes",
    "write_wav",
    "generation_panel",
]


# --------------------------------------------------------------------------------------------
# Input: roll, PrettyMIDI or file -> a list of notes


def _as_midi(midi_or_roll, encoding):
    """A roll (2-D array), a PrettyMIDI or a path -> PrettyMIDI."""
    import pretty_midi

    if isinstance(midi_or_roll, pretty_midi.PrettyMIDI):
        return midi_or_roll
    if isinstance(midi_or_roll, (str, os.PathLike)):
        return load_midi(midi_or_roll)
    roll = np.asarray(midi_or_roll)
    if roll.ndim != 2:
        raise ValueError(
            "expected a piano roll [time steps, keys], a pretty_midi.PrettyMIDI or a path to a .mid "
            f"file, got an array of shape {roll.shape}"
        )
    return roll_to_midi(roll, encoding)


def _notes(pm, max_seconds=None, sustain=True):
    """Notes of every non-drum instrument as (pitch, start, end, velocity, channel), time-sorted.

    With ``sustain`` a note released while the pedal is down sounds until the pedal goes up.
    Notes starting after ``max_seconds`` are dropped and the others cut there.
    """
    out = []
    melodic = [inst for inst in pm.instruments if not inst.is_drum]
    for i, inst in enumerate(melodic):
        channel = i % 15
        channel = channel + 1 if channel >= 9 else channel  # skip the General MIDI drum channel
        spans = pedal_spans(inst) if sustain else []
        for n in inst.notes:
            start, end = float(n.start), float(n.end)
            for a, b in spans:
                if a <= end < b:
                    end = b
                    break
            if max_seconds is not None:
                if start >= max_seconds:
                    continue
                end = min(end, max_seconds)
            if end > start:
                out.append((int(n.pitch), start, end, int(n.velocity), channel))
    out.sort(key=lambda x: (x[1], x[0]))
    return out


def _duration(pm, notes, max_seconds):
    """Seconds of music to render before the release tail."""
    end = max([pm.get_end_time()] + [n[2] for n in notes]) if notes else pm.get_end_time()
    if max_seconds is not None:
        end = min(end, float(max_seconds))
    return max(float(end), 0.0)


# --------------------------------------------------------------------------------------------
# Backends


def soundfont_path():
    """The General MIDI SoundFont bundled with pretty_midi (``TimGM6mb.sf2``), or None (chapter 01_encoding)."""
    try:
        import pretty_midi
    except ImportError:  # pragma: no cover - pretty_midi is a dependency
        return None
    path = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    return path if path.is_file() else None


@lru_cache(maxsize=1)
def _fluidsynth_works():
    """True when pyfluidsynth imports, finds libfluidsynth and can load the SoundFont."""
    if soundfont_path() is None:
        return False
    try:
        import fluidsynth  # pyfluidsynth; raises ImportError when libfluidsynth is missing
    except Exception:
        return False
    try:
        synth = fluidsynth.Synth(samplerate=float(DEFAULT_SAMPLE_RATE))
        ok = synth.sfload(str(soundfont_path())) >= 0
        synth.delete()
        return bool(ok)
    except Exception:
        return False


def backend():
    """``"fluidsynth"`` when FluidSynth renders the sound, else ``"numpy"`` (chapter 01_encoding).

    FluidSynth needs the ``pyfluidsynth`` package and the FluidSynth library (Debian:
    ``libfluidsynth3``). Set ``PIANOLAB_AUDIO=numpy`` to use the numpy fallback anyway.
    """
    if os.environ.get("PIANOLAB_AUDIO", "").strip().lower() == "numpy":
        return "numpy"
    return "fluidsynth" if _fluidsynth_works() else "numpy"


def _render_fluidsynth(notes, n_samples, sample_rate):
    import fluidsynth

    synth = fluidsynth.Synth(gain=0.5, samplerate=float(sample_rate))
    try:
        sfid = synth.sfload(str(soundfont_path()))
        for ch in sorted({n[4] for n in notes}):
            synth.program_select(ch, sfid, 0, PIANO_PROGRAM)
        events = []
        for pitch, start, end, velocity, ch in notes:
            events.append((int(round(start * sample_rate)), 1, ch, pitch, velocity))
            events.append((int(round(end * sample_rate)), 0, ch, pitch, 0))
        events.sort(key=lambda e: (e[0], e[1]))  # note-offs before note-ons at the same sample
        out = np.zeros(n_samples, dtype=np.float32)
        pos = 0
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
    """One piano-like note: ``n_held`` samples held, then released; ``n_total`` samples in all.

    A sum of slightly inharmonic partials (piano strings are stiff), each decaying exponentially,
    upper partials and higher notes faster, with a 4 ms attack and a 0.12 s release.
    """
    f0 = 440.0 * 2.0 ** ((pitch - 69) / 12.0)
    t = np.arange(n_total, dtype=np.float64) / sample_rate
    inharmonicity = 4e-4 * (f0 / 261.6) ** 0.5
    tau = 1.6 * (261.6 / f0) ** 0.55  # decay time of the fundamental in seconds
    tone = np.zeros(n_total, dtype=np.float64)
    nyquist = sample_rate / 2.0
    for h in range(1, 9):
        fh = h * f0 * np.sqrt(1.0 + inharmonicity * h * h)
        if fh >= nyquist * 0.95:
            break
        amp = 1.0 / h**1.3
        tone += amp * np.exp(-t * h**0.7 / tau) * np.sin(2.0 * np.pi * fh * t + 0.3 * h)
    envelope = np.minimum(1.0, t / 0.004)
    if n_total > n_held:
        t_rel = (np.arange(n_total - n_held, dtype=np.float64)) / sample_rate
        envelope[n_held:] *= np.exp(-t_rel / 0.12)
    return tone * envelope


def _render_numpy(notes, n_samples, sample_rate):
    out = np.zeros(n_samples, dtype=np.float64)
    release = int(0.6 * sample_rate)
    for pitch, start, end, velocity, _ in notes:
        s = int(round(start * sample_rate))
        if s >= n_samples:
            continue
        held = max(1, int(round(end * sample_rate)) - s)
        total = min(held + release, n_samples - s)
        tone = _piano_tone(pitch, min(held, total), total, sample_rate)
        out[s:s + total] += (0.15 * velocity / 127.0) * tone
    return out.astype(np.float32)


def synthesize(midi_or_roll, encoding=DEFAULT_ENCODING, sample_rate=DEFAULT_SAMPLE_RATE, *,
               max_seconds=None, backend_name=None, normalize=True):
    """Roll, ``PrettyMIDI`` or ``.mid`` path -> mono ``float32`` waveform (chapter 01_encoding).

    A roll is decoded with :func:`pianolab.encoding.roll_to_midi` under ``encoding``. Every
    non-drum track is played on a piano; the sustain pedal is honoured. The waveform lasts the
    music (cut at ``max_seconds`` when given) plus one second for the last notes to die away:
    ``round((duration + 1.0) * sample_rate)`` samples. ``backend_name`` picks ``"fluidsynth"`` or
    ``"numpy"`` (default: :func:`backend`). With ``normalize`` the peak is scaled to 0.9; silence
    stays silence.
    """
    sample_rate = int(sample_rate)
    if sample_rate < 4000:
        raise ValueError(f"sample_rate must be at least 4000 Hz, got {sample_rate}")
    name = backend_name or backend()
    if name not in ("fluidsynth", "numpy"):
        raise ValueError(f"backend_name must be 'fluidsynth' or 'numpy', got {name!r}")
    if name == "fluidsynth" and not _fluidsynth_works():
        raise RuntimeError(
            "FluidSynth is not available: install pyfluidsynth and the FluidSynth library "
            "(Debian: apt-get install libfluidsynth3), or use backend_name='numpy'"
        )
    pm = _as_midi(midi_or_roll, encoding)
    notes = _notes(pm, max_seconds=max_seconds)
    duration = _duration(pm, notes, max_seconds)
    n_samples = int(round((duration + RELEASE_SECONDS) * sample_rate))
    if not notes:
        return np.zeros(n_samples, dtype=np.float32)
    render = _render_fluidsynth if name == "fluidsynth" else _render_numpy
    wave = render(notes, n_samples, sample_rate)
    if normalize:
        peak = float(np.max(np.abs(wave))) if wave.size else 0.0
        if peak > 0:
            wave = wave * np.float32(PEAK / peak)
    return wave.astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------
# Files and players


def _to_int16(wave):
    wave = np.asarray(wave, dtype=np.float64)
    if wave.ndim != 1:
        raise ValueError(f"expected a mono waveform (1-D array), got shape {wave.shape}")
    if wave.size and not np.all(np.isfinite(wave)):
        raise ValueError("the waveform holds NaN or infinite samples")
    return (np.clip(wave, -1.0, 1.0) * 32767.0).round().astype("<i2")


def wav_bytes(wave, sample_rate=DEFAULT_SAMPLE_RATE):
    """Mono float waveform in [-1, 1] -> the bytes of a 16-bit PCM WAV file (chapter 01_encoding)."""
    pcm = _to_int16(wave)
    buf = io.BytesIO()
    with _wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def write_wav(wave, path, sample_rate=DEFAULT_SAMPLE_RATE):
    """Write a mono waveform as a 16-bit WAV file, atomically; returns the path (chapter 01_encoding).

    Samples are clipped to [-1, 1]. The file is written to a temporary file in the same folder and
    renamed into place, so a reader never sees half a file.
    """
    path = Path(path)
    return _io.write_bytes(path, wav_bytes(wave, sample_rate))


def _waveform(item, encoding, sample_rate, max_seconds):
    """A 1-D array is taken as a waveform already; anything else is synthesized."""
    if isinstance(item, np.ndarray) and item.ndim == 1:
        wave = item.astype(np.float32, copy=False)
        if max_seconds is not None:
            wave = wave[: int(round(max_seconds * sample_rate))]
        return wave
    return synthesize(item, encoding, sample_rate, max_seconds=max_seconds)


def player(midi_or_roll, encoding=DEFAULT_ENCODING, sample_rate=DEFAULT_SAMPLE_RATE, *,
           max_seconds=DEFAULT_MAX_SECONDS):
    """An IPython ``Audio`` player for a roll, ``PrettyMIDI``, ``.mid`` path or waveform (chapter 01_encoding).

    The sound is cut to ``max_seconds`` (20 s by default; ``None`` keeps it all) and normalized.
    The player embeds the WAV data in the page, so it plays in the static book.
    """
    from IPython.display import Audio

    wave = _waveform(midi_or_roll, encoding, sample_rate, max_seconds)
    if not np.any(wave):
        wave = wave.copy()  # IPython refuses to normalize silence; play it as silence
        return Audio(data=wave, rate=int(sample_rate), normalize=False)
    return Audio(data=wave, rate=int(sample_rate), normalize=True)


def _data_uri(wave, sample_rate):
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if peak > 0:
        wave = wave * (PEAK / peak)
    return "data:audio/wav;base64," + base64.b64encode(wav_bytes(wave, sample_rate)).decode("ascii")


def player_grid(items, columns=2, encoding=DEFAULT_ENCODING, sample_rate=DEFAULT_SAMPLE_RATE, *,
                max_seconds=DEFAULT_MAX_SECONDS, title=None):
    """Labelled players side by side, as static HTML (chapter 05_fast_wavenet).

    ``items`` maps a label to a roll, ``PrettyMIDI``, ``.mid`` path or 1-D waveform (a list of
    pairs works too). Returns ``IPython.display.HTML`` with one ``<audio controls>`` element per
    item whose source is a base64 WAV data URI: it plays in the built book without a kernel or a
    network. Each clip is cut to ``max_seconds``.
    """
    from IPython.display import HTML

    pairs = list(items.items()) if isinstance(items, dict) else list(items)
    if not pairs:
        raise ValueError("player_grid needs at least one item (label -> roll, MIDI or waveform)")
    columns = int(columns)
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    cells = []
    for label, item in pairs:
        wave = _waveform(item, encoding, sample_rate, max_seconds)
        seconds = wave.size / float(sample_rate)
        cells.append(
            '<figure style="margin:0;padding:6px;border:1px solid #ddd;border-radius:4px">'
            f'<figcaption style="font-weight:600;margin-bottom:4px">{html.escape(str(label))}'
            f' <span style="font-weight:400;color:#666">({seconds:.1f} s)</span></figcaption>'
            f'<audio controls preload="metadata" style="width:100%" src="{_data_uri(wave, sample_rate)}">'
            "your browser cannot play WAV audio</audio></figure>"
        )
    head = f"<p style='font-weight:600'>{html.escape(str(title))}</p>" if title else ""
    body = (
        '<div class="pianolab-player-grid" style="display:grid;gap:8px;'
        f'grid-template-columns:repeat({columns},minmax(0,1fr))">' + "".join(cells) + "</div>"
    )
    return HTML(head + body)


# --------------------------------------------------------------------------------------------
# Live panel


def generation_panel(model, *, seed=None, encoding=DEFAULT_ENCODING, sample_rate=DEFAULT_SAMPLE_RATE,
                     seconds=10.0, temperature=1.0, edge_aversion=True, random_seed=0,
                     max_seconds=60.0):
    """An ipywidgets panel that generates with ``model`` and plays the result (chapter 05_fast_wavenet).

    Controls: temperature, edge aversion on/off, length in seconds, random seed, and a Generate
    button that calls :func:`pianolab.generate.generate` and shows the piano roll and a player.
    ``seed`` is passed through to ``generate`` (a roll, a MIDI file, or None for silence). For live
    notebooks: the static book shows the controls but cannot run them. Returns the panel; its
    ``generate_now()`` runs one generation with the current settings and returns the roll.
    """
    import ipywidgets as widgets
    from IPython.display import display

    temperature_w = widgets.FloatSlider(value=float(temperature), min=0.2, max=2.0, step=0.05,
                                        description="temperature", continuous_update=False)
    edge_w = widgets.Checkbox(value=bool(edge_aversion), description="edge aversion")
    seconds_w = widgets.FloatSlider(value=float(seconds), min=1.0, max=float(max_seconds), step=1.0,
                                    description="length (s)", continuous_update=False)
    random_seed_w = widgets.IntText(value=int(random_seed), description="random seed")
    button = widgets.Button(description="Generate", button_style="primary", icon="music")
    status = widgets.Label(value="")
    out = widgets.Output()

    cache = {}

    def generate_now():
        from . import generate as gen  # lazy: generate is a higher stage than audio
        from .plots import plot_roll

        status.value = "generating..."
        extra = {}
        if hasattr(gen, "FastSampler"):  # read the weights once, reuse across clicks
            if "sampler" not in cache:
                cache["sampler"] = gen.FastSampler(model, n_keys=encoding.n_keys)
            extra["sampler"] = cache["sampler"]
        rolls = gen.generate(
            model,
            seconds=float(seconds_w.value),
            seed=seed,
            streams=1,
            temperature=float(temperature_w.value),
            edge_aversion=bool(edge_w.value),
            random_seed=int(random_seed_w.value),
            progress=False,
            encoding=encoding,
            **extra,
        )
        roll = np.asarray(rolls[0])
        out.clear_output(wait=True)
        with out:
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(9, 3))
            plot_roll(roll, encoding, ax=ax,
                      title=f"temperature {temperature_w.value:.2f}, edge aversion "
                            f"{'on' if edge_w.value else 'off'}, random seed {random_seed_w.value}")
            plt.show()
            display(player(roll, encoding, sample_rate, max_seconds=None))
        status.value = f"{roll.shape[0] / encoding.steps_per_second:.1f} s generated"
        return roll

    def on_click(_):
        try:
            generate_now()
        except Exception as exc:  # show the error in the panel instead of losing it in a log
            status.value = f"error: {exc}"
            raise

    button.on_click(on_click)
    panel = widgets.VBox([
        widgets.HBox([temperature_w, edge_w]),
        widgets.HBox([seconds_w, random_seed_w]),
        widgets.HBox([button, status]),
        out,
    ])
    panel.generate_now = generate_now
    panel.controls = {
        "temperature": temperature_w,
        "edge_aversion": edge_w,
        "seconds": seconds_w,
        "random_seed": random_seed_w,
        "button": button,
    }
    return panel
