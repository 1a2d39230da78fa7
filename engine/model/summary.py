"""Parameter counts per branch, and which learning rate trains them (`vqatune model summary`)."""

from __future__ import annotations

from types import SimpleNamespace


# Vocabulary sizes assumed when no data is loaded: easy-VQA's question words and 13 answers; GQA's
# balanced answer set and scene-graph vocabularies (1,702 objects, 617 attributes, 310 relations);
# VQA v2's answers seen >= 9 times. Counts of the vocabulary-sized layers depend on them.
def _nominal(vocab, answers, visual="regions", feature_dim=2048, graph=(0, 0, 0), soft=False):
    """One data set's nominal sizes; graph = (objects, attributes, relations) of its scene
    graphs, none when it has no graphs."""
    objects, attrs, rels = graph
    return dict(
        vocab=vocab,
        answers=answers,
        visual=visual,
        feature_dim=feature_dim,
        has_graph=any(graph),
        soft=soft,
        objects=objects,
        attrs=attrs,
        rels=rels,
    )


NOMINAL = {
    "easy-vqa": _nominal(30, 13, visual="pixels", feature_dim=0),
    "gqa": _nominal(3000, 1842, graph=(1702, 617, 310)),
    "vqa": _nominal(20000, 3129, soft=True),
    "synthetic": _nominal(60, 40, feature_dim=64, graph=(20, 12, 8)),
}


def nominal_meta(dataset: str, tfidf: bool = False) -> SimpleNamespace:
    """Vocabularies of the nominal sizes; with tfidf a (zero) TF-IDF init, so that the model
    gets its TF-IDF word embeddings as a run with tfidf does."""
    import numpy as np

    from .vqa_model import WORD_DIM

    n = NOMINAL[dataset]
    return SimpleNamespace(
        dataset=dataset,
        vocab=["<pad>", "<unk>"] + [f"w{i}" for i in range(n["vocab"] - 2)],
        answers=[f"a{i}" for i in range(n["answers"])],
        answer_types=["all"],
        soft_targets=n["soft"],
        word_init=np.zeros((n["vocab"], WORD_DIM), np.float32) if tfidf else None,
        visual=n["visual"],
        feature_dim=n["feature_dim"],
        has_graph=n["has_graph"],
        node_vocab=[f"o{i}" for i in range(n["objects"])],
        attr_vocab=[f"t{i}" for i in range(n["attrs"])],
        rel_vocab=[f"r{i}" for i in range(n["rels"])],
        max_attrs=3,
    )


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def run_meta(cfg):
    """(meta, None): the vocabularies a run of cfg trains with, from its data set, as the trainer
    builds them (limits, tfidf); or (None, why) when the data set's files are not at hand."""
    from vqatune.engine import data

    try:
        return data.build(cfg).meta, None
    except data.DataError as e:
        return None, str(e)


def summary(cfg, meta=None) -> dict:
    """Build the model on the meta device (no memory, no init cost) and count its parameters.
    Without meta: on the data a run of cfg loads, or nominal vocabularies when it is not at hand."""
    import torch

    from .vqa_model import build_model

    why_nominal = None
    if meta is None:
        meta, why_nominal = run_meta(cfg)
    nominal = meta is None
    meta = meta or nominal_meta(cfg.dataset, tfidf=cfg.tfidf)
    with torch.device("meta"):  # a checkpoint file is matched (reported), not loaded
        model = build_model(cfg, meta, load_weights=False)
    groups = model.param_groups()
    backbone = model.backbone
    branches = {
        "xvlm_backbone": _count(backbone),
        "xvlm_head": _count(model.xvlm_head),
        "question_encoder": _count(model.word_emb)
        + _count(model.gru)
        + (_count(model.word_tfidf) if model.word_init else 0),
        "ban": _count(model.ban)
        + _count(model.vision_proj)
        + (_count(model.entity_emb) if model.has_graph else 0),
        "aoa": _count(model.ban.aoa),
        "isubgvqa": _count(model.graph),
        "fusion": model.fusion_logits.numel(),
    }
    total = _count(model)
    assert total == sum(v for k, v in branches.items() if k != "aoa"), "a module is not counted"
    backbone_parts = {
        "vision": _count(backbone.vision)
        + (_count(backbone.region_embed) if backbone.regions else 0),
        "text": _count(backbone.text),
        "fusion": _count(backbone.fusion) + _count(backbone.vision_to_text),
    }
    return {
        "dataset": meta.dataset,
        "nominal_vocabulary": nominal,
        "nominal_reason": why_nominal,
        "answers": len(meta.answers),
        "visual": meta.visual,
        "backbone_sizes": backbone.sizes.to_dict(),
        "xvlm_input": backbone.xvlm_input,
        "checkpoint": model.checkpoint_report,
        "attn_implementation": backbone.attn_implementation,
        "activation_checkpointing": bool(cfg.memory_efficient_attention),
        "branches": branches,
        "backbone_parts": backbone_parts,
        "total": total,
        "lr": {
            "value": cfg.lr,
            "parameters": sum(p.numel() for p in groups["heads"]),
            "modules": ["xvlm_head", "question_encoder", "ban", "aoa", "isubgvqa", "fusion"],
        },
        "xvlm_lr": {
            "value": cfg.xvlm_lr,
            "parameters": sum(p.numel() for p in groups["backbone"]),
            "modules": ["xvlm_backbone"],
        },
    }
