"""Robustness: the encoder on 1,000 mutated real MIDI files (issue: robustness suite)."""

import sys
from pathlib import Path

import pretty_midi
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_harness():
    # A plain import (not from a file spec) so the spawned worker process can import it too.
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    import robustness

    return robustness


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Real pieces (music21 scores written as MIDI) plus a two-track file with pedal and drums."""
    from music21 import corpus

    folder = tmp_path_factory.mktemp("sources")
    for i, name in enumerate(["bach/bwv269", "bach/bwv347", "joplin/maple_leaf_rag"]):
        corpus.parse(name).write("midi", fp=str(folder / f"piece{i}.mid"))
    pm = pretty_midi.PrettyMIDI()
    for program, is_drum in [(0, False), (33, False), (0, True)]:
        inst = pretty_midi.Instrument(program=program, is_drum=is_drum)
        for k in range(40):
            inst.notes.append(pretty_midi.Note(90, 40 + (k * 7) % 40, k * 0.25, k * 0.25 + 0.4))
        inst.control_changes += [pretty_midi.ControlChange(64, 127, 1.0), pretty_midi.ControlChange(64, 0, 3.0)]
        pm.instruments.append(inst)
    pm.write(str(folder / "pedal_tracks.mid"))
    return sorted(folder.glob("*.mid"))


def test_a_thousand_mutated_files_decode_or_raise_midi_error(sources, tmp_path):
    harness = _load_harness()
    paths = harness.make_files(sources, tmp_path, 1000, seed=1)
    counts, failures = harness.run(paths, time_limit=20.0)
    assert sum(counts.values()) == 1000
    assert failures == [], failures[:5]
    # The mutations reach both outcomes: some files still decode, most are refused with MidiError.
    assert counts["decoded"] > 20 and counts["midi_error"] > 200, counts


def test_every_mutation_kind_is_used(sources):
    import random

    harness = _load_harness()
    rng = random.Random(0)
    data = sources[0].read_bytes()
    kinds = {harness.mutate(data, rng)[1] for _ in range(200)}
    assert kinds == set(harness.MUTATIONS)
