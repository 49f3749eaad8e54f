#!/usr/bin/env python3
"""AMI meeting corpus (as distributed) -> Kaldi data dirs ``train``, ``dev``, ``test``, IHM and SDM mixed.

Expects the audio as downloaded from groups.inf.ed.ac.uk/ami (``<dir>/<meeting>/audio/`` or
``<dir>/amicorpus/<meeting>/audio/``, files ``<meeting>.Headset-<n>.wav`` and ``<meeting>.Array1-01.wav``)
and the manual annotations ami_public_manual_1.6.x unzipped into ``<dir>/annotations`` (or
``--annotations``): ``corpusResources/meetings.xml`` (speaker of each agent and their headset channel),
``segments/<meeting>.<agent>.segments.xml`` (``transcriber_start``/``transcriber_end``) and
``words/<meeting>.<agent>.words.xml``.

Utterances are the corpus's manual segments that contain words and last at least ``--min-dur``
seconds, each cut from the speaker's individual headset (IHM, close-talk) and from the first
microphone of array 1 (SDM, distant): the paper's mixed IHM + SDM training set. Meetings are split as
in Kaldi's egs/ami (conf/dev_meetings.list, conf/test_meetings.list = Kaldi's split_dev/split_eval;
every other annotated meeting is train). Ids: speaker = AMI global name (``FEE005``), recording
``ES2002a-H01`` / ``ES2002a-SDM``, utterance ``FEE005-ES2002a-ihm-0000558-0000614`` (times in 10 ms).
Files: wav.scp (recordings), segments, utt2spk, spk2utt, text, utt2mic and utt2cond (``ihm``|``sdm``),
spk2gender (first letter of the global name); dev and test get trials over at most
``--trial-segs-per-spk`` segments per speaker, each taken from one microphone chosen at random (no
pair is the same speech on two microphones).
"""
import argparse
import logging
import os
import random
import re
import shutil
import sys
import xml.etree.ElementTree as ET

from fhvae.bin import run_cli
from fhvae.datadir import make_trials, validate_data_dir, write_trials
from fhvae.errors import DataError
from fhvae.io.tables import read_id_list, utt2spk_to_spk2utt, write_kv

log = logging.getLogger("prepare_ami")

NITE_ID = "{http://nite.sourceforge.net/}id"
MICS = ("ihm", "sdm")
_HREF_ID = re.compile(r"id\(([^)]+)\)")


def _parse(path):
    try:
        return ET.parse(path).getroot()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    except ET.ParseError as e:
        raise DataError(f"{path}: not valid XML: {e}") from None


def read_meetings(path):
    """corpusResources/meetings.xml -> {(meeting, agent): (global speaker name, headset channel)}."""
    agents = {}
    for meeting in _parse(path).iter("meeting"):
        obs = meeting.get("observation")
        for spk in meeting.iter("speaker"):
            try:
                agents[(obs, spk.get("nxt_agent"))] = (spk.attrib["global_name"], int(spk.attrib["channel"]))
            except (KeyError, ValueError):
                raise DataError(f"{path}: meeting {obs}: speaker element without global_name/channel: "
                                f"{spk.attrib}") from None
    if not agents:
        raise DataError(f"{path}: no <meeting observation=...><speaker nxt_agent=... global_name=... channel=...>")
    return agents


def read_words(path):
    """words/<meeting>.<agent>.words.xml -> (ids in document order, {id: word or None}); None for
    punctuation and non-word elements (vocal sounds, gaps, ...)."""
    order, words = [], {}
    for el in _parse(path):
        wid = el.get(NITE_ID)
        if wid is None:
            continue
        order.append(wid)
        words[wid] = el.text.strip() if el.tag == "w" and el.get("punc") != "true" and el.text else None
    return order, words


def segment_words(href, order, pos, words):
    """Words a segment's ``words.xml#id(a)..id(b)`` child points at (document order, inclusive);
    None if the ids are not in the words file."""
    ids = _HREF_ID.findall(href.split("#", 1)[-1])
    if not ids or any(i not in pos for i in ids):
        return None
    lo, hi = pos[ids[0]], pos[ids[-1]]
    return [words[w] for w in order[lo:hi + 1] if words[w]]


