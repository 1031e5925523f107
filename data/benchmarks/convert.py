"""One-off conversion of the four polyphonic-music benchmarks into the .npz files shipped here.

Run once, by hand, in a throwaway environment with numpy and scipy (pianolab never imports this
file and needs no scipy):

    python -m venv /tmp/conv && /tmp/conv/bin/pip install numpy scipy
    /tmp/conv/bin/python data/benchmarks/convert.py SOURCE_DIR data/benchmarks

SOURCE_DIR holds ``jsb/jsb_chorales.json`` (the JSB Chorales pickle of Boulanger-Lewandowski et
al. 2012 written as JSON) and ``poly_music/{JSB_Chorales,Nottingham,MuseData,Piano_midi}.mat``
(the same benchmarks as distributed with the TCN code of Bai et al. 2018). The script checks the
piece and frame counts of every split against the published ones, checks that the .mat JSB is
frame for frame the JSON JSB, writes one .npz per set and reads every file back. The output is
byte for byte reproducible (fixed zip timestamps).

Format of each ``NAME.npz`` (``numpy.load``, no pickles): for each split ``train`` / ``valid`` /
``test``, ``{split}_lengths`` (int32, frames per piece, in the original order) and
``{split}_frames`` (uint8 ``[frames, 11]``: the pieces' rolls laid end to end, each frame's 88
keys, MIDI 21..108, packed eight to a byte by ``numpy.packbits(roll, axis=1)``, lowest key in the
high bit of the first byte).
"""

import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import scipy.io

SPLITS = ("train", "valid", "test")
N_KEYS, LOWEST = 88, 21
# name of the shipped file: (.mat file, pieces per split, frames per split) as published in the
# README of the data (JSB: Boulanger-Lewandowski et al. 2012; the others: the .mat files' README)
SETS = {
    "jsb_chorales": ("JSB_Chorales", (229, 76, 77), (13807, 4602, 4725)),
    "nottingham": ("Nottingham", (694, 173, 170), (176561, 45513, 44463)),
    "musedata": ("MuseData", (524, 135, 124), (245202, 82755, 64339)),
    "piano_midi": ("Piano_midi", (87, 12, 25), (75911, 8540, 19036)),
}


def read_mat(path):
    mat = scipy.io.loadmat(path)
    out = {}
    for split in SPLITS:
        pieces = mat[f"{split}data"].ravel()
        rolls = []
        for i, p in enumerate(pieces):
            p = np.asarray(p)
            assert p.ndim == 2 and p.shape[1] == N_KEYS, f"{path} {split}[{i}]: shape {p.shape}"
            assert np.isin(p, (0, 1)).all(), f"{path} {split}[{i}]: values other than 0 and 1"
            rolls.append(p.astype(np.uint8))
        out[split] = rolls
    return out


def read_json(path):
    raw = json.loads(Path(path).read_text())
    out = {}
    for split in SPLITS:
        rolls = []
        for piece in raw[split]:
            roll = np.zeros((len(piece), N_KEYS), np.uint8)
            for t, frame in enumerate(piece):
                roll[t, [p - LOWEST for p in frame]] = 1
            rolls.append(roll)
        out[split] = rolls
    return out


def write_npz(path, arrays):
    """Like numpy.savez_compressed, but with fixed timestamps so the bytes are reproducible."""
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue(), compresslevel=9)
    tmp.replace(path)


def pack(rolls):
    lengths = np.array([len(r) for r in rolls], np.int32)
    return np.packbits(np.concatenate(rolls), axis=1), lengths


def unpack(frames, lengths):
    roll = np.unpackbits(frames, axis=1, count=N_KEYS)
    return np.split(roll, np.cumsum(lengths)[:-1])


def main(source, out):
    source, out = Path(source), Path(out)
    for name, (mat_name, pieces, frames) in SETS.items():
        data = read_mat(source / "poly_music" / f"{mat_name}.mat")
        if name == "jsb_chorales":
            from_json = read_json(source / "jsb" / "jsb_chorales.json")
            for split in SPLITS:
                assert len(from_json[split]) == len(data[split])
                assert all(np.array_equal(a, b) for a, b in zip(from_json[split], data[split])), \
                    f"JSB {split}: the .mat and the JSON differ"
        arrays = {}
        for split, n_pieces, n_frames in zip(SPLITS, pieces, frames):
            rolls = data[split]
            assert len(rolls) == n_pieces, f"{name} {split}: {len(rolls)} pieces, expected {n_pieces}"
            got = sum(len(r) for r in rolls)
            assert got == n_frames, f"{name} {split}: {got} frames, expected {n_frames}"
            arrays[f"{split}_frames"], arrays[f"{split}_lengths"] = pack(rolls)
        path = out / f"{name}.npz"
        write_npz(path, arrays)
        with np.load(path) as z:  # read back
            for split in SPLITS:
                back = unpack(z[f"{split}_frames"], z[f"{split}_lengths"])
                assert all(np.array_equal(a, b) for a, b in zip(back, data[split]))
        rate = np.concatenate([np.concatenate(data[s]) for s in SPLITS]).mean()
        print(f"{path}: {path.stat().st_size:,} bytes; pieces {pieces}, frames {frames}, "
              f"key-down rate {rate:.4f}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
