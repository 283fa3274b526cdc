"""AC-ODM's DDPG agent: actor, vector critic, target copies, replay pool (docs/methods/acodm.md).

Follows DANG-ai/AC-ODM ``megatron/data/agent.py``:

* actor ``μ(s)``: ``Linear(S→H)`` + ``layers`` × ``Linear(H→H)``, each followed by LayerNorm +
  ReLU, then ``Linear(H→K)`` + softmax; critic ``Q(s, a)``: the same trunk on ``[s ‖ a]`` ending
  in ``Linear(H→K)`` (one value per domain);
* DDPG step: ``y = r + γ Q'(s', μ'(s'))``, ``L_Q = mean (Q(s,a) - y)²``, then the actor step,
  then soft target updates ``θ' ← (1-τ)θ' + τθ``;
* warm-up step (during the ODM warm-up): actor regressed onto the taken actions (MSE), critic
  onto ``y = r + γ r`` (released target, kept).

Actor objectives (``objective=``):

* ``"action_weighted"`` (default): ``L_μ = -mean_batch Σ_k μ_k(s) Q_k(s, μ(s))`` — the
  weight a domain gets is paid for by the value of *that* domain (the paper's "linear surrogate
  maximising constructive interference", DoGE-like).
* ``"mean_q"``: ``L_μ = -mean_batch mean_k Q_k(s, μ(s))`` (the released loss, actor stepped).
  It has no learning signal: the rewards are z-scored across domains, so ``Σ_k r_k = 0`` at
  every step, hence ``Σ_k Q_k(s, a) = 0`` for every ``(s, a)`` at the fixed point and the
  gradient of ``mean_k Q_k`` with respect to the action is approximation noise (measured: the
  actor locks onto a random domain without weight decay and decays to uniform with it).
* ``"released"``: faithful to DANG-ai/AC-ODM for comparison — the actor loss is
  ``-mean_k Q_k`` and back-propagated, but, as in the released code (``agent.py``: the
  critic engine's ``step()`` is called after the actor's backward, in warm-up and in DDPG),
  the *critic* optimiser is stepped on it and the actor never is: the policy is its random
  initialisation.

Optimiser: AdamW (decoupled weight decay 0.1, the released FusedAdam's convention) at a
constant ``lr`` (released: AnnealingLR 0.01 → 0.001 cosine). Before 2026-11 this module used
``Adam(weight_decay=0.1)`` (coupled L2), which pulled the actor to uniform. Sampling uses a
seeded numpy generator whose state is checkpointed, so runs resume exactly.
"""

from __future__ import annotations

import base64
import copy
import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn


def mlp(n_in: int, n_out: int, hidden: int, layers: int, softmax: bool) -> nn.Sequential:
    mods: list[nn.Module] = [nn.Linear(n_in, hidden), nn.LayerNorm(hidden), nn.ReLU()]
    for _ in range(layers):
        mods += [nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.ReLU()]
    mods.append(nn.Linear(hidden, n_out))
    if softmax:
        mods.append(nn.Softmax(dim=-1))
    return nn.Sequential(*mods).double()


def to_b64(obj: Any) -> str:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def from_b64(text: str) -> Any:
    return torch.load(io.BytesIO(base64.b64decode(text)), weights_only=True)


def arr_b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.float64).tobytes()).decode("ascii")


def b64_arr(text: str, cols: int) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.float64).reshape(-1, cols).copy()


class ReplayPool:
    """FIFO pool of transitions ``(s, a, r, s')`` (float64 arrays), capacity ``size``."""

    def __init__(self, size: int, state_dim: int, k: int) -> None:
        self.size, self.sd, self.k = int(size), int(state_dim), int(k)
        self.width = 2 * self.sd + 2 * self.k
        self.data = np.zeros((self.size, self.width))
        self.n = self.head = 0

    def add(self, s: np.ndarray, a: np.ndarray, r: np.ndarray, s2: np.ndarray) -> None:
        self.data[self.head] = np.concatenate([s, a, r, s2])
        self.head = (self.head + 1) % self.size
        self.n = min(self.n + 1, self.size)

    def sample(self, rng: np.random.Generator, batch: int) -> tuple[torch.Tensor, ...]:
        idx = rng.integers(0, self.n, size=batch)
        rows = torch.from_numpy(self.data[idx])
        sd, k = self.sd, self.k
        return rows[:, :sd], rows[:, sd:sd + k], rows[:, sd + k:sd + 2 * k], rows[:, sd + 2 * k:]

    def state(self) -> dict:
        order = (np.arange(self.n) + (self.head - self.n)) % self.size  # oldest first
        return {"rows": arr_b64(self.data[order]), "n": self.n}

    def load(self, st: Mapping) -> None:
        rows = b64_arr(st["rows"], self.width) if int(st["n"]) else np.zeros((0, self.width))
        self.data[:] = 0
        self.n = len(rows)
        self.data[:self.n] = rows
        self.head = self.n % self.size


OBJECTIVES = ("action_weighted", "mean_q", "released")


