"""The report's synthetic-data quality: per method and class, in the feature space of ``config.quality.encoder``,
the Fréchet distance to real images, diversity against the real images', zero-shot fidelity, CLIP score (with a
text tower) and what the filter kept (:mod:`bobjax.quality`); then whether these rank the methods as accuracy does.

Each method's numbers are the mean over its seeds (the chosen point's synthetic set in a sweep), each seed's set
measured against the same real reference: ``config.quality.reference``'s split (``test`` by default: more images per
class than the few-shot train split, and never used to choose anything). Metrics describe every generated image; the
filter's columns say how many of them the classifier trained on.
"""

from __future__ import annotations

import numpy as np

from bobjax import run_folder
from bobjax.data import make_splits
from bobjax.data.tfds_writer import is_finished, read_dataset
from bobjax.errors import ConfigError
from bobjax.filter import keep_list
from bobjax.quality import encoders, measures
from bobjax.report.classes import PerClass
from bobjax.report.render import Section, pct
from bobjax.report.results import Results

REFERENCES = ("test", "train")
# Per measure: (results.json key, table title, whether lower is better).
RANKED = (("fd", "FD", True), ("diversity", "diversity", False), ("fidelity", "fidelity", False),
          ("clip_score", "CLIP score", False))


def synthetic_workdirs(results: Results) -> dict[str, list]:
    """``{method: [run folders (one per seed) with a finished synthetic set]}``; methods without one are left out."""
    out = {m.method: [d for d in m.workdirs if is_finished(run_folder.stage_dir(d, "generate"))] for m in results.methods}
    return {method: folders for method, folders in out.items() if folders}


def _reference_source(config, splits):
    reference = config.quality.reference
    if reference not in REFERENCES:
        raise ConfigError(f"config.quality.reference={reference!r}; expected one of {REFERENCES}")
    source = splits.test if reference == "test" else splits.train
    if source is None or not len(source):
        raise ConfigError(f"config.quality.reference={reference!r}: dataset {splits.name!r} has no such images")
    return source


def _one_set(folder, encoder, reference) -> dict:
    features, fields = encoder.encode(read_dataset(run_folder.stage_dir(folder, "generate")))
    labels = np.array([int(f["label"]) for f in fields], np.int64)
    cosines = None
    if encoder.text_features is not None:
        prompts = [f["prompt"].decode() if isinstance(f["prompt"], bytes) else str(f["prompt"]) for f in fields]
        cosines = np.sum(measures.unit(features) * measures.unit(encoder.text_features(prompts)), axis=1)
    return measures.measure(features, labels, reference, encoder.class_logits(features), cosines)


def _kept(folder, config) -> dict | None:
    """The keep list of the run in ``folder`` (its ``config``), None if it filters nothing."""
    if config.filter.rule == "none" or not keep_list.path(folder).exists():
        return None
    return keep_list.read(folder)


