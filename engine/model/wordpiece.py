"""BERT WordPiece ids for the X-VLM branch, from the text_encoder folder's vocab.txt.

The data sets tokenise questions into their own word vocabulary (BAN and ISubGVQA embed those
words); X-VLM's BERT reads WordPiece ids. Each vocabulary word is split once by the folder's
BertTokenizerFast into a table [V, P] (-1 = no piece); a batch's question ids become
[CLS] pieces... [SEP] on the device, truncated to max_tokens (X-VLM's `max_tokens`, both special
tokens included).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from vqatune.engine.config import ConfigError
from vqatune.engine.data.common import PAD, UNK


class WordPieces(nn.Module):
    def __init__(self, folder: Path, vocab: list[str], max_tokens: int):
        super().__init__()
        from transformers import BertTokenizerFast

        try:
            tokenizer = BertTokenizerFast.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(
                f"text_encoder: {folder}: cannot read its tokenizer: {first}"
            ) from None
        if max_tokens < 3:
            raise ConfigError(f"max_tokens: {max_tokens} leaves no room for a question")
        pieces = [
            []
            if word == PAD
            else [tokenizer.unk_token_id]
            if word == UNK
            else tokenizer(word, add_special_tokens=False)["input_ids"]
            for word in vocab
        ]
        table = torch.full(
            (len(vocab), max(1, *map(len, pieces))), -1, dtype=torch.long, device="cpu"
        )
        for i, ids in enumerate(pieces):
            table[i, : len(ids)] = torch.tensor(ids, dtype=torch.long, device="cpu")
        self.register_buffer("table", table, persistent=False)
        self.cls_id = tokenizer.cls_token_id
        self.sep_id = tokenizer.sep_token_id
        self.pad_id = tokenizer.pad_token_id
        self.vocab_size = len(tokenizer)
        self.max_tokens = max_tokens

    def forward(self, q_tokens: torch.Tensor, q_mask: torch.Tensor):
        """q_tokens [B,L] data-vocab ids, q_mask [B,L] -> ids [B,Lt], mask [B,Lt] (bool)."""
        B = q_tokens.shape[0]
        pieces = self.table[q_tokens].masked_fill(~q_mask.bool()[..., None], -1).flatten(1)
        valid = pieces >= 0
        # move each row's pieces to its front, in order (a stable sort on "is padding")
        order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)
        room = self.max_tokens - 2
        pieces = pieces.gather(1, order)[:, :room]
        n = valid.sum(1).clamp_max(room)  # [B]
        Lt = pieces.shape[1] + 2
        pos = torch.arange(Lt, device=q_tokens.device)
        body = torch.where(pos[: Lt - 2] < n[:, None], pieces, self.pad_id)
        ids = torch.cat([torch.full_like(body[:, :1], self.cls_id), body, body[:, :1]], 1)
        ids[torch.arange(B, device=ids.device), n + 1] = self.sep_id
        ids[:, -1] = torch.where(n + 1 == Lt - 1, self.sep_id, self.pad_id)
        return ids, pos[None, :] < (n + 2)[:, None]
