"""Configs of the low-rank and compact-filter family: ``factorize_(model, CONFIG, data=...)``.

Every config shares the fields of :class:`FactorizeConfig` (which layers, how
ranks are chosen for a ``ratio`` target, what data is used) and adds its own
way of naming a rank. A ``ratio`` is the fraction of the selected layers'
parameters (``target="params"``) or MACs (``target="macs"``) that is kept:
``allocation="uniform"`` gives every layer that fraction, ``"sensitivity"``
measures each layer's validation loss at several ranks and spends the same
total budget where it hurts least (see :mod:`deepshrink.factorize.ranks`).

Example:
    >>> SVD(ratio=0.5).allocation
    'uniform'
    >>> SVD(rank=4, ratio=0.5)
    Traceback (most recent call last):
    ...
    deepshrink.errors.ConfigError: SVD.rank=4 is invalid: expected exactly one of rank, energy, ratio (got rank, ratio)
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config, check_choice, check_range, check_type, register_config
from ..errors import ConfigError

ALLOCATIONS = ("uniform", "sensitivity")
TARGETS = ("params", "macs")


def _patterns(cfg: Config, field: str) -> None:
    value = getattr(cfg, field)
    allowed = "a list of module-name patterns (fnmatch) such as ['features.*', 'fc1']"
    if not isinstance(value, tuple) or not all(isinstance(p, str) for p in value):
        raise ConfigError(field, value, allowed, type(cfg).__name__)


def _one_of(cfg: Config, names: tuple[str, ...], required: bool = True) -> None:
    given = [n for n in names if getattr(cfg, n) is not None]
    if len(given) > 1 or (required and not given):
        first = given[0] if given else names[0]
        raise ConfigError(first, getattr(cfg, first), f"exactly one of {', '.join(names)} (got {', '.join(given) or 'none'})",
                          type(cfg).__name__)


@dataclass(frozen=True, kw_only=True)
class FactorizeConfig(Config):
    """Fields shared by every factorization config.

    Fields:
        layers: module-name patterns (fnmatch) to factor; empty: every layer the method applies to.
        ignored: module-name patterns to leave alone.
        ratio: (in the subclasses) the fraction of parameters or MACs kept, in (0, 1].
        target: what ``ratio`` counts: ``"params"`` or ``"macs"`` (MACs need example inputs or data).
        allocation: ``"uniform"`` (each layer keeps ``ratio``) or ``"sensitivity"`` (per-layer ranks
            from each layer's measured validation loss, meeting ``ratio`` in total).
        levels: ranks tried per layer when measuring sensitivity.
        sensitivity_samples: validation items used to measure sensitivity.
        calibration_samples: training items used for data-driven fitting (whitening, least squares).
        latency: measure each factored layer's CPU latency against the original (batch 1).
        progress: show a progress bar (stderr) over the sensitivity measurements and the layer fits.
        seed: seed of the sampling of calibration items and of iterative fits.

    Example:
        >>> Tucker(ratio=0.3, allocation="sensitivity", target="macs").target
        'macs'
    """

    layers: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    target: str = "params"
    allocation: str = "uniform"
    levels: int = 8
    sensitivity_samples: int = 512
    calibration_samples: int = 256
    latency: bool = True
    progress: bool = True
    seed: int = 0

    def validate(self) -> None:
        _patterns(self, "layers")
        _patterns(self, "ignored")
        check_choice(self, "target", TARGETS)
        check_choice(self, "allocation", ALLOCATIONS)
        check_range(self, "levels", 2, 64, integer=True)
        check_range(self, "sensitivity_samples", 1, None, integer=True)
        check_range(self, "calibration_samples", 1, None, integer=True)
        check_type(self, "latency", bool, "true or false")
        check_type(self, "progress", bool, "true or false")
        check_range(self, "seed", 0, 2**63 - 1, integer=True)
        ratio = getattr(self, "ratio", None)
        if ratio is not None:
            check_range(self, "ratio", 0, 1, lo_open=True)
        if self.allocation == "sensitivity" and ratio is None:
            raise ConfigError("allocation", self.allocation, "'uniform' unless a ratio is given (sensitivity spends a ratio budget)",
                              type(self).__name__)


@register_config("svd")
@dataclass(frozen=True, kw_only=True)
class SVD(FactorizeConfig):
    """Truncated SVD: a Linear becomes two Linears; an Embedding an Embedding then a Linear.

    Fields:
        rank: the same rank for every layer (clipped to each layer's full rank).
        energy: per layer, the smallest rank keeping this fraction of the squared singular values.
        ratio: the fraction of parameters / MACs kept (see :class:`FactorizeConfig`).
        whiten: activation-aware SVD: truncate ``W C^(1/2)``, with ``C`` the input covariance measured on
            the training data, so that the error is smallest on real inputs (SVD-LLM style); needs ``data``.
        embeddings: also factor ``nn.Embedding`` layers (factorized embeddings, as ALBERT).
        reconstruct: after factoring, refit every factored Linear bottom up so that, on the inputs the
            factored layers below now give it, its output matches the unfactored model's (reduced-rank
            regression on ``calibration_samples`` training items; see :mod:`.refit`): the errors of lower
            layers are then made up for instead of piling up. Needs ``data``.

    Exactly one of ``rank``, ``energy``, ``ratio``.

    Example:
        >>> SVD(energy=0.9, whiten=True).whiten
        True
    """

    rank: int | None = None
    energy: float | None = None
    ratio: float | None = None
    whiten: bool = False
    embeddings: bool = False
    reconstruct: bool = False

    def validate(self) -> None:
        super().validate()
        _one_of(self, ("rank", "energy", "ratio"))
        check_type(self, "reconstruct", bool, "true or false")
        if self.rank is not None:
            check_range(self, "rank", 1, None, integer=True)
        if self.energy is not None:
            check_range(self, "energy", 0, 1, lo_open=True)
        check_type(self, "whiten", bool, "true or false")
        check_type(self, "embeddings", bool, "true or false")


@register_config("tucker")
@dataclass(frozen=True, kw_only=True)
class Tucker(FactorizeConfig):
    """Tucker-2 decomposition of KxK convolutions: 1x1, KxK core, 1x1 (Kim et al. 2016).

    Fields:
        ranks: ``[r_in, r_out]`` for every layer (clipped to each layer's channels).
        energy: per layer and mode, the smallest rank keeping this fraction of the squared singular values.
        ratio: the fraction of parameters / MACs kept; ``r_in / C == r_out / N`` per layer.
        iterations: HOOI refinement sweeps after the HOSVD start (0: plain HOSVD).

    With none of ``ranks``, ``energy``, ``ratio``, each layer's ranks come from
    empirical variational Bayesian matrix factorization (EVBMF, Nakajima et al.
    2013) of the two channel unfoldings, as in Kim et al. 2016.

    Example:
        >>> Tucker(ranks=(16, 32)).ranks
        (16, 32)
    """

    ranks: tuple[int, int] | None = None
    energy: float | None = None
    ratio: float | None = None
    iterations: int = 10

    def validate(self) -> None:
        super().validate()
        _one_of(self, ("ranks", "energy", "ratio"), required=False)
        if self.ranks is not None:
            ok = isinstance(self.ranks, tuple) and len(self.ranks) == 2 and all(
                isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in self.ranks)
            if not ok:
                raise ConfigError("ranks", self.ranks, "a pair [r_in, r_out] of integers >= 1", "Tucker")
        if self.energy is not None:
            check_range(self, "energy", 0, 1, lo_open=True)
        check_range(self, "iterations", 0, 1000, integer=True)


@register_config("cp")
@dataclass(frozen=True, kw_only=True)
class CP(FactorizeConfig):
    """CP decomposition of KxK convolutions into four small convolutions (Lebedev et al. 2015).

    Fitted by alternating least squares (:func:`~deepshrink.factorize.cp.cp_als`). At a rank of
    ``min(C, N) * K * K`` or more the exact decomposition is built directly.

    Fields:
        rank: the same CP rank for every layer.
        ratio: the fraction of parameters / MACs kept.
        iterations: the most ALS sweeps of each layer's fit.
        tol: ALS stops when the relative change of the error falls below this.
        probe_iterations: the most ALS sweeps of the trial fits that ``allocation="sensitivity"``
            measures (``levels`` ranks per layer; at most ``iterations``). The final fit of each
            layer runs ``iterations``. A sweep of a 512x512x3x3 weight at rank 700 takes 0.4 s
            here, so 200-sweep trials kept ResNet-18 in the sensitivity phase for over 11 minutes.

    Exactly one of ``rank``, ``ratio``.

    Example:
        >>> CP(rank=8).iterations
        100
    """

    rank: int | None = None
    ratio: float | None = None
    iterations: int = 100
    tol: float = 1e-7
    probe_iterations: int = 25

    def validate(self) -> None:
        super().validate()
        _one_of(self, ("rank", "ratio"))
        if self.rank is not None:
            check_range(self, "rank", 1, None, integer=True)
        check_range(self, "iterations", 1, 100000, integer=True)
        check_range(self, "tol", 0, 1, lo_open=True)
        check_range(self, "probe_iterations", 1, 100000, integer=True)


@register_config("separable")
@dataclass(frozen=True, kw_only=True)
class Separable(FactorizeConfig):
    """A KxK convolution as Kx1 then 1xK with ``rank`` intermediate channels (Jaderberg et al. 2014).

    The closed-form optimum of the weight error (an SVD of the weight reshaped
    to ``(C*Kh) x (N*Kw)``, Tai et al. 2016); exact at rank ``min(C*Kh, N*Kw)``.

    Fields:
        rank: intermediate channels for every layer.
        ratio: the fraction of parameters / MACs kept.

    Example:
        >>> Separable(ratio=0.33).ratio
        0.33
    """

    rank: int | None = None
    ratio: float | None = None

    def validate(self) -> None:
        super().validate()
        _one_of(self, ("rank", "ratio"))
        if self.rank is not None:
            check_range(self, "rank", 1, None, integer=True)


@register_config("depthwise_separable")
@dataclass(frozen=True, kw_only=True)
class DepthwiseSeparable(FactorizeConfig):
    """A KxK convolution as depthwise KxK (``multiplier`` filters per input channel) then pointwise 1x1.

    Initialised per input channel by a rank-``multiplier`` SVD of its filters
    (exact at ``multiplier = min(N, K*K)``), then, with ``data``, the pointwise
    weights and bias are solved by least squares to the original layer's output
    on training inputs. Fine-tune afterwards (a recipe's ``finetune:``).

    Fields:
        multiplier: depthwise filters per input channel (default 1 when ``ratio`` is not given).
        ratio: the fraction of parameters / MACs kept (sets the multiplier).
        least_squares: refit the pointwise stage on data when ``data`` is given.

    Example:
        >>> DepthwiseSeparable().multiplier is None
        True
    """

    multiplier: int | None = None
    ratio: float | None = None
    least_squares: bool = True

    def validate(self) -> None:
        super().validate()
        _one_of(self, ("multiplier", "ratio"), required=False)
        if self.multiplier is not None:
            check_range(self, "multiplier", 1, None, integer=True)
        check_type(self, "least_squares", bool, "true or false")


@register_config("fire")
@dataclass(frozen=True, kw_only=True)
class Fire(FactorizeConfig):
    """A KxK convolution as a SqueezeNet Fire module: squeeze 1x1, then 1x1 and KxK expands.

    The squeeze keeps the leading input directions of the weight (its mode-1
    singular vectors); the output channels whose filters weigh most on the
    centre tap go to the 1x1 expand. With ``data`` the expands are solved by
    least squares to the original output on training inputs. Exact at
    ``squeeze = C`` with ``expand1x1 = 0``.

    Fields:
        squeeze: squeeze channels for every layer.
        ratio: the fraction of parameters / MACs kept (sets the squeeze width).
        expand1x1: the fraction of output channels computed by the 1x1 expand, in [0, 1).
        least_squares: refit the expands on data when ``data`` is given.

    Exactly one of ``squeeze``, ``ratio``.

    Example:
        >>> Fire(ratio=0.3).expand1x1
        0.5
    """

    squeeze: int | None = None
    ratio: float | None = None
    expand1x1: float = 0.5
    least_squares: bool = True

    def validate(self) -> None:
        super().validate()
        _one_of(self, ("squeeze", "ratio"))
        if self.squeeze is not None:
            check_range(self, "squeeze", 1, None, integer=True)
        check_range(self, "expand1x1", 0, 1, hi_open=True)
        check_type(self, "least_squares", bool, "true or false")


__all__ = ["CP", "SVD", "DepthwiseSeparable", "FactorizeConfig", "Fire", "Separable", "Tucker"]
