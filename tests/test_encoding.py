"""Tests of pianolab.encoding: MIDI <-> roll <-> flat sequence (chapter 01_encoding)."""

import numpy as np
import pretty_midi
import pytest

from pianolab.encoding import (DEFAULT_ENCODING, MAX_SECONDS, Encoding, midi_to_roll, note_name, roll_to_midi,
                               roll_to_sequence, sequence_to_roll, write_midi)
from pianolab.errors import MidiError

FS = DEFAULT_ENCODING.steps_per_second
LOW = DEFAULT_ENCODING.lowest


def random_roll(rng, steps, keys=72, density=0.06, trailing=0, leading=0):
    """A random binary roll (any binary roll is encodable: its runs of 1s are maximal, so two
    notes on a key are always a silent step apart), with silent steps before and after."""
    roll = (rng.random((steps, keys)) < density).astype(np.uint8)
    # a few long notes too
    for _ in range(keys // 4):
        k = rng.integers(keys)
        a = rng.integers(steps)
        roll[a:a + rng.integers(1, 40), k] = 1
    out = np.zeros((leading + steps + trailing, keys), dtype=np.uint8)
    out[leading:leading + steps] = roll
    if not out.any():
        out[leading, 0] = 1
    return out


def pm_with_notes(notes, extra=()):
    """PrettyMIDI with one instrument of ``notes`` = [(pitch, start, end[, velocity])], plus ``extra``."""
    pm = pretty_midi.PrettyMIDI(resolution=480, initial_tempo=120.0)
    inst = pretty_midi.Instrument(program=0)
    for pitch, start, end, *vel in notes:
        inst.notes.append(pretty_midi.Note(velocity=vel[0] if vel else 90, pitch=pitch, start=start, end=end))
    pm.instruments += [inst, *extra]
    return pm


def steps(t):
    return t / FS


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_round_trip_random_rolls_through_a_file(tmp_path, seed):
    rng = np.random.default_rng(seed)
    roll = random_roll(rng, int(rng.integers(20, 400)), trailing=int(rng.integers(0, 30)),
                       leading=int(rng.integers(0, 10)))
    path = write_midi(roll, tmp_path / f"r{seed}.mid")
    back = midi_to_roll(path)
    assert back.dtype == np.uint8
    assert back.shape == roll.shape
    np.testing.assert_array_equal(back, roll)


def test_round_trip_in_memory_and_trailing_silence_kept():
    roll = np.zeros((100, 72), dtype=np.uint8)
    roll[0:5, 10] = 1
    roll[7:9, 10] = 1  # re-strike after a gap
    roll[3:4, 71] = 1  # top key, one step
    roll[50:52, 0] = 1  # bottom key
    # steps 52..99 are silent: the pedal-up event at the end keeps them
    back = midi_to_roll(roll_to_midi(roll))
    np.testing.assert_array_equal(back, roll)


def test_round_trip_every_key_and_full_length_notes():
    roll = np.zeros((30, 72), dtype=np.uint8)
    roll[:, ::2] = 1  # notes lasting the whole roll
    roll[0, 1::2] = 1
    roll[2:, 1::4] = 1
    np.testing.assert_array_equal(midi_to_roll(roll_to_midi(roll)), roll)


@pytest.mark.parametrize("enc", [Encoding(24, 21, 88), Encoding(100, 40, 30), Encoding(48, 31, 72)])
def test_round_trip_other_encodings(tmp_path, enc):
    rng = np.random.default_rng(7)
    roll = random_roll(rng, 150, keys=enc.n_keys, trailing=5)
    path = write_midi(roll, tmp_path / "e.mid", enc)
    np.testing.assert_array_equal(midi_to_roll(path, enc), roll)


# ---------------------------------------------------------------------------------------------
# Flattening
# ---------------------------------------------------------------------------------------------


def test_flattening_is_time_major_keys_ascending():
    roll = random_roll(np.random.default_rng(3), 40)
    seq = roll_to_sequence(roll)
    t, k = np.divmod(np.arange(seq.size), roll.shape[1])  # element t*K + k is roll[t, k]
    np.testing.assert_array_equal(seq, roll[t, k])
    np.testing.assert_array_equal(sequence_to_roll(seq), roll)
    with pytest.raises(ValueError, match=str(roll.shape[1])):
        sequence_to_roll(seq[:-1])
    with pytest.raises(ValueError):
        roll_to_sequence(seq)


def test_note_names_and_encodings():
    assert [note_name(p) for p in (60, 31, 102, 21)] == ["C4", "G1", "F#7", "A0"]
    enc = DEFAULT_ENCODING
    assert (enc.pitches[0], enc.pitches[-1]) == (enc.lowest, enc.highest) and len(enc.pitches) == enc.n_keys
    assert Encoding.from_dict(enc.to_dict()) == enc
    for bad in ((48, 100, 72), (0, 31, 72), (48, -1, 10), (48, 31, 0)):
        with pytest.raises(ValueError):
            Encoding(*bad)


# ---------------------------------------------------------------------------------------------
# Encoding rules
# ---------------------------------------------------------------------------------------------


def test_times_map_to_steps():
    pm = pm_with_notes([(60, steps(3), steps(7)), (62, steps(10), steps(10.2))])
    roll = midi_to_roll(pm)
    np.testing.assert_array_equal(np.flatnonzero(roll[:, 60 - LOW]), [3, 4, 5, 6])
    # a note shorter than one step still gets one step
    np.testing.assert_array_equal(np.flatnonzero(roll[:, 62 - LOW]), [10])
    assert roll.sum() == 5


def test_restrike_leaves_one_silent_step():
    # released exactly when struck again
    pm = pm_with_notes([(60, 0.0, 0.5), (60, 0.5, 1.0)])
    col = midi_to_roll(pm)[:, 60 - LOW]
    assert col[22] == 1 and col[23] == 0 and col[24] == 1
    assert col[:23].all() and col[24:48].all() and len(col) == 48
    # struck again while still down
    pm = pm_with_notes([(60, 0.0, 1.0), (60, 0.5, 0.75)])
    col = midi_to_roll(pm)[:, 60 - LOW]
    np.testing.assert_array_equal(np.flatnonzero(col), list(range(0, 23)) + list(range(24, 36)))


def test_restrike_when_the_earlier_note_would_vanish():
    pm = pm_with_notes([(60, 0.0, steps(1)), (60, steps(1), steps(4))])
    col = midi_to_roll(pm)[:, 60 - LOW]
    # earlier note keeps its step, the new one starts a step later
    np.testing.assert_array_equal(col, [1, 0, 1, 1])


def test_unisons_merge_into_the_longest():
    notes = [(60, steps(2), steps(5)), (60, steps(2), steps(9))]
    extra = pretty_midi.Instrument(program=40)
    extra.notes.append(pretty_midi.Note(velocity=50, pitch=60, start=steps(2), end=steps(4)))
    col = midi_to_roll(pm_with_notes(notes, extra=[extra]))[:, 60 - LOW]
    np.testing.assert_array_equal(np.flatnonzero(col), range(2, 9))


def test_unisons_after_a_delayed_restrike_still_merge():
    # two notes start on step 1 (a unison); step 1 is a re-strike of a one-step note at step 0, so
    # the unison is delayed to step 2 -- but it stays one note, not two.
    pm = pm_with_notes([(60, 0.0, steps(1)), (60, steps(1), steps(3)), (60, steps(1), steps(4))])
    col = midi_to_roll(pm)[:, 60 - LOW]
    np.testing.assert_array_equal(col, [1, 0, 1, 1])


def test_sustain_pedal_option():
    pm = pm_with_notes([(60, 0.0, steps(4)), (64, steps(10), steps(12)), (67, steps(30), steps(32))])
    inst = pm.instruments[0]
    inst.control_changes += [
        pretty_midi.ControlChange(64, 100, steps(2)),  # pedal down
        pretty_midi.ControlChange(64, 0, steps(20)),  # pedal up
    ]
    plain = midi_to_roll(pm)
    held = midi_to_roll(pm, sustain=True)
    np.testing.assert_array_equal(np.flatnonzero(plain[:, 60 - LOW]), range(0, 4))
    np.testing.assert_array_equal(np.flatnonzero(held[:, 60 - LOW]), range(0, 20))
    np.testing.assert_array_equal(np.flatnonzero(held[:, 64 - LOW]), range(10, 20))
    # a note after the pedal went up is not touched
    np.testing.assert_array_equal(held[:, 67 - LOW], plain[:, 67 - LOW])


def test_sustain_pedal_values_below_64_are_up():
    pm = pm_with_notes([(60, 0.0, steps(4))])
    pm.instruments[0].control_changes += [pretty_midi.ControlChange(64, 63, steps(1)),
                                          pretty_midi.ControlChange(64, 0, steps(20))]
    np.testing.assert_array_equal(midi_to_roll(pm, sustain=True), midi_to_roll(pm))


def test_out_of_range_fold_and_drop():
    pm = pm_with_notes([(20, 0.0, steps(2)), (110, 0.0, steps(2)), (60, 0.0, steps(2))])
    fold = midi_to_roll(pm)
    assert fold[0, 32 - LOW] == 1  # 20 + 12
    assert fold[0, 98 - LOW] == 1  # 110 - 12
    assert fold[0].sum() == 3
    drop = midi_to_roll(pm, out_of_range="drop")
    assert drop[0].sum() == 1 and drop[0, 60 - LOW] == 1
    with pytest.raises(ValueError, match="out_of_range"):
        midi_to_roll(pm, out_of_range="clip")


def test_drum_tracks_are_ignored_and_tracks_merged():
    drums = pretty_midi.Instrument(program=0, is_drum=True)
    drums.notes.append(pretty_midi.Note(velocity=100, pitch=38, start=0.0, end=steps(5)))
    violin = pretty_midi.Instrument(program=40)
    violin.notes.append(pretty_midi.Note(velocity=100, pitch=76, start=steps(1), end=steps(3)))
    pm = pm_with_notes([(60, 0.0, steps(2))], extra=[drums, violin])
    roll = midi_to_roll(pm)
    assert roll[:, 38 - LOW].sum() == 0
    assert roll[:, 60 - LOW].sum() == 2 and roll[:, 76 - LOW].sum() == 2
    assert roll.sum() == 4


def test_velocity_is_dropped():
    loud = midi_to_roll(pm_with_notes([(60, 0.0, 0.5, 127), (64, 0.25, 0.5, 127)]))
    soft = midi_to_roll(pm_with_notes([(60, 0.0, 0.5, 1), (64, 0.25, 0.5, 40)]))
    np.testing.assert_array_equal(loud, soft)
    assert set(np.unique(loud)) == {0, 1}


def test_time_scale_stretches():
    pm = pm_with_notes([(60, 0.0, 1.0), (62, 1.0, 2.0)])
    for scale in (1.0, 1.5, 0.5):
        roll = midi_to_roll(pm, time_scale=scale)
        assert roll.shape[0] == 2 * FS * scale
        assert roll[:, 60 - LOW].sum() == roll[:, 62 - LOW].sum() == FS * scale


def test_roll_to_midi_checks_its_input():
    with pytest.raises(ValueError, match="72"):
        roll_to_midi(np.zeros((4, 10), dtype=np.uint8))
    with pytest.raises(ValueError, match="0 and 1"):
        roll_to_midi(np.full((4, 72), 2, dtype=np.uint8))


# ---------------------------------------------------------------------------------------------
# Bad input: MidiError naming the file and the reason
# ---------------------------------------------------------------------------------------------


def _good_bytes(tmp_path):
    roll = np.zeros((50, 72), dtype=np.uint8)
    roll[5:20, 30] = 1
    roll[10:40, 40] = 1
    return write_midi(roll, tmp_path / "good.mid").read_bytes()


def _assert_midi_error(path, *words):
    with pytest.raises(MidiError) as info:
        midi_to_roll(path)
    err = info.value
    assert str(path) in str(err)
    assert err.path is not None and str(err.path) == str(path)
    for w in words:
        assert w in err.reason, (w, err.reason)
    return err


def test_missing_file(tmp_path):
    _assert_midi_error(tmp_path / "nope.mid", "no such file")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.mid"
    p.write_bytes(b"")
    _assert_midi_error(p, "empty")


def test_not_midi(tmp_path):
    p = tmp_path / "text.mid"
    p.write_text("this is not MIDI at all\n")
    _assert_midi_error(p, "not a MIDI file")
    p = tmp_path / "noise.midi"
    p.write_bytes(bytes(range(256)))
    _assert_midi_error(p, "not a MIDI file")


@pytest.mark.parametrize("cut", [6, 14, 30, 0.5, -1])
def test_truncated_file(tmp_path, cut):
    data = _good_bytes(tmp_path)
    n = int(len(data) * cut) if isinstance(cut, float) else (cut if cut > 0 else len(data) + cut)
    p = tmp_path / f"cut{n}.mid"
    p.write_bytes(data[:n])
    _assert_midi_error(p, "truncated")


def test_corrupt_chunk(tmp_path):
    data = bytearray(_good_bytes(tmp_path))
    data[14:18] = b"XXXX"  # the track chunk's 'MTrk' tag
    p = tmp_path / "corrupt.mid"
    p.write_bytes(bytes(data))
    # Either a clean error or (if the reader skips unknown chunks) a file with no notes: both are
    # MidiError naming the file.
    with pytest.raises(MidiError) as info:
        midi_to_roll(p)
    assert str(p) in str(info.value)


def test_no_notes(tmp_path):
    pm = pretty_midi.PrettyMIDI()
    pm.instruments.append(pretty_midi.Instrument(program=0))
    p = tmp_path / "silent.mid"
    pm.write(str(p))
    _assert_midi_error(p, "no notes")


def test_only_drums_means_no_notes(tmp_path):
    drums = pretty_midi.Instrument(program=0, is_drum=True)
    drums.notes.append(pretty_midi.Note(velocity=100, pitch=60, start=0.0, end=0.5))
    pm = pretty_midi.PrettyMIDI()
    pm.instruments.append(drums)
    p = tmp_path / "drums.mid"
    pm.write(str(p))
    _assert_midi_error(p, "no notes", "drum")


def test_no_notes_in_the_key_window(tmp_path):
    pm = pm_with_notes([(10, 0.0, 0.5), (120, 0.0, 0.5)])
    p = tmp_path / "outside.mid"
    pm.write(str(p))
    with pytest.raises(MidiError) as info:
        midi_to_roll(p, out_of_range="drop")
    err = info.value
    assert str(p) in str(err) and "key window" in err.reason and "31" in err.reason
    # folding brings them in
    assert midi_to_roll(p)[0].sum() == 2


def test_in_memory_errors_say_so():
    pm = pretty_midi.PrettyMIDI()
    with pytest.raises(MidiError, match="in-memory"):
        midi_to_roll(pm)


def test_a_file_longer_than_the_limit(tmp_path):
    p = tmp_path / "days.mid"
    pm = pretty_midi.PrettyMIDI(resolution=24)  # few ticks per second: pretty_midi reads the file
    pm.instruments.append(pretty_midi.Instrument(program=0))
    pm.instruments[0].notes.append(pretty_midi.Note(90, 60, start=MAX_SECONDS, end=MAX_SECONDS + 1))
    pm.write(str(p))
    _assert_midi_error(p, "longer than the limit")
    # a stretch that pushes a piece past the limit is refused too
    with pytest.raises(MidiError, match="longer than"):
        midi_to_roll(pm_with_notes([(60, 0.0, MAX_SECONDS / 2 + 1)]), time_scale=2.0)


def test_write_midi_is_atomic_and_leaves_no_temp_files(tmp_path):
    roll = np.zeros((10, 72), dtype=np.uint8)
    roll[1:3, 5] = 1
    write_midi(roll, tmp_path / "sub" / "a.mid")
    write_midi(roll, tmp_path / "sub" / "a.mid")
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.mid"]


def test_a_roll_is_binary_uint8_and_lasts_the_file():
    """Moved from chapter 01_encoding: a roll is uint8 of 0s and 1s, one column per key, one row per
    step of the file's length (to a step)."""
    pm = pm_with_notes([(60, 0.0, 0.5), (60, 0.5, 1.0), (72, 0.25, 1.3), (24, 0.0, 0.2)])
    roll = midi_to_roll(pm)
    assert roll.dtype == np.uint8 and roll.shape[1] == DEFAULT_ENCODING.n_keys
    assert set(np.unique(roll)) == {0, 1}
    assert abs(roll.shape[0] - pm.get_end_time() * FS) <= 1
