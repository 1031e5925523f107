"""pianolab.audio: both synthesis back-ends, players that work in the static page, WAV files."""

import base64
import io
import re
import wave

import numpy as np
import pretty_midi
import pytest

from pianolab import audio
from pianolab.encoding import DEFAULT_ENCODING, Encoding, write_midi
from pianolab.errors import MidiError

SR = audio.DEFAULT_SAMPLE_RATE
FS = DEFAULT_ENCODING.steps_per_second

BACKENDS = [
    pytest.param(
        "fluidsynth",
        marks=pytest.mark.skipif(
            not audio._fluidsynth_works(),
            reason="FluidSynth unavailable (pip install pyfluidsynth; apt-get install libfluidsynth3)",
        ),
    ),
    "numpy",
]


def _roll(seconds=3.0, start=1.0, stop=2.0, keys=(29, 33, 36)):
    """Silence until ``start``, a C major chord (C4 E4 G4 with the default window) until ``stop``."""
    roll = np.zeros((int(seconds * FS), DEFAULT_ENCODING.n_keys), dtype=np.uint8)
    roll[int(start * FS):int(stop * FS), list(keys)] = 1
    return roll


def _rms(x):
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


@pytest.mark.parametrize("name", BACKENDS)
def test_synthesize_length_finite_and_sounding_where_the_notes_are(name):
    roll = _roll()
    w = audio.synthesize(roll, backend_name=name)
    assert w.dtype == np.float32 and w.ndim == 1
    assert w.size == int(round((roll.shape[0] / FS + audio.RELEASE_SECONDS) * SR))
    assert np.all(np.isfinite(w))
    assert np.max(np.abs(w)) == pytest.approx(audio.PEAK, rel=1e-4)
    before = w[: int(0.9 * SR)]
    during = w[int(1.1 * SR):int(1.9 * SR)]
    assert _rms(during) > 0.05
    assert _rms(before) < 1e-2 * _rms(during)  # nothing but dither noise before the first note


@pytest.mark.parametrize("name", BACKENDS)
def test_synthesize_accepts_pretty_midi_and_files(tmp_path, name):
    roll = _roll()
    path = write_midi(roll, tmp_path / "chord.mid")
    from_roll = audio.synthesize(roll, backend_name=name)
    from_file = audio.synthesize(path, backend_name=name)
    from_pm = audio.synthesize(pretty_midi.PrettyMIDI(str(path)), backend_name=name)
    assert from_roll.shape == from_file.shape == from_pm.shape
    np.testing.assert_allclose(from_file, from_pm, atol=1e-6)


@pytest.mark.parametrize("name", BACKENDS)
def test_max_seconds_cuts_the_music(name):
    roll = _roll(seconds=6.0, start=0.0, stop=5.0)
    w = audio.synthesize(roll, backend_name=name, max_seconds=2.0)
    assert w.size == int(round((2.0 + audio.RELEASE_SECONDS) * SR))
    assert _rms(w[: int(1.5 * SR)]) > 0.05


def test_numpy_fallback_is_a_decaying_harmonic_tone_not_a_sine():
    roll = _roll(seconds=3.0, start=0.0, stop=2.5, keys=(69 - DEFAULT_ENCODING.lowest,))  # A4
    w = audio.synthesize(roll, backend_name="numpy").astype(np.float64)
    seg = w[int(0.05 * SR):int(0.55 * SR)]
    spectrum = np.abs(np.fft.rfft(seg * np.hanning(seg.size)))
    freqs = np.fft.rfftfreq(seg.size, 1.0 / SR)

    def band(f):
        return spectrum[(freqs > f * 0.97) & (freqs < f * 1.03)].max()

    assert band(880.0) > 0.05 * band(440.0)  # overtones are there
    assert band(1320.0) > 0.01 * band(440.0)
    early, late = _rms(w[: int(0.3 * SR)]), _rms(w[int(2.0 * SR):int(2.4 * SR)])
    assert late < 0.7 * early  # a held piano note decays


def test_silence_stays_silent_and_of_the_right_length():
    roll = np.zeros((96, DEFAULT_ENCODING.n_keys), dtype=np.uint8)
    w = audio.synthesize(roll)
    assert w.size == int(round((2.0 + audio.RELEASE_SECONDS) * SR))
    assert not np.any(w)


