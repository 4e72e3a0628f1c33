"""The two towers of the embedding recommender, as plain torch modules.

- `ItemTower`: e_i = id embedding + category + price bucket + projected MiniLM text + mean of
  attribute embeddings (brand, category path) + projected item features; b_i a learnt bias.
  The catalog's content is held as buffers, so the state dict carries it.
- `SequenceUserTower`: a causal self-attention encoder (SASRec, Kang & McAuley 2018) over a
  user's tokens, oldest to newest. Each position reads the item's vector from the item tower
  (the same vectors that are scored) plus event-type, time-gap and position embeddings; the
  output at position t is the user's vector after t, and e_u is the output at the last one.
- `FastDropout`: dropout whose mask costs a fifth of torch's on CPU, and `EncoderLayer`:
  torch's encoder layer with it in every place, the attention weights included.
"""

from __future__ import annotations

import torch
from torch import nn

from models.sequences import EVENT_TYPES, GAP_BUCKETS

ENCODERS = ("attention", "hybrid", "pooled")


class FastDropout(nn.Dropout):
    """`nn.Dropout` with a cheaper mask on CPU: torch's CPU dropout draws one Bernoulli
    variate per element, 11 ms for a 256 x 50 x 64 batch on 2 cores (measured), which made
    dropout 30% of a training step. Here every 64-bit random word gives four 16-bit
    uniforms, compared with p (to 1/65,536): 2 ms. The same rate and expected value
    (kept elements scaled by 1 / (1 - p)). Torch's own dropout on other devices, and for a
    p that 1/65,536 steps cannot tell from 0 or 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cut = round(self.p * 65_536) - 32_768  # keep the uniforms at or above it
        if not self.training or x.device.type != "cpu" or not -32_768 < cut < 32_768:
            return super().forward(x)
        n = x.numel()
        words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
        uniforms = words.view(torch.int16)[:n].view(x.shape)  # each in [-32768, 32767]
        return x * ((uniforms >= cut).to(x.dtype) * (1 / (1 - self.p)))


class EncoderLayer(nn.TransformerEncoderLayer):
    """torch's pre-norm encoder layer with every dropout a `FastDropout`: in training on CPU
    the self-attention is computed here so that its weights' dropout is one too (inside
    `scaled_dot_product_attention` it draws a Bernoulli variate per weight); otherwise, and
    when serving, torch's own path. The parameters are torch's, so state dicts carry over."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__(dim, heads, 2 * dim, dropout, batch_first=True, norm_first=True)
        self.dropout, self.dropout1, self.dropout2 = (FastDropout(dropout) for _ in range(3))
        self.attention_dropout = FastDropout(dropout)

    def _sa_block(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None,
        key_padding_mask: torch.Tensor | None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        attention = self.self_attn
        if not (self.training and attention.dropout > 0 and x.device.type == "cpu") or (
            key_padding_mask is not None
        ):
            return super()._sa_block(x, attn_mask, key_padding_mask, is_causal)
        batch, width, dim = x.shape
        heads = attention.num_heads
        qkv = nn.functional.linear(x, attention.in_proj_weight, attention.in_proj_bias)
        query, key, value = (
            part.view(batch, width, heads, dim // heads).transpose(1, 2)
            for part in qkv.chunk(3, -1)
        )
        scores = query @ key.transpose(-2, -1) * (dim // heads) ** -0.5
        if attn_mask is not None:
            scores = (
                scores.masked_fill(attn_mask, float("-inf"))
                if attn_mask.dtype == torch.bool
                else scores + attn_mask
            )
        weights = self.attention_dropout(scores.softmax(-1))
        out = (weights @ value).transpose(1, 2).reshape(batch, width, dim)
        return self.dropout1(attention.out_proj(out))


class ItemTower(nn.Module):
    """Item vectors and biases for the whole catalog, from ids and content."""

    def __init__(
        self,
        n_items: int,
        dim: int,
        category: torch.Tensor,
        price_bucket: torch.Tensor,
        text: torch.Tensor,
        attribute_offsets: torch.Tensor,
        attribute_values: torch.Tensor,
        features: torch.Tensor,
        n_categories: int,
        n_price_buckets: int,
        n_attributes: int,
    ) -> None:
        super().__init__()
        self.register_buffer("category_of", category)
        self.register_buffer("price_bucket_of", price_bucket)
        self.register_buffer("text_of", text)
        self.register_buffer("attribute_offsets", attribute_offsets)
        self.register_buffer("attribute_values", attribute_values)
        self.register_buffer("features_of", features)
        self.item_id = nn.Embedding(n_items, dim)
        self.item_bias = nn.Embedding(n_items, 1)
        self.category = nn.Embedding(n_categories, dim)
        self.price_bucket = nn.Embedding(n_price_buckets, dim)
        self.text = nn.Linear(text.shape[1], dim, bias=False)
        self.attributes = nn.EmbeddingBag(max(n_attributes, 1), dim, mode="mean")
        self.item_features = nn.Linear(features.shape[1], dim, bias=False)
        for table in (self.item_id, self.category, self.price_bucket, self.attributes):
            nn.init.normal_(table.weight, std=0.02)
        nn.init.zeros_(self.item_bias.weight)
        nn.init.zeros_(self.item_features.weight)

    @property
    def has_content(self) -> bool:
        """Whether anything beyond the id describes the items."""
        return bool(
            self.category.num_embeddings > 1
            or self.price_bucket.num_embeddings > 1
            or self.text_of.abs().sum() > 0
            or len(self.attribute_values) > 0
            or self.features_of.abs().sum() > 0
        )

    def content(self) -> torch.Tensor:
        """What the catalog alone says about each item (n_items x dim)."""
        return (
            self.category(self.category_of)
            + self.price_bucket(self.price_bucket_of)
            + self.text(self.text_of)
            + self.attributes(self.attribute_values, self.attribute_offsets)
            + self.item_features(self.features_of)
        )

    def forward(self, id_dropout: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(vectors, biases) of every item; `id_dropout` zeroes that share of id vectors, so
        the content part learns to stand alone (for items the model has not seen)."""
        ids = self.item_id.weight
        if id_dropout > 0:
            ids = ids * (torch.rand(len(ids), 1, device=ids.device) >= id_dropout)
        return ids + self.content(), self.item_bias.weight.squeeze(1)


class SequenceUserTower(nn.Module):
    """Causal self-attention over a user's tokens; the output at each position is e_u there."""

    def __init__(
        self,
        dim: int,
        max_length: int,
        layers: int,
        heads: int,
        dropout: float,
        n_user_features: int,
        encoder: str = "attention",
    ) -> None:
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {', '.join(ENCODERS)}, not {encoder!r}")
        self.dim, self.encoder = dim, encoder
        self.long_term = nn.Linear(dim, dim, bias=False)
        nn.init.eye_(self.long_term.weight)
        self.event_type = nn.Embedding(len(EVENT_TYPES), dim)
        self.gap = nn.Embedding(GAP_BUCKETS, dim)
        # The time until the event being predicted: known in training; when serving, the
        # model's typical gap before a next visit (the next session, not the next click).
        self.next_gap = nn.Embedding(GAP_BUCKETS, dim)
        self.position = nn.Embedding(max_length, dim)  # counted back from the newest token
        self.layers = nn.TransformerEncoder(
            EncoderLayer(dim, heads, dropout), layers, enable_nested_tensor=False
        )
        self.input_dropout = FastDropout(dropout)
        self.norm = nn.LayerNorm(dim)
        self.user_features = nn.Linear(n_user_features, dim, bias=False)
        for table in (self.event_type, self.gap, self.next_gap, self.position):
            nn.init.normal_(table.weight, std=0.02)
        nn.init.zeros_(self.user_features.weight)

    def forward(
        self,
        item_vectors: torch.Tensor,
        types: torch.Tensor,
        gaps: torch.Tensor,
        lengths: torch.Tensor,
        user_features: torch.Tensor,
        next_gaps: torch.Tensor,
        earlier_sum: torch.Tensor | None = None,
        earlier_count: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden state after every position (B x T x dim) of right-padded windows whose item
        vectors are `item_vectors` (B x T x dim); padded positions hold garbage. `next_gaps`:
        the gap bucket of the event each position predicts.
        `earlier_sum` / `earlier_count`: the item vectors of each user's tokens before the
        window, summed, and their count (for the long-term part; zero without)."""
        width = item_vectors.shape[1]
        steps = torch.arange(width, device=item_vectors.device)
        features = self.user_features(user_features)[:, None, :]
        long_term = 0.0
        if self.encoder != "attention":
            before = item_vectors.new_zeros(len(item_vectors), self.dim)
            count = item_vectors.new_zeros(len(item_vectors))
            if earlier_sum is not None:
                before, count = earlier_sum, earlier_count.float()
            running = before[:, None, :] + item_vectors.cumsum(1)
            total = count[:, None] + (steps + 1.0)[None, :]
            long_term = self.long_term(running / total.sqrt()[:, :, None])
            if self.encoder == "pooled":
                return long_term + features
        back = (lengths[:, None] - 1 - steps[None, :]).clamp(0, self.position.num_embeddings - 1)
        x = (
            item_vectors * self.dim**0.5
            + self.event_type(types)
            + self.gap(gaps)
            + self.next_gap(next_gaps)
            + self.position(back)
        )
        causal = nn.Transformer.generate_square_subsequent_mask(width, device=x.device)
        hidden = self.layers(self.input_dropout(x), mask=causal, is_causal=True)
        return self.norm(hidden) + long_term + features
