"""Tiny fake copies of the corpora the recipes read, in their distributed layouts and file formats.

Each ``make_<corpus>(root)`` writes a few speakers and utterances of generated audio (a sine per
speaker plus noise) under ``root`` and returns ``(corpus_dir, expected)``: the directory to give the
recipe and a dict of what its data prep must produce (speakers and utterance counts per set, labels).
Formats written: NIST SPHERE (TIMIT .WAV, 1024-byte header, 16-bit little-endian), headerless
big-endian 16-bit PCM (Aurora-4 .wv1/.wv2), FLAC (LibriSpeech, through sox), RIFF WAV (AMI, VoxCeleb1).
"""
import os
import subprocess

import numpy as np
from scipy.io import wavfile

RATE = 16000


def tone(seconds, freq, seed=0):
    """int16 audio: a sine at ``freq`` Hz plus white noise, amplitude about 0.3 of full scale."""
    t = np.arange(int(seconds * RATE)) / RATE
    noise = np.random.default_rng(seed).normal(0, 0.05, t.size)
    return (np.clip(0.3 * np.sin(2 * np.pi * freq * t) + noise, -1, 1) * 32767).astype(np.int16)


def _write(path, data, mode="w"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode) as f:
        f.write(data)


def write_sphere(path, samples, utt_id="fake"):
    """NIST SPHERE file as on the TIMIT discs: 1024-byte header, 16-bit PCM, little-endian ('01')."""
    fields = [("database_id", "-s5", "TIMIT"), ("database_version", "-s3", "1.0"),
              ("utterance_id", f"-s{len(utt_id)}", utt_id), ("channel_count", "-i", 1),
              ("sample_count", "-i", len(samples)), ("sample_rate", "-i", RATE),
              ("sample_min", "-i", int(samples.min())), ("sample_max", "-i", int(samples.max())),
              ("sample_n_bytes", "-i", 2), ("sample_byte_format", "-s2", "01"), ("sample_sig_bits", "-i", 16)]
    head = "NIST_1A\n   1024\n" + "".join(f"{k} {t} {v}\n" for k, t, v in fields) + "end_head\n"
    _write(path, head.encode("ascii").ljust(1024, b" ") + samples.astype("<i2").tobytes(), "wb")


def write_wav(path, samples):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    wavfile.write(path, RATE, samples)


