"""ModelConfig: every size of the agent's network, with validation in one place."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, get_args

CoreName = Literal["srwm", "deltanet", "lstm", "ff", "fake-sr"]
CORE_NAMES: tuple[str, ...] = get_args(CoreName)
"""The cores of `policies.CORES` (the registry checks that it holds exactly these)."""
SrwmKernel = Literal["auto", "naive", "fused"]
SRWM_KERNELS: tuple[str, ...] = get_args(SrwmKernel)


Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")


@dataclass
class ModelConfig:
    """Sizes and choices of the ActorCritic network (paper sizes by default)."""

    core: CoreName = "srwm"
    """Name of the core in `policies.CORES` (srwm | deltanet | lstm | ff | fake-sr)."""

    hidden_size: int = 128
    """Width of the residual stream of the memory stack; must equal num_heads * head_size."""

    num_layers: int = 2
    """Number of [memory sub-layer, feed-forward sub-layer] pairs in the stack."""

    num_heads: int = 8
    """Heads of the SRWM / DeltaNet / fake-sr layers."""

    head_size: int = 16
    """Size d of one head."""

    ff_size: int = 512
    """Inner width of the pre-LN feed-forward sub-layers."""

    lstm_size: int = 256
    """Units of the single LSTM layer of the `lstm` core."""

    cnn_channels: tuple[int, ...] = (16, 32, 32)
    """Output channels of the IMPALA CNN stages (one stage per entry)."""

    cnn_out: int = 256
    """Size of the CNN's final linear layer (the features fed, with the reward, to the core)."""

    srwm_kernel: SrwmKernel = "auto"
    """SRWM op: auto (fused on CUDA when available, else naive) | naive | fused."""

    srwm_detach_every_step: bool = False
    """Detach the SRWM state after every step (the published code's behaviour; no gradient
    through the self-modification). Default False: backpropagate through the whole unroll."""

    srwm_pre_ln: bool = True
    """LayerNorm on the residual stream before the SRWM heads: x_t = softmax(LN(h_t)[head]).
    Departs from docs/SPEC.md, section 1 (SPEC: off); see policies/srwm/README.md."""

    srwm_qk_init_scale: float = 16.0
    """Init std of the q and k row blocks of W0 is this times 1/sqrt(d) (docs/SPEC.md: 1). Larger
    values make the queries and keys distinct at init (see policies/srwm/README.md)."""

    srwm_beta_init: float = 2.0
    """Init mean of the 4 learning-rate rows of W0 (docs/SPEC.md: 0): an offset on the rates'
    logits, sigmoid(beta_init) at init. The published code uses -1 or 0."""

    srwm_input_scale: float = 2.0
    """Fixed factor on the SRWM head input before its softmax (after the LayerNorm when
    srwm_pre_ln): values > 1 make x_t = softmax(.) sharper (docs/SPEC.md: 1)."""

    srwm_state_decay: float = 0.9
    """lambda in (0, 1]: before every step the SRWM's modification decays toward W0,
    S <- lambda S (1 = none, as in SPEC; 0.9: a time constant of 10 steps). Bounds what a
    carried state can accumulate; 0.9 chosen over 0.99 by measurement (policies/srwm/README.md)."""

    srwm_state_max_norm: float = 1000.0
    """Hard bound on the carried SRWM state: after every call of the layer (every acting step;
    every training segment) each head's modification is scaled down to at most this Frobenius
    norm (0 = no bound, as in SPEC). With the default decay it is never reached in practice."""

    srwm_w0_scale: float = 3.0
    """The SRWM's W0 is stored divided by this factor and multiplied back when used: with
    Adam or RMSprop its effective learning rate is this many times the learner's (1 = SPEC)."""

    precision: Precision = "fp32"
    """fp32 | bf16: bf16 runs the CNN encoder and the heads under torch.autocast (bfloat16);
    the core (the SRWM op included) always runs in fp32 on fp32 inputs. Its effect on speed and
    learning: benchmarks/RESULTS.md, "Training pipeline"."""

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; valid: "
                             f"{', '.join(PRECISIONS)}")
        self.cnn_channels = tuple(int(c) for c in self.cnn_channels)
        if self.core not in CORE_NAMES:
            raise ValueError(
                f"unknown core {self.core!r}; valid cores: {', '.join(sorted(CORE_NAMES))}"
            )
        if self.hidden_size != self.num_heads * self.head_size:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must equal num_heads * head_size "
                f"({self.num_heads} * {self.head_size} = {self.num_heads * self.head_size})"
            )
        if self.srwm_kernel not in SRWM_KERNELS:
            raise ValueError(
                f"unknown srwm_kernel {self.srwm_kernel!r}; valid: {', '.join(SRWM_KERNELS)}"
            )
        for name in ("hidden_size", "num_heads", "head_size", "ff_size", "lstm_size",
                     "cnn_out"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.srwm_input_scale > 0:
            raise ValueError(f"srwm_input_scale must be positive, got {self.srwm_input_scale}")
        if not self.srwm_qk_init_scale > 0:
            raise ValueError(f"srwm_qk_init_scale must be positive, got {self.srwm_qk_init_scale}")
        if not self.srwm_w0_scale > 0:
            raise ValueError(f"srwm_w0_scale must be positive, got {self.srwm_w0_scale}")
        if not self.srwm_state_max_norm >= 0:
            raise ValueError(
                f"srwm_state_max_norm must be >= 0 (0 = no bound), got {self.srwm_state_max_norm}")
        if not 0.0 < self.srwm_state_decay <= 1.0:
            raise ValueError(f"srwm_state_decay must be in (0, 1], got {self.srwm_state_decay}")
        if self.num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {self.num_layers}")
        if not self.cnn_channels or any(c <= 0 for c in self.cnn_channels):
            raise ValueError(f"cnn_channels must be positive ints, got {self.cnn_channels}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (tuples become lists)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of to_dict; unknown keys raise ValueError naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"unknown ModelConfig keys: {', '.join(unknown)}; valid keys: "
                f"{', '.join(sorted(known))}"
            )
        kwargs = dict(d)
        if "cnn_channels" in kwargs:
            kwargs["cnn_channels"] = tuple(kwargs["cnn_channels"])
        return cls(**kwargs)