def read_segments(seg_path, words_path, min_dur):
    """[(start_s, end_s, text)] of one speaker's manual segments with words, at least ``min_dur`` long.

    Returns (kept, dropped_no_words, dropped_short); segments whose words cannot be resolved count
    as without words (the first is logged)."""
    order, words = read_words(words_path) if os.path.isfile(words_path) else ([], {})
    pos = {w: i for i, w in enumerate(order)}
    kept, no_words, short, unresolved = [], 0, 0, []
    for seg in _parse(seg_path).iter("segment"):
        where = f"{seg_path}: segment {seg.get(NITE_ID)}"
        try:
            start, end = float(seg.attrib["transcriber_start"]), float(seg.attrib["transcriber_end"])
        except (KeyError, ValueError):
            raise DataError(f"{where}: needs numeric transcriber_start and transcriber_end") from None
        text = []
        for child in seg:
            if child.get("href"):
                got = segment_words(child.get("href"), order, pos, words)
                if got is None:
                    unresolved.append(f"{where}: href {child.get('href')!r} not in {words_path}")
                text += got or []
        if not text:
            no_words += 1
        elif end - start < min_dur:
            short += 1
        else:
            kept.append((start, end, " ".join(text)))
    if unresolved:
        log.warning("%d segment word reference(s) could not be resolved, e.g. %s", len(unresolved), unresolved[0])
    return kept, no_words, short


def find_audio(corpus_dir, meeting):
    """The meeting's audio dir, or None."""
    for d in (os.path.join(corpus_dir, meeting, "audio"), os.path.join(corpus_dir, "amicorpus", meeting, "audio")):
        if os.path.isdir(d):
            return d
    return None


def _times(t):
    return f"{round(t, 3):.3f}".rstrip("0").rstrip(".")


def trial_utts(utt2spk, utt2seg, per_spk, seed):
    """{utt: spk}: at most ``per_spk`` segments of each speaker (seeded), each from one random mic."""
    rng = random.Random(seed)
    seg2utts = {}
    for u in sorted(utt2spk):
        seg2utts.setdefault((utt2spk[u], utt2seg[u]), []).append(u)
    by_spk = {}
    for (spk, seg), us in sorted(seg2utts.items()):
        by_spk.setdefault(spk, []).append(us)
    keep = {}
    for spk, segs in by_spk.items():
        for us in (segs if len(segs) <= per_spk else rng.sample(segs, per_spk)):
            keep[rng.choice(us)] = spk
    return keep


def write_set(out_dir, utts, recos, *, trials_per_spk=None, seed=1):
    """One data dir. utts: {utt: (spk, reco, start, end, text, mic, segment key)}; recos: {reco: path}."""
    utt2spk = {u: v[0] for u, v in utts.items()}
    shutil.rmtree(out_dir, ignore_errors=True)  # a rerun replaces the set (and its stale features)
    os.makedirs(out_dir)
    write_kv(os.path.join(out_dir, "utt2spk"), utt2spk)
    write_kv(os.path.join(out_dir, "spk2utt"), utt2spk_to_spk2utt(utt2spk))
    used = {v[1] for v in utts.values()}
    write_kv(os.path.join(out_dir, "wav.scp"), {r: p for r, p in recos.items() if r in used})
    write_kv(os.path.join(out_dir, "segments"), {u: f"{v[1]} {_times(v[2])} {_times(v[3])}" for u, v in utts.items()})
    write_kv(os.path.join(out_dir, "text"), {u: v[4] for u, v in utts.items()})
    write_kv(os.path.join(out_dir, "utt2mic"), {u: v[5] for u, v in utts.items()})
    write_kv(os.path.join(out_dir, "utt2cond"), {u: v[5] for u, v in utts.items()})
    spks = set(utt2spk.values())
    if all(s[:1] in ("F", "M") for s in spks):
        write_kv(os.path.join(out_dir, "spk2gender"), {s: s[0].lower() for s in spks})
    else:
        log.warning("%s: no spk2gender (speaker names not starting with F/M, e.g. %s)", out_dir,
                    sorted(s for s in spks if s[:1] not in ("F", "M"))[0])
    if trials_per_spk:
        chosen = trial_utts(utt2spk, {u: v[6] for u, v in utts.items()}, trials_per_spk, seed)
        write_trials(os.path.join(out_dir, "trials"), make_trials(chosen))
    validate_data_dir(out_dir, need_wav=True)


