"""Speaker-verification trial lists: sample utterances per speaker, make and write trials."""
import logging
import random

from fhvae.errors import DataError
from fhvae.io.atomic import atomic_write_text
from fhvae.io.tables import utt2spk_to_spk2utt

log = logging.getLogger(__name__)


def _sample_pairs(rng, n, total, draw, enumerate_all):
    """``n`` distinct pairs out of ``total``: by rejection with ``draw()`` when n is a small share,
    else by sampling the full enumeration."""
    if n > total // 2:
        return set(rng.sample(sorted(enumerate_all()), n))
    out = set()
    while len(out) < n:
        out.add(draw())
    return out


def sample_utts_per_speaker(utt2spk, per_spk, seed=0):
    """{utt: spk} restricted to at most ``per_spk`` utterances of each speaker (seeded random
    choice; speakers with fewer keep all), e.g. to bound the size of a trials list."""
    rng = random.Random(seed)
    return {u: s for s, us in utt2spk_to_spk2utt(utt2spk).items()
            for u in (us if len(us) <= per_spk else rng.sample(us, per_spk))}


def make_trials(utt2spk, *, n_target=None, n_nontarget=None, seed=0, exclude_same_utt=True):
    """Speaker-verification trials between utterances: ``[(enroll, test, 'target'|'nontarget')]``.

    Each unordered pair appears once, as (first, second) in C order. n_target / n_nontarget: how
    many to draw uniformly without replacement (None: all of them). exclude_same_utt=False adds
    (u, u) target pairs. Output is sorted and depends only on ``seed``.
    """
    spk2utt = utt2spk_to_spk2utt(utt2spk)
    if len(spk2utt) < 2:
        raise DataError(f"make_trials: need at least 2 speakers, got {len(spk2utt)}")
    spks = list(spk2utt)
    self_pairs = not exclude_same_utt
    n_tgt = [len(u) * (len(u) - 1) // 2 + (len(u) if self_pairs else 0) for u in spk2utt.values()]
    order = [u for s in spks for u in spk2utt[s]]  # utts grouped by speaker
    first = {}  # speaker -> index of its first utt in order
    for i, u in enumerate(order):
        first.setdefault(utt2spk[u], i)
    n_utt = len(order)
    n_non = sum(len(u) * (n_utt - len(u)) for u in spk2utt.values()) // 2
    rng = random.Random(seed)

    def all_targets():
        for s in spks:
            us = spk2utt[s]
            for i in range(len(us)):
                for j in range(i if self_pairs else i + 1, len(us)):
                    yield us[i], us[j]

    def all_nontargets():
        for a in range(len(spks)):
            for b in range(a + 1, len(spks)):
                for u in spk2utt[spks[a]]:
                    for v in spk2utt[spks[b]]:
                        yield (u, v) if u < v else (v, u)

    def draw_target():
        s = rng.choices(spks, cum_weights=cum_tgt)[0]
        us = spk2utt[s]
        while True:
            i, j = rng.randrange(len(us)), rng.randrange(len(us))
            if i < j or (i == j and self_pairs):
                return us[i], us[j]

    def draw_nontarget():
        u = order[rng.choices(range(n_utt), cum_weights=cum_non)[0]]
        us = spk2utt[utt2spk[u]]
        k = rng.randrange(n_utt - len(us))  # index among the other speakers' utts
        v = order[k if k < first[utt2spk[u]] else k + len(us)]
        return (u, v) if u < v else (v, u)

    cum_tgt, acc = [], 0
    for c in n_tgt:
        acc += c
        cum_tgt.append(acc)
    cum_non, acc = [], 0
    for u in order:
        acc += n_utt - len(spk2utt[utt2spk[u]])
        cum_non.append(acc)

    total_tgt = sum(n_tgt)
    trials = []
    for n, total, draw, enum, label in ((n_target, total_tgt, draw_target, all_targets, "target"),
                                        (n_nontarget, n_non, draw_nontarget, all_nontargets, "nontarget")):
        if n is None:
            pairs = list(enum())
        else:
            if n < 0 or n > total:
                raise DataError(f"make_trials: asked for {n} {label} trials but only {total} exist")
            pairs = _sample_pairs(rng, n, total, draw, enum)
        trials.extend((a, b, label) for a, b in pairs)
    if n_target is None and total_tgt == 0:
        raise DataError("make_trials: no target trials possible (every speaker has a single utterance)")
    trials.sort()
    return trials


def write_trials(path, trials):
    """Write Kaldi trials ``enroll test target|nontarget``, atomically."""
    atomic_write_text(path, "".join(f"{e} {t} {lab}\n" for e, t, lab in trials))
    n_tgt = sum(t[2] == "target" for t in trials)
    log.info("%s: %d target, %d nontarget trials", path, n_tgt, len(trials) - n_tgt)
