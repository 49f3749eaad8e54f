"""Linear probes: how much of each factor a frozen representation of a segment carries.

For every factor (speaker, condition, gender, phone_class, phone; see fhvae.eval.labels) and input
a multinomial logistic regression (sklearn, inputs standardized with the training mean/std) is
trained on segments of a training data dir and its accuracy measured on segments of a held-out
data dir of the same speakers (so speaker is a closed set). Inputs, one vector per segment:

    z1      posterior mean of the segment latent, q(z1 | x, z2 = posterior mean of z2)
    z2      posterior mean of the sequence latent of the segment, q(z2 | x)
    fbank   reference: [mean over the segment's frames, its centre frame] of the normalized
            features (2 x feature-dim values)

Chance is the accuracy of always answering the most frequent training label. A disentangled model
has z2 near fbank and z1 near chance for speaker/condition, and the opposite for phones. Test
segments whose label never occurs in training are left out of that factor (counted in the log).
"""
import json
import logging
import os
import warnings
from collections import Counter

import numpy as np
import torch

from fhvae import infer
from fhvae.errors import DataError
from fhvae.eval.labels import SetLabels, centre_frame, sample_segments
from fhvae.io.ark import FeatReader
from fhvae.io.atomic import atomic_write_text
from fhvae.datadir import load_data_dir

log = logging.getLogger(__name__)

INPUTS = ("fbank", "z1", "z2")


def read_segments(feats_scp, segments, seg_len, stats):
    """Normalized windows of ``segments`` [(utt, start)]: (N, seg_len, F) float32; each utterance is
    read once."""
    out = []
    with FeatReader(feats_scp) as reader:
        cur, x = None, None
        for u, s in segments:
            if u != cur:
                cur, x = u, stats.normalize(reader[u])
            if s + seg_len > len(x):
                raise DataError(f"{feats_scp}: utt {u!r} has {len(x)} frames, segment [{s}, {s + seg_len}) "
                                "does not fit (utt2num_frames out of date?)")
            out.append(x[s:s + seg_len])
    return np.stack(out)


def utt2frames(data_dir):
    """{utt: T} from ``utt2num_frames``, else from the feats.scp matrix headers."""
    dd = load_data_dir(data_dir)
    if dd.utt2num_frames is not None:
        return {u: n for u, n in dd.utt2num_frames.items() if u in dd.utt2spk}
    with FeatReader(os.path.join(data_dir, "feats.scp")) as reader:
        return {u: reader.shape(u)[0] for u in dd.utt2spk if u in reader}


def segment_inputs(model, seg_len, stats, data_dir, segments):
    """{input: (N, dim) float32} for ``segments`` of ``data_dir`` (see the module doc)."""
    x = read_segments(os.path.join(data_dir, "feats.scp"), segments, seg_len, stats)
    z = infer.encode(model, x)
    z1, z2 = z["z1_mu"].numpy(), z["z2_mu"].numpy()
    fbank = np.concatenate([x.mean(1), x[:, centre_frame(0, seg_len)]], axis=1)
    return {"fbank": fbank, "z1": z1, "z2": z2}


def linear_probe(x_train, y_train, x_test, y_test, seed=0):
    """Accuracy on (x_test, y_test) of standardized logistic regression fit on (x_train, y_train)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_train, y_train)
    return float(np.mean(clf.predict(x_test) == y_test))


def chance_level(y_train, y_test):
    """Accuracy on y_test of always answering the most frequent label of y_train."""
    top = Counter(y_train.tolist()).most_common(1)[0][0]
    return float(np.mean(y_test == top))


def probe_table(train_inputs, train_labels, test_inputs, test_labels, seed=0):
    """Probe every factor with every input.

    *_inputs: {input: (N, dim)}; *_labels: {factor: object array (N,), None = unlabelled}.
    Returns {factor: {input: accuracy, ..., "chance": acc, "n_train", "n_test", "n_classes"}};
    a factor with fewer than 2 training classes or no usable test segment is skipped (logged).
    """
    results = {}
    for factor, y_tr in train_labels.items():
        if factor not in test_labels:
            log.info("%s: no test labels, skipped", factor)
            continue
        y_te = test_labels[factor]
        m_tr = np.array([y is not None for y in y_tr], dtype=bool)
        classes = set(y_tr[m_tr].tolist())
        m_te = np.array([y is not None and y in classes for y in y_te], dtype=bool)
        unseen = sum(y is not None and y not in classes for y in y_te)
        if unseen:
            log.info("%s: %d test segments have a label never seen in training; left out", factor, unseen)
        if len(classes) < 2 or not m_te.any():
            log.info("%s: skipped (%d training classes, %d usable test segments)", factor, len(classes),
                     int(m_te.sum()))
            continue
        ytr = y_tr[m_tr].astype(str)
        yte = y_te[m_te].astype(str)
        row = {}
        for name in train_inputs:
            row[name] = linear_probe(train_inputs[name][m_tr], ytr, test_inputs[name][m_te], yte, seed)
        row.update(chance=chance_level(ytr, yte), n_train=int(m_tr.sum()), n_test=int(m_te.sum()),
                   n_classes=len(classes))
        log.info("%s: %s", factor, ", ".join(f"{k} {v:.3f}" for k, v in row.items() if isinstance(v, float)))
        results[factor] = row
    return results


def format_table(results, inputs=INPUTS):
    """Markdown table: one row per factor, accuracy (%) of each input, chance, classes, test segments."""
    head = ["factor", *inputs, "chance", "classes", "test segments"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for factor, row in results.items():
        cells = [factor] + [f"{100 * row[k]:.1f}" for k in (*inputs, "chance")]
        cells += [str(row["n_classes"]), str(row["n_test"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_probes(exp_dir, train_dir, test_dir, out_dir, *, phone_classes=None, max_segments=5000, seed=0,
               which="best", device="cpu"):
    """Probe a trained model; writes out_dir/probes.json and probes.md. Returns the results dict.

    Up to ``max_segments`` non-overlapping segments are sampled from each of train_dir and test_dir.
    """
    model, cfg, stats = infer.load_model(exp_dir, which, device)
    L = cfg.data.seg_len
    sets = {}
    for name, d in (("train", train_dir), ("test", test_dir)):
        labels = SetLabels(d, phone_classes)
        segs = sample_segments(utt2frames(d), L, max_segments, seed)
        log.info("%s: %d segments of %d frames", d, len(segs), L)
        sets[name] = (segment_inputs(model, L, stats, d, segs), labels.segment_labels(segs, L))
    results = probe_table(*sets["train"], *sets["test"], seed=seed)
    if not results:
        raise DataError(f"{train_dir}, {test_dir}: no factor could be probed (see the log)")
    table = format_table(results)
    atomic_write_text(os.path.join(out_dir, "probes.json"), json.dumps(results, indent=2) + "\n")
    atomic_write_text(os.path.join(out_dir, "probes.md"),
                      f"Linear-probe accuracy (%) on {test_dir}, trained on {train_dir}; model {exp_dir}\n\n"
                      + table)
    return results