def write_flac(path, samples):
    """FLAC through sox (raw 16-bit PCM on stdin)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    subprocess.run(["sox", "-t", "raw", "-r", str(RATE), "-e", "signed", "-b", "16", "-c", "1", "-L", "-",
                    path], input=samples.astype("<i2").tobytes(), check=True)


# ----------------------------------------------------------------------------- TIMIT

TIMIT_TRAIN = {"DR1": ["FCJF0", "MDAC0"], "DR2": ["FAEM0"]}
TIMIT_EXTRA_TEST = "MZZZ0"  # a TEST speaker in neither list: Kaldi's split leaves it out


def _timit_lists():
    conf = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "egs", "timit", "v1", "conf")
    read = lambda name: open(os.path.join(conf, name)).read().split()  # noqa: E731
    return read("dev_spk.list"), read("test_spk.list")


def make_timit(root, upper=True):
    """TIMIT/TRAIN|TEST/DR*/<spk>/<utt>.WAV|.PHN|.WRD|.TXT; every dev and core-test speaker with one SI and one
    SX sentence (plus SA1, to be excluded), 3 TRAIN speakers with SI + 2 SX, one unlisted TEST speaker.

    ``upper``: upper-case names as on the LDC disc; else lower case (some copies). corpus_dir is the
    directory holding ``TIMIT/`` (the prep must descend into it)."""
    case = str.upper if upper else str.lower
    dev, test = _timit_lists()
    layout = {"TRAIN": {dr: [(s, ["SA1", "SI1027", "SX127", "SX217"]) for s in spks]
                        for dr, spks in TIMIT_TRAIN.items()},
              "TEST": {f"DR{1 + i % 8}": [] for i in range(8)}}
    for i, spk in enumerate(dev + test + [TIMIT_EXTRA_TEST.lower()]):
        layout["TEST"][f"DR{1 + i % 8}"].append((spk.upper(), ["SA1", f"SI{1000 + i}", f"SX{100 + i}"]))
    phones = ["h#", "sh", "iy", "hv", "ae", "dcl", "d", "q", "y", "axr", "pau", "h#"]
    corpus = os.path.join(root, "ldc93s1")
    for part, drs in layout.items():
        for dr, spks in drs.items():
            for k, (spk, utts) in enumerate(spks):
                for j, utt in enumerate(utts):
                    base = os.path.join(corpus, case("timit"), case(part), case(dr), case(spk), case(utt))
                    audio = tone(0.3 + 0.02 * j, 150 + 37 * k + 5 * len(spk), seed=k * 10 + j)
                    write_sphere(base + case(".wav"), audio, f"{spk.lower()}_{utt.lower()}")
                    n = len(audio)
                    cuts = np.linspace(0, n, len(phones) + 1).astype(int)
                    _write(base + case(".phn"),
                           "".join(f"{cuts[i]} {cuts[i + 1]} {p}\n" for i, p in enumerate(phones)))
                    _write(base + case(".wrd"), f"{cuts[1]} {cuts[4]} she\n{cuts[4]} {cuts[-2]} had\n")
                    _write(base + case(".txt"), f"0 {n} She had your dark suit.\n")
    expected = {
        "train": ({s.lower() for spks in TIMIT_TRAIN.values() for s in spks}, 3 * 3),
        "dev": (set(dev), 2 * len(dev)),
        "test": (set(test), 2 * len(test)),
        "phones_per_utt": len(phones),
    }
    return corpus, expected


# ----------------------------------------------------------------------------- Aurora-4

AURORA_NOISES = ("clean", "car", "babble", "restaurant", "street", "airport", "train")


def make_aurora4(root):
    """Aurora-4 16 kHz: lists/devtest{01..14}_0330_16k.list and lists/test{01..14}_0330_16k.list naming
    headerless big-endian 16-bit files (.wv1 for conditions 01-07, .wv2 for 08-14).

    Dev set (the FHVAE training data): WSJ speakers 330 and 341, 2 sentences each, in all 14
    conditions; test (eval92): speakers 440 and 441. Condition 14 of the dev lists is laid out the way
    Kaldi's aurora4_data_prep.sh rebuilds dev paths (top dir 'a_b_c' -> 'ab_c/a_b_c/...'); the others
    are plain paths relative to the corpus root."""
    corpus = os.path.join(root, "aurora4")
    sets = {"devtest": {"330": ["330c0201", "330c0202"], "341": ["341c0201", "341o0302"]},
            "test": {"440": ["440c0201", "440c0202"], "441": ["441c0201", "441c020a"]}}
    for kind, spks in sets.items():
        for c in range(1, 15):
            ext = "wv1" if c <= 7 else "wv2"
            lines = [";; fake Aurora-4 list\n"]
            for k, (spk, utts) in enumerate(sorted(spks.items())):
                for j, utt in enumerate(utts):
                    top = f"{kind}_{c:02d}_16k"
                    line = f"{top}/{spk}/{utt}.{ext}"
                    path = (os.path.join(corpus, f"{kind}{c:02d}_16k", line) if kind == "devtest" and c == 14
                            else os.path.join(corpus, line))
                    audio = tone(0.3, 200 + 60 * k, seed=c * 100 + k * 10 + j)
                    _write(path, audio.astype(">i2").tobytes(), "wb")
                    lines.append(line + "\n")
            _write(os.path.join(corpus, "lists", f"{kind}{c:02d}_0330_16k.list"), "".join(lines))
    n = {kind: 14 * sum(len(u) for u in spks.values()) for kind, spks in sets.items()}
    expected = {"trainable": (set(sets["devtest"]), n["devtest"]), "test": (set(sets["test"]), n["test"])}
    return corpus, expected


# ----------------------------------------------------------------------------- AMI

NITE = "http://nite.sourceforge.net/"
AMI_MEETINGS = {  # meeting -> [(agent, channel, global speaker name)]; one meeting per partition
    "ES2002a": [("A", 0, "FEE005"), ("B", 1, "MEE006")],   # train
    "ES2011a": [("A", 0, "FEE041"), ("B", 1, "MEE042")],   # dev (Kaldi split_dev)
    "ES2004a": [("A", 0, "MEE014"), ("B", 1, "FEE013")],   # eval (Kaldi split_eval)
}


def make_ami(root):
    """AMI as downloaded: amicorpus/<meeting>/audio/<meeting>.Headset-<ch>.wav and .Array1-01.wav (3 s),
    annotations/ (ami_public_manual) with corpusResources/meetings.xml, segments/*.segments.xml,
    words/*.words.xml. Per speaker: 3 segments with words (IHM and SDM each give one utterance), one
    without words and one shorter than 0.1 s (both dropped)."""
    corpus = os.path.join(root, "ami")
    meetings = ['<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n',
                f'<nite:root nite:id="meetings" xmlns:nite="{NITE}">\n']
    for m, (meeting, spks) in enumerate(AMI_MEETINGS.items()):
        meetings.append(f'  <meeting nite:id="{meeting}.meeting" observation="{meeting}" type="scenario">\n')
        audio = os.path.join(corpus, "amicorpus", meeting, "audio")
        mix = np.zeros(3 * RATE, dtype=np.float64)
        for k, (agent, ch, name) in enumerate(spks):
            meetings.append(f'    <speaker nite:id="{meeting}.speaker.{agent}" global_name="{name}" role="PM" '
                            f'channel="{ch}" nxt_agent="{agent}"/>\n')
            x = tone(3.0, 180 + 90 * k, seed=m * 10 + k)
            write_wav(os.path.join(audio, f"{meeting}.Headset-{ch}.wav"), x)
            mix += x
            words, segs = [], []
            w = 0
            for s, (start, end) in enumerate([(0.1, 0.6), (1.0, 1.45), (1.8, 2.6), (2.65, 2.7), (2.75, 2.9)]):
                t0 = start + 0.5 * k / 10
                ids = []
                if s != 4:  # segment 4 has no words (a vocal sound only)
                    for word in ("okay", "so", "."):
                        punc = ' punc="true"' if word == "." else ""
                        words.append(f'  <w nite:id="{meeting}.{agent}.words{w}" starttime="{t0:.2f}" '
                                     f'endtime="{t0:.2f}"{punc}>{word}</w>\n')
                        ids.append(w)
                        w += 1
                    w0, w1 = f"{meeting}.{agent}.words{ids[0]}", f"{meeting}.{agent}.words{ids[-1]}"
                    href = f"{meeting}.{agent}.words.xml#id({w0})..id({w1})"
                else:
                    words.append(f'  <vocalsound nite:id="{meeting}.{agent}.words{w}" type="laugh"/>\n')
                    href = f"{meeting}.{agent}.words.xml#id({meeting}.{agent}.words{w})"
                    w += 1
                segs.append(f'  <segment nite:id="{meeting}.sync.{s}" transcriber_start="{t0:.2f}" '
                            f'transcriber_end="{end + 0.5 * k / 10:.2f}">\n'
                            f'    <nite:child href="{href}"/>\n  </segment>\n')
            ann = os.path.join(corpus, "annotations")
            _write(os.path.join(ann, "words", f"{meeting}.{agent}.words.xml"),
                   f'<?xml version="1.0"?>\n<nite:root nite:id="{meeting}.{agent}.words" xmlns:nite="{NITE}">\n'
                   + "".join(words) + "</nite:root>\n")
            _write(os.path.join(ann, "segments", f"{meeting}.{agent}.segments.xml"),
                   f'<?xml version="1.0"?>\n<nite:root nite:id="{meeting}.{agent}.segs" xmlns:nite="{NITE}">\n'
                   + "".join(segs) + "</nite:root>\n")
        write_wav(os.path.join(audio, f"{meeting}.Array1-01.wav"), (mix / 2).astype(np.int16))
        meetings.append("  </meeting>\n")
    meetings.append("</nite:root>\n")
    _write(os.path.join(corpus, "annotations", "corpusResources", "meetings.xml"), "".join(meetings))
    spk = lambda meeting: {name for _, _, name in AMI_MEETINGS[meeting]}  # noqa: E731
    # 3 kept segments per speaker x 2 speakers x 2 mics
    expected = {"train": (spk("ES2002a"), 12), "dev": (spk("ES2011a"), 12), "test": (spk("ES2004a"), 12)}
    return corpus, expected


# ----------------------------------------------------------------------------- LibriSpeech

LIBRI = {  # subset -> {speaker: (sex, {chapter: n_utts})}
    "train-clean-100": {"103": ("F", {"1240": 2, "1241": 1}), "1034": ("M", {"121119": 2})},
    "train-clean-360": {"14": ("F", {"208": 2})},
    "dev-clean": {"84": ("F", {"121123": 2}), "174": ("M", {"50561": 2})},
    "test-clean": {"1089": ("M", {"134686": 2}), "121": ("F", {"121726": 2})},
}


def make_librispeech(root):
    """LibriSpeech/<subset>/<spk>/<chapter>/<spk>-<chapter>-<nnnn>.flac + <spk>-<chapter>.trans.txt, and
    LibriSpeech/SPEAKERS.TXT; corpus_dir is the directory holding LibriSpeech/."""
    corpus = os.path.join(root, "openslr12")
    base = os.path.join(corpus, "LibriSpeech")
    info = ["; fake SPEAKERS.TXT\n", ";ID  |SEX| SUBSET           |MINUTES| NAME\n"]
    for subset, spks in LIBRI.items():
        for k, (spk, (sex, chapters)) in enumerate(spks.items()):
            info.append(f"{spk:<5}| {sex} | {subset:<16} | 25.03 | Reader {spk}\n")
            for chapter, n in chapters.items():
                d = os.path.join(base, subset, spk, chapter)
                trans = []
                for i in range(n):
                    utt = f"{spk}-{chapter}-{i:04d}"
                    write_flac(os.path.join(d, utt + ".flac"), tone(0.3, 170 + 50 * k, seed=int(spk) + i))
                    trans.append(f"{utt} HELLO WORLD NUMBER {i}\n")
                _write(os.path.join(d, f"{spk}-{chapter}.trans.txt"), "".join(trans))
    _write(os.path.join(base, "SPEAKERS.TXT"), "".join(info))
    count = lambda subset: sum(n for _, ch in LIBRI[subset].values() for n in ch.values())  # noqa: E731
    expected = {name: (set(LIBRI[subset]), count(subset))
                for name, subset in (("train", "train-clean-100"), ("dev", "dev-clean"), ("test", "test-clean"))}
    expected["gender"] = {spk: sex.lower() for spks in LIBRI.values() for spk, (sex, _) in spks.items()}
    return corpus, expected


# ----------------------------------------------------------------------------- VoxCeleb1

VOX = {  # speaker -> (gender, set, {video: [segment numbers]})
    "id10001": ("m", "dev", {"1zcIwhmdeo4": [1, 2], "7gWzIy6yIIk": [1]}),
    "id10002": ("f", "dev", {"C7k7C-PDvAA": [1, 3]}),
    "id10003": ("m", "dev", {"_JpHD6VnJ3I": [1], "5ablueV_1tw": [2]}),
    "id10270": ("m", "test", {"x6uYqmx31kE": [1], "8jEAjG6SegY": [8]}),
    "id10271": ("f", "test", {"1gtz-CUIygI": [1, 2]}),
    "id10272": ("m", "test", {"-Zk0ZdvNj9Y": [4]}),
}
VOX_TRIALS = [  # official veri_test2.txt format: label enroll test (paths under wav/)
    (1, "id10270/x6uYqmx31kE/00001.wav", "id10270/8jEAjG6SegY/00008.wav"),
    (0, "id10270/x6uYqmx31kE/00001.wav", "id10271/1gtz-CUIygI/00001.wav"),
    (1, "id10271/1gtz-CUIygI/00001.wav", "id10271/1gtz-CUIygI/00002.wav"),
    (0, "id10272/-Zk0ZdvNj9Y/00004.wav", "id10270/8jEAjG6SegY/00008.wav"),
]


def make_voxceleb1(root, split_dirs=False):
    """VoxCeleb1: wav/<id>/<video>/<nnnnn>.wav (dev and test unzipped into one wav/), vox1_meta.csv
    (tab-separated, with header) and veri_test2.txt. ``split_dirs``: dev/wav/ and test/wav/ instead."""
    corpus = os.path.join(root, "voxceleb1")
    meta = ["VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n"]
    for k, (spk, (gender, part, videos)) in enumerate(VOX.items()):
        meta.append(f"{spk}\tCeleb_{k}\t{gender}\tIreland\t{part}\n")
        wav = os.path.join(corpus, part, "wav") if split_dirs else os.path.join(corpus, "wav")
        for v, (video, segs) in enumerate(videos.items()):
            for s in segs:
                write_wav(os.path.join(wav, spk, video, f"{s:05d}.wav"), tone(0.3, 160 + 40 * k, seed=k * 10 + s))
    _write(os.path.join(corpus, "vox1_meta.csv"), "".join(meta))
    _write(os.path.join(corpus, "veri_test2.txt"), "".join(f"{lab} {a} {b}\n" for lab, a, b in VOX_TRIALS))
    utts = lambda part: sum(len(s) for _, p, v in VOX.values() if p == part for s in v.values())  # noqa: E731
    expected = {"trainable": ({s for s, v in VOX.items() if v[1] == "dev"}, utts("dev")),
                "test": ({s for s, v in VOX.items() if v[1] == "test"}, utts("test")),
                "gender": {s: v[0] for s, v in VOX.items()}}
    return corpus, expected
