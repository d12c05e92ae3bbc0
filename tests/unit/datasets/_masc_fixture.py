"""A tiny MEG-MASC BIDS folder written with MNE-BIDS (FORMATS.md 4.1), for the load_masc tests.

Each task plays two wavs of ``WAV_S`` seconds; each wav holds sentences of 5 words (0.35 s apart,
0.25 s long) separated by 0.8 s pauses. A ``sound`` event marks each wav start in the recording;
session 1 starts its wavs 1 s later than session 0, so recording onsets differ but wav times agree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

STORIES = {0: "lw1", 1: "cable_spool_fort", 2: "easy_money", 3: "The_Black_Willow"}
WAV_S = 16.0
GAP_S = 1.0


def word_times(wav_s: float = WAV_S) -> list[tuple[float, int, int]]:
    """(time in wav, sentence, word position in sentence) of every word of one wav."""
    out, t, sent = [], 0.5, 0
    while True:
        for k in range(5):
            tk = t + 0.35 * k
            if tk > wav_s - 0.3:
                return out
            out.append((round(tk, 4), sent, k))
        t = t + 0.35 * 4 + 0.25 + 0.8
        sent += 1


def wav_signal(name: str, rate: int, wav_s: float = WAV_S, stereo: bool = False) -> np.ndarray:
    """Deterministic int16 noise for a wav named ``name``."""
    rng = np.random.default_rng(sum(map(ord, name)))
    n = round(wav_s * rate)
    x = (rng.standard_normal((n, 2) if stereo else n) * 6000).clip(-32768, 32767).astype(np.int16)
    return x


def write_masc_bids(root: Path, *, subjects=(1,), sessions=(0, 1), tasks=(0, 1), sfreq: float = 200.0,
                    n_ch: int = 4, wav_rate: int = 16000, sequence_id: bool = False,
                    ch_names_for: dict | None = None, seed: int = 0) -> dict:
    """Write the miniature; returns {'words': {(story, wav stem): [(time, sentence, pos), ...]}, ...}."""
    import mne
    from mne_bids import BIDSPath, write_raw_bids
    from scipy.io import wavfile

    root = Path(root)
    audio = root / "stimuli" / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    words = {}
    for t in tasks:
        story = STORIES[t]
        for k in range(2):
            stem = f"{story}_{k}"
            wavfile.write(audio / f"{stem}.wav", wav_rate, wav_signal(stem, wav_rate))
            words[(story, stem)] = word_times()
    rng = np.random.default_rng(seed)
    for sub in subjects:
        for ses in sessions:
            for t in tasks:
                story = STORIES[t]
                first = 2.0 + float(ses)
                onsets, durs, descs = [], [], []
                for k in range(2):
                    stem = f"{story}_{k}"
                    sound = f"stimuli/audio/{stem}.wav"
                    s0 = first + k * (WAV_S + GAP_S)
                    base = {"story": story, "story_uid": t, "sound_id": k, "sound": sound}
                    onsets.append(s0)
                    durs.append(WAV_S)
                    descs.append(str({"kind": "sound", **base}))
                    for i, (tw, sent, pos) in enumerate(words[(story, stem)]):
                        word = {"kind": "word", **base, "word": f"w{sent}_{pos}", "pronounced": 1.0,
                                "word_index": pos if sequence_id else i}
                        if sequence_id:
                            word["sequence_id"] = sent
                        onsets.append(s0 + tw)
                        durs.append(0.25)
                        descs.append(str(word))
                        onsets.append(s0 + tw)
                        durs.append(0.08)
                        descs.append(str({"kind": "phoneme", **base, "phoneme": "t_B",
                                          "word_index": word["word_index"]}))
                n_times = round((first + 2 * WAV_S + GAP_S + 3.0) * sfreq)
                names = (ch_names_for or {}).get((sub, ses, t)) or [f"MEG {c:03d}" for c in range(n_ch)]
                info = mne.create_info(list(names), sfreq, "mag")
                for c, ch in enumerate(info["chs"]):
                    ch["loc"][:3] = [0.01 * (c + 1), 0.02, 0.05]
                data = rng.standard_normal((len(names), n_times)) * 1e-12
                raw = mne.io.RawArray(data, info, verbose="error")
                raw.set_annotations(mne.Annotations(onsets, durs, descs))
                bp = BIDSPath(subject=f"{sub:02d}", session=str(ses), task=str(t), root=root, datatype="meg")
                write_raw_bids(raw, bp, format="FIF", allow_preload=True, overwrite=True, verbose="error")
    return {"words": words, "sfreq": sfreq, "wav_rate": wav_rate}


def meg_path(root: Path, sub: int, ses: int, task: int, suffix: str = "meg.fif") -> Path:
    return Path(root) / f"sub-{sub:02d}" / f"ses-{ses}" / "meg" / f"sub-{sub:02d}_ses-{ses}_task-{task}_{suffix}"