def test_environment_variable_forces_the_numpy_backend(monkeypatch):
    monkeypatch.setenv("PIANOLAB_AUDIO", "numpy")
    assert audio.backend() == "numpy"
    monkeypatch.delenv("PIANOLAB_AUDIO")
    assert (audio.backend() == "fluidsynth") == audio._fluidsynth_works()


def test_bad_input_gives_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="piano roll"):
        audio.synthesize(np.zeros(10))
    with pytest.raises(ValueError, match="backend_name"):
        audio.synthesize(_roll(), backend_name="sine")
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"not midi at all")
    with pytest.raises(MidiError, match="bad.mid"):
        audio.synthesize(bad)
    with pytest.raises(ValueError, match="72"):
        audio.synthesize(np.ones((10, 71), dtype=np.uint8))


def _decode_wav(data):
    with wave.open(io.BytesIO(data)) as w:
        frames = w.readframes(w.getnframes())
        return w.getnchannels(), w.getsampwidth(), w.getframerate(), np.frombuffer(frames, "<i2")


def test_player_embeds_wav_data_and_cuts_long_clips():
    p = audio.player(_roll(seconds=30.0, start=0.0, stop=29.0), max_seconds=5.0)
    channels, width, rate, pcm = _decode_wav(p.data)
    assert (channels, width, rate) == (1, 2, SR)
    assert pcm.size == int(round((5.0 + audio.RELEASE_SECONDS) * SR))
    assert "data:audio/wav;base64," in p._repr_html_()
    silent = audio.player(np.zeros((48, DEFAULT_ENCODING.n_keys), dtype=np.uint8))
    assert not np.any(_decode_wav(silent.data)[3])


