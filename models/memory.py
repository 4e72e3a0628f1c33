"""The embedding recommender's long-term memory: an item-item regression (ridge or EASE),
factorised, beside the sequence encoder.

The encoder reads a user's newest events in order; what a whole history says about which
items go together is what item-item regressions know best. The memory fits one on the
training sequences (binary history, the validation tokens left out): the plain ridge
regression of each item on all of them, or EASE's (Steck 2019), which forbids an item to
predict itself (`FORMS`; both from one solve). It keeps a rank-r factorisation B ~ P Q'. A
user's memory vector m_u is the sum of P over the distinct items of their history, so
m_u . Q_i is the low-rank regression's score, and the served vectors stay dot products.
With a half-life of h (events), each item counts 2^(-n/h), n being the number of the
user's events after their last one on it: recent interest weighs more, as the next days are
mostly about what a shopper just did, and an item a shopper comes back to is recent again.
An item with n tokens in a history (visited n times, other items between) can count n^p:
interest a shopper shows again and again is stronger. The fit picks h (`HALF_LIVES`) and p
(`REPEAT_POWERS`) on validation, from none up, so a data set whose order or repeats say
nothing keeps the plain regression:

    e_u = [g * h_u, s * m_u]        e_i = [v_i, Q_i]        I(u, i) = e_u . e_i + b_i

The gate g starts at 0, so training starts from the low-rank regression (epoch 0); g and
the scale s are learnt with the towers, and validation NDCG@10 decides whether trained
epochs beat that start. P and Q stay fixed. A memory of rank 0 is none: e_u = h_u,
e_i = v_i.

Items the regression never saw (in the catalog, or new ones at serving time) get their Q
from content: a ridge map W from the item's content design (category, price bucket, text,
attributes) to Q, fit on the items it saw (`fit_content_side`). So new items are scored by
content alone whether or not training opened the gate to the towers.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from models.base import half_life_weight, rows_or_zeros
from models.baselines import ease_from_precision, ridge_precision

# Half-lives (in events) the fit tries for the memory's recency weights; 0: none.
# Measured with full EASE: Amazon Sports loo best at 2 (NDCG@10 0.0323 against 0.0279 with
# none), the shop with sequential structure near 20 (0.0908 against 0.0881), the plain shop
# and MovieLens msr best with none. An item's recency is that of its last event: counted
# from its first, as this memory did until 2026-12-05, the sequential shop lost at every
# half-life (h 8: 0.0868, h 20: 0.0875; last event 0.0900, 0.0908) and the plain shop too
# (h 20: 0.1187 against 0.1209); where no item comes back (Sports, MovieLens) both are one.
HALF_LIVES = (0.0, 32.0, 8.0, 2.0)
# Powers the fit tries for an item's weight by how often the user came back to it: with n
# tokens (visits to the item apart from other items) it counts n^power; 0: once, however
# often. Measured with full EASE on the default shop (`temporal`, 2026-12-07, n from the
# user's tokens): NDCG@10 0.1275 once, 0.1296 at 0.5, 0.1289 at 1 (coverage 0.266, 0.285,
# 0.300). Where no item comes back (MovieLens, Amazon Sports) every power is the same.
REPEAT_POWERS = (0.0, 0.5, 1.0)
# The fit factorises at `long_term_rank` and also tries the first factors of this share of
# it, keeping the rank with the better validation NDCG@10 (the narrower on a tie).
# Measured (2026-12-07, rank 256 against 128, the model's test NDCG@10): the default shop
# 0.1288 against 0.1272 (validation: 256 ahead by 1.5 standard errors), MovieLens msr 0.4820
# against 0.4841 (128 ahead by 1.4). Neither width wins both, and each data set's
# validation pointed at its better one.
NARROWER_RANK_SHARE = 0.5
# The item-item matrices a memory can hold, from one solve of P = (X'X + l2 I)^-1: EASE's
# (B = -P / diag(P), zero diagonal) and the plain ridge regression of each item on all of
# them (B = I - l2 P, its diagonal left out of the ranking as every history item is).
# Measured at l2 = 500 (test NDCG@10, full rank, EASE against ridge; 2026-12-05): MovieLens
# msr 0.4822 / 0.4844, the default shop 0.1255 / 0.1262, Amazon Sports loo 0.0279 / 0.0295,
# the shop with sequential structure 0.0881 / 0.0836. Neither wins everywhere, so the fit
# chooses on validation (`EmbeddingConfig.long_term="auto"`): ridge, the plain regression,
# unless EASE's constraint earns its place by two standard errors, as a half-life or a
# trained epoch must. Validation of the memories at rank 128 (EASE - ridge): the sequential
# shop +7.5 standard errors (EASE kept), the default shop +0.4, MovieLens msr -1.2.
FORMS = ("ridge", "ease")  # the plain regression first: the one kept without evidence
FORM_NAMES = {"ease": "EASE", "ridge": "ridge"}


class LongTermMemory(nn.Module):
    """Fixed factors of an item-item regression (P: user side, Q: item side) with a learnt
    gate and scale."""

    def __init__(
        self,
        user_side: torch.Tensor,
        item_side: torch.Tensor,
        content_side: torch.Tensor | None = None,
        scale: float = 1.0,
    ):
        super().__init__()
        self.register_buffer("user_side", user_side)  # P, n_items x r
        self.register_buffer("item_side", item_side)  # Q, n_items x r
        # W, content columns x r: Q of an item from its content alone (`fit_content_side`)
        if content_side is None:
            content_side = item_side.new_zeros(0, item_side.shape[1])
        self.register_buffer("content_side", content_side)
        self.gate = nn.Parameter(torch.zeros(()))
        self.log_scale = nn.Parameter(torch.tensor(float(np.log(scale))))
        self.register_buffer("half_life", torch.zeros(()))  # in events; 0: no decay
        # an item of n tokens in a history counts n^power (`REPEAT_POWERS`); 0: once
        self.register_buffer("repeat_power", torch.zeros(()))

    @staticmethod
    def empty(n_items: int) -> LongTermMemory:
        """No memory: the towers' vectors are served as they are."""
        return LongTermMemory(torch.zeros(n_items, 0), torch.zeros(n_items, 0))

    @property
    def rank(self) -> int:
        return self.item_side.shape[1]

    def truncated(self, rank: int) -> LongTermMemory:
        """The same memory with its first `rank` factors (the largest singular values: the
        best factorisation of that rank), its learnt blend and weights copied."""
        memory = LongTermMemory(
            self.user_side[:, :rank].clone(),
            self.item_side[:, :rank].clone(),
            self.content_side[:, :rank].clone(),
        )
        learnt = {k: v for k, v in self.state_dict().items() if not k.endswith("_side")}
        memory.load_state_dict(learnt, strict=False)
        return memory.to(self.item_side.device)

    def items(self, vectors: torch.Tensor, content: sp.spmatrix | None = None) -> torch.Tensor:
        """e_i: the item tower's vectors with Q beside them. For items the memory has never
        seen, pass their `content` design (items x columns, see `fit_content_side`): their
        Q is read from it (zeros where no content map was fit), so new items are scored by
        their content alone."""
        if not self.rank:
            return vectors
        if content is None:
            return torch.cat([vectors, self.item_side], -1)
        side = vectors.new_zeros(len(vectors), self.rank)
        if len(self.content_side):
            side = torch.as_tensor(content @ self.content_side.cpu().numpy()).to(side)
        return torch.cat([vectors, side], -1)

    def fit_content_side(self, design: sp.spmatrix, known: np.ndarray) -> None:
        """W by ridge regression of Q on the content `design` (catalog items x columns) of
        the `known` items (the ones EASE saw), so that a new item's Q is its design times W;
        the catalog's items EASE never saw get theirs the same way. The ridge is a tenth of
        the mean squared column norm, so the design's overall scale does not matter (one
        column's scale against another's does: one-hot blocks, attribute weights and text
        components are each near unit size)."""
        design = sp.csr_matrix(design, dtype=np.float64)
        x = design[known]
        gram = np.asarray((x.T @ x).todense())
        gram[np.diag_indices_from(gram)] += 0.1 * float(np.diag(gram).mean()) + 1e-6
        target = self.item_side[torch.as_tensor(known, device=self.item_side.device)]
        weights = np.linalg.solve(gram, np.asarray(x.T @ target.cpu().double().numpy()))
        self.content_side = torch.as_tensor(weights).to(self.item_side)
        unseen = torch.as_tensor(~known, device=self.item_side.device)
        unseen_q = design[~known].astype(np.float32) @ weights.astype(np.float32)  # as kept
        self.item_side[unseen] = torch.as_tensor(unseen_q).to(self.item_side)

    def users(self, hidden: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """e_u from the encoder's output `hidden` (... x dim) and the summed P of the history
        `memory` (... x r)."""
        if not self.rank:
            return hidden
        return torch.cat([self.gate * hidden, self.log_scale.exp() * memory], -1)

    def recency_weights(self, later: torch.Tensor | np.ndarray) -> torch.Tensor:
        """2^(-later / half-life) for items with `later` events after their last (ones
        without a half-life)."""
        later = torch.as_tensor(later, device=self.user_side.device, dtype=torch.float32)
        if float(self.half_life) <= 0:
            return torch.ones_like(later)
        return half_life_weight(later, self.half_life)

    def repeat_weights(self, tokens: torch.Tensor | np.ndarray) -> torch.Tensor:
        """tokens^repeat_power for items with this many tokens in a history (1 for one token;
        ones without a repeat power, 0 for 0 tokens)."""
        tokens = torch.as_tensor(tokens, device=self.user_side.device, dtype=torch.float32)
        if float(self.repeat_power) == 0:
            return (tokens > 0).float()
        return tokens**self.repeat_power

    def history_sums(
        self,
        items: torch.Tensor,
        real: torch.Tensor,
        since: torch.Tensor,
        occurrence: torch.Tensor,
        before: torch.Tensor,
    ) -> torch.Tensor:
        """The memory after each position of a padded batch of token windows (B x T item
        indices, any index for padding; `real`: B x T bool), as the whole history's sums
        weigh it: `before` (B x r, the memory of the user's tokens before the window), then
        each real token's P. Each token ages what came before it by one event; an item that
        comes back (`since`: B x T, the events between its previous token and this one; -1
        for an item new to the history; `occurrence`: its tokens so far, this one included)
        trades the weight it had for a fresh one, so that it counts once, at its last token,
        with the repeat weight of all its tokens."""
        one_event = self.recency_weights(torch.ones(()))  # its decay; 1 without a half-life
        # a returning item's earlier weight, aged by this token: what its fresh one replaces
        aged = one_event * self.recency_weights(since.clamp(min=0))
        returning = since >= 0
        fresh = self.repeat_weights(torch.where(returning, occurrence, 1))
        repeated = self.repeat_weights((occurrence - 1).clamp(min=0))  # before this token
        earlier = torch.where(returning, aged * repeated, 0.0)
        rows = rows_or_zeros(self.user_side, items)
        rows = rows * (real * (fresh - earlier))[..., None]
        if float(self.half_life) <= 0:
            return before[:, None, :] + rows.cumsum(1)
        decay = torch.where(real, one_event, 1.0)[..., None]
        running, out = before, []
        for step in range(items.shape[1]):
            running = running * decay[:, step] + rows[:, step]
            out.append(running)
        return torch.stack(out, 1)


def fit_memory(
    users: np.ndarray,
    items: np.ndarray,
    n_users: int,
    n_items: int,
    rank: int,
    l2: float,
    say: Callable[[str], None],
    seed: int = 0,
    forms: tuple[str, ...] = ("ease",),
) -> dict[str, LongTermMemory]:
    """A memory of each form in `forms` (`FORMS`) on the binary (user, item) pairs given,
    each item-item matrix B factorised to `rank` (truncated SVD, B ~ U S V', P = U S^1/2,
    Q = V S^1/2); items without any pair get zero factors (Q from content once
    `fit_content_side` has run). Both forms come from one solve of (X'X + l2 I)^-1. The
    randomised SVD draws from its own generator seeded with `seed`: the same pairs give the
    same memory, whatever ran before."""
    unknown = sorted(set(forms) - set(FORMS))
    if unknown:
        raise ValueError(f"memory forms must be among {', '.join(FORMS)}, not {unknown}")
    present = np.unique(items)
    columns = np.searchsorted(present, items)
    history = sp.csr_matrix(
        (np.ones(len(users), np.float32), (users, columns)), shape=(n_users, len(present))
    )
    history.data[:] = 1.0  # duplicates summed to more than one: binary again
    rank = min(rank, len(present))
    named = " and ".join(FORM_NAMES[form] for form in forms)
    say(f"long-term memory: solving {named} on {len(present):,} x {len(present):,} items ...")
    started = time.perf_counter()
    precision = ridge_precision(history, l2)
    diagonal = precision.diagonal().clone()
    memories = {}
    for form in sorted(forms, key=FORMS.index):  # ridge first: it gives P back off its diagonal
        if form == "ridge":  # I - l2 P off the diagonal (a history's own items are never
            precision.mul_(-l2)  # ranked), then P off the diagonal again, in place: EASE
            precision.diagonal().zero_()  # reads only that and the diagonal kept aside
            memories[form] = _factorised(precision, present, n_items, rank, seed)
            precision.div_(-l2)
        else:  # EASE: B_ij = -P_ij / P_jj, zero diagonal
            ease_from_precision(precision, diagonal)
            memories[form] = _factorised(precision, present, n_items, rank, seed)
    say(
        f"long-term memory: {named} solved and factorised to rank {rank} in "
        f"{time.perf_counter() - started:.1f} s"
    )
    return memories


def _factorised(
    weights: torch.Tensor, present: np.ndarray, n_items: int, rank: int, seed: int
) -> LongTermMemory:
    """The memory of the item-item `weights` among the `present` items, factorised."""
    with torch.random.fork_rng(devices=[]):  # the CPU generator alone, as is its seeding
        torch.random.default_generator.manual_seed(seed)
        left, values, right = torch.svd_lowrank(weights, q=min(rank + 10, len(present)), niter=4)
    root = values[:rank].sqrt()
    user_side, item_side = torch.zeros(n_items, rank), torch.zeros(n_items, rank)
    user_side[torch.as_tensor(present)] = left[:, :rank] * root
    item_side[torch.as_tensor(present)] = right[:, :rank] * root
    return LongTermMemory(user_side, item_side)