def prepare(corpus_dir, data_dir, dev_list, test_list, annotations=None, mics=MICS, min_dur=0.1,
            trials_per_spk=20, seed=1):
    """Write ``data_dir/{train,dev,test}``; returns {set: (speakers, utterances)}."""
    if not os.path.isdir(corpus_dir):
        raise DataError(f"{corpus_dir}: AMI directory not found")
    bad = [m for m in mics if m not in MICS]
    if bad or not mics:
        raise DataError(f"unknown microphone setting {bad[0] if bad else ''!r} (use {' '.join(MICS)})")
    ann = annotations or os.path.join(corpus_dir, "annotations")
    for sub in ("corpusResources/meetings.xml", "segments", "words"):
        if not os.path.exists(os.path.join(ann, sub)):
            raise DataError(f"{os.path.join(ann, sub)}: not found: unzip the AMI manual annotations "
                            f"(ami_public_manual_1.6.2.zip) into {ann} or pass --annotations")
    agents = read_meetings(os.path.join(ann, "corpusResources", "meetings.xml"))
    split = {m: "dev" for m in read_id_list(dev_list)}
    split.update({m: "test" for m in read_id_list(test_list)})
    sets = {"train": {}, "dev": {}, "test": {}}
    recos, missing_audio, dropped = {}, {}, [0, 0, 0]
    seg_dir = os.path.join(ann, "segments")
    for name in sorted(os.listdir(seg_dir)):
        parts = name.split(".")
        if len(parts) != 4 or parts[2:] != ["segments", "xml"]:
            continue
        meeting, agent = parts[0], parts[1]
        if (meeting, agent) not in agents:
            log.warning("%s: no speaker for agent %s of %s in meetings.xml; skipped", name, agent, meeting)
            continue
        spk, channel = agents[(meeting, agent)]
        segs, no_words, short = read_segments(os.path.join(seg_dir, name),
                                              os.path.join(ann, "words", f"{meeting}.{agent}.words.xml"), min_dur)
        dropped[0] += no_words
        dropped[1] += short
        audio = find_audio(corpus_dir, meeting)
        target = sets[split.get(meeting, "train")]
        for mic in mics:
            reco = f"{meeting}-H{channel:02d}" if mic == "ihm" else f"{meeting}-SDM"
            fname = f"{meeting}.Headset-{channel}.wav" if mic == "ihm" else f"{meeting}.Array1-01.wav"
            path = os.path.join(audio, fname) if audio else None
            if path is None or not os.path.isfile(path):
                missing_audio.setdefault(mic, []).append(path or os.path.join(corpus_dir, meeting, "audio", fname))
                continue
            recos[reco] = path
            for start, end, text in segs:
                utt = f"{spk}-{meeting}-{mic}-{round(100 * start):07d}-{round(100 * end):07d}"
                if utt in target:
                    dropped[2] += 1
                    continue
                target[utt] = (spk, reco, start, end, text, mic, f"{meeting}-{start}-{end}")
    log.info("%s: dropped %d segments without words, %d shorter than %g s, %d duplicates",
             seg_dir, dropped[0], dropped[1], min_dur, dropped[2])
    for mic, paths in missing_audio.items():
        log.warning("%s: %d %s recording(s) not found, their segments are left out (e.g. %s)",
                    corpus_dir, len(set(paths)), mic, paths[0])
    summary = {}
    for name, utts in sets.items():
        if not utts:
            raise DataError(f"{corpus_dir}: no {name} utterance: no audio found for the annotated {name} meetings "
                            f"(expected <dir>/<meeting>/audio/<meeting>.Headset-<n>.wav, .Array1-01.wav)")
        write_set(os.path.join(data_dir, name), utts, recos,
                  trials_per_spk=None if name == "train" else trials_per_spk, seed=seed)
        summary[name] = (len({v[0] for v in utts.values()}), len(utts))
        log.info("%s: %d speakers, %d utterances", os.path.join(data_dir, name), *summary[name])
    return summary


def _main(argv):
    p = argparse.ArgumentParser(prog="prepare_ami.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--annotations", help="ami_public_manual dir (default <corpus-dir>/annotations)")
    p.add_argument("--mics", default="ihm sdm", help="microphones to mix: 'ihm sdm' (default), 'ihm' or 'sdm'")
    p.add_argument("--min-dur", type=float, default=0.1, help="shortest segment kept, seconds (default 0.1)")
    p.add_argument("--dev-meetings", required=True, help="list of dev meetings (conf/dev_meetings.list)")
    p.add_argument("--test-meetings", required=True, help="list of test meetings (conf/test_meetings.list)")
    p.add_argument("--trial-segs-per-spk", type=int, default=20, help="segments per speaker in trials (default 20)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("corpus_dir", help="AMI dir with <meeting>/audio/ (or amicorpus/<meeting>/audio/)")
    p.add_argument("data_dir", help="output: <data-dir>/{train,dev,test}")
    a = p.parse_args(argv)
    prepare(a.corpus_dir, a.data_dir, a.dev_meetings, a.test_meetings, a.annotations, tuple(a.mics.split()),
            a.min_dur, a.trial_segs_per_spk, a.seed)
    return 0


def main(argv=None):
    run_cli("prepare_ami.py", _main, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