def test_player_grid_is_static_html_with_decodable_wav():
    items = {"chord <1>": _roll(), "short": _roll(seconds=1.0, start=0.0, stop=0.5),
             "a waveform": np.sin(np.linspace(0, 200, SR)).astype(np.float32)}
    grid = audio.player_grid(items, columns=2)
    text = grid.data
    assert text.count("<audio") == 3
    assert "chord &lt;1&gt;" in text and "grid-template-columns:repeat(2" in text
    sources = re.findall(r'src="data:audio/wav;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(sources) == 3
    lengths = []
    for s in sources:
        channels, width, rate, pcm = _decode_wav(base64.b64decode(s, validate=True))
        assert (channels, width, rate) == (1, 2, SR)
        assert np.abs(pcm).max() > 1000  # not silent
        lengths.append(pcm.size)
    assert lengths == [int(round(4.0 * SR)), int(round(2.0 * SR)), SR]
    with pytest.raises(ValueError, match="at least one"):
        audio.player_grid({})


def test_write_wav_roundtrip_and_atomic(tmp_path, monkeypatch):
    x = 0.5 * np.sin(2 * np.pi * 440 * np.arange(SR // 2) / SR)
    path = audio.write_wav(x, tmp_path / "sub" / "a.wav", SR)
    channels, width, rate, pcm = _decode_wav(path.read_bytes())
    assert (channels, width, rate) == (1, 2, SR)
    np.testing.assert_allclose(pcm / 32767.0, x, atol=1.0 / 32767)
    # clipping instead of wrapping around
    audio.write_wav(np.array([2.0, -2.0]), tmp_path / "clip.wav")
    assert list(_decode_wav((tmp_path / "clip.wav").read_bytes())[3]) == [32767, -32767]
    # a failure while replacing leaves the old file whole and no temporary file behind
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(audio.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        audio.write_wav(np.zeros(100), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.wav"]
    with pytest.raises(ValueError, match="NaN"):
        audio.write_wav(np.array([0.0, np.nan]), tmp_path / "nan.wav")
    with pytest.raises(ValueError, match="piano roll"):
        audio.write_wav(np.zeros((2, 10, 2)), tmp_path / "what.wav")
    assert not (tmp_path / "nan.wav").exists() and not (tmp_path / "what.wav").exists()


def test_write_wav_renders_a_roll_like_the_players(tmp_path):
    roll = _roll()
    path = audio.write_wav(roll, tmp_path / "chord.wav")
    channels, width, rate, pcm = _decode_wav(path.read_bytes())
    expected = audio.synthesize(roll)
    assert (channels, width, rate) == (1, 2, SR) and pcm.size == expected.size
    np.testing.assert_allclose(pcm / 32767.0, expected, atol=1.0 / 32767)


def test_without_fluidsynth_the_numpy_fallback_is_used(monkeypatch):
    monkeypatch.setattr(audio, "_fluidsynth_works", lambda: False)
    assert audio.backend() == "numpy"
    w = audio.synthesize(_roll())
    assert w.size == int(round(4.0 * SR)) and _rms(w) > 0.01
    with pytest.raises(RuntimeError, match="libfluidsynth3"):
        audio.synthesize(_roll(), backend_name="fluidsynth")


def test_players_carry_the_roll_they_play(tmp_path):
    """Under a player of a roll, the roll itself (cut like the sound), for the built book's roll.js; the
    seed's steps; none under a waveform."""
    def rolls(text):
        found = re.findall(r'data-lowest="(\d+)" data-keys="(\d+)" data-steps="(\d+)" data-fs="([\d.]+)" '
                           r'data-seed="(\d+)" data-bits="([A-Za-z0-9+/=]*)"', text)
        out = []
        for lo, k, t, _, seed, b in found:
            k, t = int(k), int(t)
            bits = np.unpackbits(np.frombuffer(base64.b64decode(b), np.uint8))[:t * k].reshape(t, k)
            out.append((int(lo), k, t, int(seed), bits))
        return out

    roll = _roll(seconds=3.0)
    ((lo, keys, steps, seed, bits),) = rolls(audio.player(roll, max_seconds=2.0, seed_steps=24)._repr_html_())
    assert (lo, keys, steps, seed) == (31, 72, 96, 24) and np.array_equal(bits, roll[:96])
    grid = audio.player_grid({"roll": roll, "wave": np.zeros(SR, np.float32)}, max_seconds=None).data
    ((lo, keys, steps, seed, bits),) = rolls(grid)  # no roll under the waveform
    assert (lo, keys, steps, seed) == (31, 72, roll.shape[0], 0) and np.array_equal(bits, roll)
    assert grid.count("<audio") == 2
    # a clip of another key window: a (roll, encoding) pair, drawn and played in its own window
    small = Encoding(48.0, 40, 12)
    grid = audio.player_grid([("twelve keys", (roll[:, :12], small))], max_seconds=None).data
    ((lo, keys, steps, seed, bits),) = rolls(grid)
    assert (lo, keys, steps) == (40, 12, roll.shape[0]) and np.array_equal(bits, roll[:, :12])
    # a MIDI clip's roll is the one the encoding reads from it (roll -> MIDI -> roll is exact)
    path = write_midi(roll, tmp_path / "clip.mid")
    ((lo, keys, steps, seed, bits),) = rolls(audio.player(path, max_seconds=None)._repr_html_())
    assert (lo, keys) == (31, 72) and np.array_equal(bits, roll[:steps]) and not bits[roll.shape[0]:].any()


def test_page_seed_lists_the_notes_of_a_roll_in_time_steps():
    """The page's generator gets a seed as notes [MIDI pitch, first step, end step] and the length in
    steps; laying the notes back on the keys (as sampler.js's notesToRoll does) gives the roll again."""
    roll = np.zeros((10, 72), np.uint8)
    roll[2:5, 30] = roll[4:9, 3] = roll[6:8, 30] = roll[9, 71] = 1  # key 30 struck twice; the top key at the end
    seed = audio.page_seed(roll)
    assert seed == {"steps": 10, "notes": [[61, 2, 5], [34, 4, 9], [61, 6, 8], [102, 9, 10]]}
    small = Encoding(24.0, 40, 12)  # steps and pitches of the roll's own encoding
    assert audio.page_seed(roll[:, :12], small) == {"steps": 10, "notes": [[43, 4, 9]]}
    rng = np.random.default_rng(3)
    roll = (rng.random((50, 72)) < 0.1).astype(np.uint8)
    seed = audio.page_seed(roll)
    back = np.zeros_like(roll)
    for pitch, a, b in seed["notes"]:
        back[a:b, pitch - DEFAULT_ENCODING.lowest] = 1
    assert seed["steps"] == 50 and np.array_equal(back, roll)
    assert audio.page_seed(np.zeros((7, 72), np.uint8)) == {"steps": 7, "notes": []}
