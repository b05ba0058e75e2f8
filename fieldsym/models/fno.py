"""The unconstrained operator: neuraloperator's ``FNO`` on typed fields, with three 2.0.0 defects fixed.

``FieldFNO`` composes :class:`neuralop.models.FNO` (it does not copy it) and changes only what must be
changed for fieldsym's contract (DESIGN.md section 5):

1. ``SpectralConv.forward`` in 2.0.0 applies ``fftshift`` where the inverse needs ``ifftshift``; the two
   agree on even grids only, so on a 33x33 grid a whole-cell shift of the input does not shift the
   output (error 0.56). :class:`ShiftExactSpectralConv` replaces that forward: it computes only the
   kept coefficients with a truncated DFT (:mod:`fieldsym.models.spectral`, no shifts at all, and
   faster than two full FFTs) and keeps neuralop's weights, factorisations and contraction functions.
2. neuralop switches tensorly to its opt_einsum plugin at import, which makes ``torch.compile`` break
   the graph and ``torch.export`` fix the batch size; importing this module switches it back.
3. ``BaseModel.state_dict()`` adds a ``_metadata`` entry of Python objects; the wrapper drops it, so
   ``torch.save`` + ``torch.load(weights_only=True)`` round-trips and strict loading works.

Mode convention (both here and in :class:`fieldsym.models.GroupFNO`): ``n_modes=(m_y, m_x)`` keeps every
wave number with ``|k_y| <= m_y // 2`` and ``|k_x| <= m_x // 2`` (k = cycles per domain), a set that is
symmetric under ``k -> -k`` and, when ``m_y = m_x``, under quarter turns and reflections. With
``(12, 12)`` that is 13 rows along H and 7 columns of the ``rfft`` half along W. neuralop's own
``n_modes=(12, 12)`` keeps 12 rows (``k_y = -6..5``, not symmetric) and 7 columns; we pass it
``(2 (m_y // 2) + 1, 2 (m_x // 2))``. Wave numbers that the grid does not resolve on both sides
(``|k| > (N - 1) // 2`` on an N-point axis) are dropped at run time.
"""

from __future__ import annotations

import inspect

from collections.abc import Sequence

import tensorly.plugins
import torch
from neuralop.layers.spectral_convolution import SpectralConv, get_contract_fun
from neuralop.models import FNO
from torch import nn

from fieldsym.fields import FieldType
from fieldsym.models.spectral import irfft2_modes, rfft2_modes

# neuralop called use_opt_einsum("optimal") when we imported it above (DESIGN.md section 5).
tensorly.plugins.use_default_einsum()

# Options of neuralop's FNO that FieldFNO passes through unchanged; the rest are either set by
# FieldFNO (channels, modes, conv module) or would bypass the fixed forward (complex data, mixed
# precision, resolution scaling, incremental modes).
PASSTHROUGH_OPTIONS = (
    "lifting_channel_ratio",
    "projection_channel_ratio",
    "non_linearity",
    "norm",
    "use_channel_mlp",
    "channel_mlp_dropout",
    "channel_mlp_expansion",
    "channel_mlp_skip",
    "fno_skip",
    "fixed_rank_modes",
    "decomposition_kwargs",
    "separable",
    "preactivation",
)