class DDPGAgent:
    """Actor-critic with target networks; all float64 on CPU (the networks are small)."""

    def __init__(self, state_dim: int, k: int, *, hidden: int = 1024, layers: int = 4,
                 gamma: float = 0.95, tau: float = 0.001, lr: float = 1e-3,
                 weight_decay: float = 0.1, objective: str = "action_weighted",
                 seed: int = 0) -> None:
        if objective not in OBJECTIVES:
            raise ValueError(f"AC-ODM objective must be one of {OBJECTIVES}, got {objective!r}")
        self.objective = objective
        self.state_dim, self.k, self.gamma, self.tau = state_dim, k, float(gamma), float(tau)
        self.config = {"state_dim": state_dim, "k": k, "hidden": hidden, "layers": layers}
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.actor = mlp(state_dim, k, hidden, layers, softmax=True)
            self.critic = mlp(state_dim + k, k, hidden, layers, softmax=False)
        self.actor_t = copy.deepcopy(self.actor)
        self.critic_t = copy.deepcopy(self.critic)
        # decoupled decay, as the released FusedAdam (coupled L2 pulls the actor to uniform)
        self.opt_actor = torch.optim.AdamW(self.actor.parameters(), lr=lr,
                                           weight_decay=weight_decay)
        self.opt_critic = torch.optim.AdamW(self.critic.parameters(), lr=lr,
                                            weight_decay=weight_decay)

    def act(self, s: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.actor(torch.from_numpy(np.asarray(s, np.float64))[None])[0].numpy()

    def q(self, s: torch.Tensor, a: torch.Tensor, target: bool = False) -> torch.Tensor:
        return (self.critic_t if target else self.critic)(torch.cat([s, a], dim=1))

    def _critic_step(self, s: torch.Tensor, a: torch.Tensor, y: torch.Tensor) -> float:
        loss = ((self.q(s, a) - y) ** 2).mean()
        self.opt_critic.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_critic.step()
        return float(loss.detach())

    def warmup_step(self, batch: tuple[torch.Tensor, ...]) -> tuple[float, float]:
        """Actor → taken actions (MSE); critic → ``r + γ r`` (released warm-up targets)."""
        s, a, r, _ = batch
        lq = self._critic_step(s, a, r + self.gamma * r)
        la = ((self.actor(s) - a) ** 2).mean()
        self.opt_actor.zero_grad(set_to_none=True)
        la.backward()
        if self.objective != "released":  # released: the critic engine is stepped instead
            self.opt_actor.step()
        return float(la.detach()), lq

    def actor_loss(self, s: torch.Tensor) -> torch.Tensor:
        """The actor's loss on states ``s`` under :attr:`objective`."""
        mu = self.actor(s)
        q = self.q(s, mu)
        if self.objective == "action_weighted":
            return -(mu * q).sum(1).mean()
        return -q.mean()

    def update(self, batch: tuple[torch.Tensor, ...]) -> tuple[float, float]:
        """One DDPG step (critic, then actor — stepped unless ``objective="released"``), then
        soft target updates."""
        s, a, r, s2 = batch
        with torch.no_grad():
            y = r + self.gamma * self.q(s2, self.actor_t(s2), target=True)
        lq = self._critic_step(s, a, y)
        la = self.actor_loss(s)
        self.opt_actor.zero_grad(set_to_none=True)
        self.opt_critic.zero_grad(set_to_none=True)
        la.backward()
        if self.objective == "released":
            self.opt_critic.step()  # the released bug: critic stepped on -mean Q, actor never
        else:
            self.opt_actor.step()
        self.soft_update()
        return float(la.detach()), lq

    def soft_update(self) -> None:
        with torch.no_grad():
            for net, tgt in ((self.actor, self.actor_t), (self.critic, self.critic_t)):
                for p, pt in zip(net.parameters(), tgt.parameters()):
                    pt.mul_(1 - self.tau).add_(p, alpha=self.tau)

    def sync_targets(self) -> None:
        self.actor_t.load_state_dict(self.actor.state_dict())
        self.critic_t.load_state_dict(self.critic.state_dict())

    def nets(self) -> dict[str, nn.Module]:
        return {"actor": self.actor, "critic": self.critic, "actor_t": self.actor_t,
                "critic_t": self.critic_t}

    def state(self, optimisers: bool = True) -> dict:
        st: dict[str, Any] = {n: to_b64(m.state_dict()) for n, m in self.nets().items()}
        if optimisers:
            st["opt_actor"] = to_b64(self.opt_actor.state_dict())
            st["opt_critic"] = to_b64(self.opt_critic.state_dict())
        st["config"] = dict(self.config)
        return st

    def load(self, st: Mapping) -> None:
        if dict(st["config"]) != self.config:
            raise ValueError(f"AC-ODM agent was built for {dict(st['config'])}, this controller "
                             f"needs {self.config} (same domains, norm layers and network size)")
        for n, m in self.nets().items():
            m.load_state_dict(from_b64(st[n]))
        if "opt_actor" in st:
            self.opt_actor.load_state_dict(from_b64(st["opt_actor"]))
            self.opt_critic.load_state_dict(from_b64(st["opt_critic"]))