def measure(config, results: Results, oracle=None) -> dict | None:
    """``{"encoder", "reference", "real_diversity", "real_per_class", "methods": {method: {...}}}``, or None when
    ``config.quality.metrics`` is off, no method has a synthetic set, or the toy world's oracle was not trained
    (``config.report.oracle_steps=0``)."""
    workdirs = synthetic_workdirs(results)
    if not config.quality.metrics or not workdirs:
        return None
    if encoders.encoder_name(config) == encoders.ORACLE and oracle is None:
        return None
    run = results.runs[0]  # The reference images are the same for every seed (test), or the first seed's (train).
    splits = make_splits(run.config.data, run.seed)
    source = _reference_source(config, splits)
    encoder = encoders.make_encoder(config, results.class_names, splits.descriptor, oracle=oracle)
    features, _ = encoder.encode(source)
    reference = measures.Reference(features, source.labels(), len(results.class_names))
    methods = {}
    configs = {r.workdir: r.config for r in results.runs}  # In a sweep, each chosen point's own filter.
    for method, folders in workdirs.items():
        sets = [_one_set(folder, encoder, reference) for folder in folders]
        per_class = {key: [measures.mean_of(column) for column in zip(*(s[key] for s in sets))]
                     for key in ("fd", "diversity", "fidelity", "clip_score", "shrinkage")}
        one = {key: measures.mean_of(values) for key, values in per_class.items()}
        one.update({f"{key}_per_class": dict(zip(results.class_names, values)) for key, values in per_class.items()
                    if key != "shrinkage"})
        one["images_per_seed"] = int(np.mean([sum(s["count"]) for s in sets]))
        filtered = [k for k in (_kept(folder, configs[folder]) for folder in folders) if k is not None]
        one["filter"] = None if not filtered else {"rule": filtered[0]["rule"],
                                                   "kept": float(np.mean([k["kept"] for k in filtered])),
                                                   "dropped": float(np.mean([k["dropped"] for k in filtered]))}
        methods[method] = one
    counts = reference.counts
    shrunk = [n for n, g in zip(counts, reference.gaussians) if g is not None and g.shrinkage > 0]
    return {"encoder": encoder.name, "reference": config.quality.reference,
            "reference_images_per_class": [min(counts), max(counts)],
            "reference_shrunk_classes": len(shrunk),
            "real_diversity": measures.mean_of(reference.diversity),
            "real_per_class": dict(zip(results.class_names, reference.diversity)), "methods": methods}


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def ranking_note(quality: dict, results: Results) -> str:
    """Whether each measure orders the synthetic methods as their test top-1 does, and where not."""
    top1 = {m.method: m.top1_mean for m in results.methods if m.method in quality["methods"]}
    if len(top1) < 2:
        return "One synthetic method: nothing to rank."
    by_accuracy = sorted(top1, key=lambda m: -top1[m])
    sentences = [f"Test top-1 ranks {' > '.join(by_accuracy)}."]
    for key, title, lower_better in RANKED:
        values = {m: quality["methods"][m][key] for m in top1}
        if any(v is None for v in values.values()):
            continue
        order = sorted(values, key=lambda m: values[m] if lower_better else -values[m])
        if order == by_accuracy:
            sentences.append(f"{title} ranks them the same way.")
        else:
            sentences.append(f"{title} does not: it ranks {' > '.join(order)}"
                             f" ({'lower' if lower_better else 'higher'} is better).")
    return " ".join(sentences)


def sections(quality: dict, results: Results, with_fidelity_table: bool) -> list[Section | PerClass]:
    """The summary table (with the ranking note) and the per-class tables of FD, diversity and, unless the toy world's
    class-fidelity table already shows it, fidelity."""
    methods = list(quality["methods"])
    low, high = quality["reference_images_per_class"]
    per_class = f"{low}" if low == high else f"{low}-{high}"
    shrink = (f" Covariances of sets with no more images than feature dimensions are shrunk toward a scaled identity "
              f"(Ledoit-Wolf): {quality['reference_shrunk_classes']} of {len(results.class_names)} classes' reference "
              "sets, and the synthetic sets with the mean coefficient shown.")
    summary = Section(
        f"Synthetic-data quality ({quality['encoder']})",
        text=(f"Per class, then averaged over classes and seeds, in the feature space of {quality['encoder']}, against "
              f"the real {quality['reference']} images ({per_class} per class). FD: Fréchet distance to them (lower "
              "is closer). Diversity: mean cosine distance between two images of a class (real: "
              f"{_number(quality['real_diversity'])}). Fidelity: % labelled as their class by the encoder's zero-shot "
              "classifier. CLIP score: 100 x cosine of each image with its prompt (text towers only). Kept: images the "
              f"filter left for the classifier (per seed).{shrink} {ranking_note(quality, results)}"),
        header=["method", "FD", "diversity", "fidelity %", "CLIP score", "shrinkage", "images", "kept", "dropped"],
        rows=[[m, _number(q["fd"]), _number(q["diversity"]), pct(q["fidelity"]), pct(q["clip_score"]),
               _number(q["shrinkage"], 2), str(q["images_per_seed"]),
               _number(q["filter"]["kept"]) if q["filter"] else "all",
               _number(q["filter"]["dropped"]) if q["filter"] else "0"]
              for m, q in quality["methods"].items()])
    out: list[Section | PerClass] = [summary]
    tables = [("fd", "Fréchet distance per class", False), ("diversity", "Diversity per class", True)]
    if with_fidelity_table:
        tables.append(("fidelity", "Zero-shot fidelity per class (%)", False))
    names = results.class_names
    for key, title, with_real in tables:
        columns = {"real": [quality["real_per_class"][name] for name in names]} if with_real else {}
        columns |= {m: [quality["methods"][m][f"{key}_per_class"][name] for name in names] for m in methods}
        out.append(PerClass(f"{title} ({quality['encoder']})", names, columns,
                            pct if key == "fidelity" else _number, higher_better=key != "fd",
                            percent=key == "fidelity", rank_by=methods[0]))
    return out