class ShiftExactSpectralConv(SpectralConv):
    """neuralop's ``SpectralConv`` with a forward that is exact under whole-cell shifts on any grid.

    Replaced because 2.0.0 undoes its ``fftshift`` with another ``fftshift`` (wrong on odd grids).

    ``out = irfft2(W(k) * rfft2(x)(k)) + bias`` with ``W`` the layer's own (possibly factorised) weight,
    reconstructed densely and cast to the input's precision. The weight keeps neuralop's layout
    ``(in, out, rows, cols)``: rows are ``k_y`` centred (``-K_y..K_y`` for ``2 K_y + 1`` rows), cols are
    ``k_x = 0..K_x``. Real data and full precision only.
    """

    def forward(self, x: torch.Tensor, output_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        if output_shape is not None and tuple(output_shape) != tuple(x.shape[-2:]):
            raise ValueError(
                f"ShiftExactSpectralConv keeps the grid: got output_shape={tuple(output_shape)} for an "
                f"input grid {tuple(x.shape[-2:])}; resample outside the operator instead"
            )
        if self.fft_norm != "forward":
            raise ValueError(
                f"ShiftExactSpectralConv uses fft_norm='forward' (neuralop's default), got {self.fft_norm!r}"
            )
        H, W = x.shape[-2:]
        rows, cols = self.weight.shape[-2:]
        ky_max = min((rows - 1) // 2, (H - 1) // 2)
        kx_max = min(cols - 1, (W - 1) // 2)
        centre = (rows - 1) // 2
        leading = (slice(None),) * (1 if self.separable else 2)  # (in, out) or (channel,)
        weight = self.weight[leading + (slice(centre - ky_max, centre + ky_max + 1), slice(kx_max + 1))]
        x_hat = rfft2_modes(x, ky_max, kx_max)  # (b, c, 2 ky_max + 1, kx_max + 1)
        # Reconstructed (so any factorisation contracts densely) and cast: after .double() the
        # complex weight is still complex64.
        weight = weight.to_tensor().to(x_hat.dtype)
        contract = get_contract_fun(weight, implementation="reconstructed", separable=self.separable)
        out = irfft2_modes(contract(x_hat, weight, separable=self.separable), H, W)
        if self.bias is not None:
            out = out + self.bias
        return out


class FieldFNO(nn.Module):
    """Fourier neural operator from typed fields to typed fields; no symmetry is imposed.

    ``u``: ``(batch, in_type.num_channels, H, W)`` -> ``(batch, out_type.num_channels, H, W)``.

    What the options break (the architecture without them is equivariant to whole-cell shifts on a
    periodic grid, exactly, on even and odd grids; it is never equivariant to rotations or reflections
    because its spectral weights are unconstrained and the channel maps ignore the field types):

    - ``positional_embedding=True`` (the default, neuralop's grid embedding: ``x`` and ``y`` in ``[0, 1]``
      appended as channels) breaks translations and every rotation and reflection: the operator can
      depend on absolute position, which is what a forcing fixed in space needs (DESIGN.md section 2).
      ``False`` or ``None``: no embedding.
    - ``domain_padding`` (a fraction; neuralop zero-pads both ends of each axis and crops after the
      Fourier layers) breaks translation equivariance: the pad sits at a fixed place of the domain,
      so the operator sees where the data ends. Use it for non-periodic data.
    - ``factorization`` (``"tucker"``, ``"cp"``, ``"tt"``) with ``rank`` changes the parameter count, not
      the symmetry.

    ``n_modes``: see the module docstring (symmetric mode set, ``|k_y| <= m_y // 2``, ``|k_x| <= m_x // 2``).
    ``fno_options``: passed to neuralop's ``FNO`` unchanged; allowed keys are
    :data:`PASSTHROUGH_OPTIONS`.

    Precision: use ``.double()`` / ``.float()``. ``.to(torch.float64)`` casts neuralop's *complex*
    spectral weights to real (torch discards the imaginary part, with only a warning).
    """

    def __init__(
        self,
        in_type: FieldType | str,
        out_type: FieldType | str,
        n_modes: Sequence[int] = (12, 12),
        hidden_channels: int = 32,
        n_layers: int = 4,
        positional_embedding: bool | None = True,
        domain_padding: float | None = None,
        factorization: str | None = None,
        rank: float = 1.0,
        **fno_options,
    ) -> None:
        super().__init__()
        self.in_type = FieldType.parse(in_type)
        self.out_type = FieldType.parse(out_type)
        unknown = sorted(set(fno_options) - set(PASSTHROUGH_OPTIONS))
        if unknown:
            own = [n for n in inspect.signature(FieldFNO).parameters if n not in ("in_type", "out_type", "fno_options")]
            raise ValueError(
                f"FieldFNO got unknown or unsupported options {unknown}; its options are {', '.join(own)}, and it "
                f"passes {', '.join(PASSTHROUGH_OPTIONS)} to neuralop's FNO (channels come from the field types, "
                "the spectral convolution is fieldsym's): remove or rename them"
            )
        m_y, m_x = _two_modes(n_modes)
        self.n_modes = (m_y, m_x)
        self.fno = FNO(
            n_modes=(2 * (m_y // 2) + 1, 2 * (m_x // 2)),
            in_channels=self.in_type.num_channels,
            out_channels=self.out_type.num_channels,
            hidden_channels=hidden_channels,
            n_layers=n_layers,
            positional_embedding="grid" if positional_embedding else None,
            domain_padding=domain_padding,
            factorization=factorization,
            rank=rank,
            conv_module=ShiftExactSpectralConv,
            **fno_options,
        )

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        self.in_type.check(u)
        return self.fno(u)

    def _apply(self, fn, *args, **kwargs):
        # neuralop's grid embedding caches its coordinates keyed on resolution only: after .double(),
        # .float() or .to(device) the stale grid has the old dtype/device. Drop it so it is rebuilt.
        embedding = getattr(self.fno, "positional_embedding", None)
        if embedding is not None and hasattr(embedding, "_grid"):
            embedding._grid = None
        return super()._apply(fn, *args, **kwargs)

    def state_dict(self, *args, **kwargs):
        """Tensors only: neuralop's ``_metadata`` entry (Python objects) is dropped."""
        state = super().state_dict(*args, **kwargs)
        state.pop("_metadata", None)
        return state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Standard loading; a ``_metadata`` entry from a neuralop-written state dict is ignored."""
        state = {k: v for k, v in state_dict.items() if k != "_metadata"}
        return super().load_state_dict(state, strict=strict, assign=assign)

    def extra_repr(self) -> str:
        return f"in_type='{self.in_type}', out_type='{self.out_type}', n_modes={self.n_modes}"


def _two_modes(n_modes: int | Sequence[int]) -> tuple[int, int]:
    modes = (n_modes, n_modes) if isinstance(n_modes, int) else tuple(n_modes)
    if len(modes) != 2 or not all(isinstance(m, int) and m >= 1 for m in modes):
        raise ValueError(
            f"n_modes must be two positive integers (m_y, m_x) for a 2-D operator, got {n_modes!r}"
        )
    return modes  # type: ignore[return-value]
